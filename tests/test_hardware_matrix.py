"""The hardware-class matrix: every capability decision on every machine class, whatever machine runs the suite.

Four classes: a CUDA GPU with bf16 (A100, H100), one without (T4, V100), a CPU with native bf16 (AVX-512 BF16 or
AMX), an AVX2 CPU. The probes torch offers are patched to stand for each class, the decisions are checked against
the table below, and CPU renders are sent down the paths a GPU takes (bf16 autocast, the device-side non-finite
flag). Every render path runs once with `precision="bf16"` forced, at tiny sizes and 1-2 steps: on an AVX2 CPU
bf16 is emulated (slow, and a warning says so, which these tests silence).
"""
from __future__ import annotations

import importlib
import warnings

import pytest
import torch
from torch import nn

import lucent_dsl as ld
from lucent_dsl.errors import NonFiniteError
from lucent_dsl.models import hardware
from lucent_dsl.models.hardware import Hardware
from lucent_dsl.replay import Recipe

renderer = importlib.import_module("lucent_dsl.renderer.phases")

CLASSES = {
    "cuda-bf16": Hardware("cuda", bf16=True),
    "cuda-no-bf16": Hardware("cuda", bf16=False),
    "cpu-native-bf16": Hardware("cpu", bf16=True),
    "cpu-avx2": Hardware("cpu", bf16=False),
}
# class -> (auto for a dense model at 224 px, for a depthwise one, for a dense one at 16 px,
#           compile="auto" compiles a 512-step render, the non-finite check is deferred, bf16 warns as emulated)
EXPECTED = {
    "cuda-bf16": ("bf16", "bf16", "bf16", True, True, False),
    "cuda-no-bf16": ("fp32", "fp32", "fp32", True, True, False),
    "cpu-native-bf16": ("bf16", "fp32", "fp32", False, False, False),
    "cpu-avx2": ("fp32", "fp32", "fp32", False, False, True),
}
EMULATED = "precision='bf16' on a CPU without bf16 units"


def dense() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 5))


def depthwise() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, groups=8))


@pytest.fixture
def quiet_bf16():
    """bf16 forced on an AVX2 CPU warns that it is emulated: expected here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=EMULATED)
        yield


def as_class(monkeypatch, name: str) -> Hardware:
    """Make every render read `name`'s facts (what `Hardware.of` would find on such a machine)."""
    hw = CLASSES[name]
    monkeypatch.setattr(Hardware, "of", classmethod(lambda cls, device: hw))
    return hw


# --- the probes ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("supported", [True, False])
def test_the_probes_read_a_gpu_and_a_cpu_of_each_class(monkeypatch, supported, real_cpu_probe):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: supported)
    assert Hardware.of(torch.device("cuda")) == Hardware("cuda", bf16=supported)
    assert Hardware.of(torch.device("cuda", 1)) == Hardware("cuda", bf16=supported)
    assert Hardware.of(torch.device("cpu")) == Hardware("cpu", bf16=supported)
    assert Hardware.of(torch.device("mps")) == Hardware("mps", bf16=False)


def test_a_cpu_whose_probe_fails_counts_as_emulated_for_auto(monkeypatch, real_cpu_probe):
    def broken():
        raise RuntimeError("no oneDNN")

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", broken)
    assert Hardware.of(torch.device("cpu")) == Hardware("cpu", bf16=False)  # auto never guesses bf16
    assert hardware.cpu_has_bf16() is True  # ...but a forced bf16 is not called emulated on a mere guess


# --- every decision on every class ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_decision_on_every_machine_class(name):
    hw = CLASSES[name]
    cpu = torch.device("cpu")
    big, small = (224, 224), (16, 16)
    got = (hardware.resolve_precision("auto", [dense()], cpu, big, 1, hw),
           hardware.resolve_precision("auto", [depthwise()], cpu, big, 1, hw),
           hardware.resolve_precision("auto", [dense()], cpu, small, 1, hw),
           renderer._should_compile("auto", hw, 512),
           hardware.defers_nonfinite_check(hw, "raise"),
           hardware.bf16_is_emulated(hw, "bf16"))
    assert got == EXPECTED[name]
    for forced in ("fp32", "bf16"):  # a forced precision is what runs, on every class
        assert hardware.resolve_precision(forced, [dense()], cpu, big, 1, hw) == forced
    assert renderer._should_compile(False, hw, 10**6) is False and renderer._should_compile(True, hw, 1) is True
    assert not hardware.defers_nonfinite_check(hw, "skip")  # skip decides before every optimizer step


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_set_up_reads_every_decision_from_the_class(name, quiet_bf16):
    hw = CLASSES[name]
    plan = ld.compile_plan(ld.channel("2", 1), dense())
    s = renderer.check_args(steps=4, size=(224, 224), lr=0.05, seed=0, precision="auto", on_nonfinite="raise",
                                thresholds=None, redirect_relu=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        setup = renderer.set_up(plan, s, batch=None, param=None, transforms=None, optimizer=None, device=None,
                                compile=False, compile_mode=None, hardware=hw)
        forced = renderer.set_up(plan, s._replace(precision="bf16"), batch=None, param=None, transforms=None,
                                 optimizer=None, device=None, compile=False, compile_mode=None, hardware=hw)
    assert setup.precision == EXPECTED[name][0] and forced.precision == "bf16"
    assert setup.deferred_check == EXPECTED[name][4]
    assert any(EMULATED in str(w.message) for w in caught) == EXPECTED[name][5]


def test_auto_decides_on_the_image_the_parameterization_makes(monkeypatch):
    as_class(monkeypatch, "cpu-native-bf16")
    small = ld.param.fft((16, 16))
    assert ld.render(ld.channel("2", 1), dense(), param=small, steps=1, progress=False).precision == "fp32"
    assert ld.render(ld.channel("2", 1), dense(), size=128, steps=1, progress=False).precision == "bf16"


# --- CPU renders down the GPU's paths -------------------------------------------------------------------------


def test_a_cpu_render_takes_the_gpu_path_bf16_and_the_deferred_flag(monkeypatch):
    as_class(monkeypatch, "cuda-bf16")
    r = ld.render(ld.channel("2", 1), dense(), size=24, steps=3, compile=False, progress=False)
    assert r.precision == "bf16" and r.steps == 3 and bool(torch.isfinite(r.images).all())
    assert r.recipe is None or r.recipe.precision == "bf16"


class NaNAfter(nn.Module):
    """Its layer `conv` reads NaN from the `bad`-th call on."""

    def __init__(self, bad: int):
        super().__init__()
        self.conv, self.calls, self.bad = nn.Conv2d(3, 4, 3), 0, bad

    def forward(self, x):
        self.calls += 1
        return self.conv(x * float("nan") if self.calls >= self.bad else x)


@pytest.mark.parametrize("name", ["cuda-bf16", "cpu-avx2"])
def test_the_nonfinite_check_names_the_first_bad_step_deferred_or_not(monkeypatch, name, quiet_bf16):
    as_class(monkeypatch, name)
    net = NaNAfter(bad=10**9)
    plan = ld.compile_plan(ld.channel("conv", 1), net, truncate="hooks")
    net.calls, net.bad = 0, 3
    with pytest.raises(NonFiniteError, match=r"^step 3\b") as err:
        ld.render(plan, size=16, steps=6, compile=False, progress=False, precision="fp32")
    deferred = "checked on the GPU every few steps" in str(err.value)
    assert deferred == (name == "cuda-bf16")
    assert net.calls == (6 if deferred else 3)  # deferred: the flag is read at the end (6 < CUDA_CHECK_EVERY)


# --- bf16 forced on every render path ---------------------------------------------------------------------------


@pytest.mark.parametrize("objective", ["-l2()", "-blur()", "-l1()", "-total_variation()", "-l2() - l1()"])
def test_image_only_objectives_render_in_bf16(objective, quiet_bf16):
    r = ld.render(objective, dense(), size=16, steps=2, precision="bf16", progress=False)
    assert r.precision == "bf16" and r.steps == 2
    assert all(bool(torch.isfinite(h).all()) for h in r.history.values())


def fixed_vit() -> nn.Module:
    """A fixed-size model (the kind that crashed in bf16): torchvision's ViT, built for 32 px."""
    torch.manual_seed(0)
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32).eval()


def test_a_fixed_size_model_renders_in_bf16_and_scores_close_to_fp32(quiet_bf16):
    vit = fixed_vit()
    obj = ld.channel("encoder.layers.encoder_layer_0", 3)
    kw = dict(size=48, steps=2, progress=False, seed=1)
    fp32, bf16 = (ld.render(obj, vit, precision=p, **kw) for p in ("fp32", "bf16"))
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16") and bf16.images.dtype == torch.float32
    h32, h16 = fp32.history[repr(obj)], bf16.history[repr(obj)]
    assert abs(float(h16[0, 0]) - float(h32[0, 0])) <= 0.05 * float(h32[0].abs().max()) + 0.05  # same start, bf16 noise


def test_an_ensemble_of_a_vit_and_a_convnet_renders_in_bf16(quiet_bf16):
    obj = ld.channel("encoder.layers.encoder_layer_0", 3, model="vit") + ld.channel("2", 1, model="cnn")
    r = ld.render(obj, {"vit": fixed_vit(), "cnn": dense()}, size=40, steps=2, precision="bf16", progress=False,
                  preset="lucid")  # "auto" would add deepinversion's image prior (a third summand)
    assert r.precision == "bf16" and len(r.history) == 2
    assert all(bool(torch.isfinite(h).all()) for h in r.history.values())


def test_a_batched_list_renders_in_bf16(quiet_bf16):
    r = ld.render([ld.channel("2", 0), ld.channel("2", 1), "-l2()"], dense(), size=16, steps=2, precision="bf16",
                  progress=False)
    assert r.precision == "bf16" and r.images.shape[0] == 3


def test_a_recipe_runs_in_bf16_and_records_it(monkeypatch, quiet_bf16):
    recipe = Recipe(objective="channel('layer2', 1)", models=("torchvision:resnet18",), size=(32, 32), steps=1,
                    precision="bf16")
    r = recipe.run(progress=False)
    assert r.precision == "bf16" and r.recipe is not None and r.recipe.precision == "bf16"


@pytest.mark.parametrize("command", ["caricature", "accentuate"])
def test_the_image_recipes_run_in_bf16(command, quiet_bf16):
    from lucent_dsl.toolbox import inversion as recipes

    torch.manual_seed(0)
    image = torch.rand(1, 3, 16, 16)
    if command == "caricature":
        r = recipes.caricature(dense(), image, ["2"], steps=2, precision="bf16", progress=False)
    else:
        r = recipes.accentuate(dense(), image, "channel('2', 1)", steps=2, precision="bf16", progress=False)
    assert r.precision == "bf16" and r.steps == 2


# --- the CLI and Python agree ------------------------------------------------------------------------------


TINY = "from torch import nn\n\ndef factory():\n    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))\n"


@pytest.fixture
def spec(tmp_path) -> str:
    path = tmp_path / "tiny.py"
    path.write_text(TINY)
    return f"{path}:factory"


def saved_recipe(path) -> Recipe:
    return Recipe.load(path)


@pytest.mark.parametrize("name", ["cpu-native-bf16", "cpu-avx2"])
def test_the_cli_and_python_resolve_auto_alike_and_the_file_records_what_ran(monkeypatch, tmp_path, spec, name,
                                                                            capsys):
    from lucent_dsl.cli import app as cli
    from lucent_dsl.models.specs import build_model

    as_class(monkeypatch, name)
    out = tmp_path / "a.png"
    assert cli.main(["render", "channel('2', 1)", "--model", spec, "--size", "128", "--steps", "1", "-q",
                     "--allow", "file", "--out", str(out)]) == 0
    python = ld.render(ld.channel("2", 1), build_model(spec), size=128, steps=1, progress=False)
    assert saved_recipe(out).precision == python.precision == EXPECTED[name][0]
    capsys.readouterr()


def test_atlas_and_explore_resolve_auto_once_and_record_it(monkeypatch, tmp_path, spec, capsys):
    from lucent_dsl.cli import app as cli

    as_class(monkeypatch, "cpu-native-bf16")
    monkeypatch.setattr(hardware, "AUTO_BF16_MIN_PIXELS", 1)  # bf16 even at these tiny sizes
    assert cli.main(["atlas", "2", "--model", spec, "--channels", "0:3", "--batch", "2", "--size", "16", "--steps", "1",
                     "-q", "--allow", "file", "--out", str(tmp_path / "atlas")]) == 0
    pngs = sorted((tmp_path / "atlas").glob("**/*.png"))
    recipes = [saved_recipe(p) for p in pngs if not p.name.startswith(("grid", "index"))]
    assert len(recipes) == 3 and {r.precision for r in recipes} == {"bf16"}
    capsys.readouterr()


def test_explore_renders_in_bf16_and_its_commands_name_the_precision(tmp_path, quiet_bf16):
    from lucent_dsl.explore.site import explore
    from lucent_dsl.models.specs import build_model

    done = explore(build_model("lenet5_mnist"), "lenet5_mnist", ["conv2"], tmp_path / "site", channels="0:1",
                   steps=1, progress=False, precision="bf16", sanity=False)
    assert done["images_rendered"] >= 1
    pngs = sorted((tmp_path / "site" / "img").glob("*.png"))
    assert pngs and {Recipe.load(p).precision for p in pngs if ".grid" not in p.name} == {"bf16"}
    pages = "".join(p.read_text() for p in (tmp_path / "site").glob("**/*.html"))
    assert "--precision bf16" in pages  # the command that renders a unit again says so


# --- the toolbox ---------------------------------------------------------------------------------------------


def test_the_toolbox_methods_render_in_bf16_and_their_recipes_say_so(spec, quiet_bf16):
    from lucent_dsl.models.specs import build_model
    from lucent_dsl.toolbox.dictionary import render_dictionary
    from lucent_dsl.toolbox.gatys import texture
    from lucent_dsl.toolbox.groups import neuron_groups

    net = build_model(spec)
    torch.manual_seed(0)
    g = neuron_groups(net, torch.rand(1, 3, 16, 16), "1", 2, steps=1, precision="bf16", progress=False)
    d = render_dictionary(net, "1", torch.eye(8)[:2], size=12, steps=1, precision="bf16", progress=False)
    t = texture(net, torch.rand(1, 3, 16, 16), ["1"], size=16, steps=1, precision="bf16", progress=False)
    assert g.settings.precision == d.settings.precision == t.precision == "bf16"
    assert g.settings.recipe(g.objectives[0], g.seeds[0], None).precision == "bf16"
    assert all(bool(torch.isfinite(x).all()) for x in (g.renders, d.images, t.images))


@pytest.mark.parametrize("name", ["cpu-native-bf16", "cpu-avx2"])
def test_the_toolbox_resolves_auto_once_by_render_s_rule(monkeypatch, spec, name):
    from lucent_dsl.models.specs import build_model
    from lucent_dsl.toolbox.groups import neuron_groups

    as_class(monkeypatch, name)
    monkeypatch.setattr(hardware, "AUTO_BF16_MIN_PIXELS", 1)  # bf16 even at this tiny size, where it is native
    g = neuron_groups(build_model(spec), torch.rand(1, 3, 16, 16), "1", 2, steps=1, progress=False)
    assert g.settings.precision == ("bf16" if name == "cpu-native-bf16" else "fp32")


# --- a busy machine --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("given", [None, "ACTIVE"])
def test_openmp_waits_passively_unless_the_user_chose(given):
    # Spinning OpenMP threads made the README's main job 3-8x slower on a busy machine
    # (benchmarks/bench_threads_under_load.py); the user's own choice stands.
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    code = "import os, lucent_dsl, torch; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == (given or "PASSIVE")

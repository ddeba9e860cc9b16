"""A Python render's recipe (`lucent_dsl.renderer.provenance`): it replays to the same pixels, or says why it cannot."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
from hypothesis import given, settings, strategies as st

import lucent_dsl as ld
from lucent_dsl import zoo
from lucent_dsl.cli import app as cli
from lucent_dsl.io.files import RECIPE_KEY, load_image, read_metadata
from lucent_dsl.models.specs import build_model
from lucent_dsl.renderer.result import UNREPLAYABLE_KEY
from lucent_dsl.replay import SCORE_KEY, Recipe

FAST = dict(size=28, steps=3, progress=False)


@pytest.fixture(scope="module")
def lenet():
    return zoo.load("lenet5_mnist")


@settings(max_examples=12, deadline=None)
@given(kind=st.sampled_from(["fft", "pixel"]), decay=st.sampled_from([1.0, 1.5]), standard=st.booleans(),
       seed=st.integers(0, 2**31), lr=st.sampled_from([0.05, 0.2]), batch=st.integers(1, 2),
       objective=st.sampled_from(["channel('conv2', 3)", "class_logit('7') - 0.01 * total_variation()",
                                  "neuron('conv1', 2, x=3, y=4) + layer('relu2')"]))
def test_the_recipe_of_a_python_render_replays_its_pixels(lenet, kind, decay, standard, seed, lr, batch, objective):
    decay = decay if kind == "fft" else 1.0
    param = ld.param.image(28, kind=kind, batch=batch, channels=1, **({"decay_power": decay} if kind == "fft" else {}))
    r = ld.render(objective, lenet, param=param, transforms=None if standard else [], seed=seed, lr=lr,
                  batch=batch, preset="lucid", **FAST)  # "lucid": None is standard() (auto scales it below 64 px)
    assert r.unreplayable == () and isinstance(r.recipe, Recipe)
    assert (r.recipe.param, r.recipe.decay_power, r.recipe.transforms) == (kind, decay, "standard" if standard else "none")
    assert Recipe.from_json(r.recipe.to_json()) == r.recipe
    again = r.recipe.run(progress=False)
    assert torch.equal(again.images, r.images)


def test_a_saved_python_render_replays_from_the_command_line(lenet, tmp_path, capsys):
    r = ld.render(ld.channel("conv2", 5), lenet, **FAST)
    r.save(tmp_path / "py.png")
    meta = read_metadata(tmp_path / "py.png")
    assert Recipe.from_json(meta[RECIPE_KEY]) == r.recipe and float(meta[SCORE_KEY]) == pytest.approx(float(r.scores()))
    assert cli.main(["render", "--recipe", str(tmp_path / "py.png"), "--out", str(tmp_path / "cli.png"), "-q"]) == 0
    a, b = (load_image(tmp_path / f, channels=1) for f in ("py.png", "cli.png"))
    assert torch.equal(a, b)


def test_the_parameterization_decides_the_recorded_size(lenet):
    r = ld.render("channel('conv1', 1)", lenet, **dict(FAST, param=ld.param.fft(20, channels=1)))
    assert r.recipe.size == (20, 20) and torch.equal(r.recipe.run(progress=False).images, r.images)


def test_ensembles_and_specs_are_named_as_a_recipe_reads_them():
    nets = {"a": build_model("torchvision:alexnet"), "b": zoo.load("lenet5_mnist")}
    r = ld.render(ld.channel("features.0", 1, model="a"), nets, size=32, steps=2, progress=False)
    assert r.recipe.models == ("a=torchvision:alexnet",)  # only the model read is run, and recorded
    assert torch.equal(r.recipe.run(progress=False).images, r.images)


@pytest.mark.parametrize("change, why", [
    (lambda net: dict(param=ld.param.fft(28, channels=1, sd=0.1)), "parameterization"),
    (lambda net: dict(transforms=[ld.transforms.jitter(2)]), "transforms"),
    (lambda net: dict(optimizer=torch.optim.SGD), "optimizer"),
    (lambda net: dict(redirect_relu=2), "redirect_relu"),
])
def test_what_a_recipe_cannot_name_is_said_and_saved_instead(lenet, tmp_path, change, why):
    kwargs = dict(FAST, **change(lenet))
    models = kwargs.pop("models", lenet)
    objective = "channel('0', 1)" if models is not lenet else "channel('conv1', 1)"
    r = ld.render(objective, models, **kwargs)
    assert r.recipe is None and any(why in reason for reason in r.unreplayable), r.unreplayable
    r.save(tmp_path / "x.png")
    meta = read_metadata(tmp_path / "x.png")
    assert RECIPE_KEY not in meta and why in meta[UNREPLAYABLE_KEY]


def test_a_model_changed_after_it_was_built_is_not_named_by_its_spec():
    net = build_model("torchvision:alexnet")
    assert ld.render("channel('features.0', 0)", net, size=32, steps=1, progress=False).recipe is not None
    net.load_state_dict(net.state_dict())  # same values, but loaded: the spec no longer proves what the weights are
    r = ld.render("channel('features.0', 0)", net, size=32, steps=1, progress=False)
    assert r.recipe.models == () and [entry[0] for entry in r.recipe.supplied] == ["model"]  # to be supplied


def test_an_objective_of_your_own_is_not_written_as_a_recipe(lenet):
    @ld.objective(name="provenance_mean")
    def provenance_mean(acts):
        return acts.mean()

    r = ld.render(provenance_mean("conv1"), lenet, **FAST)
    assert r.recipe is None and "provenance_mean" in r.unreplayable[0]


OWN = '''
import torch, torch.nn as nn
def factory(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3))
def other():
    return factory(1)
'''


def test_a_render_of_your_own_module_carries_a_recipe_replayed_with_the_model_supplied(tmp_path, capsys):
    """Issue 28.7: everything but the model is written, the model is marked to be supplied (class, weights
    fingerprint); `render --recipe x.png --model SPEC` replays it, refuses without --model, warns on other weights."""
    import importlib.util

    from lucent_dsl.models.checks import weights_fingerprint
    from lucent_dsl.replay import SuppliedModelWarning

    (tmp_path / "own.py").write_text(OWN)
    spec = importlib.util.spec_from_file_location("own_module_for_test", tmp_path / "own.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.factory()
    r = ld.render("channel('2', 1) - 0.01 * total_variation()", net, size=20, steps=3, seed=4, progress=False)
    assert r.unreplayable == () and r.recipe.models == ()
    assert r.recipe.supplied == (("model", "torch.nn.modules.container.Sequential", weights_fingerprint(net)),)
    r.save(tmp_path / "own.png")
    meta = read_metadata(tmp_path / "own.png")
    d = json.loads(meta[RECIPE_KEY])
    assert (d["objective"], d["seed"], d["steps"], d["precision"], d["threads"], d["torch"]) == (
        repr(ld.parse("channel('2', 1) - 0.01 * total_variation()")), 4, 3, r.precision, torch.get_num_threads(),
        torch.__version__) and d["lucent_dsl"] and d["supplied"][0]["weights"] == weights_fingerprint(net)
    loaded = Recipe.load(tmp_path / "own.png")
    with pytest.raises(ld.errors.InvalidArgumentError, match="module of your own"):
        loaded.run(progress=False)
    assert torch.equal(loaded.run(net, progress=False).images, r.images)
    out = ["--out", str(tmp_path / "cli.png"), "-q"]
    assert cli.main(["render", "--recipe", str(tmp_path / "own.png"), *out]) == 2
    assert "--model SPEC" in capsys.readouterr().err and not (tmp_path / "cli.png").exists()
    assert cli.main(["render", "--recipe", str(tmp_path / "own.png"), "--model", f"{tmp_path}/own.py:factory",
                     *out]) == 0
    assert torch.equal(load_image(tmp_path / "cli.png"), load_image(tmp_path / "own.png"))
    replayed = Recipe.load(tmp_path / "cli.png")
    assert replayed.models == (f"{tmp_path}/own.py:factory",) and replayed.supplied == ()
    with pytest.warns(SuppliedModelWarning, match="weights fingerprint"):
        assert cli.main(["render", "--recipe", str(tmp_path / "own.png"), "--model", f"{tmp_path}/own.py:other",
                         *out]) == 0


@pytest.mark.parametrize("made_on, replayed_on", [(True, False), (False, True)])
def test_a_recipe_records_the_precision_that_ran_and_replays_it_on_another_cpu_class(made_on, replayed_on,
                                                                                     monkeypatch, real_cpu_probe):
    """Issue 28.4: precision 'auto' is written as what ran, so a recipe from a native-bf16 CPU replays in bf16 on an
    AVX2-class CPU (emulated, with its warning), and one from an AVX2 CPU replays in fp32 on a bf16 CPU."""
    net = build_model("torchvision:alexnet")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: made_on)
    r = ld.render("channel('features.0', 2)", net, size=64, steps=2, progress=False)
    ran = "bf16" if made_on else "fp32"
    assert r.precision == r.recipe.precision == ran
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: replayed_on)
    again = Recipe.from_json(r.recipe.to_json())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        replay = again.run(net, progress=False)
    assert replay.precision == ran and torch.equal(replay.images, r.images)
    assert any("without bf16 units" in str(w.message) for w in caught) == (ran == "bf16" and not replayed_on)

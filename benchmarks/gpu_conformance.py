"""GPU conformance: the render paths the CPU suite covers, run on a CUDA card, one table row per check.

Run by `benchmarks/gpu.sh` before the speed table (a few minutes on an H100). Every check renders on the device
with random weights at small sizes and a few steps, and says PASS or FAIL with what it saw; the script exits 1 if
any check failed. `--device cpu --quick` runs the same checks anywhere (a smoke test of this script).

    python benchmarks/gpu_conformance.py                   # on a CUDA machine
    python benchmarks/gpu_conformance.py --device cpu --quick

Checks:
- the architecture sample (torchvision classifiers, timm families when timm is there): `precision="auto"`, forced
  fp32 and forced bf16 each render 2 steps with finite scores, and auto resolves as `hardware.auto_precision` says
  for this card; the plan reads a middle site as a plain forward hook does (fp32);
- an ensemble of a ViT and a convnet, each read, in bf16;
- the device-side non-finite flag: a model that turns NaN at step 3 of 6 is reported at step 3;
- a batched atlas (`atlas.run_atlas`, 8 channels in batches of 4) matches one-image renders;
- the toolbox smoke: MACO, texture, a caricature;
- a compiled step (`compile=True`) and CUDA graphs (`compile_mode="reduce-overhead"`) against the eager step.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import lucent_dsl as ld  # noqa: E402
from lucent_dsl.errors import NonFiniteError  # noqa: E402
from lucent_dsl.models import hardware  # noqa: E402

warnings.filterwarnings("ignore", message="precision='bf16' on a CPU without bf16 units")

TV_SAMPLE = ("resnet18", "mobilenet_v2", "efficientnet_b0", "convnext_tiny", "densenet121", "regnet_y_400mf",
             "vgg11_bn", "swin_t", "vit_b_16", "maxvit_t")
TIMM_SAMPLE = (("vit_tiny_patch16_224", {"img_size": 64}), ("deit_tiny_distilled_patch16_224", {"img_size": 64}),
               ("vit_small_patch14_reg4_dinov2", {"img_size": 56}), ("convnext_atto", {}),
               ("efficientnet_b0", {}), ("levit_128s", {"img_size": 64}))
ROWS: list[tuple[str, bool, str]] = []


def check(name: str, fn: Callable[[], str]) -> None:
    start = time.perf_counter()
    try:
        detail, ok = fn(), True
    except Exception as e:  # noqa: BLE001 - each check reports its own failure and the table goes on
        detail, ok = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}", False
        traceback.print_exc(file=sys.stderr)
    ROWS.append((name, ok, f"{detail} ({time.perf_counter() - start:.1f} s)"))
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)


def finite(r: ld.RenderResult) -> bool:
    return all(bool(torch.isfinite(h).all()) for h in r.history.values())


def tv_model(name: str, device: str) -> nn.Module:
    import torchvision.models as tvm

    kwargs = {"image_size": 64} if name.startswith("vit_") else {}
    torch.manual_seed(0)
    return tvm.get_model(name, weights=None, **kwargs).eval().to(device)


def middle_site(model: nn.Module) -> str:
    """A module about halfway through the model's top-level children, as a site name."""
    names = [n for n, _ in model.named_children()]
    top = names[len(names) // 2 - 1] if len(names) > 2 else names[0]
    inner = [n for n, _ in getattr(model, top).named_children()]
    return f"{top}.{inner[len(inner) // 2]}" if inner else top


def hooked(model: nn.Module, site: str, x: torch.Tensor) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    h = model.get_submodule(site).register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    return seen[-1]


def architecture(model: nn.Module, size: int, device: str) -> str:
    ld.with_info(model, ld.ModelInfo())  # identity preprocessing: the plan's input is the hook's input
    site = middle_site(model)
    plan = ld.compile_plan(ld.channel(site, 0), model)
    x = torch.rand(2, 3, size, size, device=device)
    ref = hooked(model, site, x)
    got = plan.forward(x)[ld.Site("model", site)]
    if ref.dim() == 4 and got.shape == ref.shape:
        err = float((got - ref).abs().max()) / (float(ref.abs().max()) + 1e-6)
        if err > 1e-2:
            raise AssertionError(f"{site}: plan vs hook relative error {err:.3g}")
    precisions = []
    for precision in ("auto", "fp32", "bf16"):
        r = ld.render(plan, size=size, steps=2, precision=precision, progress=False)
        if not finite(r):
            raise AssertionError(f"{precision}: non-finite scores")
        precisions.append(r.precision)
    hw = hardware.Hardware.of(torch.device(device))
    want = hardware.resolve_precision("auto", [model], torch.device(device), (size, size), 1, hw)
    if precisions != [want, "fp32", "bf16"]:
        raise AssertionError(f"precisions ran {precisions}, expected [{want}, fp32, bf16]")
    return f"{site}; auto ran {precisions[0]}"


def ensemble(device: str) -> str:
    obj = ld.channel("encoder.layers.encoder_layer_1", 3, model="vit") + ld.channel("layer2", 1, model="cnn")
    models = {"vit": tv_model("vit_b_16", device), "cnn": tv_model("resnet18", device)}
    r = ld.render(obj, models, size=96, steps=3, precision="bf16", progress=False)
    if not (finite(r) and len(r.history) == 2 and r.precision == "bf16"):
        raise AssertionError(f"history {list(r.history)}, precision {r.precision}")
    return "ViT-B/16 + ResNet-18, bf16, both read"


class NaNAfter(nn.Module):
    def __init__(self, bad: int):
        super().__init__()
        self.conv, self.calls, self.bad = nn.Conv2d(3, 4, 3), 0, bad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.conv(x * float("nan") if self.calls >= self.bad else x)


def nonfinite_flag(device: str) -> str:
    net = NaNAfter(10**9).to(device)
    plan = ld.compile_plan(ld.channel("conv", 1), net, truncate="hooks")
    net.calls, net.bad = 0, 3
    try:
        ld.render(plan, size=16, steps=6, compile=False, progress=False)
    except NonFiniteError as e:
        if not str(e).startswith("step 3"):
            raise AssertionError(f"named another step: {e}") from None
        deferred = "checked on the GPU" in str(e)
        return f"step 3 named ({'device-side flag' if deferred else 'checked every step'})"
    raise AssertionError("no NonFiniteError")


def batched_atlas(device: str) -> str:
    from lucent_dsl import atlas
    from lucent_dsl.io import load_image
    from lucent_dsl.replay import Recipe

    model = tv_model("resnet18", device)
    jobs = atlas.layers_jobs({"layer2": list(range(8))}, seed=0)
    base = Recipe(objective=jobs[0].objective, models=("torchvision:resnet18",), size=(48, 48), steps=4,
                  precision="fp32")
    with tempfile.TemporaryDirectory() as tmp:
        for batch in (4, 1):
            atlas.run_atlas(jobs, base, model, Path(tmp) / str(batch), batch=batch, device=device, compile=False,
                            progress=False)
        errs = [float((load_image(Path(tmp) / "4" / j.filename) - load_image(Path(tmp) / "1" / j.filename)).abs().max())
                for j in jobs]
    err = max(errs)
    if err > 3 / 255:
        raise AssertionError(f"a channel in a batch of 4 vs alone: max |difference| {err:.3g}")
    return f"8 channels in batches of 4; batch vs alone max |diff| {err:.2g}"


def toolbox(device: str) -> str:
    from lucent_dsl.toolbox import inversion as recipes
    from lucent_dsl.toolbox.gatys import texture
    from lucent_dsl.toolbox.maco import maco_method

    model = tv_model("resnet18", device)
    m = maco_method(ld.channel("layer2", 1), model, size=64, crops=4, steps=4, progress=False, device=device)
    style = torch.rand(1, 3, 48, 48)
    t = texture(model, style, ["layer1", "layer2"], size=48, steps=3, progress=False)
    c = recipes.caricature(model, torch.rand(1, 3, 48, 48), ["layer2"], steps=3, progress=False)
    ok = all(bool(torch.isfinite(x).all()) for x in (m.images, t.images, c.images))
    if not ok:
        raise AssertionError("non-finite images")
    return f"maco {tuple(m.images.shape)}, texture {t.precision}, caricature {c.precision}"


def compiled(device: str) -> str:
    model = tv_model("resnet18", device)
    obj = ld.channel("layer3", 5)
    kw = dict(size=64, steps=6, seed=1, progress=False, precision="fp32")
    eager = ld.render(obj, model, compile=False, **kw)
    out = []
    for mode in (None, "reduce-overhead"):
        if device == "cpu" and mode is not None:
            continue
        r = ld.render(obj, model, compile=True, compile_mode=mode, **kw)
        err = float((r.images - eager.images).abs().max())
        if err > 2e-2:
            raise AssertionError(f"compile_mode={mode}: max |compiled - eager| {err:.3g}")
        out.append(f"{mode or 'default'} {err:.1g}")
    return "compiled vs eager max |diff|: " + ", ".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="two architectures, no timm, no compile (a smoke test)")
    a = p.parse_args()
    if a.device == "cpu":
        common.set_threads(1)
    print(common.header(f"gpu_conformance on {a.device}"), flush=True)
    if a.device.startswith("cuda"):
        print(f"# card: {torch.cuda.get_device_name(0)}; {hardware.Hardware.of(torch.device(a.device))}", flush=True)
    sample = TV_SAMPLE[:2] if a.quick else TV_SAMPLE
    for name in sample:
        check(f"torchvision {name}", lambda name=name: architecture(tv_model(name, a.device), 64, a.device))
    if not a.quick:
        try:
            import timm
        except ImportError:
            timm = None
        for name, kwargs in TIMM_SAMPLE if timm is not None else ():
            def one(name: str = name, kwargs: dict = kwargs) -> str:
                torch.manual_seed(0)
                model = timm.create_model(name, pretrained=False, **kwargs).eval().to(a.device)
                return architecture(model, int(kwargs.get("img_size", 64)), a.device)

            check(f"timm {name}", one)
    check("ensemble ViT + convnet, bf16", lambda: ensemble(a.device))
    check("non-finite flag", lambda: nonfinite_flag(a.device))
    check("batched atlas", lambda: batched_atlas(a.device))
    check("toolbox smoke", lambda: toolbox(a.device))
    if not a.quick:
        check("compiled step, CUDA graphs", lambda: compiled(a.device))
    print("\n| check | result | detail |\n|---|---|---|")
    for name, ok, detail in ROWS:
        print(f"| {name} | {'PASS' if ok else 'FAIL'} | {detail} |")
    failed = sum(not ok for _, ok, _ in ROWS)
    print(f"\n{len(ROWS) - failed} of {len(ROWS)} checks passed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

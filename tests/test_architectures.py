"""Conformance on real architectures (random weights): torchvision classifiers (a sample per family, or all 80), its segmentation
models and a sample of timm families (every family named in issue 15 among them).

For each model: a plan reading one middle block and the output captures, for a fixed input, exactly what a plain
forward hook records on the same model with every `inplace` flag off (the model the plan runs keeps its in-place
ops), read in the site's true layout; then a 2-step render runs, and the model is left as it was.

Sizes are small where the model allows them (the probe's base size is the test size; ViTs are built for 32 px);
weights are drawn by a fast tiled fill (`fast_init`: construction, not the library, dominated the runtime).

    python -m pytest -q -p no:cacheprovider tests/test_architectures.py                              # a sample
    LUCENT_ALL_ARCHITECTURES=1 python -m pytest -q -p no:cacheprovider tests/test_architectures.py   # all 80
"""
from __future__ import annotations

import contextlib
import functools as ft
import os
import warnings

import einops
import pytest
import torch
from torch import Tensor, nn

import lucent_dsl as ld
from lucent_dsl.dsl.expr import OUTPUT, Site
from lucent_dsl.models.architectures import geometry_of
from lucent_dsl.models.layouts import Layout
from lucent_dsl.plan import sitemap

pytestmark = pytest.mark.slow
tvm = pytest.importorskip("torchvision.models")

SIZES = (32, 64, 96, 128, 160, 224)  # the smallest one at which the model runs is the test size
_P = 65521  # the period of the tiled "random" weights (a prime: no two rows of a weight matrix coincide)


@ft.cache
def _tiles() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(_P, generator=g), torch.randn(_P, generator=g)


def _fill(t: Tensor, tile: Tensor, scale: float, shift: float) -> Tensor:
    with torch.no_grad():
        if not t.is_contiguous() or not t.is_floating_point():
            tmp = torch.empty(t.shape, dtype=torch.float32)
            return t.copy_(_fill(tmp, tile, scale, shift))
        flat, n = t.view(-1), t.numel()
        k, r = divmod(n, _P)
        b = (tile * scale + shift).to(t.dtype)
        if k:
            flat[: k * _P].view(k, _P).copy_(b.expand(k, _P))
        if r:
            flat[k * _P:].copy_(b[:r])
    return t


@contextlib.contextmanager
def fast_init():
    """`Tensor.uniform_` / `normal_` (what every `nn.init` function and timm initializer calls) as tiled fills."""
    uniform, normal = torch.Tensor.uniform_, torch.Tensor.normal_

    def uniform_(self, a=0.0, b=1.0, *, generator=None):
        return _fill(self, _tiles()[0], b - a, a)

    def normal_(self, mean=0.0, std=1.0, *, generator=None):
        return _fill(self, _tiles()[1], std, mean)

    torch.Tensor.uniform_, torch.Tensor.normal_ = uniform_, normal_
    try:
        yield
    finally:
        torch.Tensor.uniform_, torch.Tensor.normal_ = uniform, normal


@contextlib.contextmanager
def inplace_off(model: nn.Module):
    """Every `inplace=True` flag off (the reference model), restored on exit."""
    flagged = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    for m in flagged:
        m.inplace = False
    try:
        yield
    finally:
        for m in flagged:
            m.inplace = True


def _containers(model: nn.Module) -> list[str]:
    """Block lists (Sequential or ModuleList of depth <= 2) by number of children, the model itself last."""
    lists = [(len(list(m.children())), name) for name, m in model.named_modules()
             if name and name.count(".") <= 1 and isinstance(m, (nn.Sequential, nn.ModuleList))]
    return [name for _, name in sorted(lists, key=lambda t: -t[0])] + [""]


def _readable(v: object) -> tuple[str, Tensor] | None:
    """('' or '/0', the tensor) for a module output a term can read: a tensor, or a tuple starting with one."""
    if isinstance(v, (tuple, list)) and v and isinstance(v[0], Tensor):
        sel, v = "/0", v[0]
    else:
        sel = ""
    ok = isinstance(v, Tensor) and v.dim() in (2, 3, 4) and v.is_floating_point()
    return (sel, v) if ok else None


def _reference(model: nn.Module, x: Tensor, out_sel: tuple[str, ...]):
    """({site: its output, cloned when it was returned} for the children of every block list, the selected output)
    of one plain forward."""
    seen: dict[str, object] = {}

    def keep(name: str, _m: nn.Module, _i: object, out: object) -> None:
        found = _readable(out)
        if found is not None:
            seen[name + found[0]] = found[1].clone()

    names = {f"{c}.{n}" if c else n for c in _containers(model)
             for n, _ in (model.get_submodule(c) if c else model).named_children()}
    handles = [model.get_submodule(n).register_forward_hook(ft.partial(keep, n)) for n in names]
    try:
        with torch.no_grad(), inplace_off(model):
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    for sel in out_sel:
        out = out[sel]
    return seen, out


def _middle(model: nn.Module, seen: dict[str, object]) -> str:
    """The middle child of the largest block list whose children the forward ran."""
    for c in _containers(model):
        prefix = f"{c}." if c else ""
        kids = [k for k in seen if k.startswith(prefix) and "." not in k[len(prefix):].split("/")[0]]
        if kids:
            return kids[len(kids) // 2]
    raise AssertionError("no block of the model returned a tensor")


def _hooked(model: nn.Module, x: Tensor, name: str) -> Tensor:
    keep: list[Tensor] = []
    handle = model.get_submodule(name).register_forward_hook(lambda m, i, o: keep.append(o.clone()))
    try:
        with torch.no_grad(), inplace_off(model):
            model(x)
    finally:
        handle.remove()
    return keep[-1]


def _first_size(model: nn.Module, fixed: tuple[int, int] | None, out_sel: tuple[str, ...]):
    """(size, input, reference) at the smallest test size the model runs at (None if none)."""
    for s in ((fixed[0],) if fixed else SIZES):
        x = torch.rand(1, 3, s, s, generator=torch.Generator().manual_seed(0))
        try:
            return s, x, _reference(model, x, out_sel)
        except Exception:  # noqa: BLE001 - too small for this model: try the next size
            continue
    return None


def true_layout(site: str, a: Tensor, family: str, model: nn.Module) -> str:
    """What the activation is, by the architecture's definition (not by our detection)."""
    if a.dim() == 2:
        return "b c"
    if a.dim() == 4:
        nhwc = NHWC.get(family)
        return "b h w c" if nhwc is not None and nhwc(site) else "b c h w"
    prefix = PREFIX[family](site) if family in PREFIX else getattr(model, "num_prefix_tokens", 0)
    return f"b ({prefix} + h w) c" if prefix else "b (h w) c"


# Where an architecture is channels-last: torchvision Swin's features and norm (not its patch convolution), timm
# Swin's stages, MambaOut's stages, ConvNeXt's MLP (with conv_mlp=False).
NHWC = {
    "tv_swin": lambda s: (s.startswith("features") and s != "features.0.0") or s == "norm",
    "swin": lambda s: s.startswith("layers") or s == "norm",
    "mambaout": lambda s: s.startswith("stages.") and ".downsample" not in s,
    "convnext_mlp": lambda s: s.endswith(".mlp") or s.endswith(".norm"),
}
# Prefix tokens before the patch grid: a CLS token joins CaiT and XCiT only in their class-attention blocks.
PREFIX = {
    "tv_vit": lambda s: 1,
    "cait": lambda s: 0 if s.startswith("blocks.") else 1,
    "xcit": lambda s: 0 if s.startswith("blocks.") else 1,
    "pit": lambda s: 1,
}
SITE = {"convnext_mlp": "stages.1.blocks.0.mlp"}  # a site inside a block, where the container's middle is NCHW


def _read(a: Tensor, pattern: str) -> Tensor:
    """`a` in canonical form under the einops `pattern` (the test's own reading, tokens kept as they are)."""
    axes = pattern.replace("(", "").replace(")", "").split()
    if "+" in axes or len(axes) != a.dim():  # a token group: the token axis stays one axis
        return a if pattern.split()[-1] == "c" else a.transpose(1, 2)
    target = {4: "b c h w", 2: "b c"}[a.dim()]
    return einops.rearrange(a, f"{pattern} -> {target}")


def _close(a: Tensor, b: Tensor) -> bool:
    scale = float(b.abs().max()) if b.numel() else 0.0
    return a.shape == b.shape and float((a - b).abs().max()) <= 2e-3 * scale + 1e-4


def conformance(model: nn.Module, family: str, monkeypatch, *, out: str = OUTPUT, fixed=None) -> None:
    # Identity preprocessing, so the plan's model input is the reference's (torchvision and timm models would
    # otherwise get the normalization they declare, `lucent_dsl.models.info.inferred_info`); the geometry is still probed.
    ld.with_info(model.eval(), ld.ModelInfo())
    fixed = fixed or (geometry_of(model).size if geometry_of(model) is not None else None)
    out_site = Site("model", out)
    first = _first_size(model, fixed, out_site.selectors)
    assert first is not None, "the model runs at none of the test sizes"
    size, x, (seen, ref_out) = first
    monkeypatch.setattr(sitemap, "DEFAULT_BASE", (size, size))
    mid = SITE.get(family) or _middle(model, seen)
    if mid not in seen:
        seen[mid] = _hooked(model, x, mid)
    flags = [getattr(m, "inplace", None) for m in model.modules()]
    objective = ld.channel(mid, 0) + ld.channel(out, 0)
    plan = ld.compile_plan(objective, model)
    with torch.no_grad():
        acts = plan.forward(x)
    for site, ref in ((Site("model", mid), seen[mid]), (out_site, ref_out)):
        truth = true_layout(site.module_path, ref, family, model)
        found = plan.layouts[site]
        assert isinstance(found, Layout), f"{site}: {found}"
        assert found.axes == ld.models.layouts.parse_layout(truth).axes, f"{site}: found {found}, true {truth}"
        prefix = ld.models.layouts.parse_layout(truth).prefix
        assert found.prefix in (prefix, None) or found.kind != "tokens", f"{site}: found {found}, true {truth}"
        expected = _read(ref, truth)
        assert _close(acts[site], expected), (
            f"{site}: max |plan - hook| = {float((acts[site] - expected).abs().max()):.3g} "
            f"(scale {float(expected.abs().max()):.3g}), layout {found}")
    geometry = plan.infos["model"].input_geometry
    # Models of one size (or multiples of k) render through the standard transforms, which the plan maps back to
    # the model's geometry; the others render as they are (their geometry maps nothing).
    mapped = geometry is not None and (geometry.size is not None or geometry.multiple > 1)
    r = ld.render(plan, size=(size, size), steps=2, progress=False, transforms=None if mapped else [])
    assert r.steps == 2 and all(bool(torch.isfinite(h).all()) for h in r.history.values())
    # bf16 forced, whatever this machine's "auto" picks (on CUDA and native-bf16 CPUs it picks bf16 for most of
    # these models); emulated, so slow, on an AVX2 CPU: one step.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="precision='bf16' on a CPU without bf16 units")
        r16 = ld.render(plan, size=(size, size), steps=1, progress=False, transforms=None if mapped else [],
                        precision="bf16")
    assert r16.precision == "bf16" and all(bool(torch.isfinite(h).all()) for h in r16.history.values())
    assert [getattr(m, "inplace", None) for m in model.modules()] == flags  # the model keeps its in-place ops
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


# --- torchvision ------------------------------------------------------------------------------------------------

ALL_CLASSIFIERS = tvm.list_models(module=tvm)
# One model (the smallest, and each structural variant) per family by default; all 80 with LUCENT_ALL_ARCHITECTURES=1
# (another 2-3 minutes: the large RegNets and ViTs dominate).
SAMPLE = ("alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "googlenet", "inception_v3", "maxvit_t",
          "mnasnet0_5", "mobilenet_v2", "mobilenet_v3_small", "regnet_x_400mf", "regnet_y_400mf", "resnet18",
          "resnext50_32x4d", "shufflenet_v2_x0_5", "squeezenet1_0", "swin_t", "swin_v2_t", "vgg11_bn", "vit_b_16",
          "vit_b_32")
CLASSIFIERS = ALL_CLASSIFIERS if os.environ.get("LUCENT_ALL_ARCHITECTURES") == "1" else [
    n for n in ALL_CLASSIFIERS if n in SAMPLE]
_VIT_SIZE = {"vit_b_16": 32, "vit_b_32": 64, "vit_l_16": 32, "vit_l_32": 64, "vit_h_14": 28}


def tv_family(name: str) -> str:
    return "tv_vit" if name.startswith("vit_") else "tv_swin" if name.startswith("swin") else name.split("_")[0]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_torchvision_classifier(name, monkeypatch):
    kwargs = {"image_size": _VIT_SIZE[name]} if name in _VIT_SIZE else {}
    if name in ("googlenet", "inception_v3"):
        kwargs["init_weights"] = True
    torch.manual_seed(0)
    with fast_init():
        model = tvm.get_model(name, weights=None, **kwargs)
    conformance(model, tv_family(name), monkeypatch)


SEGMENTATION = tvm.list_models(module=tvm.segmentation)


@pytest.mark.parametrize("name", SEGMENTATION)
def test_torchvision_segmentation(name, monkeypatch):
    torch.manual_seed(0)
    with fast_init():
        model = tvm.get_model(name, weights=None, weights_backbone=None)
    conformance(model, "segmentation", monkeypatch, out="@output/out")


# --- timm -------------------------------------------------------------------------------------------------------

# family -> (smallest model, create_model kwargs). Every family named in issue 15 is here.
TIMM = {
    "vit": ("vit_tiny_patch16_224", {"img_size": 64}),
    "deit": ("deit_tiny_distilled_patch16_224", {"img_size": 64}),
    "dinov2": ("vit_small_patch14_reg4_dinov2", {"img_size": 56}),
    "eva02": ("eva02_tiny_patch14_224", {"img_size": 56}),
    "beit": ("beitv2_base_patch16_224", {"img_size": 64, "depth": 4}),
    "cait": ("cait_xxs24_224", {"img_size": 64, "depth": 4}),
    "levit": ("levit_128s", {"img_size": 64}),
    "mixer": ("mixer_s16_224", {"img_size": 64}),
    "resmlp": ("resmlp_12_224", {"img_size": 64}),
    "swin": ("swin_tiny_patch4_window7_224", {"img_size": 112, "window_size": 7}),
    "swinv2_cr": ("swinv2_cr_tiny_224", {"img_size": 112, "window_size": 7}),
    "visformer": ("visformer_tiny", {"img_size": 64}),
    "maxvit": ("maxvit_nano_rw_256", {"img_size": 128}),
    "hrnet": ("hrnet_w18_small", {}),
    "mambaout": ("mambaout_femto", {}),
    "convnext": ("convnext_atto", {}),
    "convnext_mlp": ("convnext_atto", {"conv_mlp": False}),
    "resnet": ("resnet18", {}),
    "efficientnet": ("efficientnet_b0", {}),
    "mobilenetv3": ("mobilenetv3_small_050", {}),
    "regnet": ("regnetx_002", {}),
    "densenet": ("densenet121", {}),
    "dla": ("dla34", {}),
    "ghostnet": ("ghostnet_100", {}),
    "rexnet": ("rexnet_100", {}),
    "mobilevit": ("mobilevit_xxs", {}),
    "pit": ("pit_ti_224", {"img_size": 64}),
    "xcit": ("xcit_nano_12_p16_224", {"img_size": 64}),
    "poolformer": ("poolformer_s12", {}),
    "edgenext": ("edgenext_xx_small", {}),
    "efficientformer": ("efficientformer_l1", {}),
    "fastvit": ("fastvit_t8", {}),
    "pvt_v2": ("pvt_v2_b0", {}),
    "tiny_vit": ("tiny_vit_5m_224", {}),
    "efficientvit": ("efficientvit_b0", {}),
    "inception_next": ("inception_next_tiny", {}),
    "repvit": ("repvit_m1", {}),
    "hgnetv2": ("hgnetv2_b0", {}),
    "davit": ("davit_tiny", {}),
    "inception_v3": ("inception_v3", {}),
}


@pytest.mark.parametrize("family", sorted(TIMM))
def test_timm_family(family, monkeypatch):
    timm = pytest.importorskip("timm")
    name, kwargs = TIMM[family]
    torch.manual_seed(0)
    with fast_init():
        model = timm.create_model(name, pretrained=False, **kwargs)
    conformance(model, family, monkeypatch)


def test_every_named_family_is_sampled():
    named = {"vit", "deit", "dinov2", "eva02", "beit", "cait", "levit", "mixer", "resmlp", "swin", "swinv2_cr",
             "visformer", "maxvit", "hrnet", "mambaout", "convnext"}
    assert named <= set(TIMM) and len({v[0].split("_")[0] for v in TIMM.values()}) >= 30
    assert len(ALL_CLASSIFIERS) >= 80 and len(SEGMENTATION) >= 6
    assert set(SAMPLE) <= set(ALL_CLASSIFIERS) and {tv_family(n) for n in SAMPLE} >= {"tv_vit", "tv_swin", "maxvit"}

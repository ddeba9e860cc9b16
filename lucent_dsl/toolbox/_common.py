"""The toolbox's shared pieces: optional extras, activations over a dataset, batched direction renders.

Private to `lucent_dsl.toolbox`; its modules import these names, users import the modules.
"""
from __future__ import annotations

import dataclasses as dc
import html
import importlib
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..args import check_choice, check_int, check_real, check_seed, check_size
from ..errors import ImageError, InvalidArgumentError, LucentError, ObjectiveShapeError
from ..models.info import device_of, info_of, spec_of
from ..objectives import check_layer
from ..plan.compiler import compile_plan
from ..plan.forward import layer_reader, read_layers

EXTRA = "research"
POSITIONS = ("random", "center", "mean")


class MissingExtraError(LucentError, ImportError):
    """An optional dependency of the research toolbox is not installed; the message names the extra."""


def require(module: str, *, package: str | None = None, extra: str = EXTRA, what: str = "this method") -> Any:
    """Import an optional dependency, or raise `MissingExtraError` naming the pip extra that installs it.

    Example:
        >>> require("math").sqrt(4.0)
        2.0
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        pip = package or module.split(".")[0]
        raise MissingExtraError(
            f"{what} needs {pip!r}, which is not installed: pip install 'lucent_dsl[{extra}]' (or pip install {pip})"
        ) from None


def model_size(model: nn.Module, size: Any) -> tuple[int, int]:
    """`size` as (H, W); None: the model's input size, else 224."""
    if size is None:
        s = info_of(model).input_size
        return (int(s[0]), int(s[1])) if s else (224, 224)
    return check_size(size)


def has_input_size(model: nn.Module) -> bool:
    return info_of(model).input_size is not None


def image_channels(model: nn.Module) -> int:
    """Colour channels a render (or a loaded image) has for `model`: 1 for grey models, else 3."""
    return 1 if info_of(model).channels == 1 else 3


# --- activations --------------------------------------------------------------------------------------


def batches(images: Any, batch: int) -> Iterable[Tensor]:
    """(N, C, H, W) tensors in [0, 1] from a tensor (cut into `batch`-sized pieces) or an iterable of batches."""
    if isinstance(images, Tensor):
        if images.dim() != 4:
            raise InvalidArgumentError(f"images must be (N, C, H, W) in [0, 1], got shape {tuple(images.shape)}")
        return (images[i:i + batch] for i in range(0, images.shape[0], batch))
    if isinstance(images, Iterable) and not isinstance(images, (str, bytes)):
        return images
    raise InvalidArgumentError(
        f"images must be an (N, C, H, W) tensor or an iterable of such batches, got {type(images).__name__}")


def as_rows(a: Any, layer: str) -> Tensor:
    """An activation as (B, C, positions) whatever its layout: maps, (B, tokens, C) or (B, C)."""
    if not isinstance(a, Tensor) or not a.is_floating_point() or a.dim() not in (2, 3, 4):
        shape = tuple(a.shape) if isinstance(a, Tensor) else type(a).__name__
        raise ObjectiveShapeError(
            f"layer {layer!r} gives {shape}; the toolbox reads (B, C, H, W) maps, (B, tokens, C) sequences and "
            "(B, C) vectors of floats"
        )
    return {4: lambda t: t.flatten(2), 3: lambda t: t.transpose(1, 2), 2: lambda t: t.unsqueeze(-1)}[a.dim()](a)


def layer_outputs(model: nn.Module, images: Any, layer: str, *, batch: int = 128) -> Iterable[Tensor]:
    """Stream `layer`'s activations over `images`, one batch at a time (frozen model, no gradients, truncated)."""
    layer = check_layer(layer)
    batch = check_int("batch", batch)
    reader = layer_reader(model, layer)
    for x in batches(images, batch):
        if not isinstance(x, Tensor) or x.dim() != 4:
            got = getattr(x, "shape", x)
            raise InvalidArgumentError(f"each batch of images must be (B, C, H, W) in [0, 1], got {got!r}")
        _check_unit_range(x)
        yield read_layers(model, x.to(torch.float32), layer, reader=reader)[layer]


def _check_unit_range(x: Tensor) -> None:
    """Images are floats in [0, 1]: 0-255 pixels (uint8, or floats like 200.0) would be read 255x too bright."""
    if not x.is_floating_point():
        raise ImageError(f"images must be floats in [0, 1], got {x.dtype} values: divide 0-255 pixels by 255")
    if x.numel() and not (float(x.min()) >= -1e-4 and float(x.max()) <= 1 + 1e-4):
        raise ImageError(f"images must lie in [0, 1], got values in {float(x.min()):.4g}..{float(x.max()):.4g}: "
                         "divide 0-255 pixels by 255, and undo a mean/std normalization (the model's own "
                         "preprocessing is applied to [0, 1] images)")


def collect(model: nn.Module, images: Any, layer: str, *, position: str = "random", batch: int = 128,
            seed: int = 0) -> Tensor:
    """One activation vector per image at `layer`, as an (N, C) float32 tensor on the CPU.

    Args:
        position: on maps and token sequences, which position gives an image's vector: "random"
            (one random position per image, as in Carter et al.'s atlases), "center", or "mean".
            Vectors (B, C) are taken as they are.

    Example:
        >>> import torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> collect(net, torch.rand(5, 3, 8, 8), "1").shape
        torch.Size([5, 4])
    """
    if position not in POSITIONS:
        raise InvalidArgumentError(f"position must be one of {POSITIONS}, got {position!r}")
    gen = torch.Generator().manual_seed(int(seed))
    out = []
    for a in layer_outputs(model, images, layer, batch=batch):
        cp = as_rows(a, layer).float().cpu()
        p = cp.shape[-1]
        if position == "mean":
            out.append(cp.mean(-1))
        elif position == "center" or p == 1:
            out.append(cp[:, :, _centre(a, p)])
        else:
            idx = torch.randint(p, (cp.shape[0],), generator=gen)
            out.append(cp[torch.arange(cp.shape[0]), :, idx])
    if not out:
        raise InvalidArgumentError("collect: no images were given")
    return torch.cat(out)


def _centre(a: Tensor, p: int) -> int:
    if a.dim() == 4:
        return (a.shape[2] // 2) * a.shape[3] + a.shape[3] // 2
    return p // 2


# --- batched renders of directions --------------------------------------------------------------------


@dc.dataclass(frozen=True)
class Settings:
    """How a toolbox method renders each of its images: one value instead of render's arguments repeated.

    Every field has render's default; a method resolves what is left open (`resolved`): `size=None`
    is the method's default size (the model's input size, else 224; neuron groups: the image's size),
    `precision="auto"` is decided once for the whole method, and `spec` is the model's. What is
    resolved is what a `Recipe` records, so every PNG replays with `lucent-dsl render --recipe`.

    Args:
        size: the renders' size, an int or (H, W); None: the method's default.
        steps, lr: the optimisation.
        param: "fft" or "pixel"; transforms: "standard" or "none".
        precision: render's ("auto", "fp32", "bf16").
        seed: the method's base seed (sampling, layout or NMF, and each image's own seed).
        batch: images per batched render.
        device, compile, progress: render's (`compile` is off: each batch has its own objectives).
        spec: the model's spec when `zoo.load`/`build_model` made it (`models.spec_of`); filled in by `resolved`.

    Example:
        >>> s = Settings(size=32, steps=64)
        >>> s.size, s.precision, dc.replace(s, lr=0.1).lr
        ((32, 32), 'auto', 0.1)
    """

    size: tuple[int, int] | None = None
    steps: int = 256
    lr: float = 0.05
    param: str = "fft"
    transforms: str = "standard"
    precision: str = "auto"  # render's; `resolved` makes it what runs ("fp32" or "bf16"), which recipes record
    spec: str | None = None
    _: dc.KW_ONLY
    seed: int = 0
    batch: int = 16
    device: Any = None
    compile: bool | str = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.param not in ("fft", "pixel"):
            raise InvalidArgumentError(f"param must be 'fft' or 'pixel', got {self.param!r}")
        if self.transforms not in ("standard", "none"):
            raise InvalidArgumentError(f"transforms must be 'standard' or 'none', got {self.transforms!r}")
        check_choice("precision", self.precision, ("auto", "fp32", "bf16"))
        fix = {"size": None if self.size is None else check_size(self.size), "steps": check_int("steps", self.steps),
               "lr": check_real("lr", self.lr, positive=True), "seed": check_seed(self.seed),
               "batch": check_int("batch", self.batch)}
        for name, value in fix.items():
            object.__setattr__(self, name, value)

    def resolved(self, model: nn.Module, *, default_size: tuple[int, int] | None = None) -> Settings:
        """These settings with what was left open decided for `model` on its device, once for the whole method:
        the size (`default_size`, else the model's input size, else 224), the model's spec, and
        `precision="auto"` (render's rule, `models.hardware.resolve_precision`): every image's recipe says what ran."""
        from ..models.hardware import resolve_precision

        size = self.size if self.size is not None else default_size or model_size(model, None)
        spec = self.spec if self.spec is not None else spec_of(model)
        precision = resolve_precision(self.precision, [model], device_of(model), size, 1)
        return dc.replace(self, size=size, spec=spec, precision=precision)

    def recipe(self, objective: str, seed: int, spec: str | None) -> Any:
        """The one-image `Recipe` of `objective` rendered with these (resolved) settings (None without a model
        spec)."""
        spec = spec if spec is not None else self.spec
        if spec is None:
            return None
        from ..record.recipe import Recipe

        return Recipe(objective=objective, models=(spec,), size=self.size, steps=self.steps, seed=seed,
                      param=self.param, transforms=self.transforms, lr=self.lr, precision=self.precision)


RENDER_KEYWORDS = tuple(f.name for f in dc.fields(Settings) if f.name not in ("_", "spec"))
"""The keywords the toolbox methods took before `settings=`, one per field of `Settings`; still accepted."""


def settings_from(settings: Settings | None, keywords: dict[str, Any], *, where: str,
                  aliases: dict[str, str] | None = None) -> Settings:
    """One `Settings` from a method's `settings=` and its render keywords (the old form: `steps=`, `lr=`, ...).

    `aliases` maps a method's own name of a field to the field (neuron groups' `render_size` is `size`).
    A keyword given beside `settings` must agree with it; one that differs is refused, naming the fix.

    Raises:
        TypeError: a keyword that is no render setting (as Python says of an unknown keyword).
        InvalidArgumentError: a keyword that contradicts `settings`, or a bad value.

    Example:
        >>> settings_from(None, {"steps": 8}, where="f()").steps
        8
        >>> settings_from(Settings(steps=8), {"steps": 9}, where="f()")
        Traceback (most recent call last):
        ...
        lucent_dsl.errors.InvalidArgumentError: f(): steps=9 contradicts settings.steps=8; ...
    """
    fields = {k: k for k in RENDER_KEYWORDS if k not in (aliases or {}).values()} | (aliases or {})
    unknown = [k for k in keywords if k not in fields]
    if unknown:
        raise TypeError(f"{where} got an unexpected keyword argument {unknown[0]!r}; render settings go in "
                        f"settings=Settings(...) (or the keywords {', '.join(sorted(fields))})")
    values = {fields[k]: v for k, v in keywords.items()}
    if settings is None:
        return Settings(**values)
    if not isinstance(settings, Settings):
        raise InvalidArgumentError(f"{where}: settings must be a toolbox Settings, got {type(settings).__name__}")
    given = dc.replace(settings, **values)
    for k in keywords:
        field = fields[k]
        if getattr(given, field) != getattr(settings, field):
            raise InvalidArgumentError(
                f"{where}: {k}={keywords[k]!r} contradicts settings.{field}={getattr(settings, field)!r}; give one of "
                f"them (to change a field of a settings value: dataclasses.replace(settings, {field}=...))"
            )
    return settings


def render_each(objectives: Sequence[str], seeds: Sequence[int], model: nn.Module,
                settings: Settings) -> tuple[Tensor, Tensor]:
    """Render one image per objective, `settings.batch` per run; image i equals the one-image render seeded `seeds[i]`.

    `settings` is resolved (`Settings.resolved`); its `compile` is off by default: each batch's objectives carry
    their own vectors as constants, so a compiled step would compile again for every batch.

    Returns:
        (images (N, C, H, W) on the CPU, final scores (N,)).
    """
    from ..atlas import seeded_param, seeded_transforms
    from ..renderer.phases import image_channels, render

    if settings.size is None:
        raise InvalidArgumentError("render_each: resolve the settings first (Settings.resolved(model))")
    if len(objectives) != len(seeds) or not objectives:
        raise InvalidArgumentError(
            f"render_each: {len(objectives)} objectives and {len(seeds)} seeds (need as many, >= 1)"
        )
    batch, device = settings.batch, settings.device
    dev = torch.device(device) if device is not None else device_of(model)
    images, scores = [], []
    for start in range(0, len(objectives), batch):
        chunk = list(objectives[start:start + batch])
        plan = compile_plan(chunk, model)
        gens = [torch.Generator(dev).manual_seed(int(s)) for s in seeds[start:start + batch]]
        result = render(plan, steps=settings.steps, lr=settings.lr, seed=int(seeds[start]),
                        param=seeded_param(settings.param, settings.size, gens, image_channels(plan)),
                        transforms=seeded_transforms(settings.transforms, gens), precision=settings.precision,
                        device=device, compile=settings.compile, progress=settings.progress, preset="lucid")
        if result.interrupted:
            raise KeyboardInterrupt
        images.append(result.images)
        scores.append(result.scores().detach().cpu())
    return torch.cat(images), torch.cat(scores)


def direction_scores(model: nn.Module, images: Tensor, layer: str, vectors: Tensor, *, batch: int = 32) -> Tensor:
    """Mean over positions of dot(activation, unit vector), for every image and vector: (N, K).

    The yardstick of the toolbox's tests and summaries: how strongly each image drives each
    direction, with the vectors scaled to unit length so that directions compare fairly.
    """
    v = vectors.detach().to(torch.float32)
    v = v / v.norm(dim=1, keepdim=True).clamp(min=1e-12)
    rows = []
    for a in layer_outputs(model, images, layer, batch=batch):
        cp = as_rows(a, layer).float()
        if cp.shape[1] != v.shape[1]:
            raise ObjectiveShapeError(f"layer {layer!r} has {cp.shape[1]} channels but the vectors have {v.shape[1]}")
        rows.append(torch.einsum("bcp,kc->bk", cp, v.to(cp.device)).div(cp.shape[-1]).cpu())
    return torch.cat(rows)


def escape(text: Any) -> str:
    return html.escape(str(text), quote=True)

"""Model specs: the strings that name a model (`mobilenet_v2`, `torchvision:resnet18`, `timm:NAME`, `file.py:factory`).


| spec                               | model                                                        |
| ---------------------------------- | ------------------------------------------------------------ |
| `mobilenet_v2`                     | a `lucent_dsl.zoo` model (`zoo.names()`)                     |
| `torchvision:resnet18`             | a torchvision architecture, random weights                   |
| `torchvision:resnet18:weights=DEFAULT` | ... with torchvision's pretrained weights (downloads)    |
| `timm:NAME[:pretrained=true]`      | a timm model (when timm is installed)                        |
| `open_clip:ARCH[:PRETRAINED]`      | open_clip's CLIP, its image tower (`models.clip`); a tag downloads |
| `path/to/file.py:factory`          | `factory()` from that file (imported with importlib)         |
| `hf:ORG/NAME`                      | a transformers model and its weights (downloads; `huggingface.build`) |
| `hf:./folder`, `hf:/abs/folder`    | ... from a `save_pretrained` folder (a path: `/`, `.` or `~` first) |
| `name=SPEC`                        | any of the above, named `name` for an ensemble               |

Random weights are drawn under `torch.manual_seed(0)` (in a forked RNG state), so a spec always
builds the same model and a recipe that names one replays exactly.

Example:
    >>> parse_spec("mnet=torchvision:mobilenet_v2:weights=DEFAULT")
    ModelSpec(name='mnet', kind='torchvision', target='mobilenet_v2', options=(('weights', 'DEFAULT'),))
"""
from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from ..errors import InvalidArgumentError
from .info import IMAGENET_MEAN, IMAGENET_STD, ModelInfo, info_of, non_inplace, stamp_spec, with_info

MODEL_SEED = 0
"""Seed of the RNG state under which specs build their models (random weights replay)."""

_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_\-]*)=(.+)$")
_SPEC_HELP = (
    "a zoo name ({zoo}), torchvision:NAME[:weights=W], timm:NAME[:pretrained=true], open_clip:ARCH[:PRETRAINED], "
    "path/to/file.py:factory, hf:ORG/NAME or hf:./folder (Hugging Face transformers), or name=SPEC for an ensemble"
)


def _zoo() -> Any:
    from .. import zoo  # imported on first use, so `python -m lucent_dsl.zoo install` runs it as a fresh module

    return zoo


class ModelSpec(NamedTuple):
    """A parsed model spec: `name` (None: unnamed), `kind` (zoo, torchvision, timm, file), target, options."""

    name: str | None
    kind: str
    target: str
    options: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        body = self.target if self.kind in ("zoo", "file") else f"{self.kind}:{self.target}"
        body += "".join(f":{k}={v}" for k, v in self.options)
        return f"{self.name}={body}" if self.name else body

    @property
    def default_name(self) -> str:
        """The name an unnamed spec gets in an ensemble: the zoo/architecture/factory name."""
        if self.kind == "file":
            return self.target.rsplit(":", 1)[1]
        if self.kind == "hf":
            return self.target.rstrip("/").rsplit("/", 1)[-1] or "hf"
        return self.target.replace(":", "_")


def _spec_error(spec: str, why: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"bad model spec {spec!r}: {why}. A spec is {_SPEC_HELP.format(zoo=', '.join(_zoo().names()))}"
    )


def parse_spec(spec: str) -> ModelSpec:
    """Parse one model spec string (see the module docstring); nothing is built or imported.

    Raises:
        InvalidArgumentError: the text is not a spec.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise _spec_error(str(spec), "it is empty")
    text = spec.strip()
    name = None
    m = _NAME.match(text)
    if m and ":" not in m.group(1):
        name, text = m.group(1), m.group(2)
    if text in _zoo().names():
        return ModelSpec(name, "zoo", text)
    head, _, rest = text.partition(":")
    if head in ("torchvision", "timm"):
        target, *opts = rest.split(":")
        if not target:
            raise _spec_error(spec, f"{head}: needs an architecture name, e.g. {head}:resnet18")
        options = []
        allowed = ("weights",) if head == "torchvision" else ("pretrained",)
        for opt in opts:
            key, eq, value = opt.partition("=")
            if not eq or key not in allowed or not value:
                raise _spec_error(spec, f"unknown option {opt!r}; {head} specs take {allowed[0]}=...")
            options.append((key, value))
        return ModelSpec(name, head, target, tuple(options))
    if head == "open_clip":
        return _open_clip_spec(name, rest, spec)
    if head == "hf":
        if not rest.strip():
            raise _spec_error(spec, "hf: needs a Hub name or a folder, e.g. hf:google/vit-base-patch16-224")
        return ModelSpec(name, "hf", rest.strip())
    path, colon, factory = text.rpartition(":")
    if colon and path.endswith(".py"):
        if not factory.isidentifier():
            raise _spec_error(spec, f"{factory!r} is not a Python function name")
        return ModelSpec(name, "file", f"{path}:{factory}")
    if text.endswith(".py"):
        raise _spec_error(spec, "name the function that builds the model: path/to/file.py:factory")
    close = [n for n in _zoo().names() if n.startswith(text[:3].lower())]
    hint = f"did you mean {close[0]!r}" if close else "not a zoo name, torchvision:, timm: or file.py:factory"
    raise _spec_error(spec, hint)


def _open_clip_spec(name: str | None, rest: str, spec: str) -> ModelSpec:
    """`open_clip:ARCH[:PRETRAINED]` (or `:pretrained=TAG`): the tag is kept as an option, `none` dropped."""
    arch, *opts = rest.split(":")
    if not arch or len(opts) > 1:
        raise _spec_error(spec, "open_clip: takes an architecture and an optional pretrained tag, e.g. "
                                "open_clip:ViT-B-32 or open_clip:ViT-B-32:laion2b_s34b_b79k")
    tag = opts[0].partition("=")[2] if opts and opts[0].lower().startswith("pretrained=") else (opts or [""])[0]
    if opts and not tag:
        raise _spec_error(spec, "the pretrained tag is empty")
    options = (("pretrained", tag),) if tag and tag.lower() != "none" else ()
    return ModelSpec(name, "open_clip", arch, options)


def normalize_spec(spec: str) -> str:
    """`spec` in the form a recipe stores: parsed, with a file path made absolute."""
    s = parse_spec(spec)
    if s.kind == "file":
        path, factory = s.target.rsplit(":", 1)
        s = s._replace(target=f"{Path(path).expanduser().resolve()}:{factory}")
    if s.kind == "hf" and is_local_folder(s.target):
        s = s._replace(target=str(Path(s.target).expanduser().resolve()))
    return str(s)


def is_local_folder(target: str) -> bool:
    """Whether an `hf:` spec's target names a local folder (a path starting with `/`, `.` or `~`), not a Hub name."""
    return target.startswith(("/", ".", "~"))


def _huggingface(spec: ModelSpec, text: str) -> nn.Module:
    from . import huggingface, sources

    return sources.adapt(huggingface.build(spec.target, text, local=is_local_folder(spec.target)))


def _torchvision(spec: ModelSpec, text: str) -> nn.Module:
    from torchvision import models as tvm

    if spec.target not in tvm.list_models():
        import difflib

        close = difflib.get_close_matches(spec.target, tvm.list_models(), n=3)
        raise _spec_error(
            text, f"torchvision has no model {spec.target!r}" + (f"; did you mean {', '.join(close)}" if close else "")
        )
    options = dict(spec.options)
    weights = None
    if "weights" in options and options["weights"].lower() != "none":
        try:
            weights = tvm.get_model_weights(spec.target).verify(options["weights"])
        except (KeyError, ValueError, AttributeError) as e:
            raise _spec_error(text, f"unknown weights {options['weights']!r} for {spec.target} ({e})") from e
    try:
        model = tvm.get_model(spec.target, weights=weights)
    except OSError as e:  # no network and not in the hub cache
        raise InvalidArgumentError(f"cannot get the weights of {text!r}: {e}") from e
    labels = tuple(weights.meta["categories"]) if weights is not None and "categories" in weights.meta else None
    non_inplace(model)
    # A fixed-size architecture (ViT: its image_size, MaxViT) renders at that size; others are probed by the plan.
    from .architectures import geometry_of

    geometry = geometry_of(model)
    size = geometry.size if geometry is not None else None
    return with_info(model, ModelInfo(IMAGENET_MEAN, IMAGENET_STD, size, 3, labels, spec.target, geometry=geometry))


def _timm(spec: ModelSpec, text: str) -> nn.Module:
    try:
        import timm  # pyright: ignore[reportMissingImports]
    except ImportError:
        raise _spec_error(text, "timm is not installed (pip install timm)") from None
    pretrained = dict(spec.options).get("pretrained", "false").lower() in ("1", "true", "yes")
    try:
        model = timm.create_model(spec.target, pretrained=pretrained)
    except RuntimeError as e:  # timm's "Unknown model"
        raise _spec_error(text, str(e)) from e
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size")
    non_inplace(model)
    # What the model says (fixed img_size, dynamic_img_size multiples); convnets of any size (or multiples of k,
    # like HRNet) are left to the plan's probe, and see the image at the render size.
    from .architectures import geometry_of

    geometry = geometry_of(model)
    info = ModelInfo(
        tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD)),
        geometry.size if geometry is not None else None, int(size[0]) if size else 3, None, spec.target,
        geometry=geometry,
    )
    return with_info(model, info)


def _open_clip(spec: ModelSpec, text: str) -> nn.Module:
    from .clip import clip_image
    from .openclip import arch_tokenizer, create

    try:
        model = create(spec.target, dict(spec.options).get("pretrained"))
        return clip_image(model, tokenizer=arch_tokenizer(spec.target), name=spec.target)
    except InvalidArgumentError as e:
        raise _spec_error(text, str(e)) from None


def _from_file(spec: ModelSpec, text: str) -> nn.Module:
    path_text, factory_name = spec.target.rsplit(":", 1)
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise InvalidArgumentError(f"model spec {text!r}: no such file {str(path)!r}")
    module_name = "_lucent_dsl_user_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise InvalidArgumentError(f"model spec {text!r}: cannot import {str(path)!r} as Python")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module  # dataclasses and pickling look a class's module up here
    try:
        loader_spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(module_name, None)
        raise InvalidArgumentError(
            f"model spec {text!r}: importing {str(path)!r} failed: {type(e).__name__}: {e}"
        ) from e
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise InvalidArgumentError(
            f"model spec {text!r}: {str(path)!r} has no function {factory_name!r} (it has: "
            f"{', '.join(found) or 'nothing callable'})"
        )
    try:
        model = factory()
    except Exception as e:
        raise InvalidArgumentError(f"model spec {text!r}: {factory_name}() raised {type(e).__name__}: {e}") from e
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(
            f"model spec {text!r}: {factory_name}() returned a {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def build_model(spec: str | ModelSpec, *, device: str | torch.device | None = None) -> nn.Module:
    """Build the module a spec names, in eval mode with frozen parameters, on `device` (default CPU).

    Raises:
        InvalidArgumentError: a bad spec, a missing file, a factory that fails.
        WeightsNotFoundError: a zoo model whose weights are not installed.
    """
    s = parse_spec(spec) if isinstance(spec, str) else spec
    text = str(spec)
    if s.kind == "zoo":
        model = _zoo().load(s.target)
    else:
        build: Callable[[ModelSpec, str], nn.Module] = {"torchvision": _torchvision, "timm": _timm, "file": _from_file,
                                                      "open_clip": _open_clip, "hf": _huggingface}[s.kind]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(MODEL_SEED)
            model = build(s, text)
    from .checks import check_model

    check_model(model, text)  # TorchScript, meta weights, fp16/fp64, forward(x, y): refused with what to do
    model.eval().requires_grad_(False)
    if device is not None:
        model.to(device)
    stamp_spec(model, normalize_spec(str(s._replace(name=None))))
    return model


def build_models(specs: Sequence[str], *, device: str | torch.device | None = None) -> nn.Module | dict[str, nn.Module]:
    """One module for one unnamed spec, else a dict name -> module (an ensemble).

    Unnamed specs in an ensemble are named after their zoo name, architecture or factory.
    Specs default to `(zoo.DEFAULT,)` when empty.

    Raises:
        InvalidArgumentError: a bad spec, or two models with the same name.
    """
    parsed = [parse_spec(s) for s in (specs or (_zoo().DEFAULT,))]
    if len(parsed) == 1 and parsed[0].name is None:
        return build_model(parsed[0], device=device)
    out: dict[str, nn.Module] = {}
    for s in parsed:
        name = s.name or s.default_name
        if name in out:
            raise InvalidArgumentError(
                f"two models are named {name!r}; name them: --model a={s._replace(name=None)} --model b=..."
            )
        out[name] = build_model(s, device=device)
    return out


def first_model(models: nn.Module | Mapping[str, nn.Module]) -> nn.Module:
    return models if isinstance(models, nn.Module) else next(iter(models.values()))


def default_size(models: nn.Module | Mapping[str, nn.Module]) -> tuple[int, int]:
    """The render size when none is given: the first model's input size, else 224."""
    size = info_of(first_model(models)).input_size
    return (int(size[0]), int(size[1])) if size else (224, 224)



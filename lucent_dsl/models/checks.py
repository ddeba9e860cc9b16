"""Checks of the models and devices a render is given, each a small pure function with a message that says what would be
right.

- `resolve_device`: `--device` text -> a usable device, refusing unknown names, `meta`, a CUDA index
  past the machine's GPUs, and CUDA without a GPU; `cpu:0` is `cpu`, `cuda` is the current GPU
  (`normalize_device` does the renaming alone, for comparisons with a model's device).
- `check_model`: models `render` cannot drive: TorchScript (`torch.jit.script`/`trace`), weights on
  the meta device, float16/float64 parameters, a `forward` that needs a second argument.
- `forward_hint`: a hint for a model's failed forward (a grayscale model without `ModelInfo`, ...).
- `weights_fingerprint`: a hash of a model's tensors, so an atlas never mixes two versions of a model.
- `generator_device`: where randomness drawn from a generator lands (parameterizations and transforms alike).

Example:
    >>> resolve_device("cpu:0")
    'cpu'
    >>> import torch.nn as nn
    >>> check_model(nn.Linear(2, 2).half(), "net")
    Traceback (most recent call last):
    ...
    lucent_dsl.errors.InvalidArgumentError: model 'net' has torch.float16 weights; ...: call model.float() first
"""
from __future__ import annotations

import hashlib
import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import InvalidArgumentError
from .info import info_of


def resolve_device(text: str | torch.device | None) -> str | None:
    """A device string `render` can use; None stays None (the models' device).

    Raises:
        InvalidArgumentError: an unknown device, `meta`, a missing GPU or a GPU index past the last one.
    """
    if text is None:
        return None
    try:
        dev = torch.device(text.strip().lower() if isinstance(text, str) else text)
    except (RuntimeError, TypeError):
        raise InvalidArgumentError(f"--device {text!r} is not a device torch knows; use cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return "cpu"
    if dev.type == "meta":
        raise InvalidArgumentError("--device meta holds no values, so nothing can be rendered on it; use cpu or cuda")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidArgumentError(f"--device {text!r}: this machine has no usable CUDA GPU (torch "
                                       f"{torch.__version__}, CUDA build {torch.version.cuda}); use --device cpu")
        count = torch.cuda.device_count()
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if index >= count:
            raise InvalidArgumentError(
                f"--device {text!r}: this machine has {count} CUDA GPU(s), cuda:0 .. cuda:{count - 1}"
            )
        return f"cuda:{index}"
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise InvalidArgumentError(f"--device {text!r}: MPS is not available on this machine; use --device cpu")
    return str(dev)


def generator_device(generator: torch.Generator | None) -> torch.device | None:
    """The device of tensors drawn from `generator`: its own, or None (torch's default device) without one.

    Parameterizations draw their starting leaves and transforms their parameters here, so both land on
    one device whatever `torch.set_default_device` says.

    Example:
        >>> generator_device(torch.Generator("cpu")), generator_device(None)
        (device(type='cpu'), None)
    """
    return generator.device if generator is not None else None


def normalize_device(device: str | torch.device) -> torch.device:
    """`device` as the device a tensor moved there reports: `cpu:N` is `cpu`, a bare `cuda` the current GPU.

    Example:
        >>> normalize_device("cpu:0") == torch.device("cpu")
        True
    """
    dev = torch.device(device)
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return dev


def _required_positional(model: nn.Module) -> list[str]:
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in params if p.kind in kinds and p.default is inspect.Parameter.empty]


def check_model(model: Any, name: str = "model") -> None:
    """Refuse a model `render` cannot drive, with what to do instead (see the module docstring)."""
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"model {name!r} is a {type(model).__name__}, not a torch.nn.Module")
    if isinstance(model, (torch.jit.ScriptModule, torch.jit.ScriptFunction)):
        raise InvalidArgumentError(
            f"model {name!r} is a TorchScript module (torch.jit.script or torch.jit.trace): its layers cannot be "
            "hooked or traced, so no layer could be read; pass the original nn.Module"
        )
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.is_meta for t in tensors):
        raise InvalidArgumentError(
            f"model {name!r} has weights on the meta device (shapes, no values); load its weights first, e.g. "
            "model.to_empty(device='cpu') and model.load_state_dict(...)"
        )
    odd = sorted({str(t.dtype) for t in tensors if t.is_floating_point() and t.dtype != torch.float32})
    if odd:
        raise InvalidArgumentError(
            f"model {name!r} has {', '.join(odd)} weights; lucent_dsl renders float32 models (precision='bf16' "
            "autocasts them): call model.float() first"
        )
    needed = _required_positional(model)
    if len(needed) > 1:
        raise InvalidArgumentError(
            f"model {name!r}: forward({', '.join(needed)}) needs {len(needed)} arguments, but lucent_dsl calls it with "
            f"the image only; wrap it in a module whose forward(x) calls it with the others fixed"
        )


def check_models(models: nn.Module | Mapping[str, nn.Module]) -> None:
    """`check_model` on one model or each model of an ensemble."""
    for name, model in ({"model": models} if isinstance(models, nn.Module) else dict(models)).items():
        check_model(model, name)


def forward_hint(model: nn.Module, error: BaseException | None) -> str:
    """A hint (starting with "; ") for a failed forward of `model`, or "" when there is none to give."""
    text = str(error)
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
    if "channels" in text and isinstance(first, nn.Conv2d) and first.in_channels != info_of(model).channels:
        return (f"; the model's first convolution reads {first.in_channels} channel(s) but lucent_dsl feeds it "
                f"{info_of(model).channels}: declare it with with_info(model, ModelInfo(channels={first.in_channels}))")
    if "size" in text or "shape" in text:
        return "; it may need another input size: pass --size (or size=), or declare it with ModelInfo(input_size=...)"
    return ""


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 (first 16 hex digits) of every parameter and buffer: names, dtypes, shapes and values.

    Example:
        >>> a = nn.Linear(2, 2)
        >>> weights_fingerprint(a) == weights_fingerprint(a)
        True
    """
    h = hashlib.sha256()
    for key, t in model.state_dict().items():
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.is_meta:
            continue
        flat = t.to("cpu").contiguous().reshape(-1)
        h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return h.hexdigest()[:16]

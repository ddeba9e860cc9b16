"""Resources a render will use, checked before its first step: caps on settings, memory, the output folder.

- `check_caps`: steps, image side, batch and GIF frames above `CAPS` are refused (a typo such as
  `--steps 10000000` or `--every 1` on a long run must not fill the memory or the disk); the CLI's
  `--allow large` lifts the caps.
- `estimate_bytes` / `check_memory`: one small probe forward counts the activations a model keeps
  per pixel, scaled to the render's size and batch, plus the image, its optimizer state and the
  GIF snapshots; a render that needs more than `available_bytes` is refused (`--allow memory`).
- `check_writable`: the output folder exists or can be made, a file can be created in it, and it
  has room for the result; all before any work.
- `check_threads`: a thread count above `MAX_THREADS` is refused (100000 threads crash libgomp, the
  process dies with no error line); no `--allow` lifts it.
- `check_model_specs`: a recipe's models are counted (at most `CAPS.models`) and their parameters
  estimated from the specs (architectures built on the meta device: no memory, no weights) before
  any is built, so 700 MobileNets or four ViT-H/14 are refused, not built.

Example:
    >>> check_caps(steps=512, size=(224, 224), batch=4)
    >>> check_caps(steps=10**7)
    Traceback (most recent call last):
    ...
    lucent_dsl.errors.InvalidArgumentError: steps 10000000 is above the cap of 100000; the caps ...
"""
from __future__ import annotations

import contextlib
import dataclasses as dc
import functools as ft
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InvalidArgumentError, LucentError
from ..models.info import info_of


@dc.dataclass(frozen=True)
class Caps:
    """Largest settings run without `--allow large`."""

    steps: int = 100_000
    side: int = 4096
    batch: int = 256
    frames: int = 1000
    models: int = 16


CAPS = Caps()
MAX_THREADS = 1024
"""The most torch CPU threads a command or recipe may ask for (a hard limit: far more threads crash libgomp)."""
PROBE_SIDE = 64
"""Side of the probe forward that counts activations (scaled up to the render's size)."""
ACTIVATION_FACTOR = 2.0
"""Bytes per activation byte (outputs kept for backward, their gradients, channels-last copies). Measured
peaks on the CPU, as a multiple of the activation bytes: mobilenet_v2, resnet18, resnet50 0.8-1.0x
(224-512 px, batch 2-4), a plain two-convolution net at 512 px 2.1x (tests/test_resources.py)."""
IMAGE_FACTOR = 12
"""Float copies per image pixel: parameters, gradient, 2 Adam moments, image, transformed, grid, ..."""


def check_caps(*, steps: int | None = None, size: tuple[int, int] | int | None = None, batch: int | None = None,
               frames: int | None = None, allow: bool = False, what: str = "", caps: Caps = CAPS) -> None:
    """Refuse settings above `caps` (unless `allow`); `what` prefixes the message (e.g. "recipe 'x.png': ")."""
    if allow:
        return
    hw = (size, size) if isinstance(size, int) else size
    over = []
    if steps is not None and steps > caps.steps:
        over.append(f"steps {steps} is above the cap of {caps.steps}")
    if hw is not None and max(hw) > caps.side:
        over.append(f"size {hw[0]}x{hw[1]} is above the cap of {caps.side} pixels a side")
    if batch is not None and batch > caps.batch:
        over.append(f"batch {batch} is above the cap of {caps.batch}")
    if frames is not None and frames > caps.frames:
        over.append(f"{frames} GIF frames is above the cap of {caps.frames} (raise --every)")
    if over:
        raise InvalidArgumentError(
            f"{what}{'; '.join(over)}; the caps (lucent_dsl.record.resources.CAPS) keep a typo from filling the memory "
            "or the disk: pass --allow large if you mean it"
        )


# --- memory ---------------------------------------------------------------------------------------------


def _elements(x: Any) -> int:
    if isinstance(x, Tensor):
        return x.numel() if x.is_floating_point() else 0
    if isinstance(x, Mapping):
        return sum(_elements(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return sum(_elements(v) for v in x)
    return 0


def _probe_elements(model: nn.Module, hw: tuple[int, int], layers: Sequence[str] | None) -> int:
    from ..plan.probe import hooked_forward  # imported when counted: `lucent-dsl --help` stays light

    leaves = [(n, m) for n, m in model.named_modules() if n and not any(True for _ in m.children())]
    running, at, seen = [0], {}, set()

    def hook(name: str, out: Any) -> None:
        running[0] += _elements(out)
        at[name] = running[0]
        seen.add(id(out))

    _, out = hooked_forward(model, hw, leaves, hook)
    total = running[0] + (0 if id(out) in seen else _elements(out))  # the output, unless a layer's output
    # a truncated forward stops after the deepest layer read: count up to there when it is known
    if layers and all(name in at or any(k.startswith(name + ".") for k in at) for name in layers):
        return max(v for k, v in at.items() if any(k == n or k.startswith(n + ".") for n in layers))
    return total


def activation_elements(model: nn.Module, size: tuple[int, int], layers: Sequence[str] | None = None) -> int:
    """Float activation elements one image of `size` makes in `model` (up to `layers` when given).

    Counted on a probe forward of at most `PROBE_SIDE` pixels a side, scaled by the pixel count
    (not scaled when the model resizes its input to a fixed size).

    Raises:
        InvalidArgumentError: the probe forward fails (the message gives the error and a hint).
    """
    from ..models.checks import forward_hint

    h, w = size
    fixed = info_of(model).resize and info_of(model).input_size is not None
    tries = [(min(h, PROBE_SIDE), min(w, PROBE_SIDE)), (min(h, 4 * PROBE_SIDE), min(w, 4 * PROBE_SIDE))]
    error: Exception | None = None
    for ph, pw in dict.fromkeys(tries):
        try:
            n = _probe_elements(model, (ph, pw), layers)
        except LucentError:
            raise
        except Exception as e:  # noqa: BLE001 - a model's own failure, reported with a hint below
            error = e
            continue
        return n if fixed else math.ceil(n * (h * w) / (ph * pw))
    raise InvalidArgumentError(f"the model's forward failed on a (1, {info_of(model).channels}, {tries[-1][0]}, "
                               f"{tries[-1][1]}) image: {type(error).__name__}: {error}{forward_hint(model, error)}")


def estimate_bytes(models: nn.Module | Mapping[str, nn.Module], size: tuple[int, int], batch: int = 1, *,
                   frames: int = 0, channels: int = 3, layers: Sequence[str] | None = None) -> int:
    """Bytes a render of `batch` images of `size` is expected to need (an estimate, on the high side).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        >>> estimate_bytes(net, (100, 100), 2) > 2 * 16 * 100 * 100 * 4
        True
    """
    ensemble = [models] if isinstance(models, nn.Module) else list(models.values())
    acts = sum(activation_elements(m, size, layers) for m in ensemble)
    pixels = size[0] * size[1] * channels * batch
    return int(4 * (ACTIVATION_FACTOR * acts * batch + IMAGE_FACTOR * pixels + frames * pixels))


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_bytes(device: str | torch.device | None = None) -> tuple[int | None, str]:
    """(bytes free for a render on `device`, what that number is); None when it cannot be told.

    CPU: the smallest of the kernel's available memory, the cgroup's memory limit less its usage,
    and the process's address-space limit (`ulimit -v`) less its size. CUDA: the device's free memory.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        free, _total = torch.cuda.mem_get_info(dev)
        return int(free), f"the free memory of {dev}"
    found: list[tuple[int, str]] = []
    avail = _meminfo_available()
    if avail is not None:
        found.append((avail, "the machine's available memory"))
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, used = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and used is not None and limit < 2**60:
            found.append((max(0, limit - used), "the memory left under this cgroup's limit"))
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        size = _status_kb("VmSize")
        if soft != resource.RLIM_INFINITY and size is not None:
            found.append((max(0, soft - size), "the address space left under this process's limit (ulimit -v)"))
    except (ImportError, OSError, ValueError):
        pass
    return min(found) if found else (None, "unknown")


def _gb(n: int) -> str:
    return f"{n / 2**30:.2f} GB" if n >= 2**28 else f"{n / 2**20:.0f} MB"


def check_memory(models: nn.Module | Mapping[str, nn.Module], size: tuple[int, int], batch: int = 1, *,
                 frames: int = 0, channels: int = 3, layers: Sequence[str] | None = None,
                 device: str | torch.device | None = None, allow: bool = False) -> int:
    """Refuse a render estimated (`estimate_bytes`) to need more than `available_bytes`; return the estimate."""
    need = estimate_bytes(models, size, batch, frames=frames, channels=channels, layers=layers)
    have, what = available_bytes(device)
    if not allow and have is not None and need > have:
        snaps = f" and {frames} GIF frames" if frames else ""
        raise InvalidArgumentError(
            f"a render of {batch} image(s) of {size[0]}x{size[1]}{snaps} needs about {_gb(need)}, but {what} is "
            f"{_gb(have)}; lower --size or --batch (or raise --every), or pass --allow memory to try anyway"
        )
    return need


# --- a recipe's models, before any is built ---------------------------------------------------------------

ZOO_MODEL_BYTES = 2**27
"""What one zoo model is counted as (an upper bound: the largest, vit_s_focus, holds 22 M float32 parameters)."""


@ft.lru_cache(maxsize=64)
def _meta_parameters(kind: str, target: str) -> int:
    """Parameters of a torchvision/timm architecture, built on the meta device (no memory, no weights); 0 if unknown."""
    try:
        with torch.device("meta"):
            if kind == "torchvision":
                from torchvision import models as tvm

                model = tvm.get_model(target)
            else:
                import timm  # pyright: ignore[reportMissingImports]

                model = timm.create_model(target, pretrained=False)
    except Exception:  # noqa: BLE001 - an unknown name fails with its own message when it is built
        return 0
    return sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())


def spec_bytes(specs: Sequence[str]) -> int:
    """Bytes the float32 weights of `specs` take once built, estimated without building any of them.

    torchvision/timm architectures are built on the meta device and counted (each name once); a zoo
    model counts `ZOO_MODEL_BYTES`; a file spec counts 0 (its code runs only when the user allows it).

    Example:
        >>> spec_bytes(["torchvision:resnet18", "torchvision:resnet18"]) // 2**20  # 11.7 M parameters, twice
        89
    """
    from ..models.specs import parse_spec

    parsed = [parse_spec(s) for s in specs]
    sizes = {(p.kind, p.target): _meta_parameters(p.kind, p.target) * 4 for p in parsed
             if p.kind in ("torchvision", "timm")}
    return sum(ZOO_MODEL_BYTES if p.kind == "zoo" else sizes.get((p.kind, p.target), 0) for p in parsed)


def check_model_specs(specs: Sequence[str], *, device: str | torch.device | None = None,
                      allow: str | Sequence[str] | frozenset[str] = frozenset(), what: str = "the recipe") -> int:
    """Refuse, before any model is built, more than `CAPS.models` models (unless "large" is allowed) or models whose
    weights alone need more than `available_bytes` (unless "memory" is allowed); return the estimate (`spec_bytes`)."""
    allowed = {allow} if isinstance(allow, str) else set(allow)
    allowed = {a.strip() for x in allowed for a in x.split(",")}
    if "all" in allowed:
        allowed |= {"large", "memory"}
    if len(specs) > CAPS.models and "large" not in allowed:
        raise InvalidArgumentError(
            f"{what} names {len(specs)} models, above the cap of {CAPS.models} (lucent_dsl.record.resources.CAPS); "
            "pass --allow large if you mean it"
        )
    need = spec_bytes(specs)
    have, where = available_bytes(device)
    if have is not None and need > have and "memory" not in allowed:
        raise InvalidArgumentError(
            f"{what} names models whose weights alone need about {_gb(need)}, but {where} is {_gb(have)}; "
            "name fewer or smaller models, or pass --allow memory to try anyway"
        )
    return need


# --- the output ------------------------------------------------------------------------------------------


def _existing_ancestor(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable(path: str | os.PathLike[str], *, folder: bool = False, need_bytes: int = 0,
                   what: str = "--out") -> Path:
    """Check that `path` (a file, or a folder when `folder`) can be written, before any work; return it.

    Missing parent folders are fine when the nearest existing one is writable (they are made at
    save time). A file is really created and removed there: permission bits, read-only mounts and
    ACLs all show. `need_bytes` is compared with the free space of that file system.

    Raises:
        InvalidArgumentError: the message names the path and why.
    """
    p = Path(path).expanduser()
    if folder and p.exists() and not p.is_dir():
        raise InvalidArgumentError(f"{what} {str(p)!r} is a file, not a folder; give a folder")
    if not folder and p.is_dir():
        raise InvalidArgumentError(f"{what} {str(p)!r} is a folder; give a file name, e.g. {str(p / 'render.png')!r}")
    base = _existing_ancestor(p if folder else p.parent)
    if not base.is_dir():
        raise InvalidArgumentError(f"{what} {str(p)!r}: {str(base)!r} is a file, so no folder can be made there")
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".lucent_dsl_write_check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InvalidArgumentError(
            f"cannot write {what} {str(p)!r}: the folder {str(base)!r} is not writable ({e.strerror}); "
            "choose another place, or fix its permissions"
        ) from None
    free = shutil.disk_usage(base).free
    if need_bytes > free:
        raise InvalidArgumentError(
            f"cannot write {what} {str(p)!r}: it needs about {_gb(need_bytes)} but {str(base)!r} has {_gb(free)} free"
        )
    return p


def check_threads(n: Any, what: str = "threads") -> None:
    """Refuse a thread count that is not an int in 1..`MAX_THREADS` (None passes: torch's own count).

    Example:
        >>> check_threads(100000)
        Traceback (most recent call last):
        ...
        lucent_dsl.errors.InvalidArgumentError: threads 100000 is above the limit of 1024 ...
    """
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidArgumentError(f"{what} must be a positive int, got {n!r}")
    if n > MAX_THREADS:
        raise InvalidArgumentError(
            f"{what} {n} is above the limit of {MAX_THREADS} torch threads (lucent_dsl.record.resources.MAX_THREADS; "
            f"far more crash the OpenMP runtime); this machine has {os.cpu_count()} CPUs: ask for at most that many"
        )


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """`torch.set_num_threads(n)` for the body, the caller's count restored after (None: leave it). A command run
    in-process (`cli.main`, `Recipe.replay`) must not change the threads of everything that runs after it.

    Example:
        >>> before = torch.get_num_threads()
        >>> with torch_threads(1) as now:
        ...     now
        1
        >>> torch.get_num_threads() == before
        True
    """
    check_threads(n)
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)

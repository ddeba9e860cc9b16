"""open_clip models: what their image towers declare (preprocessing, input size), and `open_clip:` specs.

open_clip's `create_model` writes the preprocessing a checkpoint was trained with on the image tower
(`model.visual.preprocess_cfg`: size, mean, std, interpolation, resize mode; older models carry
`image_size`, `image_mean`, `image_std`). `declared_info` turns it into a `ModelInfo`: the mean and std,
the one input size the tower takes (ViT position embeddings and ModifiedResNet's attention pool are
built for it), and, for a ViT, the CLS token that comes before the patch grid at every token site (so
`neuron`'s x/y index the patch grid, and `token=0` reads the CLS token). A tower without a config
gets open_clip's default (OpenAI CLIP's mean and std) and a `PreprocessingWarning` saying so.

A tower passed alone (`model.visual`: `VisionTransformer`, `ModifiedResNet`) runs as it is, under a
shallow copy that carries the declared `ModelInfo` (the user's module is not changed; its submodules,
weights and names are shared). A whole CLIP model runs through `lucent_dsl.models.clip`.

`create(arch, pretrained)` builds what an `open_clip:ARCH[:PRETRAINED]` spec names; `pretrained` must be
one of open_clip's tags for `arch` (never a file path), and random weights need no download.
open_clip (`pip install open_clip_torch`, the `clip` extra) is imported only when one of its models is seen.

Example:
    >>> import torch.nn as nn
    >>> declared_info(nn.Linear(2, 2)) is None
    True
    >>> pretrained_tag("NONE", ["openai"]) is None
    True
"""
from __future__ import annotations

import copy
import difflib
import functools as ft
import logging
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from ..errors import InvalidArgumentError
from .info import _ATTR, ModelInfo, PreprocessingWarning, with_info

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's default PreprocessCfg (OpenAI CLIP's statistics)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

_warned: weakref.WeakSet = weakref.WeakSet()


def attached_info(model: nn.Module) -> ModelInfo | None:
    """The `ModelInfo` the user attached to `model` itself (`with_info`), else None (nothing inferred)."""
    info = model.__dict__.get(_ATTR)
    return info if isinstance(info, ModelInfo) else None


def is_tower(model: nn.Module) -> bool:
    """An open_clip image tower: a ViT (`VisionTransformer`), `ModifiedResNet` or timm-backed `TimmModel`."""
    return type(model).__module__.startswith("open_clip.") and type(model).__name__ in (
        "VisionTransformer", "ModifiedResNet", "TimmModel")


def _pair(size: Any) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def preprocess_cfg(tower: nn.Module) -> dict[str, Any]:
    """What the tower says about its input: `preprocess_cfg`, else the legacy attributes (may be empty)."""
    cfg = dict(getattr(tower, "preprocess_cfg", None) or {})
    for key, attr in (("size", "image_size"), ("mean", "image_mean"), ("std", "image_std")):
        if cfg.get(key) is None and getattr(tower, attr, None) is not None:
            cfg[key] = getattr(tower, attr)
    return cfg


def token_layouts(model: nn.Module, roots: Sequence[str], pattern: str, *,
                  prefix: str = "") -> tuple[tuple[str, str], ...]:
    """(site, pattern) for `roots` and every module under them (`model`'s names, `prefix` before each), but block
    lists and the insides of attention modules; an attention module returns a tuple, whose first entry (the attention
    output) both `name` and `name/0` read.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.MultiheadAttention(2, 1)))
        >>> token_layouts(net, ["1"], "b (1 + h w) c")
        (('1', 'b (1 + h w) c'), ('1.0', 'b (1 + h w) c'), ('1.1', 'b (1 + h w) c'), ('1.1/0', 'b (1 + h w) c'))
    """
    out, attentions = [], []
    for name, module in model.named_modules():
        under = any(name == r or name.startswith(r + ".") for r in roots)
        if not under or isinstance(module, nn.ModuleList) or any(name.startswith(a + ".") for a in attentions):
            continue
        if isinstance(module, nn.MultiheadAttention) or name.rsplit(".", 1)[-1] in ("attn", "self_attn"):
            attentions.append(name)
            out += [(f"{prefix}{name}", pattern), (f"{prefix}{name}/0", pattern)]  # `name` reads entry 0 too
        else:
            out.append((prefix + name, pattern))
    return tuple(out)


def _vit_layouts(tower: nn.Module, prefix: str) -> tuple[tuple[str, str], ...]:
    """An open_clip ViT's tokens are (B, 1 + h*w, C), batch first, CLS first, from patch_dropout to ln_post."""
    if not getattr(getattr(tower, "transformer", None), "batch_first", True):
        return ()
    cls = 1 if getattr(tower, "class_embedding", None) is not None else 0
    roots = ["patch_dropout", "ln_pre", "transformer"]
    if getattr(tower, "attn_pool", None) is None and not getattr(tower, "final_ln_after_pool", False):
        roots.append("ln_post")
    return token_layouts(tower, roots, f"b ({cls} + h w) c" if cls else "b (h w) c", prefix=prefix)


def tower_info(tower: nn.Module, *, prefix: str = "", name: str | None = None) -> ModelInfo:
    """The `ModelInfo` an open_clip image tower declares; `prefix` is its path inside the module a plan runs."""
    cfg = preprocess_cfg(tower)
    if cfg.get("mean") is None or cfg.get("std") is None:
        if tower not in _warned:
            _warned.add(tower)
            warnings.warn(
                f"the open_clip {type(tower).__name__} carries no preprocess_cfg (models from open_clip.create_model "
                f"do), so it gets open_clip's default normalization, OpenAI CLIP's mean {OPENAI_MEAN} and std "
                f"{OPENAI_STD}; attach the right one to silence this: lucent_dsl.with_info(model, "
                "lucent_dsl.ModelInfo(mean=..., std=..., input_size=...))", PreprocessingWarning, stacklevel=5)
        cfg.setdefault("mean", OPENAI_MEAN)
        cfg.setdefault("std", OPENAI_STD)
    size = cfg.get("size")
    return ModelInfo(
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        input_size=_pair(size) if size is not None else None,
        name=name or type(tower).__name__,
        layouts=_vit_layouts(tower, prefix) if type(tower).__name__ == "VisionTransformer" else (),
    )


def declared_info(model: nn.Module) -> ModelInfo | None:
    """What an open_clip model declares (its image tower's preprocessing, size and layouts), else None."""
    if is_tower(model):
        return tower_info(model)
    visual = getattr(model, "visual", None)
    if type(model).__module__.startswith("open_clip.") and isinstance(visual, nn.Module):
        return tower_info(visual, prefix="visual.", name=type(model).__name__)
    return None


def adapt(model: nn.Module) -> nn.Module:
    """A tower passed alone, under a shallow copy carrying its declared `ModelInfo` (the user's own info wins)."""
    if not is_tower(model) or attached_info(model) is not None:
        return model
    twin = copy.copy(model)  # a new object over the same submodule, parameter and buffer dicts: same names
    return with_info(twin, tower_info(model))


# --- open_clip: specs and tokenizers ------------------------------------------------------------------


def _open_clip() -> Any:
    try:
        import open_clip  # pyright: ignore[reportMissingImports]
    except ImportError:
        raise InvalidArgumentError(
            "open_clip models need open_clip_torch: pip install open_clip_torch (or lucent_dsl[clip])"
        ) from None
    return open_clip


def pretrained_tag(text: str | None, tags: Sequence[str]) -> str | None:
    """The open_clip tag `text` names among `tags` (case-insensitively), None for none; never a path.

    Raises:
        InvalidArgumentError: a tag `arch` does not have (the message lists those it has).
    """
    if text is None or text.strip().lower() in ("", "none"):
        return None
    by_lower = {t.lower(): t for t in tags}
    if text.strip().lower() in by_lower:
        return by_lower[text.strip().lower()]
    close = difflib.get_close_matches(text.lower(), list(by_lower), n=3, cutoff=0.5)
    raise InvalidArgumentError(
        f"open_clip has no pretrained weights tagged {text!r} for this architecture"
        + (f"; did you mean {', '.join(repr(by_lower[c]) for c in close)}?" if close else ".")
        + f" Its tags: {', '.join(tags) or 'none (random weights only)'}"
    )


def check_arch(arch: str) -> str:
    """`arch` if open_clip knows it (a built-in config name), else InvalidArgumentError with close names."""
    names = list(_open_clip().list_models())
    if arch in names:
        return arch
    close = difflib.get_close_matches(arch, names, n=3, cutoff=0.5)
    raise InvalidArgumentError(
        f"open_clip has no architecture {arch!r}" + (f"; did you mean {', '.join(map(repr, close))}?" if close else "")
        + " (open_clip.list_models() lists them)"
    )


@ft.cache
def tokenizer_of(arch: str) -> Callable[[Sequence[str]], Tensor]:
    """open_clip's tokenizer for `arch` (offline for the BPE archs, e.g. ViT-B-32 and RN50)."""
    return _open_clip().get_tokenizer(arch)


def create(arch: str, pretrained: str | None = None) -> nn.Module:
    """The open_clip model `open_clip:ARCH[:PRETRAINED]` names (`specs` runs it through `clip.clip_image` with
    `arch_tokenizer(arch)`), in eval mode. Random weights when `pretrained` is None."""
    oc = _open_clip()
    check_arch(arch)
    tag = pretrained_tag(pretrained, oc.list_pretrained_tags_by_model(arch))
    quiet = _NoRandomWeightsNote()
    logging.getLogger().addFilter(quiet)  # the spec asked for random weights: open_clip's note says nothing new
    try:
        return oc.create_model(arch, pretrained=tag).eval().requires_grad_(False)
    finally:
        logging.getLogger().removeFilter(quiet)


class _NoRandomWeightsNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


def arch_tokenizer(arch: str) -> Callable[[Sequence[str]], Tensor]:
    """open_clip's tokenizer for `arch`, loaded when first called."""
    return ft.partial(_tokenize, arch)


def _tokenize(arch: str, prompts: Sequence[str]) -> Tensor:
    return tokenizer_of(arch)(list(prompts))


def context_tokenizer(model: nn.Module) -> Callable[[Sequence[str]], Tensor] | None:
    """open_clip's BPE tokenizer at the model's context length, when the text tower reads its vocabulary."""
    text = getattr(model, "text", model)
    embedding = getattr(text, "token_embedding", None)
    if not isinstance(embedding, nn.Embedding):
        return None
    context = int(getattr(model, "context_length", None) or getattr(text, "context_length", 77))
    tok = _simple_tokenizer(context)
    return tok if embedding.num_embeddings == tok.vocab_size else None


@ft.cache
def _simple_tokenizer(context: int) -> Any:
    from open_clip.tokenizer import SimpleTokenizer  # pyright: ignore[reportMissingImports]

    return SimpleTokenizer(context_length=context)


def encode_text(model: Any, tokens: Tensor | Mapping[str, Tensor]) -> Tensor:
    """(N, D) text embeddings of an open_clip CLIP model (its text projection included, not normalized)."""
    if isinstance(tokens, Mapping):
        tokens = tokens["input_ids"]
    return model.encode_text(tokens)

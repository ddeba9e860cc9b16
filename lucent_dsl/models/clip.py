"""CLIP-like models (open_clip `CLIP`, transformers `CLIPModel` and `SiglipModel`) as a plan runs them.

Their forward takes text too, so a plan runs `clip_image(model)` instead: a module whose forward is the
image tower, projection included (`image batch -> image embedding`, what `model.encode_image` /
`model.get_image_features` return; `logit_scale` is not applied). Its children are the model's own
image modules, so layers keep their names: `visual.transformer.resblocks.3` (open_clip),
`vision_model.encoder.layers.3` and `visual_projection` (HF CLIP; SigLIP has no projection, its pooled
output is the embedding). The whole model is kept beside them, not as a child, so the text tower is
never part of the plan: `encode_text(prompts)` runs it once per prompt when a plan with `clip_text` is
compiled (cached per model, prompt and tokenizer, recomputed when the weights change).

Tokenizers: open_clip models use the tokenizer of their `open_clip:` spec, else open_clip's BPE
tokenizer when the text tower reads its vocabulary; HF models use the tokenizer found locally at
`name_or_path`. Anything else: give one, `clip_image(model, tokenizer=...)` (a transformers tokenizer
or processor, or any `prompts -> token ids` function), and pass that module to `render`.

Preprocessing: open_clip's `preprocess_cfg` (`lucent_dsl.models.openclip`); for HF, the
`preprocessor_config.json` of `name_or_path` (a folder, or a Hub id already in the local cache), else the
family's published mean and std and the config's image size, with a `PreprocessingWarning`. A `ModelInfo` the
user attached to the model wins.

Example:
    >>> import torch.nn as nn
    >>> adapt(nn.Linear(2, 2)) is None
    True
"""
from __future__ import annotations

import dataclasses as dc
import json
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InvalidArgumentError
from . import openclip
from .info import ModelInfo, PreprocessingWarning, device_of, weights_state, with_info

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)

_OPEN_CLIP = ("CLIP", "CustomTextCLIP")
_HF = {"CLIPModel": "hf_clip", "SiglipModel": "hf_siglip"}
_texts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {(prompt, tokenizer id): (state, emb)}
_warned: weakref.WeakSet = weakref.WeakSet()

Tokenizer = Callable[..., Any]


def kind_of(model: nn.Module) -> str | None:
    """"open_clip", "hf_clip" or "hf_siglip" for a CLIP-like model, else None."""
    names = {c.__name__ for c in type(model).__mro__}
    root = type(model).__module__.split(".", 1)[0]
    if root == "open_clip" and names & set(_OPEN_CLIP) and isinstance(getattr(model, "visual", None), nn.Module):
        return "open_clip"
    if root == "transformers":
        return next((kind for name, kind in _HF.items() if name in names), None)
    return None


class ClipImage(nn.Module):
    """The image tower of a CLIP-like model, projection included: (B, 3, H, W) -> (B, D) image embeddings.

    Attributes:
        clip_model: the whole model (not a submodule: only the image tower is the plan's).
        tokenizer: what turns prompts into the text tower's input (None: found as the module docstring says).
        kind: "open_clip", "hf_clip" or "hf_siglip".
    """

    clip_model: Any
    visual: Any
    vision_model: Any
    visual_projection: Any
    kind: str
    tokenizer: Tokenizer | None

    def __init__(self, model: nn.Module, *, tokenizer: Tokenizer | None = None) -> None:
        super().__init__()
        kind = kind_of(model)
        if kind is None:
            raise InvalidArgumentError(not_clip(model))
        self.kind = kind
        if kind == "open_clip":
            self.visual = model.visual
        else:
            self.vision_model = model.vision_model
            if kind == "hf_clip":
                self.visual_projection = model.visual_projection
        self.__dict__["clip_model"] = model  # plain attribute: nn.Module would register it as a child
        self.tokenizer = tokenizer
        self.training = model.training  # only this flag: train()/eval() would change the user's submodules

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "open_clip":
            return self.visual(x)
        out = self.vision_model(pixel_values=x)
        pooled = out.pooler_output if hasattr(out, "pooler_output") else out[1]
        return self.visual_projection(pooled) if self.kind == "hf_clip" else pooled

    def _apply(self, fn: Any, recurse: bool = True) -> ClipImage:
        # .to(device) / .cuda() move the text tower too, so encode_text runs where the image tower does
        self.clip_model._apply(fn, recurse)
        return super()._apply(fn, recurse)

    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str]) -> Tensor:
        """(N, D) float32 text embeddings of `prompts` (projection included, not normalized), on the model's device."""
        model = self.clip_model
        device = device_of(model)
        tokens = _to(self.tokens(prompts), device)
        if self.kind == "open_clip":
            out = openclip.encode_text(model, tokens)
        else:
            keep = {k: v for k, v in tokens.items() if k in ("input_ids", "attention_mask", "position_ids")}
            out = model.get_text_features(**keep)
            out = out if isinstance(out, Tensor) else out.pooler_output
        return out.detach().float()

    def tokens(self, prompts: Sequence[str]) -> Mapping[str, Tensor]:
        """The text tower's input for `prompts`: {"input_ids": (N, L), ...}."""
        tokenizer = self.tokenizer or default_tokenizer(self.clip_model, self.kind)
        if _is_hf_tokenizer(tokenizer):
            kw: dict[str, Any] = {"padding": True, "truncation": True, "return_tensors": "pt"}
            if self.kind == "hf_siglip":  # SigLIP's text tower was trained on max_length padding
                kw |= {"padding": "max_length",
                       "max_length": int(self.clip_model.config.text_config.max_position_embeddings)}
            out = tokenizer(text=list(prompts), **kw)
        else:
            out = tokenizer(list(prompts))
        if isinstance(out, Tensor):
            return {"input_ids": out}
        if isinstance(out, Mapping) and isinstance(out.get("input_ids"), Tensor):
            return dict(out)
        raise InvalidArgumentError(
            f"the tokenizer of {type(self.clip_model).__name__} returned a {type(out).__name__}; a tokenizer "
            "must return token ids, a (N, L) tensor or a mapping with 'input_ids'"
        )

    def text_embedding(self, prompt: str) -> Tensor:
        """(D,) float32 embedding of `prompt`, once per model, prompt and tokenizer (until the weights change)."""
        model = self.clip_model
        cache = _texts.setdefault(model, {})
        key = (prompt, id(self.tokenizer) if self.tokenizer is not None else None)
        state = weights_state(model)
        hit = cache.get(key)
        if hit is not None and hit[0] == state:
            return hit[1]
        emb = self.encode_text([prompt])[0]
        cache[key] = (state, emb)
        return emb

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, model={type(self.clip_model).__name__}"


def _to(tokens: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in tokens.items()}


def _is_hf_tokenizer(tok: Any) -> bool:
    return type(tok).__module__.startswith("transformers.") and callable(tok)


def default_tokenizer(model: nn.Module, kind: str) -> Tokenizer:
    """The tokenizer the text tower reads when none was given; else InvalidArgumentError saying how to give one."""
    if kind == "open_clip":
        found = openclip.context_tokenizer(model)
        where = ("its text tower does not read open_clip's BPE vocabulary; give open_clip.get_tokenizer(ARCH) "
                 "for the architecture it was built as")
    else:
        found, where = _local_hf_tokenizer(model)
    if found is not None:
        return found
    raise InvalidArgumentError(
        f"clip_text needs the tokenizer of this {type(model).__name__}: {where}. Give it: "
        "model = lucent_dsl.models.clip.clip_image(model, tokenizer=...), then render that module"
    )


def _local_hf_tokenizer(model: nn.Module) -> tuple[Tokenizer | None, str]:
    path = name_or_path(model)
    if not path:
        return None, "the model has no name_or_path (it was built from a config)"
    from transformers import AutoTokenizer  # pyright: ignore[reportMissingImports]

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True), ""
    except Exception as e:  # noqa: BLE001 - any failure means: not available offline
        return None, f"no tokenizer for {path!r} is available offline ({type(e).__name__})"


# --- preprocessing --------------------------------------------------------------------------------------


def name_or_path(model: nn.Module) -> str:
    """Where an HF model was loaded from ("" for a model built from a config)."""
    config = getattr(model, "config", None)
    return str(getattr(config, "_name_or_path", "") or getattr(model, "name_or_path", "") or "")


def _processor_config(model: nn.Module) -> dict[str, Any] | None:
    """`preprocessor_config.json` of the model's folder or of its Hub id in the local cache, else None (nothing is
    downloaded)."""
    where = name_or_path(model)
    if not where:
        return None
    file = Path(where) / "preprocessor_config.json"
    if not file.is_file():
        try:
            from transformers.utils.hub import cached_file  # pyright: ignore[reportMissingImports]

            found = cached_file(where, "preprocessor_config.json", local_files_only=True,
                                _raise_exceptions_for_missing_entries=False)
        except Exception:  # noqa: BLE001 - not in the cache, or not a Hub id: no config
            return None
        if not found:
            return None
        file = Path(found)
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError):
        return None


def _hf_size(cfg: Mapping[str, Any], fallback: int) -> tuple[int, int]:
    size = cfg.get("crop_size") if cfg.get("do_center_crop") else cfg.get("size")
    if isinstance(size, Mapping):
        if "height" in size:
            return int(size["height"]), int(size["width"])
        size = size.get("shortest_edge", fallback)
    return (int(size), int(size)) if size else (fallback, fallback)


def hf_info(model: Any, kind: str) -> ModelInfo:
    """The `ModelInfo` of an HF CLIPModel / SiglipModel (see the module docstring)."""
    fallback = int(model.config.vision_config.image_size)
    cfg = _processor_config(model)
    if cfg is not None and "image_mean" in cfg:
        mean, std, size = tuple(cfg["image_mean"]), tuple(cfg["image_std"]), _hf_size(cfg, fallback)
    else:
        mean, std = (openclip.OPENAI_MEAN, openclip.OPENAI_STD) if kind == "hf_clip" else (SIGLIP_MEAN, SIGLIP_STD)
        size = (fallback, fallback)
        if model not in _warned:
            _warned.add(model)
            warnings.warn(
                f"{type(model).__name__} has no local preprocessor_config.json (name_or_path="
                f"{name_or_path(model)!r}), so it gets its family's published normalization, mean "
                f"{mean} and std {std}, at {size[0]}x{size[1]}; attach the right one to silence this: "
                "lucent_dsl.with_info(model, lucent_dsl.ModelInfo(mean=..., std=..., input_size=...))",
                PreprocessingWarning, stacklevel=5)
    # CLIP: a CLS token before the patches, post_layernorm on the pooled CLS vector; SigLIP: patches only
    roots = ["embeddings", "pre_layrnorm", "encoder.layers"] if kind == "hf_clip" else [
        "embeddings", "encoder.layers", "post_layernorm"]
    pattern = "b (1 + h w) c" if kind == "hf_clip" else "b (h w) c"
    layouts = tuple((name, pattern) for name, pattern in openclip.token_layouts(
        model.vision_model, roots, pattern, prefix="vision_model.") if not name.startswith("vision_model.embeddings."))
    return ModelInfo(tuple(map(float, mean)), tuple(map(float, std)), size, name=type(model).__name__,
                     layouts=layouts)


# --- the face the sources use -------------------------------------------------------------------------------


def declared_info(model: nn.Module) -> ModelInfo | None:
    """What a CLIP-like model declares about its images (preprocessing, size, token layouts), else None."""
    kind = kind_of(model)
    if kind is None:
        return None
    return openclip.declared_info(model) if kind == "open_clip" else hf_info(model, kind)


def clip_image(model: nn.Module, *, tokenizer: Tokenizer | None = None, name: str | None = None) -> ClipImage:
    """The module a plan runs for a CLIP-like `model` (a new wrapper; `model` is not changed).

    Args:
        model: open_clip `CLIP`/`CustomTextCLIP`, transformers `CLIPModel` or `SiglipModel`.
        tokenizer: for `clip_text`: a transformers tokenizer or processor, or `prompts -> token ids`.
        name: the model's name in messages (default: its class).

    Raises:
        InvalidArgumentError: `model` is not CLIP-like.
    """
    wrapper = ClipImage(model, tokenizer=tokenizer)
    info = openclip.attached_info(model) or declared_info(model)
    if info is not None and name is not None and openclip.attached_info(model) is None:
        info = dc.replace(info, name=name)
    return with_info(wrapper, info) if info is not None else wrapper  # type: ignore[return-value]


def adapt(model: nn.Module) -> nn.Module | None:
    """`clip_image(model)` for a CLIP-like model, None for any other."""
    return clip_image(model) if kind_of(model) is not None else None


def not_clip(model: nn.Module) -> str:
    """Why `model` has no text tower a prompt could be compared with."""
    hint = (" (an image tower passed alone, such as open_clip's model.visual, has none: pass the whole model)"
            if openclip.is_tower(model) or type(model).__name__.endswith("VisionModel") else "")
    return (f"the model is a {type(model).__name__}, not a CLIP-like model (open_clip CLIP, transformers CLIPModel or "
            f"SiglipModel) with a text tower{hint}")

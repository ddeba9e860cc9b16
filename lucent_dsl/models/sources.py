"""Models from other libraries: how a Hugging Face transformers or open_clip model becomes one a plan runs.

A plan runs `adapt(model)`, never the object the user passed: most models come back as they are, with the
preprocessing, geometry and labels the library declares for them attached (`declared_info`, unless the user
attached a `ModelInfo` of their own); models whose forward
does not take an image batch first (CLIP-like models that also take text) come back wrapped in a module
that runs their image tower, keeping the submodules' names, so `vision_model.encoder.layers.3` still
names the same layer. Each library is imported only when one of its models is seen.

| library         | module            | what it handles                                                  |
| --------------- | ----------------- | ---------------------------------------------------------------- |
| open_clip, HF CLIPModel / SiglipModel | `clip`   | image tower + projection; text embeddings for `clip_text` |
| transformers    | `huggingface`     | vision models: `pixel_values`, ModelOutput fields, id2label, prefix tokens |
| open_clip       | `openclip`        | towers passed alone (`model.visual`)                              |

Example:
    >>> import torch.nn as nn
    >>> m = nn.Conv2d(3, 4, 3)
    >>> adapt(m) is m, declared_info(m) is None, reads_first_entry(m)
    (True, True, False)
"""
from __future__ import annotations

from torch import nn

from .info import ModelInfo


def library_of(model: nn.Module) -> str | None:
    """'transformers' or 'open_clip' for a model whose class one of them defines, else None."""
    root = type(model).__module__.split(".", 1)[0]
    return root if root in ("transformers", "open_clip") else None


def adapt(model: nn.Module) -> nn.Module:
    """`model` as a plan runs it: itself, or a wrapper running its image tower (CLIP-like models)."""
    library = library_of(model)
    if library is None:
        return model
    from . import clip  # each adapter attaches `declared_info` to what it returns (with_info)

    wrapped = clip.adapt(model)
    if wrapped is not None:
        return wrapped
    if library == "transformers":
        from . import huggingface

        return huggingface.adapt(model)
    from . import openclip

    return openclip.adapt(model)


def reads_first_entry(model: nn.Module) -> bool:
    """Whether a site of `model` that names no entry reads a tuple output (or a ModelOutput) at its first entry, the
    hidden state: models of transformers and open_clip (an attention module's `(output, weights)`), and the
    wrappers `adapt` makes of them. Elsewhere a tuple output needs `layer/0` (the plan says so)."""
    if library_of(model) is not None:
        return True
    from . import huggingface
    from .clip import ClipImage

    return huggingface.is_transformers(model) or isinstance(model, ClipImage)


def declared_info(model: nn.Module) -> ModelInfo | None:
    """The preprocessing, geometry, labels and layouts the model's library declares, or None."""
    library = library_of(model)
    if library == "transformers":
        from . import huggingface

        return huggingface.declared_info(model)
    if library == "open_clip":
        from . import openclip

        return openclip.declared_info(model)
    return None

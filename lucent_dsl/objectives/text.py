"""Terms that compare the image with text through a CLIP-like model: clip_text.

`clip_text(prompt)` is the cosine between the image embedding (the output of a CLIP-like model's image
tower, projection included: `@output` of `lucent_dsl.models.clip.clip_image`) and the prompt's text
embedding, computed with the model's own tokenizer and text tower. The text tower runs when the plan is
compiled (`bind_model`), once per model and prompt; the term keeps the prompt as its only argument, so
its DSL text and JSON carry the prompt, never a tensor. A plan on a model without a text tower refuses
it at compile time.

The cosine is in [-1, 1] and is not scaled by the model's `logit_scale`; it joins the algebra like any
term: `clip_text('a photo of a dog') - 0.5 * clip_text('a photo of a cat')`, or a neuron of the image
tower plus a text term.

Example:
    >>> clip_text("a photo of a dog") - 0.5 * clip_text("a photo of a cat")
    clip_text('a photo of a dog') - 0.5 * clip_text('a photo of a cat')
"""
from __future__ import annotations

import dataclasses as dc
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..dsl.expr import OUTPUT, Acts, Expr, Site, Term
from ..errors import InvalidArgumentError, ObjectiveShapeError
from ._term import Batch, check_batch, check_model, frozen, per_image, tensor_at


def check_prompt(v: Any) -> str:
    """A prompt: a string with some non-space text."""
    if not isinstance(v, str) or not v.strip():
        raise InvalidArgumentError(
            f"clip_text's prompt must be a non-empty string such as 'a photo of a dog', got {v!r}")
    return v


@frozen
class ClipText(Term):
    """cos(image embedding, text embedding of `prompt`) at a CLIP-like model's `@output`.

    `text` is the prompt's embedding, set by `bind_model` when a plan is compiled: it is not a DSL argument
    (the text and JSON hold the prompt only) nor part of equality (it is what the model says about the prompt).
    """

    name = "clip_text"
    positional = ("prompt",)
    prompt: str
    batch: Batch = None
    model: str | None = None
    text: Tensor | None = dc.field(default=None, compare=False)

    def dsl_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        pos, kw = Term.dsl_args(self)
        kw.pop("text", None)  # what the model says about the prompt, not an argument: the text holds the prompt
        return pos, kw

    def sites(self) -> tuple[Site, ...]:
        return (Site(self.model, OUTPUT),)

    def bind_model(self, module: nn.Module) -> ClipText:
        """This term with the prompt's text embedding from `module`'s text tower (`module`: what the plan runs).

        Raises:
            InvalidArgumentError: `module` is not a CLIP-like model's image tower (`clip_image`).
        """
        from ..models.clip import ClipImage, not_clip

        if not isinstance(module, ClipImage):
            raise InvalidArgumentError(f"{self!r} compares the image with a prompt through a CLIP-like model's text "
                                       f"tower, but {not_clip(module)}")
        return dc.replace(self, text=module.text_embedding(self.prompt))

    def score(self, acts: Acts, n: int) -> Tensor:
        if self.text is None:
            raise InvalidArgumentError(f"{self!r} has no text embedding yet: it scores inside a plan compiled for a "
                                       "CLIP-like model (render / compile_plan compute it from the model's text tower)")
        site = self.sites()[0]
        a = tensor_at(self, acts, site)
        if a.dim() != 2 or a.shape[1] != self.text.shape[0]:
            raise ObjectiveShapeError(f"{self!r} reads {site} with shape {tuple(a.shape)}; it needs (B, "
                                      f"{self.text.shape[0]}) image embeddings, as wide as the text embedding")
        cos = F.cosine_similarity(a.float(), self.text.to(a.device).unsqueeze(0), dim=1, eps=1e-8)
        return per_image(self, cos, n, self.batch)


def clip_text(prompt: str, *, batch: Batch = None, model: str | None = None) -> Expr:
    """Cosine between the image embedding of a CLIP-like model and the text embedding of `prompt`.

    Example:
        >>> clip_text('a "quoted" caf\\u00e9', batch=0)
        clip_text('a "quoted" café', batch=0)
    """
    return ClipText(check_prompt(prompt), check_batch(batch), check_model(model))

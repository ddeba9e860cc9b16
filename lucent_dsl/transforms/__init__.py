"""Robustness transforms: `Transform(sample, apply)` pairs, joined by `chain`.

A transform is split the kornia way: `sample(generator, shape)` draws every random number as a
tensor, outside any compiled region; `apply(image, params)` is deterministic tensor code that
`torch.compile(fullgraph=True)` traces once. The output shape depends only on the input shape,
never on the draws, so a render compiles its step once.

Rooms: `geometry` (pad, jitter, random_scale, random_rotate, crops: per-image 3x3 matrices
that `chain` fuses into one `grid_sample`; the matrix convention is stated there), `pixelwise`
(gaussian_blur, noise, composite, color_shift), `compose` (identity, as_transform, chain), `recipes` (standard,
scaled, robust, maco_crops, affine, ensemble, named). `_common` is the toolkit they share. A new transform goes
in the room of its kind and is listed below.

Example:
    >>> import torch
    >>> t = chain(pad(2), jitter(1), random_rotate((-5.0, 5.0)))
    >>> image = torch.rand(2, 3, 8, 10)
    >>> params = t.sample(torch.Generator().manual_seed(0), image.shape)
    >>> tuple(params.shape), tuple(t.apply(image, params).shape)   # one fused matrix per image
    ((2, 3, 3), (2, 3, 12, 14))
"""
from ._common import PAD_MODES, Transform, TransformParams
from .compose import as_transform, as_transform_arg, chain, identity, is_compilable, sampled_at
from .geometry import crops, jitter, pad, random_rotate, random_scale
from .pixelwise import BACKGROUNDS, color_shift, composite, gaussian_blur, noise
from .recipes import (
    NAMED,
    STANDARD_SCALES,
    UNPADDED_BELOW,
    affine,
    ensemble,  # issue 27: augmentation ensembling
    maco_crops,
    named,
    robust,
    robust_fit,  # issue 27: robust() read at the image's size
    scaled,  # issue 27: standard() in proportion to the image
    scaled_amounts,
    standard,
)

__all__ = [
    "BACKGROUNDS", "PAD_MODES", "STANDARD_SCALES", "Transform", "TransformParams", "affine", "as_transform",
    "as_transform_arg", "chain", "composite", "crops", "gaussian_blur", "identity", "is_compilable", "jitter",
    "noise", "pad", "random_rotate", "random_scale", "robust", "sampled_at", "standard",
]
__all__ += ["color_shift", "ensemble"]
__all__ += ["NAMED", "UNPADDED_BELOW", "maco_crops", "named", "robust_fit", "scaled", "scaled_amounts"]

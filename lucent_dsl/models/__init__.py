"""What a model is and where it comes from.

Rooms: `info` (`ModelInfo`: preprocessing, labels, input sizes, stated layouts; what a model declares
itself), `sizes` (the input sizes a model accepts, `fit`), `layouts` (activation layouts as einops
patterns), `architectures` (what torchvision/timm models say about themselves), `specs` (model spec
strings -> modules), `checks` (models and devices a render can drive), `huggingface` and `hf_processors`
(transformers vision models). Offline weights: `lucent_dsl.zoo`.
strings -> modules), `checks` (models and devices a render can drive). Offline weights: `lucent_dsl.zoo`;
`vit_mnist` is the zoo's small MNIST ViT and the deterministic training that made its shipped weights.

Example:
    >>> import torch.nn as nn
    >>> info_of(with_info(nn.Conv2d(3, 4, 3), ModelInfo(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))).std
    (0.5, 0.5, 0.5)
"""
from .info import (
    IMAGENET_MEAN as IMAGENET_MEAN,
    IMAGENET_STD as IMAGENET_STD,
    LARGE as LARGE,
    SPEC_ATTR as SPEC_ATTR,
    ModelInfo as ModelInfo,
    PreprocessingWarning as PreprocessingWarning,
    device_of as device_of,
    inferred_info as inferred_info,
    info_of as info_of,
    non_inplace as non_inplace,
    spec_of as spec_of,
    stamp_spec as stamp_spec,
    weights_state as weights_state,
    with_info as with_info,
)

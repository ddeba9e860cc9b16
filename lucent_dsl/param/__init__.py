"""Image parameterizations: pure `ImageParam(init, to_image)` pairs, like optax's `GradientTransformation`.

- `init(generator)` draws fresh float32 leaves (`dict[str, Tensor]`) on `generator.device`; all
  randomness comes from that generator, so a seed replays bit for bit.
- `to_image(leaves)` maps them to an image batch `(B, C, H, W)` in `[0, 1]`, with every constant
  computed once in the factory, so `torch.compile(to_image, fullgraph=True)` traces one graph.

Rooms: `lucid` (`pixel`, `fft`, `image`, `color_correlation`), `phase` (`maco`: phase-only Fourier with
a natural-image magnitude), `pattern` (`cppn`), `aligned` (`shared` low-resolution components),
`transparency` (`alpha` RGBA, `rgba`). `_common` is the toolkit they share; a new parameterization is a
new module here that imports it and is listed below. `transparency_map`, an analysis run after a render,
moved to `lucent_dsl.toolbox` (`param.transparency_map` still works and warns).

Example:
    >>> import torch
    >>> p = fft((32, 48), batch=2)
    >>> img = p.to_image(p.init(torch.Generator().manual_seed(0)))
    >>> img.shape, bool(img.min() >= 0), bool(img.max() <= 1)
    (torch.Size([2, 3, 32, 48]), True, True)
"""
from ._common import KINDS, LUCID_COLOR_CORRELATION, NATURAL_MAGNITUDE_PATH, SQUASHES, ImageParam
from .aligned import shared
from .lucid import color_correlation, fft, image, pixel
from .pattern import cppn
from .phase import default_magnitude, maco, maco_image, natural_magnitude
from .transparency import alpha, rgba

__all__ = [
    "ImageParam", "KINDS", "LUCID_COLOR_CORRELATION", "NATURAL_MAGNITUDE_PATH", "SQUASHES", "alpha",
    "color_correlation", "cppn", "default_magnitude", "fft", "image", "maco", "maco_image", "natural_magnitude",
    "pixel", "rgba", "shared",
]


def __getattr__(name: str):
    # Deprecated aliases (optax's way): the name still works, with a FutureWarning naming its new home.
    if name == "transparency_map":
        import importlib
        import warnings

        warnings.warn("lucent_dsl.param.transparency_map moved to lucent_dsl.toolbox.transparency_map "
                      "(also ld.transparency_map); this alias will be removed", FutureWarning, stacklevel=2)
        return importlib.import_module("lucent_dsl.toolbox.transparency").transparency_map
    raise AttributeError(f"module 'lucent_dsl.param' has no attribute {name!r}")

"""The ready-made transform recipes: Lucid's `standard()`, `scaled(size)` (standard's pixel amounts in
proportion to the image), `robust()`, `robust_fit(size)` (robust read at the image's size), MACO's
`maco_crops()`, `affine`, Plug-In Inversion's `ensemble`, and `named(name, size)`, the recipe a name in a
saved recipe stands for.

Example:
    >>> scaled(28).apply(torch.rand(1, 3, 28, 28), scaled(28).sample(None, (1, 3, 28, 28))).shape  # no border
    torch.Size([1, 3, 28, 28])
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch  # noqa: F401  (the examples use it)

from ..args import check_size
from ..errors import InvalidArgumentError
from ._common import Transform
from .compose import chain, identity, sampled_at
from .geometry import crops, jitter, pad, random_rotate, random_scale
from .pixelwise import color_shift, noise

# Lucid's `standard_transforms` (lucid/optvis/transform.py), as numbers. Lucid's `jitter(d)` is a random crop
# d pixels smaller, so it shifts the content by -d/2..d/2: jitter(8) by -4..4 px (std 2.58 px), jitter(4) by
# -2..2 (std 1.41 px). Our `jitter(p)` keeps the size and shifts by -p..p, so Lucid's jitter(d) is our jitter(d // 2).
STANDARD_PAD = 12
STANDARD_JITTERS = (4, 2)  # Lucid's jitter(8) and jitter(4)
STANDARD_SCALES = tuple(1 + (i - 5) / 50 for i in range(11))
# Lucid's `random_rotate(list(range(-10, 11)) + 5 * [0])`: whole degrees, 0 drawn 6 times in 26.
STANDARD_ANGLES = tuple(range(-10, 11)) + 5 * (0,)


def standard() -> Transform:
    """Lucid's `standard_transforms`, with Lucid's distributions, fused into one `grid_sample`.

    Contains, in order: `pad(12, mode="constant", value=0.5)`, `jitter(4)`,
    `random_scale(STANDARD_SCALES)` (0.90, 0.92, ..., 1.10), `random_rotate(STANDARD_ANGLES)`
    (Lucid's whole degrees -10..10, with 0 six times as likely), `jitter(2)`.

    Lucid's `jitter(8)` and `jitter(4)` are random crops 8 and 4 pixels smaller than their input:
    they move the content by a whole number of pixels in -4..4 and -2..2, which is exactly what
    our size-keeping `jitter(4)` and `jitter(2)` do. (This recipe used to have `jitter(8)` and
    `jitter(4)`, twice Lucid's shifts, and continuous angles in (-10, 10); on MobileNetV2 both reach
    the same channel means and logits, 0.96-1.03x, `benchmarks/bench_jitter.py`.) What still differs
    from Lucid:

    - the output size: Lucid's crops and its resizing scale make the image about 12 pixels larger
      than the input; here every step keeps the size, so the output is always 24 pixels larger (the
      content is at the same scale, with 6 more pixels of grey border a side);
    - the draws: Lucid draws one shift, scale and angle per step for the whole batch; here each
      image of a batch gets its own;
    - Lucid converts degrees with 3.14 instead of pi (angles 0.05% smaller).

    Shape:
        (B, C, H, W) -> (B, C, H + 24, W + 24)

    Example:
        >>> t = standard()
        >>> t.apply(torch.rand(1, 3, 32, 32), t.sample(None, (1, 3, 32, 32))).shape
        torch.Size([1, 3, 56, 56])
    """
    first, last = STANDARD_JITTERS
    return _standard_chain(STANDARD_PAD, first, last)._replace(name="standard")


def _standard_chain(width: int, first: int, last: int) -> Transform:
    """`standard()`'s five steps with these pixel amounts (pad `width`, then the two jitters)."""
    return chain(
        pad(width, mode="constant", value=0.5),
        jitter(first),
        random_scale(list(STANDARD_SCALES)),
        random_rotate(list(STANDARD_ANGLES)),
        jitter(last),
    )


def scaled_amounts(size: int | tuple[int, int]) -> tuple[int, int, int]:
    """(pad, first jitter, last jitter) of `scaled(size)`: `standard()`'s 12, 4 and 2 pixels times
    min(H, W) / 224, rounded; the first jitter at least 2 pixels, the last at least 1. Below `UNPADDED_BELOW`
    pixels there is no pad. (On the zoo's MNIST ViT, 3 seeds x 10 digits judged by LeNet5, a first jitter of 2
    px instead of 1 took transfer from 25/30 to 29/30: benchmarks/README.md, "Presets".)

    Example:
        >>> scaled_amounts(224), scaled_amounts(28), scaled_amounts(64)
        ((12, 4, 2), (0, 2, 1), (3, 2, 1))
    """
    h, w = check_size(size)
    k = min(h, w) / 224
    first, last = STANDARD_JITTERS
    width = round(STANDARD_PAD * k) if min(h, w) >= UNPADDED_BELOW else 0
    return width, max(2, round(first * k)), max(1, round(last * k))


UNPADDED_BELOW = 64
"""`scaled` adds no border to images smaller than this: on 28 px MNIST renders of the zoo's ViT (3 seeds x 10
digits, 256 steps, judged by LeNet5, DeepInversion's priors on an fft image) a 2 px border cost transfer: 20/30
with a grey border, 24/30 with a black one, 28/30 with none (and a 2 px first jitter; benchmarks/README.md,
"Presets")."""


def scaled(size: int | tuple[int, int]) -> Transform:
    """`standard()` for an image of `size`: its pad and jitters scaled by min(H, W) / 224 (`scaled_amounts`),
    its scale and angle draws unchanged. At 224 px it is `standard()`, draw for draw.

    `standard()` pads 12 pixels a side whatever the image: a 28 px MNIST image is then read at 28/52 of its
    size. Keeping the amounts in proportion keeps the content's scale; below `UNPADDED_BELOW` pixels there is
    no border at all. Rendered so (preset `prior`), the zoo's MNIST ViT's digits are named by LeNet5 27 times in
    30; with `standard()` (preset `lucid`) 14 (benchmarks/README.md, "Presets"). A recipe names it `"scaled"`
    (at the recipe's size).

    Shape:
        (B, C, H, W) -> (B, C, H + 2 pad, W + 2 pad), pad = `scaled_amounts(size)[0]`.

    Example:
        >>> t = scaled(64)
        >>> t.name, t.apply(torch.rand(1, 3, 64, 64), t.sample(None, (1, 3, 64, 64))).shape
        ('scaled:64x64', torch.Size([1, 3, 70, 70]))
    """
    h, w = check_size(size)
    return _standard_chain(*scaled_amounts((h, w)))._replace(name=f"{SCALED}:{h}x{w}")


SCALED = "scaled"
"""The recipe name of `scaled(size)`; its `Transform.name` is "scaled:HxW" (the size it was made for)."""

MACO_CROP_AREA = (0.1, 0.5)
MACO_NOISE = 0.04  # toolbox.maco's DEFAULT_NOISE: xplique's 0.08 on its (-1, 1) range


def maco_crops() -> Transform:
    """MACO's augmentation (Fel et al. 2023) as a render can express it: one random crop of each image, its
    area a fraction in `MACO_CROP_AREA` (0.1-0.5, so sides about 32-71% of the image's), resized back to the
    image's size, plus Gaussian noise of std `MACO_NOISE`. A recipe names it `"maco"`.

    What differs from `toolbox.maco_method` (xplique's loop): there the crops are square with centres at
    0.5 + N(0, 0.15) and sides N(box, 0.05) where `box` shrinks from 50% to 5% of the image over the run,
    several crops a step, resized to the model's input, with Gaussian plus uniform noise; here the crop is
    uniform in area and position (inside the image, the image's aspect ratio), one per step, with no schedule.

    Shape:
        (B, C, H, W) -> (B, C, H, W)

    Example:
        >>> t = maco_crops()
        >>> t.name, t.apply(torch.rand(2, 3, 16, 16), t.sample(None, (2, 3, 16, 16))).shape
        ('maco', torch.Size([2, 3, 16, 16]))
    """
    return chain(crops(1, scale=MACO_CROP_AREA), noise(MACO_NOISE))._replace(name="maco")


def robust() -> Transform:
    """Stronger transforms than `standard()`: pad 16, `jitter(16)`, a zoom in (0.7, 1.3), a turn in
    (-20, 20) degrees, `jitter(8)` (continuous draws), fused into one `grid_sample`.

    Models trained with heavy augmentation (EfficientNet-Lite0) render whole objects with these where
    `standard()` gives a texture (the README gallery). A recipe names it `"robust"`
    (`lucent-dsl render --transforms robust`).

    Shape:
        (B, C, H, W) -> (B, C, H + 32, W + 32)

    Example:
        >>> t = robust()
        >>> t.name, t.apply(torch.rand(1, 3, 32, 32), t.sample(None, (1, 3, 32, 32))).shape
        ('robust', torch.Size([1, 3, 64, 64]))
    """
    return chain(pad(16, mode="constant", value=0.5), jitter(16), random_scale((0.7, 1.3)),
                 random_rotate((-20.0, 20.0)), jitter(8))._replace(name="robust")


def robust_fit(size: int | tuple[int, int]) -> Transform:
    """`robust()` with its canvas sampled at the image's own `size` (`compose.sampled_at`): the same draws and
    field of view (the image and its 16 px border), read at H x W points instead of (H + 32) x (W + 32), so the
    model sees 0.77x the pixels at 224 px and a step costs about that much less. A recipe names it "robust_fit"
    (at the recipe's size).

    Shape:
        (B, C, H, W) -> (B, C, H, W)

    Example:
        >>> t = robust_fit(32)
        >>> t.name, t.apply(torch.rand(1, 3, 32, 32), t.sample(None, (1, 3, 32, 32))).shape
        ('robust_fit:32x32', torch.Size([1, 3, 32, 32]))
    """
    h, w = check_size(size)
    return cast(Transform, sampled_at(robust(), (h, w)))._replace(name=f"{ROBUST_FIT}:{h}x{w}")


ROBUST_FIT = "robust_fit"
"""The recipe name of `robust_fit(size)`; its `Transform.name` is "robust_fit:HxW" (the size it was made for)."""

SIZED = (SCALED, ROBUST_FIT)
"""The named transforms made for an image size: a recipe names them alone, the size is the recipe's."""

NAMED = ("standard", "scaled", "robust", "robust_fit", "maco", "none")
"""The transforms a recipe names (`named`)."""


def named(name: str, size: tuple[int, int]) -> Transform:
    """The transforms a recipe names, for an image of `size`: `standard()`, `scaled(size)`, `robust()`,
    `robust_fit(size)`, `maco_crops()`, or `identity()` for "none".

    Example:
        >>> named("scaled", (28, 28)).name, named("none", (8, 8)) == identity()
        ('scaled:28x28', True)
    """
    makers = {"standard": standard, "scaled": lambda: scaled(size), "robust": robust,
              "robust_fit": lambda: robust_fit(size), "maco": maco_crops, "none": identity}
    if name not in makers:
        raise InvalidArgumentError(f"transforms: unknown name {name!r}; one of {list(NAMED)}")
    return makers[name]()


_pad, _jitter = pad, jitter  # `affine`'s keyword arguments shadow these factories


def affine(*, pad: int = 0, jitter: int = 0, scale: Iterable[float] | tuple[float, float] = (1.0, 1.0),
           rotate: float | Iterable[float] | tuple[float, float] = (0.0, 0.0),
           mode: str = "reflect", value: float = 0.5) -> Transform:
    """Pad, jitter, zoom and turn in that order, as one fused geometric transform.

    Same as `chain(pad(pad, mode=mode, value=value), jitter(jitter), random_scale(scale),
    random_rotate(rotate))`; see those for the arguments. The defaults are the identity.

    Shape:
        (B, C, H, W) -> (B, C, H + 2 pad, W + 2 pad)

    Example:
        >>> t = affine(pad=4, jitter=2, scale=(0.9, 1.1), rotate=(-5.0, 5.0))
        >>> t.apply(torch.rand(2, 3, 8, 8), t.sample(None, (2, 3, 8, 8))).shape
        torch.Size([2, 3, 16, 16])
    """
    return chain(_pad(pad, mode=mode, value=value), _jitter(jitter), random_scale(scale),
                 random_rotate(rotate))


def ensemble(copies: int, base: Transform | None = None, *, shift: float = 0.1, scale: float = 0.2) -> Transform:
    """Augmentation ensembling (Plug-In Inversion, Ghiasi et al. 2022): `copies` augmented copies of each image
    per step, each with its own draw of `base` (default `standard()`) and its own `color_shift(shift, scale)`.

    Every term averages its score over the copies of an image (rows are crop-major, see `crops`), so the
    gradient is the mean over `copies` augmentations: a step costs `copies` forwards.

    Shape:
        (B, C, H, W) -> (copies B, C, H', W'), H' x W' as `base` makes them.

    Example:
        >>> t = ensemble(4)
        >>> x = torch.rand(2, 3, 32, 32)
        >>> t.apply(x, t.sample(torch.Generator().manual_seed(0), x.shape)).shape[0]
        8
    """
    return chain(crops(copies, scale=(1.0, 1.0)), base if base is not None else standard(),
                 color_shift(shift, scale))

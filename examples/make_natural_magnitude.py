"""Make `lucent_dsl/data/natural_magnitude.npy`: MACO's default magnitude spectrum.

The spectrum is `param.natural_magnitude` of 128 x 128 crops of the colour photos that ship
inside the scikit-image and matplotlib wheels (no download), each photo resized so its shorter
side is 128, 192 and 256 pixels and cut into crops on a 64-pixel stride, each crop tapered by a
Hann window (`natural_magnitude`'s default). Colours are decorrelated
with Lucid's matrix (what `maco(decorrelate=True)` uses); the result is stored as float16
(3, 128, 128), unshifted (DC at [0, 0], which is 0).

Run from the repository root (needs `pip install scikit-image matplotlib`):

    python examples/make_natural_magnitude.py
"""
from __future__ import annotations

import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lucent_dsl.param import NATURAL_MAGNITUDE_PATH, natural_magnitude

SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "motorcycle_right.png")
MATPLOTLIB_PHOTOS = ("grace_hopper.jpg",)
CROP, STRIDE, SHORT_SIDES = 128, 64, (128, 192, 256)


def photo_paths() -> list[str]:
    import matplotlib
    import skimage.data

    sk = os.path.dirname(skimage.data.__file__)
    mpl = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data")
    return [os.path.join(sk, p) for p in SKIMAGE_PHOTOS] + [os.path.join(mpl, p) for p in MATPLOTLIB_PHOTOS]


def crops(path: str) -> torch.Tensor:
    img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    out = []
    for short in SHORT_SIDES:
        s = short / min(x.shape[-2:])
        y = F.interpolate(x, scale_factor=s, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
        h, w = y.shape[-2:]
        for top in range(0, h - CROP + 1, STRIDE):
            for left in range(0, w - CROP + 1, STRIDE):
                out.append(y[0, :, top:top + CROP, left:left + CROP])
    return torch.stack(out)


def main() -> None:
    images = torch.cat([crops(p) for p in photo_paths()])
    mag = natural_magnitude(images)
    np.save(NATURAL_MAGNITUDE_PATH, mag.numpy().astype(np.float16))
    print(f"{len(images)} crops of {len(photo_paths())} photos -> {NATURAL_MAGNITUDE_PATH} "
          f"{tuple(mag.shape)}, {os.path.getsize(NATURAL_MAGNITUDE_PATH)} bytes")


if __name__ == "__main__":
    main()

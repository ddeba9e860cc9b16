"""A new objective, property-tested in one call: "suppress the other channels" (Lucid issue 116).

`channel(layer, i)` makes channel i fire, but the image is free to make every other channel fire
too. `suppress_others(layer, index=i)` scores channel i's mean minus the mean of the other
channels, so the image has to excite channel i and only it. Like the built-in terms it reads
feature maps (B, C, H, W), token sequences (B, T, C) and vectors (B, C), and refuses anything else
with `ObjectiveShapeError`.

`check_objective` then runs it through every law the built-in vocabulary obeys: per-image scores,
batch selectors, scaling, `parse`/JSON round trips and hashes, finite gradients that reach the
activation and the image, shape errors before any optimizer step, the same value on the fx and hooks
runners and on every layout it claims. Needs `pip install lucent_dsl[testing]`; run:

    python examples/custom_term_laws.py
"""
from __future__ import annotations

import hypothesis.strategies as st
import torch

import lucent_dsl as ld
from lucent_dsl.testing import check_objective

# (rows, C, positions) views of the three layouts the vocabulary reads, by rank
CHANNELS_FIRST = {4: lambda a: a.flatten(2), 3: lambda a: a.transpose(1, 2), 2: lambda a: a.unsqueeze(-1)}


@ld.objective
def suppress_others(a: torch.Tensor, *, index: int = 0) -> torch.Tensor:
    """Mean of channel `index` minus the mean of the other channels, one score per row."""
    view = CHANNELS_FIRST.get(a.dim())
    channels = view(a).shape[1] if view is not None else 0
    if not index < channels:
        raise ld.ObjectiveShapeError(
            f"suppress_others(index={index}) reads (B, C, H, W), (B, T, C) or (B, C) activations with more than "
            f"{index} channels, got shape {tuple(a.shape)}"
        )
    means = view(a).mean(-1)  # (rows, C)
    others = (means.sum(1) - means[:, index]) / max(channels - 1, 1)
    return means[:, index] - others


def main() -> None:
    check_objective(suppress_others, args={"index": lambda spec: st.integers(0, spec.channels - 1)},
                    channels=(1, 8), max_examples=15)
    print("suppress_others obeys every law of lucent_dsl.testing.check_objective")


if __name__ == "__main__":
    main()

"""The vocabulary as documentation: one row per term (arguments, formula, layouts, example).

The rows are data next to the code they describe; `tests/test_catalog.py` checks that every
registered name has a row, that every example parses back to itself, and that README.md's table is
`markdown_table()`. `lucent-dsl objectives` prints `text_table()`.

Notation: `a` is the activation a term reads, `a[c, p]` channel `c` at position `p` (a pixel of a
`(B, C, H, W)` map or a token of a `(B, T, C)` sequence), `mean_p` the mean over positions, `n` the
images of a render; each term scores every image separately and averages over random crops.

Example:
    >>> row = ROWS["channel"]
    >>> row.formula
    'mean_p a[index, p]'
"""
from __future__ import annotations

import inspect
from typing import NamedTuple

from ..dsl.expr import VOCABULARY

ALL = "maps, tokens, vectors"


class Row(NamedTuple):
    """One term's documentation."""

    name: str
    formula: str
    layouts: str
    example: str


_ROWS = [
    Row("channel", "mean_p a[index, p]", ALL, "channel('features.14', 10)"),
    Row(
        "neuron", "a[index, p(x, y)], x the column (default: the centre; token= picks a token). Lucid's and captum's "
        "x=a, y=b is x=b, y=a here, or convention='lucid'", ALL, "neuron('layer3', 5, x=3, y=3)"
    ),
    Row("layer", "mean_{c,p} a[c, p]^2 (DeepDream)", ALL, "layer('features.10')"),
    Row("deepdream", "the same as layer", ALL, "deepdream('features.10')"),
    Row(
        "direction",
        "mean_p dot(a[:, p], v) * max(cos(a[:, p], v), 0.1)^cossim_pow (Lucid's direction); cosine=True: "
        "mean_p cos(a[:, p], v) (lucent's direction)",
        ALL,
        "direction('layer4', (1.0, 0.0, -1.0))",
    ),
    Row(
        "direction_neuron",
        "direction at one position p(x, y) (cosine=True: lucent's direction_neuron)",
        ALL,
        "direction_neuron('layer4', (1.0, -1.0), x=2, y=2)",
    ),
    Row("channel_weight", "mean_{c,p} w[c] * a[c, p]", ALL, "channel_weight('layer4', (0.5, -0.5))"),
    Row("neuron_weight", "mean_c w[c] * a[c, p(x, y)]", ALL, "neuron_weight('layer4', (0.5, -0.5))"),
    Row(
        "channel_interpolate",
        "image i of n: (1 - t) channel(layer1, index1) + t channel(layer2, index2), t = i/(n-1)",
        ALL,
        "channel_interpolate('layer3', 0, 'layer4', 1)",
    ),
    Row(
        "alignment",
        "penalty for image i: sum_d (mean (a_i - a_{i+-d})^2) / decay_ratio^d / 2 over its neighbours in the batch",
        ALL,
        "alignment('layer3')",
    ),
    Row(
        "diversity",
        "penalty for image i: mean_{j != i} cos(G_i, G_j), G = channel Gram matrix; the batch totals n/(n-1) times "
        "Lucid's, lucent's and captum's diversity: convention='lucid' is theirs",
        "maps, tokens",
        "diversity('features.10')",
    ),
    Row(
        "class_logit",
        "logit[label] at '@output' (a name resolves through the model's labels)",
        "vectors",
        "class_logit('flamingo')",
    ),
    Row(
        "activation_match",
        "mean_p dot(a[:, p], t[:, p]) * max(cos, 0.1)^cossim_pow against a target activation t",
        ALL,
        "activation_match('layer3', (1.0, 2.0))",
    ),
    Row(
        "total_variation",
        "penalty: mean |x[h+1] - x[h]| + mean |x[w+1] - x[w]| of the image (or a map); Lucid's and captum's is the "
        "batch sum (C*H*(H-1) times ours on C x H x H images): convention='lucid'",
        "maps",
        "total_variation()",
    ),
    Row(
        "l1",
        "penalty: mean |a - target|; Lucid's and captum's L1 is the batch sum (numel per image times ours): "
        "convention='lucid'",
        ALL + ", images",
        "l1(target=0.5)",
    ),
    Row(
        "l2",
        "penalty: mean (a - target)^2; Lucid's and captum's L2 is the norm sqrt(1e-6 + batch sum of squares): "
        "convention='lucid' (the images then score together)",
        ALL + ", images",
        "l2()",
    ),
    Row(
        "blur",
        "penalty: mean (x - box3x3(x))^2 (the blurred copy is a constant); Lucid's blur_input_each_step (another "
        "kernel and border, 0.5 * batch sum): convention='lucid'",
        "maps",
        "blur()",
    ),
    Row("opacity", "penalty: mean alpha of an RGBA image (param.alpha)", "images (B, 4, H, W)", "opacity()"),
    Row(
        "masked",
        "the inner term on activations multiplied by a box or mask (normalized to the region)",
        "maps, tokens",
        "masked(channel('features.14', 10), (0.25, 0.25, 0.75, 0.75))",
    ),
    Row(
        "source_match",
        "activation_match against image 0's activations (paired renders)",
        ALL,
        "source_match('features.4')",
    ),
    Row("source_l2", "penalty: mean (a - a_0)^2 against image 0 (paired renders)", ALL, "source_l2('features.4')"),
    Row(
        "style",
        "-|G - G_target|^2 / |G_target|^2, G = channel Gram matrix (Gatys et al.; at most 0)",
        ALL,
        "style('features.4', ((1.0, 0.0), (0.0, 1.0)))",
    ),
    Row(
        "facet",
        "sum_{c,p} w[c] * a[c, p] * relu(d expr / d a[c, p]) at the earlier layer (faceted feature visualization)",
        ALL,
        "facet(channel('features.16', 7), 'features.6', (0.5, -1.0))",
    ),
    Row(
        "clip_text",
        "cos(e, t) at '@output': e the image embedding of a CLIP-like model, t the prompt's text embedding",
        "vectors",
        "clip_text('a photo of a dog')",
    ),
]
ROWS = {r.name: r for r in _ROWS}


def signature(name: str) -> str:
    """`name(args...)` as the factory takes them (keyword-only arguments after `*`)."""
    sig = inspect.signature(VOCABULARY[name])
    parts, star = [], False
    for p in sig.parameters.values():
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        parts.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
    return f"{name}({', '.join(parts)})"


def markdown_table() -> str:
    """The README's vocabulary table."""
    lines = ["| term | arguments | computes (higher is more; penalties are subtracted) | layouts | example |",
             "|---|---|---|---|---|"]
    for r in _ROWS:
        lines.append(f"| `{r.name}` | `{signature(r.name)}` | {r.formula} | {r.layouts} | `{r.example}` |")
    return "\n".join(lines)


def text_table() -> str:
    """The vocabulary for a terminal (`lucent-dsl objectives`)."""
    out = []
    for r in _ROWS:
        out.append(f"{signature(r.name)}\n    {r.formula}\n    layouts: {r.layouts}\n    e.g. {r.example}")
    return "\n".join(out)

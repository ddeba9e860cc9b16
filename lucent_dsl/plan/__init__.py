"""Expr + models -> Plan: the compiler.

Rooms: `compiler` (`compile_plan`, `Plan`: sites, runners, layouts, per-summand bookkeeping), `binding`
(`as_models`, `bind`: every term's model named, its layers checked, its labels resolved),
`truncate` (each model runs only up to its deepest site), `fold` (BatchNorm folding, `frozen_models`),
`inplace` (reading what a module returned despite later in-place ops), `sitemap` (the compile-time probe
of input sizes and layouts), `probe` (every addressable site of a model, `lucent-dsl layers`), `forward`
(read some sites of a model once, without a vocabulary term).

Example:
    >>> import torch.nn as nn
    >>> compile_plan("channel('0', 1)", nn.Sequential(nn.Conv2d(3, 4, 3))).term_names
    ("channel('0', 1)",)
"""
from .binding import (
    DEFAULT_MODEL_NAME as DEFAULT_MODEL_NAME,
    IMAGE_SITE as IMAGE_SITE,
    as_models as as_models,
    bind as bind,
)
from .compiler import (
    Plan as Plan,
    Scores as Scores,
    batched as batched,
    compile_plan as compile_plan,
    history_keys as history_keys,
    history_rows as history_rows,
)

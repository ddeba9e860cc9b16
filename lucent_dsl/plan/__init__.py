"""Expr + models -> Plan: the compiler.

Rooms: `compiler` (`compile_plan`, `Plan`: binding, sites, runners, layouts, per-summand bookkeeping),
`truncate` (each model runs only up to its deepest site), `fold` (BatchNorm folding, `frozen_models`),
`inplace` (reading what a module returned despite later in-place ops), `sitemap` (the compile-time probe
of input sizes and layouts), `probe` (every addressable site of a model, `lucent-dsl layers`), `forward`
(read some sites of a model once, without a vocabulary term).

Example:
    >>> import torch.nn as nn
    >>> compile_plan("channel('0', 1)", nn.Sequential(nn.Conv2d(3, 4, 3))).term_names
    ("channel('0', 1)",)
"""
from .compiler import (
    DEFAULT_MODEL_NAME as DEFAULT_MODEL_NAME,
    IMAGE_SITE as IMAGE_SITE,
    Plan as Plan,
    Scores as Scores,
    as_models as as_models,
    batched as batched,
    bind as bind,
    compile_plan as compile_plan,
    history_keys as history_keys,
    history_rows as history_rows,
)

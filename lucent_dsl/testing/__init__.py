"""`lucent_dsl.testing`: the laws our objectives obey, as a toolkit for your own research code.

Property-based tests for your objectives, parameterizations and transforms, with hypothesis (an
optional extra: `pip install lucent_dsl[testing]`). One call checks a custom term against every
law the built-in vocabulary obeys; the strategies compose into your own hypothesis tests.

- `check_objective(target, ...)`: per-image scores, batch selectors, scaling, the algebra (`parse`,
  JSON, hashes), gradients, `ObjectiveShapeError` on wrong shapes (before any optimizer step), the
  fx and hooks runners, every claimed layout (`laws`, `model_laws`).
- `check_param(factory)`, `check_transform(factory, strengths=...)` (`param_laws`).
- Every law runs and fails the same way (`judging`): `run_law` under hypothesis, a `Case`, `close`,
  `check_gradient`, `failure`.
- Strategies: `activation_specs`, `activations`, `image_batches`, `batch_selectors` (`shapes`); `term`,
  `exprs`, `batched_lists`, `full_acts`, `custom_builder`, `BUILDERS` (`terms`, `vocabulary`);
  `random_models`, `layout_model`, `shaped_model` (`models`).

Example:
    >>> import hypothesis.strategies as st
    >>> import lucent_dsl as ld
    >>> @ld.objective
    ... def doc_centre(a, *, index=0):
    ...     if a.dim() != 4:
    ...         raise ld.ObjectiveShapeError(f"doc_centre reads (B, C, H, W) maps, got {tuple(a.shape)}")
    ...     return a[:, index, a.shape[2] // 2, a.shape[3] // 2]
    >>> check_objective(doc_centre, args={"index": lambda spec: st.integers(0, spec.channels - 1)},
    ...                 layouts=("nchw",), max_examples=3)
"""
from __future__ import annotations

try:
    import hypothesis as _hypothesis  # noqa: F401
except ImportError:  # pragma: no cover - only without the extra
    raise ImportError(
        "lucent_dsl.testing needs hypothesis, an optional extra: pip install 'lucent_dsl[testing]'"
    ) from None

from .laws import SCOPES, Claims, check_objective
from .models import RandomModel, image_shape, layout_model, random_models, shaped_model
from .param_laws import check_param, check_transform
from .shapes import (
    LAYOUTS,
    RANK_LAYOUTS,
    ActivationSpec,
    activation_specs,
    activations,
    arrays,
    batch_selectors,
    image_batches,
    seeded,
    selected,
    unsupported_shapes,
)
from .terms import (
    as_spec,
    as_table,
    batched_lists,
    exprs,
    full_acts,
    leaves_of,
    random_tables,
    sites_of,
    term,
    wild_exprs,
    with_batch,
)
from .vocabulary import BUILDERS, MASKABLE, Builder, custom_builder

__all__ = [
    "BUILDERS", "LAYOUTS", "MASKABLE", "RANK_LAYOUTS", "SCOPES", "ActivationSpec", "Builder", "Claims", "RandomModel",
    "activation_specs", "activations", "arrays", "as_spec", "as_table", "batch_selectors", "batched_lists",
    "check_objective", "check_param", "check_transform", "custom_builder", "exprs", "full_acts", "image_batches",
    "image_shape", "layout_model", "leaves_of", "random_models", "random_tables", "seeded", "selected", "shaped_model",
    "sites_of", "term", "unsupported_shapes", "wild_exprs", "with_batch",
]

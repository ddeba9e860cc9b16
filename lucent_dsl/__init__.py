"""lucent_dsl: feature visualization for PyTorch as an algebra of objectives.

Objectives are immutable expressions (`channel("layer4", 12) - 1e-3 * total_variation()`),
compiled with one or more models into one truncated hook-and-loss `Plan`, and rendered into
images by `render`. Objectives are maximized; penalties are subtracted.
"""
from . import io as io, param as param, param_extra as param_extra, transforms as transforms
from . import adversarial as adversarial, masks as masks, recipes as recipes, relu as relu
from .custom import objective as objective
from .errors import (
    AmbiguousModelError as AmbiguousModelError,
    ImageError as ImageError,
    InvalidArgumentError as InvalidArgumentError,
    LayerNotFoundError as LayerNotFoundError,
    LucentError as LucentError,
    ModelNotFoundError as ModelNotFoundError,
    NonFiniteError as NonFiniteError,
    ObjectiveShapeError as ObjectiveShapeError,
    ParseError as ParseError,
    WeightsNotFoundError as WeightsNotFoundError,
)
from .expr import IMAGE as IMAGE, INPUT as INPUT, OUTPUT as OUTPUT, Expr as Expr, Site as Site, sum_of as sum_of
from .models import ModelInfo as ModelInfo, info_of as info_of, with_info as with_info
from .objectives import (
    activation_match as activation_match,
    alignment as alignment,
    blur as blur,
    channel as channel,
    channel_interpolate as channel_interpolate,
    channel_weight as channel_weight,
    class_logit as class_logit,
    deepdream as deepdream,
    direction as direction,
    direction_neuron as direction_neuron,
    diversity as diversity,
    l1 as l1,
    l2 as l2,
    layer as layer,
    neuron as neuron,
    neuron_weight as neuron_weight,
    total_variation as total_variation,
)
from .masks import box_mask as box_mask, masked as masked
from .param_extra import opacity as opacity, transparency_map as transparency_map
from .parse import parse as parse
from .plan import Plan as Plan, Scores as Scores, batched as batched, compile_plan as compile_plan, evaluate as evaluate
from .render import RenderResult as RenderResult, render as render
from .serialize import from_json as from_json, to_json as to_json

__all__ = sorted([name for name in dir() if not name.startswith("_")] + ["zoo"])


def __getattr__(name: str):
    # `zoo` is imported on first use, so `python -m lucent_dsl.zoo install` runs it as a fresh module.
    if name == "zoo":
        import importlib

        return importlib.import_module(".zoo", __name__)
    raise AttributeError(f"module 'lucent_dsl' has no attribute {name!r}")

"""lucent_dsl: feature visualization for PyTorch as an algebra of objectives.

Objectives are immutable expressions (`channel("layer4", 12) - 1e-3 * total_variation()`),
compiled with one or more models into one truncated hook-and-loss `Plan`, and rendered into
images by `render`. Objectives are maximized; penalties are subtracted. ARCHITECTURE.md says
which module holds what.

Example:
    >>> import lucent_dsl as ld
    >>> ld.channel("layer4", 12) - 1e-3 * ld.total_variation()
    channel('layer4', 12) - 0.001 * total_variation()
"""
import os as _os

# OpenMP threads that wait by spinning starve a render on a machine whose cores are busy with other work: the
# README's main job ran 3-8x slower with torch's default threads than with OMP_WAIT_POLICY=PASSIVE
# (benchmarks/bench_threads_under_load.py). Only where the user set no policy, and only before torch loads
# OpenMP (the `lucent-dsl` command always; Python when lucent_dsl is imported before torch).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from . import (
    io as io,
    param as param,
    replay as replay,  # attaches `Recipe.run` (running a recipe sits above the renderer)
    transforms as transforms,
)
from .dsl.expr import (
    IMAGE as IMAGE,
    INPUT as INPUT,
    OUTPUT as OUTPUT,
    Expr as Expr,
    Site as Site,
    evaluate as evaluate,
    sum_of as sum_of,
)
from .dsl.parser import parse as parse
from .dsl.serialize import from_json as from_json, to_json as to_json
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
from .models.info import ModelInfo as ModelInfo, info_of as info_of, with_info as with_info
from .objectives import (
    activation_match as activation_match,
    alignment as alignment,
    blur as blur,
    box_mask as box_mask,
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
    masked as masked,
    neuron as neuron,
    neuron_weight as neuron_weight,
    objective as objective,
    opacity as opacity,
    source_l2 as source_l2,
    source_match as source_match,
    style as style,
    total_variation as total_variation,
)
from .objectives.batchnorm import batchnorm_prior as batchnorm_prior
from .objectives.text import clip_text as clip_text
from .plan.compiler import Plan as Plan, Scores as Scores, batched as batched, compile_plan as compile_plan
from .renderer import relu as relu
from .renderer.coarse import coarse_to_fine as coarse_to_fine
from .renderer.phases import render as render
from .renderer.presets import PRESETS as PRESETS, Preset as Preset
from .renderer.result import RenderResult as RenderResult
from .renderer.schedule import Schedule as Schedule
from .renderer.stopping import Plateau as Plateau, Target as Target
from .toolbox import (
    adversarial as adversarial,
    inversion as recipes,  # `ld.recipes` names toolbox.inversion (the path lucent_dsl.recipes is a shim)
)
from .toolbox.transparency import transparency_map as transparency_map

__all__ = [
    "IMAGE", "INPUT", "OUTPUT", "AmbiguousModelError", "Expr", "ImageError", "InvalidArgumentError",
    "LayerNotFoundError", "LucentError", "ModelInfo", "ModelNotFoundError", "NonFiniteError", "ObjectiveShapeError",
    "ParseError", "Plan", "RenderResult", "Scores", "Site", "WeightsNotFoundError", "activation_match", "adversarial",
    "alignment", "batched", "blur", "box_mask", "channel", "channel_interpolate", "channel_weight", "class_logit",
    "compile_plan", "deepdream", "direction", "direction_neuron", "diversity", "evaluate", "from_json", "info_of", "io",
    "l1", "l2", "layer", "masked", "neuron", "neuron_weight", "objective", "opacity", "param", "parse", "recipes",
    "relu", "render", "source_l2", "source_match", "style", "sum_of", "to_json", "total_variation", "transforms",
    "transparency_map", "with_info", "zoo",
]
from .objectives import facet as facet  # noqa: E402  faceted visualization's term (objectives/attribution.py)

__all__ += ["facet", "clip_text"]
__all__ += ["PRESETS", "Plateau", "Preset", "Schedule", "Target", "batchnorm_prior", "coarse_to_fine"]  # issue 27


def __getattr__(name: str):
    # `zoo` is imported on first use, so `python -m lucent_dsl.zoo install` runs it as a fresh module.
    if name == "zoo":
        import importlib

        return importlib.import_module(".zoo", __name__)
    raise AttributeError(f"module 'lucent_dsl' has no attribute {name!r}")

"""`Recipe`: everything about a render in one JSON value, and the model specs it names.

A recipe holds the objective as DSL text, the models as spec strings, and every setting that
changes the pixels (size, steps, seed, parameterization, transforms, lr, batch, precision).
`lucent-dsl` writes it into each PNG it saves (under `io.RECIPE_KEY`), so
`lucent-dsl render --recipe image.png` replays the image: bit for bit on the CPU with the same
torch build. Where the run happens (`device`) and whether the step is compiled are not part of
a recipe; compiled and eager steps can differ in the last bits.

Model specs (`build_models`):

| spec                               | model                                                        |
| ---------------------------------- | ------------------------------------------------------------ |
| `mobilenet_v2`                     | a `lucent_dsl.zoo` model (`zoo.names()`)                     |
| `torchvision:resnet18`             | a torchvision architecture, random weights                   |
| `torchvision:resnet18:weights=DEFAULT` | ... with torchvision's pretrained weights (downloads)    |
| `timm:NAME[:pretrained=true]`      | a timm model (when timm is installed)                        |
| `path/to/file.py:factory`          | `factory()` from that file (imported with importlib)         |
| `name=SPEC`                        | any of the above, named `name` for an ensemble               |

Random weights are drawn under `torch.manual_seed(0)` (in a forked RNG state), so a spec always
builds the same model and a recipe that names one replays exactly.

Example:
    >>> r = Recipe(objective="channel('features.14', 10)", steps=64)
    >>> Recipe.from_json(r.to_json()) == r
    True
    >>> parse_spec("mnet=torchvision:mobilenet_v2:weights=DEFAULT")
    ModelSpec(name='mnet', kind='torchvision', target='mobilenet_v2', options=(('weights', 'DEFAULT'),))
"""
from __future__ import annotations

import dataclasses as dc
import hashlib
import importlib.util
import json
import math
import numbers
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from . import zoo
from .errors import InvalidArgumentError, LucentError
from .models import IMAGENET_MEAN, IMAGENET_STD, ModelInfo, info_of, with_info
from .parse import parse

FORMAT = 1
"""Version of the recipe JSON layout (the `lucent_dsl_recipe` key)."""

COMMANDS = ("render", "caricature", "accentuate")
PARAMS = ("fft", "pixel")
TRANSFORMS = ("standard", "none")
PRECISIONS = ("fp32", "bf16")
SCORE_KEY = "lucent_dsl.score"
"""PNG metadata key of an image's final score (written next to `io.RECIPE_KEY`)."""
MODEL_SEED = 0
"""Seed of the RNG state under which specs build their models (random weights replay)."""

# Keys written for information only; reading ignores them.
_INFO_KEYS = ("torch", "lucent_dsl_recipe")
_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_\-]*)=(.+)$")
_SPEC_HELP = (
    "a zoo name ({zoo}), torchvision:NAME[:weights=W], timm:NAME[:pretrained=true], "
    "path/to/file.py:factory, or name=SPEC for an ensemble"
)


class ModelSpec(NamedTuple):
    """A parsed model spec: `name` (None: unnamed), `kind` (zoo, torchvision, timm, file), target, options."""

    name: str | None
    kind: str
    target: str
    options: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        body = self.target if self.kind in ("zoo", "file") else f"{self.kind}:{self.target}"
        body += "".join(f":{k}={v}" for k, v in self.options)
        return f"{self.name}={body}" if self.name else body

    @property
    def default_name(self) -> str:
        """The name an unnamed spec gets in an ensemble: the zoo/architecture/factory name."""
        if self.kind == "file":
            return self.target.rsplit(":", 1)[1]
        return self.target.replace(":", "_")


def _spec_error(spec: str, why: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"bad model spec {spec!r}: {why}. A spec is {_SPEC_HELP.format(zoo=', '.join(zoo.names()))}")


def parse_spec(spec: str) -> ModelSpec:
    """Parse one model spec string (see the module docstring); nothing is built or imported.

    Raises:
        InvalidArgumentError: the text is not a spec.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise _spec_error(str(spec), "it is empty")
    text = spec.strip()
    name = None
    m = _NAME.match(text)
    if m and ":" not in m.group(1):
        name, text = m.group(1), m.group(2)
    if text in zoo.names():
        return ModelSpec(name, "zoo", text)
    head, _, rest = text.partition(":")
    if head in ("torchvision", "timm"):
        target, *opts = rest.split(":")
        if not target:
            raise _spec_error(spec, f"{head}: needs an architecture name, e.g. {head}:resnet18")
        options = []
        allowed = ("weights",) if head == "torchvision" else ("pretrained",)
        for opt in opts:
            key, eq, value = opt.partition("=")
            if not eq or key not in allowed or not value:
                raise _spec_error(spec, f"unknown option {opt!r}; {head} specs take {allowed[0]}=...")
            options.append((key, value))
        return ModelSpec(name, head, target, tuple(options))
    path, colon, factory = text.rpartition(":")
    if colon and path.endswith(".py"):
        if not factory.isidentifier():
            raise _spec_error(spec, f"{factory!r} is not a Python function name")
        return ModelSpec(name, "file", f"{path}:{factory}")
    if text.endswith(".py"):
        raise _spec_error(spec, "name the function that builds the model: path/to/file.py:factory")
    close = [n for n in zoo.names() if n.startswith(text[:3].lower())]
    hint = f"did you mean {close[0]!r}" if close else "not a zoo name, torchvision:, timm: or file.py:factory"
    raise _spec_error(spec, hint)


def normalize_spec(spec: str) -> str:
    """`spec` in the form a recipe stores: parsed, with a file path made absolute."""
    s = parse_spec(spec)
    if s.kind == "file":
        path, factory = s.target.rsplit(":", 1)
        s = s._replace(target=f"{Path(path).expanduser().resolve()}:{factory}")
    return str(s)


def _non_inplace(model: nn.Module) -> None:
    # as zoo.load does: a hook on a conv records the conv's output, not the ReLU's after it
    for module in model.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False  # type: ignore[assignment]


def _torchvision(spec: ModelSpec, text: str) -> nn.Module:
    from torchvision import models as tvm

    if spec.target not in tvm.list_models():
        import difflib

        close = difflib.get_close_matches(spec.target, tvm.list_models(), n=3)
        raise _spec_error(text, f"torchvision has no model {spec.target!r}" + (f"; did you mean {', '.join(close)}" if close else ""))
    options = dict(spec.options)
    weights = None
    if "weights" in options and options["weights"].lower() != "none":
        try:
            weights = tvm.get_model_weights(spec.target).verify(options["weights"])
        except (KeyError, ValueError, AttributeError) as e:
            raise _spec_error(text, f"unknown weights {options['weights']!r} for {spec.target} ({e})") from e
    try:
        model = tvm.get_model(spec.target, weights=weights)
    except OSError as e:  # no network and not in the hub cache
        raise InvalidArgumentError(f"cannot get the weights of {text!r}: {e}") from e
    labels = tuple(weights.meta["categories"]) if weights is not None and "categories" in weights.meta else None
    _non_inplace(model)
    return with_info(model, ModelInfo(IMAGENET_MEAN, IMAGENET_STD, None, 3, labels, spec.target))


def _timm(spec: ModelSpec, text: str) -> nn.Module:
    try:
        import timm  # pyright: ignore[reportMissingImports]
    except ImportError:
        raise _spec_error(text, "timm is not installed (pip install timm)") from None
    pretrained = dict(spec.options).get("pretrained", "false").lower() in ("1", "true", "yes")
    try:
        model = timm.create_model(spec.target, pretrained=pretrained)
    except RuntimeError as e:  # timm's "Unknown model"
        raise _spec_error(text, str(e)) from e
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size")
    _non_inplace(model)
    info = ModelInfo(
        tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD)),
        tuple(size[1:]) if size else None, int(size[0]) if size else 3, None, spec.target,
    )
    return with_info(model, info)


def _from_file(spec: ModelSpec, text: str) -> nn.Module:
    path_text, factory_name = spec.target.rsplit(":", 1)
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise InvalidArgumentError(f"model spec {text!r}: no such file {str(path)!r}")
    module_name = "_lucent_dsl_user_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise InvalidArgumentError(f"model spec {text!r}: cannot import {str(path)!r} as Python")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module  # dataclasses and pickling look a class's module up here
    try:
        loader_spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(module_name, None)
        raise InvalidArgumentError(f"model spec {text!r}: importing {str(path)!r} failed: {type(e).__name__}: {e}") from e
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise InvalidArgumentError(f"model spec {text!r}: {str(path)!r} has no function {factory_name!r} (it has: {', '.join(found) or 'nothing callable'})")
    try:
        model = factory()
    except Exception as e:
        raise InvalidArgumentError(f"model spec {text!r}: {factory_name}() raised {type(e).__name__}: {e}") from e
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"model spec {text!r}: {factory_name}() returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def build_model(spec: str | ModelSpec, *, device: str | torch.device | None = None) -> nn.Module:
    """Build the module a spec names, in eval mode with frozen parameters, on `device` (default CPU).

    Raises:
        InvalidArgumentError: a bad spec, a missing file, a factory that fails.
        WeightsNotFoundError: a zoo model whose weights are not installed.
    """
    s = parse_spec(spec) if isinstance(spec, str) else spec
    text = str(spec)
    if s.kind == "zoo":
        model = zoo.load(s.target)
    else:
        build: Callable[[ModelSpec, str], nn.Module] = {"torchvision": _torchvision, "timm": _timm, "file": _from_file}[s.kind]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(MODEL_SEED)
            model = build(s, text)
    model.eval().requires_grad_(False)
    if device is not None:
        model.to(device)
    return model


def build_models(specs: Sequence[str], *, device: str | torch.device | None = None) -> nn.Module | dict[str, nn.Module]:
    """One module for one unnamed spec, else a dict name -> module (an ensemble).

    Unnamed specs in an ensemble are named after their zoo name, architecture or factory.
    Specs default to `(zoo.DEFAULT,)` when empty.

    Raises:
        InvalidArgumentError: a bad spec, or two models with the same name.
    """
    parsed = [parse_spec(s) for s in (specs or (zoo.DEFAULT,))]
    if len(parsed) == 1 and parsed[0].name is None:
        return build_model(parsed[0], device=device)
    out: dict[str, nn.Module] = {}
    for s in parsed:
        name = s.name or s.default_name
        if name in out:
            raise InvalidArgumentError(
                f"two models are named {name!r}; name them: --model a={s._replace(name=None)} --model b=..."
            )
        out[name] = build_model(s, device=device)
    return out


def _first(models: nn.Module | Mapping[str, nn.Module]) -> nn.Module:
    return models if isinstance(models, nn.Module) else next(iter(models.values()))


def default_size(models: nn.Module | Mapping[str, nn.Module]) -> tuple[int, int]:
    """The render size when none is given: the first model's input size, else 224."""
    size = info_of(_first(models)).input_size
    return (int(size[0]), int(size[1])) if size else (224, 224)


# --- the recipe value ----------------------------------------------------------------------------


def _int(name: str, v: Any, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum:
        raise InvalidArgumentError(f"recipe: {name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _choice(name: str, v: Any, choices: Sequence[str]) -> str:
    if v not in choices:
        raise InvalidArgumentError(f"recipe: {name} must be one of {', '.join(choices)}, got {v!r}")
    return v


@dc.dataclass(frozen=True)
class Recipe:
    """Everything that decides a render's pixels. A frozen value; `to_json`/`from_json` round-trip it.

    Attributes:
        objective: DSL text (canonical form, `repr(parse(text))`); None for `caricature`.
        models: model specs (see `build_models`); empty means `(zoo.DEFAULT,)`.
        size: (H, W) of the rendered image; None: the first model's input size, else 224.
        steps, seed, lr, batch: as in `render`.
        param: "fft" or "pixel" (see `lucent_dsl.param`).
        transforms: "standard" (`transforms.standard()`; for caricature/accentuate, applied paired
            to the source image too) or "none".
        precision: "fp32" or "bf16".
        command: "render", "caricature" or "accentuate" (the last two call `lucent_dsl.recipes`).
        image: the input image of caricature/accentuate (an absolute path).
        layers: the layers of a caricature.
    """

    objective: str | None = None
    models: tuple[str, ...] = ()
    size: tuple[int, int] | None = None
    steps: int = 512
    seed: int = 0
    param: str = "fft"
    transforms: str = "standard"
    lr: float = 0.05
    batch: int = 1
    precision: str = "fp32"
    command: str = "render"
    image: str | None = None
    layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _choice("command", self.command, COMMANDS)
        if self.objective is not None:
            if not isinstance(self.objective, str):
                raise InvalidArgumentError(f"recipe: objective must be DSL text, got {type(self.objective).__name__}")
            object.__setattr__(self, "objective", repr(parse(self.objective)))
        elif self.command != "caricature":
            raise InvalidArgumentError(f"recipe: a {self.command} needs an objective")
        if isinstance(self.models, str) or not all(isinstance(m, str) for m in self.models):
            raise InvalidArgumentError(f"recipe: models must be a list of spec strings, got {self.models!r}")
        object.__setattr__(self, "models", tuple(self.models))
        for m in self.models:
            parse_spec(m)
        if self.size is not None:
            size = (self.size, self.size) if isinstance(self.size, numbers.Integral) and not isinstance(self.size, bool) else self.size
            if not isinstance(size, Sequence) or len(size) != 2:
                raise InvalidArgumentError(f"recipe: size must be an int or [H, W], got {self.size!r}")
            object.__setattr__(self, "size", (_int("size", size[0], 1), _int("size", size[1], 1)))
        object.__setattr__(self, "steps", _int("steps", self.steps, 1))
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise InvalidArgumentError(f"recipe: seed must be an int, got {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))
        _choice("param", self.param, PARAMS)
        _choice("transforms", self.transforms, TRANSFORMS)
        _choice("precision", self.precision, PRECISIONS)
        if isinstance(self.lr, bool) or not isinstance(self.lr, numbers.Real) or not (math.isfinite(self.lr) and self.lr > 0):
            raise InvalidArgumentError(f"recipe: lr must be a positive finite number, got {self.lr!r}")
        object.__setattr__(self, "lr", float(self.lr))
        object.__setattr__(self, "batch", _int("batch", self.batch, 1))
        if self.command != "render" and self.image is None:
            raise InvalidArgumentError(f"recipe: a {self.command} needs an image")
        if self.command == "caricature" and not self.layers:
            raise InvalidArgumentError("recipe: a caricature needs layers")
        if isinstance(self.layers, str) or not all(isinstance(s, str) for s in self.layers):
            raise InvalidArgumentError(f"recipe: layers must be a list of layer names, got {self.layers!r}")
        object.__setattr__(self, "layers", tuple(self.layers))

    # --- JSON ------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; fields at their defaults for another command are left out."""
        d: dict[str, Any] = {"lucent_dsl_recipe": FORMAT, "command": self.command}
        for f in dc.fields(self):
            v = getattr(self, f.name)
            if f.name == "command" or (f.name in ("image", "layers") and not v):
                continue
            d[f.name] = list(v) if isinstance(v, tuple) else v
        d["torch"] = torch.__version__
        return d

    def to_json(self, **dumps_kwargs: Any) -> str:
        """The recipe as JSON text (keys in a fixed order, so equal recipes give equal text)."""
        return json.dumps(self.to_dict(), allow_nan=False, **dumps_kwargs)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Recipe:
        """Read a dict made by `to_dict`. Unknown keys are an error (a typo must not be ignored)."""
        if not isinstance(d, Mapping):
            raise InvalidArgumentError(f"recipe: expected a JSON object, got {type(d).__name__}")
        version = d.get("lucent_dsl_recipe", FORMAT)
        if version != FORMAT:
            raise InvalidArgumentError(f"recipe: format {version!r} is not supported (this lucent_dsl reads {FORMAT})")
        names = {f.name for f in dc.fields(cls)}
        unknown = sorted(set(d) - names - set(_INFO_KEYS))
        if unknown:
            raise InvalidArgumentError(f"recipe: unknown keys {unknown}; known: {sorted(names)}")
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_json(cls, text: str | bytes) -> Recipe:
        """Read recipe JSON text."""
        try:
            d = json.loads(text)
        except ValueError as e:
            raise InvalidArgumentError(f"recipe: not valid JSON ({e})") from None
        return cls.from_dict(d)

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """Read a recipe from a JSON file, or from the metadata of a PNG that lucent-dsl wrote."""
        from .io import RECIPE_KEY, read_png_metadata

        p = Path(path)
        if not p.is_file():
            raise InvalidArgumentError(f"recipe file {str(p)!r} does not exist")
        with open(p, "rb") as f:
            head = f.read(8)
        if head == b"\x89PNG\r\n\x1a\n":
            meta = read_png_metadata(p)
            if RECIPE_KEY not in meta:
                raise InvalidArgumentError(f"{str(p)!r} carries no lucent_dsl recipe (no {RECIPE_KEY!r} text chunk)")
            return cls.from_json(meta[RECIPE_KEY])
        return cls.from_json(p.read_bytes())

    def replace(self, **changes: Any) -> Recipe:
        """A copy with `changes` applied (None values are ignored, so CLI defaults pass through)."""
        return dc.replace(self, **{k: v for k, v in changes.items() if v is not None})

    # --- running -----------------------------------------------------------------------------------

    def build_models(self, *, device: str | torch.device | None = None) -> nn.Module | dict[str, nn.Module]:
        """The models the recipe names (see `build_models`)."""
        return build_models(self.models, device=device)

    def resolved(self, models: nn.Module | Mapping[str, nn.Module]) -> Recipe:
        """The recipe with `size` and `models` filled in, as it is stored next to an image."""
        size = self.size
        if size is None and self.command != "render" and info_of(_first(models)).input_size is None:
            size = _image_size(self.image)  # the recipes' own default: the image's size
        return dc.replace(
            self,
            size=size or default_size(models),
            models=tuple(normalize_spec(m) for m in (self.models or (zoo.DEFAULT,))),
        )

    def run(
        self,
        models: nn.Module | Mapping[str, nn.Module] | None = None,
        *,
        device: str | torch.device | None = None,
        compile: bool | str = "auto",
        progress: bool = True,
        thresholds: Sequence[int] | None = None,
        callback: Callable[[int, Tensor], None] | None = None,
    ) -> Any:
        """Render this recipe (building its models unless given) and return the `RenderResult`.

        Raises:
            LucentError: a bad objective, layer or setting; `recipes` missing for caricature/accentuate.
        """
        from .plan import compile_plan
        from .render import render

        if models is None:
            models = self.build_models(device=device)
        size = self.size or default_size(models)
        common: dict[str, Any] = {"steps": self.steps, "seed": self.seed, "lr": self.lr, "progress": progress,
                                  "thresholds": thresholds, "callback": callback}
        if self.command != "render":
            return self._run_recipe(models, size, dict(common, device=device, compile=compile))
        if self.objective is None:
            raise InvalidArgumentError("recipe: a render needs an objective")
        plan = compile_plan(self.objective, models)
        return render(
            plan,
            size=size,
            batch=self.batch,
            param=make_param(self.param, size, self.batch, plan_channels(plan)),
            transforms=make_transforms(self.transforms),
            device=device,
            compile=compile,
            precision=self.precision,
            **common,
        )

    def _run_recipe(self, models: Any, size: tuple[int, int], common: dict[str, Any]) -> Any:
        if not isinstance(models, nn.Module):
            raise InvalidArgumentError(f"{self.command} takes one model, got an ensemble of {len(models)}")
        recipes = import_recipes()
        kwargs = dict(common, size=size, param_kind=self.param, precision=self.precision)
        if self.transforms == "standard":
            from . import transforms as tf_lib

            kwargs["transforms"] = tf_lib.standard()  # paired: the source image gets the same draw
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if self.command == "caricature":
            return recipes.caricature(models, self.image, list(self.layers), **kwargs)
        return recipes.accentuate(models, self.image, self.objective, **kwargs)


def _image_size(path: Any) -> tuple[int, int]:
    from PIL import Image

    from .errors import ImageError

    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, ValueError) as e:
        raise ImageError(f"cannot read image file {str(path)!r}: {e}") from None


def import_recipes() -> Any:
    """`lucent_dsl.recipes`, or a LucentError saying it is not there yet."""
    try:
        from . import recipes  # type: ignore[attr-defined]
    except ImportError as e:
        if getattr(e, "name", None) not in ("lucent_dsl.recipes", None):
            raise
        raise LucentError("caricature and accentuate need lucent_dsl.recipes, which this install does not have") from None
    return recipes


def plan_channels(plan: Any) -> int:
    """Colour channels of the rendered image: render's rule (3, or 1 when every model reads grey)."""
    channels = max((info.channels for info in plan.infos.values()), default=3)
    return min(3, channels)


def make_param(kind: str, size: tuple[int, int], batch: int, channels: int) -> Any:
    """The parameterization a recipe names; None for "fft" (render's default, which it caches)."""
    from . import param as param_lib

    if kind == "fft":
        return None
    return param_lib.image(size, kind=kind, batch=batch, channels=channels)


def make_transforms(kind: str) -> Any:
    """The transforms a recipe names: None (render's `standard()`), or [] for none."""
    return None if kind == "standard" else []

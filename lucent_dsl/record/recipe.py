"""`Recipe`: everything that decides a render's pixels, as one JSON value (the record a PNG carries).

A recipe holds the objective as DSL text, the models as spec strings, and every setting that
changes the pixels (size, steps, seed, parameterization, transforms, lr, batch, precision).
`lucent-dsl` writes it into each PNG it saves (under `io.RECIPE_KEY`), so
`lucent-dsl render --recipe image.png` replays the image: bit for bit on the CPU with the same
torch build. Where the run happens (`device`) and whether the step is compiled are not part of
a recipe; compiled and eager steps can differ in the last bits.

A recipe is data: it names models by spec (see `specs`). `Recipe.run` builds them only as the
trust rule allows (`Recipe.check_trusted`, `lucent_dsl.record.trust`): by default zoo models and
torchvision/timm architectures with random weights, no Python file, no download, no input image
read, and settings within `resources.CAPS`. Recipes are read from PNG, JPEG and WebP metadata
without decoding the pixels (`io.read_metadata`).

Example:
    >>> r = Recipe(objective="channel('features.14', 10)", steps=64)
    >>> Recipe.from_json(r.to_json()) == r
    True
"""
from __future__ import annotations

import dataclasses as dc
import functools as ft
import json
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..args import check_choice, check_int, check_seed, check_size
from ..dsl.parser import parse
from ..dsl.printing import to_text
from ..errors import InvalidArgumentError
from ..models.hardware import resolve_precision
from ..models.info import device_of, info_of
from ..models.specs import build_models, default_size, first_model, normalize_spec, parse_spec
from ..transforms.recipes import NAMED
from . import trust
from .resources import check_model_specs, check_threads

FORMAT = 1
"""Version of the recipe JSON layout (the `lucent_dsl_recipe` key)."""

COMMANDS = ("render", "caricature", "accentuate")
PARAMS = ("fft", "pixel", "maco")
TRANSFORMS = NAMED  # the names `transforms.named` builds
PRESETS = ("lucid", "deepinversion", "plugin", "maco", "robust", "prior", "robust_ensemble")
"""The named render presets a recipe may record (`lucent_dsl.renderer.presets.PRESETS`, the one table)."""
PRECISIONS = ("auto", "fp32", "bf16")
SCORE_KEY = "lucent_dsl.score"
"""PNG metadata key of an image's final score (written next to `io.RECIPE_KEY`)."""
# Keys written for information only; reading ignores them. "interrupted": {"steps_done", "steps_asked"}
# of an image saved after Ctrl-C (its "steps" are the steps done, so it replays exactly).
_INFO_KEYS = ("torch", "lucent_dsl_recipe", "interrupted", "lucent_dsl")
SUPPLIED_KEYS = ("name", "class", "weights")
"""The keys of each entry of a recipe's `supplied` models in its JSON."""
MAX_RECIPE_BYTES = 16 * 2**20
_DEFAULT_BETAS = (0.9, 0.999)  # torch.optim.Adam's (renderer.schedule.DEFAULT_BETAS)
_SCHEDULES = ("constant", "cosine", "warmup_cosine")  # renderer.schedule.SCHEDULES


# --- the recipe value ----------------------------------------------------------------------------


@dc.dataclass(frozen=True)
class Recipe:
    """Everything that decides a render's pixels. A frozen value; `to_json`/`from_json` round-trip it.

    Attributes:
        objective: DSL text (canonical form, `repr(parse(text))`); None for `caricature`.
        models: model specs (see `build_models`); empty means `(zoo.DEFAULT,)`.
        size: (H, W) of the rendered image; None: the first model's input size, else 224.
        steps, seed, lr, batch: as in `render`.
        param: "fft", "pixel" or "maco" (`param.maco(standardize=True)`; see `lucent_dsl.param`).
        transforms: "standard" (`transforms.standard()`; for caricature/accentuate, applied paired
            to the source image too), "robust" (`transforms.robust()`), "scaled" (`transforms.scaled(size)`),
            "maco" (`transforms.maco_crops()`) or "none".
        precision: "fp32" or "bf16" (what ran); "auto" until `resolved` (the render's rule decides).
        command: "render", "caricature" or "accentuate" (the last two call `lucent_dsl.toolbox.inversion`).
        image: the input image of caricature/accentuate (an absolute path).
        layers: the layers of a caricature.
        supplied: the models the recipe cannot build, which whoever replays it supplies: (name in the plan,
            class, `models.checks.weights_fingerprint`) each. A Python render of a module of your own records
            it so (`renderer.provenance`); `run` then needs the models given (`recipe.run(models)`,
            `lucent-dsl render --recipe FILE --model SPEC`) and warns when their weights are not the recorded ones.
        schedule: the learning-rate schedule as text: "constant", "cosine" or "warmup_cosine:FRACTION"
            (`lucent_dsl.renderer.schedule`).
        betas: the default Adam's (beta1, beta2).
        preset: the render preset that ran (`lucent_dsl.renderer.presets`): "lucid" (the default, left out of
            the JSON, so files written before presets read and replay as before), "deepinversion", "plugin",
            "maco", "robust" or "prior". The fields above record the values that ran; the preset adds what they
            cannot name (its optimizer, prior terms and augmented copies).
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
    decay_power: float = 1.0
    threads: int | None = None
    supplied: tuple[tuple[str, str, str], ...] = ()
    schedule: str = "constant"
    betas: tuple[float, float] = _DEFAULT_BETAS
    preset: str = "lucid"

    def __post_init__(self) -> None:
        object.__setattr__(self, "supplied", _supplied(self.supplied))
        check_choice("command", self.command, COMMANDS, where="recipe")
        if self.objective is not None:
            if not isinstance(self.objective, str):
                raise InvalidArgumentError(f"recipe: objective must be DSL text, got {type(self.objective).__name__}")
            object.__setattr__(self, "objective", to_text(parse(self.objective)))
        elif self.command != "caricature":
            raise InvalidArgumentError(f"recipe: a {self.command} needs an objective")
        if not isinstance(self.models, (list, tuple)) or not all(isinstance(m, str) for m in self.models):
            raise InvalidArgumentError(f"recipe: models must be a list of spec strings, got {self.models!r}")
        object.__setattr__(self, "models", tuple(self.models))
        for m in self.models:
            parse_spec(m)
        if self.size is not None:
            object.__setattr__(self, "size", check_size(self.size, where="recipe"))
        object.__setattr__(self, "steps", check_int("steps", self.steps, where="recipe"))
        object.__setattr__(self, "seed", check_seed(self.seed, "recipe: seed"))
        check_choice("param", self.param, PARAMS, where="recipe")
        check_choice("transforms", self.transforms, TRANSFORMS, where="recipe")
        check_choice("precision", self.precision, PRECISIONS, where="recipe")
        if (isinstance(self.decay_power, bool) or not isinstance(self.decay_power, numbers.Real)
                or not (math.isfinite(self.decay_power) and 0 <= self.decay_power <= 4)):
            raise InvalidArgumentError(f"recipe: decay_power must be a number in [0, 4], got {self.decay_power!r}")
        object.__setattr__(self, "decay_power", float(self.decay_power))
        if self.threads is not None:
            object.__setattr__(self, "threads", check_int("threads", self.threads, where="recipe"))
            check_threads(self.threads, "recipe: threads")
        if (
            isinstance(self.lr, bool)
            or not isinstance(self.lr, numbers.Real)
            or not (math.isfinite(self.lr) and self.lr > 0)
        ):
            raise InvalidArgumentError(f"recipe: lr must be a positive finite number, got {self.lr!r}")
        object.__setattr__(self, "lr", float(self.lr))
        object.__setattr__(self, "batch", check_int("batch", self.batch, where="recipe"))
        if self.image is not None and not isinstance(self.image, str):
            raise InvalidArgumentError(f"recipe: image must be a path (text), got {self.image!r}")
        if self.command != "render" and self.image is None:
            raise InvalidArgumentError(f"recipe: a {self.command} needs an image")
        if self.command == "caricature" and not self.layers:
            raise InvalidArgumentError("recipe: a caricature needs layers")
        if not isinstance(self.layers, (list, tuple)) or not all(isinstance(s, str) for s in self.layers):
            raise InvalidArgumentError(f"recipe: layers must be a list of layer names, got {self.layers!r}")
        object.__setattr__(self, "layers", tuple(self.layers))
        _check_schedule(self.schedule)
        _check_betas(self)
        check_choice("preset", self.preset, PRESETS, where="recipe")

    # --- JSON ------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; fields at their defaults for another command are left out."""
        d: dict[str, Any] = {"lucent_dsl_recipe": FORMAT, "command": self.command}
        for f in dc.fields(self):
            v = getattr(self, f.name)
            if f.name == "command" or (f.name in ("image", "layers", "supplied") and not v):
                continue
            if f.name == "supplied":
                v = [dict(zip(SUPPLIED_KEYS, entry)) for entry in v]
            if (f.name, v) in (("schedule", "constant"), ("betas", _DEFAULT_BETAS), ("preset", "lucid")):
                continue  # the defaults stay out, so files written before these fields read the same
            d[f.name] = list(v) if isinstance(v, tuple) else v
        d["torch"] = torch.__version__
        d["lucent_dsl"] = library_version()
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
        """Read a recipe from a JSON file, or from the metadata of a PNG, JPEG or WebP that lucent-dsl
        wrote (pixels are not decoded). Nothing is built: see `check_trusted` and `run`."""
        from ..io import RECIPE_KEY, read_metadata
        from ..io.metadata import sniff

        p = Path(path)
        if not p.is_file():
            why = "is not a regular file (a folder, a FIFO, a device)" if p.exists() else "does not exist"
            raise InvalidArgumentError(f"recipe file {str(p)!r} {why}")
        if sniff(p) is not None:
            meta = read_metadata(p)
            if RECIPE_KEY not in meta:
                raise InvalidArgumentError(f"{str(p)!r} carries no lucent_dsl recipe (no {RECIPE_KEY!r} metadata)")
            return cls.from_json(meta[RECIPE_KEY])
        if p.stat().st_size > MAX_RECIPE_BYTES:
            raise InvalidArgumentError(
                f"{str(p)!r} is {p.stat().st_size} bytes: not a recipe (at most {MAX_RECIPE_BYTES})"
            )
        return cls.from_json(p.read_bytes())

    def replace(self, **changes: Any) -> Recipe:
        """A copy with `changes` applied (None values are ignored, so CLI defaults pass through)."""
        return dc.replace(self, **{k: v for k, v in changes.items() if v is not None})

    # --- running -----------------------------------------------------------------------------------

    run: ClassVar[Callable[..., Any]]
    """`recipe.run(models=None, *, device, compile, progress, thresholds, callback, allow)`: render this recipe
    and return the `RenderResult` (`lucent_dsl.replay.run`). Running sits above the renderer, so the runner
    is attached to the class there, and `import lucent_dsl` imports it."""

    def check_trusted(self, allow: str | Sequence[str] | None = None, *, source: str | None = None,
                      models: bool = True, image: bool = True) -> None:
        """Refuse what this recipe asks for unless `allow` names its kind (`lucent_dsl.record.trust.check`):
        a Python file (`file`), a download (`download`), its input image (`image`), settings above
        the caps (`large`). `models`/`image` False: the caller replaces the recipe's own.

        Raises:
            UntrustedRecipeError: the message lists every ask and how to allow it.
            InvalidArgumentError: a setting above `resources.CAPS`.
        """
        trust.check(self, allow, source=source, models=models, image=image)

    def build_models(self, *, device: str | torch.device | None = None,
                     allow: str | Sequence[str] | None = None) -> nn.Module | dict[str, nn.Module]:
        """The models the recipe names (see `build_models`), once the trust rule allows them.

        Raises:
            UntrustedRecipeError: a file spec or a download that `allow` does not name.
        """
        self.check_trusted(allow, image=False)
        if self.supplied:
            raise InvalidArgumentError(supply_message(self))
        check_model_specs(self.models, device=device, allow=allow or ())
        return build_models(self.models, device=device)

    def resolved(self, models: nn.Module | Mapping[str, nn.Module]) -> Recipe:
        """The recipe with `size`, `models` and `precision` filled in, as it is stored next to an image.

        `precision="auto"` becomes what a render of these models on their device runs (`hardware.resolve_precision`,
        the render's own rule), so the file records what ran and replays the same on any machine.
        """
        from ..zoo import DEFAULT as DEFAULT_MODEL  # imported when used: `import lucent_dsl` leaves zoo fresh

        size = self.size
        if size is None and self.command != "render" and info_of(first_model(models)).input_size is None:
            size = _image_size(self.image)  # the recipes' own default: the image's size
        size = size or default_size(models)
        mods = list(models.values()) if isinstance(models, Mapping) else [models]
        precision = resolve_precision(self.precision, mods, device_of(mods[0]), size, self.images)
        named = self.models or (() if self.supplied else (DEFAULT_MODEL,))  # supplied models are not the zoo's
        return dc.replace(self, size=size, models=tuple(normalize_spec(m) for m in named), precision=precision)

    @property
    def images(self) -> int:
        """How many images a run of this recipe renders: one per caricature layer, one accentuated, else `batch`."""
        if self.command == "caricature":
            return len(self.layers)
        return 1 if self.command == "accentuate" else self.batch


def _supplied(entries: Any) -> tuple[tuple[str, str, str], ...]:
    """`supplied` as tuples, from tuples or from its JSON (a list of {"name", "class", "weights"} objects)."""
    if isinstance(entries, (str, Mapping)) or not isinstance(entries, Sequence):
        raise InvalidArgumentError(f"recipe: supplied must be a list of {{name, class, weights}}, got {entries!r}")
    out = []
    for e in entries:
        fields = tuple(e.get(k) for k in SUPPLIED_KEYS) if isinstance(e, Mapping) else e
        if (isinstance(e, Mapping) and set(e) != set(SUPPLIED_KEYS)) or isinstance(fields, str) \
                or not isinstance(fields, Sequence) or len(fields) != 3 or not all(isinstance(f, str) for f in fields):
            raise InvalidArgumentError(f"recipe: each supplied model is {{name, class, weights}} text, got {e!r}")
        out.append(tuple(fields))
    return tuple(out)  # type: ignore[return-value]


def supply_message(recipe: Recipe) -> str:
    """What to do with a recipe whose models are to be supplied: give them."""
    listed = ", ".join(f"{name!r} (a {cls}, weights fingerprint {fp})" for name, cls, fp in recipe.supplied)
    return (f"the recipe was rendered from a module of your own, which it cannot build: {listed}. Supply it: "
            "recipe.run(model) in Python (a mapping name -> module for several), or lucent-dsl render --recipe FILE "
            "--model SPEC (e.g. --model path/to/file.py:factory)")


@ft.cache
def library_version() -> str:
    """lucent_dsl's installed version (recorded in every recipe, for information), or "unknown"."""
    from importlib import metadata

    try:
        return metadata.version("lucent_dsl")
    except metadata.PackageNotFoundError:
        return "unknown"
def _check_schedule(text: Any) -> None:
    """The schedule text `renderer.schedule.Schedule.text` writes (the renderer checks it again when it runs)."""
    kind, _, warmup = text.partition(":") if isinstance(text, str) else ("", "", "")
    check_choice("schedule", kind, _SCHEDULES, where="recipe")
    if warmup or kind == "warmup_cosine":
        try:
            fraction = float(warmup)
        except ValueError:
            fraction = math.nan
        if kind != "warmup_cosine" or not 0 < fraction < 1:
            raise InvalidArgumentError(f"recipe: schedule {text!r}; a warm-up fraction in (0, 1) goes with "
                                       "'warmup_cosine' only, e.g. 'warmup_cosine:0.1'")


def _check_betas(recipe: Recipe) -> None:
    betas = recipe.betas
    if (isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or len(betas) != 2
            or not all(isinstance(b, numbers.Real) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)):
        raise InvalidArgumentError(f"recipe: betas must be two numbers in [0, 1), got {betas!r}")
    object.__setattr__(recipe, "betas", (float(betas[0]), float(betas[1])))


def _image_size(path: Any) -> tuple[int, int]:
    from ..io import image_size

    return image_size(path)  # from the header: ImageError for unreadable or too large images

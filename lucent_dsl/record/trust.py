"""The recipe trust rule: a recipe read from a file is data, so it may not run code, download or read files.

Images carry their recipes, and people share images. So by default a recipe (`Recipe.run`,
`lucent-dsl render --recipe FILE`) may build only

- `lucent_dsl.zoo` models (their weights come from `python -m lucent_dsl.zoo install`), and
- torchvision and timm architectures with random weights (no `weights=` other than `none`, no
  `pretrained=true`, and not the torchvision models that fetch a pretrained backbone anyway),

and it reads no file. Everything else is an *ask*, and runs only when the user allows its kind:

| kind       | what the recipe asks for                                    |
| ---------- | ----------------------------------------------------------- |
| `file`     | import a Python file and call a function in it (`file.py:factory`); read a model folder (`hf:./folder`) |
| `download` | download weights (torchvision `weights=`, timm `pretrained=true`, open_clip tags, `hf:ORG/NAME`) |
| `image`    | read the input image of a caricature/accentuate recipe      |
| `large`    | settings above `resources.CAPS` (steps, size, batch, GIF frames) |
| `memory`   | a render estimated to need more memory than the machine has (`resources.check_memory`) |

The last two apply to settings typed on the command line too. On the command line: `--allow file,download,image` (any
    subset), or `--model SPEC` / `--image PATH`,
which replace the recipe's models / image with ones the user names. In Python:
`recipe.run(allow={"file"})`. `check` refuses with `UntrustedRecipeError`, whose message lists
every ask and how to allow it.

Example:
    >>> from lucent_dsl.replay import Recipe
    >>> [a.kind for a in asks(Recipe(objective="channel('0', 1)", models=("torchvision:resnet18:weights=DEFAULT",)))]
    ['download']
    >>> check(Recipe(objective="channel('0', 1)", models=("torchvision:resnet18",)))  # random weights: fine
"""
from __future__ import annotations

import dataclasses as dc
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError, LucentError
from ..models.specs import ModelSpec, is_local_folder, parse_spec

KINDS = ("file", "download", "image", "large", "memory")
"""What the user may allow (see the module docstring); a recipe's asks are of the first three kinds."""
_TRUE = ("1", "true", "yes")


class UntrustedRecipeError(LucentError, PermissionError):
    """A recipe asks to run code, download weights or read a file, and the user did not allow it."""


@dc.dataclass(frozen=True)
class Ask:
    """One thing a recipe asks for: its `kind` (one of `KINDS`), the spec or path, and what it would do."""

    kind: str
    what: str
    does: str


def parse_allow(allow: str | Iterable[str] | None) -> frozenset[str]:
    """`"file,download"`, `["image"]`, `"all"` or None -> the set of allowed kinds.

    Raises:
        InvalidArgumentError: an unknown kind (the message lists them).

    Example:
        >>> sorted(parse_allow("file, image"))
        ['file', 'image']
    """
    if allow is None:
        return frozenset()
    items = allow.split(",") if isinstance(allow, str) else [p for a in allow for p in str(a).split(",")]
    out = {a.strip().lower() for a in items if a.strip()}
    if "all" in out:
        out = (out - {"all"}) | set(KINDS)
    return frozenset(out)


def _file_ask(spec: ModelSpec, text: str) -> Ask:
    path, factory = spec.target.rsplit(":", 1)
    where = Path(path).expanduser()
    resolved = where.resolve()
    rel = "" if where.is_absolute() else f" (relative to the current folder, {str(Path.cwd())!r})"
    return Ask("file", text, f"imports {str(resolved)!r}{rel} and calls its {factory}()")


def _torchvision_download(spec: ModelSpec) -> str | None:
    weights = dict(spec.options).get("weights", "none")
    if weights.lower() != "none":
        return f"downloads torchvision's {weights} weights of {spec.target}"
    import inspect

    from torchvision import models as tvm

    try:
        builder = tvm.get_model_builder(spec.target)
    except ValueError:
        return None  # unknown architecture: building it fails with its own message
    backbone = inspect.signature(builder).parameters.get("weights_backbone")
    if backbone is not None and backbone.default is not None:
        return (
            f"downloads the pretrained backbone ({backbone.default}) that torchvision's {spec.target} loads by default"
        )
    return None


def model_asks(specs: Iterable[str]) -> list[Ask]:
    """The asks of some model specs (zoo names and random-weight architectures ask nothing)."""
    out = []
    for text in specs:
        s = parse_spec(text)
        if s.kind == "file":
            out.append(_file_ask(s, text))
        elif s.kind == "torchvision":
            does = _torchvision_download(s)
            if does:
                out.append(Ask("download", text, does))
        elif s.kind == "timm" and dict(s.options).get("pretrained", "false").lower() in _TRUE:
            out.append(Ask("download", text, f"downloads timm's pretrained weights of {s.target}"))
        elif s.kind == "open_clip" and dict(s.options).get("pretrained", "none").strip().lower() != "none":
            tag = dict(s.options)["pretrained"]
            out.append(Ask("download", text, f"downloads open_clip's {tag} weights of {s.target}"))
        elif s.kind == "hf":
            out.append(_hf_ask(s, text))
    return out


def _hf_ask(spec: ModelSpec, text: str) -> Ask:
    """An `hf:` spec always loads weights: from a folder (a `file` ask: it reads files) or from the Hub (`download`)."""
    if is_local_folder(spec.target):
        where = Path(spec.target).expanduser().resolve()
        return Ask("file", text, f"reads the Hugging Face model folder {str(where)!r} (its config and weights)")
    return Ask("download", text, f"downloads {spec.target!r} (config, weights, image processor) from the Hugging "
                                 "Face Hub")


def asks(recipe: Any, *, models: bool = True, image: bool = True) -> list[Ask]:
    """Everything `recipe` asks for; `models`/`image` False leave out what the caller replaces."""
    out = model_asks(recipe.models) if models else []
    if image and recipe.image is not None:
        out.append(Ask("image", str(recipe.image), f"reads the image file {str(recipe.image)!r}"))
    return out


def check(recipe: Any, allow: str | Iterable[str] | None = None, *, source: str | None = None,
          models: bool = True, image: bool = True) -> None:
    """Refuse `recipe` unless every one of its asks is of an allowed kind, and its settings are within
    `resources.CAPS` (unless "large" is allowed). This is the one place the rule lives.

    Args:
        recipe: a `Recipe`.
        allow: kinds the user allows (see `parse_allow`).
        source: where the recipe was read from, for the message.
        models, image: False when the caller replaces the recipe's models / image with its own.

    Raises:
        UntrustedRecipeError: the message lists each refused ask and how to allow it.
        InvalidArgumentError: an unknown kind in `allow`, or a setting above the caps.
    """
    allowed = parse_allow(allow)
    unknown = sorted(allowed - set(KINDS))
    if unknown:
        raise InvalidArgumentError(f"--allow {','.join(unknown)}: unknown; one can allow: {', '.join(KINDS)}, or all")
    from .resources import check_caps

    check_caps(steps=recipe.steps, size=recipe.size, batch=recipe.batch, allow="large" in allowed,
               what=f"the recipe{f' in {source!r}' if source else ''}: ")
    refused = [a for a in asks(recipe, models=models, image=image) if a.kind not in allowed]
    if not refused:
        return
    kinds = sorted({a.kind for a in refused}, key=KINDS.index)
    listed = "; ".join(f"[{a.kind}] {a.what!r} {a.does}" for a in refused)
    instead = []
    if {"file", "download"} & set(kinds):
        instead.append("--model SPEC to use a model you name")
    if "image" in kinds:
        instead.append("--image PATH to use an image you name")
    raise UntrustedRecipeError(
        f"the recipe{f' in {source!r}' if source else ''} asks for what a recipe may not do by default: {listed}. "
        "A recipe is data: it may build zoo models and torchvision/timm architectures with random weights, "
        f"and read no file. If you trust it, allow this: --allow {','.join(kinds)} "
        f"(in Python: recipe.run(allow={','.join(kinds)!r})); or give {' and '.join(instead)}"
    )

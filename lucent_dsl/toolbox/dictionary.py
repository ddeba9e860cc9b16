"""Dictionaries of directions: render every atom of a dictionary as a direction objective.

A dictionary is a (K, C) matrix whose rows are directions in a layer's channel space: a
sparse autoencoder's decoder matrix, NMF components, concept vectors (CAVs, Overcomplete's
concepts). `render_dictionary` renders each atom as `direction(layer, atom)` (or
`direction_neuron` at the centre), `batch` atoms per run, on (B, C, H, W) maps and (B, tokens,
C) sequences alike; each atom has its own seed, so its PNG carries a recipe that replays it
alone. With `examples=` (a dataset) each atom also gets its top dataset examples, found by
`lucent_dsl.dataset_examples` when that module is there (else by a plain streaming pass).

`load_dictionary` reads a tensor, a numpy array, or a `.pt` / `.pth` / `.npy` / `.safetensors`
file (a dict of tensors needs `key=` unless it holds exactly one 2-D tensor). Decoder layouts
differ: an SAE's `W_dec` is (K, C) (rows are atoms), an `nn.Linear` decoder's weight is (C, K)
(columns are atoms): say `atoms="columns"`. A matrix that fits only the other way is refused
with that hint rather than silently transposed.

Example:
    >>> import torch
    >>> d = orient(torch.eye(3)[:2], 3)                 # two atoms in a 3-channel layer
    >>> d.shape
    torch.Size([2, 3])
"""
from __future__ import annotations

import dataclasses as dc
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..args import check_int
from ..atlas import channel_seed
from ..dsl.printing import to_text
from ..errors import InvalidArgumentError, ObjectiveShapeError
from ..io.files import RECIPE_KEY, atomic_write, make_grid, save_png
from ..io.tensors import load_tensor_file
from ..objectives import check_layer, direction, direction_neuron
from ..plan.probe import channel_count
from ..record.recipe import SCORE_KEY
from ._common import Settings, as_rows, direction_scores, layer_outputs, render_each, require, settings_from

ATOMS = ("rows", "columns")
OBJECTIVES = ("channel", "neuron")


def load_dictionary(source: Any, *, key: str | None = None) -> Tensor:
    """A dictionary as a 2-D float32 tensor on the CPU, from a tensor, an array or a file.

    Raises:
        InvalidArgumentError: a missing file, an unknown suffix, no (or several) 2-D tensors in a dict
            without `key=`, a shape other than 2-D, non-finite values.
        MissingExtraError: a `.safetensors` file without the `safetensors` package.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InvalidArgumentError(f"dictionary file {str(path)!r} does not exist")
        suffix = path.suffix.lower()
        if suffix in (".pt", ".pth", ".bin", ".npy"):  # damaged files and pickles of more: InvalidArgumentError
            obj: Any = load_tensor_file(path, what="dictionary file", error=InvalidArgumentError)
        elif suffix == ".safetensors":
            obj = require("safetensors.torch", package="safetensors", what="reading .safetensors").load_file(str(path))
        else:
            raise InvalidArgumentError(f"dictionary file {str(path)!r}: expected .pt, .pth, .npy or .safetensors")
        return load_dictionary(obj, key=key)
    if isinstance(source, dict):
        if key is not None:
            if key not in source:
                raise InvalidArgumentError(f"dictionary: no key {key!r}; the file holds {sorted(source)}")
            return load_dictionary(source[key])
        mats = [k for k, v in source.items() if isinstance(v, (Tensor, np.ndarray)) and v.ndim == 2]
        if len(mats) != 1:
            raise InvalidArgumentError(
                f"dictionary: give key= to pick the matrix; 2-D entries: {mats or 'none'} (an SAE's decoder is often "
                "'W_dec' or 'decoder.weight')"
            )
        return load_dictionary(source[mats[0]])
    if isinstance(source, np.ndarray):
        source = torch.from_numpy(np.asarray(source, dtype=np.float32))
    if not isinstance(source, Tensor):
        raise InvalidArgumentError(
            f"a dictionary must be a tensor, an array, a dict of them or a file, got {type(source).__name__}")
    if source.dim() != 2 or 0 in source.shape:
        raise InvalidArgumentError(
            f"a dictionary must be a non-empty 2-D matrix (atoms x channels), got shape {tuple(source.shape)}")
    d = source.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(d).all()):
        raise InvalidArgumentError("the dictionary contains NaN or infinite values")
    return d


def orient(d: Tensor, channels: int, atoms: str = "rows") -> Tensor:
    """The atoms of `d` as rows of a (K, channels) matrix; `atoms="columns"` transposes a (channels, K) one."""
    if atoms not in ATOMS:
        raise InvalidArgumentError(f"atoms must be one of {ATOMS}, got {atoms!r}")
    m = d if atoms == "rows" else d.T
    if m.shape[1] != channels:
        other = d.T if atoms == "rows" else d
        hint = (f"; its {'columns' if atoms == 'rows' else 'rows'} fit: pass atoms="
                f"{'columns' if atoms == 'rows' else 'rows'!r}") if other.shape[1] == channels else ""
        raise ObjectiveShapeError(f"the dictionary's {atoms} have {m.shape[1]} values, but the layer has {channels} "
                                  f"channels (dictionary shape {tuple(d.shape)}){hint}")
    return m


def nmf_dictionary(model: nn.Module, images: Any, layer: str, k: int, *, seed: int = 0, max_iter: int = 500) -> Tensor:
    """A (k, C) dictionary: NMF of `layer`'s activations at every position of every image, unit rows.

    Raises:
        InvalidArgumentError: negative activations (pick a layer after a ReLU).
    """
    k = check_int("k", k)
    rows = [as_rows(a, layer).float().cpu().transpose(1, 2).reshape(-1, as_rows(a, layer).shape[1])
            for a in layer_outputs(model, images, layer)]
    x = torch.cat(rows).double()
    if float(x.min()) < 0:
        raise InvalidArgumentError(f"NMF needs non-negative activations; {layer!r} goes down to {float(x.min()):.4g} "
                                   "(pick a layer after a ReLU)")
    decomposition = require("sklearn.decomposition", package="scikit-learn", what="an NMF dictionary")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: the atoms are still usable
        h = torch.from_numpy(decomposition.NMF(k, init="nndsvda", random_state=int(seed), max_iter=max_iter)
                             .fit(x.numpy()).components_)
    return (h / h.norm(dim=1, keepdim=True).clamp(min=1e-12)).float()


@dc.dataclass(frozen=True, eq=False)
class DictionaryRenders:
    """Every rendered atom: the atoms (K, C), images, scores, DSL objectives, seeds, and dataset examples."""

    layer: str
    indices: tuple[int, ...]
    atoms: Tensor
    images: Tensor
    scores: Tensor
    objectives: tuple[str, ...]
    seeds: tuple[int, ...]
    settings: Settings
    examples: tuple[tuple[int, ...], ...] | None = None

    def grid(self) -> Any:
        return make_grid(self.images, labels=[f"atom {i}" for i in self.indices])

    def save(self, out_dir: str | Path, *, spec: str | None = None) -> Path:
        """Write atom_<index>.png (with recipes when `spec` names the model), grid.png and manifest.json."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        entries = []
        for i, (atom, text, seed) in enumerate(zip(self.indices, self.objectives, self.seeds)):
            recipe = self.settings.recipe(text, seed, spec)
            name = f"atom_{atom:05d}.png"
            meta = {SCORE_KEY: repr(float(self.scores[i]))}
            meta.update({RECIPE_KEY: recipe.to_json()} if recipe is not None else {"lucent_dsl.objective": text})
            save_png(out / name, self.images[i:i + 1], metadata=meta)
            entries.append({"atom": atom, "file": name, "score": float(self.scores[i]), "seed": seed,
                            "examples": None if self.examples is None else list(self.examples[i])})
        save_png(out / "grid.png", self.grid())
        with atomic_write(out / "manifest.json", "w") as f:
            json.dump({"kind": "dictionary", "layer": self.layer, "model": spec, "atoms": entries}, f, indent=1)
        return out / "manifest.json"


def render_dictionary(
    model: nn.Module,
    layer: str,
    dictionary: Any,
    *,
    atoms: str = "rows",
    key: str | None = None,
    indices: Sequence[int] | None = None,
    objective: str = "channel",
    cossim_pow: float = 1.0,
    examples: Any = None,
    k: int = 6,
    settings: Settings | None = None,
    **render_kw: Any,
) -> DictionaryRenders:
    """Render atoms of `dictionary` (all, or `indices`) as direction objectives at `layer`.

    Args:
        dictionary: a tensor, array or file (see `load_dictionary`); `key=` picks a dict entry.
        atoms: "rows" (K, C) or "columns" (C, K).
        objective: "channel" (`direction`, mean over positions) or "neuron" (`direction_neuron`).
        cossim_pow: the cosine exponent of the objectives (rewards the atom's direction over its size).
        examples: a dataset ((N, C, H, W) in [0, 1]) whose top-`k` images per atom are listed.
        settings: the atom renders (`toolbox.Settings`: size, steps, lr, param, transforms, precision, seed,
            batch of atoms per render, device, compile, progress); "auto" precision is decided once for every
            atom (`Settings.resolved`).
        **render_kw: the same fields as keywords (`size=`, `steps=`, ...), the form before `settings=`;
            beside `settings` they must agree with it.

    Raises:
        InvalidArgumentError, ObjectiveShapeError, LayerNotFoundError: before anything renders.

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> r = render_dictionary(net, "1", torch.eye(4)[:2], settings=Settings(size=12, steps=2, progress=False))
        >>> r.images.shape, r.indices
        (torch.Size([2, 3, 12, 12]), (0, 1))
    """
    layer = check_layer(layer)
    if objective not in OBJECTIVES:
        raise InvalidArgumentError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    settings = settings_from(settings, render_kw, where="render_dictionary()").resolved(model)
    d = orient(load_dictionary(dictionary, key=key), channel_count(model, layer, settings.size), atoms)
    chosen = tuple(range(d.shape[0])) if indices is None else tuple(int(i) for i in indices)
    bad = [i for i in chosen if not 0 <= i < d.shape[0]]
    if bad or not chosen:
        raise InvalidArgumentError(
            f"atom indices {bad or 'none'}: the dictionary has {d.shape[0]} atoms (0..{d.shape[0] - 1})"
        )
    vecs = d[list(chosen)]
    make = direction if objective == "channel" else direction_neuron
    texts = tuple(to_text(make(layer, v, cossim_pow=float(cossim_pow))) for v in vecs)
    seeds = tuple(channel_seed(f"{layer}#dictionary", i, settings.seed) for i in chosen)
    images, scores = render_each(texts, seeds, model, settings)
    found = None if examples is None else top_examples(model, layer, vecs, examples, k=k, objectives=texts)
    return DictionaryRenders(layer, chosen, vecs, images, scores, texts, seeds, settings, found)


def top_examples(model: nn.Module, layer: str, vectors: Tensor, images: Any, *, k: int = 6,
                 objectives: Sequence[str] | None = None) -> tuple[tuple[int, ...], ...]:
    """For each vector, the indices of the `k` images of `images` that drive it most (highest first).

    Uses `lucent_dsl.dataset_examples` (one truncated pass for all atoms, the same interpreter as
    a render) when it is installed and `objectives` are given; otherwise the mean over positions of
    dot(activation, unit vector) (`direction_scores`).
    """
    k = check_int("k", k)
    if objectives is not None and importlib.util.find_spec("lucent_dsl.dataset_examples") is not None:
        from ..dataset_examples import dataset_examples

        found = dataset_examples(list(objectives), model, images, k=k, progress=False)
        return tuple(tuple(e.index for e in unit.top) for unit in found.units)
    scores = direction_scores(model, images, layer, vectors)
    top = torch.topk(scores, min(k, scores.shape[0]), dim=0).indices.T
    return tuple(tuple(int(i) for i in row) for row in top)

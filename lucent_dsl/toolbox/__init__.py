"""The research toolbox: activation atlases, neuron groups, style and texture, the MACO method, dictionaries.

The methods that the Distill articles and Lucid made famous, written as objectives + `render`:

- `activation_atlas` (Carter et al. 2019): a dataset's activations at one layer, laid out in 2-D,
  binned into a grid, each cell's mean activation rendered as a direction.
- `neuron_groups` (Olah et al. 2018): NMF of a layer's activations on one image into k groups,
  each rendered, each with its spatial map over the image.
- `texture`, `style_transfer` (Gatys et al.): the `style(layer, image)` term, a Gram-matrix match.
- `maco_method` (Fel et al. 2023, as xplique): phase-only Fourier under a natural magnitude,
  random shrinking crops, noise, NAdam, and a transparency map.
- `render_dictionary`: every atom of a dictionary (an SAE decoder, NMF components, concept
  vectors) as a direction, on maps and token sequences alike.
- `caricature`, `feature_inversion`, `accentuate` (`inversion`): an image's activations rendered back,
  exaggerated, or steered by an objective.
- `fgsm`, `pgd` (`adversarial`): adversarial examples, a baseline for `sanity`.
- `transparency_map` (`transparency`): which pixels of an RGBA render an objective needs.
- `train_probe`, `faceted`, `render_faceted` (`facets`): faceted feature visualization (Goh et al. 2021), a
  unit steered towards a theme by a linear probe at an earlier layer.
- `auto_diversity` (`diversity_weight`): IMI's diversity weight per unit (Zimmermann et al. 2023), the largest
  whose weakest image still beats the best natural image.

The 2-D layouts and NMF use scikit-learn (and optionally umap-learn): the `research` extra,
`pip install 'lucent_dsl[research]'`. They are imported when a method needs them, so the rest of
the package works without them; a missing one raises `MissingExtraError` naming the extra.
The subcommands (`lucent-dsl groups`, `activation-atlas`, `dictionary`, `texture`, `maco`) live in
`lucent_dsl.cli.toolbox`.

Example:
    >>> import torch, torch.nn as nn
    >>> from lucent_dsl import toolbox
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    >>> toolbox.collect(net, torch.rand(4, 3, 10, 10), "1", position="mean").shape
    torch.Size([4, 8])
"""
from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module that defines it. Imported on first use, so `lucent-dsl --help` (which
# imports `cli.toolbox`) and `import lucent_dsl.toolbox` stay light; no module shares a name
# with a function, so an imported submodule never shadows one.
_WHERE = {
    "MissingExtraError": "_common", "Settings": "_common", "collect": "_common", "direction_scores": "_common",
    "render_each": "_common",
    "ActivationAtlas": "activation_atlases", "Cell": "activation_atlases", "activation_atlas": "activation_atlases",
    "bin_layout": "activation_atlases", "layout_2d": "activation_atlases",
    "DictionaryRenders": "dictionary", "load_dictionary": "dictionary", "nmf_dictionary": "dictionary",
    "orient": "dictionary", "render_dictionary": "dictionary", "top_examples": "dictionary",
    "NeuronGroups": "groups", "factorize": "groups", "neuron_groups": "groups",
    "MacoResult": "maco", "maco_method": "maco",
    "gram_distances": "gatys", "style_objective": "gatys", "style_transfer": "gatys", "texture": "gatys",
    "gram": "..objectives.gram", "image_gram": "..objectives.gram", "style": "..objectives.gram",
    "accentuate": "inversion", "activations": "inversion", "caricature": "inversion", "feature_inversion": "inversion",
    "fgsm": "adversarial", "pgd": "adversarial",
    "transparency_map": "transparency",
    "FacetProbe": "facets", "faceted": "facets", "fit_logistic": "facets", "render_faceted": "facets",
    "train_probe": "facets",
    "DiversityChoice": "diversity_weight", "auto_diversity": "diversity_weight",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'lucent_dsl.toolbox' has no attribute {name!r}")
    value = getattr(importlib.import_module(where if where.startswith("..") else f".{where}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))

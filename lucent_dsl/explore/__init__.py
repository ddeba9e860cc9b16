"""`explore`: a browsable static site of a model, with dataset examples and a sanity check on every unit.

    lucent-dsl explore mobilenet_v2 --layers features.14,@output --channels 0:8 --out site/ --images photos/

Modules: `units` (what a unit is, its images as atlas jobs), `render` (rendering them with the atlas
machinery: resumable, atomic PNGs with recipes, torchrun shards), `pages` (HTML and CSS), `site`
(`explore` itself), `command` (the CLI subcommand), `browser` (headless Chromium over the DevTools
pipe, to check a site as a user's browser shows it).

Example:
    >>> from lucent_dsl.explore import Unit
    >>> Unit("features.14", 3, "channel('features.14', 3)", "features.14:3").page
    'u/features.14_0003.html'
"""
from __future__ import annotations

from .site import explore
from .units import Unit, layer_units, model_units

__all__ = ["Unit", "explore", "layer_units", "model_units"]

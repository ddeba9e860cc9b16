"""Channel atlases: one image per channel of some layers, rendered in batches where the recipe allows, resumable.

The work is a list of jobs, each `(layer, channel, seed)`. The seed comes from the layer and
the channel (and a base seed), never from where the channel lands in a batch. Every image of a
batched render draws its initial image and its random transforms from its own generator, seeded
with its job's seed, exactly as a one-image render with that seed would. Objectives of a batch
never mix (each reads only its own image, and Adam updates each value from its own gradient),
so a channel's image does not depend on which other channels share its batch (a recipe whose batch would
not render it so, `jobs.batches_like_replay`, renders alone): its PNG carries
a one-image recipe, and `lucent-dsl render --recipe DIR/<channel>.png` renders it again. (The
only difference left is floating-point: a convolution over a batch of 16 may round differently
from one over a single image; see `tests/test_cli.py` for the tolerance measured on the CPU.)

Files in the output folder, all written atomically:

- `<layer>_<channel:04d>.png`: one per channel, with its recipe and final score in PNG metadata;
- `grid.png` (one layer) or `<layer>.grid.png` (one per layer): channels in job order, labelled;
- `index.html`: every channel's image with its name (`layer:channel`) and final score;
- `manifest.json`: `{"layers": {"<layer>": {"grid", "channels": {"<c>": {"file", "score", "seed",
  "recipe"}}}}, "models", "run"}`, and for a one-layer atlas also the flat `"layer"`, `"grid"`
  and `"channels"` of format 1; rebuilt from the PNGs by `finish_atlas`.

A channel whose PNG exists (with the same recipe and the same weights fingerprint,
`checks.weights_fingerprint`, stored in each PNG and in the manifest's `"weights"`) is never rendered
again, so an interrupted atlas resumes where it stopped; a damaged PNG stops the resume with a hint.
While a run writes a folder it holds `DIR/.lucent_dsl.lock` (`atlas.lock`): a second run on the
same folder is refused at once, naming the first one's pid and host. The same split makes sharding simple:
`atlas.distributed`
runs `run_atlas` on each torchrun rank's share of the missing jobs, into the shared folder, and
rank 0 calls `finish_atlas` when all are done (`lucent-dsl atlas` does this in one process too).

Example:
    >>> jobs = atlas_jobs("features.14", range(3))
    >>> [(j.channel, j.filename) for j in jobs]
    [(0, 'features.14_0000.png'), (1, 'features.14_0001.png'), (2, 'features.14_0002.png')]
    >>> jobs[1].seed == channel_seed("features.14", 1)
    True
"""
from __future__ import annotations

from typing import Any

from .distributed import AtlasRun, RankLostError, Ranks, process_group, rank_device, ranks_from_env, render_atlas, shard
from .files import by_layer, finish_atlas, grid_filename, index_html, layer_grid, write_manifest
from .jobs import (
    FORMAT,
    GRID,
    INDEX,
    MANIFEST,
    WEIGHTS_KEY,
    AtlasJob,
    atlas_jobs,
    channel_seed,
    job_recipe,
    layers_jobs,
    parse_channels,
    pending,
    run_atlas,
    safe_name,
    seeded_param,
    seeded_transforms,
)
from .lock import FolderLockedError, folder_lock

__all__ = [
    "AtlasJob", "AtlasRun", "FORMAT", "FolderLockedError", "GRID", "INDEX", "MANIFEST", "RankLostError", "Ranks",
    "WEIGHTS_KEY", "folder_lock",
    "atlas_jobs", "by_layer", "channel_seed", "finish_atlas",
    "grid_filename", "index_html", "job_recipe", "layer_grid", "layers_jobs", "parse_channels", "pending",
    "process_group", "rank_device", "ranks_from_env", "render_atlas", "run_atlas", "safe_name",
    "seeded_param", "seeded_transforms", "shard", "write_manifest",
]

# The probe lives in `lucent_dsl.plan.probe`; these names were re-exported here before, and still work with a warning.
_MOVED = ("SiteInfo", "channel_count", "channel_counts", "default_layers", "probe", "probe_size")


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import warnings

        from ..plan import probe as probe_lib

        warnings.warn(f"lucent_dsl.atlas.{name} moved: use `from lucent_dsl.plan.probe import {name}`; "
                      "lucent_dsl.atlas no longer re-exports the probe", FutureWarning, stacklevel=2)
        return getattr(probe_lib, name)
    raise AttributeError(f"module 'lucent_dsl.atlas' has no attribute {name!r}")

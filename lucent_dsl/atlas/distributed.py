"""Atlases across processes, GPUs and machines: `torchrun ... -m lucent_dsl atlas LAYERS --out DIR`.

    torchrun --nproc-per-node=8 -m lucent_dsl atlas layer1,layer2,layer3,layer4 --model torchvision:resnet50 \
        --out atlas/
    lucent-dsl atlas layer3 --out atlas/          # no torchrun: the same code, one process

`render_atlas` is what `lucent-dsl atlas` runs, with or without torchrun. Under torchrun
(`WORLD_SIZE` > 1 in the environment) it joins a `torch.distributed` group (gloo: the ranks
only exchange a few integers on the CPU; each renders on its own device, `cuda:LOCAL_RANK` by
default when CUDA is available). Without torchrun the group is one process and every
collective below is a no-op.

How the work is split (no scheduler, nothing random):

1. Rank 0 lists the jobs whose PNG is missing (`pending`, which also refuses a folder made
   with other settings) and broadcasts that list. Rank r takes `missing[r::world_size]`, so
   a resumed atlas spreads what is left over all ranks, whichever rank died before.
2. Each rank renders its share `batch` channels at a time (`run_atlas`); each PNG is
   written atomically as soon as its batch ends, so a rank that dies loses only the batch
   it was rendering. A channel's pixels depend on its seed (from layer, channel and `--seed`),
   never on its rank or batch mates: one process and N processes give the same images.
3. After every batch all ranks meet in one small all-reduce (channels done, for rank 0's
   progress bar); a rank with no batch left keeps joining these rounds until the longest share
   is done. So a collective only ever waits for one batch, and `timeout` (the group's timeout)
   needs to exceed one batch's time (`batch` renders when its images render alone:
   `jobs.batches_like_replay`), not the whole atlas's: a dead or stuck rank stops the
   others after `timeout` at most (torchrun usually stops them at once).
4. When all shares are done, each rank writes the grids of its share of the layers (dealt
   round-robin too; `layer_grid` reads each PNG once, for its tile and its manifest entry)
   and its `manifest.rank{R}.json`: the channels it rendered (score, and the seconds since its
   start when the batch was saved), the manifest parts of its layers, `"complete": true`. (The
   file is also rewritten after each batch, to watch progress.) All ranks meet at a barrier, and
   rank 0 merges the rank manifests into `manifest.json` and `index.html` (`write_manifest`).

Rerunning the same command resumes: only missing channels are rendered, and a run with
nothing missing renders nothing and rewrites the merged files. On several machines `--out`
must be a folder that all of them see (a shared file system).

Example:
    >>> shard(list("abcdefg"), 1, 3)
    ['b', 'e']
    >>> ranks_from_env({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    Ranks(rank=1, world_size=4, local_rank=1)
"""
from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from ..args import check_int
from ..errors import InvalidArgumentError, LucentError
from ..io.files import atomic_write, read_png_metadata
from ..models.checks import weights_fingerprint
from ..record.recipe import SCORE_KEY, Recipe
from .files import INDEX, by_layer, grid_filename, layer_grid, write_manifest
from .jobs import AtlasJob, JobRecipes, pending, run_atlas
from .lock import folder_lock

RANK_MANIFEST = "manifest.rank{rank}.json"
DEFAULT_TIMEOUT_S = 3600.0
"""How long a rank waits for the others at a batch boundary (longer than one batch takes)."""
JOIN_TIMEOUT_S = 60.0
"""Without torchrun (WORLD_SIZE, MASTER_ADDR and MASTER_PORT set by hand): how long rank 0 waits for the
others to join."""
_FORMAT = 1
T = TypeVar("T")


class RankLostError(RuntimeError):
    """Another rank did not reach a batch boundary in time, or its connection broke.

    Not a `LucentError`: nothing the user gave was wrong (the CLI exits with 1, not 2). Rerun the
    same command: the finished channels stay on disk.
    """


class Ranks(NamedTuple):
    """Where this process stands: its rank, how many ranks there are, its rank on this machine."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


class AtlasRun(NamedTuple):
    """What `render_atlas` did: `rendered` channels by all ranks (`mine` by this one), in `seconds`."""

    jobs: int
    rendered: int
    mine: int
    world_size: int
    seconds: float
    manifest: dict[str, Any] | None  # the merged manifest, on rank 0 only


def ranks_from_env(env: Mapping[str, str] | None = None) -> Ranks:
    """`RANK`, `WORLD_SIZE`, `LOCAL_RANK` as torchrun sets them (one process when unset).

    Raises:
        InvalidArgumentError: values that are not integers, or a rank outside `0..WORLD_SIZE-1`.
    """
    env = os.environ if env is None else env
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise InvalidArgumentError(
            f"RANK={env.get('RANK')!r}, WORLD_SIZE={env.get('WORLD_SIZE')!r}, LOCAL_RANK={env.get('LOCAL_RANK')!r}: "
            "expected integers (launch with torchrun, or unset them)"
        ) from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise InvalidArgumentError(
            f"RANK={rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={world}), or LOCAL_RANK={local} < 0"
        )
    return Ranks(rank, world, local)


def rank_device(requested: str | None, ranks: Ranks) -> str | None:
    """The device of a rank: `requested` as given in one process (None: the CPU); under torchrun,
    None or `cuda` mean `cuda:LOCAL_RANK` (the CPU when CUDA is unavailable and none was asked for),
    and an explicit `cpu` or `cuda:N` is kept."""
    if not ranks.distributed:
        return requested
    if requested is None:
        return f"cuda:{ranks.local_rank}" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        return f"cuda:{ranks.local_rank}"
    return requested


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Rank `rank`'s share of `items`: every `world_size`-th item from index `rank` (round-robin)."""
    return list(items[rank::world_size])


# --- the process group ------------------------------------------------------------------------------


class _Group:
    """The three collectives an atlas needs; all no-ops in one process."""

    def __init__(self, ranks: Ranks, timeout: float) -> None:
        self.ranks = ranks
        self.timeout = timeout

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except RuntimeError as e:  # gloo's timeouts and broken connections (DistBackendError is one)
            raise RankLostError(
                f"rank {self.ranks.rank} of {self.ranks.world_size}: {what} failed ({' '.join(str(e).split())[:300]}); "
                f"another rank died or took longer than --timeout {self.timeout:g} s for one batch. "
                "Rerun the same command to render what is missing"
            ) from e

    def broadcast(self, obj: T) -> T:
        if not self.ranks.distributed:
            return obj
        box = [obj]
        with self._guard("the start (rank 0's list of missing channels)"):
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum(self, values: Sequence[int]) -> list[int]:
        if not self.ranks.distributed:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.int64)
        with self._guard("waiting for the other ranks' batches"):
            dist.all_reduce(t)
        return [int(v) for v in t]

    def barrier(self) -> None:
        if self.ranks.distributed:
            with self._guard("the final barrier"):
                dist.barrier()


@contextlib.contextmanager
def process_group(ranks: Ranks | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                  join_timeout: float = JOIN_TIMEOUT_S) -> Iterator[_Group]:
    """Join the torch.distributed group torchrun describes (gloo), or use the one already joined;
    one process when `WORLD_SIZE` is unset or 1. A group joined here is left on exit.

    Raises:
        InvalidArgumentError: `WORLD_SIZE` > 1 without torchrun and without MASTER_ADDR/MASTER_PORT (a
            stray variable), or the other ranks did not join within `join_timeout` seconds.
    """
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise InvalidArgumentError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if dist.is_available() and dist.is_initialized():
        yield _Group(Ranks(dist.get_rank(), dist.get_world_size(), (ranks or ranks_from_env()).local_rank), timeout)
        return
    ranks = ranks or ranks_from_env()
    if not ranks.distributed:
        yield _Group(ranks, timeout)
        return
    if not dist.is_available():
        raise InvalidArgumentError("this torch build has no torch.distributed; run one process (no torchrun)")
    _join(ranks, timeout, join_timeout, os.environ)
    try:
        yield _Group(ranks, timeout)
    finally:
        dist.destroy_process_group()


def _join(ranks: Ranks, timeout: float, join_timeout: float, env: Mapping[str, str]) -> None:
    """init_process_group; without torchrun (no TORCHELASTIC_RUN_ID) a stray WORLD_SIZE fails fast."""
    td = datetime.timedelta(seconds=timeout)
    if env.get("TORCHELASTIC_RUN_ID"):
        dist.init_process_group("gloo", rank=ranks.rank, world_size=ranks.world_size, timeout=td)
        return
    stray = (f"WORLD_SIZE={ranks.world_size} is set but this process was not started by torchrun; unset WORLD_SIZE, "
             "RANK and LOCAL_RANK to run one process, or launch: torchrun --nproc-per-node=N -m lucent_dsl atlas ...")
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
    if missing:
        raise InvalidArgumentError(f"{stray} ({' and '.join(missing)} not set either)")
    try:
        port = int(env["MASTER_PORT"])
        tcp_store = dist.TCPStore  # pyright: ignore[reportPrivateImportUsage]  (exported at runtime)
        store = tcp_store(env["MASTER_ADDR"], port, ranks.world_size, is_master=ranks.rank == 0,
                              timeout=datetime.timedelta(seconds=join_timeout), wait_for_workers=True)
    except (RuntimeError, ValueError) as e:  # DistStoreError / DistNetworkError are RuntimeErrors
        raise InvalidArgumentError(
            f"rank {ranks.rank}: the other ranks did not join at {env['MASTER_ADDR']}:{env['MASTER_PORT']} within "
            f"{join_timeout:g} s ({' '.join(str(e).split())[:160]}). {stray}"
        ) from None
    dist.init_process_group("gloo", store=store, rank=ranks.rank, world_size=ranks.world_size, timeout=td)


# --- rendering ----------------------------------------------------------------------------------------


def _rank_entry(job: AtlasJob, out: Path) -> dict[str, Any]:
    meta = read_png_metadata(out / job.filename)
    score = float(meta[SCORE_KEY]) if SCORE_KEY in meta else None
    return {"layer": job.layer, "channel": job.channel, "file": job.filename, "score": score, "seed": job.seed}


def _write_rank_manifest(out: Path, run_id: str, ranks: Ranks, entries: list[dict[str, Any]], *, complete: bool,
                         seconds: float | None = None, layers: Mapping[str, Any] | None = None) -> None:
    doc = {"lucent_dsl_atlas_rank": _FORMAT, "run": run_id, "rank": ranks.rank, "world_size": ranks.world_size,
           "complete": complete, "seconds": seconds, "channels": entries, "layers": dict(layers or {})}
    with atomic_write(out / RANK_MANIFEST.format(rank=ranks.rank), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def read_rank_manifests(out_dir: str | Path, run_id: str, world_size: int) -> list[dict[str, Any]]:
    """The finished manifests of ranks `0..world_size-1` in run `run_id`; rank manifests of earlier
    runs with more ranks are deleted.

    Raises:
        RankLostError: a rank's manifest is missing, from another run, or not complete.
    """
    out = Path(out_dir)
    docs = []
    for r in range(world_size):
        path = out / RANK_MANIFEST.format(rank=r)
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise RankLostError(f"cannot read {str(path)!r} ({e}); is --out a folder that every rank sees?") from None
        if doc.get("run") != run_id or not doc.get("complete"):
            raise RankLostError(
                f"{str(path)!r} is not rank {r}'s finished manifest of this run; is --out shared by all ranks?"
            )
        docs.append(doc)
    for path in out.glob("manifest.rank*.json"):
        suffix = path.name[len("manifest.rank"):-len(".json")]
        if suffix.isdigit() and int(suffix) >= world_size:
            path.unlink(missing_ok=True)
    return docs


def render_atlas(
    jobs: Sequence[AtlasJob],
    base: Recipe | JobRecipes,
    models: nn.Module,
    out_dir: str | Path,
    *,
    batch: int = 16,
    device: str | torch.device | None = None,
    compile: bool | str = "auto",
    progress: bool | str = True,
    timeout: float = DEFAULT_TIMEOUT_S,
    ranks: Ranks | None = None,
    join_timeout: float = JOIN_TIMEOUT_S,
) -> AtlasRun:
    """Render the missing channels of `jobs` into `out_dir` on every rank, then (rank 0) the merged files.

    Every rank calls it with the same arguments (torchrun runs the same command); see the module
    docstring for how the work is split. `base` and `batch` are as in `run_atlas`, `timeout`
    is how long a rank waits for the others at a batch boundary, `progress` shows rank 0's bar.

    Rank 0 holds `out_dir`'s lock (`atlas.lock`) for the whole run: a second run on the same folder is
    refused at once, naming the first.

    Raises:
        InvalidArgumentError: `out_dir` is locked by another run, or holds PNGs made with other settings
            or weights, or damaged (on every rank).
        RankLostError: another rank died or stalled longer than `timeout`.
        KeyboardInterrupt: Ctrl-C (the finished batches stay on disk).
    """
    batch = check_int("batch", batch)
    out = Path(out_dir)
    weights = weights_fingerprint(models)
    with process_group(ranks, timeout, join_timeout) as group, contextlib.ExitStack() as held:
        me = group.ranks
        decision: tuple[str, list[int], str | None]
        if me.rank == 0:
            index = {job: i for i, job in enumerate(jobs)}
            try:
                held.enter_context(folder_lock(out))  # one run per folder; held until the merged files are written
                _remove_temp_files(out)
                decision = (uuid.uuid4().hex, [index[j] for j in pending(jobs, out, base, models, weights)], None)
            except LucentError as e:
                decision = ("", [], str(e))
        else:
            decision = ("", [], None)
        run_id, missing, error = group.broadcast(decision)
        if error is not None:
            raise InvalidArgumentError(error)
        todo = [jobs[i] for i in missing]
        mine = shard(todo, me.rank, me.world_size)
        rounds = max(math.ceil(len(shard(todo, r, me.world_size)) / batch) for r in range(me.world_size))

        start = time.perf_counter()
        entries: list[dict[str, Any]] = []
        _write_rank_manifest(out, run_id, me, entries, complete=False)
        bar = _bar(len(jobs), len(jobs) - len(todo)) if progress and me.rank == 0 and todo else None
        met = 0

        def meet(n: int) -> None:
            nonlocal met
            done = group.sum([n])[0]
            met += 1
            if bar is not None:
                bar.update(done)

        def on_batch(chunk: list[AtlasJob]) -> None:
            elapsed = round(time.perf_counter() - start, 3)
            entries.extend({**_rank_entry(job, out), "seconds": elapsed} for job in chunk)
            _write_rank_manifest(out, run_id, me, entries, complete=False)
            meet(len(chunk))

        try:
            run_atlas(mine, base, models, out, batch=batch, device=device, compile=compile,
                      progress=False, on_batch=on_batch, weights=weights)
            while met < rounds:  # done here: keep meeting the ranks that still render
                meet(0)
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - start
        # the grids: layers dealt round-robin too, each PNG read once (its tile and its manifest entry)
        groups = by_layer(jobs)
        single = len(groups) == 1
        parts = {layer: layer_grid(groups[layer], out, grid_filename(layer, single=single))
                 for layer in shard(list(groups), me.rank, me.world_size)}
        _write_rank_manifest(out, run_id, me, entries, complete=True, seconds=round(seconds, 3), layers=parts)
        group.barrier()
        manifest = None
        if me.rank == 0:
            merged: dict[str, Any] = {}
            for doc in read_rank_manifests(out, run_id, me.world_size):
                merged.update(doc["layers"])
            run = {"world_size": me.world_size, "rendered": len(todo), "already_there": len(jobs) - len(todo),
                   "seconds": round(seconds, 3),
                   "channels_per_second": round(len(todo) / seconds, 4) if todo and seconds > 0 else None}
            manifest = write_manifest(out, {layer: merged[layer] for layer in groups}, run=run, weights=weights)
        return AtlasRun(len(jobs), len(todo), len(mine), me.world_size, seconds, manifest)


def _remove_temp_files(out: Path) -> None:
    # what a killed rank's atomic writes left (`io.atomic_write` names them `.NAME.XXXX.tmp`); no
    # rank writes before rank 0's broadcast, and rank 0 holds the folder's lock, so none of these
    # is being written now
    for path in out.glob(".*.tmp"):
        name = path.name[1:].rsplit(".", 2)[0]
        if name.endswith(".png") or name.startswith("manifest") or name == INDEX:
            path.unlink(missing_ok=True)


def _bar(total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="atlas", unit="channel")

"""Atlases under torchrun: sharding, merged files, resuming after a killed rank, images independent of ranks.

The end-to-end test launches `torchrun --standalone --nproc-per-node=2 -m lucent_dsl atlas ...`
(gloo, CPU, one thread per rank) on a tiny model from a `file.py:factory` spec twice: a run in
which rank 1 dies after its first batch, then the same command again, which completes the
atlas. Each launch costs torchrun's and each rank's torch import (10-50 s on a loaded 2-core
machine); the rendering itself takes a few seconds.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from procs import END_TIMEOUT, START_TIMEOUT, faulthandler_env, reaped

from lucent_dsl import atlas
from lucent_dsl.atlas import distributed
from lucent_dsl.cli import app as cli
from lucent_dsl.errors import InvalidArgumentError
from lucent_dsl.io.files import read_png_metadata

ROOT = Path(__file__).resolve().parents[1]

# The kill switch lives here, in the test's model file, not in lucent_dsl: each rank builds the
# model from this file, and the rank named by TINY_DIE_RANK exits hard (as a SIGKILL would leave
# it: no cleanup) when it starts its second batch, after its first batch's PNGs are on disk.
TINY = '''
import os

from torch import nn


def factory():
    die = os.environ.get("TINY_DIE_RANK")
    if die is not None and die == os.environ.get("RANK"):
        from lucent_dsl import atlas

        real, calls = atlas.jobs.render, []

        def render(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                os._exit(1)
            return real(*args, **kwargs)

        atlas.jobs.render = render
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),             # 0: (8, H, W)
        nn.ReLU(),
        nn.Conv2d(8, 12, 3, stride=2, padding=1),  # 2: (12, H/2, W/2)
        nn.ReLU(),
    )
'''
LAYERS = "0,2"
CHANNELS = "0:5"
ALL = [f"{layer}_{c:04d}.png" for layer in ("0", "2") for c in range(5)]


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("models") / "tiny.py"
    path.write_text(TINY)
    return f"{path}:factory"


def argv(spec: str, out: Path) -> list[str]:
    return ["atlas", LAYERS, "--model", spec, "--channels", CHANNELS, "--size", "16", "--steps", "4",
            "--batch", "2", "--out", str(out), "-q"]


def torchrun(spec: str, out: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TINY_DIE_RANK")}
    clean.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE",
                 PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), **env)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           "--monitor-interval=0.2", "-m", "lucent_dsl", *argv(spec, out), "--timeout", "120"]
    return subprocess.run(cmd, env=clean, capture_output=True, text=True, timeout=400, check=False)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def rank_manifests(out: Path) -> list[dict]:
    return [json.loads((out / f"manifest.rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.slow
def test_torchrun_atlas_survives_a_killed_rank_and_matches_one_process(spec, tmp_path, monkeypatch):
    # the reference: one process (no torchrun), the default `atlas`, on one thread as each torchrun rank (another
    # thread count rounds the scores in the PNGs' recipes differently; an earlier test may have changed it)
    ref = tmp_path / "ref"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main(argv(spec, ref)) == 0
    finally:
        torch.set_num_threads(threads)
    assert sorted(p.name for p in ref.glob("*_0*.png")) == ALL

    out = tmp_path / "two"
    killed = torchrun(spec, out, TINY_DIE_RANK="1")
    assert killed.returncode != 0, killed.stderr[-2000:]
    first = {p.name for p in out.glob("*_0*.png")}
    # rank 1's share of the sorted missing list is jobs 1, 3, 5, ...; its first batch (jobs 1, 3) is kept
    assert {ALL[1], ALL[3]} <= first < set(ALL)
    assert not (out / "manifest.json").exists()
    (out / ".2_0004.png.abc123.tmp").write_bytes(b"half a PNG")  # as a SIGKILL mid-write leaves it

    resumed = torchrun(spec, out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # every missing channel was rendered exactly once, by one of the two ranks
    ranks = rank_manifests(out)
    done = [e["file"] for r in ranks for e in r["channels"]]
    assert sorted(done) == sorted(set(ALL) - first) and len(done) == len(set(done))
    assert all(r["complete"] and r["world_size"] == 2 for r in ranks)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # leftovers of killed writes are gone

    # the images equal the one-process run's, pixels and recipes
    for name in ALL:
        assert np.array_equal(pixels(out / name), pixels(ref / name)), name
        assert read_png_metadata(out / name) == read_png_metadata(ref / name)
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["layers"]) == ["0", "2"]
    assert manifest["run"]["rendered"] == len(done) and manifest["run"]["world_size"] == 2
    for layer in ("0", "2"):
        info = manifest["layers"][layer]
        assert list(info["channels"]) == [str(c) for c in range(5)]
        assert info["grid"] == f"{layer}.grid.png" and (out / info["grid"]).exists()
        ref_info = json.loads((ref / "manifest.json").read_text())["layers"][layer]
        assert {c: e["score"] for c, e in info["channels"].items()} == {c: e["score"] for c, e in ref_info["channels"].items()}
    page = (out / "index.html").read_text()
    for layer in ("0", "2"):
        for c, e in manifest["layers"][layer]["channels"].items():
            assert f'src="{e["file"]}"' in page and f"{layer}:{c}<br>score {e['score']:.4g}" in page

    # a third run finds nothing missing: it renders nothing and leaves every PNG as it was. (Rank 0
    # alone decides what is missing, whatever the number of ranks, so one process checks it here
    # and saves a third torchrun launch; the resumed run above already skipped the finished channels.)
    stamps = {name: (out / name).stat().st_mtime_ns for name in ALL}
    monkeypatch.setattr(atlas.jobs, "render", lambda *a, **k: pytest.fail("rendered again"))
    assert cli.main(argv(spec, out)) == 0
    assert {name: (out / name).stat().st_mtime_ns for name in ALL} == stamps
    assert json.loads((out / "manifest.json").read_text())["run"]["rendered"] == 0


# --- the parts, in one process ---------------------------------------------------------------------------


def test_ranks_devices_and_shards():
    assert distributed.ranks_from_env({}) == distributed.Ranks(0, 1, 0)
    assert distributed.ranks_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}).distributed
    for bad in ({"RANK": "4", "WORLD_SIZE": "4"}, {"RANK": "x", "WORLD_SIZE": "2"}):
        with pytest.raises(InvalidArgumentError):
            distributed.ranks_from_env(bad)
    one, two = distributed.Ranks(0, 1, 0), distributed.Ranks(1, 2, 1)
    assert distributed.rank_device(None, one) is None and distributed.rank_device("cuda:3", one) == "cuda:3"
    assert distributed.rank_device("cuda", two) == "cuda:1" and distributed.rank_device("cpu", two) == "cpu"
    jobs = atlas.layers_jobs({"a": range(5), "b": [1]})
    shares = [distributed.shard(jobs, r, 4) for r in range(4)]
    assert sorted(j for s in shares for j in s) == sorted(jobs) and [len(s) for s in shares] == [2, 2, 1, 1]


def test_layers_jobs_seeds_come_from_the_channel_and_names_must_not_clash():
    jobs = atlas.layers_jobs({"x.1": [2, 0], "y": [2]}, seed=5)
    assert [(j.layer, j.channel) for j in jobs] == [("x.1", 2), ("x.1", 0), ("y", 2)]
    assert all(j.seed == atlas.channel_seed(j.layer, j.channel, 5) for j in jobs)
    with pytest.raises(InvalidArgumentError, match="same files"):
        atlas.layers_jobs({"a/b": [0], "a_b": [0]})
    assert atlas.grid_filename("a/b", single=False) == "a_b.grid.png" and atlas.grid_filename("a", single=True) == "grid.png"


def test_merge_refuses_stale_or_unfinished_rank_manifests(tmp_path):
    ranks = distributed.Ranks(0, 2, 0)
    distributed._write_rank_manifest(tmp_path, "run1", ranks, [{"file": "a"}], complete=True)
    distributed._write_rank_manifest(tmp_path, "run1", ranks._replace(rank=1), [], complete=False)
    (tmp_path / "manifest.rank7.json").write_text("{}")  # from an earlier run with 8 ranks
    with pytest.raises(distributed.RankLostError, match="rank 1"):
        distributed.read_rank_manifests(tmp_path, "run1", 2)
    distributed._write_rank_manifest(tmp_path, "run1", ranks._replace(rank=1), [{"file": "b"}], complete=True)
    with pytest.raises(distributed.RankLostError, match="rank 0"):
        distributed.read_rank_manifests(tmp_path, "run2", 2)
    docs = distributed.read_rank_manifests(tmp_path, "run1", 2)
    assert [e["file"] for d in docs for e in d["channels"]] == ["a", "b"]
    assert not (tmp_path / "manifest.rank7.json").exists()


def test_atlas_rejects_empty_layer_names(capsys, spec, tmp_path):
    code = cli.main(["atlas", "0,,2", "--model", spec, "--out", str(tmp_path / "x"), "-q"])
    assert code == 2 and "LAYER[,LAYER...]" in capsys.readouterr().err


# --- issue 13: one run per folder, stray WORLD_SIZE, weights fingerprints -------------------------------

BLOCKING = '''
import time
from pathlib import Path

from torch import nn


def factory():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    here = Path(__file__).parent

    def hold(*_):
        if not (here / "atlas" / ".lucent_dsl.lock").exists():
            return  # the probe forwards before the run takes its folder
        (here / "STARTED").write_text("x")
        while not (here / "RELEASE").exists():  # the test lets the run go on once it has tried a second one
            time.sleep(0.05)

    net[0].register_forward_pre_hook(hold)
    return net
'''


def test_a_second_atlas_run_on_the_same_folder_is_refused_naming_the_first(tmp_path, capsys):
    import time

    (tmp_path / "block.py").write_text(BLOCKING)
    out = tmp_path / "atlas"
    argv = ["atlas", "0", "--model", f"{tmp_path}/block.py:factory", "--channels", "0:2", "--size", "16", "--steps", "2",
            "--out", str(out), "-q"]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    with reaped(subprocess.Popen([sys.executable, "-m", "lucent_dsl", *argv],
                                 env=faulthandler_env({**env, "OMP_NUM_THREADS": "1"}),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)) as first:
        deadline = time.monotonic() + START_TIMEOUT
        while not (tmp_path / "STARTED").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # until the first run renders, its lock held
        assert (tmp_path / "STARTED").exists() and first.poll() is None
        code = cli.main(argv)  # refused before it builds the model (whose forward would block here)
        err = capsys.readouterr().err
        assert code == 2 and f"pid {first.pid}" in err and "is being written by another lucent-dsl atlas run" in err, err
        (tmp_path / "RELEASE").write_text("x")
        _, first_err = first.communicate(timeout=END_TIMEOUT)
    assert first.returncode == 0, first_err
    assert sorted(p.name for p in out.glob("0_*.png")) == ["0_0000.png", "0_0001.png"]
    assert not (out / ".lucent_dsl.lock").exists()
    assert cli.main(argv) == 0  # the lock is gone with its run: the next run proceeds (nothing to render)


def test_a_stray_world_size_fails_fast_instead_of_waiting_for_the_timeout(spec, tmp_path):
    import time

    ranks = distributed.Ranks(0, 2, 0)
    with pytest.raises(InvalidArgumentError, match="WORLD_SIZE=2 is set but this process was not started by torchrun"):
        with distributed.process_group(ranks):
            pass
    start = time.monotonic()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MASTER_ADDR", "127.0.0.1")
        mp.setenv("MASTER_PORT", "29581")
        with pytest.raises(InvalidArgumentError, match=r"did not join .* within 2 s.*unset WORLD_SIZE"):
            with distributed.process_group(ranks, timeout=3600, join_timeout=2):
                pass
    assert time.monotonic() - start < 30  # not --timeout's 3600 s


def test_the_manifest_and_each_png_carry_the_weights_fingerprint(spec, tmp_path):
    from lucent_dsl.models.checks import weights_fingerprint
    from lucent_dsl.models.specs import build_model

    out = tmp_path / "a"
    assert cli.main(argv(spec, out)) == 0
    fingerprint = weights_fingerprint(build_model(spec))
    assert json.loads((out / "manifest.json").read_text())["weights"] == fingerprint
    assert all(read_png_metadata(out / name)[atlas.WEIGHTS_KEY] == fingerprint for name in ALL)
    other = build_model(spec)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)  # one edited weight: another fingerprint
    assert weights_fingerprint(other) != fingerprint

"""What in-place safety costs: a plan's forward + input-gradient step on stock torchvision models (their ReLUs are
`inplace=True`, so the plan clones the outputs that a later op writes to) against the same model with every
`inplace` flag off (nothing to clone), for both runners.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_inplace.py [--repeats 20]

Sites: each read module is followed by an in-place ReLU, so each needs a clone (the worst case): mobilenet_v2
`features.3.conv.0.1` and `features.10.conv.1.1` (BatchNorm2d outputs), resnet18 `layer1.0.bn1` and `layer3.0.bn1`,
plus the output (a full forward). Batch 1, 224 px, one torch thread.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header  # noqa: E402

import lucent_dsl as ld
from lucent_dsl.models.info import non_inplace
from lucent_dsl.plan.fold import frozen_models

SITES = {"mobilenet_v2": ("features.3.conv.0.1", "features.10.conv.1.1"), "resnet18": ("layer1.0.bn1", "layer3.0.bn1")}


def step_times(plans: list[ld.Plan], x: torch.Tensor, repeats: int) -> list[float]:
    """Median step time of each plan, the plans' steps interleaved (so load on a shared machine hits all alike)."""
    times: list[list[float]] = [[] for _ in plans]
    with frozen_models([m for p in plans for m in p.models.values()]):
        for i in range(repeats + 2):
            for k, plan in enumerate(plans):
                xi = x.clone().requires_grad_(True)
                t = time.perf_counter()
                plan.loss(plan.forward(xi), 1).backward()
                if i >= 2:  # warm-up: the first calls fold weights and count hook calls
                    times[k].append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(header("what in-place safety costs: a plan step on stock models vs their inplace flags off"))
    x = torch.rand(1, 3, 224, 224)
    for name, sites in SITES.items():
        stock = torchvision.models.get_model(name, weights=None).eval()
        flat = non_inplace(copy.deepcopy(stock))
        objective = ld.sum_of([ld.channel(s, 0) for s in sites] + [ld.class_logit(0)])
        for truncate in ("fx", "hooks"):
            a = ld.compile_plan(objective, stock, truncate=truncate)
            b = ld.compile_plan(objective, flat, truncate=truncate)
            ta, tb = step_times([a, b], x, args.repeats)
            note = a.runners["model"].describe()
            print(f"{name:13s} {truncate:5s}  in-place ops kept {ta * 1e3:7.1f} ms   flags off {tb * 1e3:7.1f} ms   "
                  f"cost {100 * (ta / tb - 1):+5.1f}%   ({note})")


if __name__ == "__main__":
    main()

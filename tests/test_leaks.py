"""Many renders in one process leak nothing: hooks, plans, generated code, memory, compiled steps.

The memory bound was set from measurements (CPU, torch 2.14, 2 cores shared): after a warm-up of
20 renders, 200 more grew the RSS by 0.1 to 1.0 MB. Before the fix in `truncate.py`, torch.fx
kept the generated source of every plan's graph in `linecache` (2 entries per render, ~1.4 KB
each, never freed); that is checked exactly here rather than through the RSS.
"""
from __future__ import annotations

import collections
import gc
import linecache
import os
import sys
import weakref
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn.modules import module as module_globals

import lucent_dsl as ld
from lucent_dsl import param, render, transforms

render_module = sys.modules["lucent_dsl.renderer.phases"]
steps_module = sys.modules["lucent_dsl.renderer.steps"]

WARMUP = 20
RENDERS = 200
RSS_BOUND_MB = 16.0  # measured growth: 0.1-1.0 MB for 200 renders


class Tiny(nn.Module):
    def __init__(self, traceable: bool = True):
        super().__init__()
        torch.manual_seed(0)
        self.traceable = traceable
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.out = nn.Conv2d(6, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        if not self.traceable and bool(h.detach().mean() > 1e9):  # not traceable: the hooks runner
            h = -h
        return self.out(h)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def hook_counts(*models: nn.Module) -> dict[str, int]:
    """Every hook dict of every module (forward, pre, backward, state dict, ...) and torch's global ones."""
    counts: dict[str, int] = collections.Counter()
    for i, model in enumerate(models):
        for name, m in model.named_modules():
            for key, value in vars(m).items():
                if "hook" in key and isinstance(value, dict):
                    counts[f"{i}:{name}:{key}"] += len(value)
    for key, value in vars(module_globals).items():
        if key.startswith("_global") and "hook" in key and isinstance(value, dict):
            counts[key] += len(value)
    return dict(counts)


def one_render(i: int, fx_net: Tiny, hooks_net: Tiny) -> Any:
    """Alternate the fx and hooks runners, default and tiny settings; every 10th render fails at step 1."""
    if i % 10 == 9:
        with pytest.raises(ld.ObjectiveShapeError):
            render(ld.channel("out", 99), fx_net, size=8, steps=2, progress=False)
        return None
    obj = ld.channel("out", i % 4) - 0.01 * ld.total_variation()
    if i % 2:
        return render(ld.compile_plan(obj, hooks_net, truncate="hooks"), size=8, steps=2, progress=False,
                      transforms=[], param=param.pixel(8), seed=i)
    return render(obj, fx_net, size=8, steps=2, progress=False, seed=i)


def test_renders_do_not_grow_hooks_plans_generated_code_or_memory():
    fx_net, hooks_net = Tiny().train(), Tiny(traceable=False).train()
    hooks = hook_counts(fx_net, hooks_net)
    state = {k: v.clone() for k, v in list(fx_net.state_dict().items()) + list(hooks_net.state_dict().items())}

    for i in range(WARMUP):
        one_render(i, fx_net, hooks_net)
    gc.collect()
    rss0, lines0 = rss_mb(), len(linecache.cache)

    plans: list[weakref.ref] = []
    for i in range(RENDERS):
        result = one_render(i, fx_net, hooks_net)
        if result is not None:
            plans.append(weakref.ref(result.plan))
            plans.append(weakref.ref(next(iter(result.plan.runners.values()))))
        assert hook_counts(fx_net, hooks_net) == hooks, i
        del result
    gc.collect()

    assert len(plans) == 2 * (RENDERS - RENDERS // 10)
    assert sum(ref() is not None for ref in plans) == 0, "plans or runners outlived their renders"
    assert len(linecache.cache) - lines0 < 10, "generated torch.fx source piles up in linecache"
    growth = rss_mb() - rss0
    assert growth < RSS_BOUND_MB, f"RSS grew by {growth:.1f} MB over {RENDERS} renders"
    for k, v in list(fx_net.state_dict().items()) + list(hooks_net.state_dict().items()):
        assert torch.equal(v, state[k]), k  # BatchNorm statistics too
    assert fx_net.training and hooks_net.training


@pytest.fixture
def fake_compile(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """torch.compile replaced by the identity (counted), and an empty compiled-step cache."""
    calls: list[Any] = []

    def identity(fn: Any, mode: Any = None, dynamic: Any = None) -> Any:
        calls.append(fn)
        return fn

    monkeypatch.setattr(torch, "compile", identity)
    return calls


def test_compiled_step_cache_is_bounded_and_reused(fake_compile: list[Any]):
    net = Tiny().eval()
    plan = ld.compile_plan(ld.channel("out", 0), net)
    t = transforms.chain()
    params = {s: param.pixel(s) for s in range(4, 4 + 2 * steps_module.STEPS_PER_PLAN)}
    for p in params.values():  # more distinct shapes than the cache holds
        render(plan, param=p, transforms=t, steps=1, compile=True, progress=False)
        assert len(plan.steps) <= steps_module.STEPS_PER_PLAN
    assert len(fake_compile) == len(params)
    last = list(params.values())[-1]
    render(plan, param=last, transforms=t, steps=1, compile=True, progress=False)
    assert len(fake_compile) == len(params)  # the most recent entry is reused, not compiled again
    kept = render(ld.channel("out", 0), net, param=last, transforms=t, steps=1, compile=True, progress=False)
    render(ld.channel("out", 0), net, param=last, transforms=t, steps=1, compile=True, progress=False)
    assert len(fake_compile) == len(params) + 1  # an equal plan still held (by `kept`) brings its step along
    assert kept.plan.steps


def test_compiled_steps_do_not_keep_models_alive(fake_compile: list[Any]):
    """Regression: a module-level cache of compiled steps pinned up to 8 plans and their models."""
    net = Tiny().eval()
    alive = weakref.ref(net)
    result = render(ld.channel("out", 0), net, param=param.pixel(6), transforms=[], steps=1, compile=True, progress=False)
    assert fake_compile and result.plan.steps
    fake_compile.clear()  # the fixture's own record of the compiled function holds the plan too
    del net, result
    gc.collect()
    assert alive() is None


def test_compiled_step_is_never_reused_for_another_parameterization(fake_compile: list[Any]):
    """Regression: the cache was keyed on id(param); a freed param's recycled id hit its stale step."""
    net = Tiny().eval()
    obj = ld.channel("out", 0)
    t = transforms.chain()
    for i in range(8):
        p = param.pixel(8, squash="sigmoid" if i % 2 == 0 else "clamp", decorrelate=False)
        kw = dict(param=p, transforms=t, steps=3, lr=0.5, progress=False)
        compiled = render(obj, net, compile=True, **kw).images
        eager = render(obj, net, compile=False, **kw).images
        assert torch.equal(compiled, eager), i
        del p, kw

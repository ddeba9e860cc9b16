"""Render options of issue 27: learning-rate schedules, Adam's betas (recorded in the recipe), early stopping."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

import lucent_dsl as ld
from lucent_dsl.errors import InvalidArgumentError
from lucent_dsl.models import ModelInfo, with_info
from lucent_dsl.renderer.schedule import SCHEDULES, Schedule, as_schedule
from lucent_dsl.replay import Recipe

schedules = st.one_of(st.sampled_from(["constant", "cosine"]).map(Schedule),
                      st.floats(0.01, 0.9).map(lambda w: Schedule("warmup_cosine", warmup=w)))


@settings(max_examples=40, deadline=None)
@given(schedule=schedules, total=st.integers(2, 400))
def test_a_schedule_scales_the_lr_within_0_and_1_and_decays_after_its_warm_up(schedule, total):
    factors = [schedule.factor(step, total) for step in range(1, total + 1)]
    assert all(0 <= f <= 1 for f in factors)
    if schedule.kind == "constant":
        assert set(factors) == {1.0}
        return
    peak = factors.index(max(factors))
    assert max(factors) == pytest.approx(1.0) and factors[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a <= b for a, b in zip(factors[:peak], factors[1:peak + 1]))  # warm-up rises
    assert all(a >= b for a, b in zip(factors[peak:], factors[peak + 1:]))  # then it only falls


@settings(max_examples=20, deadline=None)
@given(schedule=schedules, betas=st.tuples(st.floats(0, 0.99), st.floats(0, 0.9999)))
def test_a_recipe_carries_schedule_and_betas_through_json(schedule, betas):
    r = Recipe(objective="channel('conv1', 0)", schedule=schedule.text, betas=betas)
    back = Recipe.from_json(r.to_json())
    assert back == r and as_schedule(back.schedule) == schedule and back.betas == betas


def test_a_recipe_at_the_default_settings_writes_no_new_keys_and_old_files_read():
    d = Recipe(objective="channel('conv1', 0)").to_dict()
    assert "schedule" not in d and "betas" not in d
    assert Recipe.from_dict(d).schedule == "constant"


@pytest.mark.parametrize("bad", [dict(schedule="linear"), dict(schedule="cosine:0.1"), dict(schedule="warmup_cosine:2"),
                                 dict(betas=(1.0, 0.9)), dict(betas=(0.5,)), dict(betas="0.5")])
def test_a_recipe_refuses_a_bad_schedule_or_betas(bad):
    with pytest.raises(InvalidArgumentError):
        Recipe(objective="channel('conv1', 0)", **bad)


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
    return with_info(net, ModelInfo(labels=("a", "b", "c")))


class _Recording(torch.optim.SGD):
    seen: list[float]

    def step(self, closure=None):  # type: ignore[override]
        self.seen.append(self.param_groups[0]["lr"])
        return super().step(closure)


@pytest.mark.parametrize("kind", SCHEDULES)
def test_render_runs_each_step_at_the_scheduled_lr(kind):
    made: list[_Recording] = []

    def optimizer(params):
        made.append(_Recording(params, lr=0.3))
        made[-1].seen = []
        return made[-1]

    ld.render(ld.channel("0", 1), _net(), size=12, steps=9, optimizer=optimizer, schedule=kind, progress=False)
    schedule = as_schedule(kind)
    assert made[0].seen == pytest.approx([0.3 * schedule.factor(s, 9) for s in range(1, 10)])


def test_betas_reach_the_default_adam_and_refuse_an_optimizer_of_your_own():
    with pytest.raises(InvalidArgumentError, match="betas"):
        ld.render(ld.channel("0", 1), _net(), size=12, steps=1, betas=(0.5, 0.999), optimizer=torch.optim.SGD,
                  progress=False)
    with pytest.raises(InvalidArgumentError, match="beta1"):
        ld.render(ld.channel("0", 1), _net(), size=12, steps=1, betas=(1.5, 0.999), progress=False)
    plain = ld.render(ld.channel("0", 1), _net(), size=12, steps=4, progress=False)
    half = ld.render(ld.channel("0", 1), _net(), size=12, steps=4, betas=(0.5, 0.999), progress=False)
    same = ld.render(ld.channel("0", 1), _net(), size=12, steps=4, betas=(0.9, 0.999), progress=False)
    assert torch.equal(plain.images, same.images) and not torch.equal(plain.images, half.images)


def test_a_plateau_stops_a_render_that_has_converged_and_says_where():
    r = ld.render(ld.channel("0", 1) - 10 * ld.l2(), _net(), size=12, steps=2000, lr=0.2, progress=False,
                  stop=ld.Plateau(patience=16, rel_tol=1e-3, warmup=8))
    assert r.stopped is not None and r.stopped.startswith(f"step {r.steps}: plateau")
    assert r.steps < 2000 and all(len(h) == r.steps for h in r.history.values())


def test_a_target_stops_once_the_class_probability_passes_p():
    torch.manual_seed(0)
    net = with_info(nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, 3)), ModelInfo(labels=("a", "b", "c")))
    with torch.no_grad():
        net[2].weight.mul_(20)
    r = ld.render(ld.class_logit("b"), net, size=12, steps=500, progress=False, stop=ld.Target("b", p=0.9, every=2))
    assert r.stopped is not None and r.steps % 2 == 0 and r.steps < 500
    with torch.no_grad():
        p = net(r.images).softmax(1)[0, 1]
    assert float(p) >= 0.9
    with pytest.raises(InvalidArgumentError, match="labels"):
        ld.render(ld.class_logit("b"), net, size=12, steps=2, progress=False, stop=ld.Target("zebra"))


def test_a_scheduled_render_stopped_early_has_no_recipe_that_would_schedule_otherwise():
    from lucent_dsl.models.specs import build_model

    net = build_model("torchvision:alexnet")
    r = ld.render("channel('features.0', 0)", net, size=32, steps=40, progress=False, schedule="cosine",
                  stop=ld.Plateau(patience=2, rel_tol=0.5, warmup=0))
    assert r.stopped is not None and r.recipe is None and any("cosine" in why for why in r.unreplayable)
    done = ld.render("channel('features.0', 0)", net, size=32, steps=4, progress=False, schedule="warmup_cosine",
                     betas=(0.5, 0.99))
    assert done.recipe is not None and torch.equal(done.recipe.run(progress=False).images, done.images)


def test_coarse_to_fine_continues_each_stage_from_the_last_ones_image():
    from lucent_dsl.renderer.coarse import coarse_to_fine

    net = _net()
    r = coarse_to_fine(ld.channel("0", 1), net, sizes=(8, 16), steps=(6, 1), lr=1e-9, progress=False)
    coarse = ld.render(ld.channel("0", 1), net, size=8, steps=6, lr=1e-9, progress=False)
    up = torch.nn.functional.interpolate(coarse.images, size=(16, 16), mode="bilinear", antialias=True)
    torch.testing.assert_close(r.images, up.clamp(1e-4, 1 - 1e-4), atol=2e-3, rtol=0)  # lr ~0: the start stays
    assert r.steps == 7 and all(len(h) == 7 for h in r.history.values()) and r.recipe is None
    with pytest.raises(InvalidArgumentError, match="grow"):
        coarse_to_fine(ld.channel("0", 1), net, sizes=(16, 8), steps=2, progress=False)
    with pytest.raises(InvalidArgumentError, match="one count per size"):
        coarse_to_fine(ld.channel("0", 1), net, sizes=(8, 16), steps=(2,), progress=False)
    with pytest.raises(InvalidArgumentError, match="size"):
        coarse_to_fine(ld.channel("0", 1), net, sizes=(8, 16), steps=2, size=8, progress=False)

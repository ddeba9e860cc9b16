"""toolbox.auto_diversity: IMI's diversity weight per unit (the largest whose weakest image beats every natural one)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, strategies as st

import lucent_dsl as ld
from lucent_dsl import toolbox
from lucent_dsl.errors import ImageError, InvalidArgumentError, LayerNotFoundError
from lucent_dsl.plan.compiler import compile_plan
from lucent_dsl.plan.forward import read_layers
from lucent_dsl.toolbox import diversity_weight as dw

UNIT = "channel('2', 1)"
FAST = {"steps": 12, "size": 16, "lr": 0.2, "precision": "fp32"}
LADDER = (0.0, 1.0, 10.0, 100.0, 1e3, 1e4)


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(4)  # activations of order 1, so a few steps move them
    return net


def render_at(net: nn.Module, weight: float, seed: int) -> torch.Tensor:
    objective = ld.parse(UNIT) - weight * ld.diversity("2") if weight else ld.parse(UNIT)
    return ld.render(objective, net, batch=4, seed=seed, progress=False, **FAST).images


# --- the search itself, on made-up scores ----------------------------------------------------------------


@st.composite
def ladders(draw):
    steps = draw(st.lists(st.floats(0.01, 10.0), min_size=1, max_size=6))
    start = draw(st.sampled_from([0.0, 0.5]))
    return tuple(start + sum(steps[:i]) for i in range(len(steps)))


@given(ladder=ladders(), weakest=st.lists(st.floats(-5, 5), min_size=40, max_size=40), bar=st.floats(-5, 5),
       refine=st.integers(0, 3))
def test_search_keeps_the_largest_passing_weight_and_climbs_only_to_the_first_failure(ladder, weakest, bar, refine):
    seen: list[float] = []

    def fake(w: float) -> dw._Try:  # any scores, monotone or not
        seen.append(w)
        return dw._Try(w, torch.zeros(1), torch.tensor([weakest[len(seen) - 1], 9.0]))

    best, tries = dw.search(fake, ladder, bar, refine)
    passed = [t.weight for t in tries if t.weakest > bar]
    climbed = [t.weight for t in tries[:len(ladder)] if t.weight in ladder]
    first_fail = next((i for i, t in enumerate(tries) if not t.weakest > bar), None)
    assert [t.weight for t in tries] == seen
    assert climbed == list(ladder[:len(climbed)])                    # the ladder in order, from its foot
    assert first_fail is None or first_fail == len(climbed) - 1 or first_fail >= len(ladder)
    assert (best is None) == (not tries[0].weakest > bar)            # None only when the first weight fails
    if best is not None:
        assert best.weight == max(passed)
        assert all(not t.weakest > bar for t in tries if t.weight > best.weight)
        bisections = len(tries) - len(climbed)
        assert bisections == (refine if first_fail is not None else 0)


# --- the whole method on a tiny net ------------------------------------------------------------------------


def test_naturals_score_as_the_units_own_objective_on_one_image():
    net, x = tiny_net(), torch.rand(5, 3, 16, 16)
    got = dw.unit_scores(compile_plan(UNIT, net), x, batch=2)
    by_hand = read_layers(net, x, "2")["2"][:, 1].mean((1, 2))
    torch.testing.assert_close(got, by_hand, rtol=1e-5, atol=1e-6)


def test_chosen_weight_beats_the_best_natural_and_the_next_weight_tried_does_not():
    net = tiny_net()
    diverse = render_at(net, 100.0, seed=0)  # what the search renders at w=100: its weakest image is the bar
    naturals = diverse[dw.unit_scores(compile_plan(UNIT, net), diverse).argmin()][None]
    c = toolbox.auto_diversity(UNIT, net, naturals, weights=LADDER, refine=1, **FAST)
    assert c.tried[0][1] > c.natural_best, "setup: the undiverse renders should beat the bar"
    assert c.weight is not None and c.passed
    assert float(c.scores.min()) > c.natural_best
    assert dict(c.tried)[c.weight] == pytest.approx(float(c.scores.min()))
    above = [s for w, s in c.tried if w > c.weight]
    assert above and all(s <= c.natural_best for s in above)      # something failed, and all that failed is above
    assert c.images.shape == (4, 3, 16, 16) and c.scores.shape == (4,)
    torch.testing.assert_close(dw.unit_scores(compile_plan(UNIT, net), c.images), c.scores)
    assert f"{c.weight:g}" in c.message


def test_naturals_that_beat_every_render_give_no_weight_not_zero():
    net = tiny_net()
    naturals = render_at(net, 0.0, seed=0)  # the very images w=0 renders: their best beats their weakest
    c = toolbox.auto_diversity(UNIT, net, naturals, weights=LADDER, **FAST)
    assert c.weight is None and not c.passed
    assert len(c.tried) == 1 and c.tried[0][1] <= c.natural_best
    assert "no diversity weight passed" in c.message and "w=0" in c.message


def test_same_seed_same_choice_and_images():
    net, naturals = tiny_net(), torch.rand(3, 3, 16, 16)
    a, b = (toolbox.auto_diversity(UNIT, net, naturals, weights=LADDER[:3], seed=5, **FAST) for _ in range(2))
    assert a.weight == b.weight and a.tried == b.tried
    assert torch.equal(a.images, b.images)


def _no_render(*args, **kwargs):
    raise AssertionError("rendered before refusing bad input")


@pytest.mark.parametrize("unit, naturals, kw, error, words", [
    (UNIT, torch.rand(0, 3, 16, 16), {}, InvalidArgumentError, "empty"),
    (UNIT, torch.rand(2, 1, 16, 16), {}, ImageError, "channels"),
    (UNIT, torch.rand(2, 3, 16), {}, InvalidArgumentError, "(N, C, H, W)"),
    (UNIT, torch.rand(2, 3, 16, 16) * 255, {}, ImageError, "[0, 1]"),
    (UNIT, torch.rand(2, 3, 16, 16), {"weights": (0.0, -1.0)}, InvalidArgumentError, ">= 0"),
    (UNIT, torch.rand(2, 3, 16, 16), {"weights": (1.0, 0.1)}, InvalidArgumentError, "increase"),
    (UNIT, torch.rand(2, 3, 16, 16), {"weights": ()}, InvalidArgumentError, "non-empty"),
    (UNIT, torch.rand(2, 3, 16, 16), {"batch": 1}, InvalidArgumentError, "batch"),
    (UNIT, torch.rand(2, 3, 16, 16), {"refine": -1}, InvalidArgumentError, "refine"),
    ([UNIT, UNIT], torch.rand(2, 3, 16, 16), {}, InvalidArgumentError, "one objective"),
    (f"{UNIT} - diversity('2')", torch.rand(2, 3, 16, 16), {}, InvalidArgumentError, "already holds"),
    ("channel('2', 1, batch=0)", torch.rand(2, 3, 16, 16), {}, InvalidArgumentError, "batch="),
    ("channel('2', 1) + channel('0', 1)", torch.rand(2, 3, 16, 16), {}, InvalidArgumentError, "layer="),
    ("channel('9', 1)", torch.rand(2, 3, 16, 16), {}, LayerNotFoundError, "'9'"),
    (UNIT, torch.rand(2, 3, 16, 16), {"layer": "7"}, LayerNotFoundError, "'7'"),
    (UNIT, torch.rand(2, 3, 16, 16), {"lrr": 0.1}, TypeError, "lrr"),
    (UNIT, torch.rand(2, 3, 16, 16), {"objective": UNIT}, TypeError, "objective"),
])
def test_bad_input_is_refused_before_any_render(monkeypatch, unit, naturals, kw, error, words):
    monkeypatch.setattr("lucent_dsl.renderer.phases.render", _no_render)
    with pytest.raises(error, match=None) as info:
        toolbox.auto_diversity(unit, tiny_net(), naturals, **{"steps": 4, "size": 16, **kw})
    assert words in str(info.value)


# --- a real model nobody here wrote ------------------------------------------------------------------------


def test_on_the_zoos_mobilenet_v2_the_chosen_images_beat_photo_crops():
    import skimage.data

    mnet = ld.zoo.load("mobilenet_v2")
    cat = F.interpolate(ld.io.load_image(skimage.data.chelsea()), size=(128, 192), mode="bilinear", antialias=True)
    naturals = torch.cat([cat[..., :64, :64], cat[..., 32:96, 64:128], cat[..., 64:, 128:]]).clamp(0, 1)
    c = toolbox.auto_diversity("channel('features.14', 3)", mnet, naturals, weights=(0.0, 1.0, 10.0), steps=8,
                               size=64, batch=2)
    assert c.layer == "features.14" and c.natural_best > 0
    assert c.tried and [w for w, _ in c.tried] == [0.0, 1.0, 10.0][:len(c.tried)]
    if c.weight is None:
        assert len(c.tried) == 1 and c.tried[0][1] <= c.natural_best
    else:
        assert float(c.scores.min()) > c.natural_best
        assert all(s <= c.natural_best for w, s in c.tried if w > c.weight)

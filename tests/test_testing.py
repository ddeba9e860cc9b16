"""The public toolkit `lucent_dsl.testing`: its checkers catch broken terms, parameterizations and
transforms (each law can fail), pass correct ones, and its strategies and models are what they say."""
from __future__ import annotations

import importlib
import pathlib
import runpy
import subprocess
import sys

import hypothesis
import pytest
import strategies as S
import torch
from hypothesis import given, settings, strategies as st

import lucent_dsl as ld
from lucent_dsl import param, transforms
from lucent_dsl.dsl.expr import Site, Term, evaluate, register
from lucent_dsl.dsl.printing import to_text
from lucent_dsl.errors import InvalidArgumentError, ObjectiveShapeError
from lucent_dsl.objectives import LayerTerm
from lucent_dsl.objectives._term import frozen, per_image, rows_channels_positions, tensor_at
from lucent_dsl.testing import (
    LAYOUTS,
    ActivationSpec,
    activation_specs,
    batched_lists,
    check_objective,
    check_param,
    check_transform,
    exprs,
    full_acts,
    image_batches,
    layout_model,
    random_models,
    shaped_model,
    term,
)

EXAMPLE = pathlib.Path(__file__).parent.parent / "examples" / "custom_term_laws.py"
# The checks of broken things fail fast: the first counterexample, unshrunk, and nothing saved.
FAST = settings(phases=[hypothesis.Phase.generate], database=None)
INDEX = {"index": lambda spec: st.integers(0, spec.channels - 1)}


def fails(law: str, check, *args, **kw) -> str:
    with pytest.raises(AssertionError, match=f"law '{law}'") as info:
        check(*args, settings=FAST, **kw)
    return str(info.value)


def test_hypothesis_stays_an_optional_extra(monkeypatch):
    code = "import sys, lucent_dsl as ld; ld.render; assert 'hypothesis' not in sys.modules, 'lucent_dsl imports it'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    monkeypatch.setitem(sys.modules, "hypothesis", None)  # as if it were not installed
    for name in [m for m in sys.modules if m == "lucent_dsl.testing" or m.startswith("lucent_dsl.testing.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError, match=r"pip install 'lucent_dsl\[testing\]'"):
        importlib.import_module("lucent_dsl.testing")


def test_the_example_runs(capsys):
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    assert "obeys every law" in capsys.readouterr().out


# --- check_objective catches broken terms ----------------------------------------------------------------


@ld.objective
def tst_mixes_images(a):
    if a.dim() != 4:
        raise ObjectiveShapeError(f"tst_mixes_images reads (B, C, H, W) maps, got {tuple(a.shape)}")
    means = a.flatten(2).mean(-1)[:, 0]
    return means - means.mean()  # subtracts the batch mean: image j moves image i's score


@ld.objective
def tst_detached(a):
    return a.detach().reshape(a.shape[0], -1).mean(1) + 0 * a.reshape(a.shape[0], -1)[:, 0]


@ld.objective
def tst_not_finite(a):
    return a.reshape(a.shape[0], -1).mean(1).log()  # log of negative means: NaN


@ld.objective
def tst_index_error(a):
    return a[:, 0].reshape(a.shape[0], -1).mean(1)  # IndexError on a (B,) activation, not ObjectiveShapeError


@ld.objective
def tst_channels_first(a):
    if a.dim() not in (2, 3, 4):
        raise ObjectiveShapeError(f"tst_channels_first: no layout {tuple(a.shape)}")
    return a[:, 0].reshape(a.shape[0], -1).mean(1)  # axis 1 is not the channel axis of tokens


@ld.objective
def tst_batch_total(a):
    return a.sum() * torch.ones(a.shape[0], dtype=a.dtype)  # every row gets the batch total


def test_a_score_that_mixes_images_breaks_per_image():
    message = fails("per image", check_objective, tst_mixes_images, layouts=("nchw",), models=False)
    assert ("changing image" in message or "reaches images" in message) and "tst_mixes_images('L'" in message


def test_a_detached_score_has_no_gradient():
    assert "no gradient" in fails("scores", check_objective, tst_detached, accepts_ranks=(1, 5), models=False)


def test_non_finite_scores_are_caught():
    assert "non-finite" in fails("scores", check_objective, tst_not_finite, accepts_ranks=(1, 5), models=False)


def test_index_errors_on_wrong_shapes_are_caught():
    message = fails("wrong shapes", check_objective, tst_index_error, accepts_ranks=(5,), models=False,
                    strict_shapes=True)  # a user's term is held to unclaimed ranks when asked (issue 28, item 8)
    assert "IndexError" in message and "not ObjectiveShapeError" in message


def test_a_term_that_reads_the_wrong_axis_breaks_the_layout_law():
    message = fails("layouts", check_objective, tst_channels_first, models=False)
    assert "tokens" in message or "vectors" in message or "nchw" in message


def test_a_term_that_ignores_batch_breaks_the_batch_law():
    @frozen
    class TstNoMask(LayerTerm):
        name = "tst_no_mask"
        positional = ("layer",)
        layer: str
        batch: object = None
        model: str | None = None

        def score(self, acts, n):
            site, a = self.read(acts)
            return per_image(self, rows_channels_positions(self, site, a).mean((1, 2)), n, None)  # batch ignored

    register("tst_no_mask", lambda layer, *, batch=None, model=None: TstNoMask(layer, batch, model), replace=True)
    message = fails("batch", check_objective, TstNoMask, models=False)
    assert "batch=" in message


def test_an_unregistered_term_class_breaks_the_algebra():
    @frozen
    class TstUnregistered(LayerTerm):
        name = "tst_unregistered"
        positional = ("layer",)
        layer: str
        batch: object = None
        model: str | None = None

        def score(self, acts, n):
            site, a = self.read(acts)
            return per_image(self, rows_channels_positions(self, site, a).mean((1, 2)), n, self.batch)

    assert "register" in fails("algebra", check_objective, TstUnregistered, models=False)


def test_a_batch_level_score_is_not_per_image_but_can_claim_scope_batch():
    fails("per image", check_objective, tst_batch_total, accepts_ranks=(1, 5), models=False)
    check_objective(tst_batch_total, accepts_ranks=(1, 5), scope="batch", models=False, max_examples=5)


def test_claims_are_checked_before_anything_runs():
    with pytest.raises(InvalidArgumentError, match="told its layout"):
        check_objective(ld.diversity, layouts=("nchw", "nhwc"))  # no layout= keyword: NHWC cannot be told
    with pytest.raises(InvalidArgumentError, match="scope"):
        check_objective(ld.channel, scope="images")
    with pytest.raises(InvalidArgumentError, match="layouts"):
        check_objective(ld.channel, layouts=("maps",))
    with pytest.raises(InvalidArgumentError, match="no term of it fits"):
        check_objective(ld.total_variation, layouts=("tokens",))  # a spatial penalty of maps only


# --- layout-aware terms: NHWC maps and prefix tokens, told by a keyword ---------------------------------------


@pytest.mark.parametrize("term", [ld.channel, ld.neuron, ld.direction])
def test_built_in_terms_obey_the_laws_on_nhwc_maps_told_by_layout(term):
    """`layout=` on a built-in term: the same laws hold on channels-last maps as on NCHW ones."""
    check_objective(term, layouts=("nchw", "nhwc", "tokens"), max_examples=4)


def channel_mean(term, acts, n, axes: str, prefix: int):
    """Mean of channel `term.index` of activations whose channels are where `axes` says."""
    a = tensor_at(term, acts, term.sites()[0])
    if a.dim() != {"nchw": 4, "nhwc": 4, "tokens": 3, "vectors": 2}[axes]:
        raise ObjectiveShapeError(f"{term!r}: activation {tuple(a.shape)} is no {axes} layout")
    a = {"nhwc": lambda: a.permute(0, 3, 1, 2), "tokens": lambda: a[:, prefix:].transpose(1, 2)}.get(axes, lambda: a)()
    if term.index >= a.shape[1]:
        raise ObjectiveShapeError(f"{term!r}: {a.shape[1]} channels")
    return per_image(term, a.reshape(a.shape[0], a.shape[1], -1)[:, term.index].mean(-1), n, term.batch)


@frozen
class TstChannelMean(Term):
    """Mean of one channel; `axes=` says where the channels are ("nhwc"; "tokens" after `prefix` tokens)."""

    name = "tst_channel_mean"
    positional = ("layer", "index")
    layer: str
    index: int
    axes: str = "nchw"
    prefix: int = 0
    batch: object = None
    model: str | None = None

    def sites(self):
        return (Site(self.model, self.layer),)

    def score(self, acts, n):
        return channel_mean(self, acts, n, self.axes, self.prefix)


def tst_channel_mean(layer, index, *, axes="nchw", prefix=0, batch=None, model=None):
    return TstChannelMean(layer, index, axes, prefix, batch, model)


register("tst_channel_mean", tst_channel_mean, replace=True)


def tell(spec: ActivationSpec) -> dict:
    return {"axes": spec.kind, "prefix": spec.prefix}


def test_a_layout_aware_term_passes_on_every_layout_with_prefix_tokens():
    # models=False: a plan hands terms its own (canonical) reading of each site, not the raw layout `axes=` names
    check_objective(tst_channel_mean, args=INDEX, layouts=LAYOUTS, prefix_tokens=range(6), tell_layout=tell,
                    models=False, max_examples=10)


def test_term_classes_are_targets_too():
    check_objective(ld.objectives.Channel, models=False, max_examples=5)  # a built-in class draws its own arguments
    check_objective(TstChannelMean, args=INDEX, layouts=("nchw",), models=False, max_examples=5)  # cls(layer="L", ...)


def test_a_layout_aware_term_told_the_wrong_layout_is_caught():
    message = fails("(scores|layouts)", check_objective, tst_channel_mean, args=INDEX, layouts=("nchw", "nhwc"),
                    tell_layout=lambda spec: {"axes": "nchw"}, models=False)  # reads NHWC maps as NCHW
    assert "on nhwc activations" in message


@frozen
class TstPatternMean(Term):
    """The same term told its layout as `lucent_dsl.models.layouts` writes it: `layout="b h w c"`."""

    name = "tst_pattern_mean"
    positional = ("layer", "index")
    layer: str
    index: int
    layout: str = "b c h w"
    batch: object = None
    model: str | None = None

    def sites(self):
        return (Site(self.model, self.layer),)

    def score(self, acts, n):
        axes = {"b c h w": "nchw", "b h w c": "nhwc", "b c": "vectors"}.get(self.layout, "tokens")
        prefix = int(self.layout.split("(")[1].split("+")[0]) if "+" in self.layout else 0
        return channel_mean(self, acts, n, axes, prefix)


def tst_pattern_mean(layer, index, *, layout="b c h w", batch=None, model=None):
    return TstPatternMean(layer, index, layout, batch, model)


register("tst_pattern_mean", tst_pattern_mean, replace=True)


def test_a_term_with_layout_is_told_each_einops_pattern():
    assert ActivationSpec("tokens", 4, 3, 3, prefix=5).pattern == "b (5 + h w) c"
    check_objective(tst_pattern_mean, args=INDEX, layouts=LAYOUTS, prefix_tokens=(0, 2, 5), models=False,
                    max_examples=10)  # no tell_layout: layout= gets ActivationSpec.pattern


# --- check_param and check_transform ---------------------------------------------------------------------


@pytest.mark.parametrize("factory, kw", [
    (param.pixel, {}), (param.fft, {"kwargs": {"squash": "clamp"}}), (param.maco, {"channels": (3,)}),
    (param.cppn, {"kwargs": {"layers": 2, "hidden": 4}}), (param.shared, {"kwargs": {"factors": (2,), "interpolate": (4,)}}),
    (param.alpha, {"out_channels": 4}),
], ids=["pixel", "fft", "maco", "cppn", "shared", "alpha"])
def test_every_parameterization_passes(factory, kw):
    check_param(factory, max_examples=5, **kw)


def unsquashed(size, *, batch=1, channels=3):
    p = param.pixel(size, batch=batch, channels=channels, sd=1.0)
    return param.ImageParam(p.init, lambda leaves: leaves["pixels"] * 1.0)  # no squash: values leave [0, 1]


def global_rng(size, *, batch=1, channels=3):
    p = param.pixel(size, batch=batch, channels=channels)
    return param.ImageParam(lambda g: p.init(None), p.to_image)  # ignores the generator: no replay


def lossy_init(size, *, batch=1, channels=3, init=None):
    p = param.pixel(size, batch=batch, channels=channels, init=None if init is None else init * 0.9)
    return p


@pytest.mark.parametrize("factory, law, words", [
    (unsquashed, "image", "[0, 1]"), (global_rng, "seed", "seed"), (lossy_init, "init", "away from the init"),
])
def test_broken_parameterizations_are_caught(factory, law, words):
    assert words in fails(law, check_param, factory)


@pytest.mark.parametrize("factory, kw", [
    (transforms.jitter, {"strengths": st.integers(1, 3), "zero": 0}),
    (lambda d: transforms.random_rotate((-d, d)), {"strengths": st.floats(1, 30), "zero": 0.0}),
    (lambda s: transforms.random_scale((1 - s, 1 + s)), {"strengths": st.floats(0.05, 0.3), "zero": 0.0}),
    (transforms.noise, {"strengths": st.floats(0.01, 0.2), "zero": 0.0}),
    (transforms.pad, {"strengths": st.integers(1, 3), "zero": 0, "keeps_shape": False, "random": False}),
    (transforms.crops, {"strengths": st.integers(1, 3), "keeps_shape": False}),
], ids=["jitter", "rotate", "scale", "noise", "pad", "crops"])
def test_every_transform_passes(factory, kw):
    check_transform(factory, max_examples=5, **kw)


def shared_shift(pixels):
    def sample(g, shape):
        return torch.randint(-pixels, pixels + 1, (2,), generator=g)  # one shift for the whole batch

    return transforms.Transform(sample, lambda image, s: torch.roll(image, (int(s[0]), int(s[1])), (2, 3)))


def mixing(strength):
    return transforms.Transform(lambda g, shape: None, lambda image, p: image + strength * image.mean(0, keepdim=True))


def random_size(strength):
    def sample(g, shape):
        return int(torch.randint(1, 9, (1,), generator=g))  # 8 sizes: two seeds rarely agree

    return transforms.Transform(sample, lambda image, k: image.repeat(1, 1, k, 1))


@pytest.mark.parametrize("factory, law, words, kw", [
    (shared_shift, "per image", "share one draw", {"strengths": st.integers(2, 4)}),
    (mixing, "per image", "changed the output of other images", {"strengths": st.floats(0.5, 1), "random": False}),
    (random_size, "shape", "depends on the draw", {"strengths": st.just(1), "keeps_shape": False}),
    (lambda s: transforms.noise(max(s, 0.1)), "zero strength", "identity", {"strengths": st.just(0.2), "zero": 0.0}),
])
def test_broken_transforms_are_caught(factory, law, words, kw):
    assert words in fails(law, check_transform, factory, **kw)


# --- strategies and models ---------------------------------------------------------------------------------


@settings(max_examples=20)
@given(activation_specs(channels=(1, 5), sides=(1, 4), dtypes=(torch.float32, torch.float64)), st.integers(1, 3))
def test_layouts_round_trip_through_the_grid_and_match_the_vocabulary(lay, rows):
    a = lay.tensor(rows, seed=rows)
    assert a.shape == (rows, *lay.shape) and a.dtype == lay.dtype
    grid = lay.to_grid(a)
    assert grid.shape == (rows, lay.channels, lay.height, lay.width)
    back = lay.from_grid(grid, a[:, :lay.prefix] if lay.kind == "tokens" else None)
    assert torch.equal(back, a)
    if lay.kind != "nhwc" and lay.prefix <= 1:
        assert ActivationSpec.of(lay.shape, lay.dtype) == lay  # read by rank, as terms without layout= read it
        expected = a[:, :, 0].mean(1) if lay.kind == "tokens" else grid[:, 0].mean((1, 2))  # every token counts
        torch.testing.assert_close(ld.channel("L", 0).score({Site(None, "L"): a}, rows), expected)


@settings(max_examples=12)
@given(random_models(channels=(1, 6), sides=(1, 3), prefix=range(6), dtypes=(torch.float32, torch.float64)),
       st.integers(1, 3))
def test_random_models_have_the_layout_they_claim(rm, n):
    x = torch.rand((n, *rm.image_shape), dtype=rm.layout.dtype, requires_grad=True)
    seen = []
    handle = rm.module.L.register_forward_hook(lambda m, i, out: seen.append(out))
    try:
        assert rm.module(x).shape == (n, 5)
    finally:
        handle.remove()
    assert seen[0].shape == (n, *rm.layout.shape) and seen[0].dtype == rm.layout.dtype
    (g,) = torch.autograd.grad(seen[0].sum(), x)
    assert float(g.abs().sum()) > 0
    scores = [ld.compile_plan(ld.layer("L"), rm.module, truncate=mode) for mode in ("fx", "hooks")]
    fx, hooks = (plan.scores(plan.forward(x), n).per_image for plan in scores)
    torch.testing.assert_close(fx, hooks)
    torch.testing.assert_close(fx, seen[0].pow(2).flatten(1).mean(1))


@pytest.mark.parametrize("shape", [(), (4,), (3, 5), (2, 3, 4), (2, 1, 3, 4)])
def test_shaped_models_output_any_shape(shape):
    x = torch.rand(2, 3, 9, 7)
    plan = ld.compile_plan(ld.layer("L") if len(shape) in (1, 2, 3) else ld.l2(layer="L"), shaped_model(shape))
    assert plan.forward(x)[Site("model", "L")].shape == (2, *shape)


@settings(max_examples=20)
@given(image_batches(channels=(1, 3, 4)))
def test_image_batches_are_images(x):
    assert x.dim() == 4 and x.shape[1] in (1, 3, 4) and 0 <= float(x.min()) <= float(x.max()) <= 1


TABLE = {None: {"maps": ActivationSpec("nchw", 5, 3, 4), "rgba": (4, 3, 3), "tokens": (10, 3), "fc": (6,)}}


@pytest.mark.parametrize("name", sorted(S.BUILDERS))
def test_every_builder_draws_terms_that_score(name):
    image = (4, 5, 6) if name == "opacity" else (3, 5, 6)
    builders = S.BUILDERS

    @settings(max_examples=5, database=None)
    @given(term(TABLE, 3, image=image, names=(name,), builders=builders))
    def scores(t):
        v = evaluate(t, full_acts(TABLE, 3, image=image), 3)
        assert v.shape == (3,) and bool(torch.isfinite(v).all())

    scores()


@settings(max_examples=15)
@given(batched_lists(S.TABLE, 3, image=S.IMAGE_SHAPE, builders=S.BUILDERS), st.integers(0, 99))
def test_batched_lists_put_each_objective_on_its_own_image(objectives, seed):
    acts = S.full_acts(seed=seed)
    total = evaluate(ld.batched(objectives), acts, 3)
    for i, e in enumerate(objectives):
        torch.testing.assert_close(total[i], evaluate(e, acts, 3)[i], rtol=1e-9, atol=1e-9)


@settings(max_examples=25)
@given(exprs(S.TABLE, 3, image=S.IMAGE_SHAPE, builders=S.BUILDERS, max_leaves=5))
def test_exprs_round_trip_and_evaluate(e):
    assert ld.parse(to_text(e)) == e and ld.from_json(ld.to_json(e)) == e
    assert evaluate(e, S.full_acts(), 3).shape == (3,)


def test_the_toolkit_leaves_the_global_random_state_alone():
    state = torch.get_rng_state()
    layout_model(ActivationSpec("tokens", 4, 2, 2, 2), seed=3)
    shaped_model((2, 3), seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    a, b = layout_model(ActivationSpec("nchw", 4, 2, 3), seed=3), layout_model(ActivationSpec("nchw", 4, 2, 3), seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.module.parameters(), b.module.parameters()))


# --- issue 28, item 8: the default check passes correct, layout-agnostic code ---------------------------------


@ld.objective
def tst_mean_of_every_axis(a):
    return a.mean(dim=tuple(range(1, a.dim())))  # any rank: (B,) scores its values, (B, C, H, W) its maps


def test_a_correct_layout_agnostic_term_passes_the_default_check():
    check_objective(tst_mean_of_every_axis, max_examples=6)  # it scores (B,) and (B, 2, 2, 2, 2) correctly


def test_shape_strictness_is_asked_for_and_built_ins_keep_it():
    message = fails("wrong shapes", check_objective, tst_mean_of_every_axis, strict_shapes=True, models=False)
    assert "strict_shapes=True" in message
    fails("wrong shapes", check_objective, ld.l1, models=False)  # a built-in claims exact ranks: strict by default
    check_objective(ld.l1, strict_shapes=False, models=False, max_examples=4)

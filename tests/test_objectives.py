"""The vocabulary against one contract (a conformance table, like optax's _MAIN_OPTIMIZERS_UNDER_TEST),
then the exact values that lucid/lucent users rely on: centres, channel axes, crops, batch masks."""
from __future__ import annotations

import dataclasses as dc
import math

import pytest
import strategies as S
import torch
from hypothesis import Phase, given, settings, strategies as st

import lucent_dsl as ld
from lucent_dsl.dsl.expr import IMAGE, VOCABULARY, Site
from lucent_dsl.errors import InvalidArgumentError, ObjectiveShapeError
from lucent_dsl.objectives import VOCABULARY_FACTORIES

L = Site(None, "L")
IMAGE_SITE = Site(None, IMAGE)
RGB_IMAGES = st.tuples(st.sampled_from((1, 2, 3, 5)), st.integers(1, 4), st.integers(1, 4))  # opacity needs RGBA


@dc.dataclass(frozen=True)
class Entry:
    """One vocabulary entry under test and what it claims (the keywords of `check_objective`)."""

    name: str
    claims: dict = dc.field(default_factory=dict)


ENTRIES = [
    Entry("channel"),
    Entry("neuron"),
    Entry("layer"),
    Entry("direction"),
    Entry("direction_neuron"),
    Entry("channel_weight"),
    Entry("neuron_weight"),
    Entry("channel_interpolate"),  # per image, but no batch=: batched renders refuse it
    Entry("alignment", {"scope": "batch", "min_images": 2}),
    Entry("diversity", {"scope": "batch", "min_images": 2, "channels": (2, 6)}),  # 1 channel: a 1x1 Gram, always 1
    Entry("class_logit"),
    Entry("activation_match"),
    Entry("total_variation", {"layouts": ("nchw",)}),
    Entry("blur", {"layouts": ("nchw",)}),
    Entry("l1", {"accepts_ranks": (5,)}),
    Entry("l2", {"accepts_ranks": (5,)}),
    Entry("opacity", {"layouts": ("nchw",), "channels": (4, 4), "wrong_shapes": RGB_IMAGES}),
    Entry("masked", {"layouts": ("nchw", "tokens")}),
    Entry("source_match", {"scope": "source", "min_images": 2}),
    Entry("source_l2", {"scope": "source", "min_images": 2}),
    Entry("style"),
    Entry("facet"),
    Entry("tst_energy", {"accepts_ranks": (1, 5), "builder": S.BUILDERS["tst_energy"]}),  # a custom @objective
]
BY_NAME = {e.name: e for e in ENTRIES}


def test_table_covers_the_whole_vocabulary():
    builtin = set(VOCABULARY_FACTORIES) - {"deepdream"}  # deepdream is layer (see test_deepdream_is_layer)
    builtin -= {"clip_text"}  # it needs a CLIP-like model's text tower: tests/test_clip.py
    assert builtin | {"tst_energy"} == set(BY_NAME)
    assert set(S.BUILDERS) == set(BY_NAME)
    registered = {name for name, f in VOCABULARY.items()  # the library's own, not @objective or test registrations
                  if f.__module__.startswith("lucent_dsl.") and not getattr(f, "is_custom_objective", False)}
    assert registered == set(VOCABULARY_FACTORIES)  # every registered library factory is a built-in, and back


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_conformance(entry):
    """Every term obeys every law of lucent_dsl.testing.check_objective (what users run on their own terms)."""
    target = S.tst_energy if entry.name == "tst_energy" else VOCABULARY_FACTORIES[entry.name]
    S.check_objective(target, max_examples=10, **entry.claims)


def test_conformance_claims_are_checked():
    """The claims matter: claim what a term does not do and the checker finds the counterexample."""
    fast = settings(phases=[Phase.generate], database=None)  # the first counterexample, unshrunk
    with pytest.raises(AssertionError, match="law 'per image'"):
        S.check_objective(ld.diversity, min_images=2, channels=(2, 6), models=False, settings=fast)
    with pytest.raises(AssertionError, match="law 'wrong shapes'"):
        S.check_objective(ld.l1, models=False, settings=fast)  # l1 reads (B, C, D, H, W) volumes too
    with pytest.raises(AssertionError, match="law 'per image'"):
        S.check_objective(ld.source_l2, min_images=2, models=False, settings=fast)  # image 0 is every image's source


@pytest.mark.parametrize("value", [(torch.ones(2, 3), torch.ones(2, 3)), {"out": torch.ones(2, 3)}, None])
@pytest.mark.parametrize("name", ["channel", "l1", "diversity", "tst_energy"])
def test_non_tensor_activations_raise_shape_errors(name, value):
    term = {"channel": ld.channel("L", 0), "l1": ld.l1(layer="L"), "diversity": ld.diversity("L"),
            "tst_energy": S.tst_energy("L")}[name]
    with pytest.raises(ObjectiveShapeError, match="select an entry"):
        term.score({L: value}, 2)


# --- positions: centres on non-square maps, token grids ----------------------------------------------


@given(S.maps_shapes(), st.integers(1, 3), st.data())
def test_neuron_default_is_the_true_centre_of_non_square_maps(shape, n, data):
    c, h, w = shape
    i = data.draw(st.integers(0, c - 1))
    a = torch.arange(n * c * h * w, dtype=torch.float64).reshape(n, c, h, w)
    centre = a[:, i, h // 2, w // 2]  # lucent used (W//2, W//2)-style indexing here
    assert torch.equal(ld.neuron("L", i).score({L: a}, n), centre)
    onehot = [1.0 if j == i else 0.0 for j in range(c)]
    assert torch.equal(ld.direction_neuron("L", onehot).score({L: a}, n), centre)
    torch.testing.assert_close(ld.neuron_weight("L", onehot).score({L: a}, n), centre / c)


@given(S.maps_shapes(), st.data())
def test_neuron_x_is_the_column_and_y_the_row(shape, data):
    c, h, w = shape
    x, y, i = data.draw(st.integers(0, w - 1)), data.draw(st.integers(0, h - 1)), data.draw(st.integers(0, c - 1))
    a = S.seeded((2, c, h, w), 1, torch.float64)
    assert torch.equal(ld.neuron("L", i, x=x, y=y).score({L: a}, 2), a[:, i, y, x])
    assert torch.equal(ld.neuron("L", i, x=x).score({L: a}, 2), a[:, i, h // 2, x])
    with pytest.raises(ObjectiveShapeError, match="outside"):
        ld.neuron("L", i, x=w).score({L: a}, 2)
    with pytest.raises(ObjectiveShapeError, match="outside"):
        ld.neuron("L", i, y=h).score({L: a}, 2)


@given(st.integers(1, 5), st.booleans(), st.integers(1, 6), st.data())
def test_tokens_use_the_last_axis_as_channels(side, cls, c, data):
    t = side * side + cls
    i = data.draw(st.integers(0, c - 1))
    a = S.seeded((2, t, c), 2, torch.float64)
    torch.testing.assert_close(ld.channel("L", i).score({L: a}, 2), a[:, :, i].mean(1))
    tok = data.draw(st.integers(0, t - 1))
    assert torch.equal(ld.neuron("L", i, token=tok).score({L: a}, 2), a[:, tok, i])
    centre = cls + (side // 2) * side + side // 2
    assert torch.equal(ld.neuron("L", i).score({L: a}, 2), a[:, centre, i])
    x, y = data.draw(st.integers(0, side - 1)), data.draw(st.integers(0, side - 1))
    assert torch.equal(ld.neuron("L", i, x=x, y=y).score({L: a}, 2), a[:, cls + y * side + x, i])
    vec = S.seeded((c,), 3, torch.float64)
    torch.testing.assert_close(ld.direction("L", vec).score({L: a}, 2), (a @ vec).mean(1))
    torch.testing.assert_close(ld.class_logit(i, layer="L").score({L: a}, 2), a[:, :, i].mean(1))


def test_tokens_that_are_no_square_grid_need_token():
    a = torch.rand(2, 7, 4)  # 7 and 6 are not squares
    with pytest.raises(ObjectiveShapeError, match="token="):
        ld.neuron("L", 1).score({L: a}, 2)
    assert torch.equal(ld.neuron("L", 1, token=6).score({L: a}, 2), a[:, 6, 1])
    with pytest.raises(ObjectiveShapeError, match="tokens"):
        ld.neuron("L", 1, token=7).score({L: a}, 2)
    with pytest.raises(InvalidArgumentError):
        ld.neuron("L", 1, token=1, x=0).score({L: torch.rand(2, 10, 4)}, 2)


@pytest.mark.parametrize("kw", [{"x": 0}, {"y": 0}, {"token": 0}])
def test_positions_on_vectors_and_tokens_on_maps_raise(kw):
    with pytest.raises(ObjectiveShapeError):
        ld.neuron("L", 0, **kw).score({L: torch.rand(2, 5)}, 2)
    if "token" in kw:
        with pytest.raises(ObjectiveShapeError, match="token"):
            ld.neuron("L", 0, **kw).score({L: torch.rand(2, 5, 3, 4)}, 2)


# --- channels ---------------------------------------------------------------------------------------


@given(S.shapes(), st.integers(0, 3), st.data())
def test_channel_out_of_range_raises_shape_errors(shape, extra, data):
    c = S.channels(shape)
    a = S.seeded((2, *shape), 0)
    vec = [1.0] * (c + 1 + extra)
    terms = [ld.channel("L", c + extra), ld.neuron("L", c + extra), ld.class_logit(c + extra, layer="L"),
             ld.channel_interpolate("L", 0, "L", c + extra), ld.direction("L", vec), ld.direction_neuron("L", vec),
             ld.channel_weight("L", vec), ld.neuron_weight("L", vec)]
    for term in terms:
        with pytest.raises(ObjectiveShapeError, match="channels"):
            term.score({L: a}, 2)


@given(S.shapes(), st.data())
def test_channel_is_the_mean_over_positions(shape, data):
    c = S.channels(shape)
    i = data.draw(st.integers(0, c - 1))
    a = S.seeded((3, *shape), 4, torch.float64)
    cp = {"nchw": lambda: a.flatten(2), "tokens": lambda: a.transpose(1, 2), "vectors": lambda: a[..., None]}
    expected = cp[S.kind(shape)]()[:, i].mean(-1)
    torch.testing.assert_close(ld.channel("L", i).score({L: a}, 3), expected)
    onehot = [1.0 if j == i else 0.0 for j in range(c)]
    torch.testing.assert_close(ld.direction("L", onehot).score({L: a}, 3), expected)
    torch.testing.assert_close(ld.channel_weight("L", onehot).score({L: a}, 3), expected / c)


# --- crops and batch masks --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["channel", "neuron", "layer", "direction", "class_logit", "l2", "tst_energy"])
@given(shape=S.shapes(), n=st.integers(1, 3), crops=st.integers(2, 3), seed=st.integers(0, 99))
@settings(max_examples=15)
def test_crops_are_averaged_per_image_crop_major(name, shape, n, crops, seed):
    term = {"channel": ld.channel("L", 0), "neuron": ld.neuron("L", 0), "layer": ld.layer("L"),
            "direction": ld.direction("L", [0.5] * S.channels(shape)), "class_logit": ld.class_logit(0, layer="L"),
            "l2": ld.l2(layer="L", target=0.5), "tst_energy": S.tst_energy("L", mode="square")}[name]
    a = S.seeded((crops * n, *shape), seed, torch.float64)
    per_crop = torch.stack([term.score({L: a[k * n:(k + 1) * n]}, n) for k in range(crops)])
    torch.testing.assert_close(term.score({L: a}, n), per_crop.mean(0))


def test_rows_that_are_not_a_multiple_of_the_images_raise():
    with pytest.raises(ObjectiveShapeError, match="multiple"):
        ld.channel("L", 0).score({L: torch.rand(5, 3)}, 2)


@given(S.shapes(), st.integers(1, 4), st.data())
def test_batch_masks_other_images(shape, n, data):
    batch = data.draw(S.batches(n))
    a = S.seeded((n, *shape), 5, torch.float64)
    picked = set(range(n)) if batch is None else {batch} if isinstance(batch, int) else set(batch)
    mask = torch.tensor([1.0 if b in picked else 0.0 for b in range(n)], dtype=torch.float64)
    for build in (lambda **kw: ld.channel("L", 0, **kw), lambda **kw: ld.neuron("L", 0, **kw),
                  lambda **kw: ld.layer("L", **kw), lambda **kw: ld.l1(layer="L", **kw),
                  lambda **kw: ld.class_logit(0, layer="L", **kw), lambda **kw: S.tst_energy("L", **kw)):
        full = build().score({L: a}, n)
        masked = build(batch=batch).score({L: a}, n)
        assert torch.equal(masked, full * mask)


@pytest.mark.parametrize("batch", [2, range(1, 3), range(0, 10**12)])
def test_batch_past_the_images_raises(batch):
    with pytest.raises(ObjectiveShapeError, match="image"):
        ld.channel("L", 0, batch=batch).score({L: torch.rand(2, 3)}, 2)


# --- exact values of single objectives ------------------------------------------------------------------


def test_deepdream_is_layer_the_mean_square():
    assert ld.deepdream("L") == ld.layer("L")
    a = S.seeded((2, 3, 4, 5), 0, torch.float64)
    torch.testing.assert_close(ld.layer("L").score({L: a}, 2), a.pow(2).mean((1, 2, 3)))


def test_diversity_of_identical_images_is_one_and_of_one_image_zero():
    a = S.seeded((1, 4, 3, 5), 0, torch.float64).expand(3, -1, -1, -1)
    torch.testing.assert_close(ld.diversity("L").score({L: a}, 3), torch.ones(3, dtype=torch.float64))
    assert torch.equal(ld.diversity("L").score({L: a[:1]}, 1), torch.zeros(1, dtype=torch.float64))
    b = S.seeded((3, 4, 3, 5), 1, torch.float64).abs()
    assert bool((ld.diversity("L").score({L: b}, 3) < 1).all())


def test_alignment_is_zero_for_identical_images_and_positive_otherwise():
    a = S.seeded((1, 4, 3, 5), 0, torch.float64).expand(3, -1, -1, -1)
    assert torch.equal(ld.alignment("L").score({L: a}, 3), torch.zeros(3, dtype=torch.float64))
    b = S.seeded((3, 4, 3, 5), 1, torch.float64)
    assert bool((ld.alignment("L").score({L: b}, 3) > 0).all())


@given(st.integers(2, 5))
def test_channel_interpolate_goes_from_the_first_channel_to_the_second(n):
    a = S.seeded((n, 4, 3, 5), n, torch.float64)
    s = ld.channel_interpolate("L", 1, "L", 2).score({L: a}, n)
    c1, c2 = ld.channel("L", 1).score({L: a}, n), ld.channel("L", 2).score({L: a}, n)
    torch.testing.assert_close(s[0], c1[0])
    torch.testing.assert_close(s[-1], c2[-1])
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    torch.testing.assert_close(s, (1 - t) * c1 + t * c2)


def test_image_penalties_values():
    flat = torch.full((2, 3, 4, 6), 0.3, dtype=torch.float64)
    image = Site(None, IMAGE)
    assert torch.equal(ld.total_variation().score({image: flat}, 2), torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(ld.blur().score({image: flat}, 2), torch.zeros(2, dtype=torch.float64))
    a = S.seeded((2, 3, 4, 6), 0, torch.float64)
    tv = (a[..., 1:] - a[..., :-1]).abs().mean((1, 2, 3)) + (a[..., 1:, :] - a[..., :-1, :]).abs().mean((1, 2, 3))
    torch.testing.assert_close(ld.total_variation().score({image: a}, 2), tv)
    torch.testing.assert_close(ld.l1(target=0.5).score({image: a}, 2), (a - 0.5).abs().mean((1, 2, 3)))
    target = S.seeded((3, 4, 6), 1, torch.float64)
    torch.testing.assert_close(ld.l2(target=target).score({image: a}, 2), (a - target).pow(2).mean((1, 2, 3)))
    with pytest.raises(ObjectiveShapeError, match="target"):
        ld.l2(target=torch.ones(3, 4, 5)).score({image: a}, 2)
    assert ld.total_variation().sites() == (image,)


def test_activation_match_with_itself():
    a = S.seeded((2, 4, 3, 5), 0, torch.float64)
    torch.testing.assert_close(ld.activation_match("L", a, cossim_pow=0).score({L: a}, 2), a.pow(2).sum(1).mean((1, 2)))
    one = ld.activation_match("L", a[0], cossim_pow=0).score({L: a}, 2)
    torch.testing.assert_close(one, (a * a[:1]).sum(1).mean((1, 2)))
    with pytest.raises(ObjectiveShapeError, match="target shape"):
        ld.activation_match("L", torch.ones(4, 3, 4)).score({L: a}, 2)


def test_opacity_is_the_mean_alpha_and_needs_rgba():
    rgba = S.seeded((2, 4, 3, 5), 0, torch.float64).sigmoid()
    torch.testing.assert_close(ld.opacity().score({IMAGE_SITE: rgba}, 2), rgba[:, 3].mean((1, 2)))
    second = torch.tensor([0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(ld.opacity(batch=1).score({IMAGE_SITE: rgba}, 2), rgba[:, 3].mean((1, 2)) * second)
    with pytest.raises(ObjectiveShapeError, match="RGBA"):
        ld.opacity().score({IMAGE_SITE: rgba[:, :3]}, 2)


def test_source_terms_compare_each_crop_with_the_same_crop_of_image_0():
    n, crops = 3, 2
    a = S.seeded((crops * n, 4, 3, 5), 0, torch.float64)
    src = a.reshape(crops, n, 4, 3, 5)[:, :1].expand(crops, n, 4, 3, 5).reshape(a.shape)
    l2 = ld.source_l2("L").score({L: a}, n)
    torch.testing.assert_close(l2, (a - src).pow(2).mean((1, 2, 3)).reshape(crops, n).mean(0))
    assert float(l2[0]) == 0.0
    match = ld.source_match("L", cossim_pow=0).score({L: a}, n)
    torch.testing.assert_close(match, (a * src).sum(1).mean((1, 2)).reshape(crops, n).mean(0))
    with pytest.raises(ObjectiveShapeError):
        ld.source_l2("L").score({L: a[:, 0, 0, 0]}, n)  # a (B,) activation: no layout (was an IndexError)


def test_class_logit_by_name_needs_a_plan():
    with pytest.raises(ObjectiveShapeError, match="resolved"):
        ld.class_logit("cat").score({Site(None, "@output"): torch.rand(2, 5)}, 2)


# --- factories check their arguments -------------------------------------------------------------------

bad_index = st.one_of(st.integers(max_value=-1), st.sampled_from([True, False, 1.0, "1", 2.5, 10**100 * 1.0]))


@given(bad_index)
def test_factories_reject_bad_indices(bad):
    builds = [lambda: ld.channel("L", bad), lambda: ld.neuron("L", bad), lambda: ld.neuron("L", 0, x=bad),
              lambda: ld.neuron("L", 0, y=bad), lambda: ld.neuron("L", 0, token=bad),
              lambda: ld.channel_interpolate("L", 0, "L", bad), lambda: ld.direction_neuron("L", [1.0], x=bad)]
    if not isinstance(bad, str):  # a string is a class name
        builds.append(lambda: ld.class_logit(bad))
    for build in builds:
        with pytest.raises(InvalidArgumentError):
            build()
    with pytest.raises(InvalidArgumentError):
        ld.channel("L", None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "build",
    [
        lambda: ld.channel("", 1),
        lambda: ld.channel(3, 1),  # type: ignore[arg-type]
        lambda: ld.channel("L", 1, batch=True),
        lambda: ld.channel("L", 1, batch=range(0)),
        lambda: ld.channel("L", 1, batch=range(-1, 2)),
        lambda: ld.channel("L", 1, batch=-1),
        lambda: ld.channel("L", 1, model=""),
        lambda: ld.direction("L", []),
        lambda: ld.direction("L", "abc"),
        lambda: ld.direction("L", [1.0, math.nan]),
        lambda: ld.direction("L", torch.ones(2, 2)),
        lambda: ld.direction("L", [1.0], cossim_pow=math.inf),
        lambda: ld.direction("L", [True]),
        lambda: ld.alignment("L", decay_ratio=0),
        lambda: ld.class_logit(""),
        lambda: ld.class_logit(-1),
        lambda: ld.l1(target=math.nan),
        lambda: ld.l2(target=[1.0, math.inf]),
        lambda: ld.total_variation(model="a"),  # the image belongs to no model
        lambda: ld.activation_match("L", "abc"),
        lambda: S.tst_energy(),
        lambda: S.tst_energy("L", power=object()),
        lambda: S.tst_energy("L", power=math.nan),
        lambda: S.tst_energy("L", weights=(1.0, math.inf)),
        lambda: S.tst_energy("L", **{"not a name": 1}),
    ],
)
def test_factories_reject_bad_arguments(build):
    with pytest.raises(InvalidArgumentError):
        build()


def test_vectors_accept_tensors_and_store_floats():
    assert ld.direction("L", torch.tensor([1, 2])) == ld.direction("L", [1.0, 2.0])
    assert ld.direction("L", [1, 2]).vector == (1.0, 2.0)  # type: ignore[attr-defined]
    assert ld.direction("L", (1, 2), cossim_pow=1) == ld.direction("L", [1.0, 2.0], cossim_pow=1.0)


# --- custom objectives ------------------------------------------------------------------------------


def test_custom_objective_scalar_and_wrong_shapes():
    @ld.objective(name="tst_scalar")
    def scalar(a, *, mode="scalar"):
        if mode == "scalar":
            return a.sum()
        if mode == "bad":
            return a.sum(0)
        return 3.0

    a = S.seeded((2, 3), 0, torch.float64)
    torch.testing.assert_close(scalar("L").score({L: a}, 2), a.sum().expand(2) / 2)
    with pytest.raises(ObjectiveShapeError, match="returned shape"):
        scalar("L", mode="bad").score({L: a}, 2)
    with pytest.raises(ObjectiveShapeError, match="not a tensor"):
        scalar("L", mode="float").score({L: a}, 2)
    assert ld.parse("tst_scalar('L', mode='bad')") == scalar("L", mode="bad")


def test_custom_objective_gets_tensors_for_tensor_parameters():
    ref = torch.tensor([1.0, 2.0])
    a = S.seeded((2, 3), 0, torch.float64)
    e = S.tst_energy("L", ref=ref)
    torch.testing.assert_close(e.score({L: a}, 2), a.abs().mean(1) + 3.0)
    assert ld.parse(repr(e)) == e


def test_custom_objective_cannot_replace_a_builtin():
    with pytest.raises(InvalidArgumentError, match="built-in"):
        ld.objective(lambda a: a.mean(1), name="channel")
    assert VOCABULARY["channel"] is ld.channel

"""Faceted feature visualization: the probe, the facet term, the faceted render (toolbox.facets, objectives.attribution)."""
from __future__ import annotations

import dataclasses
import functools
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from digits import mnist
from models import zoo_model

import lucent_dsl as ld
from lucent_dsl.dsl.printing import to_text
from lucent_dsl.dsl.serialize import from_json, to_json
from lucent_dsl.errors import InvalidArgumentError, LayerNotFoundError, ObjectiveShapeError
from lucent_dsl.io.files import load_image, save_png
from lucent_dsl.models.info import info_of
from lucent_dsl.objectives import facet
from lucent_dsl.toolbox.facets import FacetProbe, faceted, render_faceted, train_probe

SIDE = 64
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "colorwheel")


def photos(n: int, seed: int) -> torch.Tensor:
    """`n` random square crops of skimage's colour photos, SIDE x SIDE."""
    g, out = torch.Generator().manual_seed(seed), []
    for i in range(n):
        x = _photo(PHOTOS[i % len(PHOTOS)])
        h, w = x.shape[-2:]
        s = int(torch.randint(min(h, w) // 2, min(h, w) + 1, (1,), generator=g))
        top, left = (int(torch.randint(0, d - s + 1, (1,), generator=g)) for d in (h, w))
        out.append(F.interpolate(x[..., top:top + s, left:left + s], size=(SIDE, SIDE), mode="bilinear", antialias=True))
    return torch.cat(out).clamp(0, 1)


@functools.cache
def _photo(name: str) -> torch.Tensor:
    import skimage.data

    return load_image(getattr(skimage.data, name)())


def digits(start: int, n: int) -> torch.Tensor:
    """MNIST digits start..start+n, upscaled to SIDE x SIDE RGB."""
    x = mnist()[0][start:start + n]
    return F.interpolate(x, size=(SIDE, SIDE), mode="bilinear").clamp(0, 1).expand(-1, 3, -1, -1).contiguous()


@functools.cache
def digit_probe() -> FacetProbe:
    """Digits (the facet) against photos at mobilenet_v2's features.6."""
    return train_probe(zoo_model("mobilenet_v2"), "features.6", digits(0, 12), photos(12, seed=0))


# --- the probe --------------------------------------------------------------------------------------------


def test_probe_tells_digits_from_photos_on_images_it_never_saw():
    model, probe = zoo_model("mobilenet_v2"), digit_probe()
    assert probe.counts == (12, 12) and len(probe.weights) == 32 and probe.model == "mobilenet_v2"
    assert probe.accuracy == 1.0 and probe.holdout_accuracy is not None and probe.holdout_accuracy >= 0.75
    new_digits, new_photos = probe.logits(model, digits(100, 8)), probe.logits(model, photos(8, seed=1))
    accuracy = (float((new_digits > 0).sum()) + float((new_photos < 0).sum())) / 16
    assert accuracy >= 0.9, (new_digits.tolist(), new_photos.tolist())


def test_probe_is_deterministic_and_round_trips_through_json():
    model = zoo_model("mobilenet_v2")
    again = train_probe(model, "features.6", digits(0, 12), photos(12, seed=0))
    assert again == digit_probe()  # bit for bit: float64 L-BFGS from zeros, a seeded split
    assert FacetProbe.from_json(again.to_json()) == again
    other_split = train_probe(model, "features.6", digits(0, 12), photos(12, seed=0), seed=1)
    assert other_split.weights != again.weights  # the seed draws the held-out fifth


def test_probe_reads_image_folders(tmp_path):
    net = _small_net()
    for name, images in (("bright", 0.6 + 0.4 * torch.rand(3, 3, 20, 20)), ("dark", 0.3 * torch.rand(3, 3, 12, 12))):
        (tmp_path / name).mkdir()
        for i, x in enumerate(images):
            save_png(tmp_path / name / f"{i}.png", x[None])
    probe = train_probe(net, "1", tmp_path / "bright", tmp_path / "dark", size=16)  # folders load at one size
    assert probe.counts == (3, 3) and probe.holdout_accuracy is None and probe.accuracy == 1.0


@pytest.mark.parametrize("facet_images, generic_images, message", [
    (torch.rand(0, 3, 16, 16), torch.rand(4, 3, 16, 16), "empty"),
    (torch.rand(4, 3, 16, 16), torch.rand(4, 3, 20, 20), "size"),
    (255 * torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16), r"\[0, 1\]"),
    (torch.rand(3, 16, 16), torch.rand(4, 3, 16, 16), r"\(N, C, H, W\)"),
    ("/no/such/folder", torch.rand(4, 3, 16, 16), "neither"),
])
def test_bad_image_sets_are_refused(facet_images, generic_images, message):
    with pytest.raises((InvalidArgumentError, ld.errors.ImageError), match=message):
        train_probe(_small_net(), "1", facet_images, generic_images)


def test_bad_layers_are_refused_before_any_forward():
    images = torch.rand(4, 3, 16, 16)
    with pytest.raises(LayerNotFoundError, match="Did you mean"):
        train_probe(_small_net(), "11", images, images)

    class Pair(nn.Module):  # a layer whose output is a pair, not one activation
        def forward(self, x):
            return x, x

    net = nn.Sequential(nn.Conv2d(3, 4, 3), Pair())
    with pytest.raises(ObjectiveShapeError):
        train_probe(net, "1", images, images)


# --- the facet term -----------------------------------------------------------------------------------------


def test_facet_term_equals_a_hand_computation_with_forward_hooks():
    """The plan (BatchNorms folded, channels-last, a clone before an in-place write) against plain hooks."""
    model, probe = zoo_model("mobilenet_v2"), digit_probe()
    unit = ld.channel("features.16", 7)
    x = photos(2, seed=2).requires_grad_(True)  # as in a render: the activations carry a graph
    plan = ld.compile_plan(probe.term(unit), model)
    with torch.enable_grad():
        got = ld.dsl.expr.evaluate(plan.objective, plan.forward(x), 2)

    seen = {}
    hooks = [model.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
             for name in ("features.6", "features.16")]
    try:
        model.eval()
        with torch.enable_grad():
            model(info_of(model).preprocess(x))
            a = seen["features.6"]
            f = seen["features.16"][:, 7].mean((1, 2))
            (g,) = torch.autograd.grad(f.sum(), a)
    finally:
        for h in hooks:
            h.remove()
    w = torch.tensor(probe.weights).view(1, -1, 1, 1)
    expected = (w * a.detach() * g.clamp(min=0)).sum((1, 2, 3))
    assert torch.allclose(got, expected, rtol=2e-3, atol=1e-5), (got.tolist(), expected.tolist())
    assert float(expected.abs().min()) > 0


def test_facet_term_on_plain_activations_and_its_laws():
    a = torch.randn(2, 3, 4, 5)
    site = ld.dsl.expr.Site(None, "L")
    w = (0.5, -1.0, 2.0)
    t = facet(ld.channel("L", 1), "L", w, rectify=False)  # d channel / d a = 1/20 on channel 1
    assert torch.allclose(t.score({site: a}, 2), -1.0 * a[:, 1].sum((1, 2)) / 20)
    assert torch.equal(facet(ld.channel("L", 1), "L", w).score({site: a}, 2), t.score({site: a}, 2))
    named = facet(ld.neuron("blocks.9", 1, model="vit"), "blocks.4", w)  # the facet reads its unit's model
    assert named.model == "vit" and repr(named).count("model=") == 1
    for e in (t, named, faceted(ld.channel("L", 1), FacetProbe("L", w, 0.0, None, 1.0, None, (1, 1), 1.0), weight=3)):
        assert ld.parse(to_text(e)) == e and from_json(to_json(e)) == e


def test_facet_refuses_what_has_no_gradient():
    net = _small_net()
    x = torch.rand(1, 3, 16, 16)
    early = ld.compile_plan(facet(ld.channel("1", 0), "3", [1.0] * 4), net)  # the unit reads an earlier layer
    with pytest.raises(ObjectiveShapeError, match="not on the autograd path"):
        early.scores(early.forward(x), 1)
    plan = ld.compile_plan(facet(ld.channel("3", 0), "1", [1.0] * 8), net)
    with torch.no_grad(), pytest.raises(ObjectiveShapeError, match="gradients are off"):
        plan.scores(plan.forward(x), 1)
    with pytest.raises(InvalidArgumentError, match="compile=False"):
        ld.render(plan, size=16, steps=1, compile=True, progress=False)
    with pytest.raises(ObjectiveShapeError, match="8 values but layer model:3 has 4"):
        ld.render(facet(ld.channel("3", 0), "3", [1.0] * 8), net, size=16, steps=1, progress=False)
    with pytest.raises(InvalidArgumentError, match="one model"):
        facet(ld.channel("3", 0, model="a") + ld.channel("3", 0, model="b"), "1", [1.0])


# --- the faceted render -----------------------------------------------------------------------------------------


def test_faceted_render_raises_the_probe_score_over_the_unit_alone():
    model, probe = zoo_model("mobilenet_v2"), digit_probe()
    unit = ld.channel("features.16", 7)
    kw = dict(size=SIDE, steps=32, progress=False, seed=0)
    alone = ld.render(unit, model, **kw)
    steered = render_faceted(model, unit, probe, weight=5.0, **kw)
    before, after = float(probe.logits(model, alone.images)), float(probe.logits(model, steered.images))
    assert after > before + 1.0, (before, after)  # measured: -4.69 -> -1.81
    assert steered.recipe is not None and ld.parse(steered.recipe.objective) == faceted(unit, probe, weight=5.0)


def test_a_weight_pair_ramps_the_facet_over_the_images():
    probe = FacetProbe("1", (1.0,) * 8, 0.0, None, 1.0, None, (1, 1), 1.0)
    r = render_faceted(_small_net(), "channel('3', 0)", probe, weight=(0.5, 2.0), images=3, size=16, steps=1,
                       progress=False)
    weights = [e.k for e in r.plan.objective.terms[1:]]
    assert weights == [0.5, 1.25, 2.0] and [e.expr.batch for e in r.plan.objective.terms[1:]] == [0, 1, 2]


def test_a_probe_of_another_model_is_refused():
    probe = dataclasses.replace(digit_probe(), model="efficientnet_lite0")
    with pytest.raises(InvalidArgumentError, match="trained on model"):
        render_faceted(zoo_model("mobilenet_v2"), "channel('features.16', 7)", probe, size=SIDE, steps=1,
                       progress=False)


def _small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.ReLU())


def test_facet_command_trains_on_two_folders_and_writes_a_replayable_png(tmp_path, capsys):
    from lucent_dsl.cli.app import main
    from lucent_dsl.io.files import RECIPE_KEY, read_png_metadata
    from lucent_dsl.replay import Recipe

    zoo_model("mobilenet_v2")
    for name, images in (("digits", digits(0, 5)), ("photos", photos(5, seed=0))):
        (tmp_path / name).mkdir()
        for i, x in enumerate(images):
            save_png(tmp_path / name / f"{i}.png", x[None])
    out = tmp_path / "facet.png"
    assert main(["facet", "channel('features.16', 7)", str(tmp_path / "digits"), str(tmp_path / "photos"),
                 "--model", "mobilenet_v2", "--layer", "features.6", "--size", str(SIDE), "--steps", "2",
                 "--weight", "0.5", "2", "--images", "2", "--probe-out", str(tmp_path / "probe.json"),
                 "--out", str(out)]) == 0
    assert "accuracy 1.000 (held out: 1.000)" in capsys.readouterr().out
    probe = FacetProbe.from_json((tmp_path / "probe.json").read_text())
    recipe = Recipe.from_json(read_png_metadata(out)[RECIPE_KEY])
    assert recipe.steps == 2 and recipe.batch == 2 and "facet(channel('features.16', 7), 'features.6'" in recipe.objective
    assert ld.parse(recipe.objective).terms[1].expr.weights == probe.weights
    assert main(["facet", "channel('features.16', 7)", str(tmp_path / "digits"), str(tmp_path / "photos"),
                 "--model", "mobilenet_v2", "--layer", "features.6", "--weight", "1", "2", "3", "--out", str(out)]) == 2


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_facets_on_a_vit_read_token_sequences(precision):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=10).eval()
    bright, dark = 0.6 + 0.4 * torch.rand(6, 3, 32, 32), 0.4 * torch.rand(6, 3, 32, 32)
    probe = train_probe(vit, "blocks.1", bright, dark)  # (B, tokens, C): pooled over every token
    assert len(probe.weights) == 192 and probe.accuracy == 1.0
    with warnings.catch_warnings():  # bf16 forced where it is emulated (LUCENT_TEST_CPU=avx2) warns so: expected here
        warnings.filterwarnings("ignore", message="precision='bf16' on a CPU without bf16 units")
        r = render_faceted(vit, "channel('blocks.3', 3)", probe, weight=2.0, size=32, steps=2, precision=precision,
                           progress=False)
    assert r.precision == precision and all(bool(torch.isfinite(v).all()) for v in r.history.values())
    assert float(r.history[to_text(2.0 * probe.term(ld.channel("blocks.3", 3)))].abs().sum()) > 0


@pytest.mark.parametrize("truncate", ["fx", "hooks"])
def test_facet_reads_the_gradient_of_a_value_written_in_place_later(truncate):
    """ReLU(inplace=True) overwrites conv "0"'s output: the plan reads a clone, the model runs on the original."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 3))
    twin = nn.Sequential(net[0], nn.ReLU(), net[2])  # the same weights, nothing in place
    x = torch.rand(2, 3, 10, 10, requires_grad=True)
    w = [1.0, -2.0, 0.5, 3.0]
    plan = ld.compile_plan(facet(ld.channel("2", 1), "0", w), net, truncate=truncate)
    got = plan.scores(plan.forward(x), 2).per_image
    a = twin[0](x)
    f = twin[2](twin[1](a))[:, 1].mean((1, 2))
    (g,) = torch.autograd.grad(f.sum(), a)
    expected = (torch.tensor(w).view(1, -1, 1, 1) * a * g.clamp(min=0)).sum((1, 2, 3))
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6) and float(expected.detach().abs().min()) > 0

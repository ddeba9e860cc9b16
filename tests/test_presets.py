"""Render presets (issue 27.4): "lucid" is render's old default bit for bit, explicit arguments win over every
preset, "auto" follows its table on real architectures, prior terms reach the compiled plan, a Plan refuses
them, each named preset replays bit for bit from its recipe, the CLI records the preset, and `transforms.scaled`
is `standard()` in proportion to the image."""
from __future__ import annotations

import dataclasses as dc
import json

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

import lucent_dsl as ld
from lucent_dsl import param as param_lib, transforms as tf
from lucent_dsl.errors import InvalidArgumentError
from lucent_dsl.models.info import ModelInfo, with_info
from lucent_dsl.plan.compiler import compile_plan
from lucent_dsl.record import recipe as recipe_lib
from lucent_dsl.renderer import presets
from lucent_dsl.renderer.presets import PRESETS, auto_preset, resolve
from lucent_dsl.replay import Recipe

OBJ = "channel('3', 1)"  # bn_net's last conv
CLASS_OBJ = "class_logit(1)"  # bn_classifier's output: a class render
CONV_OBJ = "channel('2', 1)"  # conv_net's
FAST = {"size": 16, "steps": 2, "progress": False}


def bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 6, 3)).eval()


def bn_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(6, 4)).eval()


def conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 6, 3)).eval()


# --- "lucid" is render's default before presets ------------------------------------------------------


@pytest.mark.parametrize("size", [16, 72])
def test_lucid_is_the_old_default_bit_for_bit(size):
    net = conv_net()
    old = ld.render(CONV_OBJ, net, size=size, steps=3, progress=False, param=param_lib.fft(size), transforms=tf.standard(),
                    lr=0.05, schedule="constant", optimizer=lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.9, 0.999)))
    new = ld.render(CONV_OBJ, net, size=size, steps=3, progress=False, preset="lucid")
    assert torch.equal(old.images, new.images)
    assert new.preset == "lucid" and new.recipe.transforms == "standard"  # no small-image rule when named
    assert "preset" not in new.recipe.to_dict()  # files read and replay as before presets


def test_auto_on_a_plain_cnn_is_lucid_and_on_a_batchnorm_classifier_robust_ensemble_bit_for_bit():
    for net, name, objective in ((conv_net(), "lucid", "channel('2', 1)"), (bn_net(), "lucid", OBJ),
                                 (bn_classifier(), "robust_ensemble", CLASS_OBJ)):
        auto = ld.render(objective, net, size=72, steps=2, progress=False)
        named = ld.render(objective, net, size=72, steps=2, progress=False, preset=name)
        assert auto.preset == name and torch.equal(auto.images, named.images) and auto.recipe == named.recipe
    t = ld.transforms
    by_hand = ld.render(CLASS_OBJ, bn_classifier(), size=72, steps=2, progress=False, preset="lucid",
                        transforms=t.ensemble(2, t.robust_fit(72)))
    assert torch.equal(by_hand.images, named.images)  # "robust_ensemble": "lucid", 2 copies of robust_fit(size)
    robust = ld.render(CLASS_OBJ, bn_classifier(), size=72, steps=2, progress=False, preset="lucid",
                       transforms="robust")
    named = ld.render(CLASS_OBJ, bn_classifier(), size=72, steps=2, progress=False, preset="robust")
    assert torch.equal(robust.images, named.images)  # "robust" is "lucid" with transforms.robust()
    assert not torch.equal(robust.images, by_hand.images)


# --- explicit arguments win --------------------------------------------------------------------------

EXPLICIT = {
    "lr": (0.123, lambda r: r.lr),
    "schedule": ("cosine", lambda r: r.schedule),
    "betas": ((0.7, 0.8), lambda r: r.betas),
    "transforms": ("robust", lambda r: r.base_transforms.name),
    "param": (param_lib.pixel(16), lambda r: r.param),
}


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("arg", list(EXPLICIT))
def test_explicit_arguments_win_over_every_preset(name, arg):
    value, read = EXPLICIT[arg]
    r = resolve(name, bn_net(), 16, {arg: value}, objective=OBJ)
    assert read(r) == value if arg != "param" else read(r) is value


@pytest.mark.parametrize("name", list(PRESETS))
def test_an_explicit_optimizer_wins_and_the_preset_betas_stay_out(name):
    opt = torch.optim.SGD
    r = resolve(name, bn_net(), 16, {"optimizer": opt}, objective=OBJ)
    assert r.optimizer is opt and r.adam_betas is None
    out = ld.render(OBJ, bn_net(), **FAST, preset=name, optimizer=opt, lr=0.3, schedule="constant")
    assert out.recipe is None and "an optimizer other than the default Adam" in out.unreplayable


@pytest.mark.parametrize("name", list(PRESETS))
def test_explicit_values_are_what_the_recipe_records(name):
    r = ld.render(OBJ, bn_net(), **FAST, preset=name, lr=0.2, schedule="cosine", betas=(0.6, 0.7), transforms=[])
    assert (r.recipe.lr, r.recipe.schedule, r.recipe.transforms, r.recipe.preset) == (0.2, "cosine", "none", name)
    assert r.recipe.betas == (0.6, 0.7)  # NAdam (maco) takes them too


# --- "auto" on real architectures ----------------------------------------------------------------------


def test_auto_on_batchnorm_cnns_picks_robust_ensemble_for_class_renders_and_lucid_for_inner_layers():
    import torchvision

    for build in (torchvision.models.mobilenet_v3_small, torchvision.models.resnet18):
        net = build(weights=None)
        assert auto_preset(net, 224, "class_logit(3)") == "robust_ensemble"
        assert auto_preset(net, 224, [ld.channel("layer1" if hasattr(net, "layer1") else "features.2", 0)]) == "lucid"
    mixed = ["channel('layer2', 1)", ld.class_logit(5) - 1e-3 * ld.total_variation()]  # one image reads the logits
    assert auto_preset(torchvision.models.resnet18(weights=None), 224, mixed) == "robust_ensemble"
    small = resolve("auto", bn_classifier(), 32, {}, objective=CLASS_OBJ)
    assert (small.name, small.base_transforms.name) == ("robust_ensemble", "scaled:32x32")  # robust's pad: not < 64


def test_auto_decides_end_to_end_through_render_on_a_torchvision_resnet():
    import torchvision

    net = torchvision.models.resnet18(weights=None).eval()
    kw = {"size": 64, "steps": 1, "progress": False}
    assert ld.render("class_logit(1)", net, **kw).preset == "robust_ensemble"
    assert ld.render("channel('layer2', 3)", net, **kw).preset == "lucid"
    assert ld.render(compile_plan("class_logit(1)", net), **kw).preset == "robust_ensemble"  # a Plan's sites
    assert ld.render(compile_plan("neuron('layer1', 2)", net), **kw).preset == "lucid"


def test_reads_output_is_true_exactly_when_a_term_reads_a_model_output():
    assert presets.reads_output("class_logit(2)") and presets.reads_output("channel('@output', 2)")
    assert presets.reads_output(["channel('a', 0)", "0.5 * class_logit(1) - 1e-3 * total_variation()"])
    assert not presets.reads_output("channel('a', 0) - 1e-3 * total_variation() - l2()")
    assert not presets.reads_output(["neuron('fc', 2)", "direction('x', [1.0, 0.0])"])


def test_auto_picks_prior_for_token_models():
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32)
    assert presets.is_token_model(vit) and auto_preset(vit, 32, "class_logit(1)") == "prior"
    assert auto_preset(vit, 32, "channel('blocks.3', 1)") == "prior"  # digits and channels both measured best
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    assert auto_preset(mlp, 8, "class_logit(1)") == "prior"
    ensemble = {"cnn": bn_net(), "vit": vit}
    assert auto_preset(ensemble, 224, "class_logit(1, model='vit')") == "robust_ensemble"  # first match wins


def test_auto_keeps_lucid_for_clip_models():
    import open_clip

    tower = open_clip.create_model("RN50", pretrained=None).visual  # a ModifiedResNet: BatchNorms, still CLIP
    assert presets.is_clip_model(tower) and auto_preset(tower, 224, "channel('@output', 1)") == "lucid"
    assert not presets.is_clip_model(bn_net())


def test_auto_picks_lucid_for_a_plain_conv_net_and_scales_its_transforms_below_64_px():
    assert auto_preset(conv_net(), 224, "channel('@output', 1)") == "lucid"
    small, large = (resolve("auto", conv_net(), n, {}, objective=CONV_OBJ) for n in (32, 64))
    assert small.base_transforms.name == "scaled:32x32" and large.base_transforms is None  # None: standard()
    assert resolve("lucid", conv_net(), 32, {}, objective=CONV_OBJ).base_transforms is None


# --- prior terms ------------------------------------------------------------------------------------------


def test_deepinversion_priors_are_in_the_compiled_plan_one_per_batchnorm_model():
    imagenet = ModelInfo(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    models = {"a": with_info(bn_net(), imagenet), "b": conv_net()}
    objective = "channel('3', 1, model='a') + channel('2', 0, model='b')"
    r = ld.render(objective, models, **FAST, preset="deepinversion")
    names = r.plan.term_names
    assert any(n.startswith("-8.0 * l2(target=tensor([0.485") for n in names)  # model a's mean colour
    assert "-0.01 * batchnorm_prior(('1',), model='a')" in names
    assert not any("model='b'" in n and "batchnorm" in n for n in names)
    assert r.recipe.objective == objective  # the user's objective only: the preset adds the priors again


def test_the_image_prior_raises_its_own_score():
    imagenet = ModelInfo(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    net = with_info(conv_net(), imagenet)
    preset = dc.replace(PRESETS["deepinversion"], image_prior=100.0, bn_prior=0.0, schedule="constant")
    r = ld.render("1e-6 * channel('2', 0)", net, size=16, steps=12, progress=False, preset=preset, lr=0.01)
    (key,) = [k for k in r.history if k.startswith("-100.0 * l2(target=tensor([0.485")]
    series = r.history[key][:, 0]
    assert float(series[0]) < 0 and float(series[-1]) > float(series[0])  # the image moved towards the mean
    assert r.recipe is None and any("Preset value of your own" in w for w in r.unreplayable)


def test_a_list_of_objectives_gets_the_priors_each():
    r = ld.render([OBJ, "channel('3', 2)"], bn_net(), **FAST, preset="deepinversion")
    assert r.images.shape[0] == 2 and r.recipe is not None
    again = r.recipe.run(bn_net(), progress=False)
    assert torch.equal(r.images, again.images)


def test_a_plan_refuses_a_preset_with_priors_and_auto_falls_back():
    net = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 4))
    plan = compile_plan("channel('2', 0)", net)
    with pytest.raises(InvalidArgumentError, match="prior terms.*Plan"):
        ld.render(plan, **FAST, preset="deepinversion")
    with pytest.raises(InvalidArgumentError, match="prior terms.*Plan"):  # a value of your own too: never dropped
        ld.render(plan, **FAST, preset=dc.replace(PRESETS["lucid"], name="mine", tv=0.1))
    no_priors = dc.replace(PRESETS["deepinversion"], image_prior=0.0, bn_prior=0.0)
    assert ld.render(plan, **FAST, preset=no_priors).preset == "deepinversion"
    assert auto_preset(net, 16, "channel('2', 0)") == "prior"
    assert ld.render(plan, **FAST).preset == presets.PLAN_FALLBACK
    assert ld.render(plan, **FAST, preset="plugin").preset == "plugin"


# --- recipes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PRESETS))
def test_each_named_preset_replays_bit_for_bit_from_its_recipe(name):
    net = bn_net()
    r = ld.render(OBJ, net, **FAST, preset=name)
    assert r.preset == name and r.recipe.preset == name
    read = Recipe.from_json(r.recipe.to_json())
    assert read == r.recipe
    again = read.run(net, progress=False)
    assert again.preset == name and torch.equal(r.images, again.images)


def test_recipe_names_are_the_presets_table():
    assert recipe_lib.PRESETS == tuple(PRESETS)
    from lucent_dsl.cli.commands import PRESET_NAMES

    assert PRESET_NAMES == tuple(PRESETS)  # the CLI's --preset choices
    from lucent_dsl.cli.commands import PARAM_NAMES, TRANSFORM_NAMES
    from lucent_dsl.transforms import NAMED

    # every name a recipe records is one the command line takes (a site's "render again" line uses them)
    assert set(TRANSFORM_NAMES) == set(NAMED) and set(PARAM_NAMES) == set(recipe_lib.PARAMS)
    with pytest.raises(InvalidArgumentError, match="preset"):
        Recipe(objective=OBJ, preset="auto")
    assert Recipe(objective=OBJ, preset="maco").to_dict()["preset"] == "maco"


def test_a_preset_value_equal_to_a_named_one_records_its_name():
    same = dc.replace(PRESETS["plugin"])
    r = ld.render(OBJ, bn_net(), **FAST, preset=same)
    assert r.recipe.preset == "plugin"


@pytest.mark.parametrize("made", [tf.scaled, tf.robust_fit])
def test_a_sized_transform_made_for_another_size_is_unreplayable(made):
    r = ld.render(CONV_OBJ, conv_net(), **FAST, transforms=made(28))
    assert r.recipe is None and any(f"{made.__name__} made for 28x28" in w for w in r.unreplayable)


@pytest.mark.parametrize("name", ["scaled", "robust_fit"])
def test_a_sized_transform_at_the_render_size_replays_from_its_name(name):
    net = conv_net()
    r = ld.render(CONV_OBJ, net, **FAST, transforms=tf.named(name, (FAST["size"], FAST["size"])))
    assert r.recipe.transforms == name
    assert torch.equal(r.recipe.run(net, progress=False).images, r.images)


def test_cli_preset_is_written_into_the_png_recipe(tmp_path, capsys):
    from lucent_dsl.cli import app as cli
    from lucent_dsl.io.files import RECIPE_KEY, read_metadata

    script = tmp_path / "tiny.py"
    script.write_text("from torch import nn\n\ndef factory():\n    return nn.Sequential(nn.Conv2d(3, 6, 3), "
                      "nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 6, 3)).eval()\n")
    spec = f"{script}:factory"
    cases = (("deepinversion", OBJ, "deepinversion"), ("auto", OBJ, "lucid"),
             ("auto", "channel('@output', 1)", "robust_ensemble"))  # auto: inner layer / the model's output
    for i, (preset, objective, want) in enumerate(cases):
        out = tmp_path / (f"{preset}.png" if i < 2 else "output.png")
        argv = ["render", objective, "--model", spec, "--allow", "file", "--size", "16", "--steps", "2", "-q",
                "--preset", preset, "--lr", "0.07", "--out", str(out)]
        assert cli.main(argv) == 0, capsys.readouterr().err
        recorded = json.loads(read_metadata(out)[RECIPE_KEY])
        assert recorded.get("preset", "lucid") == want and recorded["lr"] == 0.07  # the flag wins; "lucid" unwritten
    assert recorded["transforms"] == "scaled"  # auto at 16 px
    again = tmp_path / "again.png"
    assert cli.main(["render", "--recipe", str(tmp_path / "deepinversion.png"), "--model", spec, "--allow", "file",
                     "-q", "--out", str(again)]) == 0
    assert json.loads(read_metadata(again)[RECIPE_KEY])["preset"] == "deepinversion"


# --- transforms.scaled ----------------------------------------------------------------------------------


def test_scaled_at_224_is_standard_draw_for_draw():
    x = torch.rand(2, 3, 224, 224)
    a, b = tf.standard(), tf.scaled(224)
    pa = a.sample(torch.Generator().manual_seed(3), x.shape)
    pb = b.sample(torch.Generator().manual_seed(3), x.shape)
    assert torch.equal(pa, pb) and torch.equal(a.apply(x, pa), b.apply(x, pb))


def test_scaled_at_28_keeps_the_content_scale():
    pad, first, last = tf.scaled_amounts(28)
    assert pad == 0 and first >= 1 and last >= 1  # no border on small images: it cost MNIST transfer
    t = tf.scaled(28)
    assert t.apply(torch.rand(1, 3, 28, 28), t.sample(None, (1, 3, 28, 28))).shape[-1] == 28 + 2 * pad


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 600), st.integers(1, 600))
def test_scaled_amounts_grow_with_the_smaller_side(h, w):
    pad, first, last = tf.scaled_amounts((h, w))
    bigger = tf.scaled_amounts((h + 30, w + 30))
    assert 0 <= pad <= bigger[0] and 2 <= first <= bigger[1] and 1 <= last <= bigger[2]
    assert pad == (round(12 * min(h, w) / 224) if min(h, w) >= tf.UNPADDED_BELOW else 0)

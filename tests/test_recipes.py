"""Recipes: caricature / feature inversion and feature accentuation on a tiny CPU network.

Contracts:
- the caricature target is the image's own activations, and at the image itself the cosine part
  of the match is maximal: with `s_p` the score at `cossim_pow=p`, `s_p / s_0` (a weighted mean of
  `max(cos, 0.1)**p` over positions) is 1 at the image and < 1 at perturbed images, and among
  activations with the same norm at every position as the target, the target scores highest;
- a batched caricature of several layers equals separate renders (no transforms, same init);
- paired transforms reduce to the plain render when the transform does nothing;
- the render raises the match score;
- accentuation raises the objective and stays closer to the image than an unconstrained render.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import lucent_dsl as ld
from lucent_dsl import transforms as tf
from lucent_dsl.dsl.expr import Site
from lucent_dsl.errors import InvalidArgumentError, LayerNotFoundError
from lucent_dsl.toolbox import inversion as recipes

LAYERS = ["0", "2", "4"]


def tiny_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),  # 0, 1
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),  # 2, 3
        nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(),  # 4, 5
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # 6, 7: (B, 6) vectors
    ).eval()


def smooth_image(seed: int = 0, size: tuple[int, int] = (12, 16)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, size[0] // 4, size[1] // 4, generator=g)
    return torch.nn.functional.interpolate(low, size=size, mode="bilinear", align_corners=False).clamp(0, 1)


def _score(objective: ld.Expr, net: nn.Module, image: torch.Tensor) -> torch.Tensor:
    plan = ld.compile_plan(objective, net)
    with torch.no_grad():
        return plan.scores(plan.forward(image), image.shape[0]).per_image


# ---- the match objective --------------------------------------------------------------------------

@pytest.mark.parametrize("layer", ["2", "7"])  # (B, C, H, W) maps and (B, C) vectors
def test_cosine_part_of_the_match_is_maximal_at_the_image(layer):
    net, image = tiny_net(), smooth_image()
    target = recipes.activations(net, image, [layer])[layer][0]
    g = torch.Generator().manual_seed(1)
    perturbed = (image + 0.3 * torch.randn(8, *image.shape[1:], generator=g)).clamp(0, 1)
    s0_image = _score(ld.activation_match(layer, target, cossim_pow=0.0), net, image)
    s0_pert = _score(ld.activation_match(layer, target, cossim_pow=0.0), net, perturbed)
    assert bool((s0_pert > 0).all())
    previous = torch.ones(8)
    for p in (1.0, 4.0, 16.0):
        match = ld.activation_match(layer, target, cossim_pow=p)
        at_image = _score(match, net, image) / s0_image
        ratio = _score(match, net, perturbed) / s0_pert
        # 1 up to the 1e-6 that guards the norms (measured 1 - 1e-5 .. 1 - 4e-4 at p = 16)
        torch.testing.assert_close(at_image, torch.ones(1), rtol=1e-3, atol=0)
        assert bool((ratio < at_image).all())  # layer "2": 0.90-0.93 at p=1; pooled "7": 0.998-0.9999
        assert bool((ratio < previous).all())  # cos < 1 raised to a higher power: smaller
        previous = ratio

    # among activations with the target's norm at every position, the target itself scores highest
    t = target[None]
    rand = torch.randn(8, *t.shape[1:], generator=g)
    norm_axis = 1
    equal_norm = rand / rand.norm(dim=norm_axis, keepdim=True) * t.norm(dim=norm_axis, keepdim=True)
    site = Site(None, layer)
    for p in (0.0, 1.0, 4.0):
        term = ld.activation_match(layer, target, cossim_pow=p)
        at_target = term.score({site: t}, 1)
        others = term.score({site: equal_norm}, 8)
        assert bool((others < at_target).all())


def test_activations_are_one_frozen_untransformed_forward():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()).train()
    image = smooth_image()
    acts = recipes.activations(net, image, ["1", "@input"])
    assert net.training and net[1].training  # the user's mode comes back
    bn = net[1]
    with torch.no_grad():
        expected = torch.nn.functional.batch_norm(net[0](image), bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                                  training=False, eps=bn.eps)
    torch.testing.assert_close(acts["1"], expected)  # eval mode: running statistics, not the batch's
    assert torch.equal(acts["@input"], image)


# ---- caricature -----------------------------------------------------------------------------------

def test_batched_layers_equal_separate_runs():
    net, image = tiny_net(), smooth_image()
    kw = dict(steps=12, start="image", lr=0.05, progress=False)
    together = recipes.caricature(net, image, LAYERS, **kw)
    assert together.images.shape == (3, 3, 12, 16)
    for i, layer in enumerate(LAYERS):
        alone = recipes.caricature(net, image, [layer], **kw)
        torch.testing.assert_close(together.images[i], alone.images[0], rtol=0, atol=1e-4)
        (hist,) = alone.history.values()
        torch.testing.assert_close(list(together.history.values())[i][:, i], hist[:, 0], rtol=1e-4, atol=1e-6)


def test_caricature_raises_the_match_and_moves_towards_the_targets():
    net, image = tiny_net(), smooth_image()
    r = recipes.caricature(net, image, LAYERS, steps=40, lr=0.1, progress=False)
    targets = recipes.activations(net, image, LAYERS)
    noise = recipes._param("fft", image, 3, None, {})  # the render's start: seed 0
    start = recipes.activations(net, noise.to_image(noise.init(torch.Generator().manual_seed(0))), LAYERS)
    end = recipes.activations(net, r.images, LAYERS)
    for i, (name, h) in enumerate(zip(LAYERS, r.history.values())):
        assert float(h[-1, i]) > float(h[0, i]) + 1e-3, name
        # the score the history reports is the match of the final image's own activations
        match = ld.activation_match(name, targets[name][0])
        assert float(match.score({Site(None, name): end[name][i:i + 1]}, 1)) > float(
            match.score({Site(None, name): start[name][i:i + 1]}, 1)), name


def test_paired_transforms_with_a_do_nothing_transform_equal_the_plain_render():
    # Plain SGD, not Adam: Adam turns a gradient of 1e-9 into a full step of its sign, so rounding that differs
    # between SIMD widths (AVX2 / AVX-512) would decide the pixels. With SGD a rounding difference stays one.
    net, image = tiny_net(), smooth_image()
    kw = dict(steps=6, start="image", progress=False, precision="fp32",
              optimizer=lambda p: torch.optim.SGD(p, lr=200.0))
    plain = recipes.caricature(net, image, ["2", "4"], **kw)
    paired = recipes.caricature(net, image, ["2", "4"], transforms=[tf.jitter(0)], **kw)
    assert paired.images.shape == plain.images.shape == (2, 3, 12, 16)  # the source image is dropped
    assert [h.shape for h in paired.history.values()] == [(6, 2), (6, 2)]
    moved = float((plain.images - recipes.caricature(net, image, ["2", "4"], **dict(kw, steps=1)).images).abs().max())
    assert moved > 0.03  # the steps change the image, so equal images say the paired transform did nothing
    torch.testing.assert_close(paired.images, plain.images, rtol=0, atol=1e-4)


def test_paired_transforms_share_one_draw_and_run():
    shared = recipes._shared(tf.chain(tf.jitter(3), tf.crops(2, scale=(0.3, 0.6))))
    m = shared.sample(torch.Generator().manual_seed(0), torch.Size((4, 3, 12, 16)))
    assert m.shape == (8, 3, 3)  # crop-major: row k*4 + b is crop k of image b
    assert torch.equal(m[:4], m[:1].expand(4, 3, 3)) and torch.equal(m[4:], m[4:5].expand(4, 3, 3))
    assert not torch.equal(m[0], m[4])
    net, image = tiny_net(), smooth_image()
    r = recipes.caricature(net, image, LAYERS, steps=8, transforms=[tf.jitter(2), tf.random_rotate(5.0)],
                           extra=-0.01 * ld.total_variation(), progress=False)
    assert r.images.shape == (3, 3, 12, 16)
    assert all(float(h[-1, i]) > float(h[0, i]) for i, h in enumerate(list(r.history.values())[:3]))


def test_feature_inversion_is_caricature_with_cossim_pow_zero():
    net, image = tiny_net(), smooth_image()
    a = recipes.feature_inversion(net, image, ["2"], steps=3, progress=False)
    b = recipes.caricature(net, image, ["2"], steps=3, cossim_pow=0.0, progress=False)
    assert torch.equal(a.images, b.images)
    assert list(a.history) == list(b.history)


def test_caricature_leaves_the_model_as_it_was():
    net = tiny_net().train()
    net[0].weight.requires_grad_(False)
    flags = [p.requires_grad for p in net.parameters()]
    state = {k: v.clone() for k, v in net.state_dict().items()}
    recipes.caricature(net, smooth_image(), ["2"], steps=2, progress=False)
    assert all(m.training for m in net.modules())
    assert [p.requires_grad for p in net.parameters()] == flags
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
    assert all(p.grad is None for p in net.parameters())
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules()) == 0


def test_caricature_resizes_to_the_models_input_size_and_reads_grey_models():
    net = ld.with_info(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()), ld.ModelInfo(input_size=(10, 10), channels=1))
    r = recipes.caricature(net, smooth_image(size=(20, 24)), ["1"], steps=2, progress=False)
    assert r.images.shape == (1, 1, 10, 10)


def test_caricature_errors_come_before_any_step():
    net, image = tiny_net(), smooth_image()
    with pytest.raises(InvalidArgumentError, match="start"):
        recipes.caricature(net, image, ["2"], start="zeros")
    with pytest.raises(InvalidArgumentError, match="layers"):
        recipes.caricature(net, image, [])
    with pytest.raises(InvalidArgumentError, match="size"):
        recipes.caricature(net, image, ["2"], batch=3)
    with pytest.raises(InvalidArgumentError, match="one image"):
        recipes.caricature(net, torch.rand(2, 3, 8, 8), ["2"])
    with pytest.raises(LayerNotFoundError, match="Did you mean"):
        recipes.caricature(net, image, ["22"])


# ---- accentuation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("layer", [None, "2"])
def test_accentuate_raises_the_objective_and_stays_close(layer):
    net, image = tiny_net(), smooth_image()
    objective = ld.channel("4", 1)
    kw = dict(steps=30, lr=0.05, layer=layer, progress=False)
    free = recipes.accentuate(net, image, objective, l2_weight=0.0, **kw)
    kept = recipes.accentuate(net, image, objective, l2_weight=0.3, **kw)
    before = float(_score(objective, net, image))  # 0.0734 -> kept 0.0800, free 0.0852
    assert float(_score(objective, net, kept.images)) > before + 0.003
    assert float(_score(objective, net, free.images)) > float(_score(objective, net, kept.images))
    if layer is None:
        dist = lambda x: float((x - image).pow(2).mean())  # noqa: E731
    else:
        ref = recipes.activations(net, image, [layer])[layer]
        dist = lambda x: float((recipes.activations(net, x, [layer])[layer] - ref).pow(2).mean())  # noqa: E731
    assert dist(kept.images) < 0.5 * dist(free.images)  # pixels: 0.0020 vs 0.0209
    assert any("l2(" in name for name in kept.history)


def test_accentuate_with_paired_transforms_and_dsl_text():
    net, image = tiny_net(), smooth_image()
    r = recipes.accentuate(net, image, "channel('4', 1)", layer="2", steps=6, transforms=[tf.jitter(2)],
                           progress=False)
    assert r.images.shape == (1, 3, 12, 16)
    assert all(h.shape == (6, 1) for h in r.history.values())
    with pytest.raises(InvalidArgumentError, match="l2_weight"):
        recipes.accentuate(net, image, ld.channel("4", 1), l2_weight=-1.0)

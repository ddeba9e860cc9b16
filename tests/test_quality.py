"""Do the pictures mean something? Renders on real pretrained weights, judged by the models.

Two claims, each checked against a number that does not come from the render itself:

- Class visualization: an image rendered to maximize MobileNetV2's `class_logit(c)` is classified
  as `c` by MobileNetV2 (no transforms, the model's own preprocessing), keeps that class under the
  random transforms the render trained against, and from a fresh seed; and EfficientNet-Lite0,
  which never saw the render, ranks `c` among the top 2% of its 1000 classes.
- Channel visualization: an image rendered to maximize `channel(layer, index)` drives that
  channel's mean activation far above its mean on natural photos (matplotlib's grace_hopper.jpg,
  scikit-image's coffee and chelsea), its peak above the photos' strongest position, and its own
  channel far above the channels the other renders target.

The channel indices (0 and 10) were fixed before looking at any result. The renders are small
(128 px, 32-40 steps, one batched render per claim; the zoo models see the transformed image
unresized) so that the file runs in well under a minute on one CPU thread. Measured with seeds
0, 1 and 2 (torch 2.14.1, CPU; the tests use seed 0 and FRESH_SEED) and asserted:

    what                                         measured (3 seeds)             asserted
    class p, MobileNetV2                          1.0000 (4 classes)             >= 0.9
    class p under 8 random transforms (mean)      1.0000                         >= 0.9
    EfficientNet-Lite0 rank of the class          0-5 of 1000 (top-1 in 8/12)    < 20
    channel mean / best photo's mean              6.7x - 52x                     >= 3x
    channel peak / photos' strongest position     1.48x - 2.9x                   >= 1x
    own channel / same channel on other renders   5.4x - 18x                     >= 3x

The weights come from `python -m lucent_dsl.zoo install`; without them these tests skip, except
under CI, where they fail.
"""
from __future__ import annotations

import functools as ft
import warnings

import numpy as np
import pytest
import torch
from models import zoo_model
from PIL import Image
from torch import Tensor, nn

import lucent_dsl as ld
from lucent_dsl import render, transforms as tf_lib
from lucent_dsl.models.info import info_of

pytestmark = pytest.mark.quality

SIZE = 128  # the model still sees 224 px: its preprocessing resizes
CLASSES = ("flamingo", "goldfish", "strawberry", "daisy")
CLASS_STEPS = 40
FRESH_SEED = 2024
CHANNELS = (("features.10", 0), ("features.10", 10), ("features.14", 0), ("features.14", 10))
CHANNEL_STEPS = 32

MIN_CLASS_PROB = 0.9
MAX_TRANSFER_RANK = 20  # of 1000 classes (top 2%); chance would put the class at rank ~500
MIN_RATIO_TO_PHOTOS = 3.0
MIN_SPECIFICITY = 3.0



def _square(im: Image.Image) -> Tensor:
    """A centre square crop resized to 224x224, as a (1, 3, 224, 224) batch in [0, 1]."""
    im = im.convert("RGB")
    s = min(im.size)
    left, top = (im.width - s) // 2, (im.height - s) // 2
    im = im.crop((left, top, left + s, top + s)).resize((224, 224), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)[None]


@ft.cache
def _photos() -> Tensor:
    """grace_hopper, coffee and chelsea as a (3, 3, 224, 224) batch in [0, 1]."""
    data = pytest.importorskip("skimage.data")
    cbook = pytest.importorskip("matplotlib.cbook")
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = Image.open(f)
        hopper.load()
    return torch.cat([_square(hopper), _square(Image.fromarray(data.coffee())), _square(Image.fromarray(data.chelsea()))])


def _probs(model: nn.Module, images: Tensor) -> Tensor:
    with torch.no_grad():
        return model(info_of(model).preprocess(images)).softmax(-1)


def _index(model: nn.Module, label: str) -> int:
    labels = info_of(model).labels
    assert labels is not None
    return labels.index(label)


def _channel_means(model: nn.Module, images: Tensor, layers: set[str]) -> dict[str, Tensor]:
    """layer -> its activation (B, C, H, W) on `images`, read with plain hooks (not our plan)."""
    acts: dict[str, Tensor] = {}
    hooks = [model.get_submodule(name).register_forward_hook(ft.partial(lambda n, m, i, o: acts.__setitem__(n, o), name))
             for name in layers]
    try:
        with torch.no_grad():
            model(info_of(model).preprocess(images))
    finally:
        for h in hooks:
            h.remove()
    return acts


@pytest.fixture(scope="module")
def class_renders() -> Tensor:
    model = zoo_model("mobilenet_v2")
    return render([ld.class_logit(c) for c in CLASSES], model, size=SIZE, steps=CLASS_STEPS, seed=0,
                  precision="fp32", progress=False).images


@pytest.fixture(scope="module")
def channel_renders() -> Tensor:
    model = zoo_model("mobilenet_v2")
    return render([ld.channel(layer, index) for layer, index in CHANNELS], model, size=SIZE, steps=CHANNEL_STEPS,
                  seed=0, precision="fp32", progress=False).images


def test_class_visualizations_are_classified_as_their_class(class_renders):
    model = zoo_model("mobilenet_v2")
    p = _probs(model, class_renders)
    for i, label in enumerate(CLASSES):
        k = _index(model, label)
        top = info_of(model).labels[int(p[i].argmax())]
        assert p[i, k] >= MIN_CLASS_PROB, f"{label}: p = {float(p[i, k]):.4f}, top-1 is {top!r}"


def test_class_visualizations_survive_random_transforms(class_renders):
    # Not a brittle pixel pattern: the class holds under the jitter/scale/rotate the render trained against.
    model = zoo_model("mobilenet_v2")
    t = tf_lib.standard()
    g = torch.Generator().manual_seed(123)
    p = torch.stack([_probs(model, t.apply(class_renders, t.sample(g, class_renders.shape))) for _ in range(8)])
    for i, label in enumerate(CLASSES):
        pk = p[:, i, _index(model, label)]
        assert pk.mean() >= MIN_CLASS_PROB, f"{label}: p under 8 transforms = {[round(float(v), 4) for v in pk]}"


def test_class_visualizations_from_a_fresh_seed():
    model = zoo_model("mobilenet_v2")
    images = render([ld.class_logit(c) for c in CLASSES], model, size=SIZE, steps=CLASS_STEPS, seed=FRESH_SEED,
                    progress=False).images
    p = _probs(model, images)
    for i, label in enumerate(CLASSES):
        pk = float(p[i, _index(model, label)])
        assert pk >= MIN_CLASS_PROB, f"{label} with seed {FRESH_SEED}: p = {pk:.4f}"


def test_class_visualizations_in_bf16_are_still_classified_as_their_class():
    # precision="bf16": the models run under bf16 autocast, the image and Adam stay fp32; judged in fp32.
    model = zoo_model("mobilenet_v2")
    classes = CLASSES[:1]  # bf16 is emulated, so slow (30 s a class here), on CPUs without bf16 units
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="precision='bf16' on a CPU without bf16 units")
        images = render([ld.class_logit(c) for c in classes], model, size=SIZE, steps=CLASS_STEPS, seed=0,
                        precision="bf16", progress=False).images
    p = _probs(model, images)
    for i, label in enumerate(classes):
        pk = float(p[i, _index(model, label)])
        assert pk >= MIN_CLASS_PROB, f"{label} rendered in bf16: p = {pk:.4f}"


def test_bf16_renders_reach_the_objective_fp32_renders_reach_on_real_weights():
    # The 10 digit classes of the zoo's LeNet5 (real MNIST weights), one batched render per precision, the same seed;
    # each render's class logits read in fp32 with no transforms. Measured (seeds 0-3, native-bf16 CPU): bf16/fp32
    # 1.000-1.009. Per single MobileNetV2 class the ratio swings 0.85-1.17 with the seed (mean 1.02 over 8 renders):
    # one render's trajectory is chaotic, so the law is checked on a mean over classes of a small, stable model.
    model = zoo_model("lenet5_mnist")
    reached = {}
    for precision in ("fp32", "bf16"):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="precision='bf16' on a CPU without bf16 units")
            r = render([ld.class_logit(i) for i in range(10)], model, steps=64, seed=0, precision=precision,
                       progress=False)
        assert r.precision == precision
        with torch.no_grad():
            reached[precision] = float(model(info_of(model).preprocess(r.images)).diagonal().mean())
    assert reached["fp32"] > 5.0  # the renders did raise their logits
    assert reached["bf16"] >= 0.9 * reached["fp32"], reached


def test_class_visualizations_transfer_to_another_model(class_renders):
    # EfficientNet-Lite0 never took part in the render; an adversarial pattern for MobileNetV2 would not move it.
    other = zoo_model("efficientnet_lite0")
    p = _probs(other, class_renders)
    for i, label in enumerate(CLASSES):
        k = _index(other, label)
        rank = int((p[i] > p[i, k]).sum())
        assert rank < MAX_TRANSFER_RANK, f"{label}: EfficientNet-Lite0 ranks it {rank} of 1000 (p = {float(p[i, k]):.4f})"


def test_channel_visualizations_beat_natural_photos(channel_renders):
    model = zoo_model("mobilenet_v2")
    layers = {layer for layer, _ in CHANNELS}
    on_photos = _channel_means(model, _photos(), layers)
    on_renders = _channel_means(model, channel_renders, layers)
    for i, (layer, index) in enumerate(CHANNELS):
        photo_mean = float(on_photos[layer][:, index].mean((1, 2)).max())  # the best photo's mean
        photo_peak = float(on_photos[layer][:, index].max())  # the strongest position in any photo
        ours, our_peak = float(on_renders[layer][i, index].mean()), float(on_renders[layer][i, index].max())
        assert photo_mean > 0, f"{layer}:{index} is not positive on any photo ({photo_mean:.4f}); the ratio means nothing"
        msg = (f"{layer}:{index}: render mean {ours:.3f} (peak {our_peak:.3f}); photos' best mean {photo_mean:.3f} "
               f"(peak {photo_peak:.3f})")
        assert ours >= MIN_RATIO_TO_PHOTOS * photo_mean, msg
        assert our_peak >= photo_peak, msg


def test_channel_visualizations_are_specific(channel_renders):
    # Each render excites its own channel, not the others: not just "a high-contrast image".
    model = zoo_model("mobilenet_v2")
    acts = _channel_means(model, channel_renders, {layer for layer, _ in CHANNELS})
    for j, (layer, index) in enumerate(CHANNELS):
        on_each = [float(acts[layer][i, index].mean()) for i in range(len(CHANNELS))]
        others = max(v for i, v in enumerate(on_each) if i != j)
        assert on_each[j] >= MIN_SPECIFICITY * others, f"{layer}:{index} on each render: {[round(v, 3) for v in on_each]}"

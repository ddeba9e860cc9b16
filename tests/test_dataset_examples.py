"""Dataset examples: real digits for LeNet5's class logits, real photo crops for MobileNetV2, streaming laws, resume, CLI."""
from __future__ import annotations

import argparse
import json

import pytest
import torch
import torch.nn.functional as F
from digits import mnist
from hypothesis import given, settings, strategies as st
from models import zoo_model
from torch import nn

import lucent_dsl as ld
from lucent_dsl.cli import examples as examples_command
from lucent_dsl.dataset_examples import (
    Examples,
    ImageSource,
    StaleStateWarning,
    TooFewImagesWarning,
    box_at,
    crops,
    dataset_examples,
    receptive_field,
)
from lucent_dsl.errors import InvalidArgumentError
from lucent_dsl.io.files import load_image, save_png


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, stride=2, padding=1)).eval()


def test_top9_of_each_lenet5_class_logit_are_that_digit_90_of_90():
    images, labels = mnist()
    model = zoo_model("lenet5_mnist")
    found = dataset_examples([ld.class_logit(str(d)) for d in range(10)], model, images, k=9, batch=1000, progress=False)
    hits = [sum(int(labels[e.index]) == d for e in found.units[d].top) for d in range(10)]
    misses = [sum(int(labels[e.index]) == d for e in found.units[d].bottom) for d in range(10)]
    # measured: 9 of 9 for every digit, and no bottom example of a digit is that digit
    assert hits == [9] * 10, hits  # README: "the top 9 examples of each class logit are that digit, 90 of 90"
    assert sum(misses) <= 3, misses
    assert found.seen == 5000 and all(e.box is None for e in found.units[0].top)  # a vector output has no position


def _photo_crops(name: str, n: int, seed: int, side: int = 96) -> torch.Tensor:
    import skimage.data

    x = load_image(getattr(skimage.data, name)())
    g = torch.Generator().manual_seed(seed)
    h, w = x.shape[-2:]
    out = []
    for _ in range(n):
        s = int(torch.randint(min(h, w) // 2, min(h, w) + 1, (1,), generator=g))
        top, left = (int(torch.randint(0, d - s + 1, (1,), generator=g)) for d in (h, w))
        out.append(F.interpolate(x[..., top:top + s, left:left + s], size=(side, side), mode="bilinear", antialias=True))
    return torch.cat(out)


def test_espresso_examples_of_mobilenet_v2_are_crops_of_the_coffee_photo():
    model = zoo_model("mobilenet_v2")
    names = ["coffee", "astronaut", "chelsea", "rocket", "colorwheel"]
    images = torch.cat([_photo_crops(n, 6, i) for i, n in enumerate(names)])
    found = dataset_examples([ld.class_logit("espresso"), ld.channel("features.4", 3)], model, images, k=5, batch=15,
                             size=96, progress=False)
    espresso = found.units[0]
    assert sum(e.index < 6 for e in espresso.top) >= 4, espresso.top  # rows 0..5 are the coffee crops
    assert all(e.index >= 6 for e in espresso.bottom)
    field = receptive_field(model, "features.4", found.size)
    assert found.size == (96, 96) and 20 < field[0] < 96  # 12 x 12 maps: each position sees part of the image
    boxes = [e.box for e in found.units[1].top]  # a channel of a map: a receptive-field box around the arg-max
    assert all(b is not None and (b[2] - b[0], b[3] - b[1]) == (field[1], field[0]) for b in boxes)
    assert all(0 <= b[0] < b[2] <= 96 and 0 <= b[1] < b[3] <= 96 for b in boxes)


def test_boxes_are_the_receptive_field_around_the_argmax():
    images, _ = mnist()
    model = zoo_model("lenet5_mnist")
    assert receptive_field(model, "conv1", (28, 28)) == (3, 3)
    assert receptive_field(model, "conv2", (28, 28)) in ((7, 7), (8, 8))  # 3x3, pool 2, 3x3: 8 (a pool passes one input)
    found = dataset_examples(["channel('conv1', 5)", "neuron('conv2', 1, x=2, y=3)"], model, images[:300], k=4, progress=False)
    acts = ld.compile_plan("channel('conv1', 5)", model).runners["model"](images[:300])["conv1"][:, 5]
    for e in found.units[0].top:
        x0, y0, x1, y1 = e.box
        flat = int(acts[e.index].flatten().argmax())
        assert (x1 - x0, y1 - y0) == (3, 3) and x0 <= flat % 28 < x1 and y0 <= flat // 28 < y1
    field = receptive_field(model, "conv2", (28, 28))
    assert {e.box for e in found.units[1].top} == {box_at((3, 2), (14, 14), (28, 28), field)}  # a neuron's own position


@settings(max_examples=8, deadline=None)
@given(st.integers(1, 12), st.integers(1, 5), st.integers(0, 3))
def test_streaming_top_k_does_not_depend_on_the_batch_size(batch, k, seed):
    net = _net(seed)
    images = torch.rand(12, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    units = ["channel('2', 0)", "-channel('2', 1) + 0.5 * neuron('0', 2)"]
    one = dataset_examples(units, net, images, k=k, batch=12, progress=False)
    many = dataset_examples(units, net, images, k=k, batch=batch, progress=False)
    assert [[e.index for e in u.top + u.bottom] for u in one.units] == [[e.index for e in u.top + u.bottom] for u in many.units]
    with torch.no_grad():  # the law against a plain full sort of the plan's own scores
        scores = ld.compile_plan(units[1], net).scores(ld.compile_plan(units[1], net).forward(images), 12).per_image
    order = sorted(range(12), key=lambda i: (-float(scores[i]), i))[:k]
    assert [e.index for e in many.units[1].top] == order
    assert [e.score for e in many.units[1].top] == pytest.approx([float(scores[i]) for i in order], rel=1e-5, abs=1e-6)


def test_an_interrupted_pass_resumes_where_it_stopped(tmp_path, monkeypatch):
    net, images = _net(1), torch.rand(20, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    units = ["channel('2', 2)"]
    want = dataset_examples(units, net, images, k=3, batch=4, progress=False)
    state = tmp_path / "state.json"
    calls = []
    real = ImageSource.load

    def load(self, idx):
        calls.append(idx[0])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, idx)

    monkeypatch.setattr(ImageSource, "load", load)
    with pytest.raises(KeyboardInterrupt):
        dataset_examples(units, net, images, k=3, batch=4, state=state, progress=False)
    calls.clear()
    monkeypatch.setattr(ImageSource, "load", real)
    again = dataset_examples(units, net, images, k=3, batch=4, state=state, progress=False)
    assert again == want and Examples.from_json(again.to_json()) == again
    assert json.loads(state.read_text())["seen"] == 20
    with pytest.warns(StaleStateWarning, match="another examples pass \\(k changed\\)"):
        other_k = dataset_examples(units, net, images, k=4, batch=4, state=state, progress=False)
    assert other_k == dataset_examples(units, net, images, k=4, batch=4, progress=False)


def test_terms_that_do_not_score_one_image_alone_are_refused():
    net, images = _net(), torch.rand(4, 3, 8, 8)
    with pytest.raises(InvalidArgumentError, match="compares the images of a batch"):
        dataset_examples([ld.channel("2", 0) - ld.diversity("2")], net, images, progress=False)
    with pytest.raises(InvalidArgumentError, match="selects batch"):
        dataset_examples([ld.channel("2", 0, batch=1)], net, images, progress=False)
    with pytest.raises(InvalidArgumentError, match="k and batch"):
        dataset_examples(["channel('2', 0)"], net, images, k=0, progress=False)
    with pytest.raises(ld.LayerNotFoundError):
        dataset_examples(["channel('nope', 0)"], net, images, progress=False)
    with pytest.raises(ld.ImageError, match=r"\[0, 1\]"):
        dataset_examples(["channel('2', 0)"], net, images * 255, progress=False)
    pairs = [(img, 0) for img in images]  # a dataset of (image, label) pairs reads like the stacked tensor
    assert (dataset_examples(["channel('2', 0)"], net, pairs, k=2, progress=False)
            == dataset_examples(["channel('2', 0)"], net, images, k=2, progress=False))


def test_the_examples_command_on_a_folder_of_digit_pngs(tmp_path):
    images, labels = mnist()
    folder = tmp_path / "digits"
    picks = [int(i) for d in range(10) for i in (labels == d).nonzero()[:8, 0]]
    for i in picks:
        save_png(folder / f"{int(labels[i])}_{i:04d}.png", images[i])
    parser = argparse.ArgumentParser(prog="lucent-dsl")
    examples_command.add_parser(parser.add_subparsers(), [])
    args = parser.parse_args(["examples", str(folder), "--model", "lenet5_mnist", "--objective", "class_logit('3')",
                              "--layer", "conv2", "--channels", "0:2", "--k", "4", "--out", str(tmp_path / "out")])
    args.quiet = True
    assert args.run(args) == 0
    doc = json.loads((tmp_path / "out" / "examples.json").read_text())
    assert [u["objective"] for u in doc["units"]] == ["class_logit('3')", "channel('conv2', 0)", "channel('conv2', 1)"]
    assert all(e["file"].startswith("3_") for e in doc["units"][0]["top"])
    strip = load_image(tmp_path / "out" / doc["units"][1]["top_png"])
    assert strip.shape[-1] > 3 * strip.shape[-2]  # a row of 4 crops
    assert len(crops([], ImageSource(images[:2], (28, 28), 1))) == 0


def _fresh(units, net, images, **kw):
    return dataset_examples(units, net, images, k=3, batch=4, progress=False, **kw)


def test_a_state_from_another_model_or_other_images_is_never_resumed(tmp_path):
    """Issue 28.1: the state names the model's weights and the images' contents; a rerun after either changed
    starts again (with a warning naming what changed) and reports only the new pass's examples and scores."""
    units, state = ["channel('2', 0)", "-channel('2', 1)"], tmp_path / "state.json"
    folder = tmp_path / "photos"
    for i in range(8):
        save_png(folder / f"{i}.png", torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(i)))
    first = _fresh(units, _net(0), folder, state=state)
    assert _fresh(units, _net(0), folder, state=state) == first  # the same pass resumes (here: it was finished)
    with pytest.warns(StaleStateWarning, match="the model"):
        other_model = _fresh(units, _net(1), folder, state=state)
    assert other_model == _fresh(units, _net(1), folder) != first
    save_png(folder / "3.png", torch.ones(1, 3, 8, 8))  # same names, same count, other contents
    with pytest.warns(StaleStateWarning, match="the images"):
        other_images = _fresh(units, _net(1), folder, state=state)
    assert other_images == _fresh(units, _net(1), folder) != other_model
    tensor = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    _fresh(units, _net(0), tensor, state=state.with_name("t.json"))
    with pytest.warns(StaleStateWarning, match="the images"):  # a permutation keeps the sum: contents are hashed
        swapped = _fresh(units, _net(0), tensor.flip(0), state=state.with_name("t.json"))
    assert swapped == _fresh(units, _net(0), tensor.flip(0))


def test_the_examples_command_rerun_with_another_model_reports_that_model(tmp_path):
    images, _ = mnist()
    folder = tmp_path / "digits"
    for i in range(12):
        save_png(folder / f"{i:02d}.png", images[i])
    parser = argparse.ArgumentParser(prog="lucent-dsl")
    examples_command.add_parser(parser.add_subparsers(), [])

    def run(spec):
        args = parser.parse_args(["examples", str(folder), "--model", spec, "--objective", "class_logit('3')",
                                  "--k", "3", "--out", str(tmp_path / "out")])
        args.quiet = True
        assert args.run(args) == 0
        return json.loads((tmp_path / "out" / "examples.json").read_text())["units"][0]

    plain = run("lenet5_mnist")
    with pytest.warns(StaleStateWarning, match="the model"):
        robust = run("lenet5_mnist_adv")
    want = dataset_examples(["class_logit('3')"], zoo_model("lenet5_mnist_adv"), folder, k=3, progress=False).units[0]
    assert [e["score"] for e in robust["top"]] == [e.score for e in want.top]
    assert [e["score"] for e in robust["top"]] != [e["score"] for e in plain["top"]]


@settings(max_examples=12, deadline=None)
@given(st.integers(2, 9), st.integers(1, 7), st.booleans())
def test_no_image_is_both_a_top_and_a_bottom_example(n, k, dead):
    """Issue 28.14: with fewer than 2k images, k is capped at n // 2 with a warning; ties (a dead unit) never put
    one image in both lists."""
    net = _net(n)
    if dead:
        nn.init.zeros_(net[2].weight), nn.init.zeros_(net[2].bias)
    images = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(n))
    if 2 * k > n:
        with pytest.warns(TooFewImagesWarning, match=f"only {n} images"):
            found = dataset_examples(["channel('2', 0)"], net, images, k=k, batch=3, progress=False)
    else:
        found = dataset_examples(["channel('2', 0)"], net, images, k=k, batch=3, progress=False)
    u = found.units[0]
    assert len(u.top) == len(u.bottom) == min(k, n // 2)
    assert not {e.index for e in u.top} & {e.index for e in u.bottom}


def test_one_image_gives_no_examples():
    with pytest.raises(InvalidArgumentError, match="at least 2 images"):
        dataset_examples(["channel('2', 0)"], _net(), torch.rand(1, 3, 8, 8), k=1, progress=False)

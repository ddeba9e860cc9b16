"""Models declare their own preprocessing (timm's pretrained_cfg, torchvision's ImageNet normalization);
an ImageNet-sized model with none gets one clear warning instead of silently raw pixels."""
from __future__ import annotations

import warnings

import pytest
import timm
import torch
import torchvision
from torch import nn

import lucent_dsl as ld
from lucent_dsl.models.info import IMAGENET_MEAN, IMAGENET_STD, PreprocessingWarning, inferred_info


def big_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 64, 3), nn.ReLU(), nn.Conv2d(64, 2048, 3))  # ~1.2 M parameters


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "vit_b_16"])
def test_torchvision_models_get_imagenet_normalization(name):
    model = torchvision.models.get_model(name)
    info = ld.info_of(model)
    assert (info.mean, info.std, info.channels) == (IMAGENET_MEAN, IMAGENET_STD, 3)
    x = torch.rand(1, 3, 8, 8)
    expected = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(info.preprocess(x), expected)


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny_patch16_224", "convnext_atto"])
def test_timm_models_use_their_pretrained_cfg(name):
    model = timm.create_model(name, pretrained=False)
    info = ld.info_of(model)
    assert info.mean == tuple(model.pretrained_cfg["mean"]) and info.std == tuple(model.pretrained_cfg["std"])


def test_an_attached_info_wins_over_the_inferred_one():
    model = ld.with_info(torchvision.models.resnet18(), ld.ModelInfo(mean=(0.5,) * 3, std=(0.5,) * 3))
    assert ld.info_of(model).mean == (0.5,) * 3


def test_big_unknown_model_warns_once_and_small_ones_never():
    net = big_net()
    with pytest.warns(PreprocessingWarning, match="raw \\[0, 1\\] pixels"):
        inferred_info(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inferred_info(net)  # once per model
        inferred_info(nn.Sequential(nn.Conv2d(3, 4, 3)))  # a toy: no warning
        assert ld.info_of(ld.with_info(big_net(), ld.ModelInfo())).mean is None  # ModelInfo() silences it

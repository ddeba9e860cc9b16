"""The toolbox methods take one `Settings` value; the render keywords they took before still work, the same way."""
from __future__ import annotations

import dataclasses as dc

import pytest
import torch
from torch import nn

from lucent_dsl.errors import InvalidArgumentError
from lucent_dsl.toolbox import Settings, activation_atlas, neuron_groups, render_dictionary


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU()).eval()


OLD = dict(size=12, steps=3, lr=0.07, param="pixel", transforms="none", seed=5, batch=1, precision="fp32",
           progress=False)


def test_settings_and_the_old_keywords_render_the_same():
    net = _net()
    s = Settings(size=12, steps=3, lr=0.07, param="pixel", transforms="none", seed=5, batch=1, precision="fp32",
                 progress=False)
    atoms = torch.eye(6)[:2]
    a, b = render_dictionary(net, "1", atoms, **OLD), render_dictionary(net, "1", atoms, settings=s)
    assert torch.equal(a.images, b.images) and a.seeds == b.seeds and a.settings == b.settings
    assert a.settings.size == (12, 12) and a.settings.precision == "fp32"
    vectors, layout = torch.rand(12, 6), torch.rand(12, 2)
    a = activation_atlas(net, None, "1", grid=2, min_count=1, vectors=vectors, layout=layout, **OLD)
    b = activation_atlas(net, None, "1", grid=2, min_count=1, vectors=vectors, layout=layout, settings=s)
    assert torch.equal(a.images, b.images) and a.objectives == b.objectives and a.settings == b.settings
    pytest.importorskip("sklearn")
    image = torch.rand(1, 3, 14, 14)
    old = {("render_size" if k == "size" else k): v for k, v in OLD.items()}
    a, b = neuron_groups(net, image, "1", 2, **old), neuron_groups(net, image, "1", 2, settings=s)
    assert torch.equal(a.renders, b.renders) and a.settings == b.settings and a.renders.shape[-1] == 12


def test_a_keyword_beside_settings_must_agree_with_it():
    net, atoms = _net(), torch.eye(6)[:1]
    s = Settings(size=12, steps=1, progress=False)
    r = render_dictionary(net, "1", atoms, settings=s, steps=1, size=(12, 12))  # agrees: accepted
    assert r.settings.steps == 1
    with pytest.raises(InvalidArgumentError, match=r"steps=2 contradicts settings.steps=1.*dataclasses.replace"):
        render_dictionary(net, "1", atoms, settings=s, steps=2)
    with pytest.raises(InvalidArgumentError, match="render_size=16 contradicts settings.size"):
        neuron_groups(net, torch.rand(1, 3, 14, 14), "1", 1, settings=s, render_size=16)
    with pytest.raises(TypeError, match="unexpected keyword argument 'stpes'"):
        render_dictionary(net, "1", atoms, stpes=3)
    with pytest.raises(InvalidArgumentError, match="settings must be a toolbox Settings"):
        render_dictionary(net, "1", atoms, settings={"steps": 1})  # type: ignore[arg-type]


def test_settings_are_checked_when_made_and_resolved_once():
    with pytest.raises(InvalidArgumentError, match="param must be"):
        Settings(param="cppn")
    with pytest.raises(InvalidArgumentError, match="batch must be an integer >= 1"):
        Settings(batch=0)
    with pytest.raises(InvalidArgumentError, match="lr must be > 0"):
        Settings(lr=0)
    s = Settings(steps=4)
    assert s.size is None and dc.replace(s, size=8).size == (8, 8)
    r = s.resolved(_net())
    assert r.size == (224, 224) and r.precision in ("fp32", "bf16") and r.steps == 4
    assert s.resolved(_net(), default_size=(20, 30)).size == (20, 30)

"""Augmentation ensembling (issue 27): `transforms.color_shift` and `transforms.ensemble`."""
from __future__ import annotations

import math

import torch
from hypothesis import given, settings, strategies as st
from torch import nn

import lucent_dsl as ld
from lucent_dsl.transforms import color_shift, ensemble, identity


@settings(max_examples=25, deadline=None)
@given(shift=st.floats(0, 0.5), scale=st.floats(0, 1), b=st.integers(1, 3), c=st.integers(1, 4),
       seed=st.integers(0, 2**31))
def test_color_shift_is_an_affine_map_per_image_and_channel_within_its_bounds(shift, scale, b, c, seed):
    t = color_shift(shift, scale)
    x = torch.rand(b, c, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    mu, sigma = t.sample(torch.Generator().manual_seed(seed), x.shape).double()
    assert mu.shape == (b, c, 1, 1) and bool((mu.abs() <= shift + 1e-12).all())
    assert bool((sigma >= math.exp(-scale) - 1e-9).all()) and bool((sigma <= math.exp(scale) + 1e-9).all())
    y = t.apply(x, torch.stack((mu, sigma)))
    torch.testing.assert_close(y, (x - 0.5) * sigma + 0.5 + mu)
    grey = t.apply(torch.full_like(x, 0.5), torch.stack((mu, sigma)))
    torch.testing.assert_close(grey, (0.5 + mu).expand_as(x))  # grey moves by mu alone


@settings(max_examples=10, deadline=None)
@given(copies=st.integers(1, 4), b=st.integers(1, 2), seed=st.integers(0, 2**31))
def test_ensemble_makes_copies_crop_major_each_with_its_own_draw(copies, b, seed):
    x = torch.rand(b, 3, 24, 24, generator=torch.Generator().manual_seed(seed))
    t = ensemble(copies)
    y = t.apply(x, t.sample(torch.Generator().manual_seed(seed), x.shape))
    assert y.shape[0] == copies * b
    rows = y.view(copies, b, *y.shape[1:])
    for k in range(1, copies):
        assert not torch.allclose(rows[k], rows[0])  # another jitter, scale, rotation and colour
    plain = ensemble(copies, identity(), shift=0.0, scale=0.0)
    same = plain.apply(x, plain.sample(torch.Generator().manual_seed(seed), x.shape)).view(copies, b, *x.shape[1:])
    torch.testing.assert_close(same, x.expand(copies, *x.shape), atol=1e-5, rtol=0)


def test_a_render_averages_its_terms_over_the_copies():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    alone = ld.render(ld.channel("2", 1), net, size=16, steps=5, transforms=[], progress=False)
    copies = ld.render(ld.channel("2", 1), net, size=16, steps=5, progress=False,
                       transforms=ensemble(3, identity(), shift=0.0, scale=0.0))
    torch.testing.assert_close(copies.images, alone.images, atol=1e-5, rtol=0)
    shifted = ld.render(ld.channel("2", 1), net, size=16, steps=5, transforms=ensemble(3), progress=False)
    assert shifted.images.shape == alone.images.shape and not torch.allclose(shifted.images, alone.images)

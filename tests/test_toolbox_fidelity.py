"""`transforms.standard()` against Lucid's `standard_transforms` (lucid/optvis/transform.py): Lucid's jitter(d) is a
random crop d pixels smaller (a shift of -d/2..d/2), its angles are whole degrees from
`list(range(-10, 11)) + 5 * [0]`, its scales `1 + (i - 5) / 50`."""
from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from hypothesis import given, settings, strategies as st

import lucent_dsl.transforms as T
from lucent_dsl.transforms.recipes import STANDARD_ANGLES, STANDARD_JITTERS, STANDARD_PAD


def lucid_jitter(image: torch.Tensor, d: int, oy: int, ox: int) -> torch.Tensor:
    """Lucid's jitter(d) for one draw: the crop of size (H - d, W - d) at offset (oy, ox), each in 0..d."""
    h, w = image.shape[-2:]
    return image[..., oy:oy + h - d, ox:ox + w - d]


@settings(max_examples=20)
@given(d=st.sampled_from([2, 4, 8]), seed=st.integers(0, 2**16))
def test_our_jitter_of_half_is_lucids_crop_with_the_same_shifts(d, seed):
    image = torch.rand(1, 2, 14, 15, generator=torch.Generator().manual_seed(seed))
    t = T.jitter(d // 2)
    m = t.sample(torch.Generator().manual_seed(seed), image.shape)
    out = t.apply(image, m)
    dx, dy = (-m[0, :2, 2]).round().long().tolist()
    ox, oy = d // 2 - dx, d // 2 - dy  # Lucid's offset that shows the same content
    assert 0 <= ox <= d and 0 <= oy <= d
    centre = out[..., d // 2:out.shape[-2] - d // 2, d // 2:out.shape[-1] - d // 2]
    torch.testing.assert_close(centre, lucid_jitter(image, d, oy, ox), atol=1e-5, rtol=0)


@pytest.mark.parametrize("lucid_d, ours", [(8, STANDARD_JITTERS[0]), (4, STANDARD_JITTERS[1])])
def test_standard_jitters_shift_like_lucids(lucid_d, ours):
    m = T.jitter(ours).sample(torch.Generator().manual_seed(0), (40000, 3, 8, 8))
    shifts = (-m[:, 0, 2]).round().long()
    counts = Counter(shifts.tolist())
    assert sorted(counts) == list(range(-lucid_d // 2, lucid_d // 2 + 1))  # Lucid's offsets 0..d, centred
    expected = 40000 / (lucid_d + 1)
    assert all(abs(c - expected) < 5 * math.sqrt(expected) for c in counts.values())
    lucid_std = math.sqrt(((lucid_d + 1) ** 2 - 1) / 12)  # a uniform integer on d + 1 values
    assert float(shifts.float().std()) == pytest.approx(lucid_std, rel=0.02)


def test_standard_angles_scales_and_total_shift_are_lucids():
    g = torch.Generator().manual_seed(0)
    m = T.standard().sample(g, (26000, 3, 32, 32)).double()
    a = m[:, :2, :2]
    scale = 1 / a.det().sqrt()  # the transforms' matrices map output to input: zooming in by s shrinks by 1/s
    angle = torch.rad2deg(torch.atan2(a[:, 1, 0], a[:, 0, 0]))
    assert set(scale.mul(50).round().long().tolist()) == set(range(45, 56))  # 0.90, 0.92, ..., 1.10
    assert bool((angle - angle.round()).abs().max() < 1e-4)  # whole degrees
    counts = Counter(angle.round().long().tolist())
    assert sorted(counts) == list(range(-10, 11)) and STANDARD_ANGLES.count(0) == 6 and len(STANDARD_ANGLES) == 26
    assert counts[0] / 26000 == pytest.approx(6 / 26, abs=0.01) and counts[5] / 26000 == pytest.approx(1 / 26, abs=0.004)
    # the whole shift: jitter 1 (var 80/12), then jitter 2 (var 24/12) through the zoom (E[1/s^2] ~ 1.004)
    shift = m[:, 0, 2]
    assert float(shift.std()) == pytest.approx(math.sqrt(80 / 12 + 24 / 12 * float((1 / scale**2).mean())), rel=0.03)
    assert STANDARD_PAD == 12


def test_standard_keeps_its_shape_and_one_grid_sample():
    t = T.standard()
    x = torch.rand(2, 3, 20, 24)
    assert t.apply(x, t.sample(torch.Generator().manual_seed(1), x.shape)).shape == (2, 3, 44, 48)
    assert T.is_compilable(t)

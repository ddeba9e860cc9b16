"""MACO, CPPN, shared (aligned) and RGBA parameterizations; compositing, opacity and transparency maps."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import lucent_dsl
import lucent_dsl as ld
from lucent_dsl import param as pe, render, transforms as tf, transforms as tf_more
from lucent_dsl.errors import InvalidArgumentError, ObjectiveShapeError
from lucent_dsl.objectives.masks import masked
from lucent_dsl.param import LUCID_COLOR_CORRELATION, ImageParam, phase as maco_module
from lucent_dsl.toolbox.transparency import transparency_map

SIZES = [(16, 16), (15, 22), (9, 8)]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def factories(size: tuple[int, int], batch: int) -> dict[str, ImageParam]:
    return {
        "maco": pe.maco(size, batch=batch),
        "maco_clamp": pe.maco(size, batch=batch, squash="clamp", decorrelate=False,
                              magnitude=pe.natural_magnitude(torch.rand(2, 3, 12, 12, generator=gen(3)), decorrelate=False)),
        "cppn": pe.cppn(size, batch=batch, hidden=6, layers=3),
        "cppn_norm": pe.cppn(size, batch=batch, hidden=6, layers=2, normalize=True),
        "shared": pe.shared(size, batch, factors=(2, 4), interpolate=(4,)),
        "alpha": pe.alpha(size, batch=batch),
        "alpha_pixel": pe.alpha(size, batch=batch, kind="pixel"),
    }


def perturbed(p: ImageParam, seed: int = 0) -> dict[str, torch.Tensor]:
    """Leaves moved away from their init (CPPN's zero output layer would hide the rest)."""
    leaves = p.init(gen(seed))
    g = gen(seed + 100)
    with torch.no_grad():
        for v in leaves.values():
            v.add_(0.3 * torch.randn(v.shape, generator=g))
    return leaves


@pytest.mark.parametrize("size", SIZES)
def test_shapes_range_and_seed(size):
    for name, p in factories(size, 2).items():
        img = p.to_image(p.init(gen(0))).detach()
        channels = 4 if name.startswith("alpha") else 3
        assert img.shape == (2, channels, *size), name
        assert img.dtype == torch.float32
        assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0, name
        again = p.to_image(p.init(gen(0))).detach()
        assert torch.equal(img, again), name
        moved = p.to_image(perturbed(p)).detach()
        assert float(moved.min()) >= 0.0 and float(moved.max()) <= 1.0, name
        other = p.init(gen(1))
        if name not in ("cppn", "cppn_norm"):  # CPPN's output starts grey whatever the seed
            assert not torch.equal(p.to_image(other).detach(), img), name


@pytest.mark.parametrize("name", ["maco", "maco_clamp", "cppn", "cppn_norm", "shared", "alpha", "alpha_pixel"])
def test_gradients_reach_every_leaf(name):
    p = factories((12, 10), 3)[name]
    leaves = perturbed(p)
    assert all(v.requires_grad and v.is_leaf for v in leaves.values())
    (p.to_image(leaves) * torch.rand(3, 1, 12, 10, generator=gen(5))).sum().backward()
    for k, v in leaves.items():
        assert v.grad is not None and bool(torch.isfinite(v.grad).all()), (name, k)
        assert float(v.grad.abs().sum()) > 0, (name, k)


def test_cppn_output_layer_starts_at_zero_and_learns_first():
    p = pe.cppn(8, layers=2, hidden=4)
    leaves = p.init(gen(0))
    assert torch.equal(p.to_image(leaves).detach(), torch.full((1, 3, 8, 8), 0.5))
    p.to_image(leaves)[:, 0].mean().backward()
    assert float(leaves["w2"].grad.abs().sum()) > 0  # the output layer gets a gradient at once


# --- MACO ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES + [(1, 5)])
def test_maco_keeps_the_magnitude(size):
    h, w = size
    mag = pe.natural_magnitude(torch.rand(3, 3, h, w, generator=gen(1)))
    p = pe.maco(size, magnitude=mag, batch=2)
    leaves = p.init(gen(0))
    for step in range(3):  # at init and after optimizer steps: the magnitude never moves
        x = pe.maco_image(leaves["phase"], mag).detach()
        assert x.shape == (2, 3, h, w)
        got = torch.fft.fft2(x, norm="ortho").abs()
        assert torch.allclose(got, mag.expand_as(got), atol=1e-5 * float(mag.max()) + 1e-6), step
        p.to_image(leaves)[:, 1].mean().backward()
        with torch.no_grad():
            leaves["phase"] -= 0.5 * leaves["phase"].grad
        leaves["phase"].grad = None


def test_maco_image_is_the_pre_squash_image():
    mag = pe.natural_magnitude(torch.rand(2, 3, 10, 12, generator=gen(2)))
    leaves = pe.maco((10, 12), magnitude=mag).init(gen(0))
    m = torch.tensor(LUCID_COLOR_CORRELATION, dtype=torch.float64)
    m = (m / torch.linalg.vector_norm(m, dim=0).max()).float()
    x = pe.maco_image(leaves["phase"], mag)
    want = torch.sigmoid(4 * torch.einsum("ij,bjhw->bihw", m, x))
    assert torch.allclose(pe.maco((10, 12), magnitude=mag).to_image(leaves), want, atol=1e-6)


def test_shipped_magnitude_is_used_by_default_and_resampled():
    mag = pe.default_magnitude()
    assert mag.shape == (3, 128, 128) and mag.dtype == torch.float32
    assert bool(torch.isfinite(mag).all()) and float(mag.min()) >= 0 and float(mag[:, 0, 0].abs().max()) == 0
    # natural images: more energy at low frequencies than at high ones
    assert float(mag[:, 1:4, 0].mean()) > 10 * float(mag[:, 60:64, 60:64].mean())
    resampled = maco_module._magnitude(None, 3, 24, 30)
    leaves = pe.maco((24, 30)).init(gen(0))
    got = torch.fft.fft2(pe.maco_image(leaves["phase"], resampled.float()), norm="ortho").abs()
    assert torch.allclose(got[0], resampled.float(), atol=1e-4)
    # resampling follows frequency: the lowest bins of the small grid resemble the big one's
    assert torch.allclose(maco_module._magnitude(mag, 3, 128, 128).float(), mag, rtol=1e-3, atol=1e-3)


def test_natural_magnitude_arguments():
    imgs = torch.rand(2, 3, 8, 8, generator=gen(0))
    assert pe.natural_magnitude(imgs, size=(5, 6)).shape == (3, 5, 6)
    assert pe.natural_magnitude(imgs[:, :1], decorrelate=False).shape == (1, 8, 8)
    for bad in (torch.rand(3, 8, 8), torch.full((1, 3, 4, 4), math.nan), "imgs"):
        with pytest.raises(InvalidArgumentError):
            pe.natural_magnitude(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="3 colour channels"):
        pe.maco(8, channels=1)
    with pytest.raises(InvalidArgumentError, match="shape"):
        pe.maco(8, magnitude=torch.ones(2, 8, 8))
    with pytest.raises(InvalidArgumentError, match="non-negative"):
        pe.maco(8, magnitude=-torch.ones(3, 8, 8))
    with pytest.raises(InvalidArgumentError, match="squash"):
        pe.maco(8, squash="tanh")
    assert pe.maco(8, channels=1, magnitude=torch.ones(8, 8), decorrelate=False).to_image(
        pe.maco(8, channels=1, magnitude=torch.ones(8, 8)).init(gen(0))).shape == (1, 1, 8, 8)


# --- shared: aligned interpolation ----------------------------------------------------------------------


def test_shared_images_are_aligned_and_interpolate_linearly():
    p = pe.shared(16, 5, factors=(2, 8), interpolate=(4,), sd=0.5)
    leaves = p.init(gen(0))
    with torch.no_grad():
        leaves["detail"].zero_()  # no per-image detail: what is left is shared or interpolated
    img = p.to_image(leaves).detach().double()
    pre = torch.logit(img)  # sigmoid^-1; the colour matrix is linear
    t = torch.linspace(0, 1, 5, dtype=torch.float64).view(-1, 1, 1, 1)
    assert torch.allclose(pre, (1 - t) * pre[:1] + t * pre[-1:], atol=1e-4)
    with torch.no_grad():
        leaves["ends_4"].zero_()
    same = p.to_image(leaves).detach()
    assert torch.allclose(same, same[:1].expand_as(same), atol=1e-7)


def test_shared_first_image_does_not_touch_the_last_end_or_other_details():
    p = pe.shared(12, 4, factors=(2,), interpolate=(4,))
    leaves = p.init(gen(0))
    p.to_image(leaves)[0].sum().backward()
    assert float(leaves["detail"].grad[0].abs().sum()) > 0
    assert float(leaves["detail"].grad[1:].abs().sum()) == 0
    assert float(leaves["ends_4"].grad[0].abs().sum()) > 0 and float(leaves["ends_4"].grad[1].abs().sum()) == 0
    assert float(leaves["shared_2"].grad.abs().sum()) > 0


def test_shared_arguments():
    with pytest.raises(InvalidArgumentError):
        pe.shared(8, 2, factors=(2, 2))
    with pytest.raises(InvalidArgumentError):
        pe.shared(8, 0)
    assert pe.shared(8, 1).to_image(pe.shared(8, 1).init(gen(0))).shape == (1, 3, 8, 8)


# --- transparency ----------------------------------------------------------------------------------------


def test_alpha_starts_half_transparent():
    p = pe.alpha(8, batch=2)
    img = p.to_image(p.init(gen(0))).detach()
    assert torch.allclose(img[:, 3], torch.full((2, 8, 8), 0.5), atol=0.05)


@pytest.mark.parametrize("background", tf_more.BACKGROUNDS)
def test_composite_blends_over_a_replayable_background(background):
    t = tf_more.composite(background)
    img = torch.rand(3, 4, 6, 7, generator=gen(0))
    bg = t.sample(gen(1), img.shape)
    assert bg.shape == (3, 3, 6, 7) and float(bg.min()) >= 0 and float(bg.max()) <= 1
    assert torch.equal(bg, t.sample(gen(1), img.shape))
    assert not torch.equal(bg, t.sample(gen(2), img.shape))
    opaque, clear = img.clone(), img.clone()
    opaque[:, 3], clear[:, 3] = 1.0, 0.0
    assert torch.equal(t.apply(opaque, bg), opaque[:, :3])
    assert torch.equal(t.apply(clear, bg), bg)
    chained = tf.chain(t, tf.standard())
    out = chained.apply(img, chained.sample(gen(0), img.shape))
    assert out.shape == (3, 3, 30, 31)


def test_composite_arguments():
    with pytest.raises(InvalidArgumentError, match="RGBA"):
        tf_more.composite().sample(gen(0), (1, 3, 4, 4))
    with pytest.raises(InvalidArgumentError, match="background"):
        tf_more.composite("checkerboard")


def test_opacity_term():
    e = ld.channel("0", 1) - 0.5 * lucent_dsl.opacity() + lucent_dsl.opacity(batch=1)
    assert ld.parse(repr(e)) == e
    assert ld.from_json(ld.to_json(e)) == e
    img = torch.rand(2, 4, 5, 5, generator=gen(0))
    site = ld.Site(None, ld.IMAGE)
    assert torch.allclose(lucent_dsl.opacity().score({site: img}, 2), img[:, 3].mean((1, 2)))
    with pytest.raises(ObjectiveShapeError, match="RGBA"):
        lucent_dsl.opacity().score({site: img[:, :3]}, 2)


def net1x1(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 1), nn.Tanh(), nn.Conv2d(4, 4, 1)).eval()


def test_render_rgba_over_random_backgrounds():
    net = net1x1()
    e = ld.channel("2", 1) - 0.1 * lucent_dsl.opacity()
    r = render(e, net, param=pe.alpha(12, batch=2), transforms=tf.chain(tf_more.composite(), tf.jitter(1)),
               steps=6, lr=0.1, progress=False)
    assert r.images.shape == (2, 4, 12, 12)
    assert r.pil[0].mode == "RGBA"


def test_transparency_map_follows_the_gradient():
    net = net1x1()
    box = (0.0, 0.0, 0.5, 1.0)  # the left half: a 1x1 net has no gradient outside it
    plan = ld.compile_plan(masked(ld.channel("2", 1), box), net)
    images = torch.rand(2, 3, 6, 8, generator=gen(0))
    a = transparency_map(plan, images=images, transforms=tf.identity(), samples=2, blur=0.0)
    assert a.shape == (2, 1, 6, 8)
    assert float(a.min()) >= 0 and float(a.max()) <= 1 and float(a.max()) == 1.0
    assert torch.equal(a[..., 4:], torch.zeros(2, 1, 6, 4))
    assert bool((a[..., :4] > 0).all())
    r = render(plan, size=8, steps=2, progress=False)
    smooth = transparency_map(r, samples=2)
    assert smooth.shape == (1, 1, 8, 8)
    out = pe.rgba(r.images, smooth)
    assert out.shape == (1, 4, 8, 8) and torch.equal(out[:, 3:], smooth)
    with pytest.raises(InvalidArgumentError):
        transparency_map("result")

"""Contracts of the image parameterizations in `lucent_dsl.param`."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from lucent_dsl.errors import InvalidArgumentError
from lucent_dsl.param import (
    LUCID_COLOR_CORRELATION,
    ImageParam,
    color_correlation,
    fft,
    image,
    pixel,
)
from lucent_dsl.param._common import irfft2 as _irfft2, irfft2_tables as _irfft2_tables

FACTORIES = {"fft": fft, "pixel": pixel}
LEAF = {"fft": "spectrum", "pixel": "pixels"}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def lucid_matrix() -> torch.Tensor:
    m = np.asarray(LUCID_COLOR_CORRELATION, dtype=np.float32)
    return torch.from_numpy(m / np.max(np.linalg.norm(m, axis=0)))


def render(p: ImageParam, seed: int = 0) -> torch.Tensor:
    return p.to_image(p.init(gen(seed))).detach()


# --------------------------------------------------------------------------- shapes and range


@given(
    kind=st.sampled_from(sorted(FACTORIES)),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    batch=st.integers(1, 3),
    channels=st.integers(1, 4),
    sd=st.sampled_from([0.0, 0.01, 1.0, 30.0]),
    decorrelate=st.booleans(),
    squash=st.sampled_from(["sigmoid", "clamp"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_shape_dtype_and_range(kind, h, w, batch, channels, sd, decorrelate, squash, seed):
    p = FACTORIES[kind]((h, w), batch=batch, channels=channels, sd=sd, decorrelate=decorrelate, squash=squash)
    leaves = p.init(gen(seed))
    assert list(leaves) == [LEAF[kind]]
    for leaf in leaves.values():
        assert leaf.dtype == torch.float32 and leaf.is_leaf and leaf.requires_grad
        assert leaf.device == torch.device("cpu")
    img = p.to_image(leaves).detach()
    assert img.shape == (batch, channels, h, w)
    assert img.dtype == torch.float32
    assert bool(torch.isfinite(img).all())
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0


@pytest.mark.parametrize("size", [(5, 12), (12, 5), (7, 7), 6])
def test_non_square_and_int_sizes(size):
    h, w = (size, size) if isinstance(size, int) else size
    leaves = fft(size, batch=2).init(gen())
    assert leaves["spectrum"].shape == (2, 3, h, w // 2 + 1, 2)
    assert render(fft(size, batch=2)).shape == (2, 3, h, w)
    assert render(pixel(size, batch=2)).shape == (2, 3, h, w)


def test_image_dispatches_on_kind():
    assert list(image(8).init(gen())) == ["spectrum"]
    assert list(image(8, kind="pixel").init(gen())) == ["pixels"]
    assert torch.equal(render(image((4, 6), kind="fft", decay_power=2.0)), render(fft((4, 6), decay_power=2.0)))
    with pytest.raises(InvalidArgumentError, match=r"kind.*'fft'.*'pixel'.*'wavelet'"):
        image(8, kind="wavelet")


# --------------------------------------------------------------------------- randomness


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_same_seed_is_bit_identical_and_seeds_differ(kind):
    p = FACTORIES[kind]((9, 13), batch=2)
    a, b, c = render(p, 7), render(p, 7), render(p, 8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # a fresh factory with the same arguments replays the same image too
    assert torch.equal(a, render(FACTORIES[kind]((9, 13), batch=2), 7))


def test_init_returns_fresh_leaves():
    p = pixel(4)
    g = gen(3)
    first, second = p.init(g), p.init(g)
    assert not torch.equal(first["pixels"], second["pixels"])  # the generator advanced
    start = pixel(4, init=torch.full((1, 3, 4, 4), 0.3))
    a, b = start.init(gen()), start.init(gen())
    assert a["pixels"] is not b["pixels"]
    with torch.no_grad():
        a["pixels"].add_(1.0)
    assert not torch.equal(a["pixels"], b["pixels"])


# --------------------------------------------------------------------------- reference formulas


def test_fft_matches_lucent_reference():
    h, w, sd = 10, 7, 0.5
    leaves = fft((h, w), batch=2, sd=sd).init(gen(1))
    s = leaves["spectrum"].detach().double()
    # lucent's fft_image + to_valid_rgb, written out with numpy frequencies
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    freqs = np.sqrt(fx * fx + fy * fy)
    scale = torch.from_numpy(1.0 / np.maximum(freqs, 1.0 / max(w, h)))[None, None, ..., None]
    x = torch.fft.irfftn(torch.view_as_complex((scale * s).contiguous()), s=(h, w), norm="ortho") / 4.0
    x = (x.permute(0, 2, 3, 1) @ lucid_matrix().double().T).permute(0, 3, 1, 2)
    expected = torch.sigmoid(x)
    got = fft((h, w), batch=2, sd=sd).to_image(leaves)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)


def test_pixel_matches_lucent_reference():
    leaves = pixel((3, 5), sd=2.0).init(gen(2))
    x = leaves["pixels"].detach()
    expected = torch.sigmoid((x.permute(0, 2, 3, 1) @ lucid_matrix().T).permute(0, 3, 1, 2))
    torch.testing.assert_close(pixel((3, 5)).to_image(leaves), expected)


@pytest.mark.parametrize("h, w", [(1, 1), (1, 2), (2, 1), (4, 4), (5, 7), (6, 5), (16, 9)])
def test_real_irfft2_matches_torch_fft(h, w):
    # the spectrum is random, not Hermitian: the matmul form must follow torch's C2R convention
    s = torch.randn(2, 3, h, w // 2 + 1, 2, generator=gen(h * 100 + w), dtype=torch.float64)
    got = _irfft2(s, *_irfft2_tables(h, w))
    torch.testing.assert_close(got, torch.fft.irfft2(torch.view_as_complex(s), s=(h, w)))


def test_other_dtypes_follow_the_leaves():
    # bfloat16 has no complex counterpart, so it exercises the real-matmul inverse FFT eagerly
    for kind, factory in FACTORIES.items():
        p = factory((6, 9), sd=1.0)
        leaves = p.init(gen())
        ref = p.to_image(leaves).detach()
        for dtype, tol in ((torch.float64, 1e-6), (torch.bfloat16, 2e-2)):
            img = p.to_image({k: v.detach().to(dtype) for k, v in leaves.items()})
            assert img.dtype == dtype, kind
            torch.testing.assert_close(img.float(), ref, atol=tol, rtol=0)


def test_decay_power_smooths():
    def roughness(decay_power):
        img = render(fft(32, sd=0.05, decay_power=decay_power, decorrelate=False))
        return float((img[..., 1:, :] - img[..., :-1, :]).abs().mean() / img.std())

    assert roughness(2.0) < roughness(1.0) < roughness(0.0)


def test_decorrelate_true_is_ignored_for_other_channel_counts():
    for channels in (1, 4):
        a = render(fft(6, channels=channels, decorrelate=True, sd=1.0))
        b = render(fft(6, channels=channels, decorrelate=False, sd=1.0))
        assert torch.equal(a, b)
    assert not torch.equal(render(fft(6, decorrelate=True, sd=1.0)), render(fft(6, decorrelate=False, sd=1.0)))


# --------------------------------------------------------------------------- init from an image


def _custom_matrix() -> torch.Tensor:
    g = gen(5)
    base = torch.rand(2, 1, 8, 8, generator=g)
    imgs = torch.cat([base, 0.5 * base + 0.5 * torch.rand(2, 1, 8, 8, generator=g), torch.rand(2, 1, 8, 8, generator=g)], 1)
    return color_correlation(imgs)


@pytest.mark.parametrize("kind", sorted(FACTORIES))
@pytest.mark.parametrize("decorrelate", ["lucid", "none", "custom"])
@pytest.mark.parametrize("squash", ["sigmoid", "clamp"])
@pytest.mark.parametrize("init_batch", [1, 2])
def test_init_from_image_reproduces_it(kind, decorrelate, squash, init_batch):
    dec = {"lucid": True, "none": False, "custom": _custom_matrix()}[decorrelate]
    target = torch.rand(init_batch, 3, 9, 14, generator=gen(11))
    target[..., 0, 0] = 0.0  # saturated values must survive too
    target[..., 0, 1] = 1.0
    p = FACTORIES[kind]((9, 14), batch=2, decorrelate=dec, squash=squash, init=target)
    leaves = p.init(gen(0))
    assert all(v.is_leaf and v.requires_grad and v.dtype == torch.float32 for v in leaves.values())
    got = p.to_image(leaves)
    expected = target.expand(2, -1, -1, -1)
    if squash == "sigmoid":
        expected = expected.clamp(1e-4, 1 - 1e-4)
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=0)
    # and the image does not depend on the seed
    assert torch.equal(got, p.to_image(p.init(gen(99))))


def test_init_from_image_with_other_channel_counts():
    target = torch.rand(1, 1, 6, 5, generator=gen(4))
    for factory in FACTORIES.values():
        p = factory((6, 5), channels=1, init=target, squash="clamp")
        torch.testing.assert_close(render(p), target, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("kind", sorted(FACTORIES))
@pytest.mark.parametrize("squash", ["sigmoid", "clamp"])
def test_gradients_reach_every_leaf(kind, squash):
    p = FACTORIES[kind]((8, 11), batch=2, squash=squash)
    leaves = p.init(gen())
    weights = torch.rand(2, 3, 8, 11, generator=gen(1))
    (p.to_image(leaves) * weights).sum().backward()
    for leaf in leaves.values():
        assert leaf.grad is not None and leaf.grad.shape == leaf.shape
        assert bool(torch.isfinite(leaf.grad).all()) and float(leaf.grad.abs().sum()) > 0


def test_clamp_is_straight_through():
    # leaves far outside [0, 1]: the image saturates but the gradient is still the identity's
    p = pixel(5, sd=50.0, squash="clamp", decorrelate=False)
    leaves = p.init(gen())
    img = p.to_image(leaves)
    values = img.detach()
    assert float(values.min()) == 0.0 and float(values.max()) == 1.0
    weights = torch.rand(1, 3, 5, 5, generator=gen(2))
    (img * weights).sum().backward()
    torch.testing.assert_close(leaves["pixels"].grad, weights)


def test_optimizing_the_leaves_fits_a_smooth_target():
    coarse = torch.rand(1, 3, 3, 3, generator=gen(6)) * 0.8 + 0.1
    target = torch.nn.functional.interpolate(coarse, size=(12, 10), mode="bilinear", align_corners=True)
    for kind, factory in FACTORIES.items():
        p = factory((12, 10))
        leaves = p.init(gen())
        opt = torch.optim.Adam(leaves.values(), lr=0.1)
        losses = []
        for _ in range(40):
            opt.zero_grad()
            loss = (p.to_image(leaves) - target).square().mean()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        assert losses[-1] < 0.1 * losses[0], (kind, losses[0], losses[-1])


# --------------------------------------------------------------------------- color_correlation


def test_color_correlation_of_independent_channels_is_diagonal():
    g = gen(8)
    stds = torch.tensor([0.05, 0.2, 0.1]).view(1, 3, 1, 1)
    imgs = (0.5 + stds * torch.randn(16, 3, 32, 32, generator=g)).clamp(0, 1)
    m = color_correlation(imgs)
    assert m.shape == (3, 3) and m.dtype == torch.float32
    off = m - torch.diag(torch.diag(m))
    assert float(off.abs().max()) < 0.03
    # the largest spread is normalized to 1, the others keep their ratios
    torch.testing.assert_close(torch.diag(m), torch.tensor([0.25, 1.0, 0.5]), atol=0.03, rtol=0)
    # and it is usable as decorrelate=
    target = torch.rand(1, 3, 6, 6, generator=g)
    p = fft(6, decorrelate=m, init=target, squash="clamp")
    torch.testing.assert_close(render(p), target, atol=1e-3, rtol=0)
    assert render(pixel(6, decorrelate=m.tolist())).shape == (1, 3, 6, 6)


def test_color_correlation_recovers_lucid_statistics():
    lucid = lucid_matrix().double()
    cov = lucid @ lucid.T
    noise = torch.randn(200_000, 3, generator=gen(9), dtype=torch.float64)
    pixels = 0.45 + 0.1 * noise @ torch.linalg.cholesky(cov).T
    imgs = pixels.T.reshape(3, 8, 25_000, 1).permute(1, 0, 2, 3)
    m = color_correlation(imgs).double()
    torch.testing.assert_close(m @ m.T, cov, atol=0.01, rtol=0)
    torch.testing.assert_close(m, m.T)  # the symmetric root


def test_color_correlation_any_channel_count():
    imgs = torch.rand(2, 4, 8, 8, generator=gen(10))
    m = color_correlation(imgs)
    assert m.shape == (4, 4)
    assert render(pixel(8, channels=4, decorrelate=m)).shape == (1, 4, 8, 8)


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda: fft(0), r"size.*>= 1.*got 0"),
        (lambda: fft(-3), r"size.*got -3"),
        (lambda: fft((4, 0)), r"width.*got 0"),
        (lambda: fft((4, 4, 4)), r"\(H, W\).*\(4, 4, 4\)"),
        (lambda: pixel(4.5), r"size.*4\.5"),
        (lambda: pixel(True), r"size.*True"),
        (lambda: fft(4, batch=0), r"batch.*got 0"),
        (lambda: pixel(4, batch=1.0), r"batch.*1\.0"),
        (lambda: fft(4, channels=0), r"channels.*got 0"),
        (lambda: fft(4, sd=-1.0), r"sd.*>= 0.*-1\.0"),
        (lambda: fft(4, sd=float("nan")), r"sd.*nan"),
        (lambda: fft(4, decay_power=float("inf")), r"decay_power.*inf"),
        (lambda: fft(4, squash="tanh"), r"squash.*'sigmoid', 'clamp'.*'tanh'"),
        (lambda: pixel(4, squash=None), r"squash.*None"),
        (lambda: fft(4, decorrelate="imagenet"), r"decorrelate.*'imagenet'"),
        (lambda: fft(4, decorrelate=torch.eye(4)), r"\(3, 3\).*channels=3.*\(4, 4\)"),
        (lambda: pixel(4, channels=1, decorrelate=((1.0, 0.0), (0.0, 1.0))), r"\(1, 1\).*\(2, 2\)"),
        (lambda: fft(4, decorrelate=torch.full((3, 3), float("nan"))), r"NaN"),
        (lambda: fft(4, init=torch.rand(1, 3, 5, 4)), r"\(1 or 1, 3, 4, 4\).*\(1, 3, 5, 4\)"),
        (lambda: pixel(4, batch=2, init=torch.rand(3, 3, 4, 4)), r"\(1 or 2, 3, 4, 4\).*\(3, 3, 4, 4\)"),
        (lambda: pixel(4, init=torch.rand(3, 4, 4)), r"\(3, 4, 4\)"),
        (lambda: pixel(4, init=torch.rand(1, 1, 4, 4)), r"\(1 or 1, 3, 4, 4\).*\(1, 1, 4, 4\)"),
        (lambda: pixel(4, init=torch.rand(1, 3, 4, 4) * 255), r"\[0, 1\]"),
        (lambda: pixel(4, init=[[0.5]]), r"init.*list"),
        (lambda: pixel(4, decorrelate=torch.zeros(3, 3), init=torch.rand(1, 3, 4, 4)), r"singular"),
        (lambda: color_correlation(torch.rand(3, 8, 8)), r"\(N, C, H, W\).*\(3, 8, 8\)"),
        (lambda: color_correlation(torch.full((1, 3, 4, 4), 0.5)), r"constant"),
        (lambda: color_correlation(torch.full((1, 3, 1, 1), 0.5)), r"at least 2 pixels"),
    ],
)
def test_bad_arguments_raise(call, pattern):
    with pytest.raises(InvalidArgumentError, match=pattern):
        call()


# --------------------------------------------------------------------------- torch.compile


@pytest.mark.compile
def test_compiled_to_image_matches_eager():
    torch._dynamo.reset()
    p = fft(16, batch=2, squash="clamp")
    leaves = p.init(gen())
    with torch.no_grad():
        leaves["spectrum"].mul_(30.0)  # some pixels saturate, exercising the clamp
    compiled = torch.compile(p.to_image, fullgraph=True)
    eager = p.to_image(leaves)
    with warnings.catch_warnings():
        # inductor warns when complex tensors reach it: the compiled path must stay real
        warnings.filterwarnings("error", message=".*complex.*")
        got = compiled(leaves)
    torch.testing.assert_close(got, eager, atol=1e-5, rtol=0)
    got.sum().backward()
    grad = leaves["spectrum"].grad.clone()
    leaves["spectrum"].grad = None
    p.to_image(leaves).sum().backward()
    torch.testing.assert_close(grad, leaves["spectrum"].grad, atol=1e-4, rtol=1e-4)


def test_a_trained_cppn_is_drawn_again_at_another_size_from_its_leaves():
    """Issue 28.11: a RenderResult keeps its leaves; a CPPN's draw the same pattern at any size."""
    import torch.nn.functional as F

    import lucent_dsl as ld

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    r = ld.render("channel('1', 2)", net, param=ld.param.cppn((24, 32), layers=3), steps=12, lr=0.002,
                  transforms=[], progress=False)
    assert torch.equal(r.image_at((24, 32)), r.images)  # its own size: exactly the final image
    big = r.image_at((96, 128))
    assert big.shape == (1, 3, 96, 128) and 0 <= float(big.min()) and float(big.max()) <= 1
    small = F.interpolate(big, size=(24, 32), mode="bilinear", antialias=True, align_corners=False)
    a, b = (x.flatten() - x.mean() for x in (small, r.images))
    assert float(((r.images > 0.02) & (r.images < 0.98)).float().mean()) > 0.5  # a pattern, not saturated
    assert float(r.images.std()) > 0.05 and float((a @ b) / (a.norm() * b.norm())) > 0.99  # the same picture
    fourier = ld.render("channel('1', 2)", net, size=16, steps=1, progress=False)
    assert fourier.leaves is not None and fourier.leaves.keys() == set(ld.param.fft(16).init(None))
    with pytest.raises(InvalidArgumentError, match="param.cppn"):
        fourier.image_at(32)

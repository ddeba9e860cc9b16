"""Contracts of lucent_dsl.transforms: shapes, zero strength, per-image draws, replay, references
(numpy / torchvision / torch.roll), crop order, fusion into one grid_sample, gradients, compiling."""
from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import Tensor
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

import lucent_dsl.transforms as T
from lucent_dsl.errors import InvalidArgumentError, LucentError


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def run(t: T.Transform, image: Tensor, seed: int = 0) -> Tensor:
    return t.apply(image, t.sample(gen(seed), image.shape))


def leaves(params: object) -> list[Tensor]:
    if params is None:
        return []
    if isinstance(params, Tensor):
        return [params]
    assert isinstance(params, tuple), type(params)
    return [leaf for p in params for leaf in leaves(p)]


def smooth(b: int, c: int, h: int, w: int) -> Tensor:
    """Slowly varying, different per channel and per image: interpolation conventions barely matter."""
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                          indexing="ij")
    rows = [torch.stack([torch.sin(x / 4 + i + j) * torch.cos(y / 5 - j) for j in range(c)])
            for i in range(b)]
    return torch.stack(rows)


def same(shape):
    return tuple(shape)


def padded(p: int) -> Callable:
    return lambda s: (s[0], s[1], s[2] + 2 * p, s[3] + 2 * p)


# name -> (factory, expected output shape from the input shape)
CASES: dict[str, tuple[Callable[[], T.Transform], Callable]] = {
    "pad_reflect": (lambda: T.pad(3), padded(3)),
    "pad_constant": (lambda: T.pad(2, mode="constant", value=0.5), padded(2)),
    "pad_replicate": (lambda: T.pad(1, mode="replicate"), padded(1)),
    "jitter": (lambda: T.jitter(3), same),
    "scale_choices": (lambda: T.random_scale([0.9, 1.0, 1.1]), same),
    "scale_range": (lambda: T.random_scale((0.8, 1.25)), same),
    "rotate_range": (lambda: T.random_rotate((-30.0, 30.0)), same),
    "rotate_choices": (lambda: T.random_rotate(range(-10, 11)), same),
    "affine": (lambda: T.affine(pad=2, jitter=1, scale=(0.9, 1.1), rotate=(-5.0, 5.0)), padded(2)),
    "crops": (lambda: T.crops(3), lambda s: (3 * s[0], s[1], s[2], s[3])),
    "crops_size": (lambda: T.crops(2, size=(5, 7)), lambda s: (2 * s[0], s[1], 5, 7)),
    "blur_fixed": (lambda: T.gaussian_blur(1.0), same),
    "blur_random": (lambda: T.gaussian_blur((0.3, 1.5)), same),
    "noise": (lambda: T.noise(0.1), same),
    "noise_random": (lambda: T.noise((0.0, 0.2)), same),
    "identity": (T.identity, same),
    "standard": (T.standard, padded(12)),
    "mixed_chain": (lambda: T.chain(T.pad(2), T.jitter(1), T.gaussian_blur((0.5, 1.0)), T.noise(0.05),
                                    T.crops(2, size=6), T.random_rotate(5.0)),
                    lambda s: (2 * s[0], s[1], 6, 6)),
}
RANDOM = [n for n in CASES if n not in ("pad_reflect", "pad_constant", "pad_replicate", "blur_fixed",
                                        "identity")]


# ----------------------------------------------------------------------------------------------
# Shapes


@settings(max_examples=60)
@given(name=st.sampled_from(sorted(CASES)), b=st.integers(1, 3), c=st.integers(1, 3),
       h=st.integers(2, 12), w=st.integers(2, 12),
       seeds=st.tuples(st.integers(0, 2**31), st.integers(0, 2**31)))
def test_output_shape_depends_only_on_input_shape(name, b, c, h, w, seeds):
    make, expected = CASES[name]
    t = make()
    image = torch.rand(b, c, h, w)
    params = [t.sample(gen(s), image.shape) for s in seeds]
    outs = [t.apply(image, p) for p in params]
    assert tuple(outs[0].shape) == tuple(outs[1].shape) == expected((b, c, h, w))
    assert [x.shape for x in leaves(params[0])] == [x.shape for x in leaves(params[1])]
    assert torch.isfinite(outs[0]).all()


# ----------------------------------------------------------------------------------------------
# Zero strength


@pytest.mark.parametrize("make", [
    lambda: T.jitter(0),
    lambda: T.random_rotate((0.0, 0.0)),
    lambda: T.random_rotate(0.0),
    lambda: T.random_scale((1.0, 1.0)),
    lambda: T.random_scale([1.0]),
    lambda: T.pad(0),
    T.affine,
    lambda: T.gaussian_blur(0.0),
    lambda: T.noise(0.0),
    T.identity,
    lambda: T.chain(T.jitter(0), T.random_scale((1.0, 1.0)), T.random_rotate(0.0)),
], ids=["jitter0", "rotate00", "rotate0", "scale11", "scale1", "pad0", "affine", "blur0", "noise0",
        "identity", "chain"])
def test_zero_strength_is_identity(make):
    image = torch.rand(2, 3, 9, 13)
    torch.testing.assert_close(run(make(), image, seed=3), image, atol=1e-5, rtol=0)


def test_full_area_crops_repeat_the_batch():
    image = torch.rand(2, 3, 9, 13)
    out = run(T.crops(3, scale=(1.0, 1.0)), image)
    torch.testing.assert_close(out, image.repeat(3, 1, 1, 1), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------
# Randomness: per image, replayable


@pytest.mark.parametrize("name", RANDOM)
def test_each_image_gets_its_own_draw(name):
    t = CASES[name][0]()
    image = smooth(1, 3, 12, 12).repeat(6, 1, 1, 1)
    out = run(t, image, seed=1)
    first = out[:1]
    assert any(not torch.allclose(row[None], first, atol=1e-4) for row in out[1:]), name
    for p in leaves(t.sample(gen(1), image.shape)):
        assert any(not torch.equal(p[i], p[0]) for i in range(1, p.shape[0])), name


@pytest.mark.parametrize("name", RANDOM)
def test_fixed_seed_replays_and_other_seed_differs(name):
    t = CASES[name][0]()
    image = smooth(6, 3, 10, 11)
    p1, p2, p3 = (t.sample(gen(s), image.shape) for s in (7, 7, 8))
    assert all(torch.equal(a, b) for a, b in zip(leaves(p1), leaves(p2), strict=True))
    assert torch.equal(t.apply(image, p1), t.apply(image, p2))
    assert torch.equal(t.apply(image, p1), t.apply(image, p1))  # apply is deterministic
    assert not torch.allclose(t.apply(image, p1), t.apply(image, p3))


# ----------------------------------------------------------------------------------------------
# References


INTERIOR = (..., slice(6, -6), slice(6, -6))


@pytest.mark.parametrize("angle", [30.0, -17.0, 5.0])
def test_rotate_matches_torchvision(angle):
    image = smooth(2, 3, 24, 30)
    out = run(T.random_rotate((angle, angle)), image)
    ref = TF.rotate(image, angle, interpolation=InterpolationMode.BILINEAR)
    torch.testing.assert_close(out[INTERIOR], ref[INTERIOR], atol=1e-4, rtol=0)


def test_quarter_turn_is_rot90_counter_clockwise():
    image = torch.rand(2, 3, 7, 7)
    out = run(T.random_rotate((90.0, 90.0)), image)
    torch.testing.assert_close(out, torch.rot90(image, 1, (-2, -1)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("scale", [1.25, 0.8])
def test_scale_matches_torchvision_affine(scale):
    image = smooth(2, 3, 24, 30)
    out = run(T.random_scale((scale, scale)), image)
    ref = TF.affine(image, angle=0.0, translate=[0, 0], scale=scale, shear=[0.0, 0.0],
                    interpolation=InterpolationMode.BILINEAR)
    torch.testing.assert_close(out[INTERIOR], ref[INTERIOR], atol=1e-4, rtol=0)


@settings(max_examples=30)
@given(pixels=st.integers(0, 4), h=st.integers(9, 14), w=st.integers(9, 14), seed=st.integers(0, 2**31))
def test_integer_jitter_is_a_roll(pixels, h, w, seed):
    image = torch.rand(4, 2, h, w)
    t = T.jitter(pixels)
    m = t.sample(gen(seed), image.shape)
    out = t.apply(image, m)
    inner = (slice(pixels, h - pixels), slice(pixels, w - pixels))
    for b in range(4):
        dx, dy = (-m[b, :2, 2]).round().long().tolist()
        assert max(abs(dx), abs(dy)) <= pixels
        ref = torch.roll(image[b], shifts=(dy, dx), dims=(-2, -1))
        torch.testing.assert_close(out[b][(..., *inner)], ref[(..., *inner)], atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode, np_mode", [("reflect", "symmetric"), ("replicate", "edge"),
                                           ("constant", "constant")])
@pytest.mark.parametrize("width", [3, 9])
def test_pad_matches_numpy(mode, np_mode, width):
    image = torch.rand(2, 3, 5, 7)
    out = run(T.pad(width, mode=mode, value=0.25), image)
    kw = {"constant_values": 0.25} if mode == "constant" else {}
    ref = np.pad(image.numpy(), ((0, 0), (0, 0), (width, width), (width, width)), mode=np_mode, **kw)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-5)


def test_fused_run_keeps_the_constant_fill():
    """What jitter shifts in after a constant pad is the constant, not a reflection of the image."""
    image = torch.zeros(4, 1, 6, 8)
    out = run(T.chain(T.pad(3, mode="constant", value=0.5), T.jitter(3)), image, seed=2)
    assert torch.isclose(out, torch.tensor(0.0), atol=1e-5).logical_or(
        torch.isclose(out, torch.tensor(0.5), atol=1e-5)).all()
    assert ((out < 0.25).sum(dim=(1, 2, 3)) == 6 * 8).all()  # the whole image stays in view


def test_gaussian_blur_matches_torchvision():
    image = smooth(2, 3, 16, 20) + torch.rand(2, 3, 16, 20) * 0.1
    out = run(T.gaussian_blur(1.0), image)
    ref = TF.gaussian_blur(image, kernel_size=[7, 7], sigma=[1.0, 1.0])
    inner = (..., slice(3, -3), slice(3, -3))
    torch.testing.assert_close(out[inner], ref[inner], atol=1e-5, rtol=0)


def test_random_blur_uses_each_images_sigma():
    image = torch.rand(3, 2, 12, 12)
    t = T.gaussian_blur((0.5, 2.0), kernel_size=9)
    sigmas = t.sample(gen(4), image.shape)
    out = t.apply(image, sigmas)
    for b, s in enumerate(sigmas.tolist()):
        fixed = T.gaussian_blur(s, kernel_size=9)
        torch.testing.assert_close(out[b], run(fixed, image[b:b + 1])[0], atol=1e-6, rtol=0)


def test_noise_has_the_asked_std():
    image = torch.zeros(2, 3, 64, 64)
    out = run(T.noise(0.5), image)
    assert abs(out.std().item() - 0.5) < 0.02
    assert abs(out.mean().item()) < 0.02


# ----------------------------------------------------------------------------------------------
# Crops


def test_crops_are_crop_major():
    b, n = 3, 4
    image = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 2, 10, 12).contiguous()
    out = run(T.crops(n, size=(5, 6)), image)
    assert out.shape == (n * b, 2, 5, 6)
    for row in range(n * b):
        torch.testing.assert_close(out[row], torch.full((2, 5, 6), float(row % b)))


def test_each_crop_is_a_resized_window_inside_its_image():
    """On an image of its own pixel coordinates, a crop shows exactly the window its matrix says."""
    b, n, h_in, w_in, h, w = 2, 3, 10, 14, 6, 8
    y, x = torch.meshgrid(torch.arange(h_in, dtype=torch.float32),
                          torch.arange(w_in, dtype=torch.float32), indexing="ij")
    image = torch.stack([x, y])[None].repeat(b, 1, 1, 1)
    image[1] += 100.0  # tells the images apart
    lo, hi = 0.3, 0.8
    t = T.crops(n, scale=(lo, hi), size=(h, w))
    m = t.sample(gen(5), image.shape)
    out = t.apply(image, m)
    yo, xo = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    for row in range(n * b):
        a = m[row]
        want_x = a[0, 0] * xo + a[0, 2] + (w_in - 1) / 2 + 100.0 * (row % b)
        want_y = a[1, 1] * yo + a[1, 2] + (h_in - 1) / 2 + 100.0 * (row % b)
        torch.testing.assert_close(out[row, 0, 1:-1, 1:-1], want_x[1:-1, 1:-1], atol=1e-4, rtol=0)
        torch.testing.assert_close(out[row, 1, 1:-1, 1:-1], want_y[1:-1, 1:-1], atol=1e-4, rtol=0)
        side = a[0, 0].item() * w / w_in
        assert lo - 1e-5 <= side**2 <= hi + 1e-5
        assert a[1, 1].item() * h / h_in == pytest.approx(side)  # aspect ratio kept
        # the window lies inside the image: edges within the outer pixel edges
        assert abs(a[0, 2].item()) + side * w_in / 2 <= w_in / 2 + 1e-4
        assert abs(a[1, 2].item()) + side * h_in / 2 <= h_in / 2 + 1e-4


# ----------------------------------------------------------------------------------------------
# as_transform


def test_as_transform_warns_once_and_wraps_a_torchvision_transform():
    with pytest.warns(UserWarning, match="graph break") as record:
        t = T.as_transform(v2.RandomHorizontalFlip(p=1.0))
    assert len(record) == 1
    image = torch.rand(2, 3, 5, 6)
    assert t.sample(gen(0), image.shape) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # using it does not warn again
        torch.testing.assert_close(t.apply(image, None), image.flip(-1))
    assert not T.is_compilable(t)
    assert T.is_compilable(T.standard())
    assert T.as_transform(t) is t  # a Transform passes through


def test_chain_wraps_callables_and_tracks_their_output_shape():
    image = torch.rand(2, 3, 16, 12)
    with pytest.warns(UserWarning, match="as_transform"):
        t = T.chain(v2.CenterCrop(8), T.crops(2, scale=(1.0, 1.0)))
    out = run(t, image)
    center = TF.center_crop(image, [8, 8])
    torch.testing.assert_close(out, center.repeat(2, 1, 1, 1), atol=1e-5, rtol=0)
    assert not T.is_compilable(t)


def test_as_transform_wraps_a_lambda():
    with pytest.warns(UserWarning):
        t = T.as_transform(lambda x: x * 2)
    image = torch.rand(1, 3, 4, 4)
    torch.testing.assert_close(run(t, image), image * 2)


# ----------------------------------------------------------------------------------------------
# Fusion


@pytest.fixture
def grid_sample_calls(monkeypatch):
    calls: list[tuple] = []
    real = F.grid_sample

    def counting(*args, **kwargs):
        calls.append(args[1].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "grid_sample", counting)
    return calls


@pytest.mark.parametrize("make, expected", [
    (lambda: T.chain(T.pad(4), T.jitter(2), T.random_scale((0.9, 1.1)), T.random_rotate((-10.0, 10.0))), 1),
    (T.standard, 1),
    (lambda: T.chain(T.standard(), T.crops(3)), 1),
    (lambda: T.chain(T.crops(2), T.jitter(1), T.random_rotate(5.0)), 1),
    (lambda: T.affine(pad=2, jitter=1, rotate=3.0), 1),
    (lambda: T.chain(T.jitter(2), T.pad(2, mode="constant")), 1),
    (lambda: T.chain(T.pad(2, mode="constant"), T.pad(2, mode="reflect")), 2),
    (lambda: T.chain(T.jitter(2), T.gaussian_blur(1.0), T.jitter(2)), 2),
    (lambda: T.chain(T.gaussian_blur(1.0), T.noise(0.1)), 0),
], ids=["pad-jitter-scale-rotate", "standard", "standard-crops", "crops-jitter-rotate", "affine",
        "jitter-pad", "two-pad-modes", "split-by-blur", "no-geometry"])
def test_chain_fuses_geometry_into_one_grid_sample(grid_sample_calls, make, expected):
    t = make()
    image = torch.rand(2, 3, 12, 12)
    run(t, image)
    assert len(grid_sample_calls) == expected


def test_fused_chain_equals_applying_the_parts_in_turn():
    """Only one part interpolates, so fusing changes nothing away from the borders."""
    parts = [T.pad(6, mode="constant", value=0.5), T.jitter(2), T.random_rotate((-20.0, 20.0)), T.jitter(1)]
    image = smooth(3, 2, 12, 14)
    fused = T.chain(*parts)
    g = gen(9)
    want = image
    for p in parts:  # the same draws, in the same order, from the same generator
        want = p.apply(want, p.sample(g, want.shape))
    got = run(fused, image, seed=9)
    assert got.shape == want.shape == (3, 2, 24, 26)
    inner = (..., slice(8, -8), slice(8, -8))
    torch.testing.assert_close(got[inner], want[inner], atol=1e-5, rtol=0)


def test_chain_flattens_and_drops_identity():
    t = T.chain(T.identity(), T.chain(T.jitter(1), T.gaussian_blur(1.0)), T.identity(), T.noise(0.1))
    params = t.sample(gen(0), (2, 3, 8, 8))
    assert isinstance(params, tuple) and len(params) == 3
    assert T.chain().apply is T.identity().apply


# ----------------------------------------------------------------------------------------------
# Gradients and compiling


@pytest.mark.parametrize("name", sorted(set(CASES) - {"identity"}))
def test_gradients_reach_the_image(name):
    t = CASES[name][0]()
    image = torch.rand(2, 3, 10, 11, requires_grad=True)
    out = run(t, image)
    (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
    assert image.grad is not None
    assert torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0


@pytest.mark.compile
def test_apply_compiles_once_for_all_draws():
    # aot_eager checks what the contract is about (one fullgraph capture, forward and backward, no
    # recompile on new params) without inductor's tens of seconds of C++ compilation.
    t = T.chain(T.standard(), T.crops(2, size=12), T.gaussian_blur((0.5, 1.0)), T.noise(0.02))
    assert T.is_compilable(t)
    g = gen(0)
    image = torch.rand(2, 3, 16, 16, requires_grad=True)
    step = torch.compile(t.apply, fullgraph=True, backend="aot_eager")
    step(image, t.sample(g, image.shape)).sum().backward()
    with torch.compiler.set_stance("fail_on_recompile"):
        for _ in range(2):
            params = t.sample(g, image.shape)
            out = step(image, params)
            out.sum().backward()
            torch.testing.assert_close(out, t.apply(image, params))


# ----------------------------------------------------------------------------------------------
# Argument checks


@pytest.mark.parametrize("call, match", [
    (lambda: T.pad(-1), r"width must be an integer >= 0, got -1"),
    (lambda: T.pad(1.5), r"got 1\.5"),
    (lambda: T.pad(2, mode="wrap"), r"'reflect', 'replicate', 'constant'; got 'wrap'"),
    (lambda: T.jitter(-2), r"pixels must be an integer >= 0, got -2"),
    (lambda: T.jitter(True), r"got True"),
    (lambda: T.crops(0), r"n must be an integer >= 1, got 0"),
    (lambda: T.crops(2, scale=(0.8, 0.5)), r"lo <= hi, got \(0\.8, 0\.5\)"),
    (lambda: T.crops(2, scale=(0.0, 0.5)), r"must be > 0, got 0\.0"),
    (lambda: T.crops(2, scale=(0.5, 1.5)), r"<= 1\.0, got 1\.5"),
    (lambda: T.crops(2, scale=[0.5, 1.0]), r"\(lo, hi\) tuple"),
    (lambda: T.crops(2, size=(0, 4)), r"size must be an integer >= 1, got 0"),
    (lambda: T.random_scale((1.2, 0.8)), r"lo <= hi, got \(1\.2, 0\.8\)"),
    (lambda: T.random_scale([]), r"must not be empty"),
    (lambda: T.random_scale([1.0, -1.0]), r"must be > 0, got -1\.0"),
    (lambda: T.random_rotate((10.0, -10.0)), r"lo <= hi"),
    (lambda: T.random_rotate(float("nan")), r"finite number, got nan"),
    (lambda: T.random_rotate("ten"), r"sequence of values, got 'ten'"),
    (lambda: T.gaussian_blur(-1.0), r"sigma must be >= 0\.0, got -1\.0"),
    (lambda: T.gaussian_blur(1.0, kernel_size=4), r"kernel_size must be odd, got 4"),
    (lambda: T.noise(-0.1), r"std must be >= 0\.0, got -0\.1"),
    (lambda: T.chain(T.jitter(1), 3), r"argument 1 is 3"),
    (lambda: T.as_transform(42), r"expected a callable"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_arguments_raise_invalid_argument_error(call, match):
    with pytest.raises(InvalidArgumentError, match=match) as info:
        call()
    assert isinstance(info.value, (LucentError, ValueError))


def test_params_for_another_shape_are_refused():
    t = T.chain(T.jitter(1), T.crops(2))
    params = t.sample(gen(0), (3, 3, 8, 8))
    with pytest.raises(InvalidArgumentError, match=r"expected \(4, 3, 3\)"):
        t.apply(torch.rand(2, 3, 8, 8), params)
    with pytest.raises(InvalidArgumentError, match=r"\(B, C, H, W\)"):
        t.sample(gen(0), (3, 8, 8))


# --------------------------------------------------------------------------------------------
# Sampling straight at the model's size (the warp and the preprocessing resize in one sampling)

SIZED = {
    "standard": T.standard,
    "robust": T.robust,
    "reflect-rotate": lambda: T.chain(T.pad(5), T.jitter(2), T.random_scale((0.9, 1.1)), T.random_rotate(8.0)),
    "crops-jitter": lambda: T.chain(T.crops(3), T.jitter(2)),
}


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(sorted(SIZED)), b=st.integers(1, 2), h=st.integers(24, 48), w=st.integers(24, 48),
       th=st.integers(16, 40), tw=st.integers(16, 40), seed=st.integers(0, 2**31))
def test_sampled_at_is_the_transform_then_a_bilinear_resize(name, b, h, w, th, tw, seed):
    # the law: one sampling at (th, tw) == the transform's own output resized to (th, tw), up to the
    # second interpolation (which a smooth image barely feels), from the same params and draws
    t = SIZED[name]()
    sized = T.sampled_at(t, (th, tw))
    image = smooth(b, 3, h, w) * 0.25 + 0.5
    p, q = t.sample(gen(seed), image.shape), sized.sample(gen(seed), image.shape)
    for a, c in zip(leaves(p), leaves(q), strict=True):
        assert torch.equal(a, c)
    fused = sized.apply(image, q)
    two_step = F.interpolate(t.apply(image, p), size=(th, tw), mode="bilinear", align_corners=False)
    assert fused.shape == two_step.shape == T.compose.out_shape(sized, image.shape)
    inside = (slice(None), slice(None), slice(3, -3), slice(3, -3))  # a grey border's edge is a step: skip it
    assert float((fused - two_step)[inside].abs().median()) < 0.01
    # a wrong sampling geometry (a shift of one output pixel) would be far off
    shifted = torch.roll(two_step, 1, dims=-1)
    assert float((fused - shifted)[inside].abs().mean()) > 1.5 * float((fused - two_step)[inside].abs().mean())


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(sorted(SIZED)), h=st.integers(24, 40), th=st.integers(16, 40), seed=st.integers(0, 2**31))
def test_a_chain_keeps_the_size_a_part_is_sampled_at(name, h, th, seed):
    """`chain` once fused a `sampled_at` part's geometry with its neighbours and dropped its size (so
    `ensemble(2, sampled_at(robust(), s))` gave robust's canvas, silently). The law: chaining a sized part before or
    after other parts is applying them in turn."""
    sized = T.sampled_at(SIZED[name](), (th, th))
    image = smooth(1, 3, h, h) * 0.25 + 0.5
    for before, after in ((T.jitter(2), T.identity()), (T.identity(), T.jitter(2)), (T.crops(2), T.color_shift())):
        c = T.chain(before, sized, after)
        p = c.sample(gen(seed), image.shape)
        g = gen(seed)
        pb = before.sample(g, image.shape)
        x = before.apply(image, pb)
        ps = sized.sample(g, x.shape)
        x = sized.apply(x, ps)
        want = after.apply(x, after.sample(g, x.shape))
        got = c.apply(image, p)
        assert got.shape == want.shape == T.compose.out_shape(c, image.shape), (name, before, after)
        assert float((got - want).abs().median()) < 0.02, name  # a fused sampling: one interpolation fewer


def test_a_render_given_a_sampled_at_transform_records_no_recipe():
    """`sampled_at(robust(), s)` kept robust's name, so a render recorded transforms "robust", which replays at
    robust's own canvas: another picture. Now the render says why it has no recipe."""
    import torch.nn as nn

    import lucent_dsl as ld

    net = nn.Sequential(nn.Conv2d(3, 4, 3)).eval()
    r = ld.render(ld.channel("0", 1), net, size=32, steps=1, progress=False, preset="lucid",
                  transforms=T.sampled_at(T.robust(), (32, 32)))
    assert r.recipe is None and "transforms other than" in " ".join(r.unreplayable)


def test_sampled_at_needs_a_geometric_run_at_the_end():
    assert T.sampled_at(T.chain(T.standard(), T.noise(0.1)), (8, 8)) is None
    assert T.sampled_at(T.identity(), (8, 8)) is None
    assert T.sampled_at(T.standard(), (8, 8)).name == "standard@8x8"  # not "standard": a recipe would lie


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 3), h=st.integers(1, 20), w=st.integers(1, 20), seed=st.integers(0, 2**31))
def test_broadcast_affine_grid_equals_torch(b, h, w, seed):
    from lucent_dsl.transforms.geometry import affine_grid

    theta = torch.randn(b, 2, 3, generator=gen(seed))
    ref = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    torch.testing.assert_close(affine_grid(theta, h, w), ref, atol=1e-5, rtol=1e-5)

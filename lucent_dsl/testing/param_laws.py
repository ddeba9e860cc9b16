"""`check_param` and `check_transform`: the laws of image parameterizations and robustness transforms.

A parameterization factory is called as `factory(size, batch=..., channels=..., **kwargs)` and
returns an `ImageParam`; its laws: float32 leaves that require grad, an image (B, C, H, W) in
[0, 1] that is finite and differentiable in the leaves, the same leaves and image for the same
seed (different ones for another seed), a pure `to_image`, `init=` round trips where it is
supported, and bad sizes or batches refused with `InvalidArgumentError`.

A transform factory is called as `factory(strength)` and returns a `Transform`; its laws: the
output shape depends only on the input shape (and is the input shape, for `keeps_shape`), `apply`
is deterministic and differentiable, the same seed draws the same parameters, zero strength is the
identity, each image's output depends only on that image, and each image draws its own parameters.

Example:
    >>> import hypothesis.strategies as st
    >>> from lucent_dsl import param, transforms
    >>> check_param(param.pixel, max_examples=3)
    >>> check_transform(transforms.jitter, strengths=st.integers(1, 3), zero=0, max_examples=3)
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import hypothesis
import torch
from hypothesis import strategies as st
from torch import Tensor

from ..errors import InvalidArgumentError
from .judging import run_law

__all__ = ["check_param", "check_transform"]


def _takes(fn: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _fail(law: str, where: str, detail: str) -> AssertionError:
    return AssertionError(f"law '{law}' fails for {where}: {detail}")


def _pytree_equal(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_pytree_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_pytree_equal(x, y) for x, y in zip(a, b))
    return a == b


# --- parameterizations --------------------------------------------------------------------------------


def check_param(factory: Callable[..., Any], *, channels: Sequence[int] = (1, 3), out_channels: int | None = None,
                batches: tuple[int, int] = (1, 3), sides: tuple[int, int] = (1, 12),
                kwargs: Mapping[str, Any] | None = None, init: bool | None = None, random: bool = True,
                max_examples: int = 10, settings: hypothesis.settings | None = None) -> None:
    """Check the parameterization laws for `factory`; AssertionError names the counterexample.

    Args:
        factory: `factory(size, batch=..., channels=..., **kwargs) -> ImageParam` (`channels` only if it takes it).
        channels: colour channels to try; `out_channels`: the image's channels when it takes none (alpha: 4).
        batches, sides: (lo, hi) batch sizes and image sides.
        kwargs: more keywords for every call.
        init: whether `init=` round trips (default: when the factory takes `init`).
        random: its leaves are random (False: they do not depend on the seed).
        max_examples: examples per law; settings: hypothesis settings to start from (default: the current profile).
    """
    kwargs = dict(kwargs or {})
    init = _takes(factory, "init") if init is None else init
    takes_channels, takes_batch = _takes(factory, "channels"), _takes(factory, "batch")

    @st.composite
    def calls(draw):
        h, w = draw(st.integers(*sides)), draw(st.integers(*sides))
        b = draw(st.integers(*batches)) if takes_batch else 1
        c = draw(st.sampled_from(tuple(channels))) if takes_channels else out_channels
        kw = dict(kwargs) | ({"batch": b} if takes_batch else {}) | ({"channels": c} if takes_channels else {})
        return (h, w), b, c, kw

    def describe(size, kw) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in kw.items() if k != "init")
        return f"{getattr(factory, '__name__', factory)}({size!r}, {args})"

    def image_laws(data: st.DataObject) -> None:
        size, b, c, kw = data.draw(calls(), label="call")
        where, law = describe(size, kw), "image"
        p = factory(size, **kw)
        seed = data.draw(st.integers(0, 2**16), label="seed")
        leaves = p.init(torch.Generator().manual_seed(seed))
        if not isinstance(leaves, Mapping) or not leaves:
            raise _fail(law, where, f"init must return a non-empty dict of tensors, got {type(leaves).__name__}")
        for k, v in leaves.items():
            if not isinstance(v, Tensor) or v.dtype != torch.float32 or not v.requires_grad or not v.is_leaf:
                raise _fail(law, where, f"leaf {k!r} must be a float32 leaf tensor with requires_grad=True")
        img = p.to_image(leaves)
        expected = (b, c, *size) if c is not None else None
        if not isinstance(img, Tensor) or img.dim() != 4 or (expected and tuple(img.shape) != expected):
            got = tuple(img.shape) if isinstance(img, Tensor) else type(img).__name__
            raise _fail(law, where, f"to_image must give an image batch {expected or '(B, C, H, W)'}, got {got}")
        if img.dtype != torch.float32 or not bool(torch.isfinite(img).all()):
            raise _fail(law, where, "the image must be finite float32")
        lo, hi = float(img.detach().min()), float(img.detach().max())
        if lo < 0 or hi > 1:
            raise _fail(law, where, f"the image must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
        if not torch.equal(p.to_image(leaves), img):
            raise _fail(law, where, "to_image is not a pure function: two calls on the same leaves differ")
        w = torch.randn(img.shape, generator=torch.Generator().manual_seed(1))
        grads = torch.autograd.grad((img * w).sum(), list(leaves.values()), allow_unused=True)
        if any(g is not None and not bool(torch.isfinite(g).all()) for g in grads):
            raise _fail(law, where, "the gradient with respect to the leaves is not finite")
        if any(g is not None and float(g.abs().sum()) > 0 for g in grads):
            seen.append(True)
        else:  # right only where the image ignores the leaves (a 1 x 1 phase-only image is flat grey)
            moved = {k: (v.detach() + 0.5 * torch.randn(v.shape, generator=torch.Generator().manual_seed(2)))
                     for k, v in leaves.items()}
            if not torch.allclose(p.to_image(moved), img.detach(), atol=1e-5):
                raise _fail(law, where, "the image changes with the leaves but no gradient reaches them")
        law = "seed"
        again = p.init(torch.Generator().manual_seed(seed))
        if again.keys() != leaves.keys() or not all(torch.equal(again[k], leaves[k]) for k in leaves):
            raise _fail(law, where, f"two inits with seed {seed} give different leaves")
        if not torch.equal(p.to_image(again), img):
            raise _fail(law, where, f"two inits with seed {seed} give different images")
        other = p.init(torch.Generator().manual_seed(seed + 1))
        if random and all(torch.equal(other[k], leaves[k]) for k in leaves):
            raise _fail(law, where, f"seeds {seed} and {seed + 1} give the same leaves: init ignores its generator")

    def init_laws(data: st.DataObject) -> None:
        size, b, c, kw = data.draw(calls(), label="call")
        if c is None:  # the image's channels are unknown: pass out_channels=
            raise InvalidArgumentError(f"check_param({describe(size, kw)}): give out_channels= to check init=")
        rows = data.draw(st.sampled_from((1, b)), label="init rows")
        g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16), label="seed"))
        start = torch.rand((rows, c, *size), generator=g) * 0.98 + 0.01
        where, law = describe(size, kw) + f" with init of shape {tuple(start.shape)}", "init"
        p = factory(size, init=start, **kw)
        img = p.to_image(p.init(torch.Generator().manual_seed(0)))
        err = float((img.detach() - start.expand(b, -1, -1, -1)).abs().max())
        if err > 1e-4:
            raise _fail(law, where, f"to_image(init(g)) is {err:.3g} away from the init image (allowed: 1e-4)")

    def bad_laws(data: st.DataObject) -> None:
        size, b, c, kw = data.draw(calls(), label="call")
        bad = data.draw(st.sampled_from(("size", "batch") if takes_batch else ("size",)), label="bad argument")
        args = ((0, size[1]),) if bad == "size" else (size,)
        try:
            factory(*args, **(kw | ({"batch": 0} if bad == "batch" else {})))
        except InvalidArgumentError:
            return
        raise _fail("bad arguments", describe(size, kw), f"a {bad} of 0 must raise InvalidArgumentError")

    seen: list[bool] = []
    run_law("image", max_examples, image_laws, settings)
    if not seen:
        raise AssertionError(f"law 'image' fails for {getattr(factory, '__name__', factory)}: in no example did a "
                             "gradient reach the leaves; the image does not depend on them")
    if init:
        run_law("init", max_examples, init_laws, settings)
    run_law("bad arguments", max(2, max_examples // 2), bad_laws, settings)


# --- transforms ---------------------------------------------------------------------------------------


def check_transform(factory: Callable[[Any], Any], *, strengths: st.SearchStrategy, zero: Any = None,
                    keeps_shape: bool = True, random: bool = True, channels: Sequence[int] = (1, 3),
                    batches: tuple[int, int] = (1, 3), sides: tuple[int, int] = (4, 16),
                    max_examples: int = 10, settings: hypothesis.settings | None = None) -> None:
    """Check the transform laws for `factory`; AssertionError names the counterexample.

    Args:
        factory: `factory(strength) -> Transform`.
        strengths: a strategy of nonzero strengths; `zero`: the strength that must be the identity (None: skip).
        keeps_shape: the output has the input's shape (False: only that it depends on the input shape alone).
        random: each image draws its own parameters (False: a deterministic transform).
        channels, batches, sides: the image batches to try.
        max_examples: examples per law; settings: hypothesis settings to start from (default: the current profile).
    """
    name = getattr(factory, "__name__", repr(factory))

    @st.composite
    def cases(draw, min_batch: int = 1):
        s = draw(strengths, label="strength")
        b = draw(st.integers(max(batches[0], min_batch), max(batches[1], min_batch)))
        shape = (b, draw(st.sampled_from(tuple(channels))), draw(st.integers(*sides)), draw(st.integers(*sides)))
        g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
        return s, torch.rand(shape, generator=g), draw(st.integers(0, 2**16))

    def run_once(t: Any, image: Tensor, seed: int) -> tuple[Any, Tensor]:
        params = t.sample(torch.Generator().manual_seed(seed), image.shape)
        return params, t.apply(image, params)

    def shape_laws(data: st.DataObject) -> None:
        s, image, seed = data.draw(cases(), label="case")
        where, law = f"{name}({s!r}) on images of shape {tuple(image.shape)}", "shape"
        t = factory(s)
        params, out = run_once(t, image, seed)
        _, other = run_once(t, torch.rand(image.shape), seed + 1)
        if out.dim() != 4 or out.shape[1] != image.shape[1] or out.shape[0] % image.shape[0]:
            raise _fail(law, where, f"output shape {tuple(out.shape)}: (k * B, C, H', W') expected")
        if other.shape != out.shape:
            raise _fail(
                law, where, f"the output shape depends on the draw: {tuple(out.shape)} and {tuple(other.shape)}"
            )
        if keeps_shape and out.shape != image.shape:
            raise _fail(law, where, f"the output shape {tuple(out.shape)} is not the input's")
        law = "deterministic"
        if not torch.equal(t.apply(image, params), out):
            raise _fail(law, where, "apply(image, params) is not deterministic")
        again, out2 = run_once(t, image, seed)
        if not _pytree_equal(again, params) or not torch.equal(out2, out):
            raise _fail(law, where, f"the same seed ({seed}) drew different parameters")
        x = image.clone().requires_grad_(True)
        (g,) = torch.autograd.grad((t.apply(x, params) * torch.rand(out.shape)).sum(), x, allow_unused=True)
        if g is None or not bool(torch.isfinite(g).all()) or not float(g.abs().sum()) > 0:
            raise _fail(
                law, where, "the output is not differentiable in the image (missing, zero or non-finite gradient)"
            )

    def per_image_laws(data: st.DataObject) -> None:
        s, image, seed = data.draw(cases(min_batch=2), label="case")
        where, law = f"{name}({s!r}) on images of shape {tuple(image.shape)}", "per image"
        t = factory(s)
        params, out = run_once(t, image, seed)
        b, j = image.shape[0], data.draw(st.integers(0, image.shape[0] - 1), label="changed image")
        changed = image.clone()
        changed[j] = torch.rand(image.shape[1:], generator=torch.Generator().manual_seed(seed))
        out2 = t.apply(changed, params)
        rows = [r for r in range(out.shape[0]) if r % b != j]
        if not torch.allclose(out2[rows], out[rows], atol=1e-6):
            raise _fail(law, where, f"changing image {j} changed the output of other images")
        if random:
            same = image[:1].expand(b, -1, -1, -1).contiguous()
            outs = [run_once(t, same, seed + k)[1] for k in range(8)]
            if all(torch.equal(o[r], o[0]) for o in outs for r in range(o.shape[0])):
                raise _fail(law, where, "identical images always come out identical: the images share one draw")

    def zero_laws(data: st.DataObject) -> None:
        _, image, seed = data.draw(cases(), label="case")
        where = f"{name}({zero!r}) on images of shape {tuple(image.shape)}"
        _, out = run_once(factory(zero), image, seed)
        if out.shape != image.shape or not torch.allclose(out, image, atol=1e-5):
            raise _fail("zero strength", where, "the transform at zero strength is not the identity")

    run_law("shape", max_examples, shape_laws, settings)
    run_law("per image", max_examples, per_image_laws, settings)
    if zero is not None:
        run_law("zero strength", max(2, max_examples // 2), zero_laws, settings)

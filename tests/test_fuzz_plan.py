"""Fuzz: random expression trees against random activation shapes.

Two kinds of case (`cases`). Wild cases (one in five): the terms are drawn without looking at the
shapes they will read (indices, positions, vector lengths and batch selections may or may not fit),
and the activations are drawn with random ranks (1 to 5), sizes (sometimes empty), row counts
(sometimes not a multiple of the images), dtypes (float, double, half, integer, bool) and
containers (tuples). Fitting cases (four in five): float32 maps of `FIT_CHANNELS` channels and
`FIT_SIDE` pixels a side, and terms whose indices, positions, vectors and batch selections fit
them, so that most cases reach scoring (wild cases alone: 6 of 150 scored, the rest refused).
The contract: every evaluation either gives finite, per-image scores of shape (n,) (a finite
scalar loss for a plan), or raises a `LucentError`; never an IndexError/RuntimeError from deep
inside torch, never NaN.

Trees are small (at most 4 leaves) and the budgets are fixed; CI derandomizes (conftest).
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch
from hypothesis import Phase, find, given, settings, strategies as st
from hypothesis.errors import NoSuchExample
from torch import Tensor, nn

import lucent_dsl as ld
from lucent_dsl.dsl.expr import IMAGE, OUTPUT, Const, Expr, Site, evaluate, sum_of, terms_of

LAYERS = ("a", "b", "c")

indices = st.integers(0, 2) | st.integers(0, 8)  # mostly in range, sometimes not
small = st.floats(-3.0, 3.0, allow_nan=False, width=32)
weights = st.floats(-10.0, 10.0, allow_nan=False, width=32)


@ld.objective(name="fz_rows")
def fz_rows(*acts: Tensor, power: float = 1.0) -> Tensor:
    """One score per row of the first layer, plus the totals of the others (a custom objective)."""
    first = acts[0].float()
    rows = first.flatten(1) if first.dim() > 1 else first[:, None]
    return rows.abs().pow(power).sum(1) + sum(a.float().sum() for a in acts[1:])


@ld.objective(name="fz_total")
def fz_total(a: Tensor) -> Tensor:
    """One score for the whole batch (a custom objective)."""
    return a.float().sum()


def batch_selections(n: int | None = None) -> st.SearchStrategy[Any]:
    """Any selection, or (n given) one that fits n images."""
    top = 5 if n is None else n
    ranges = st.tuples(st.integers(0, top - 1), st.integers(1, top), st.integers(1, 2)).filter(lambda t: t[0] < t[1])
    return st.none() | st.integers(0, 3 if n is None else n - 1) | ranges.map(lambda t: range(*t))


SITES = ("a", "b", "a", "b", "c/0", "c/1", "a", "b", "c/0", "c/1", "c", "c/5", "c/out")


def sites() -> st.SearchStrategy[str]:
    """A layer, or a selection inside the tuple output of "c" (which may not exist, or is missing)."""
    return st.sampled_from(SITES)


def position(fit: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    xy = st.fixed_dictionaries({}, optional={"x": st.integers(0, 3), "y": st.integers(0, 3)})
    return xy if fit else xy | st.fixed_dictionaries({"token": st.integers(0, 5)})


def vectors() -> st.SearchStrategy[list[float]]:
    return st.lists(small, min_size=1, max_size=3) | st.lists(small, min_size=1, max_size=6)


def targets() -> st.SearchStrategy[Any]:
    shape = st.lists(st.integers(1, 4), min_size=0, max_size=4).map(tuple)
    return small | st.tuples(shape, st.integers(0, 2**16)).map(
        lambda t: torch.randn(t[0], generator=torch.Generator().manual_seed(t[1]))
    )


FIT_CHANNELS, FIT_SIDE = 4, 4
FIT_SITES = ("a", "b", "c/0", "c/1")
FIT_LAYERS = ("a", "b")


def term_strategies(n: int | None = None) -> st.SearchStrategy[Expr]:
    """Terms drawn apart from the shapes they read; or (n given) terms that fit `fitting_tables(n)`."""
    fit = n is not None
    b = batch_selections(n)
    L = st.sampled_from(FIT_SITES) if fit else sites()
    idx = st.integers(0, FIT_CHANNELS - 1) if fit else indices
    vec = st.lists(small, min_size=FIT_CHANNELS, max_size=FIT_CHANNELS) if fit else vectors()
    pos = position(fit)
    tgt = small if fit else targets()
    tensor_target = (st.integers(0, 2**16).map(lambda s: torch.randn(FIT_CHANNELS, FIT_SIDE, FIT_SIDE,
                                                                      generator=torch.Generator().manual_seed(s)))
                     if fit else targets().filter(lambda t: isinstance(t, Tensor)))
    layers = st.sampled_from(FIT_LAYERS if fit else LAYERS)
    return st.one_of(
        st.builds(lambda lay, i, bb: ld.channel(lay, i, batch=bb), L, idx, b),
        st.builds(lambda lay, i, pos, bb: ld.neuron(lay, i, batch=bb, **pos), L, idx, pos, b),
        st.builds(lambda lay, bb: ld.layer(lay, batch=bb), L, b),
        st.builds(lambda lay, v, p, bb: ld.direction(lay, v, cossim_pow=p, batch=bb), L, vec, st.sampled_from((0.0, 1.0, 2.5)), b),
        st.builds(lambda lay, v, pos, bb: ld.direction_neuron(lay, v, batch=bb, **pos), L, vec, pos, b),
        st.builds(lambda lay, v, bb: ld.channel_weight(lay, v, batch=bb), L, vec, b),
        st.builds(lambda lay, v, pos: ld.neuron_weight(lay, v, **pos), L, vec, pos),
        st.builds(ld.channel_interpolate, L, idx, L, idx),
        st.builds(lambda lay, r: ld.alignment(lay, decay_ratio=r), L, st.floats(0.5, 4.0)),
        st.builds(ld.diversity, L),
        st.builds(lambda i, lay, bb: ld.class_logit(i, layer=lay, batch=bb), idx, st.just(OUTPUT) if fit else L | st.just(OUTPUT), b),
        st.builds(lambda lay, t: ld.activation_match(lay, t), L, tensor_target),
        st.builds(lambda lay, bb: ld.total_variation(layer=lay, batch=bb), L | st.just(IMAGE), b),
        st.builds(lambda lay, t, bb: ld.l1(layer=lay, target=t, batch=bb), L | st.just(IMAGE), tgt, b),
        st.builds(lambda lay, t: ld.l2(layer=lay, target=t), L | st.just(IMAGE), tgt),
        st.builds(lambda lay: ld.blur(layer=lay), L | st.just(IMAGE)),
        st.builds(lambda lays, p: fz_rows(*lays, power=p), st.lists(layers, min_size=1, max_size=2),
                  st.sampled_from((1.0, 2.0))),
        st.builds(fz_total, layers),
    )


def expressions(n: int | None = None) -> st.SearchStrategy[Expr]:
    def extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
        return st.one_of(
            st.tuples(weights, children).map(lambda t: t[0] * t[1]),
            st.lists(children, min_size=2, max_size=3).map(sum_of),
            st.tuples(children, children).map(lambda t: t[0] * t[1]),
        )

    leaves = term_strategies(n) | small.map(lambda v: Const(float(v)))
    return st.recursive(leaves, extend, max_leaves=4)


# --- activations -------------------------------------------------------------------------------------------

DTYPES = (torch.float32, torch.float64, torch.float16, torch.int64, torch.bool)
# Strategies are built once: building them inside a composite costs more than the evaluation itself.
CLEAN_DIMS = st.lists(st.integers(1, 4), min_size=1, max_size=3)  # (C,), (T, C) or (C, H, W): supported
ANY_DIMS = st.lists(st.integers(0, 3), min_size=0, max_size=4)  # rank 1 to 5, sizes 0 to 3
SEEDS = st.integers(0, 2**16)
N_IMAGES = st.integers(1, 3)
SIDES = st.integers(1, 5)


@st.composite
def activation(draw: st.DrawFn, n: int, clean: bool) -> Tensor:
    """(rows, *dims). Clean: float32, one or two crops per image, a supported rank, nothing empty.
    Otherwise rows, rank, sizes (0 included) and dtype are arbitrary."""
    if clean:
        rows, dims, dtype = n * draw(st.integers(1, 2)), draw(CLEAN_DIMS), torch.float32
    else:
        rows, dims, dtype = draw(st.integers(0, 6)), draw(ANY_DIMS), draw(st.sampled_from(DTYPES))
    x = torch.randn((rows, *dims), generator=torch.Generator().manual_seed(draw(SEEDS)))
    return x.to(dtype) if dtype is not torch.bool else x > 0


@st.composite
def activation_tables(draw: st.DrawFn) -> tuple[int, dict[Site, Any]]:
    n = draw(N_IMAGES)
    clean = {name: draw(st.booleans()) for name in ("a", "b", "c0", "c1", "out")}
    acts: dict[Site, Any] = {Site(None, name): draw(activation(n, clean[name])) for name in ("a", "b")}
    # "c" returns a tuple (its selections "c/0", "c/1" are tensors; "c/5" and "c/out" do not exist)
    acts[Site(None, "c")] = (draw(activation(n, clean["c0"])), draw(activation(n, clean["c1"])))
    acts[Site(None, OUTPUT)] = draw(activation(n, clean["out"]))
    h, w = draw(SIDES), draw(SIDES)
    acts[Site(None, IMAGE)] = torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(n * 100 + h * 10 + w))
    return n, acts


@st.composite
def fitting_tables(draw: st.DrawFn, n: int) -> tuple[int, dict[Site, Any]]:
    """Activations that `term_strategies(n)` fits: (n, FIT_CHANNELS, FIT_SIDE, FIT_SIDE) float32 maps, a tuple of
    two for "c", (n, FIT_CHANNELS) logits, and an (n, 3, h, w) image."""
    def maps(*dims: int) -> Tensor:
        return torch.randn((n, *dims), generator=torch.Generator().manual_seed(draw(SEEDS)))

    square = (FIT_CHANNELS, FIT_SIDE, FIT_SIDE)
    acts: dict[Site, Any] = {Site(None, "a"): maps(*square), Site(None, "b"): maps(*square),
                             Site(None, "c"): (maps(*square), maps(*square)), Site(None, OUTPUT): maps(FIT_CHANNELS)}
    h, w = draw(SIDES), draw(SIDES)
    acts[Site(None, IMAGE)] = torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(n * 100 + h * 10 + w))
    return n, acts


EXPRESSIONS = expressions()
FITTING = {n: st.tuples(expressions(n), fitting_tables(n)) for n in (1, 2, 3)}
WILD = st.tuples(EXPRESSIONS, activation_tables())


@st.composite
def cases(draw: st.DrawFn) -> tuple[Expr, tuple[int, dict[Site, Any]]]:
    """One wild case in five (terms and shapes drawn apart), else a fitting one (see the module docstring)."""
    if draw(st.integers(0, 4)) == 0:
        return draw(WILD)
    return draw(FITTING[draw(N_IMAGES)])


CASES = cases()


def check_scores(scores: Tensor, n: int, expr: Expr) -> None:
    assert isinstance(scores, Tensor), expr
    assert scores.shape == (n,), (expr, tuple(scores.shape))
    assert scores.dtype.is_floating_point, (expr, scores.dtype)
    assert bool(torch.isfinite(scores).all()), (expr, scores)


class Outputs(dict):
    """Activations as a plan reads them: a selection inside a tuple output ("c/5") is looked up on demand,
    so one that does not exist fails the way `Plan.forward` reports it."""

    def __missing__(self, site: Site) -> Any:
        from lucent_dsl.plan.compiler import _select

        return _select(self[Site(site.model, site.module_path)], site)


@settings(max_examples=150)
@given(CASES)
def test_evaluate_gives_finite_scores_or_a_lucent_error(case: tuple[Expr, tuple[int, dict[Site, Any]]]):
    expr, (n, acts) = case
    try:
        scores = evaluate(expr, Outputs(acts), n)
    except ld.LucentError as err:
        assert str(err), type(err)
        return
    check_scores(scores, n, expr)


# --- the same through compile_plan and a real (synthetic) model ------------------------------------------


class Emit(nn.Module):
    """Outputs a fixed random activation, scaled by the input's mean so that gradients reach the image. An activation
    of one row per image follows the input's batch (the plan's probe forwards one image)."""

    def __init__(self, value: Any, rows: int):
        super().__init__()
        self.value, self.rows = value, rows

    def forward(self, x: Tensor) -> Any:
        def out(v: Tensor) -> Tensor:
            floating = v.is_floating_point()  # asked of the stored tensor: torch.fx traces this, no branch on x
            if v.dim() and v.shape[0] == self.rows:
                v = v[torch.arange(x.shape[0]) % self.rows]
            return v * (1 + x.mean()) if floating else v

        return tuple(out(v) for v in self.value) if isinstance(self.value, tuple) else out(self.value)


class Synthetic(nn.Module):
    def __init__(self, acts: dict[Site, Any], rows: int):
        super().__init__()
        self.a = Emit(acts[Site(None, "a")], rows)
        self.b = Emit(acts[Site(None, "b")], rows)
        self.c = Emit(acts[Site(None, "c")], rows)
        self.head = Emit(acts[Site(None, OUTPUT)], rows)

    def forward(self, x: Tensor) -> Any:
        self.a(x), self.b(x), self.c(x)
        return self.head(x)


@settings(max_examples=40)
@given(CASES, st.sampled_from(("fx", "hooks")))
def test_plan_loss_is_a_finite_scalar_or_a_lucent_error(case: tuple[Expr, tuple[int, dict[Site, Any]]], truncate: str):
    expr, (n, acts) = case
    model = Synthetic(acts, n)
    image = acts[Site(None, IMAGE)].clone().requires_grad_(True)
    try:
        plan = ld.compile_plan(expr, model, truncate=truncate)
        loss = plan.loss(plan.forward(image), n)
    except ld.LucentError as err:
        assert str(err), type(err)
        return
    assert loss.shape == () and bool(torch.isfinite(loss)), (expr, loss)
    if loss.requires_grad:
        (grad,) = torch.autograd.grad(loss, image, allow_unused=True)
        assert grad is None or bool(torch.isfinite(grad).all()), expr
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_the_fuzz_reaches_both_outcomes():
    """A sanity check on the strategies: draws that score (with a vocabulary term) and draws that are refused
    both occur, not only one kind.

    A fixed sample of 60 draws is not enough: Hypothesis biases its draws with the literals of every module
    loaded, so the same derandomized sample changes with the set of test modules imported, and about one draw
    in ten scores. `find` draws until it has seen enough of both (at most 1,000 draws), which holds alone and
    in any order.
    """
    outcomes = {"scores": 0, "error": 0}

    def enough(draw: tuple[Expr, tuple[int, dict[Site, Any]]]) -> bool:
        expr, (n, acts) = draw
        try:
            scores = evaluate(expr, Outputs(acts), n)
        except ld.LucentError:
            outcomes["error"] += 1
        else:
            check_scores(scores, n, expr)
            outcomes["scores"] += bool(terms_of(expr))  # a constant alone scores trivially
        return outcomes["scores"] >= 5 and outcomes["error"] >= 5

    with contextlib.suppress(NoSuchExample):  # the assertion below says what was missing
        find(WILD, enough,
             settings=settings(max_examples=1000, database=None, derandomize=True, phases=[Phase.generate]))
    assert outcomes["scores"] >= 5 and outcomes["error"] >= 5, outcomes


def _outcomes(strategy: st.SearchStrategy[Any], draws: int, plan: bool = False) -> dict[str, int]:
    """How `draws` draws of `strategy` end: scored (a term's score, or a plan's loss), refused, or a constant."""
    outcomes = {"scored": 0, "refused": 0, "constant": 0}

    def tally(case: Any) -> bool:
        expr, (n, acts) = case
        try:
            if plan:
                model = Synthetic(acts, n)
                p = ld.compile_plan(expr, model, truncate="hooks")
                p.loss(p.forward(acts[Site(None, IMAGE)]), n)
            else:
                evaluate(expr, Outputs(acts), n)
        except ld.LucentError:
            outcomes["refused"] += 1
        else:
            outcomes["scored" if terms_of(expr) else "constant"] += 1
        return False

    with contextlib.suppress(NoSuchExample):
        find(strategy, tally, settings=settings(max_examples=draws, database=None, derandomize=True,
                                                phases=[Phase.generate]))
    return outcomes


def test_most_fuzz_cases_reach_scoring():
    """Issue 28: the fuzz ended in an accepted error for 144 of 150 examples. Its cases now mostly score (measured:
    see the report of issue 28), wild cases still reach the refusals."""
    for plan, draws in ((False, 150), (True, 40)):
        outcomes = _outcomes(CASES, draws, plan)
        assert outcomes["scored"] >= draws // 2, (plan, outcomes)
        assert outcomes["refused"] >= 1, (plan, outcomes)

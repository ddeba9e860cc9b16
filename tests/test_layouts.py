"""Layouts are known, not guessed from the rank: detection on random NCHW / NHWC / token models (0-5 prefix tokens,
non-square grids, any-size and fixed-size), the einops `layout=` path, and refusals that ask for `layout=`.

The law: for every model, a term either reads the activation in its true layout (channel `c` of position (y, x) is
the value the model computed there) or raises ObjectiveShapeError; it never reads another axis.
"""
from __future__ import annotations

import einops
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import Tensor, nn

import lucent_dsl as ld
from lucent_dsl.dsl.expr import Site, evaluate
from lucent_dsl.errors import InvalidArgumentError, ObjectiveShapeError
from lucent_dsl.models.layouts import LaidSite, Layout, Refusal, canonical, detect, parse_layout, token_grid
from lucent_dsl.objectives._term import LayerTerm, check_layout, frozen, per_image, rows_channels_positions

SITE = Site("model", "tap")


class Synthetic(nn.Module):
    """Patches of `patch` px -> (B, C, h, w) maps, laid out as `kind` at `tap`; `fixed`: a position embedding
    that only fits one input size (as a ViT's)."""

    def __init__(self, kind: str, channels: int, patch: int, prefix: int, fixed: tuple[int, int] | None, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.kind, self.prefix, self.fixed = kind, prefix, fixed
        self.embed = nn.Conv2d(3, channels, patch, stride=patch)
        self.tokens = nn.Parameter(torch.randn(1, prefix, channels))
        grid = (fixed[0] // patch, fixed[1] // patch) if fixed else (1, 1)
        self.pos = nn.Parameter(torch.randn(1, channels, *grid) * 0.1)
        self.tap = nn.Identity()
        self.head = nn.Linear(channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x) + self.pos  # broadcasts for any size unless `fixed`
        if self.kind == "nhwc":
            h = h.permute(0, 2, 3, 1)
        elif self.kind == "tokens":
            h = h.flatten(2).transpose(1, 2)
            h = torch.cat([self.tokens.expand(h.shape[0], -1, -1), h], 1)
        elif self.kind == "channels_first_tokens":
            h = h.flatten(2)
        pooled = {"nchw": (2, 3), "nhwc": (1, 2), "tokens": (1,), "channels_first_tokens": (2,)}[self.kind]
        return self.head(self.tap(h).mean(pooled))


def truth(m: Synthetic) -> str:
    group = f"({m.prefix} + h w)" if m.prefix else "(h w)"
    return {"nchw": "b c h w", "nhwc": "b h w c", "tokens": f"b {group} c", "channels_first_tokens": "b c (h w)"}[m.kind]


@st.composite
def synthetic(draw) -> tuple[Synthetic, tuple[int, int]]:
    kind = draw(st.sampled_from(("nchw", "nhwc", "tokens", "channels_first_tokens")))
    patch = draw(st.sampled_from((2, 4, 8)))
    h, w = draw(st.integers(2, 7)), draw(st.integers(2, 7))
    fixed = draw(st.booleans())
    prefix = draw(st.integers(0, 5)) if kind == "tokens" else 0
    size = (h * patch, w * patch)
    model = Synthetic(kind, draw(st.integers(1, 12)), patch, prefix, size if fixed else None, draw(st.integers(0, 99)))
    if fixed:  # a model of one size says so (the probe does not search below 32 px)
        ld.with_info(model, ld.ModelInfo(input_size=size))
    return model.eval(), size


def raw_at(model: nn.Module, x: Tensor) -> Tensor:
    seen = []
    handle = model.tap.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return seen[0]


@settings(max_examples=40, deadline=None)
@given(synthetic(), st.data())
def test_terms_read_the_true_layout_or_refuse(case, data):
    model, size = case
    pattern = truth(model)
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    raw = raw_at(model, x)
    lay = parse_layout(pattern)
    axes = dict(zip(lay.axes, raw.shape))
    c = data.draw(st.integers(0, axes["c"] - 1), label="channel")
    hw = (size[0] // model.embed.stride[0], size[1] // model.embed.stride[1])
    xx, yy = data.draw(st.integers(0, hw[1] - 1), label="x"), data.draw(st.integers(0, hw[0] - 1), label="y")
    plan = ld.compile_plan(ld.channel("tap", c) + ld.neuron("tap", c, x=xx, y=yy), model)
    found = plan.layouts[SITE]
    acts = plan.forward(x)
    try:
        channel, neuron = (evaluate(t, acts, 2) for t in ld.dsl.expr.top_terms(plan.objective))
    except ObjectiveShapeError as e:
        assert isinstance(found, Refusal) or found.prefix is None, e  # refused, never read wrongly
        assert "layout" in str(e) or "token=" in str(e)
        return
    grid = einops.rearrange(raw, f"{pattern} -> b c h w", h=hw[0]) if lay.kind == "maps" else einops.rearrange(
        (raw if lay.axes[-1] == "c" else raw.transpose(1, 2))[:, model.prefix:], "b (h w) c -> b c h w", h=hw[0])
    torch.testing.assert_close(neuron, grid[:, c, yy, xx])
    # A channel averages the patch grid (prefix tokens left out) where the prefix is known, else every token.
    tokens_mean = (raw if lay.axes[-1] == "c" else raw.transpose(1, 2))[..., c].mean(1) if lay.kind == "tokens" else None
    patches = lay.kind == "maps" or (isinstance(found, Layout) and found.prefix is not None)
    torch.testing.assert_close(channel, grid[:, c].mean((1, 2)) if patches else tokens_mean)
    assert isinstance(found, Layout) and found.axes == lay.axes


@settings(max_examples=25, deadline=None)
@given(synthetic())
def test_any_size_models_are_detected_exactly(case):
    """With two probe sizes the axes that change are spatial: every layout and prefix count is found."""
    model, size = case
    if model.fixed:  # made a model of any size: no position embedding, no stated size
        model.fixed, model.pos = None, nn.Parameter(model.pos[..., :1, :1].clone())
        ld.with_info(model, ld.ModelInfo())
    plan = ld.compile_plan(ld.channel("tap", 0), model)
    found = plan.layouts[SITE]
    lay = parse_layout(truth(model))
    assert isinstance(found, Layout) and found.axes == lay.axes and found.source == "probe", found
    assert found.kind != "tokens" or found.prefix == lay.prefix


def test_an_ambiguous_site_asks_for_layout_and_the_stated_layout_is_read():
    # One fixed size, 8 channels on an 8x8 grid: (B, 8, 8, 8) is NCHW or NHWC; the shapes cannot tell.
    model = Synthetic("nhwc", 8, 4, 0, (32, 32), seed=0).eval()
    x = torch.rand(1, 3, 32, 32)
    plan = ld.compile_plan(ld.neuron("tap", 5, x=1, y=6), model)
    assert isinstance(plan.layouts[SITE], Refusal)
    with pytest.raises(ObjectiveShapeError, match=r"\(1, 8, 8, 8\).*layout="):
        evaluate(plan.objective, plan.forward(x), 1)
    raw = raw_at(model, x)
    for stated in (ld.compile_plan(ld.neuron("tap", 5, x=1, y=6), model, layouts={"tap": "b h w c"}),
                   ld.compile_plan(ld.neuron("tap", 5, x=1, y=6),
                                   ld.with_info(model, ld.ModelInfo(layouts={"tap": "b h w c"})))):
        assert stated.layouts[SITE].source == "stated" and "layouts: t0 = b h w c" in str(stated)
        torch.testing.assert_close(evaluate(stated.objective, stated.forward(x), 1), raw[:, 6, 1, 5])


def test_stated_layouts_are_checked_against_the_site():
    model = Synthetic("tokens", 6, 4, 2, None, seed=1).eval()
    with pytest.raises(ObjectiveShapeError, match="4 axes.*shape \\(1, 3138, 6\\)"):
        ld.compile_plan(ld.channel("tap", 0), model, layouts={"tap": "b c h w"})
    with pytest.raises(InvalidArgumentError, match="does not read"):
        ld.compile_plan(ld.channel("tap", 0), model, layouts={"nope": "b t c"})
    with pytest.raises(InvalidArgumentError, match="layout"):
        ld.compile_plan(ld.channel("tap", 0), model, layouts={"tap": "b h c"})
    plan = ld.compile_plan(ld.channel("tap", 0), model, layouts={"model:tap": "b (cls dist + h w) c"})
    assert plan.layouts[SITE].prefix == 2 and plan.layouts[SITE].grid is not None
    assert plan != ld.compile_plan(ld.channel("tap", 0), model)  # stated layouts are part of the plan


# --- the pattern language and einops ----------------------------------------------------------------------------

@given(st.sampled_from(("b c h w", "b h w c", "h w b c", "b t c", "b c t", "b (h w) c", "b c (h w)", "b c",
                        "c b", "b (1 + h w) c", "b (cls dist + h w) c", "b (cls 4 + h w) c")),
       st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 5))
def test_canonical_is_einops_of_the_pattern(pattern, b, c, h, w):
    lay = parse_layout(pattern)
    sizes = {"b": b, "c": c, "h": h, "w": w, "t": (lay.prefix or 0) + h * w}
    a = torch.randn(*[sizes[ax] for ax in lay.axes])
    out = canonical(a, lay)
    target = {"maps": "b c h w", "tokens": "b t c", "vectors": "b c"}[lay.kind]
    torch.testing.assert_close(out, einops.rearrange(a, f"{' '.join(lay.axes)} -> {target}"))
    assert parse_layout(str(lay)) == lay and canonical(out, parse_layout(target)) is out


@pytest.mark.parametrize("bad", ["", "b c h", "b c c h", "b (h w c)", "b (1 + h) c", "(b c", "b x"])
def test_bad_patterns_are_refused_with_the_grammar(bad):
    with pytest.raises(InvalidArgumentError, match="layout"):
        parse_layout(bad)


@given(st.integers(0, 5), st.integers(1, 9), st.integers(1, 9))
def test_token_grid_finds_any_prefix_the_layout_states(prefix, h, w):
    lay = Layout(f"b ({prefix} + h w) c", "tokens", ("b", "t", "c"), prefix, (h, w))
    assert token_grid(lay, prefix + h * w) == (prefix, h, w)
    assert isinstance(token_grid(lay, prefix + h * w + 1), str) or (h * w + 1) ** 0.5 % 1 == 0


@given(st.integers(0, 5), st.sampled_from((4, 8, 14, 16)), st.integers(3, 9), st.integers(3, 9))
def test_two_sizes_solve_prefix_and_grid(prefix, patch, h, w):
    sizes = [(h * patch, w * patch), ((h + 3) * patch, (w + 5) * patch)]
    shapes = [(1, prefix + (H // patch) * (W // patch), 12) for H, W in sizes]
    found = detect(shapes, sizes)
    assert found.prefix == prefix and found.grid == (h, w), found


def test_laid_sites_are_plain_sites_to_every_lookup():
    lay = parse_layout("b h w c")
    key = LaidSite(SITE, lay)
    assert key == SITE and SITE == key and hash(key) == hash(SITE) and {key: 1}[SITE] == 1
    assert repr(key) == repr(SITE) and str(key) == str(SITE) and key.layout is lay


# --- a term's own layout= (the field the vocabulary's terms take; see _term.check_layout) ------------------------

@frozen
class LaidChannel(LayerTerm):
    """channel() with a `layout=` field, as the vocabulary's layer terms carry it."""

    name = "tst_laid_channel"
    positional = ("layer", "index")
    layer: str
    index: int
    layout: str | None = None
    model: str | None = None

    def score(self, acts, n):
        site, a = self.read(acts)
        return per_image(self, rows_channels_positions(self, site, a)[:, self.index].mean(-1), n, None)


def test_a_terms_layout_is_read_in_and_outside_a_plan_and_conflicts_are_refused():
    model = Synthetic("nhwc", 8, 4, 0, (32, 32), seed=2).eval()
    ld.with_info(model, ld.ModelInfo(input_size=(32, 32)))
    x = torch.rand(2, 3, 32, 32)
    raw = raw_at(model, x)
    term = LaidChannel("tap", 5, layout=check_layout("b h w c"))
    plan = ld.compile_plan(term, model)  # the site alone is ambiguous: the term says
    assert plan.layouts[SITE].source == "stated"
    torch.testing.assert_close(evaluate(plan.objective, plan.forward(x), 2), raw[..., 5].mean((1, 2)))
    outside = term.score({Site(None, "tap"): raw}, 2)  # raw activations, no plan: the term's layout applies
    torch.testing.assert_close(outside, raw[..., 5].mean((1, 2)))
    with pytest.raises(InvalidArgumentError, match="different layouts"):
        ld.compile_plan(term + LaidChannel("tap", 1, layout="b c h w"), model)


@pytest.mark.parametrize("build", [
    lambda lay: ld.neuron("tap", 5, x=1, y=6, layout=lay),
    lambda lay: ld.channel("tap", 5, layout=lay),
    lambda lay: ld.direction("tap", [0.0] * 5 + [1.0, 0.0, 0.0], layout=lay),
])
def test_every_builtin_layer_term_takes_layout_and_it_round_trips(build):
    """The refusal's advice ("layout= on the term") works on the built-in terms, through the DSL text and JSON."""
    model = Synthetic("nhwc", 8, 4, 0, (32, 32), seed=3).eval()
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ObjectiveShapeError, match="layout="):
        plan = ld.compile_plan(build(None), model)
        evaluate(plan.objective, plan.forward(x), 1)
    term = build("b  h w c")
    assert term.layout == "b h w c" and ld.parse(repr(term)) == term
    assert ld.from_json(ld.to_json(term)) == term
    plan = ld.compile_plan(term, model)
    assert plan.layouts[SITE].source == "stated"
    reference = ld.compile_plan(build(None), model, layouts={"tap": "b h w c"})
    torch.testing.assert_close(evaluate(plan.objective, plan.forward(x), 1),
                               evaluate(reference.objective, reference.forward(x), 1))
    with pytest.raises(InvalidArgumentError, match="layout"):
        build("b h c")

"""The peers' numbers (issue 28, item 3): Lucid's, lucent's and captum's definitions, written out by hand from
their sources (lucid/optvis/objectives.py, lucent/optvis/objectives.py, captum/optim/_core/loss.py), against
`convention="lucid"` (the same number) and against the default (the documented conversion, an exact ratio).

The references below loop over pixels in NHWC as Lucid does; none of them calls lucent_dsl.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

import lucent_dsl as ld
from lucent_dsl.dsl.expr import IMAGE, Site
from lucent_dsl.objectives import catalog

L, IMG = Site(None, "L"), Site(None, IMAGE)


def seeded(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- the peers' definitions, by hand ------------------------------------------------------------------------


def lucid_diversity(nchw: torch.Tensor) -> float:
    """Lucid `diversity` (= lucent's, captum's magnitude): sum_{i != j} <G_i, G_j> / n, G l2-normalized."""
    x = nchw.permute(0, 2, 3, 1).numpy()  # NHWC
    n, c = x.shape[0], x.shape[3]
    grams = []
    for i in range(n):
        f = x[i].reshape(-1, c)
        g = f.T @ f
        grams.append(g / math.sqrt(max((g * g).sum(), 1e-10)))
    return sum(float((grams[i] * grams[j]).sum()) for i in range(n) for j in range(n) if j != i) / n


def lucid_blur_input_each_step(nchw: torch.Tensor) -> float:
    """0.5 * sum (x - blur(x))^2; blur: 3x3, weight 1 at the centre and 0.5 around, "SAME" zeros divided out."""
    x = nchw.permute(0, 2, 3, 1).numpy()
    n, h, w, c = x.shape
    total = 0.0
    for b, i, j, ch in itertools.product(range(n), range(h), range(w), range(c)):
        num = den = 0.0
        for di, dj in itertools.product((-1, 0, 1), repeat=2):
            if 0 <= i + di < h and 0 <= j + dj < w:
                k = 1.0 if di == dj == 0 else 0.5
                num += k * x[b, i + di, j + dj, ch]
                den += k
        total += 0.5 * (x[b, i, j, ch] - num / den) ** 2
    return total


def lucid_total_variation(nchw: torch.Tensor) -> float:
    """tf.image.total_variation per image, summed over the batch (captum's TotalVariation is the same sum)."""
    x = nchw.permute(0, 2, 3, 1).numpy()
    return float(abs(x[:, 1:] - x[:, :-1]).sum() + abs(x[:, :, 1:] - x[:, :, :-1]).sum())


def lucid_l1(nchw: torch.Tensor, constant: float) -> float:
    return float(abs(nchw.numpy() - constant).sum())


def lucid_l2(nchw: torch.Tensor, constant: float) -> float:
    return math.sqrt(1e-6 + float(((nchw.numpy() - constant) ** 2).sum()))


def lucid_neuron(nchw: torch.Tensor, channel: int, x: int | None, y: int | None) -> torch.Tensor:
    """Lucid's _extract_act_pos on NHWC: acts[:, x, y] with x along axis 1 (rows), centre (H//2, W//2)."""
    a = nchw.permute(0, 2, 3, 1)
    xx = a.shape[1] // 2 if x is None else x
    yy = a.shape[2] // 2 if y is None else y
    return a[:, xx, yy, channel]


# --- convention="lucid" is their number; the default is ours, converted exactly --------------------------------

shapes = st.tuples(st.integers(2, 4), st.integers(1, 3), st.integers(2, 5), st.integers(2, 5))


@settings(max_examples=15, deadline=None)
@given(shapes, st.integers(0, 2**16))
def test_diversity_lucid_is_the_peers_and_the_default_is_n_over_n_minus_1_times_it(shape, seed):
    a = seeded(shape, seed)
    n = shape[0]
    ref = lucid_diversity(a)
    ours = ld.diversity("L").score({L: a}, n).sum().item()
    theirs = ld.diversity("L", convention="lucid").score({L: a}, n).sum().item()
    assert theirs == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert ours == pytest.approx(ref * n / (n - 1), rel=1e-9, abs=1e-12)  # 2x for two images


@settings(max_examples=10, deadline=None)
@given(shapes, st.integers(0, 2**16))
def test_blur_lucid_is_blur_input_each_step(shape, seed):
    a = seeded(shape, seed).requires_grad_()
    s = ld.blur(convention="lucid").score({IMG: a}, shape[0])
    assert s.sum().item() == pytest.approx(lucid_blur_input_each_step(a.detach()), rel=1e-9)
    # the blurred copy is a constant (tf.stop_gradient): the gradient is x - blur(x)
    (g,) = torch.autograd.grad(s.sum(), a)
    from lucent_dsl.objectives.penalty import lucid_blur

    torch.testing.assert_close(g, a.detach() - lucid_blur(a.detach()))
    # and the default is not Lucid's number (the kernels differ): only the convention gives theirs
    assert ld.blur().score({IMG: a}, shape[0]).sum().item() != pytest.approx(lucid_blur_input_each_step(a.detach()))


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(2, 5), st.integers(0, 2**16))
def test_total_variation_lucid_is_the_batch_sum_and_the_default_converts_on_square_images(n, c, h, seed):
    a = seeded((n, c, h, h), seed)
    ref = lucid_total_variation(a)
    assert ld.total_variation(convention="lucid").score({IMG: a}, n).sum().item() == pytest.approx(ref, rel=1e-9)
    ours = ld.total_variation().score({IMG: a}, n).sum().item()
    assert ours * c * h * (h - 1) == pytest.approx(ref, rel=1e-9)  # the catalog's conversion


@settings(max_examples=15, deadline=None)
@given(shapes, st.floats(-1, 1), st.integers(0, 2**16))
def test_l1_l2_lucid_are_the_batch_sum_and_the_norm(shape, constant, seed):
    a = seeded(shape, seed)
    n, numel = shape[0], math.prod(shape[1:])
    l1 = ld.l1(target=constant, convention="lucid").score({IMG: a}, n)
    l2 = ld.l2(target=constant, convention="lucid").score({IMG: a}, n)
    assert l1.sum().item() == pytest.approx(lucid_l1(a, constant), rel=1e-9)
    assert l2.sum().item() == pytest.approx(lucid_l2(a, constant), rel=1e-9)
    ours1 = ld.l1(target=constant).score({IMG: a}, n).sum().item()
    ours2 = ld.l2(target=constant).score({IMG: a}, n).sum().item()
    assert ours1 * numel == pytest.approx(lucid_l1(a, constant), rel=1e-9)
    assert math.sqrt(1e-6 + ours2 * numel) == pytest.approx(lucid_l2(a, constant), rel=1e-9)


def test_l2_lucid_with_batch_is_the_norm_of_the_chosen_image_and_its_gradient_is_the_norms():
    a = seeded((3, 2, 4, 3), 0).requires_grad_()
    s = ld.l2(convention="lucid", batch=1).score({IMG: a}, 3)
    assert s[0].item() == 0 and s[2].item() == 0  # Lucid's handle_batch: only that image
    assert s.sum().item() == pytest.approx(lucid_l2(a.detach()[1:2], 0.0), rel=1e-9)
    (g,) = torch.autograd.grad(s.sum(), a)
    (ref,) = torch.autograd.grad(torch.sqrt(1e-6 + a[1].pow(2).sum()), a)
    torch.testing.assert_close(g, ref)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 5), st.integers(1, 5), st.data())
def test_neuron_x_is_the_column_here_and_the_row_in_lucid(h, w, data):
    a = seeded((2, 3, h, w), h * 10 + w)
    row, col = data.draw(st.integers(0, h - 1)), data.draw(st.integers(0, w - 1))
    theirs = lucid_neuron(a, 1, row, col)  # Lucid neuron(layer, 1, x=row, y=col)
    torch.testing.assert_close(ld.neuron("L", 1, x=col, y=row).score({L: a}, 2), theirs)  # the conversion
    torch.testing.assert_close(ld.neuron("L", 1, x=row, y=col, convention="lucid").score({L: a}, 2), theirs)
    torch.testing.assert_close(ld.neuron("L", 1).score({L: a}, 2), lucid_neuron(a, 1, None, None))  # one centre


def test_conventions_round_trip_and_bad_ones_are_refused():
    e = (ld.neuron("L", 1, x=2, convention="lucid") - 0.5 * ld.diversity("L", convention="lucid")
         - ld.l2(convention="lucid") - ld.blur(convention="lucid") - ld.total_variation(convention="lucid"))
    assert ld.parse(repr(e)) == e
    from lucent_dsl.dsl.serialize import from_json, to_json

    assert from_json(to_json(e)) == e
    assert repr(ld.diversity("L")) == "diversity('L')"  # saved recipes keep their text and their meaning
    with pytest.raises(ld.errors.InvalidArgumentError, match="lucid"):
        ld.l1(convention="captum")


@pytest.mark.parametrize("name", ["neuron", "diversity", "total_variation", "l1", "l2", "blur"])
def test_the_vocabulary_table_says_how_to_port_each(name):
    assert "convention='lucid'" in catalog.ROWS[name].formula or "Lucid" in catalog.ROWS[name].formula
    assert "convention" in catalog.signature(name)


# --- item 9: lucent's direction, the cosine similarity alone --------------------------------------------------


def lucent_direction(nchw: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
    """lucent's direction per image: CosineSimilarity(dim=1)(vec.reshape(1, -1, 1, 1), acts), mean over positions."""
    return torch.nn.CosineSimilarity(dim=1)(vec.reshape(1, -1, 1, 1), nchw).flatten(1).mean(1)


def lucent_direction_neuron(nchw: torch.Tensor, vec: torch.Tensor, x: int, y: int) -> torch.Tensor:
    at = nchw[:, :, y:y + 1, x:x + 1]  # lucent's _extract_act_pos with x and y given
    return torch.nn.CosineSimilarity(dim=1)(vec.reshape(1, -1, 1, 1), at).flatten(1).mean(1)


@settings(max_examples=15, deadline=None)
@given(shapes, st.floats(0.1, 10), st.integers(0, 2**16))
def test_cosine_direction_is_lucents_and_ignores_how_strongly_the_layer_fires(shape, k, seed):
    a, v = seeded(shape, seed), seeded((shape[1],), seed + 1)
    n = shape[0]
    t = ld.direction("L", v, cosine=True)
    torch.testing.assert_close(t.score({L: a}, n), lucent_direction(a, v))
    torch.testing.assert_close(t.score({L: k * a}, n), t.score({L: a}, n))  # scale-free, unlike Lucid's dot
    x, y = shape[3] - 1, 0
    torch.testing.assert_close(ld.direction_neuron("L", v, x=x, y=y, cosine=True).score({L: a}, n),
                               lucent_direction_neuron(a, v, x, y))


def test_cosine_direction_round_trips_and_refuses_a_power_too():
    e = ld.direction("L", (1.0, -1.0), cosine=True) + ld.direction_neuron("L", (1.0, 2.0), x=1, cosine=True)
    assert repr(e) == "direction('L', (1.0, -1.0), cosine=True) + direction_neuron('L', (1.0, 2.0), x=1, cosine=True)"
    from lucent_dsl.dsl.serialize import from_json, to_json

    assert ld.parse(repr(e)) == e and from_json(to_json(e)) == e
    with pytest.raises(ld.errors.InvalidArgumentError, match="one or the other"):
        ld.direction("L", (1.0,), cosine=True, cossim_pow=1)
    with pytest.raises(ld.errors.InvalidArgumentError, match="True or False"):
        ld.direction("L", (1.0,), cosine=1)

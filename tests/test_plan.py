"""Plan invariants: exactly the referenced sites, truncated forwards that equal a naive all-hooks run,
models that are not read never run, hooks never outlive a call, errors before any forward."""
from __future__ import annotations

import contextlib

import models as M
import pytest
import strategies as S
import torch
from hypothesis import assume, given, settings, strategies as st
from torch import nn

import lucent_dsl as ld
from lucent_dsl.dsl.expr import IMAGE, INPUT, OUTPUT, Site, evaluate, terms_of
from lucent_dsl.dsl.printing import to_text
from lucent_dsl.errors import (
    AmbiguousModelError,
    InvalidArgumentError,
    LayerNotFoundError,
    ModelNotFoundError,
    ObjectiveShapeError,
)
from lucent_dsl.models.info import ModelInfo, with_info
from lucent_dsl.plan.compiler import DEFAULT_MODEL_NAME, batched, compile_plan
from lucent_dsl.plan.fold import frozen_models

N = 2  # images
CROPS = 2
MODES = ("auto", "fx", "hooks")

MODELS = {
    "conv": M.conv_net(),
    "branchy": M.Branchy(),
    "vit": with_info(M.TinyViT(), ModelInfo(mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4), labels=M.LABELS)),
    "dict": M.DictOut(),
}
LAYERS = {
    # "act" of Branchy is called twice: see test_module_called_twice_reads_its_last_call
    "conv": ("0", "1", "2", "3", "4", "5", "6", INPUT, OUTPUT),
    "branchy": ("stem", "left", "left.0", "right", "merge", "head", OUTPUT),
    "vit": ("patch", "blocks.0", "blocks.1.mlp.1", "blocks.1", "head", INPUT, OUTPUT),
    "dict": ("inner/feat", "inner/gate", "post", "@output/out", "@output/aux"),
}
TABLES = {name: M.layer_table(MODELS[name], LAYERS[name]) for name in MODELS}


def image(seed: int = 0, rows: int = CROPS * N, requires_grad: bool = False) -> torch.Tensor:
    x = torch.rand((rows, *M.IMAGE_SHAPE), generator=torch.Generator().manual_seed(seed))
    return x.requires_grad_(requires_grad)


def naive_acts(plan: ld.Plan, x: torch.Tensor) -> dict[Site, object]:
    """What lucent does: a hook on every module, a full forward of every model, then pick the sites."""
    acts: dict[Site, object] = {}
    for name, model in plan.models.items():
        inp = plan.infos[name].preprocess(x)
        outs, result = M.all_hook_outputs(model, inp)
        for s in plan.sites:
            if s.model == name:
                value = inp if s.module_path == INPUT else result if s.module_path == OUTPUT else outs[s.module_path]
                acts[s] = M.select(value, s.selectors)
    if Site(None, IMAGE) in plan.sites:
        acts[Site(None, IMAGE)] = x
    return acts


def expected_sites(e: ld.Expr, default: str | None) -> set[Site]:
    return {
        s if s.layer == IMAGE else Site(s.model or default, s.layer)
        for t in terms_of(e) for s in t.sites()
    }


def nested(sites: set[Site]) -> bool:
    """Does the objective read a module and one of its own submodules (which one fx graph cannot show)?"""
    paths = {(s.model, s.module_path) for s in sites}
    return any(m == m2 and q.startswith(p + ".") for m, p in paths for m2, q in paths)


ensemble_exprs = S.exprs(TABLES, N, image=M.IMAGE_SHAPE, max_leaves=4)
single_exprs = {name: S.exprs({None: TABLES[name]}, N, image=M.IMAGE_SHAPE, max_leaves=4) for name in MODELS}


# --- sites and models ---------------------------------------------------------------------------------


@settings(max_examples=30)
@given(ensemble_exprs)
def test_sites_are_exactly_the_referenced_layers(e):
    plan = compile_plan(e, MODELS)
    sites = expected_sites(e, None)
    assert set(plan.sites) == sites
    assert len(plan.sites) == len(sites)
    assert list(plan.sites) == sorted(plan.sites, key=lambda s: (s.model or "", s.layer))
    assert set(plan.models) == {s.model for s in sites if s.model is not None}
    assert all(plan.models[k] is MODELS[k] for k in plan.models)


@settings(max_examples=20)
@given(st.sampled_from(sorted(MODELS)).flatmap(lambda name: st.tuples(st.just(name), single_exprs[name])))
def test_a_single_model_binds_model_none(case):
    name, e = case
    plan = compile_plan(e, MODELS[name])
    assert set(plan.sites) == expected_sites(e, DEFAULT_MODEL_NAME)
    assert all(s.model in (DEFAULT_MODEL_NAME, None) for s in plan.sites)


# --- the compiled loss equals a naive all-hooks forward -------------------------------------------------


def _check_against_naive(plan: ld.Plan, seed: int) -> None:
    x = image(seed, requires_grad=True)
    acts = plan.forward(x)
    assert set(acts) == set(plan.sites)
    ref = naive_acts(plan, x)
    for s in plan.sites:
        torch.testing.assert_close(acts[s], ref[s], rtol=1e-5, atol=1e-6)
    loss = plan.loss(acts, N)
    ref_loss = -evaluate(plan.objective, ref, N).sum()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=1e-5)
    if loss.requires_grad:
        (g,) = torch.autograd.grad(loss, x, allow_unused=True)
        (g_ref,) = torch.autograd.grad(ref_loss, x, allow_unused=True)
        assert (g is None) == (g_ref is None)
        if g is not None:
            torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)
    scores = plan.scores(acts, N)
    torch.testing.assert_close(scores.total, -loss)  # also when summands repeat: a + a
    torch.testing.assert_close(sum(scores.terms.values()), scores.per_image)


@settings(max_examples=40)
@given(ensemble_exprs, st.sampled_from(MODES), st.integers(0, 1000))
def test_plan_loss_equals_the_naive_all_hooks_reference(e, truncate, seed):
    assume(truncate != "fx" or not nested(expected_sites(e, None)))  # see test_fx_cannot_read_a_module_and_its_child
    plan = compile_plan(e, MODELS, truncate=truncate)
    _check_against_naive(plan, seed)
    assert M.hook_count(*MODELS.values()) == 0


def test_scores_add_up_equal_summands():
    e = ld.channel("2", 1) + ld.channel("2", 1) - ld.neuron("0", 0)
    plan = compile_plan(e, M.conv_net())
    acts = plan.forward(image())
    scores = plan.scores(acts, N)
    torch.testing.assert_close(scores.total, -plan.loss(acts, N))
    assert plan.term_names == ("channel('2', 1)", "channel('2', 1)", "-neuron('0', 0)") and scores.rows.shape == (3, N)
    assert list(scores.terms) == ["channel('2', 1) + channel('2', 1)", "-neuron('0', 0)"]
    assert all(ld.parse(k) == ld.parse(k) for k in scores.terms)
    torch.testing.assert_close(scores.terms["channel('2', 1) + channel('2', 1)"], 2 * evaluate(ld.channel("2", 1, model="model"), acts, N))
    torch.testing.assert_close(sum(scores.terms.values()), scores.per_image)


def test_hand_written_reference():
    net = M.conv_net()
    e = ld.channel("2", 3) + 0.5 * ld.neuron("4", 1) - 0.1 * ld.total_variation() + ld.class_logit(5, batch=1)
    plan = compile_plan(e, net)
    x = image(3)
    outs, logits = M.all_hook_outputs(net, x)
    c2, c4 = outs["2"], outs["4"]  # (4, 8, 5, 7), (4, 7, 5, 7)
    tv = (x[..., 1:] - x[..., :-1]).abs().mean((1, 2, 3)) + (x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3))
    per_row = c2[:, 3].mean((1, 2)) + 0.5 * c4[:, 1, 2, 3] - 0.1 * tv
    per_image = per_row.view(CROPS, N).mean(0) + logits[:, 5].view(CROPS, N).mean(0) * torch.tensor([0.0, 1.0])
    torch.testing.assert_close(evaluate(plan.objective, plan.forward(x), N), per_image)
    torch.testing.assert_close(plan.loss(plan.forward(x), N), -per_image.sum())


# --- truncation ------------------------------------------------------------------------------------------

_features = M.layer_table(M.Tripwire().features, ("0", "1", "2", OUTPUT))  # the whole model would trip
TRIPWIRE = {("features" if k == OUTPUT else f"features.{k}"): v for k, v in _features.items()}
tripwire_exprs = S.exprs({None: TRIPWIRE}, N, image=M.IMAGE_SHAPE, max_leaves=3)


@settings(max_examples=20)
@given(tripwire_exprs, st.sampled_from(MODES), st.integers(0, 1000))
def test_truncation_never_calls_later_layers_and_keeps_values(e, truncate, seed):
    assume(truncate != "fx" or not nested(expected_sites(e, DEFAULT_MODEL_NAME)))
    model = M.Tripwire()
    plan = compile_plan(e, model, truncate=truncate)
    x = image(seed)
    acts = plan.forward(x)  # would raise TripwireError if `late` ran
    outs, _ = M.all_hook_outputs(model.features, x)  # the same layers, without the model's tail
    for s in plan.sites:
        if s.layer != IMAGE:
            ref = outs[s.layer.removeprefix("features.")] if s.layer != "features" else outs[""]
            torch.testing.assert_close(acts[s], ref)
    assert M.hook_count(model) == 0
    if plan.models:
        assert "full forward" not in plan.runners[DEFAULT_MODEL_NAME].describe()


class Boom(nn.Module):
    """A head that fails on the rendered image (another size, detection post-processing): it counts its calls."""

    calls = 0

    def forward(self, x):
        Boom.calls += 1
        raise ValueError("this head wants another input")


@pytest.mark.parametrize("truncate", ["auto", "hooks"])
def test_layers_past_the_deepest_site_never_decide_whether_a_render_works(truncate):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), Boom())
    plan = compile_plan(ld.channel("2", 3), net, truncate=truncate)  # Boom fails fx's trace: auto runs hooks too
    Boom.calls = 0
    r = ld.render(plan, size=16, steps=3, progress=False)
    assert r.steps == 3 and Boom.calls <= 1  # at most the counting forward reached it; the cut holds after
    assert "raised ValueError past it" in repr(plan) or Boom.calls == 0  # the printout says what was run
    x = image(3)
    torch.testing.assert_close(plan.forward(x)[Site(DEFAULT_MODEL_NAME, "2")], net[:3](x))
    with pytest.raises(ValueError, match="another input"):  # a site past it still fails, with the model's error
        compile_plan(ld.channel("2", 3) + ld.class_logit(0), net, truncate=truncate).forward(x)


def test_fx_cannot_read_a_module_and_its_child_but_auto_can():
    e = ld.channel("features", 0) + ld.channel("features.0", 1)
    with pytest.raises(Exception, match="features.0"):
        compile_plan(e, M.Tripwire(), truncate="fx")  # the parent is an fx leaf: its child is no call in the graph
    plan = compile_plan(e, M.Tripwire())
    assert plan.runners[DEFAULT_MODEL_NAME].describe().startswith("hooks")
    plan.forward(image())


@pytest.mark.parametrize("truncate", MODES)
def test_tripwire_trips_when_the_output_is_read(truncate):
    plan = compile_plan(ld.class_logit(0) + ld.channel("features.0", 1), M.Tripwire(), truncate=truncate)
    with pytest.raises(M.TripwireError):
        plan.forward(image())


@pytest.mark.parametrize("truncate", MODES)
def test_fx_and_hooks_agree_on_dict_outputs_of_inner_layers(truncate):
    model = M.DictOut()
    calls = []
    model.post.register_forward_pre_hook(lambda m, a: calls.append("post"))
    e = ld.channel("inner/feat", 2) - ld.l2(layer="inner/gate", target=0.5)
    plan = compile_plan(e, model, truncate=truncate)
    x = image(1)
    acts = plan.forward(x)
    assert calls == []  # truncated after `inner`, even though it returns a dict
    inner = model.inner(x)
    torch.testing.assert_close(acts[Site(DEFAULT_MODEL_NAME, "inner/feat")], inner["feat"])
    torch.testing.assert_close(acts[Site(DEFAULT_MODEL_NAME, "inner/gate")], inner["gate"])


def test_dict_model_outputs_are_selected_by_key():
    model = M.DictOut()
    e = ld.class_logit(3, layer="@output/out") + ld.channel("@output/aux", 1)
    plan = compile_plan(e, model)
    x = image(2)
    out = model(x)
    expected = (out["out"][:, 3] + out["aux"][:, 1].mean((1, 2))).view(CROPS, N).mean(0)
    torch.testing.assert_close(evaluate(plan.objective, plan.forward(x), N), expected)
    with pytest.raises(ObjectiveShapeError, match="'@output/out'"):
        compile_plan(ld.class_logit(3), model).forward(x)
    with pytest.raises(ObjectiveShapeError, match="keys"):
        compile_plan(ld.channel("@output/nope", 0), model).forward(x)
    with pytest.raises(ObjectiveShapeError, match="select an entry"):
        evaluate(compile_plan(ld.channel("inner", 0), model).objective, {Site("model", "inner"): out}, N)


def test_untraceable_models_fall_back_to_hooks():
    model = M.Untraceable()
    e = ld.channel("b", 1) + ld.neuron("a", 2)
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.fx raises on an untraceable model
        compile_plan(e, model, truncate="fx")
    plan = compile_plan(e, model)
    assert plan.runners[DEFAULT_MODEL_NAME].describe().startswith("hooks")
    _check_against_naive(plan, 0)
    assert M.hook_count(model) == 0


@pytest.mark.parametrize("truncate", MODES)
def test_module_called_twice_reads_its_last_call(truncate):
    model = M.Branchy()
    plan = compile_plan(ld.channel("act", 1), model, truncate=truncate)
    x = image(4)
    outs, _ = M.all_hook_outputs(model, x)
    torch.testing.assert_close(plan.forward(x)[Site(DEFAULT_MODEL_NAME, "act")], outs["act"])


# --- models that are not read never run --------------------------------------------------------------------


@pytest.mark.parametrize("truncate", MODES)
@settings(max_examples=10)
@given(e=single_exprs["conv"])
def test_models_that_are_not_read_are_never_called(truncate, e):
    bound = compile_plan(e, {"conv": MODELS["conv"]}).objective  # names model="conv" everywhere
    plan = compile_plan(bound, {"conv": MODELS["conv"], "boom": M.Exploding()}, truncate=truncate)
    assert "boom" not in plan.models and "boom" not in plan.runners
    plan.forward(image())


def test_image_only_objectives_run_no_model():
    plan = compile_plan(ld.total_variation() - ld.l2(target=0.5), M.Exploding())
    assert plan.models == {} and plan.sites == (Site(None, IMAGE),)
    plan.forward(image())


def test_exploding_model_explodes_when_read():
    plan = compile_plan(ld.channel("conv", 0, model="boom") + ld.channel("0", 1, model="conv"),
                        {"conv": MODELS["conv"], "boom": M.Exploding()}, truncate="hooks")
    with pytest.raises(M.TripwireError):
        plan.forward(image())


# --- hooks never outlive a call -----------------------------------------------------------------------------


@pytest.mark.parametrize("truncate", MODES)
def test_no_hook_remains_and_user_hooks_are_kept(truncate):
    model = M.Tripwire()
    seen = []
    user = model.features[0].register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    plan = compile_plan(ld.channel("features.2", 1) + ld.channel("features.0", 0), model, truncate=truncate)
    assert M.hook_count(model) == 1
    plan.forward(image())
    assert M.hook_count(model) == 1 and len(seen) == 1  # the user's hook ran, and is still there
    failing = compile_plan(ld.channel("features.0", 0) + ld.channel("late", 0), model, truncate=truncate)
    with pytest.raises(M.TripwireError):
        failing.forward(image())  # raises inside the forward, after features.0's tap fired
    assert M.hook_count(model) == 1 and model.features[0]._forward_hooks
    user.remove()
    assert M.hook_count(model) == 0


flags = st.lists(st.booleans(), min_size=40, max_size=40)
FREEZE = [M.Branchy(), M.TinyViT()]


@given(flags, flags, st.booleans())
def test_frozen_models_restores_flags_exactly(modes, grads, fail):
    models = FREEZE
    modules = [m for model in models for m in model.modules()]
    params = [p for model in models for p in model.parameters()]
    for m, flag in zip(modules, modes):
        m.training = flag
    for p, flag in zip(params, grads):
        p.requires_grad_(flag)
    before = ([m.training for m in modules], [p.requires_grad for p in params])
    with pytest.raises(RuntimeError) if fail else contextlib.nullcontext():
        with frozen_models(models):
            assert not any(m.training for m in modules)
            assert not any(p.requires_grad for p in params)
            if fail:
                raise RuntimeError("inside")
    assert ([m.training for m in modules], [p.requires_grad for p in params]) == before


def test_compiling_keeps_training_flags():
    model = M.Branchy().train()
    model.left.eval()
    before = [m.training for m in model.modules()]
    compile_plan(ld.channel("merge", 0), model, truncate="fx")
    assert [m.training for m in model.modules()] == before


# --- errors, before any forward -----------------------------------------------------------------------------


def test_unknown_layer_lists_close_names():
    model = M.Branchy()
    with pytest.raises(LayerNotFoundError) as info:
        compile_plan(ld.channel("stemm", 1), model)
    msg = str(info.value)
    assert "channel('stemm', 1)" in msg and "'stem'" in msg and "Did you mean" in msg
    with pytest.raises(LayerNotFoundError, match="'blocks.0'"):
        compile_plan(ld.neuron("blocks_0", 1), M.TinyViT())
    with pytest.raises(LayerNotFoundError, match="merge"):
        compile_plan(ld.channel("@output", 1) + ld.channel("merg", 1), M.Branchy())


def test_unknown_model_lists_the_ensemble():
    with pytest.raises(ModelNotFoundError, match=r"'convv'.*\['conv', 'vit'\].*'conv'"):
        compile_plan(ld.channel("0", 1, model="convv"), {"conv": MODELS["conv"], "vit": MODELS["vit"]})


def test_model_none_with_two_models_is_ambiguous():
    with pytest.raises(AmbiguousModelError, match="'conv', 'boom'"):
        compile_plan(ld.channel("0", 1), {"conv": MODELS["conv"], "boom": M.Exploding()})
    plan = compile_plan(ld.total_variation(), {"conv": MODELS["conv"], "boom": M.Exploding()})
    assert plan.models == {}  # the image belongs to no model: nothing to disambiguate


@pytest.mark.parametrize(
    ("models", "error"),
    [({}, InvalidArgumentError), ({"": M.conv_net()}, InvalidArgumentError), ({"a:b": M.conv_net()}, InvalidArgumentError),
     ({"a": "not a module"}, InvalidArgumentError), ("resnet", InvalidArgumentError)],
)
def test_bad_model_arguments(models, error):
    with pytest.raises(error):
        compile_plan(ld.channel("0", 1), models)


def test_bad_truncate_and_objective():
    with pytest.raises(InvalidArgumentError):
        compile_plan(ld.channel("0", 1), M.conv_net(), truncate="yes")
    with pytest.raises(InvalidArgumentError):
        compile_plan(3, M.conv_net())  # type: ignore[arg-type]
    with pytest.raises(ld.ParseError):
        compile_plan("channel('0', 1) +", M.conv_net())


# --- class names ----------------------------------------------------------------------------------------------


def test_class_logit_by_name_resolves_with_labels():
    net = with_info(M.conv_net(), ModelInfo(labels=M.LABELS))
    plan = compile_plan(ld.class_logit("Flamingo") - ld.class_logit("tabby cat", batch=0), net)
    assert plan.objective == ld.class_logit(2, model="model") - ld.class_logit(4, batch=0, model="model")
    x = image(5)
    logits = net(x)
    expected = logits[:, 2].view(CROPS, N).mean(0) - logits[:, 4].view(CROPS, N).mean(0) * torch.tensor([1.0, 0.0])
    torch.testing.assert_close(evaluate(plan.objective, plan.forward(x), N), expected)
    with pytest.raises(InvalidArgumentError, match="Did you mean: 'tiger'"):
        compile_plan(ld.class_logit("tigre"), net)
    with pytest.raises(InvalidArgumentError, match="no labels"):
        compile_plan(ld.class_logit("cat"), M.conv_net())
    plan = compile_plan(ld.class_logit("zebra", model="vit") + ld.class_logit(1, model="conv"), MODELS)
    assert ld.class_logit(6, model="vit") in terms_of(plan.objective)


# --- plans are values -------------------------------------------------------------------------------------------


@settings(max_examples=20)
@given(ensemble_exprs)
def test_equal_expressions_give_equal_plans(e):
    a, b = compile_plan(e, MODELS), compile_plan(ld.parse(to_text(e)), dict(MODELS))
    assert a == b and hash(a) == hash(b)
    other = dict(MODELS, conv=M.conv_net())
    if "conv" in a.models:
        assert compile_plan(e, other) != a
    assert compile_plan(e + ld.channel("0", 0, model="conv"), MODELS) != a


@settings(max_examples=20)
@given(ensemble_exprs)
def test_str_lists_sites_and_formula(e):
    plan = compile_plan(e, MODELS)
    text = str(plan)
    lines = text.splitlines()
    assert lines[0] == f"Plan  models=({', '.join(plan.models)})"
    for i, s in enumerate(plan.sites):
        assert f"  t{i} = {s}" in lines
    score = next(line for line in lines if line.startswith("  score = "))
    assert lines[-1] == "  loss  = -score"
    for i in range(len(plan.sites)):
        assert f"t{i}" in score
    for name in plan.models:
        assert any(line.startswith(f"  {name}: ") for line in lines)


def test_str_example():
    plan = compile_plan(ld.channel("2", 3) - 0.5 * ld.neuron("0", 1, x=2), M.conv_net())
    assert str(plan) == (
        "Plan  models=(model)\n"
        "  t0 = model:0\n"
        "  t1 = model:2\n"
        "  model: fx graph cut after 2 (3 of 7 modules run, channels-last)\n"
        "  score = channel(t1, 3) - 0.5 * neuron(t0, 1, x=2)\n"
        "  loss  = -score"
    )


# --- batched objectives ---------------------------------------------------------------------------------------

# Constants are left out: batched() cannot mask a constant, so it adds to every image's score.
per_image_exprs = S.exprs(S.TABLE, 3, names=tuple(n for n in S.BUILDERS if n not in S.WHOLE_BATCH_TERMS),
                          with_consts=False, batches=False, max_leaves=3)


@settings(max_examples=30)
@given(st.lists(per_image_exprs, min_size=3, max_size=3), st.integers(0, 100))
def test_batched_puts_each_objective_on_its_own_image(objectives, seed):
    acts = S.full_acts(seed=seed)
    total = evaluate(batched(objectives), acts, 3)
    for i, e in enumerate(objectives):
        torch.testing.assert_close(total[i], evaluate(e, acts, 3)[i], rtol=1e-9, atol=1e-9)


def test_batched_gradients_stay_on_their_image():
    net = M.conv_net()
    objectives = [ld.channel("2", 0), ld.neuron("4", 1) * ld.channel("0", 2), -ld.layer("3")]
    plan = compile_plan(objectives, net)
    assert plan.n_images == 3
    x = image(6, rows=3, requires_grad=True)
    (g,) = torch.autograd.grad(plan.loss(plan.forward(x), 3), x)
    for i, e in enumerate(objectives):
        single = compile_plan(e, net)
        (gi,) = torch.autograd.grad(-evaluate(single.objective, single.forward(x), 3)[i], x)
        torch.testing.assert_close(g[i], gi[i])
        assert float(gi[[j for j in range(3) if j != i]].abs().sum()) == 0


def test_batched_rejects_whole_batch_terms_and_preset_batches():
    with pytest.raises(InvalidArgumentError, match="whole batch"):
        batched([ld.channel("c", 0), ld.diversity("c")])
    with pytest.raises(InvalidArgumentError, match="already selects"):
        batched([ld.channel("c", 0, batch=1)])
    with pytest.raises(InvalidArgumentError):
        batched([])
    assert batched(["channel('c', 0)", ld.neuron("c", 1)]) == ld.channel("c", 0, batch=0) + ld.neuron("c", 1, batch=1)


# --- inputs and preprocessing -----------------------------------------------------------------------------------


def test_input_sites_are_each_models_preprocessed_image():
    vit = MODELS["vit"]
    plan = compile_plan(ld.channel("@input", 0, model="vit") + ld.channel("@input", 0, model="conv"), MODELS)
    assert set(plan.models) == {"vit", "conv"}
    x = image(7)
    acts = plan.forward(x)
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.3, 0.4]).view(1, 3, 1, 1)
    torch.testing.assert_close(acts[Site("vit", INPUT)], (x - mean) / std)
    assert torch.equal(acts[Site("conv", INPUT)], x)
    assert vit is plan.models["vit"]


# --- input geometry and layouts (issue 15) ----------------------------------------------------------------------


class _Multiple(torch.nn.Module):
    """Takes sizes divisible by 8 only (PixelUnshuffle), and puts its maps channels-last at `tap`."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.unshuffle = torch.nn.PixelUnshuffle(8)
        self.conv = torch.nn.Conv2d(192, 6, 1)
        self.tap = torch.nn.Identity()

    def forward(self, x):
        return self.tap(self.conv(self.unshuffle(x)).permute(0, 2, 3, 1)).mean((1, 2))


def test_the_probe_finds_geometry_and_layout_and_the_plan_maps_each_image_to_it():
    model = _Multiple().eval()
    plan = compile_plan(ld.channel("tap", 5) + ld.channel("@input", 0), model)
    assert str(plan.infos[DEFAULT_MODEL_NAME].input_geometry) == "multiples of 8"
    assert str(plan.layouts[Site(DEFAULT_MODEL_NAME, "tap")]) == "b h w c"
    text = str(plan)
    assert "layouts: t1 = b h w c" in text and "; input multiples of 8" in text
    x = torch.rand(2, 3, 30, 43)
    acts = plan.forward(x)
    assert tuple(acts[Site(DEFAULT_MODEL_NAME, "@input")].shape[-2:]) == (32, 40)  # the nearest multiples of 8
    raw = model.tap(model.conv(model.unshuffle(torch.nn.functional.interpolate(
        x, size=(32, 40), mode="bilinear", align_corners=False))).permute(0, 2, 3, 1))
    torch.testing.assert_close(evaluate(plan.objective, acts, 2)[0], raw[0, ..., 5].mean() + acts[Site(
        DEFAULT_MODEL_NAME, "@input")][0, 0].mean())


def test_stated_layouts_are_part_of_the_plan_and_of_its_identity():
    model = _Multiple().eval()
    a = compile_plan(ld.channel("tap", 1), model)
    b = compile_plan(ld.channel("tap", 1), model, layouts={"tap": "b h w c"})
    c = compile_plan(ld.channel("tap", 1), model, layouts={"tap": "b h w c"})
    assert a != b and b == c and hash(b) == hash(c)
    assert b.layouts[Site(DEFAULT_MODEL_NAME, "tap")].source == "stated"
    with pytest.raises(InvalidArgumentError, match="does not read"):
        compile_plan(ld.channel("tap", 1), model, layouts={"conv": "b c h w"})


def test_a_model_that_runs_at_no_probe_size_keeps_the_rank_rule():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 10 * 14, 5)).eval()  # 10x14 images only
    plan = compile_plan(ld.channel("1", 2), net)
    assert plan.infos[DEFAULT_MODEL_NAME].input_geometry is None and Site(DEFAULT_MODEL_NAME, "1") not in plan.layouts
    x = image(3)
    torch.testing.assert_close(evaluate(plan.objective, plan.forward(x), N), net(x)[:, 2].view(CROPS, N).mean(0))

"""render(): the loop raises the objective, leaves the models untouched, and is reproducible."""
from __future__ import annotations

import importlib
import warnings

import pytest
import torch
import torch.nn as nn

import lucent_dsl as ld
from lucent_dsl import param, render, transforms

render_mod = importlib.import_module("lucent_dsl.renderer.phases")  # the package's `render` is the function
steps_mod = importlib.import_module("lucent_dsl.renderer.steps")


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1),
    )


def state_of(model: nn.Module) -> dict:
    return {
        "tensors": {k: v.clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
    }


def assert_same_state(a: dict, b: dict) -> None:
    assert a["training"] == b["training"]
    assert a["requires_grad"] == b["requires_grad"]
    assert a["hooks"] == b["hooks"]
    assert a["tensors"].keys() == b["tensors"].keys()
    for k in a["tensors"]:
        assert torch.equal(a["tensors"][k], b["tensors"][k]), k


def test_render_raises_the_objective():
    net = tiny_net()
    r = render(ld.channel("3", 2), net, size=24, steps=40, lr=0.5, transforms=[], progress=False)
    h = r.history["channel('3', 2)"][:, 0]
    assert h.shape == (40,)
    assert h[-1] > 1.15 * h[0]  # a random tiny net's channel is bounded: measured 0.067 -> 0.084
    assert r.images.shape == (1, 3, 24, 24)
    assert 0.0 <= float(r.images.min()) and float(r.images.max()) <= 1.0


def test_model_state_is_untouched_even_in_train_mode():
    net = tiny_net().train()
    net[0].weight.requires_grad_(False)  # a user's own mix of flags must come back as it was
    before = state_of(net)
    render(ld.channel("3", 1) - 0.1 * ld.total_variation(), net, size=16, steps=3, progress=False)
    assert_same_state(before, state_of(net))
    assert all(p.grad is None for p in net.parameters())


def test_model_state_is_untouched_after_an_error():
    net = tiny_net().train()
    before = state_of(net)

    @ld.objective(name="explodes_on_step_two")
    def explodes(a, *, calls=[0]):  # noqa: B006 - the counter is the point
        calls[0] += 1
        if calls[0] >= 2:
            raise RuntimeError("boom")
        return a.mean((1, 2, 3))

    with pytest.raises(RuntimeError, match="boom"):
        render(explodes("3"), net, size=16, steps=5, progress=False)
    assert_same_state(before, state_of(net))


def test_same_seed_same_image_bit_for_bit_and_seeds_differ():
    net = tiny_net()
    kw = dict(size=20, steps=5, progress=False)
    a = render(ld.channel("3", 0), net, seed=3, **kw).images
    b = render(ld.channel("3", 0), net, seed=3, **kw).images
    c = render(ld.channel("3", 0), net, seed=4, **kw).images
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_history_has_one_series_per_top_level_term():
    net = tiny_net()
    obj = ld.channel("3", 0) + 0.5 * ld.neuron("5", 1) - 0.01 * ld.total_variation()
    r = render(obj, net, size=16, steps=4, batch=2, progress=False)
    assert list(r.history) == [repr(t) for t in (ld.channel("3", 0), 0.5 * ld.neuron("5", 1), -0.01 * ld.total_variation())]
    assert all(v.shape == (4, 2) for v in r.history.values())



def test_history_rows_add_up_to_the_total_with_repeated_summands():
    """Regression: equal summands were merged by name, then indexed by position (IndexError)."""
    net = tiny_net().eval()
    obj = ld.channel("3", 0) + ld.channel("3", 0) + 0.5 * ld.neuron("5", 1) + ld.channel("3", 0)
    kw = dict(size=16, steps=3, batch=2, progress=False, transforms=[], param=ld.param.pixel(16, batch=2))
    r = render(obj, net, **kw, callback=lambda step, images: None)
    assert list(r.history) == ["channel('3', 0) + channel('3', 0) + channel('3', 0)", "0.5 * neuron('5', 1)"]
    for key in r.history:
        assert ld.parse(key) is not None
    # every step's rows add up to that step's total score, recomputed from the same starting image
    plan = r.plan
    first = render(plan, **dict(kw, steps=1)).images
    acts = plan.forward(ld.param.pixel(16, batch=2).to_image(
        ld.param.pixel(16, batch=2).init(torch.Generator().manual_seed(0))))
    total = plan.scores(acts, 2).per_image
    torch.testing.assert_close(sum(v[0] for v in r.history.values()), total)
    assert first.shape == r.images.shape


def test_batched_objectives_equal_separate_renders():
    net = tiny_net()
    init = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    objs = [ld.channel("3", 0), ld.channel("3", 1), ld.neuron("5", 2)]

    def run(objective, batch):
        p = param.pixel(16, batch=batch, init=init.expand(batch, -1, -1, -1))
        return render(objective, net, param=p, transforms=[], steps=6, lr=0.05, progress=False).images

    together = run(objs, 3)
    for i, o in enumerate(objs):
        alone = run(o, 1)
        torch.testing.assert_close(together[i : i + 1], alone, atol=1e-5, rtol=1e-4)


def test_snapshots_and_callback():
    net = tiny_net()
    seen = []
    r = render(ld.channel("3", 0), net, size=16, steps=6, thresholds=[2, 6], progress=False,
               callback=lambda step, img: seen.append((step, tuple(img.shape))))
    assert sorted(r.snapshots) == [2, 6]
    assert torch.equal(r.snapshots[6], r.images)
    assert [s for s, _ in seen] == list(range(1, 7))


def test_keyboard_interrupt_returns_the_result_so_far():
    net = tiny_net()

    def stop_at_three(step, _img):
        if step == 3:
            raise KeyboardInterrupt

    before = state_of(net)
    r = render(ld.channel("3", 0), net, size=16, steps=50, progress=False, callback=stop_at_three)
    assert r.interrupted and r.steps == 3 and r.images.shape == (1, 3, 16, 16)
    assert_same_state(before, state_of(net))


def test_nonfinite_loss_names_the_step_and_term():
    net = tiny_net()

    @ld.objective(name="goes_nan")
    def goes_nan(a):
        return a.mean((1, 2, 3)) * float("nan")

    with pytest.raises(ld.NonFiniteError, match=r"step 1: .*goes_nan\('3'\)"):
        render(ld.channel("3", 0) + goes_nan("3"), net, size=16, steps=3, progress=False)
    r = render(ld.channel("3", 0) + goes_nan("3"), net, size=16, steps=3, progress=False, on_nonfinite="skip")
    assert r.skipped_steps == (1, 2, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0), "steps"),
        (dict(steps=-3), "steps"),
        (dict(size=0), "size"),
        (dict(lr=float("nan")), "lr"),
        (dict(precision="fp8"), "precision"),
        (dict(compile="yes"), "compile"),
        (dict(thresholds=[99]), "threshold"),
        (dict(optimizer=42), "optimizer"),
    ],
)
def test_bad_arguments_fail_before_any_step(kwargs, match):
    net = tiny_net()
    calls = []
    net.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(ld.InvalidArgumentError, match=match):
        render(ld.channel("3", 0), net, progress=False, **{"steps": 2, **kwargs})
    assert calls == []


def test_ensemble_runs_each_model_with_its_own_preprocessing():
    a, b = tiny_net(0), tiny_net(1)
    ld.with_info(b, ld.ModelInfo(input_size=(8, 8), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))
    seen = {}
    a[0].register_forward_pre_hook(lambda m, inp: seen.setdefault("a", inp[0].shape) and None)
    b[0].register_forward_pre_hook(lambda m, inp: seen.setdefault("b", inp[0].shape) and None)
    obj = ld.channel("3", 0, model="a") + 2.0 * ld.channel("3", 1, model="b")
    render(obj, {"a": a, "b": b}, size=16, steps=2, transforms=[], progress=False)
    assert seen["a"][-2:] == (16, 16) and seen["b"][-2:] == (8, 8)


def test_callable_transforms_are_accepted_with_a_warning():
    net = tiny_net()
    with pytest.warns(UserWarning, match="graph break"):
        r = render(ld.channel("3", 0), net, size=16, steps=2, progress=False, transforms=[lambda x: x.flip(-1)])
    assert r.steps == 2


@pytest.mark.compile
def test_compiled_step_matches_eager_and_does_not_recompile():
    torch._dynamo.reset()
    net = tiny_net().eval()
    obj = ld.channel("3", 0) - 0.01 * ld.total_variation()
    p = param.fft(16, batch=2)
    t = transforms.chain(transforms.jitter(2), transforms.random_rotate((-5.0, 5.0)))
    kw = dict(param=p, transforms=t, progress=False, seed=1)
    eager = render(obj, net, steps=3, compile=False, **kw)
    compiled = render(obj, net, steps=3, compile=True, **kw)
    torch.testing.assert_close(compiled.images, eager.images, atol=1e-4, rtol=1e-4)
    with torch.compiler.set_stance("fail_on_recompile"):
        more = render(obj, net, steps=6, compile=True, seed=2, param=p, transforms=t, progress=False)
    assert more.steps == 6


@pytest.mark.parametrize("native", [True, False])
def test_bf16_raises_the_score_keeps_fp32_images_and_warns_only_where_bf16_is_emulated(native, monkeypatch,
                                                                                         real_cpu_probe):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)  # the probe, as on such a CPU
    obj = ld.channel("3", 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = render(obj, tiny_net(), size=16, steps=12, precision="bf16", progress=False, transforms=[])
    emulated = [w for w in caught if "without bf16 units" in str(w.message)]
    assert len(emulated) == (0 if native else 1)
    h = r.history[repr(obj)][:, 0]
    assert r.images.dtype == torch.float32 and h.dtype == torch.float32
    assert float(h[-3:].mean()) > float(h[:3].mean())


def test_precision_auto_follows_the_measured_rule(monkeypatch, real_cpu_probe):
    # Every machine class is in tests/test_hardware_matrix.py; here, through the probe a CPU answers.
    renderer = importlib.import_module("lucent_dsl.renderer.phases")
    plain = ld.compile_plan(ld.channel("3", 0), tiny_net())
    depthwise = ld.compile_plan(ld.channel("1", 0), nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, groups=8)))
    cpu = torch.device("cpu")
    big, small = (224, 224), (16, 16)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert renderer.resolve_precision("auto", plain, cpu, big, 1) == "fp32"  # no bf16 units: never
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert renderer.resolve_precision("auto", plain, cpu, big, 1) == "bf16"
    assert renderer.resolve_precision("auto", plain, cpu, small, 1) == "fp32"  # too little work to pay
    assert renderer.resolve_precision("auto", depthwise, cpu, big, 1) == "fp32"  # bf16 depthwise was slower
    assert renderer.resolve_precision("fp32", plain, cpu, big, 1) == "fp32"
    r = render(ld.channel("3", 0), tiny_net(), size=16, steps=1, progress=False)
    assert r.precision == "fp32"


def _sized_net(size: tuple[int, int] | None, seed: int = 0) -> nn.Module:
    from lucent_dsl.models.info import ModelInfo, with_info

    return with_info(tiny_net(seed), ModelInfo(input_size=size, resize=size is not None))


def test_transforms_are_sampled_at_the_size_every_model_resizes_to():
    plan = ld.compile_plan(ld.channel("5", 1, model="a") + ld.channel("5", 2, model="b"),
                           {"a": _sized_net((20, 20)), "b": _sized_net((20, 20), 1)})
    apply = steps_mod.model_inputs(plan, transforms.standard(), (1, 3, 16, 16))
    assert [(a.size, names) for a, names in apply.groups] == [((20, 20), ("a", "b"))]
    # two sizes, or a model that takes any size: each model reads the image sampled at its own size
    for other, size in ((_sized_net((24, 24), 1), (24, 24)), (_sized_net(None, 1), None)):
        plan = ld.compile_plan(ld.channel("5", 1, model="a") + ld.channel("5", 2, model="b"),
                               {"a": _sized_net((20, 20)), "b": other})
        apply = steps_mod.model_inputs(plan, transforms.standard(), (1, 3, 16, 16))
        assert [(a.size, names) for a, names in apply.groups] == [((20, 20), ("a",)), (size, ("b",))]
        images = apply(torch.rand(1, 3, 16, 16), transforms.standard().sample(None, (1, 3, 16, 16)))
        assert images["a"].shape[-2:] == (20, 20) and images["b"].shape[-2:] == (size or (40, 40))
    # nothing resized: the transform's own apply, unchanged
    plan = ld.compile_plan(ld.channel("5", 1), _sized_net(None))
    t = transforms.standard()
    assert steps_mod.model_inputs(plan, t, (1, 3, 16, 16)) is t.apply


def test_a_render_sampled_at_the_model_size_scores_as_the_resized_image(monkeypatch):
    # the first step's scores (before any update) with the fused sampling agree with those of the transform's own
    # output resized by the preprocessing, to within the second interpolation: the same draws, the same sites
    plan = ld.compile_plan(ld.neuron("5", 1), _sized_net((40, 40)))
    start = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(0)),
                                            size=(32, 32), mode="bicubic", align_corners=False).clamp(0.05, 0.95)

    def first_score() -> float:
        res = render(plan, steps=1, seed=3, param=param.fft(32, init=start), transforms=transforms.standard(),
                     progress=False)
        return float(res.history["neuron('5', 1)"][0])

    fused = first_score()
    monkeypatch.setattr(steps_mod, "model_inputs", lambda plan, t, shape: t.apply)
    two_step = first_score()
    assert fused != two_step  # the paths differ (else this test would compare a path with itself)
    assert abs(fused - two_step) <= 0.02 * abs(two_step), (fused, two_step)


def test_an_outer_autocast_is_refused_rather_than_recorded_as_fp32():
    """Issue 28.4: the caller's torch.autocast would reach the image and the objective, which no precision names."""
    net = tiny_net()
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(ld.errors.InvalidArgumentError,
                                                                     match="inside torch.autocast.*precision='bf16'"):
        render(ld.channel("3", 0), net, size=16, steps=1, progress=False)
    with torch.autocast("cpu", enabled=False):  # an autocast that is off changes nothing
        assert render(ld.channel("3", 0), net, size=16, steps=1, progress=False).precision == "fp32"

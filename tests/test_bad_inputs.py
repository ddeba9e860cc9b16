"""Every bad input fails with a documented `LucentError` before the first optimizer step.

One table row per mistake. Each row builds an objective, a parameterization or an ensemble the
wrong way and hands it to `render`, with a probe around the model: a forward pre-hook counts
the forwards, an optimizer factory counts `step()` calls, and the image leaves and the model's
tensors are snapshotted. A row passes when the documented error class is raised, its message
names the wrong value and the way out (fragments), the forward count is the expected one (0:
refused while building or compiling the plan; 1: refused by the shape checks of the first
forward, against the real activation shapes), the optimizer never stepped and nothing changed.
"""
from __future__ import annotations

import builtins
import contextlib
import dataclasses as dc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
from torch import Tensor, nn

import lucent_dsl as ld
from lucent_dsl import io, param
from lucent_dsl.param import ImageParam
from lucent_dsl import render

SIZE = 12  # the probe's image is SIZE x SIZE; "features.3" maps are 6 channels of SIZE x SIZE


class ArgMax(nn.Module):
    """Integer outputs (class indices per pixel), as a segmentation head's post-processing gives."""

    def forward(self, x: Tensor) -> Tensor:
        return x.argmax(1, keepdim=True)


class Net(nn.Module):
    """features (maps) -> groups (a 5-D view) | ids (integer maps) | frozen (detached) -> pool -> head."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1), nn.ReLU()
        )
        self.groups = nn.Unflatten(1, (2, 3))  # (B, 2, 3, H, W)
        self.ids = ArgMax()  # (B, 1, H, W) int64
        self.frozen = nn.Conv2d(6, 6, 1)  # reads a detached copy: no gradient reaches the image
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(6, 5)

    def forward(self, x: Tensor) -> Tensor:
        h = self.features(x)
        g = self.groups(h)
        i = self.ids(h)
        f = self.frozen(h.detach())
        return self.head(self.pool(h + 0 * g.sum() + 0 * i.sum() + 0 * f.sum()).flatten(1))


class DictNet(nn.Module):
    """Returns {"out": logits, "aux": maps}."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.conv(x)
        return {"out": self.head(h.mean((2, 3))), "aux": h}


class CountingSGD(torch.optim.SGD):
    steps = 0

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        type(self).steps += 1
        return super().step(closure)


@ld.objective(name="bi_two_scores")
def bi_two_scores(a: Tensor) -> Tensor:
    return a.flatten(1)[:, :2]  # (rows, 2): neither a scalar nor one score per row


@ld.objective(name="bi_not_a_tensor")
def bi_not_a_tensor(a: Tensor) -> float:
    return float(a.detach().mean())


@ld.objective(name="bi_constant")
def bi_constant(a: Tensor) -> Tensor:
    return torch.tensor(1.0)  # no gradient reaches the image


@dc.dataclass
class Probe:
    """A model, an image parameterization and an optimizer that record whatever happens to them."""

    tmp: Path
    model: Net = dc.field(default_factory=Net)
    forwards: int = 0
    leaves: list[Tensor] = dc.field(default_factory=list)

    def __post_init__(self) -> None:
        self.model.train()  # BatchNorm in train mode: a forward outside eval() would move its statistics
        self.model.features[0].register_forward_pre_hook(self._count)
        self.state = {k: v.clone() for k, v in self.model.state_dict().items()}
        CountingSGD.steps = 0

    def _count(self, *_: Any) -> None:
        self.forwards += 1

    def param(self, base: ImageParam | None = None) -> ImageParam:
        """`base` (default: a SIZE x SIZE pixel image) whose leaves are kept, to check they never move."""
        base = base or param.pixel(SIZE, decorrelate=False)

        def init(generator: torch.Generator | None) -> dict[str, Tensor]:
            leaves = base.init(generator)
            # render's detach().requires_grad_() shares this storage: an optimizer step would show here.
            self.leaves += [(v, v.detach().clone()) for v in leaves.values()]  # type: ignore[misc]
            return leaves

        return ImageParam(init, base.to_image)

    def render(self, objective: Any, models: Any = None, **kw: Any) -> Any:
        args = dict(size=SIZE, steps=3, transforms=[], progress=False, param=self.param(),
                    optimizer=lambda p: CountingSGD(p, lr=10.0))
        args.update(kw)
        return render(objective, self.model if models is None else models, **args)

    def watch(self, model: nn.Module, layer: str) -> nn.Module:
        """Count `model`'s forwards too (at `layer`: under torch.fx the root's own hooks never run)."""
        model.get_submodule(layer).register_forward_pre_hook(self._count)
        return model

    def png(self, name: str, shape: tuple[int, ...] = (SIZE, SIZE, 3)) -> Path:
        path = self.tmp / name
        ld.io.save_png(path, torch.rand(shape[2], shape[0], shape[1]))
        return path


@contextlib.contextmanager
def no_eval() -> Iterator[None]:
    """Fail loudly if anything calls eval or exec (the parser must only read the syntax tree)."""

    def boom(*_: Any, **__: Any) -> None:
        raise AssertionError("eval/exec was called while parsing objective text")

    with mock.patch.object(builtins, "eval", boom), mock.patch.object(builtins, "exec", boom):
        yield


def parse_only(text: str) -> Callable[[Probe], Any]:
    def run(p: Probe) -> Any:
        with no_eval():
            objective = ld.parse(text.format(tmp=p.tmp))
        return p.render(objective)

    return run


def caret_under(text: str, char: str) -> Callable[[str, Probe], None]:
    """The message quotes `text` and puts its caret under the first `char`."""

    def check(message: str, _p: Probe) -> None:
        lines = message.splitlines()
        src = next(i for i, line in enumerate(lines) if line == "  " + text)
        assert lines[src + 1].index("^") - 2 == text.index(char), message

    return check


def file_not_created(name: str) -> Callable[[str, Probe], None]:
    def check(_message: str, p: Probe) -> None:
        assert not (p.tmp / name).exists(), "the objective text was executed"

    return check


@dc.dataclass(frozen=True)
class Row:
    id: str
    run: Callable[[Probe], Any]
    error: type[ld.LucentError]
    fragments: tuple[str, ...]
    forwards: int = 0  # 0: refused before any forward; 1: refused by the first forward's shape checks
    check: Callable[[str, Probe], None] | None = None


ch = ld.channel

ROWS = [
    # --- names: layers, models, classes (checked by compile_plan, before any forward) ---------------
    Row("unknown_layer_suggests_closest", lambda p: p.render(ch("feature.3", 1)),
        ld.LayerNotFoundError, ("'feature.3'", "Did you mean", "'features.3'")),
    Row("unknown_layer_in_dict_output_model", lambda p: p.render(ch("conv2", 0), DictNet()),
        ld.LayerNotFoundError, ("'conv2'", "'conv'")),
    Row("unknown_model_in_ensemble", lambda p: p.render(ch("features.3", 1, model="resnt"), {"resnet": p.model, "vit": Net(1)}),
        ld.ModelNotFoundError, ("'resnt'", "Did you mean: 'resnet'", "['resnet', 'vit']")),
    Row("ambiguous_model_none_with_two_models", lambda p: p.render(ch("features.3", 1), {"resnet": p.model, "vit": Net(1)}),
        ld.AmbiguousModelError, ("channel('features.3', 1)", "'resnet', 'vit'", "model=")),
    Row("class_name_without_labels", lambda p: p.render(ld.class_logit("flamingo")),
        ld.InvalidArgumentError, ("'flamingo'", "no labels", "class index", "with_info")),
    Row("class_name_misspelt", lambda p: p.render(ld.class_logit("flamingoo"), ld.with_info(
        Net(), ld.ModelInfo(labels=("cat", "dog", "flamingo", "tiger", "zebra")))),
        ld.InvalidArgumentError, ("'flamingoo'", "Did you mean: 'flamingo'")),
    # --- indices: wrong type or sign (checked by the factories) -------------------------------------
    Row("negative_channel_index", lambda p: p.render(ch("features.3", -1)),
        ld.InvalidArgumentError, ("channel index", "non-negative int", "-1")),
    Row("float_channel_index", lambda p: p.render(ch("features.3", 2.5)),
        ld.InvalidArgumentError, ("channel index", "non-negative int", "2.5")),
    Row("bool_channel_index", lambda p: p.render(ch("features.3", True)),
        ld.InvalidArgumentError, ("non-negative int", "True", "bool")),
    Row("negative_neuron_x", lambda p: p.render(ld.neuron("features.3", 1, x=-2)),
        ld.InvalidArgumentError, ("x must be", "non-negative int", "-2")),
    Row("negative_batch_index", lambda p: p.render(ch("features.3", 1, batch=-1)),
        ld.InvalidArgumentError, ("batch", "non-negative int", "-1")),
    # --- indices against the real shapes (checked at the first forward, before the step) ------------
    Row("channel_index_past_the_layer", lambda p: p.render(ch("features.3", 6)),
        ld.ObjectiveShapeError, ("channel('features.3', 6", "6 channels (0..5)", "not index 6"), forwards=1),
    Row("class_index_past_the_logits", lambda p: p.render(ld.class_logit(9)),
        ld.ObjectiveShapeError, ("class_logit(9", "5 channels (0..4)", "not index 9"), forwards=1),
    Row("neuron_x_outside_the_map", lambda p: p.render(ld.neuron("features.3", 1, x=SIZE)),
        ld.ObjectiveShapeError, (f"x={SIZE}", f"{SIZE}x{SIZE} map", f"x < {SIZE}"), forwards=1),
    Row("neuron_y_outside_a_non_square_map", lambda p: p.render(ld.neuron("features.3", 1, y=SIZE),
                                                                         param=p.param(param.pixel((SIZE, 2 * SIZE)))),
        ld.ObjectiveShapeError, (f"y={SIZE}", f"{SIZE}x{2 * SIZE} map", f"y < {SIZE}"), forwards=1),
    Row("batch_index_past_the_batch", lambda p: p.render(ch("features.3", 1, batch=2), param=p.param(param.pixel(SIZE, batch=2))),
        ld.ObjectiveShapeError, ("selects image 2", "2 image(s) (0..1)"), forwards=1),
    Row("batch_range_past_the_batch", lambda p: p.render(ch("features.3", 1, batch=range(0, 4))),
        ld.ObjectiveShapeError, ("batch=range(0, 4)", "selects image 3", "1 image(s) (0..0)"), forwards=1),
    # --- layouts ---------------------------------------------------------------------------------------
    Row("total_variation_on_vectors", lambda p: p.render(ch("features.3", 1) - ld.total_variation(layer="head")),
        ld.ObjectiveShapeError, ("total_variation(layer='head'", "(1, 5)", "(B, C, H, W)"), forwards=1),
    Row("neuron_position_on_vectors", lambda p: p.render(ld.neuron("head", 1, x=0)),
        ld.ObjectiveShapeError, ("neuron('head', 1, x=0", "(B, C) vectors", "no x/y position"), forwards=1),
    Row("token_on_a_feature_map", lambda p: p.render(ld.neuron("features.3", 1, token=0)),
        ld.ObjectiveShapeError, ("token=0", "(B, tokens, C) sequences", "feature map"), forwards=1),
    Row("five_dimensional_activation", lambda p: p.render(ch("groups", 0)),
        ld.ObjectiveShapeError, (f"(1, 2, 3, {SIZE}, {SIZE})", "(B, C, H, W) feature maps", "(B, tokens, C)", "(B, C) vectors"), forwards=1),
    Row("integer_activation", lambda p: p.render(ch("ids", 0)),
        ld.ObjectiveShapeError, ("channel('ids', 0", "torch.int64", "floating-point"), forwards=1),
    Row("dict_output_without_a_key", lambda p: p.render(ld.class_logit(0), p.watch(DictNet(), "conv")),
        ld.ObjectiveShapeError, ("['out', 'aux']", "'@output/out'"), forwards=1),
    Row("dict_output_with_an_unknown_key", lambda p: p.render(ld.class_logit(0, layer="@output/logits"), p.watch(DictNet(), "conv")),
        ld.ObjectiveShapeError, ("'logits'", "['out', 'aux']"), forwards=1),
    Row("direction_of_the_wrong_length", lambda p: p.render(ld.direction("features.3", [1.0, -1.0])),
        ld.ObjectiveShapeError, ("direction('features.3', (1.0, -1.0)", "2 values", "6 channels"), forwards=1),
    Row("channel_weights_of_the_wrong_length", lambda p: p.render(ld.channel_weight("features.3", [1.0] * 8)),
        ld.ObjectiveShapeError, ("the weights has 8 values", "6 channels"), forwards=1),
    # --- numbers ---------------------------------------------------------------------------------------
    Row("nan_weight", lambda p: p.render(float("nan") * ch("features.3", 1)),
        ld.InvalidArgumentError, ("weight", "must be finite", "nan")),
    Row("inf_constant", lambda p: p.render(ch("features.3", 1) + float("inf")),
        ld.InvalidArgumentError, ("constant", "must be finite", "inf")),
    Row("nan_in_a_direction_vector", lambda p: p.render(ld.direction("features.3", [1.0, float("nan")] + [0.0] * 4)),
        ld.InvalidArgumentError, ("direction vector", "must be finite", "nan")),
    Row("divide_by_zero", lambda p: p.render(ch("features.3", 1) / 0),
        ld.InvalidArgumentError, ("divide", "channel('features.3', 1)", "by zero")),
    Row("zero_steps", lambda p: p.render(ch("features.3", 1), steps=0),
        ld.InvalidArgumentError, ("steps", "integer >= 1", "got 0")),
    Row("negative_steps", lambda p: p.render(ch("features.3", 1), steps=-5),
        ld.InvalidArgumentError, ("steps", "integer >= 1", "got -5")),
    Row("fractional_steps", lambda p: p.render(ch("features.3", 1), steps=2.5),
        ld.InvalidArgumentError, ("steps", "integer >= 1", "got 2.5")),
    Row("zero_size", lambda p: p.render(ch("features.3", 1), size=0, param=None),
        ld.InvalidArgumentError, ("size", "integer >= 1", "got 0")),
    Row("negative_size_in_a_pair", lambda p: p.render(ch("features.3", 1), size=(SIZE, -3), param=None),
        ld.InvalidArgumentError, ("size[1]", "integer >= 1", "got -3")),
    Row("zero_size_parameterization", lambda p: p.render(ch("features.3", 1), param=param.fft(0)),
        ld.InvalidArgumentError, ("size", "int >= 1", "got 0")),
    # --- images: init / caricature ---------------------------------------------------------------------
    Row("init_image_with_four_channels", lambda p: p.render(ch("features.3", 1), param=param.pixel(SIZE, init=torch.rand(1, 4, SIZE, SIZE))),
        ld.InvalidArgumentError, (f"got (1, 4, {SIZE}, {SIZE})", "init must have shape", f", 3, {SIZE}, {SIZE})")),
    Row("init_image_of_another_size", lambda p: p.render(ch("features.3", 1), param=param.fft(SIZE, init=io.load_image(p.png("small.png", (8, 10, 3))))),
        ld.InvalidArgumentError, ("got (1, 3, 8, 10)", "init must have shape", f", 3, {SIZE}, {SIZE})")),
    Row("init_image_outside_0_1", lambda p: p.render(ch("features.3", 1), param=param.pixel(SIZE, init=255 * torch.rand(1, 3, SIZE, SIZE))),
        ld.InvalidArgumentError, ("[0, 1]", "values in [")),
    Row("unreadable_image_file", lambda p: param.pixel(SIZE, init=io.load_image(p.tmp / "notes.png")),
        ld.ImageError, ("notes.png", "cannot read", "PNG, JPEG")),
    Row("missing_image_file", lambda p: param.pixel(SIZE, init=io.load_image(p.tmp / "missing.jpg")),
        ld.ImageError, ("missing.jpg", "No such file", "PNG, JPEG")),
    Row("image_array_with_two_channels", lambda p: io.load_image(torch.rand(2, SIZE, SIZE).numpy().transpose(1, 2, 0)),
        ld.ImageError, (f"({SIZE}, {SIZE}, 2)", "C in {1, 3, 4}")),
    # --- models ----------------------------------------------------------------------------------------
    Row("model_is_a_function", lambda p: p.render(ch("features.3", 1), lambda x: x),
        ld.InvalidArgumentError, ("function", "torch.nn.Module", "mapping name -> nn.Module")),
    Row("ensemble_member_is_a_string", lambda p: p.render(ch("features.3", 1, model="a"), {"a": p.model, "b": "resnet50"}),
        ld.InvalidArgumentError, ("model 'b'", "str", "torch.nn.Module")),
    Row("models_on_different_devices", lambda p: p.render(ch("features.3", 1, model="a") + ch("features.3", 1, model="b"),
                                                           {"a": p.model, "b": Net(1).to("meta")}),
        ld.InvalidArgumentError, ("different devices", "cpu (a)", "meta (b)", "move them to one device")),
    Row("device_argument_differs_from_the_models", lambda p: p.render(ch("features.3", 1), device="meta"),
        ld.InvalidArgumentError, ("device=meta", "models are on cpu", "drop device=")),
    # --- custom objectives and objectives with nothing to optimize -------------------------------------
    Row("custom_objective_returns_two_scores_per_row", lambda p: p.render(bi_two_scores("features.3")),
        ld.ObjectiveShapeError, ("bi_two_scores('features.3'", "returned shape (1, 2)", "scalar or one score per row (1,)"), forwards=1),
    Row("custom_objective_returns_a_float", lambda p: p.render(bi_not_a_tensor("features.3")),
        ld.ObjectiveShapeError, ("bi_not_a_tensor('features.3'", "returned a float", "0-d tensor", "one score per row (1,)"), forwards=1),
    Row("custom_objective_returns_a_constant", lambda p: p.render(bi_constant("features.3")),
        ld.InvalidArgumentError, ("step 1", "bi_constant('features.3'", "does not depend on the image"), forwards=1),
    Row("objective_reads_a_detached_layer", lambda p: p.render(ch("frozen", 0)),
        ld.InvalidArgumentError, ("channel('frozen', 0", "does not depend on the image", "Read layers that the image flows into"), forwards=1),
    Row("objective_is_a_number", lambda p: p.render(42),
        ld.InvalidArgumentError, ("objective must be", "DSL text", "got int")),
    # --- objective text: syntax errors point at the column; code is refused, never run ------------------
    Row("syntax_error_shows_the_column", parse_only("channel('features.3', 1) +* 2"),
        ld.ParseError, ("invalid syntax", "channel('features.3', 1) +* 2"), check=caret_under("channel('features.3', 1) +* 2", "*")),
    Row("unclosed_parenthesis", parse_only("channel('features.3', 1"),
        ld.ParseError, ("was never closed",), check=caret_under("channel('features.3', 1", "(")),
    Row("misspelt_objective_name", parse_only("chanel('features.3', 1)"),
        ld.ParseError, ("'chanel' is not an objective name", "channel, channel_interpolate"), check=caret_under("chanel('features.3', 1)", "c")),
    Row("dunder_import_is_refused", parse_only("__import__('pathlib').Path('{tmp}/pwned').touch()"),
        ld.ParseError, ("only objective names can be called",), check=file_not_created("pwned")),
    Row("os_system_is_refused", parse_only("channel('features.3', 1) + __import__('os').system('touch {tmp}/pwned')"),
        ld.ParseError, ("only objective names can be called",), check=file_not_created("pwned")),
    Row("attribute_access_is_refused", parse_only("channel('features.3', 1).__class__.__init__.__globals__"),
        ld.ParseError, ("Attribute is not allowed", "objective calls, literals and + - * /")),
    Row("builtin_name_is_refused", parse_only("channel('features.3', 1) + __builtins__"),
        ld.ParseError, ("name '__builtins__' is not allowed", "call an objective such as channel(...)")),
    Row("open_call_is_refused", parse_only("channel('features.3', 1) * open('{tmp}/pwned', 'w').write('x')"),
        ld.ParseError, ("only objective names can be called",), check=file_not_created("pwned")),
    Row("lambda_is_refused", parse_only("channel('features.3', 1) + (lambda: 0)()"),
        ld.ParseError, ("only objective names can be called",)),
    Row("bare_lambda_is_refused", parse_only("lambda: channel('features.3', 1)"),
        ld.ParseError, ("Lambda is not allowed",)),
    Row("list_comprehension_is_refused", parse_only("[channel('features.3', i) for i in range(3)]"),
        ld.ParseError, ("ListComp is not allowed",)),
    Row("generator_expression_is_refused", parse_only("sum_of(channel('features.3', i) for i in range(3))"),
        ld.ParseError, ("GeneratorExp is not allowed",)),
    Row("walrus_is_refused", parse_only("(x := channel('features.3', 1))"),
        ld.ParseError, ("NamedExpr is not allowed",)),
    Row("subscript_is_refused", parse_only("[channel('features.3', 1)][0]"),
        ld.ParseError, ("Subscript is not allowed",)),
    Row("power_is_refused", parse_only("channel('features.3', 1) ** 2"),
        ld.ParseError, ("is not allowed",)),
]


@pytest.fixture
def probe(tmp_path: Path) -> Probe:
    (tmp_path / "notes.png").write_text("not an image")
    return Probe(tmp_path)


def test_the_table_is_large_and_names_are_unique():
    assert len(ROWS) >= 25
    assert len({r.id for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_fails_early_with_a_helpful_error(row: Row, probe: Probe):
    hooks_before = {k: len(m._forward_hooks) + len(m._forward_pre_hooks) for k, m in probe.model.named_modules()}
    with pytest.raises(ld.LucentError) as info:
        row.run(probe)
    err = info.value
    assert type(err) is row.error, f"{type(err).__name__}: {err}"
    message = str(err)
    for fragment in row.fragments:
        assert fragment in message, f"{fragment!r} not in: {message}"
    if row.check is not None:
        row.check(message, probe)
    assert probe.forwards == row.forwards, message
    assert CountingSGD.steps == 0
    for leaf, start in probe.leaves:  # type: ignore[misc]
        assert torch.equal(leaf.detach(), start)
    for k, v in probe.model.state_dict().items():
        assert torch.equal(v, probe.state[k]), k
    assert probe.model.training and all(p.requires_grad for p in probe.model.parameters())
    assert hooks_before == {k: len(m._forward_hooks) + len(m._forward_pre_hooks) for k, m in probe.model.named_modules()}


def test_the_probe_sees_a_good_render_step():
    """The harness itself: the same probe, with a valid objective, does count forwards and steps."""
    p = Probe(Path("."))
    r = p.render(ld.channel("features.3", 1), steps=2)
    assert r.steps == 2 and p.forwards == 2 and CountingSGD.steps == 2
    assert any(not torch.equal(leaf.detach(), start) for leaf, start in p.leaves)  # type: ignore[misc]
    for k, v in p.model.state_dict().items():  # eval() during the render: BatchNorm statistics unchanged
        assert torch.equal(v, p.state[k]), k


# --- failures mid-run: NaN/inf, Ctrl-C; the model comes back exactly as it was ------------------------


class BNNet(nn.Module):
    """BatchNorm in train mode and a mix of flags, the state a render must hand back untouched."""

    def __init__(self, traceable: bool = True):
        super().__init__()
        torch.manual_seed(0)
        self.traceable = traceable
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Conv2d(6, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.bn(self.conv(x))
        if not self.traceable and bool(h.detach().mean() > 1e9):  # torch.fx cannot trace this: hooks runner
            h = -h
        return self.out(self.drop(torch.relu(h)))


def bn_net(traceable: bool = True) -> BNNet:
    net = BNNet(traceable).train()
    net.drop.eval()  # a user's own mix of modes and flags must come back as it was
    net.out.bias.requires_grad_(False)
    with torch.no_grad():  # non-trivial running statistics
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    return net


def full_state(model: nn.Module) -> dict[str, Any]:
    return {
        "tensors": {k: v.clone() for k, v in model.state_dict(keep_vars=False).items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "hooks": [(n, k, len(v)) for n, m in model.named_modules() for k, v in vars(m).items()
                  if "hook" in k and isinstance(v, dict)],
        "attributes": [sorted(vars(m)) for m in model.modules()],
    }


def assert_untouched(model: nn.Module, before: dict[str, Any]) -> None:
    after = full_state(model)
    for key in ("training", "requires_grad", "hooks", "attributes"):
        assert after[key] == before[key], key
    assert all(g is None for g in after["grads"])
    assert after["tensors"].keys() == before["tensors"].keys()
    for k, v in before["tensors"].items():  # BatchNorm running_mean/var and num_batches_tracked included
        assert torch.equal(after["tensors"][k], v), k


def calls_then(n_ok: int, bad: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """A custom objective body: a mean activation for `n_ok` calls, then `bad(a)`."""
    calls = [0]

    def fn(a: Tensor) -> Tensor:
        calls[0] += 1
        return a.mean((1, 2, 3)) if calls[0] <= n_ok else bad(a)

    return fn


def test_nan_at_a_later_step_names_the_step_and_the_term():
    net = bn_net()
    before = full_state(net)
    nan_on_3 = ld.objective(calls_then(2, lambda a: a.mean((1, 2, 3)) * float("nan")), name="bi_nan_on_3")
    CountingSGD.steps = 0
    with pytest.raises(ld.NonFiniteError, match=r"^step 3: non-finite value in -0\.5 \* bi_nan_on_3\('out'\) = \[nan\]"):
        render(ld.channel("out", 0) - 0.5 * nan_on_3("out"), net, size=8, steps=5, transforms=[], progress=False,
               optimizer=lambda p: CountingSGD(p, lr=0.1))
    assert CountingSGD.steps == 2  # steps 1 and 2 ran, step 3 stopped before its update
    assert_untouched(net, before)


def test_inf_in_the_loss_names_the_term():
    net = bn_net()
    before = full_state(net)
    inf = ld.objective(calls_then(0, lambda a: a.mean((1, 2, 3)) + float("inf")), name="bi_inf")
    with pytest.raises(ld.NonFiniteError, match=r"^step 1: non-finite value in bi_inf\('conv'\) = \[inf\]"):
        render(ld.channel("out", 0) + inf("conv"), net, size=8, steps=3, transforms=[], progress=False)
    assert_untouched(net, before)


@ld.objective(name="bi_sqrt_at_zero")
def bi_sqrt_at_zero(a: Tensor) -> Tensor:
    """Finite value (0), infinite gradient: d sqrt(x)/dx at x = 0."""
    return (a - a.detach()).abs().sqrt().mean((1, 2, 3))


def test_nonfinite_gradient_with_a_finite_loss_names_the_term():
    net = bn_net()
    before = full_state(net)
    obj = ld.channel("out", 0) + 0.5 * bi_sqrt_at_zero("conv") - 0.1 * ld.total_variation()
    with pytest.raises(ld.NonFiniteError) as info:
        render(obj, net, size=8, steps=3, transforms=[], progress=False)
    message = str(info.value)
    assert message.startswith("step 1: non-finite value in the gradient of 0.5 * bi_sqrt_at_zero('conv') (loss = ")
    assert "channel(" not in message and "total_variation" not in message  # only the culprit is named
    assert_untouched(net, before)


def test_skipped_nonfinite_steps_never_update_the_image():
    net = bn_net()
    before = full_state(net)
    p = Probe(Path("."))
    CountingSGD.steps = 0
    r = render(ld.channel("out", 0) + bi_sqrt_at_zero("conv"), net, size=8, steps=3, transforms=[], progress=False,
               on_nonfinite="skip", param=p.param(param.pixel(8)), optimizer=lambda ps: CountingSGD(ps, lr=1.0))
    assert r.skipped_steps == (1, 2, 3) and r.steps == 3 and CountingSGD.steps == 0
    assert all(torch.equal(leaf.detach(), start) for leaf, start in p.leaves)  # type: ignore[misc]
    assert bool(torch.isfinite(r.images).all())
    assert_untouched(net, before)


class InterruptInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:
        raise KeyboardInterrupt


def interrupt_in_forward(net: BNNet, at_call: int) -> None:
    calls = [0]

    def hook(_m: nn.Module, _inputs: Any) -> None:
        calls[0] += 1
        if calls[0] == at_call:
            raise KeyboardInterrupt

    net.bn.register_forward_pre_hook(hook)


def interrupt_in_backward(net: BNNet, at_call: int) -> None:
    calls = [0]

    def hook(_m: nn.Module, _inputs: Any, output: Tensor) -> Tensor:
        calls[0] += 1
        return InterruptInBackward.apply(output) if calls[0] == at_call else output

    net.bn.register_forward_hook(hook)


@pytest.mark.parametrize("where", [interrupt_in_forward, interrupt_in_backward], ids=["forward", "backward"])
@pytest.mark.parametrize("truncate", ["fx", "hooks"])
def test_ctrl_c_mid_step_returns_the_result_so_far_and_restores_the_model(where, truncate):
    kw = dict(size=8, transforms=[], progress=False, seed=3)
    obj = ld.channel("bn", 1) - 0.1 * ld.total_variation()
    # fuse=False: bit-exact equality needs the same kernels (a hooked BatchNorm is never folded)
    reference = render(ld.compile_plan(obj, bn_net(), fuse=False), steps=2, **kw)

    net = bn_net(traceable=truncate == "fx")
    where(net, at_call=3)  # the third step's forward (or its backward) is interrupted
    before = full_state(net)
    plan = ld.compile_plan(obj, net, truncate=truncate, fuse=False)
    assert ("hooks" in str(plan)) == (truncate == "hooks")
    r = render(plan, steps=10, **kw)
    assert r.interrupted and r.steps == 2
    assert all(h.shape == (2, 1) for h in r.history.values())
    torch.testing.assert_close(r.images, reference.images, rtol=0, atol=0)  # what 2 full steps give
    assert_untouched(net, before)


def test_ctrl_c_before_the_first_step_returns_the_start_image():
    net = bn_net()
    interrupt_in_forward(net, at_call=1)
    before = full_state(net)
    r = render(ld.channel("bn", 1), net, size=8, steps=5, transforms=[], progress=False)
    assert r.interrupted and r.steps == 0 and r.history["channel('bn', 1)"].shape == (0, 1)
    assert r.images.shape == (1, 3, 8, 8) and bool(torch.isfinite(r.images).all())
    assert_untouched(net, before)

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
from lucent_dsl import param, render
from lucent_dsl.io import files as io
from lucent_dsl.param import ImageParam

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
        ld.ObjectiveShapeError, ("channel('groups', 0", "shape (1, 2, 3, ", "(B, C, H, W) feature maps", "(B, tokens, C)", "(B, C) vectors"), forwards=1),
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
        ld.InvalidArgumentError, ("size", "integer >= 1", "got 0")),
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


# --- the command line and recipes: refused before any model runs a step, nothing written ----------------
#
# Each row is a `lucent-dsl` command line (run in-process by `cli.main` in a fresh folder) that must exit
# with 2 and one line naming the wrong value and the way out. Optimizer steps are counted on torch's own
# optimizers, and the folder must hold exactly what the row's setup put there afterwards. The models
# come from a file spec whose `evil` factory writes a marker file: it must never appear.

import json  # noqa: E402
import os  # noqa: E402
import uuid  # noqa: E402
import zlib  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from lucent_dsl.atlas import folder_lock  # noqa: E402
from lucent_dsl.cli import app as cli  # noqa: E402
from lucent_dsl.io.files import RECIPE_KEY, save_image  # noqa: E402

MODELS = '''
from pathlib import Path

import torch
from torch import nn


def tiny():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU())


def evil():
    Path(__file__).with_name("PWNED").write_text("a recipe ran this code")
    return tiny()


def half():
    return tiny().half()


def double():
    return tiny().double()


def meta():
    with torch.device("meta"):
        return tiny()


class TwoArgs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x, mask):
        return self.conv(x) * mask


def two_args():
    return TwoArgs()


def scripted():
    return torch.jit.script(tiny())


def traced():
    return torch.jit.trace(tiny(), torch.rand(1, 3, 16, 16))


def grey():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())


def seeded():
    torch.manual_seed(int(Path(__file__).with_name("seed.txt").read_text()))
    return tiny()
'''
FAST_CLI = ("--size", "16", "--steps", "3", "-q")
OBJ = "channel('0', 1)"


@pytest.fixture(scope="module")
def models_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "nets.py"
    path.write_text(MODELS)
    path.with_name("seed.txt").write_text("1")
    return path


def recipe_json(fields: dict[str, Any]) -> str:
    d = {"objective": OBJ, "models": ["{models}:tiny"], "size": [16, 16], "steps": 3, **fields}
    return json.dumps({k: v for k, v in d.items() if v is not None})


def write_recipe(name: str, **fields: Any) -> Callable[[Path, Path], None]:
    """A recipe file in the row's folder: JSON, or the metadata of a .png / .jpg."""
    def setup(tmp: Path, models: Path) -> None:
        text = recipe_json(fields).replace("{models}", str(models)).replace("{tmp}", str(tmp))
        if name.endswith(".json"):
            (tmp / name).write_text(text)
        else:
            save_image(tmp / name, torch.rand(3, 8, 8), metadata={RECIPE_KEY: text})
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp / "photo.png")

    return setup


def png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def image_file(name: str) -> Callable[[Path, Path], None]:
    def setup(tmp: Path, models: Path) -> None:
        if name == "bomb.png":  # 164 bytes that claim 13000 x 13000 pixels
            (tmp / name).write_bytes(png_header_only(13000, 13000))
        elif name == "deep.tif":  # 32-bit integers past 16 bits: clipped, this loaded as all white
            Image.fromarray(np.array([[0, 70000], [5, 1]], np.int32)).save(tmp / name)
        elif name == "photo.png":
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp / name)
        elif name == "cut.png":
            save_image(tmp / "whole.png", torch.rand(3, 32, 32))
            (tmp / name).write_bytes((tmp / "whole.png").read_bytes()[:120])
            (tmp / "whole.png").unlink()

    return setup


def atlas_first(*, then: str) -> Callable[[Path, Path], Any]:
    """A finished 2-channel atlas in `atl/`, then damaged (`then="corrupt"`), re-weighted or locked."""
    def setup(tmp: Path, models: Path) -> Any:
        spec = f"{models}:seeded"
        if then != "lock":
            models.with_name("seed.txt").write_text("1")
            assert cli.main(["atlas", "0", "--model", spec, "--channels", "0:2", "--out", str(tmp / "atl"), *FAST_CLI]) == 0
        if then == "corrupt":
            path = tmp / "atl" / "0_0001.png"
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0xFF  # one flipped byte in the pixel data
            path.write_bytes(bytes(data))
        if then == "reweight":
            models.with_name("seed.txt").write_text("2")  # the same file and factory, other weights
        if then == "lock":
            return folder_lock(tmp / "atl")  # another run holds the folder
        return None

    return setup


@dc.dataclass(frozen=True)
class CliRow:
    id: str
    argv: tuple[str, ...]  # {models} is the models file, {tmp} the row's folder
    fragments: tuple[str, ...]
    setup: Callable[[Path, Path], Any] | None = None
    env: tuple[tuple[str, str], ...] = ()


def R(id: str, *argv: str, frag: tuple[str, ...], setup: Any = None, env: tuple = ()) -> CliRow:
    return CliRow(id, tuple(argv), frag, setup, env)


def render_row(id: str, *extra: str, frag: tuple[str, ...], model: str = "tiny", **kw: Any) -> CliRow:
    return R(id, "render", OBJ, "--model", f"{{models}}:{model}", *FAST_CLI, "--out", "{tmp}/out.png", *extra, frag=frag, **kw)


def recipe_row(id: str, name: str = "r.json", *extra: str, frag: tuple[str, ...], **fields: Any) -> CliRow:
    return R(id, "render", "--recipe", f"{{tmp}}/{name}", "--out", "{tmp}/out.png", "-q", *extra, frag=frag,
             setup=write_recipe(name, **fields))


def atlas_row(id: str, *extra: str, frag: tuple[str, ...], model: str = "tiny", **kw: Any) -> CliRow:
    return R(id, "atlas", "0", "--model", f"{{models}}:{model}", *FAST_CLI, "--out", "{tmp}/atl", *extra, frag=frag, **kw)


EVIL = "{models}:evil"
NO_GPU = not torch.cuda.is_available()
CLI_ROWS = [
    # --- the trust rule: a recipe is data -------------------------------------------------------------
    recipe_row("recipe_runs_a_python_file", frag=("[file]", "nets.py", "evil()", "--allow file", "--model SPEC"),
               models=[EVIL]),
    recipe_row("recipe_in_a_png_runs_a_python_file", "r.png", frag=("[file]", "evil()", "--allow file"), models=[EVIL]),
    recipe_row("recipe_in_a_jpeg_runs_a_python_file", "r.jpg", frag=("[file]", "evil()", "--allow file"), models=[EVIL]),
    recipe_row("recipe_names_a_relative_python_file", frag=("[file]", "helper.py", "relative to the current folder"),
               models=["helper.py:factory"]),
    recipe_row("recipe_names_a_stdlib_module", frag=("[file]", "uuid.py", "uuid4()", "--allow file"),
               models=[f"{uuid.__file__}:uuid4"]),
    recipe_row("recipe_in_an_ensemble_runs_a_python_file", frag=("[file]", "b=", "evil()"),
               models=["a={models}:tiny", "b={models}:evil"], objective="channel('0', 1, model='a')"),
    recipe_row("recipe_downloads_torchvision_weights", frag=("[download]", "vit_h_14", "DEFAULT", "--allow download"),
               models=["torchvision:vit_h_14:weights=DEFAULT"]),
    recipe_row("recipe_downloads_a_pretrained_backbone", frag=("[download]", "fcn_resnet50", "backbone"),
               models=["torchvision:fcn_resnet50"]),
    recipe_row("recipe_downloads_timm_weights", frag=("[download]", "timm:resnet18:pretrained=true", "--allow download"),
               models=["timm:resnet18:pretrained=true"]),
    recipe_row("recipe_caricature_reads_an_image", frag=("[image]", "photo.png", "--allow image", "--image PATH"),
               command="caricature", objective=None, image="{tmp}/photo.png", layers=["0"], models=["torchvision:resnet18"]),
    recipe_row("recipe_accentuate_reads_an_image", frag=("[image]", "/etc/hostname", "--allow image"),
               command="accentuate", image="/etc/hostname", models=["torchvision:resnet18"]),
    recipe_row("recipe_allowed_file_but_not_download", "r.json", "--allow", "file",
               frag=("[download]", "resnet18", "--allow download"),
               models=["a={models}:tiny", "b=torchvision:resnet18:weights=DEFAULT"], objective="channel('0', 1, model='a')"),
    recipe_row("recipe_allow_names_an_unknown_kind", "r.json", "--allow", "everything", frag=("everything", "unknown", "file"),
               models=[EVIL]),
    recipe_row("recipe_steps_above_the_cap", frag=("steps 10000000", "cap of 100000", "--allow large"), steps=10**7),
    recipe_row("recipe_size_above_the_cap", frag=("size 100000x100000", "4096", "--allow large"), size=[100000, 100000]),
    recipe_row("recipe_batch_above_the_cap", frag=("batch 100000", "cap of 256"), batch=100000),
    recipe_row("recipe_seed_2_to_the_63", frag=("9223372036854775808", "2**63 - 1"), seed=2**63),
    recipe_row("recipe_negative_seed", frag=("got -1", "0 .. 2**63 - 1"), seed=-1),
    recipe_row("recipe_unknown_key", frag=("unknown keys ['stpes']", "known:"), stpes=3),
    recipe_row("recipe_zero_steps", frag=("steps", "integer >= 1", "got 0"), steps=0),
    recipe_row("recipe_unknown_param", frag=("param", "fft, pixel", "'wavelet'"), param="wavelet"),
    recipe_row("recipe_future_format", frag=("format 2", "reads 1"), lucent_dsl_recipe=2),
    recipe_row("recipe_objective_is_code", frag=("only objective names can be called",),
               objective="__import__('os').system('touch PWNED')"),
    R("recipe_file_is_not_json", "render", "--recipe", "{tmp}/r.json", "-q", frag=("not valid JSON",),
      setup=lambda tmp, m: (tmp / "r.json").write_text("{not json")),
    R("recipe_png_carries_no_recipe", "render", "--recipe", "{tmp}/plain.png", "-q", frag=("plain.png", "carries no lucent_dsl recipe"),
      setup=lambda tmp, m: save_image(tmp / "plain.png", torch.rand(3, 4, 4))),
    R("recipe_file_is_missing", "render", "--recipe", "{tmp}/gone.png", "-q", frag=("gone.png", "does not exist")),
    # --- caps and memory on the command line --------------------------------------------------------------
    render_row("steps_above_the_cap", "--steps", "10000000", frag=("steps 10000000", "cap of 100000", "--allow large")),
    render_row("size_above_the_cap", "--size", "20000", frag=("size 20000x20000", "4096 pixels a side", "--allow large")),
    render_row("batch_above_the_cap", "--batch", "1000", frag=("batch 1000", "cap of 256")),
    render_row("gif_frames_above_the_cap", "--steps", "5000", "--gif", "{tmp}/a.gif", "--every", "1",
               frag=("5000 GIF frames", "cap of 1000", "raise --every")),
    render_row("render_needs_more_memory_than_there_is", "--size", "4000", "--batch", "64",
               frag=("64 image(s) of 4000x4000", "needs about", "GB", "--allow memory")),
    render_row("seed_2_to_the_63", "--seed", str(2**63), frag=("--seed", "9223372036854775808", "2**63 - 1")),
    render_row("negative_seed", "--seed", "-5", frag=("--seed", "got -5", "0 .. 2**63 - 1")),
    render_row("every_without_gif", "--every", "2", frag=("--every", "give --gif too")),
    # --- devices -----------------------------------------------------------------------------------------
    render_row("device_xyz", "--device", "xyz", frag=("'xyz'", "not a device", "cpu, cuda or cuda:N")),
    render_row("device_meta", "--device", "meta", frag=("--device meta", "no values", "cpu or cuda")),
    render_row("device_cuda_99", "--device", "cuda:99", frag=("cuda:99", "cpu" if NO_GPU else "cuda:0 ..")),
    *([render_row("device_cuda_without_a_gpu", "--device", "cuda", frag=("'cuda'", "no usable CUDA GPU", "--device cpu"))]
      if NO_GPU else []),
    # --- models render cannot drive ---------------------------------------------------------------------------
    render_row("float16_model", model="half", frag=("torch.float16", "float32", "model.float()")),
    render_row("float64_model", model="double", frag=("torch.float64", "model.float()")),
    render_row("meta_device_model", model="meta", frag=("meta device", "load its weights", "to_empty")),
    render_row("forward_needs_a_second_argument", model="two_args", frag=("forward(x, mask)", "2 arguments", "wrap it")),
    render_row("torch_jit_script_model", model="scripted", frag=("TorchScript", "torch.jit.script", "original nn.Module")),
    render_row("torch_jit_trace_model", model="traced", frag=("TorchScript", "torch.jit.trace", "original nn.Module")),
    render_row("grayscale_model_without_model_info", model="grey",
               frag=("1 channel(s)", "feeds it 3", "ModelInfo(channels=1)")),
    # --- output files ------------------------------------------------------------------------------------
    render_row("out_with_an_unknown_extension", "--out", "{tmp}/out.bmp", frag=("out.bmp", "'.bmp'", ".png, .jpg")),
    render_row("out_is_a_folder", "--out", "{tmp}", frag=("is a folder", "give a file name")),
    render_row("out_under_a_file", "--out", "{tmp}/photo.png/out.png", frag=("photo.png", "is a file", "no folder"),
               setup=image_file("photo.png")),
    render_row("gif_and_out_are_one_file", "--gif", "{tmp}/same.png", "--out", "{tmp}/same.png",
               frag=("--gif and --out are both", "same.png", "two names")),
    render_row("gif_without_the_gif_extension", "--gif", "{tmp}/anim.png", frag=("anim.png", "ending in .gif")),
    # --- input images -----------------------------------------------------------------------------------
    R("caricature_of_a_decompression_bomb", "caricature", "{tmp}/bomb.png", "--model", "{models}:tiny", *FAST_CLI,
      "--out", "{tmp}/c.png", frag=("bomb.png", "13000 x 13000", "million pixels", "shrink it"), setup=image_file("bomb.png")),
    R("accentuate_of_a_decompression_bomb", "accentuate", "{tmp}/bomb.png", OBJ, "--model", "{models}:tiny", *FAST_CLI,
      "--out", "{tmp}/c.png", frag=("13000 x 13000", "MAX_IMAGE_PIXELS"), setup=image_file("bomb.png")),
    R("caricature_of_a_32_bit_tiff", "caricature", "{tmp}/deep.tif", "--model", "{models}:tiny", "--layers", "0",
      *FAST_CLI, "--out", "{tmp}/c.png", frag=("32-bit integer", "[0, 70000]", "16 bits"), setup=image_file("deep.tif")),
    R("caricature_of_a_cut_png", "caricature", "{tmp}/cut.png", "--model", "{models}:tiny", "--layers", "0", *FAST_CLI,
      "--out", "{tmp}/c.png", frag=("cut.png", "cannot read"), setup=image_file("cut.png")),
    R("recipe_png_that_is_cut_short", "render", "--recipe", "{tmp}/cut.png", "-q", frag=("cut.png", "damaged PNG"),
      setup=image_file("cut.png")),
    R("render_image_without_recipe", "render", OBJ, "--image", "{tmp}/photo.png", "--model", "{models}:tiny", *FAST_CLI,
      frag=("--image", "give --recipe too"), setup=image_file("photo.png")),
    # --- atlases -----------------------------------------------------------------------------------------
    atlas_row("atlas_channels_far_past_the_layer", "--channels", "0:100000000", frag=("'0:100000000'", "8 is out of range", "8 channels")),
    atlas_row("atlas_channels_past_ten_billion", "--channels", "0:10000000000", frag=("8 is out of range", "(0..7)")),
    atlas_row("atlas_one_channel_past_the_layer", "--channels", "3,99", frag=("99 is out of range", "8 channels")),
    atlas_row("atlas_batch_above_the_cap", "--batch", "100000", frag=("batch 100000", "cap of 256")),
    atlas_row("atlas_out_is_a_file", "--out", "{tmp}/photo.png", frag=("photo.png", "is a file, not a folder"),
              setup=image_file("photo.png")),
    atlas_row("atlas_with_a_stray_world_size", frag=("WORLD_SIZE=2", "not started by torchrun", "unset WORLD_SIZE"),
              env=(("WORLD_SIZE", "2"), ("RANK", "0"))),
    atlas_row("atlas_folder_held_by_another_run", "--channels", "0:2", model="seeded",
              frag=("is being written by another lucent-dsl atlas run", f"pid {os.getpid()}", "another --out"),
              setup=atlas_first(then="lock")),
    atlas_row("atlas_resume_with_a_damaged_png", "--channels", "0:2", model="seeded",
              frag=("0_0001.png", "damaged PNG", "delete it and run the same command again"), setup=atlas_first(then="corrupt")),
    atlas_row("atlas_resume_with_other_weights", "--channels", "0:2", model="seeded",
              frag=("0_0000.png", "other weights", "fingerprint", "another --out"), setup=atlas_first(then="reweight")),
]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_tables_hold_at_least_100_bad_inputs():
    assert len(ROWS) + len(CLI_ROWS) >= 100
    assert len({r.id for r in ROWS} | {r.id for r in CLI_ROWS}) == len(ROWS) + len(CLI_ROWS)


@pytest.mark.parametrize("row", CLI_ROWS, ids=[r.id for r in CLI_ROWS])
def test_bad_command_line_is_refused_before_any_step(row: CliRow, models_file: Path, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with contextlib.ExitStack() as stack:
        held = row.setup(tmp_path, models_file) if row.setup else None
        if hasattr(held, "__enter__"):
            stack.enter_context(held)
        for key, value in row.env:
            monkeypatch.setenv(key, value)
        before = _files(tmp_path)
        capsys.readouterr()
        steps = []
        for opt in (torch.optim.Adam, torch.optim.SGD):
            real = opt.step
            monkeypatch.setattr(opt, "step", lambda self, *a, _real=real, **k: steps.append(1) or _real(self, *a, **k))
        argv = [a.replace("{models}", str(models_file)).replace("{tmp}", str(tmp_path)) for a in row.argv]
        code = cli.main(argv)
        out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in row.fragments:
        assert fragment in lines[0], f"{fragment!r} not in: {lines[0]}"
    assert "unexpected" not in err and out == ""
    assert steps == [], "an optimizer step ran"
    after = _files(tmp_path)
    for files in (before, after):
        files.pop("atl/.lucent_dsl.lock", None)  # held by the row's own setup
    assert after == before  # nothing written, nothing changed
    assert not models_file.with_name("PWNED").exists(), "a recipe ran code"


@pytest.mark.parametrize("channels", [1, 4])
def test_a_model_that_reads_other_colour_channels_is_refused_at_compile_time_with_the_fix(channels):
    """A grayscale (or RGBA) model given no ModelInfo: refused before any step, naming ModelInfo(channels=...)."""
    net = nn.Sequential(nn.Conv2d(channels, 4, 3), nn.ReLU())
    with pytest.raises(ld.InvalidArgumentError, match=rf"reads {channels} colour channel.*ModelInfo\(channels={channels}\)"):
        ld.compile_plan(ld.channel("0", 1), net)
    r = ld.render(ld.channel("0", 1), ld.with_info(net, ld.ModelInfo(channels=channels)),
                  param=ld.param.fft(12, channels=channels), steps=1, progress=False)
    assert r.images.shape[1] == channels

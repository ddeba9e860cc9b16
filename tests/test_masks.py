"""masked(): spatial masks on maps and token grids, dict outputs selected by key, in plans and truncation."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from models import DictOut, TinyViT, TripwireError, hook_count
from torch import Tensor, nn

import lucent_dsl as ld
from lucent_dsl import render
from lucent_dsl.dsl.expr import Array, Site, evaluate
from lucent_dsl.dsl.printing import to_text
from lucent_dsl.dsl.serialize import from_json, to_json
from lucent_dsl.errors import InvalidArgumentError, ObjectiveShapeError
from lucent_dsl.models.info import ModelInfo, with_info
from lucent_dsl.objectives.masks import Masked, box_mask, masked

N_SEG = 4  # classes of the tiny segmentation model


class Backbone(nn.Module):
    """Returns a dict, like torchvision's IntermediateLayerGetter: {"low": stride 1, "high": stride 2}."""

    def __init__(self):
        super().__init__()
        self.low = nn.Conv2d(3, 6, 3, padding=1)
        self.high = nn.Conv2d(6, 8, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        low = torch.relu(self.low(x))
        return {"low": low, "high": torch.relu(self.high(low))}


class TinySeg(nn.Module):
    """A segmentation net with torchvision's interface: OrderedDict(out=(B, K, H, W), aux=(B, K, H/2, W/2))."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.backbone = Backbone()
        self.classifier = nn.Conv2d(8, N_SEG, 1)
        self.aux_classifier = nn.Conv2d(8, N_SEG, 1)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        f = self.backbone(x)
        out = F.interpolate(self.classifier(f["high"]), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return OrderedDict(out=out, aux=self.aux_classifier(f["high"]))


def _trip(module: nn.Module, args: object) -> None:
    raise TripwireError("a layer past the deepest needed one ran")


def scores(e: ld.Expr, model: nn.Module, x: Tensor, **kw) -> Tensor:
    plan = ld.compile_plan(e, model, **kw)
    return evaluate(plan.objective, plan.forward(x), x.shape[0])


# --- masks --------------------------------------------------------------------------------------------


def test_box_mask_is_the_exact_covered_fraction():
    m = box_mask((0.1, 0.0, 0.6, 0.5), 4, 5)
    assert m.shape == (4, 5)
    assert torch.allclose(m.sum(), torch.tensor(0.5 * 0.5 * 20))
    assert torch.allclose(m[0], torch.tensor([0.5, 1.0, 1.0, 0.0, 0.0]))  # x in [0.1, 0.6]: half of cell 0
    assert torch.equal(m[2:], torch.zeros(2, 5))


def test_masked_channel_on_maps_is_the_region_mean():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)).eval()
    x = torch.rand(2, 3, 6, 8)
    a = net(x)[:, 1]
    box = (0.0, 0.0, 0.5, 1.0)  # the left half: columns 0..3
    got = scores(masked(ld.channel("0", 1), box), net, x)
    assert torch.allclose(got, a[:, :, :4].mean((1, 2)), atol=1e-6)
    got_raw = scores(masked(ld.channel("0", 1), box, normalize=False), net, x)
    assert torch.allclose(got_raw, a[:, :, :4].sum((1, 2)) / 48, atol=1e-6)

    soft = torch.rand(6, 8)
    got_soft = scores(masked(ld.channel("0", 1), soft), net, x)
    assert torch.allclose(got_soft, (a * soft).sum((1, 2)) / soft.sum(), atol=1e-5)


def test_tensor_mask_is_resized_to_each_activation():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 2, stride=2)).eval()
    x = torch.rand(1, 3, 8, 8)
    top = torch.zeros(16, 16)
    top[:8] = 1.0  # the top half, at 4x the resolution of the 4x4 map
    a = net(x)[:, 2]
    got = scores(masked(ld.channel("1", 2), top), net, x)
    assert torch.allclose(got, a[:, :2].mean((1, 2)), atol=1e-5)


def test_masked_tokens_use_the_patch_grid_and_leave_out_cls():
    vit = TinyViT().eval()  # 1 CLS + a 4x4 grid of patch tokens, 8 channels
    x = torch.rand(2, 3, 8, 8)
    acts, _ = _all(vit, x)
    t = acts["blocks.1"]  # (2, 17, 8)
    grid = t[:, 1:].reshape(2, 4, 4, 8)
    box = (0.5, 0.0, 1.0, 0.5)  # top-right quadrant: rows 0..1, columns 2..3
    got = scores(masked(ld.channel("blocks.1", 3), box), vit, x)
    assert torch.allclose(got, grid[:, :2, 2:, 3].mean((1, 2)), atol=1e-5)
    # with normalize=False, a neuron outside the region reads 0 and one inside reads itself
    outside = scores(masked(ld.neuron("blocks.1", 3, x=0, y=3), box, normalize=False), vit, x)
    inside = scores(masked(ld.neuron("blocks.1", 3, x=3, y=0), box, normalize=False), vit, x)
    assert torch.equal(outside, torch.zeros(2))
    assert torch.allclose(inside, grid[:, 0, 3, 3])
    assert torch.equal(scores(masked(ld.neuron("blocks.1", 3, token=0), box), vit, x), torch.zeros(2))


def _all(model: nn.Module, x: Tensor):
    from models import all_hook_outputs

    return all_hook_outputs(model, x)


def test_vectors_and_bad_token_counts_raise():
    vit = TinyViT().eval()
    with pytest.raises(ObjectiveShapeError, match="no\\s+positions to mask"):
        scores(masked(ld.channel("head", 1), (0, 0, 1, 1)), vit, torch.rand(1, 3, 8, 8))
    m = Masked(ld.channel("t", 0), (0.0, 0.0, 1.0, 1.0))
    with pytest.raises(ObjectiveShapeError, match="square"):
        m.score({Site(None, "t"): torch.rand(1, 7, 3)}, 1)


def test_gradient_stays_inside_the_region():
    net = nn.Sequential(nn.Conv2d(3, 4, 1)).eval()  # 1x1: no spatial mixing
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    plan = ld.compile_plan(masked(ld.channel("0", 0), (0.25, 0.25, 0.75, 0.75)), net)
    plan.loss(plan.forward(x), 1).backward()
    g = x.grad.abs().sum(1)[0]
    assert bool((g[2:6, 2:6] > 0).all())
    g[2:6, 2:6] = 0
    assert torch.equal(g, torch.zeros(8, 8))


# --- values: repr, parse, JSON, binding ---------------------------------------------------------------


def test_round_trips_and_hashing():
    soft = torch.rand(3, 5)
    for e in (
        masked(ld.class_logit(16, layer="@output/out"), (0.25, 0.25, 0.75, 0.75)),
        masked(ld.channel("a", 1) - 0.5 * ld.neuron("b", 2, x=1), soft, normalize=False) + ld.channel("c", 0),
        masked(masked(ld.direction("a", [1.0, -1.0]), (0, 0, 1, 0.5)), soft),
    ):
        assert ld.parse(to_text(e)) == e  # 15 random floats: past repr's 400 characters, which abbreviate
        assert hash(ld.parse(to_text(e))) == hash(e)
        assert from_json(to_json(e)) == e
    assert masked(ld.channel("a", 1), soft) == masked(ld.channel("a", 1), soft.clone())
    assert masked(ld.channel("a", 1), soft[None]) == masked(ld.channel("a", 1), soft)  # (1, H, W) is (H, W)
    assert isinstance(masked(ld.channel("a", 1), soft).mask, Array)
    assert masked(ld.sum_of([2.0]), soft) == ld.sum_of([2.0])


@pytest.mark.parametrize("mask", [(0.5, 0, 0.5, 1), (0, 0, 1.2, 1), (0, 0, 1), "left", None,
                                  torch.full((2, 2), 2.0), torch.zeros(3, 3), torch.ones(2, 2, 2)])
def test_bad_masks_raise(mask):
    with pytest.raises(InvalidArgumentError):
        masked(ld.channel("a", 1), mask)


def test_bad_arguments_raise():
    with pytest.raises(InvalidArgumentError, match="wraps an objective"):
        masked("channel('a', 1)", (0, 0, 1, 1))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="normalize"):
        masked(ld.channel("a", 1), (0, 0, 1, 1), normalize=1)  # type: ignore[arg-type]


def test_plan_binds_the_inner_terms():
    a, b = TinySeg(0), TinySeg(1)
    e = masked(ld.class_logit("plant", layer="@output/out", model="b"), (0, 0, 0.5, 0.5))
    with_info(b, ModelInfo(labels=("bg", "cat", "plant", "sky")))
    plan = ld.compile_plan(e, {"a": a, "b": b})
    assert set(plan.models) == {"b"}
    assert plan.sites == (Site("b", "@output/out"),)
    assert plan.objective == masked(ld.class_logit(2, layer="@output/out", model="b"), (0, 0, 0.5, 0.5))
    with pytest.raises(ld.AmbiguousModelError):
        ld.compile_plan(masked(ld.channel("classifier", 1), (0, 0, 1, 1)), {"a": a, "b": b})
    with pytest.raises(ld.LayerNotFoundError):
        ld.compile_plan(masked(ld.channel("classifer", 1), (0, 0, 1, 1)), a)


def test_batched_assigns_images_inside_masks():
    e = ld.batched([masked(ld.channel("x", 0), (0, 0, 0.5, 1)), masked(ld.channel("x", 0), (0.5, 0, 1, 1))])
    assert e == (masked(ld.channel("x", 0, batch=0), (0, 0, 0.5, 1)) + masked(ld.channel("x", 0, batch=1), (0.5, 0, 1, 1)))


# --- dict outputs: selection by key in the plan and in truncation ---------------------------------------


def test_class_logit_selects_the_out_key():
    seg = TinySeg().eval()
    x = torch.rand(2, 3, 8, 12)
    out = seg(x)["out"]
    got = scores(masked(ld.class_logit(3, layer="@output/out"), (0.5, 0.5, 1.0, 1.0)), seg, x)
    assert torch.allclose(got, out[:, 3, 4:, 6:].mean((1, 2)), atol=1e-6)
    aux = scores(ld.channel("@output/aux", 1), seg, x)
    assert torch.allclose(aux, seg(x)["aux"][:, 1].mean((1, 2)), atol=1e-6)
    with pytest.raises(ObjectiveShapeError, match="keys"):
        scores(ld.class_logit(3), seg, x)  # a dict output needs '/out'


@pytest.mark.parametrize("truncate", ["fx", "hooks"])
def test_inner_dict_layer_is_selected_and_truncated(truncate):
    seg = TinySeg().eval()
    x = torch.rand(2, 3, 8, 12)
    want = seg.backbone(x)
    seg.classifier.register_forward_pre_hook(_trip)  # nothing after the backbone may run
    seg.aux_classifier.register_forward_pre_hook(_trip)
    e = ld.channel("backbone/high", 5) + masked(ld.channel("backbone/low", 2), (0, 0, 0.5, 1))
    plan = ld.compile_plan(e, seg, truncate=truncate)
    assert plan.sites == (Site("model", "backbone/high"), Site("model", "backbone/low"))
    acts = plan.forward(x)
    torch.testing.assert_close(acts[Site("model", "backbone/high")], want["high"])  # fx runs channels-last
    got = evaluate(plan.objective, acts, 2)
    ref = want["high"][:, 5].mean((1, 2)) + want["low"][:, 2, :, :6].mean((1, 2))
    assert torch.allclose(got, ref, atol=1e-6)
    assert hook_count(seg) == 0
    with pytest.raises(TripwireError):
        seg(x)


def test_dict_out_model_inner_key_in_hooks_and_fx():
    m = DictOut().eval()
    x = torch.rand(1, 3, 10, 14)
    for truncate in ("fx", "hooks"):
        got = scores(masked(ld.channel("inner/feat", 4), (0, 0, 1, 0.5)), m, x, truncate=truncate)
        assert torch.allclose(got, m.inner(x)["feat"][:, 4, :5].mean((1, 2)), atol=1e-6)


def test_render_raises_a_masked_class_logit():
    seg = TinySeg().eval()
    e = masked(ld.class_logit(1, layer="@output/out"), (0.25, 0.25, 0.75, 0.75))
    r = render(e, seg, size=16, steps=12, lr=0.1, transforms=[], progress=False)
    h = r.history[repr(e)][:, 0]
    assert h[-1] > h[0]


@pytest.mark.compile
def test_masked_compiles_in_one_graph():
    seg = TinySeg().eval()
    plan = ld.compile_plan(masked(ld.class_logit(1, layer="@output/out"), torch.rand(4, 4)), seg)
    step = torch.compile(lambda x: plan.loss(plan.forward(x), 1), fullgraph=True)
    x = torch.rand(1, 3, 8, 8)
    assert torch.allclose(step(x), plan.loss(plan.forward(x), 1), atol=1e-5)
    with torch.compiler.set_stance("fail_on_recompile"):
        step(torch.rand(1, 3, 8, 8))


# --- the example --------------------------------------------------------------------------------------


def _example():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "segmentation.py"
    spec = importlib.util.spec_from_file_location("segmentation_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_segmentation_example_runs_end_to_end(tmp_path, capsys):
    pytest.importorskip("torchvision")
    out = tmp_path / "seg.png"
    e = _example().main(["--steps", "2", "--size", "48", "--out", str(out)])
    assert e == masked(ld.class_logit(16, layer="@output/out"), (0.25, 0.25, 0.75, 0.75)) - 0.01 * ld.total_variation()
    assert out.exists()
    assert "masked(class_logit(16" in capsys.readouterr().out


def test_segmentation_example_loads_named_weights(monkeypatch):
    """`--weights DEFAULT` goes through torchvision's weights API (the download itself is faked here)."""
    torchvision = pytest.importorskip("torchvision")
    from torchvision.models._api import WeightsEnum

    example = _example()
    state = torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None).state_dict()
    asked = []
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, *a, **k: asked.append(self) or state)
    model = example.load("lraspp", "DEFAULT")
    assert asked == [torchvision.models.segmentation.LRASPP_MobileNet_V3_Large_Weights.DEFAULT]
    assert ld.info_of(model).labels[16] == "pottedplant"
    assert (ld.compile_plan(ld.class_logit("pottedplant", layer="@output/out"), model).objective
            == ld.class_logit(16, layer="@output/out", model="model"))

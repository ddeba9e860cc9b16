"""Vision transformers: (B, tokens, C) activations, channels last, neuron x/y on the patch grid after CLS."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from models import TripwireError
from torch import Tensor, nn

import lucent_dsl as ld
from lucent_dsl import render
from lucent_dsl.dsl.expr import Site, evaluate
from lucent_dsl.errors import ObjectiveShapeError


class Block(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(x)


class ViT(nn.Module):
    """12x12 images, 3x3 patches: a 4x4 grid (16 patch tokens), after one CLS token if `cls`."""

    def __init__(self, *, cls: bool = True, dim: int = 12, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.patch = nn.Conv2d(3, dim, 3, stride=3)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.1) if cls else None
        self.pos = nn.Parameter(torch.randn(1, 16 + int(cls), dim) * 0.1)
        self.blocks = nn.Sequential(Block(dim), Block(dim))
        self.head = nn.Linear(dim, 5)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, size=(12, 12), mode="bilinear", align_corners=False)
        t = self.patch(x).flatten(2).transpose(1, 2)
        if self.cls is not None:
            t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1)
        t = self.blocks(t + self.pos)
        return self.head(t[:, 0])


def probe(model: nn.Module, layer: str, x: Tensor, terms: dict[str, ld.Expr], *,
          before_forward=None) -> tuple[Tensor, dict[str, Tensor]]:
    """One truncated forward: the activation at `layer` and every term's per-image score on it."""
    plan = ld.compile_plan(ld.sum_of(terms.values()), model)
    if before_forward is not None:
        before_forward(plan)
    with torch.no_grad():
        acts = plan.forward(x)
    bound = dict(zip(terms, ld.dsl.expr.top_terms(plan.objective)))
    return acts[Site("model", layer)], {k: evaluate(t, acts, x.shape[0]) for k, t in bound.items()}


def token_terms(layer: str, c: int, vec: Tensor) -> dict[str, ld.Expr]:
    return {
        "channel": ld.channel(layer, c),
        "cls": ld.neuron(layer, c, token=0),
        "token5": ld.neuron(layer, c, token=5),
        "xy": ld.neuron(layer, c, x=3, y=1),
        "centre": ld.neuron(layer, c),
        "direction": ld.direction(layer, vec),
        "direction_cos": ld.direction(layer, vec, cossim_pow=1.0),
        "direction_cls": ld.direction_neuron(layer, vec, token=0),
        # one-hot weights: the weighted terms read the same positions as channel/neuron (a prefix dropped for the
        # mean must not shift the position a neuron_weight indexes)
        "weight_channel": ld.channel_weight(layer, [float(i == c) for i in range(len(vec))]),
        "weight_xy": ld.neuron_weight(layer, [float(i == c) for i in range(len(vec))], x=3, y=1),
        "weight_cls": ld.neuron_weight(layer, [float(i == c) for i in range(len(vec))], token=0),
    }


def check_against_indexing(a: Tensor, s: dict[str, Tensor], c: int, vec: Tensor, side: int, offset: int,
                           mean_from: int) -> None:
    """Every score equals the same quantity computed by hand, with the channel on the last axis; means run over the
    tokens from `mean_from` on (the patch tokens where the layout knows the prefix, else every token)."""
    grid = a[:, offset:].reshape(a.shape[0], side, side, a.shape[2])  # (B, rows, cols, C)
    assert torch.allclose(s["channel"], a[:, mean_from:, c].mean(1), atol=1e-5)
    assert torch.allclose(s["cls"], a[:, 0, c])
    assert torch.allclose(s["token5"], a[:, 5, c])
    assert torch.allclose(s["xy"], grid[:, 1, 3, c])  # y is the row, x the column
    assert torch.allclose(s["centre"], grid[:, side // 2, side // 2, c])
    dot = a @ vec
    assert torch.allclose(s["direction"], dot[:, mean_from:].mean(1), atol=1e-4)
    cos = dot / (a.norm(dim=2) + 1e-6) / (vec.norm() + 1e-6)
    assert torch.allclose(s["direction_cos"], (dot * cos.clamp(min=0.1))[:, mean_from:].mean(1), atol=1e-4)
    assert torch.allclose(s["direction_cls"], dot[:, 0], atol=1e-5)
    n_channels = a.shape[2]  # channel_weight and neuron_weight average over the channels: w . a / C
    assert torch.allclose(s["weight_channel"] * n_channels, a[:, mean_from:, c].mean(1), atol=1e-5)
    assert torch.allclose(s["weight_xy"] * n_channels, grid[:, 1, 3, c], atol=1e-5)
    assert torch.allclose(s["weight_cls"] * n_channels, a[:, 0, c], atol=1e-5)


def test_tiny_vit_terms_match_manual_indexing():
    vit = ViT().eval()
    x = torch.rand(3, 3, 12, 12)
    vec = torch.randn(12)
    a, s = probe(vit, "blocks.0", x, token_terms("blocks.0", 7, vec))
    assert a.shape == (3, 17, 12)
    # The model resizes its input inside: its tokens do not follow the input size, so the prefix is not known
    # (x/y assume one CLS token) and means run over every token.
    check_against_indexing(a, s, 7, vec, side=4, offset=1, mean_from=0)


def test_grid_without_cls_starts_at_token_zero():
    vit = ViT(cls=False).eval()
    x = torch.rand(2, 3, 12, 12)
    a, s = probe(vit, "blocks.1", x, {"xy": ld.neuron("blocks.1", 2, x=0, y=0), "last": ld.neuron("blocks.1", 2, x=3, y=3)})
    assert a.shape == (2, 16, 12)
    assert torch.equal(s["xy"], a[:, 0, 2])
    assert torch.equal(s["last"], a[:, 15, 2])


def test_positions_and_channels_out_of_range_raise():
    vit = ViT().eval()
    x = torch.rand(1, 3, 12, 12)
    for e, match in [(ld.neuron("blocks.0", 2, x=4), "outside"), (ld.neuron("blocks.0", 2, token=17), "tokens"),
                     (ld.channel("blocks.0", 12), "channels"), (ld.direction("blocks.0", [1.0] * 11), "values")]:
        plan = ld.compile_plan(e, vit)
        with pytest.raises(ObjectiveShapeError, match=match):
            evaluate(plan.objective, plan.forward(x), 1)


class Rank5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.video = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.video(self.conv(x).unsqueeze(2)).mean((2, 3, 4))  # (B, C, 1, H, W) at `video`


@pytest.mark.parametrize("term", [ld.channel("video", 1), ld.neuron("video", 1), ld.direction("video", [1.0] * 4),
                                  ld.neuron("video", 1, token=0)])
def test_wrong_layout_raises(term):
    net = Rank5().eval()
    plan = ld.compile_plan(term, net)
    acts = plan.forward(torch.rand(1, 3, 8, 8))
    assert acts[Site("model", "video")].dim() == 5
    with pytest.raises(ObjectiveShapeError, match="supported layouts"):
        evaluate(plan.objective, acts, 1)


def test_non_square_token_count_needs_token():
    bad = torch.rand(1, 7, 4)  # 7 tokens: neither a square nor a square plus one CLS
    with pytest.raises(ObjectiveShapeError, match="square"):
        ld.neuron("t", 0).score({Site(None, "t"): bad}, 1)
    assert torch.equal(ld.neuron("t", 0, token=6).score({Site(None, "t"): bad}, 1), bad[:, 6, 0])


def test_render_on_a_tiny_vit_raises_the_objective():
    vit = ViT().eval()
    e = ld.neuron("blocks.1", 4, x=1, y=2) + ld.channel("blocks.1", 4)
    r = render(e, vit, size=24, steps=20, lr=0.1, transforms=[], progress=False)
    total = sum(h[:, 0] for h in r.history.values())
    assert total[-1] > total[0] + 0.1


def test_torchvision_vit_b_16_one_truncated_probe():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    vit = torchvision.models.vit_b_16(weights=None).eval()
    layer = "encoder.layers.encoder_layer_1"
    vec = torch.randn(768)

    def check_cut(plan: ld.Plan) -> None:
        assert "fx graph cut after encoder.layers.encoder_layer_1" in str(plan)
        # Later layers are not in the traced graph: a tripwire on the next block never fires.
        vit.encoder.layers.encoder_layer_2.register_forward_pre_hook(_trip)

    a, s = probe(vit, layer, torch.rand(1, 3, 224, 224), token_terms(layer, 100, vec), before_forward=check_cut)
    assert a.shape == (1, 197, 768)  # CLS + a 14x14 grid, channels last
    check_against_indexing(a, s, 100, vec, side=14, offset=1, mean_from=1)  # the CLS token is known: not averaged
    with pytest.raises(TripwireError), torch.no_grad():
        vit(torch.rand(1, 3, 224, 224))  # the tripwire is armed: an untruncated forward reaches it


def _trip(module: nn.Module, args: object) -> None:
    raise TripwireError("ran past the deepest needed layer")


# --- prefix tokens, fixed sizes, token grids that follow the input (issue 15) ---------------------------------


class PrefixViT(nn.Module):
    """A fixed-size ViT (its position embedding fits 24x24 images only) with `prefix` tokens before an 8x8 grid:
    CLS, a distillation token, registers."""

    def __init__(self, prefix: int, dim: int = 12, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.patch = nn.Conv2d(3, dim, 3, stride=3)
        self.prefix = nn.Parameter(torch.randn(1, prefix, dim) * 0.1)
        self.pos = nn.Parameter(torch.randn(1, 64, dim) * 0.1)
        self.blocks = nn.Sequential(Block(dim), Block(dim))
        self.head = nn.Linear(dim, 5)

    def forward(self, x: Tensor) -> Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2) + self.pos  # 24x24 only
        t = torch.cat([self.prefix.expand(t.shape[0], -1, -1), t], dim=1)
        return self.head(self.blocks(t)[:, 0])


@pytest.mark.parametrize("prefix", [0, 1, 2, 5])
def test_any_number_of_prefix_tokens_is_found_and_x_y_index_the_grid_after_them(prefix):
    vit = ld.with_info(PrefixViT(prefix).eval(), ld.ModelInfo(input_size=(24, 24)))
    plan = ld.compile_plan(ld.neuron("blocks.0", 4, x=3, y=1) + ld.channel("blocks.0", 4), vit)
    lay = plan.layouts[Site("model", "blocks.0")]
    assert (lay.prefix, lay.grid) == (prefix, (8, 8)), lay
    x = torch.rand(2, 3, 24, 24)
    with torch.no_grad():
        acts = plan.forward(x)
        ref = vit.blocks[0](torch.cat([vit.prefix.expand(2, -1, -1),
                                       vit.patch(x).flatten(2).transpose(1, 2) + vit.pos], 1))
    xy, ch = (evaluate(t, acts, 2) for t in ld.dsl.expr.top_terms(plan.objective))
    torch.testing.assert_close(xy, ref[:, prefix:].reshape(2, 8, 8, 12)[:, 1, 3, 4])
    torch.testing.assert_close(ch, ref[:, prefix:, 4].mean(1))  # the patch tokens: prefix tokens are not averaged


def test_timm_prefix_tokens_come_from_the_model():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    for name, prefix in (("deit_tiny_distilled_patch16_224", 2), ("vit_small_patch14_reg4_dinov2", 5)):
        model = timm.create_model(name, pretrained=False, img_size=56 if "dinov2" in name else 64).eval()
        plan = ld.compile_plan(ld.neuron("blocks.1", 3, x=0, y=1), model)
        lay = plan.layouts[Site("model", "blocks.1")]
        g = model.patch_embed.grid_size
        assert (lay.prefix, lay.grid, lay.source) == (prefix, tuple(g), "model")
        x = torch.rand(1, 3, *model.patch_embed.img_size)
        with torch.no_grad():
            got = evaluate(plan.objective, plan.forward(x), 1)
        seen = []
        h = model.blocks[1].register_forward_hook(lambda m, i, o, seen=seen: seen.append(o))
        with torch.no_grad():
            model(ld.info_of(model).preprocess(x))  # timm's pretrained_cfg normalization, as the plan applies it
        h.remove()
        torch.testing.assert_close(got, seen[0][:, prefix:].reshape(1, g[0], g[1], -1)[:, 1, 0, 3])


def test_a_dynamic_size_vit_finds_its_grid_at_every_render_size():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, dynamic_img_size=True, img_size=64).eval()
    plan = ld.compile_plan(ld.neuron("blocks.0", 2, x=4, y=1), model)
    assert str(plan.infos["model"].input_geometry) == "multiples of 16"
    x = torch.rand(1, 3, 48, 96)  # 3 x 6 patches: not the probe's grid, not square
    with torch.no_grad():
        got = evaluate(plan.objective, plan.forward(x), 1)
    seen = []
    h = model.blocks[0].register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        model(ld.info_of(model).preprocess(x))  # timm's pretrained_cfg normalization, as the plan applies it
    h.remove()
    torch.testing.assert_close(got, seen[0][:, 1:].reshape(1, 3, 6, -1)[:, 1, 4, 2])


def test_a_vit_and_a_convnet_render_one_image_each_at_its_own_size():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    vit = torchvision.models.vit_b_32(image_size=64).eval()  # 64 px only
    conv = torchvision.models.resnet18().eval()
    seen: dict[str, tuple] = {}
    vit.conv_proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("vit", tuple(a[0].shape[-2:])))
    conv.conv1.register_forward_pre_hook(lambda m, a: seen.__setitem__("conv", tuple(a[0].shape[-2:])))
    e = ld.channel("encoder.layers.encoder_layer_2", 5, model="vit") + ld.channel("layer2", 3, model="conv")
    r = render(e, {"vit": vit, "conv": conv}, size=80, steps=2, progress=False,
               preset="lucid")  # standard transforms: 104 px
    assert r.steps == 2 and seen == {"vit": (64, 64), "conv": (104, 104)}

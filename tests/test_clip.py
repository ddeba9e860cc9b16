"""CLIP-like models (issue 25, part B): open_clip towers under the architecture law, CLIP models through their image
tower (names kept, embedding = encode_image), `clip_text` (the cosine by hand, DSL/JSON round trips, algebra,
renders, refusals) and `open_clip:` specs with their trust rule. Random weights from tiny configs, offline."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import nn

import lucent_dsl as ld
from lucent_dsl.dsl.expr import OUTPUT, Site
from lucent_dsl.errors import InvalidArgumentError, ObjectiveShapeError
from lucent_dsl.models import clip, openclip, specs
from lucent_dsl.models.info import PreprocessingWarning, weights_state
from lucent_dsl.record import trust

open_clip = pytest.importorskip("open_clip")
import test_architectures as A  # noqa: E402 - the conformance law, after the skip

PROMPTS = ("a photo of a dog", "a photo of a cat")
OUT = Site("model", OUTPUT)


def tiny_open_clip(kind: str = "vit", *, cfg: bool = True, seed: int = 0) -> nn.Module:
    """A CLIP with open_clip's BPE text tower (vocab 49408, 77 tokens): a 32 px ViT or a 64 px ModifiedResNet."""
    vision = (dict(layers=2, width=32, head_width=16, patch_size=8, image_size=32) if kind == "vit"
              else dict(layers=(1, 1, 1, 1), width=8, head_width=16, image_size=64))
    torch.manual_seed(seed)
    model = open_clip.CLIP(16, vision, dict(width=32, heads=2, layers=1)).eval()
    if cfg:  # what open_clip.create_model attaches
        open_clip.model.set_model_preprocess_cfg(model, {"size": model.visual.image_size, "mean": (0.4, 0.5, 0.6),
                                                         "std": (0.2, 0.3, 0.25), "interpolation": "bicubic"})
    return model


def cosine(model: nn.Module, image: torch.Tensor, prompt: str) -> torch.Tensor:
    """The text term by hand: open_clip's own tokenizer, encode_image on the preprocessed image."""
    with torch.no_grad():
        x = ld.info_of(clip.clip_image(model)).preprocess(image)
        text = model.encode_text(open_clip.get_tokenizer("ViT-B-32")([prompt]))
        return F.cosine_similarity(model.encode_image(x), text)


# --- open_clip towers under the architecture law -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_open_clip_towers_obey_the_architecture_law(kind, monkeypatch):
    monkeypatch.setitem(A.PREFIX, "open_clip_vit", lambda site: 1)  # the CLS token, before the patch grid
    A.conformance(tiny_open_clip(kind).visual, "open_clip_vit" if kind == "vit" else "open_clip_resnet", monkeypatch)


def test_a_tower_alone_runs_with_what_it_declares_and_is_not_changed():
    tower = tiny_open_clip("vit").visual
    plan = ld.compile_plan(ld.channel("transformer.resblocks.1", 0), tower)
    info = plan.infos["model"]
    assert (info.mean, info.std, info.input_size) == ((0.4, 0.5, 0.6), (0.2, 0.3, 0.25), (32, 32))
    lay = plan.layouts[Site("model", "transformer.resblocks.1")]
    assert (lay.kind, lay.prefix) == ("tokens", 1)
    assert plan.models["model"] is not tower and "lucent_info" not in tower.__dict__
    assert dict(plan.models["model"].named_parameters()).keys() == dict(tower.named_parameters()).keys()


def test_a_tower_without_a_preprocess_cfg_warns_and_gets_open_clips_default():
    tower = tiny_open_clip("resnet", cfg=False).visual
    tower.image_mean = tower.image_std = None
    with pytest.warns(PreprocessingWarning, match="no preprocess_cfg"):
        info = openclip.declared_info(tower)
    assert info is not None and info.mean == openclip.OPENAI_MEAN and info.input_size == (64, 64)


# --- CLIP models through their image tower ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_the_image_tower_keeps_names_and_gives_encode_image(kind):
    model = tiny_open_clip(kind)
    before = weights_state(model)
    wrapper = clip.clip_image(model)
    names = {n for n, _ in wrapper.named_modules() if n}
    assert names == {f"visual.{n}" if n else "visual" for n, _ in model.visual.named_modules()}
    x = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(1))
    plan = ld.compile_plan(ld.clip_text(PROMPTS[0]), model)
    with torch.no_grad():
        got = plan.forward(x)[OUT]
        want = model.encode_image(plan.infos["model"].preprocess(x))
    torch.testing.assert_close(got, want)
    assert weights_state(model) == before and "lucent_info" not in model.__dict__


@settings(max_examples=4, deadline=None)
@given(st.sampled_from(["vit", "resnet"]), st.integers(0, 2**16))
def test_clip_text_is_the_cosine_with_the_prompts_text_embedding(kind, seed):
    model = tiny_open_clip(kind)
    image = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    e = ld.clip_text(PROMPTS[0]) - 0.5 * ld.clip_text(PROMPTS[1]) + 2.0
    plan = ld.compile_plan(e, model)
    with torch.no_grad():
        got = plan.scores(plan.forward(image), 3).per_image
    want = cosine(model, image, PROMPTS[0]) - 0.5 * cosine(model, image, PROMPTS[1]) + 2.0
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert model.logit_scale.exp() > 1.5  # the scale is not applied: the scores above are plain cosines


def test_a_neuron_of_the_image_tower_plus_a_text_term():
    model = tiny_open_clip("vit")
    image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    site = "visual.transformer.resblocks.0"
    plan = ld.compile_plan(ld.neuron(site, 5, x=1, y=2) + 0.25 * ld.clip_text(PROMPTS[0], batch=1), model)
    with torch.no_grad():
        got = plan.scores(plan.forward(image), 2).per_image
        tokens = A._hooked(model.visual, plan.infos["model"].preprocess(image), "transformer.resblocks.0")
    text = cosine(model, image, PROMPTS[0]) * torch.tensor([0.0, 1.0])
    torch.testing.assert_close(got, tokens[:, 1 + 2 * 4 + 1, 5] + 0.25 * text, atol=1e-5, rtol=1e-5)


def _outputs(model: nn.Module, x: torch.Tensor, sites) -> dict:
    """Every site's output in one plain forward of `model` (hooks, removed after; 'name/0', or a bare name whose
    module returns a tuple (an attention module): the first entry)."""
    seen = {}

    def keep(site, out):
        seen.setdefault(site, out[0] if site.endswith("/0") or isinstance(out, tuple) else out)

    handles = [model.get_submodule(s.removesuffix("/0")).register_forward_hook(
        lambda m, i, o, s=s: keep(s, o)) for s in sites]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


@pytest.mark.parametrize("kind", ["open_clip", "clip", "siglip"])
def test_every_token_site_reads_the_patch_grid_after_its_prefix_tokens(kind):
    model = tiny_open_clip("vit") if kind == "open_clip" else tiny_hf(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreprocessingWarning)
        wrapper = clip.clip_image(model, tokenizer=_ids)
    stated = dict(ld.info_of(wrapper).layouts)
    assert len(stated) >= 10 and all(p == ("b (h w) c" if kind == "siglip" else "b (1 + h w) c")
                                      for p in stated.values())
    assert sum(s.endswith("attn/0") for s in stated) == 2  # one attention module per block, read as its output
    if kind == "open_clip":  # and the bare name reads that output too (open_clip's attention returns a tuple)
        assert sum(s.endswith(".attn") for s in stated) == 2
    prefix = 0 if kind == "siglip" else 1
    plan = ld.compile_plan(ld.sum_of(ld.neuron(n, 1, x=1, y=2) for n in sorted(stated)), wrapper)
    image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        rows = plan.scores(plan.forward(image), 2).rows
    seen = _outputs(wrapper, plan.infos["model"].preprocess(image), sorted(stated))
    for name, row in zip(sorted(stated), rows):
        torch.testing.assert_close(row, seen[name][:, prefix + 2 * 4 + 1, 1], msg=name)


def test_the_text_tower_runs_once_per_prompt_and_again_when_weights_change(monkeypatch):
    model = tiny_open_clip("vit")
    calls = []
    real = model.encode_text
    monkeypatch.setattr(model, "encode_text", lambda tokens: calls.append(1) or real(tokens))
    for _ in range(3):
        ld.compile_plan(ld.clip_text(PROMPTS[0]) + ld.clip_text(PROMPTS[0], batch=0), model)
    assert len(calls) == 1
    with torch.no_grad():
        model.text_projection.mul_(2.0)
    ld.compile_plan(ld.clip_text(PROMPTS[0]), model)
    assert len(calls) == 2


# --- the term as text, JSON and algebra --------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.text(min_size=1, max_size=30).filter(str.strip), st.text(min_size=1, max_size=30).filter(str.strip),
       st.floats(-3, 3, allow_nan=False, width=32), st.none() | st.integers(0, 3))
def test_prompts_round_trip_through_text_and_json(a, b, k, batch):
    for e in (ld.clip_text(a, batch=batch), ld.clip_text(a) - k * ld.clip_text(b, model="clip"),
              ld.channel("visual.conv1", 0) + ld.clip_text(b)):
        back = ld.parse(repr(e))
        assert back == e and hash(back) == hash(e) and repr(back) == repr(e)
        assert ld.from_json(ld.to_json(e)) == e
    term = ld.parse(repr(ld.clip_text(a)))
    assert term.prompt == a  # pyright: ignore[reportAttributeAccessIssue]


@pytest.mark.parametrize("bad", ["", "   ", None, 3, b"dog"])
def test_a_prompt_must_be_text(bad):
    with pytest.raises(InvalidArgumentError, match="prompt"):
        ld.clip_text(bad)  # pyright: ignore[reportArgumentType]


def test_a_bound_term_prints_the_prompt_and_equals_the_unbound_one():
    plan = ld.compile_plan(ld.clip_text("a 'quoted' café"), tiny_open_clip("vit"))
    bound = plan.objective
    assert repr(bound) == "clip_text(\"a 'quoted' café\", model='model')"
    assert plan.term_names == ("clip_text(\"a 'quoted' café\")",)
    assert ld.parse(repr(bound)) == bound and bound.text is not None  # pyright: ignore[reportAttributeAccessIssue]
    assert ld.from_json(ld.to_json(bound)) == bound and "text" not in ld.to_json(bound).replace("clip_text", "")
    kept = ld.compile_plan(bound, plan.models["model"]).objective  # binding again keeps the embedding
    assert torch.equal(kept.text, bound.text)  # pyright: ignore[reportAttributeAccessIssue]


# --- refusals -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["plain", "tower"])
def test_a_model_without_a_text_tower_is_refused_at_compile_time(which):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()) if which == "plain" else tiny_open_clip("vit").visual
    with pytest.raises(InvalidArgumentError, match="not a CLIP-like model" + (".*pass the whole model" if which ==
                                                                                "tower" else "")):
        ld.compile_plan(ld.clip_text("a dog"), model)


def test_an_unbound_term_and_a_wrong_width_are_refused():
    with pytest.raises(InvalidArgumentError, match="no text embedding"):
        ld.clip_text("a dog").score({Site(None, OUTPUT): torch.ones(2, 16)}, 2)
    plan = ld.compile_plan(ld.clip_text("a dog"), tiny_open_clip("vit"))
    with pytest.raises(ObjectiveShapeError, match=r"\(B, 16\) image embeddings"):
        plan.objective.score({OUT: torch.ones(2, 8)}, 2)


def test_a_text_tower_with_another_vocabulary_needs_its_tokenizer():
    model = open_clip.CLIP(16, dict(layers=1, width=32, head_width=16, patch_size=8, image_size=32),
                           dict(width=32, heads=2, layers=1, vocab_size=100)).eval()
    with pytest.warns(PreprocessingWarning):
        wrapper = clip.clip_image(model)
    with pytest.raises(InvalidArgumentError, match="tokenizer=") as err:
        ld.compile_plan(ld.clip_text("a dog"), wrapper)
    assert "get_tokenizer" in str(err.value)
    given_one = clip.clip_image(model, tokenizer=lambda prompts: torch.tensor([[1, 2, 3] + [0] * 74]))
    assert ld.compile_plan(ld.clip_text("a dog"), given_one).objective.text.shape == (16,)  # pyright: ignore


# --- renders --------------------------------------------------------------------------------------------


def test_a_render_raises_the_text_cosine_and_leaves_the_model_as_it_was():
    model = tiny_open_clip("vit")
    state, flags = weights_state(model), [m.training for m in model.modules()]
    plan = ld.compile_plan(ld.clip_text(PROMPTS[0]), model)
    r = ld.render(plan, size=(32, 32), steps=16, progress=False, seed=0, transforms=[])
    h = r.history[plan.term_names[0]].flatten()
    assert float(h[-1]) > float(h[0]) + 0.2, h
    assert float(cosine(model, r.images, PROMPTS[0])) > float(h[0]) + 0.2  # the image it returns scores high too
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="precision='bf16' on a CPU without bf16 units")
        r16 = ld.render(plan, size=(32, 32), steps=1, progress=False, precision="bf16")
    assert r16.precision == "bf16" and bool(torch.isfinite(r16.images).all())
    assert weights_state(model) == state and [m.training for m in model.modules()] == flags
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


# --- open_clip: specs and trust ---------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "download"), [
    ("open_clip:ViT-B-32", False), ("open_clip:RN50:none", False), ("open_clip:RN50:NONE", False),
    ("open_clip:RN50:pretrained=None", False), ("open_clip:ViT-B-32:openai", True),
    ("open_clip:ViT-B-32:OpenAI", True), ("open_clip:ViT-B-32:pretrained=laion2b_s34b_b79k", True),
    ("clip=open_clip:ViT-B-32:PRETRAINED=openai", True), ("open_clip:RN50:pretrained= openai", True)])
def test_open_clip_specs_ask_to_download_only_pretrained_weights(spec, download):
    asks = trust.model_asks([spec])
    assert [a.kind for a in asks] == (["download"] if download else [])
    normal = specs.normalize_spec(spec)
    assert specs.parse_spec(normal) == specs.parse_spec(spec)
    assert ("pretrained=" in normal) == download


@pytest.mark.parametrize("spec", ["open_clip:", "open_clip:RN50:a:b", "open_clip:RN50:pretrained="])
def test_bad_open_clip_specs_are_refused(spec):
    with pytest.raises(InvalidArgumentError, match="open_clip"):
        specs.parse_spec(spec)


@pytest.mark.parametrize(("tag", "why"), [("./weights.pt", "no pretrained weights tagged"),
                                          ("/etc/passwd", "no pretrained weights tagged"),
                                          ("laion2b_s34b_b79", "did you mean 'laion2b_s34b_b79k'")])
def test_a_pretrained_tag_is_one_of_open_clips_never_a_path(tag, why):
    with pytest.raises(InvalidArgumentError, match=why):
        specs.build_model(f"open_clip:ViT-B-32:{tag}")
    assert openclip.pretrained_tag("OPENAI", ["openai"]) == "openai"


def test_an_unknown_architecture_names_close_ones():
    with pytest.raises(InvalidArgumentError, match="did you mean 'ViT-B-32'"):
        specs.build_model("open_clip:ViT-B-33")


# --- transformers: CLIPModel and SiglipModel -------------------------------------------------------------


def _ids(prompts):
    """A stand-in tokenizer (the real ones need files): characters -> ids, padded to 8."""
    rows = [[2 + ord(c) % 90 for c in p[:7]] + [1] for p in prompts]
    return {"input_ids": torch.tensor([r + [0] * (8 - len(r)) for r in rows])}


def tiny_hf(kind: str):
    tf = pytest.importorskip("transformers")
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                  patch_size=8)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=99,
                max_position_embeddings=8, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    torch.manual_seed(0)
    if kind == "clip":
        config = tf.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
        return tf.CLIPModel(config).eval()
    return tf.SiglipModel(tf.SiglipConfig(text_config=text, vision_config=vision)).eval()


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_hf_clip_models_render_through_their_image_tower(kind, tmp_path):
    model = tiny_hf(kind)
    with pytest.warns(PreprocessingWarning, match="preprocessor_config.json"):
        wrapper = clip.clip_image(model, tokenizer=_ids)
    assert {n for n, _ in wrapper.named_children()} == (
        {"vision_model", "visual_projection"} if kind == "clip" else {"vision_model"})
    image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    site = "vision_model.encoder.layers.1"
    plan = ld.compile_plan(ld.clip_text(PROMPTS[0]) + ld.channel(site, 3), wrapper)
    lay = plan.layouts[Site("model", site)]
    assert (lay.kind, lay.prefix or 0) == ("tokens", 1 if kind == "clip" else 0)
    with torch.no_grad():
        got = plan.scores(plan.forward(image), 2).rows[0]
        x = plan.infos["model"].preprocess(image)
        img, txt = model.get_image_features(pixel_values=x), model.get_text_features(**_ids([PROMPTS[0]]))
        img, txt = (o if isinstance(o, torch.Tensor) else o.pooler_output for o in (img, txt))
    torch.testing.assert_close(got, F.cosine_similarity(img, txt), atol=1e-5, rtol=1e-5)
    (tmp_path / "preprocessor_config.json").write_text(
        '{"image_mean": [0.1, 0.2, 0.3], "image_std": [0.3, 0.2, 0.1], "size": {"height": 32, "width": 32}}')
    model.config._name_or_path = str(tmp_path)
    info = ld.info_of(clip.clip_image(model))  # read from the folder: no warning
    assert (info.mean, info.std, info.input_size) == ((0.1, 0.2, 0.3), (0.3, 0.2, 0.1), (32, 32))
    with pytest.raises(InvalidArgumentError, match="tokenizer="):
        ld.compile_plan(ld.clip_text("a dog"), model)  # no tokenizer files in the folder


def test_an_open_clip_spec_builds_the_same_image_tower_with_its_tokenizer():
    first, again = specs.build_model("open_clip:RN50"), specs.build_model("open_clip:RN50:none")
    assert isinstance(first, clip.ClipImage) and ld.models.spec_of(first) == "open_clip:RN50"
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    info = ld.info_of(first)
    assert (info.input_size, info.mean, info.name) == ((224, 224), openclip.OPENAI_MEAN, "RN50")
    plan = ld.compile_plan(ld.clip_text(PROMPTS[0]), first)
    model = first.clip_model
    with torch.no_grad():
        text = model.encode_text(open_clip.get_tokenizer("RN50")([PROMPTS[0]]))[0]
    torch.testing.assert_close(plan.objective.text, text)  # pyright: ignore[reportAttributeAccessIssue]

"""Hugging Face transformers vision models as model sources (issue 25): conformance over the families, what each
declares (preprocessing, geometry, prefix tokens, labels), ModelOutput and tuple sites, and the `hf:` spec with its
trust rule. Every model is built offline from a tiny random config (hidden size 32, 2 layers, 32 px images).
"""
from __future__ import annotations

import warnings

import pytest
import test_architectures as arch
import torch
from torch import nn

import lucent_dsl as ld
from lucent_dsl.cli import app as cli
from lucent_dsl.dsl.expr import Site, evaluate, top_terms
from lucent_dsl.errors import InvalidArgumentError
from lucent_dsl.models import huggingface as hf
from lucent_dsl.models.info import PreprocessingWarning, info_of, weights_state
from lucent_dsl.models.specs import build_model, normalize_spec, parse_spec
from lucent_dsl.plan.probe import probe
from lucent_dsl.record import trust
from lucent_dsl.replay import Recipe

T = pytest.importorskip("transformers")

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
            patch_size=8)


def tiny(family: str, **extra) -> nn.Module:
    """A random-weight model of `family` from a tiny config (seeded)."""
    builders = {
        "vit": lambda: T.ViTModel(T.ViTConfig(**_VIT, **extra)),
        "vit_classifier": lambda: T.ViTForImageClassification(T.ViTConfig(**_VIT, **extra)),
        "deit": lambda: T.DeiTModel(T.DeiTConfig(**_VIT, **extra)),
        "dinov2_registers": lambda: T.Dinov2WithRegistersModel(T.Dinov2WithRegistersConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=32, patch_size=8,
            num_register_tokens=4, **extra)),
        "clip_vision": lambda: T.CLIPVisionModel(T.CLIPVisionConfig(**_VIT, **extra)),
        "clip_vision_projection": lambda: T.CLIPVisionModelWithProjection(T.CLIPVisionConfig(
            **_VIT, projection_dim=16, **extra)),
        "siglip_vision": lambda: T.SiglipVisionModel(T.SiglipVisionConfig(**_VIT, **extra)),
        "beit": lambda: T.BeitModel(T.BeitConfig(**_VIT, **extra)),
        "swin": lambda: T.SwinModel(T.SwinConfig(embed_dim=16, depths=[1, 1], num_heads=[1, 2], image_size=32,
                                                 patch_size=4, window_size=4, **extra)),
        "convnext": lambda: T.ConvNextModel(T.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2,
                                                             **extra)),
        "resnet": lambda: T.ResNetModel(T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                                       layer_type="basic", **extra)),
    }
    torch.manual_seed(0)
    return builders[family]().eval()


# Prefix tokens by the architecture's definition (not by our detection), for every token site of the family.
PREFIX = {"vit": 1, "deit": 2, "dinov2_registers": 5, "clip_vision": 1, "siglip_vision": 0, "beit": 1, "swin": 0}
FAMILIES = sorted([*PREFIX, "convnext", "resnet"])


@pytest.mark.parametrize("family", FAMILIES)
def test_conformance(family, monkeypatch):
    """Activations equal a plain forward hook, read on the true axis; a render runs (fp32, bf16 forced); the model
    keeps its flags and hooks; token sites know their prefix tokens exactly."""
    model = tiny(family)
    for name, prefix in PREFIX.items():
        monkeypatch.setitem(arch.PREFIX, name, lambda s, p=prefix: p)
    arch.conformance(model, family, monkeypatch, out="@output/last_hidden_state")
    plan = ld.compile_plan(ld.channel("@output/last_hidden_state", 0), model)
    lay = plan.layouts[Site("model", "@output/last_hidden_state")]
    assert (lay.kind, lay.prefix if lay.kind == "tokens" else None) == (
        ("tokens", PREFIX[family]) if family in PREFIX else ("maps", None)), lay


def _channel_means(model: nn.Module, layer: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(the plan's channel-0 score, the mean over the patch tokens, the mean over all tokens) of `layer`."""
    plan = ld.compile_plan(ld.channel(layer, 0), model)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        acts = plan.forward(x)
        score = evaluate(plan.objective, acts, 1)
    a = acts[Site("model", layer)]
    prefix = plan.layouts[Site("model", layer)].prefix
    return score, a[:, prefix:, 0].mean(1), a[..., 0].mean(1)


@pytest.mark.parametrize("family, layer", [("clip_vision", "encoder.layers.1"), ("dinov2_registers", "encoder.layer.1"),
                                           ("deit", "layers.0")])
def test_channel_averages_the_patch_tokens_and_token_reaches_the_prefix(family, layer):
    model = tiny(family)
    score, patches, everything = _channel_means(model, layer)
    torch.testing.assert_close(score, patches)
    assert not torch.allclose(score, everything)  # the CLS (and registers) would move it: they are left out
    terms = [ld.neuron(layer, 3, token=t) for t in range(PREFIX[family])]
    plan = ld.compile_plan(ld.sum_of(terms), model)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        acts = plan.forward(x)
        a = acts[Site("model", layer)]
        for t, term in enumerate(top_terms(plan.objective)):
            torch.testing.assert_close(evaluate(term, acts, 1), a[:, t, 3])  # CLS, distillation, registers


@pytest.mark.parametrize("family, mean, std", [("vit", (0.5,) * 3, (0.5,) * 3), ("clip_vision", CLIP_MEAN, None),
                                               ("siglip_vision", (0.5,) * 3, (0.5,) * 3)])
def test_preprocessing_is_the_familys_own(family, mean, std):
    model = tiny(family)
    info = ld.compile_plan(ld.channel("@output", 0), model).infos["model"]
    assert info.mean == pytest.approx(mean) and info.mean != pytest.approx(ld.models.IMAGENET_MEAN)
    if std is not None:
        assert info.std == pytest.approx(std)
    source = hf.preprocessing_of(model).source
    assert "defaults for model_type" in source and hf.model_type_of(model) in source
    # the plan feeds the model exactly (image - mean) / std at its fixed size
    assert (info.input_size, str(info.input_geometry)) == ((32, 32), "32x32 only")


def test_a_user_modelinfo_is_kept():
    model = ld.with_info(tiny("vit"), ld.ModelInfo(mean=(0.1, 0.2, 0.3), std=(1.0, 1.0, 1.0)))
    plan = ld.compile_plan(ld.channel("layers.0", 0), model)
    assert plan.infos["model"].mean == (0.1, 0.2, 0.3) and str(plan.infos["model"].input_geometry) == "32x32 only"


def test_class_logit_by_id2label_name():
    labels = {0: "cat", 1: "goldfish", 2: "dog"}
    model = tiny("vit_classifier", id2label=labels, label2id={v: k for k, v in labels.items()})
    plan = ld.compile_plan(ld.class_logit("goldfish") + ld.class_logit("dog", layer="@output/logits"), model)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = model(pixel_values=plan.infos["model"].preprocess(x)).logits
        rows = [evaluate(t, plan.forward(x), 2) for t in top_terms(plan.objective)]
    torch.testing.assert_close(rows[0], logits[:, 1])
    torch.testing.assert_close(rows[1], logits[:, 2])
    with pytest.raises(InvalidArgumentError, match="no labels"):  # transformers' placeholders are not labels
        ld.compile_plan(ld.class_logit("LABEL_1"), tiny("vit_classifier", num_labels=3))
    with pytest.raises(InvalidArgumentError, match="no labels"):  # a base model's output is no logits
        ld.compile_plan(ld.class_logit("goldfish"), tiny("vit", id2label=labels))


def test_class_names_with_synonyms_match_any_of_them():
    """Hugging Face's ImageNet labels list synonyms: "goldfish, Carassius auratus"."""
    labels = {0: "tench, Tinca tinca", 1: "goldfish, Carassius auratus", 2: "crane, bird", 3: "crane, derrick"}
    model = tiny("vit_classifier", id2label=labels, label2id={v: k for k, v in labels.items()})
    for name, index in (("goldfish", 1), ("Carassius auratus", 1), ("tench, tinca tinca", 0), ("derrick", 3)):
        assert ld.compile_plan(ld.class_logit(name), model).objective == ld.class_logit(index, model="model"), name
    with pytest.raises(InvalidArgumentError, match="2 classes are called 'crane'"):  # never a silent pick
        ld.compile_plan(ld.class_logit("crane"), model)
    with pytest.raises(InvalidArgumentError, match="Did you mean: 'goldfish, Carassius auratus'"):
        ld.compile_plan(ld.class_logit("goldfsh"), model)


@pytest.mark.parametrize("family, fields", [("vit", ("last_hidden_state", "pooler_output")),
                                            ("vit_classifier", ("logits",)),
                                            ("clip_vision_projection", ("image_embeds", "last_hidden_state"))])
def test_model_output_fields_are_sites(family, fields):
    model = tiny(family)
    sites = [f"@output/{f}" for f in fields] + ["@output"]
    plan = ld.compile_plan(ld.sum_of(ld.channel(s, 1) for s in sites), model)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = model(plan.infos["model"].preprocess(x))
        acts = plan.forward(x)
    for field in fields:
        torch.testing.assert_close(acts[Site("model", f"@output/{field}")], out[field])
    torch.testing.assert_close(acts[Site("model", "@output")], out[0])  # HF's outputs[0]: the first field


@pytest.mark.parametrize("family, layer", [("vit", "layers.0.attention"), ("swin", "encoder.layers.0")])
def test_tuple_outputs_read_as_their_hidden_state(family, layer):
    model = tiny(family)
    seen = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.append(o))
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    plan = ld.compile_plan(ld.channel(layer, 2) + ld.channel(f"{layer}/0", 2), model)
    with torch.no_grad():
        model(plan.infos["model"].preprocess(x))
        handle.remove()
        acts = plan.forward(x)
        plain, selected = (evaluate(t, acts, 1) for t in top_terms(plan.objective))
    assert isinstance(seen[0], tuple)
    torch.testing.assert_close(acts[Site("model", layer)], seen[0][0])
    torch.testing.assert_close(plain, selected)
    row = next(r for r in probe(model) if r.name == layer)  # `lucent-dsl layers` lists its channels and layout
    assert row.channels == seen[0][0].shape[-1] and row.layout.startswith("b (")


def test_a_render_leaves_the_model_unchanged():
    model = tiny("clip_vision").train()
    before = (weights_state(model), {k: v.clone() for k, v in model.state_dict().items()},
              [m.training for m in model.modules()], model.config.to_dict())
    r = ld.render(ld.channel("encoder.layers.0", 1), model, size=32, steps=2, progress=False)
    assert r.steps == 2
    assert weights_state(model) == before[0] and [m.training for m in model.modules()] == before[2]
    assert all(torch.equal(v, before[1][k]) for k, v in model.state_dict().items())
    assert model.config.to_dict() == before[3]
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


# --- preprocessing from files, warnings, the hf: spec ----------------------------------------------------------


def _saved(tmp_path, *, processor: bool, labels: dict | None = None):
    model = tiny("vit_classifier", **({"id2label": labels} if labels else {}))
    folder = tmp_path / "vit"
    model.save_pretrained(folder)
    if processor:
        T.ViTImageProcessor(image_mean=[0.1, 0.2, 0.3], image_std=[0.4, 0.5, 0.6],
                            size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_a_processor_file_beside_the_weights_is_used(tmp_path):
    folder = _saved(tmp_path, processor=True)
    model = T.ViTForImageClassification.from_pretrained(folder)
    info = ld.compile_plan(ld.channel("@output", 0), model).infos["model"]
    assert info.mean == pytest.approx((0.1, 0.2, 0.3)) and info.std == pytest.approx((0.4, 0.5, 0.6))
    assert hf.preprocessing_of(model).source.endswith("preprocessor_config.json")


def test_a_hub_models_processor_is_read_from_the_cache(tmp_path, monkeypatch):
    """What `AutoImageProcessor.from_pretrained(name)` leaves in the Hugging Face cache is found offline."""
    import huggingface_hub

    snapshot = tmp_path / "models--org--tiny-clip" / "snapshots" / "abc123"
    T.CLIPImageProcessor(image_mean=[0.2, 0.3, 0.4], crop_size={"height": 64, "width": 64}).save_pretrained(snapshot)
    (tmp_path / "models--org--tiny-clip" / "refs").mkdir()
    (tmp_path / "models--org--tiny-clip" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    model = tiny("swin", _name_or_path="org/tiny-clip")
    pre = hf.preprocessing_of(model)
    assert pre.mean == pytest.approx((0.2, 0.3, 0.4)) and pre.size == (64, 64) and pre.source.startswith(str(tmp_path))
    info = ld.compile_plan(ld.channel("@output", 0), model).infos["model"]  # no warning: its own file was found
    assert info.input_size == (64, 64) and str(info.input_geometry) == "any size"


def test_a_loaded_model_without_its_processor_warns_which_defaults_it_got(tmp_path):
    model = T.ViTForImageClassification.from_pretrained(_saved(tmp_path, processor=False))
    with pytest.warns(PreprocessingWarning, match="preprocessor_config.json.*ViTImageProcessor"):
        info = ld.compile_plan(ld.channel("@output", 0), model).infos["model"]
    assert info.mean == (0.5, 0.5, 0.5)


def test_a_model_type_without_a_processor_warns(monkeypatch):
    monkeypatch.setattr(hf, "preprocessing_of", lambda m: None)
    with pytest.warns(PreprocessingWarning, match="no image processor"):
        info = hf.declared_info(tiny("vit"))
    assert info is not None and info.mean is None


@pytest.mark.parametrize("spec, kind", [
    ("hf:google/vit-base-patch16-224", "download"), ("vit=hf:google/vit-base-patch16-224", "download"),
    (" hf:facebook/dinov2-small ", "download"), ("hf:./my_vit", "file"), ("hf:/models/vit", "file"),
    ("a=hf:~/models/vit", "file"), ("hf:../vit", "file")])
def test_every_hf_spelling_is_an_ask(spec, kind):
    asks = trust.model_asks([spec])
    assert [a.kind for a in asks] == [kind]
    with pytest.raises(trust.UntrustedRecipeError, match=f"--allow {kind}"):
        trust.check(Recipe(objective="channel('0', 1)", models=(spec,), steps=2, size=(16, 16)))
    trust.check(Recipe(objective="channel('0', 1)", models=(spec,), steps=2, size=(16, 16)), allow=kind)


def test_hf_spec_parses_and_names():
    s = parse_spec("hf:google/vit-base-patch16-224")
    assert (s.kind, s.target, s.default_name, str(s)) == ("hf", "google/vit-base-patch16-224", "vit-base-patch16-224",
                                                           "hf:google/vit-base-patch16-224")
    assert normalize_spec("hf:./vit").startswith("hf:/")
    with pytest.raises(InvalidArgumentError, match="hf: needs"):
        parse_spec("hf:")


def test_hf_spec_builds_from_a_folder_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = _saved(tmp_path, processor=True, labels={0: "cat", 1: "goldfish"})
    model = build_model(f"hf:{folder}")
    assert type(model).__name__ == "ViTForImageClassification"  # config.architectures: the checkpoint's class
    info = info_of(model)
    assert info.labels == ("cat", "goldfish") and info.mean == pytest.approx((0.1, 0.2, 0.3))
    r = ld.render(ld.class_logit("goldfish"), model, size=32, steps=1, progress=False)
    assert r.steps == 1
    with pytest.raises(InvalidArgumentError, match="no such folder"):
        build_model(f"hf:{tmp_path / 'missing'}")


def test_hf_spec_of_a_hub_name_loads_its_class_and_processor(tmp_path, monkeypatch):
    """The Hub, simulated: every from_pretrained of the name reads a local folder instead."""
    folder = _saved(tmp_path, processor=True, labels={0: "cat", 1: "goldfish"})
    asked = []

    def redirect(original):
        def from_pretrained(name, *args, **kwargs):
            asked.append(name)
            return original(folder if name == "org/tiny-vit" else name, *args, **kwargs)
        return from_pretrained

    for cls in (T.AutoConfig, T.ViTForImageClassification, T.AutoImageProcessor):
        monkeypatch.setattr(cls, "from_pretrained", redirect(cls.from_pretrained))
    model = build_model("hf:org/tiny-vit")
    assert asked.count("org/tiny-vit") == 3 and info_of(model).labels == ("cat", "goldfish")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreprocessingWarning)  # its processor file is not in the (real) cache
        assert ld.compile_plan(ld.class_logit("cat"), model).infos["model"].input_size == (32, 32)


def test_a_hub_name_that_is_also_a_local_path_is_refused(tmp_path, monkeypatch):
    """transformers would read ./org/vit for "org/vit": a file read the trust rule counted as a download."""
    _saved(tmp_path / "org", processor=False).rename(tmp_path / "org" / "tiny")
    monkeypatch.chdir(tmp_path)
    assert [a.kind for a in trust.model_asks(["hf:org/tiny", "hf:./org/tiny"])] == ["download", "file"]
    with pytest.raises(InvalidArgumentError, match="hf:./org/tiny"):
        build_model("hf:org/tiny")
    with pytest.warns(PreprocessingWarning):  # the folder has no preprocessor_config.json
        ld.compile_plan(ld.channel("@output", 0), build_model("hf:./org/tiny"))


def test_hf_spec_without_network_says_so(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(T.AutoConfig, "from_pretrained", offline)
    with pytest.raises(InvalidArgumentError, match="Hugging Face Hub.*internet"):
        build_model("hf:org/missing")


def test_any_size_interpolates_position_embeddings_and_keeps_layer_names():
    model = tiny("clip_vision")
    wide = hf.any_size(model)
    plan = ld.compile_plan(ld.channel("encoder.layers.1", 0) + ld.neuron("encoder.layers.1", 1, x=7, y=5), wide)
    site = Site("model", "encoder.layers.1")
    assert str(plan.infos["model"].input_geometry) == "multiples of 8" and plan.layouts[site].prefix == 1
    x = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(6))  # not the 32 x 32 it was built for
    seen = []
    handle = model.encoder.layers[1].register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        model(plan.infos["model"].preprocess(x), interpolate_pos_encoding=True)
        handle.remove()
        acts = plan.forward(x)
        _, neuron = (evaluate(t, acts, 1) for t in top_terms(plan.objective))
    torch.testing.assert_close(acts[site], seen[0])
    torch.testing.assert_close(neuron, seen[0][:, 1:].reshape(1, 6, 8, 32)[:, 5, 7, 1])  # a 6 x 8 grid after CLS
    assert ld.render(plan, size=(48, 64), steps=2, progress=False).images.shape == (1, 3, 48, 64)
    with pytest.raises(InvalidArgumentError, match="interpolate_pos_encoding"):
        hf.any_size(tiny("convnext"))


def test_a_render_of_an_hf_folder_replays_from_its_recipe_only_when_allowed(tmp_path):
    folder = _saved(tmp_path, processor=True, labels={0: "cat", 1: "goldfish"})
    first = ld.render(ld.class_logit("goldfish"), build_model(f"hf:{folder}"), size=32, steps=2, progress=False)
    recipe = first.recipe
    assert recipe.models == (f"hf:{folder}",)
    with pytest.raises(trust.UntrustedRecipeError, match=r"\[file\].*--allow file"):
        recipe.run(progress=False)
    again = recipe.run(progress=False, allow="file")
    assert torch.equal(again.images, first.images)  # same model, same preprocessing, same pixels


def test_the_command_line_renders_an_hf_folder_and_refuses_its_recipe_without_allow(tmp_path, capsys):
    folder = _saved(tmp_path, processor=True, labels={0: "cat", 1: "goldfish"})
    out, again = tmp_path / "goldfish.png", tmp_path / "again.png"
    assert cli.main(["layers", "--model", f"hf:{folder}"]) == 0
    assert "vit.layers.1.attention" in capsys.readouterr().out
    assert cli.main(["render", "class_logit('goldfish')", "--model", f"hf:{folder}", "--size", "32", "--steps", "2",
                     "--out", str(out), "-q"]) == 0
    assert cli.main(["render", "--recipe", str(out), "--out", str(again), "-q"]) == 2  # UntrustedRecipeError
    assert "--allow file" in capsys.readouterr().err
    assert cli.main(["render", "--recipe", str(out), "--out", str(again), "-q", "--allow", "file"]) == 0

"""Checkpoints other libraries load: open_clip (``open_clip:ARCH/TAG``, ``hf-hub:org/repo``, folders
with an ``open_clip_config.json``) and timm (``timm/NAME``, folders whose ``config.json`` names an
architecture). Each is chosen from the files it ships, loaded by its own library through the real hub
resolution (offline, from a cache laid out as a download leaves it), and gives the rows that
library's own usage gives: its transforms, its tokenizer, its model calls."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from tiny_libraries import OPEN_CLIP_CONFIG
from tiny_models import hub_layout

from mmcli.checkpoints import library_config
from mmcli.encoders import load_encoder
from mmcli.errors import ModelNotFound
from mmcli.media.images import load_image
from mmcli.output.feature_set import read_feature_set

TEXTS = ["a photo of a cat", "a rocket on the launch pad", "coffee in a cup"]


def _normalised(rows: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(rows.float(), dim=-1).numpy()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def open_clip_reference(source: str, images, texts) -> tuple[np.ndarray, np.ndarray]:
    """open_clip's README usage: create_model_and_transforms, get_tokenizer, encode_image/encode_text."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(source)
    model.eval()
    tokenizer = open_clip.get_tokenizer(source)
    with torch.no_grad():
        image_rows = model.encode_image(torch.stack([preprocess(image) for image in images])) if images else None
        text_rows = model.encode_text(tokenizer(texts))
    return None if image_rows is None else _normalised(image_rows), _normalised(text_rows)


def timm_reference(source: str, images) -> np.ndarray:
    """timm's feature-extraction usage: num_classes=0, the transforms its data config resolves to."""
    import timm
    import timm.data

    model = timm.create_model(source, pretrained=True, num_classes=0).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model), is_training=False)
    with torch.no_grad():
        return _normalised(model(torch.stack([transform(image) for image in images])))


@pytest.fixture
def hub_home(tiny_models, tmp_path, monkeypatch):
    """An HF_HOME holding the tiny open_clip and timm checkpoints as downloads of hub repositories,
    for this process's hub client (offline) and for the commands' (through ``env``)."""
    from huggingface_hub import constants

    home = hub_layout(tmp_path / "hf", "tiny-org/open-clip-tiny", tiny_models["open_clip"])
    hub_layout(home, "timm/vit_tiny_patch8_32.tiny", tiny_models["timm"])
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return home


def test_the_kind_of_checkpoint_comes_from_the_files_it_ships(tiny_models, tmp_path, hub_home):
    assert library_config(str(tiny_models["open_clip"])).model_type == "open_clip"
    assert library_config(str(tiny_models["timm"])).model_type == "timm"
    assert library_config(str(tiny_models["clip"])) is None  # a transformers config.json: AutoConfig's
    assert library_config("hf-hub:tiny-org/open-clip-tiny").source == "hf-hub:tiny-org/open-clip-tiny"
    assert library_config("tiny-org/open-clip-tiny").model_type == "open_clip"
    assert library_config("timm/vit_tiny_patch8_32.tiny").model_type == "timm"
    # Not the name: a folder called like a timm model holding a transformers checkpoint is transformers'.
    renamed = tmp_path / "timm-open_clip-lookalike"
    shutil.copytree(tiny_models["vit"], renamed)
    assert library_config(str(renamed)) is None
    hub_layout(hub_home, "timm/vit_tiny_lookalike", tiny_models["vit"])
    assert library_config("timm/vit_tiny_lookalike") is None
    with pytest.raises(ModelNotFound, match="ships neither"):
        library_config("hf-hub:timm/vit_tiny_lookalike")
    # A repository with both configs (as LAION's have) is open_clip's under hf-hub:, transformers' without.
    both = tmp_path / "both"
    shutil.copytree(tiny_models["clip"], both)
    shutil.copy(tiny_models["open_clip"] / "open_clip_config.json", both)
    hub_layout(hub_home, "tiny-org/both", both)
    assert library_config("tiny-org/both") is None
    assert library_config("hf-hub:tiny-org/both").model_type == "open_clip"


def test_open_clip_rows_equal_open_clip_s_own_usage(tiny_models, images):
    folder = str(tiny_models["open_clip"])
    encoder = load_encoder(folder, device="cpu", dtype="float32")
    assert encoder.family == "open_clip"
    image_rows, text_rows = open_clip_reference(f"local-dir:{folder}", images, TEXTS)
    ours_images = encoder.encode_images(images)
    ours_texts = encoder.encode_texts(TEXTS)
    assert ours_images.shape == (len(images), OPEN_CLIP_CONFIG["embed_dim"])
    assert _cosines(ours_images, image_rows).min() >= 0.9999
    assert _cosines(ours_texts, text_rows).min() >= 0.9999
    assert np.abs(ours_texts - text_rows).max() < 1e-5
    # The model's own temperature is what zero-shot classification scales by.
    assert encoder.model.logit_scale.exp().item() == pytest.approx(np.exp(2.0))


def test_timm_rows_equal_timm_s_own_usage(tiny_models, images):
    folder = str(tiny_models["timm"])
    encoder = load_encoder(folder, device="cpu", dtype="float32")
    assert encoder.family == "timm" and encoder.dim == 32  # pooled features, not the five-class head
    reference = timm_reference(f"local-dir:{folder}", images)
    rows = encoder.encode_images(images)
    assert rows.shape == reference.shape
    assert _cosines(rows, reference).min() >= 0.9999


def test_open_clip_listed_name_loads_its_tag_s_weights_from_the_cache(tiny_models, images, hub_home, monkeypatch):
    # open_clip:ARCH/TAG goes through open_clip's list: the architecture's config, then the tag's hub
    # repository in the cache. A tiny architecture and tag are added to the list for the test.
    import open_clip
    from open_clip import factory, pretrained

    config_file = hub_home / "Tiny-ViT-8.json"
    config_file.write_text(json.dumps(OPEN_CLIP_CONFIG))
    monkeypatch.setattr(factory, "_MODEL_CONFIGS", dict(factory._MODEL_CONFIGS))
    open_clip.add_model_config(config_file)
    tag = {"tiny": pretrained._pcfg(hf_hub="tiny-org/open-clip-tiny/", mean=(0.48, 0.45, 0.40), std=(0.26, 0.26, 0.27))}
    monkeypatch.setitem(pretrained._PRETRAINED, "Tiny-ViT-8", tag)

    encoder = load_encoder("open_clip:Tiny-ViT-8/tiny", device="cpu", dtype="float32")
    direct = load_encoder(str(tiny_models["open_clip"]), device="cpu", dtype="float32")
    np.testing.assert_allclose(encoder.encode_images(images), direct.encode_images(images), atol=1e-6)
    np.testing.assert_allclose(encoder.encode_texts(TEXTS), direct.encode_texts(TEXTS), atol=1e-6)
    with pytest.raises(ModelNotFound, match="its tags: tiny"):
        load_encoder("open_clip:Tiny-ViT-8/laion2b", device="cpu")
    with pytest.raises(ModelNotFound, match="open_clip:ARCH/TAG"):
        load_encoder("open_clip:Tiny-ViT-8", device="cpu")


@pytest.mark.parametrize(("name", "shipped"), [("open_clip", "open_clip_config.json"), ("timm", "config.json")])
def test_a_hub_repository_without_its_weights_is_refused_not_run_at_random(
    name, shipped, tiny_models, tmp_path, monkeypatch
):
    from huggingface_hub import constants

    checkpoint = tmp_path / "config-only"
    checkpoint.mkdir()
    shutil.copy(tiny_models[name] / shipped, checkpoint)
    home = hub_layout(tmp_path / "hf", "tiny-org/no-weights", checkpoint)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFound, match="tiny-org/no-weights") as refused:
        load_encoder("hf-hub:tiny-org/no-weights", device="cpu")
    assert "weights" in str(refused.value) or "model.safetensors" in str(refused.value), refused.value


def test_the_commands_search_and_classify_with_hub_open_clip_and_timm_models(
    run_mmcli_process, hub_home, photos, tmp_path
):
    env = {"HF_HOME": str(hub_home)}
    images = [load_image(path) for path in sorted(photos.iterdir())]  # as the commands read them
    for model in ("hf-hub:tiny-org/open-clip-tiny", "tiny-org/open-clip-tiny", "timm/vit_tiny_patch8_32.tiny"):
        out = tmp_path / f"{model.replace('/', '_').replace(':', '_')}.npy"
        made = run_mmcli_process("extract-features", photos, "-o", out, "--model", model, "--dtype", "float32", env=env)
        assert made.returncode == 0, made.stderr
        feature_set = read_feature_set(out)
        assert feature_set.models == {model} and len(feature_set) == len(images)
    rows = read_feature_set(tmp_path / "hf-hub_tiny-org_open-clip-tiny.npy").vectors
    image_reference, text_reference = open_clip_reference("hf-hub:tiny-org/open-clip-tiny", images, TEXTS)
    assert _cosines(np.asarray(rows), image_reference).min() >= 0.9999

    hits = run_mmcli_process("retrieve", "--index", tmp_path / "hf-hub_tiny-org_open-clip-tiny.npy",
                             "--query", TEXTS[0], "-k", "2", "--dtype", "float32", env=env)  # fmt: skip
    assert hits.returncode == 0, hits.stderr
    expected = np.argsort(-(image_reference @ text_reference[0]))[:2]
    ids = [hit["id"] for hit in json.loads(hits.stdout)["hits"]]
    assert ids == [feature_set.records[i]["id"] for i in expected]

    open_clip_hub = "hf-hub:tiny-org/open-clip-tiny"
    labels = run_mmcli_process("classify", photos, "--labels", "cat,rocket", "--model", open_clip_hub,
                               "--dtype", "float32", env=env)  # fmt: skip
    assert labels.returncode == 0, labels.stderr
    records = [json.loads(line) for line in labels.stdout.splitlines()]
    _, label_rows = open_clip_reference(
        "hf-hub:tiny-org/open-clip-tiny", [], ["a photo of a cat.", "a photo of a rocket."]
    )
    logits = np.exp(2.0) * image_reference @ label_rows.T
    expected_p = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected_p /= expected_p.sum(axis=1, keepdims=True)
    got = np.array([[record["scores"]["cat"], record["scores"]["rocket"]] for record in records])
    np.testing.assert_allclose(got, expected_p, atol=1e-5)

    # CLIPScore (w * max(cos, 0), w = 2.5) of captions against the open_clip set's image rows.
    from mmcli.metrics.clipscore import CAPTION_PREFIX

    pred, refs = tmp_path / "pred.jsonl", tmp_path / "refs.jsonl"
    ids = [record["id"] for record in records]
    pred.write_text("".join(json.dumps({"id": i, "caption": "a cat"}) + "\n" for i in ids))
    refs.write_text("".join(json.dumps({"id": i, "captions": ["a rocket"]}) + "\n" for i in ids))
    scored = run_mmcli_process("evaluate", "captions", "--pred", pred, "--refs", refs, "--metrics", "bleu",
                               "--clipscore", "--images", tmp_path / "hf-hub_tiny-org_open-clip-tiny.npy",
                               "--dtype", "float32", "--format", "json", env=env)  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    _, caption_rows = open_clip_reference(open_clip_hub, [], [CAPTION_PREFIX + "a cat"])
    expected_score = float(np.mean(2.5 * np.maximum(image_reference @ caption_rows[0], 0)))
    assert json.loads(scored.stdout)["metrics"]["CLIPScore"] == pytest.approx(expected_score, abs=1e-4)


def test_a_missing_library_names_the_install_that_fixes_it(tiny_models, monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # import open_clip raises ImportError
    with pytest.raises(ModelNotFound, match=r"pip install open_clip_torch .*\.\[openclip\]"):
        load_encoder(str(tiny_models["open_clip"]), device="cpu")
    with pytest.raises(ModelNotFound, match=r"pip install open_clip_torch"):
        library_config("open_clip:ViT-B-32/openai")
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ModelNotFound, match=r"pip install timm .*\.\[timm\]"):
        load_encoder(str(tiny_models["timm"]), device="cpu")


def test_a_warm_process_keeps_an_hf_hub_model_by_its_snapshot(hub_home):
    from mmcli.keep import checkpoint_files

    kept = checkpoint_files("hf-hub:tiny-org/open-clip-tiny")
    assert kept is not None and kept == checkpoint_files("tiny-org/open-clip-tiny")

"""The core encoder package: registry choice and parity with each family's reference usage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmcli.encoders import list_encoder_families, load_encoder
from mmcli.encoders.registry import ENCODERS
from mmcli.errors import ModelNotFound, UnsupportedModel

TEXTS = ["a photo of a cat", "two people ride bicycles in the city", "an astronaut", "coffee"]


def _normalise(matrix: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(matrix.float(), dim=-1).numpy()


def _images(photos) -> list[Image.Image]:
    return [Image.open(path).convert("RGB") for path in sorted(photos.glob("*.jpg"))]


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def _reference_dual_tower(path, images, texts, padding):
    """What the model card does: processor -> get_*_features -> L2-normalise."""
    from transformers import AutoModel, AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    with torch.inference_mode():
        image_out = model.get_image_features(**processor(images=images, return_tensors="pt"))
        tokens = processor(text=texts, padding=padding, truncation=True, return_tensors="pt")
        text_out = model.get_text_features(**tokens)
    return _normalise(image_out.pooler_output), _normalise(text_out.pooler_output)


@pytest.mark.parametrize(
    ("name", "padding"), [("clip", True), ("siglip", "max_length"), ("siglip2", "max_length"), ("metaclip2", True)]
)
def test_dual_tower_matches_reference_usage(tiny_models, photos, name, padding):
    images = _images(photos)
    encoder = load_encoder(str(tiny_models[name]), device="cpu", dtype="float32")
    assert encoder.family == "dual-tower"
    assert encoder.modalities == {"image", "text"}

    expected_images, expected_texts = _reference_dual_tower(tiny_models[name], images, TEXTS, padding)
    got_images = encoder.encode_images(images, batch_size=3)
    got_texts = encoder.encode_texts(TEXTS, batch_size=3)

    assert got_images.shape == expected_images.shape == (len(images), encoder.dim)
    assert got_texts.shape == expected_texts.shape == (len(TEXTS), encoder.dim)
    assert got_images.dtype == np.float32
    assert _row_cosines(got_images, expected_images).min() >= 0.9999
    assert _row_cosines(got_texts, expected_texts).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(got_images, axis=1), 1.0, atol=1e-5)


def test_batching_does_not_change_embeddings(tiny_models, photos):
    images = _images(photos)
    encoder = load_encoder(str(tiny_models["clip"]), device="cpu")
    one_by_one = np.concatenate([encoder.encode_images([image]) for image in images])
    np.testing.assert_allclose(encoder.encode_images(images, batch_size=4), one_by_one, atol=1e-5)


def test_no_normalize_returns_raw_projections(tiny_models, photos):
    images = _images(photos)[:2]
    encoder = load_encoder(str(tiny_models["clip"]), device="cpu")
    raw = encoder.encode_images(images, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    np.testing.assert_allclose(
        raw / np.linalg.norm(raw, axis=1, keepdims=True), encoder.encode_images(images), atol=1e-5
    )


def test_vision_backbone_uses_cls_token_not_a_random_dense_pooler(tiny_models, photos):
    from transformers import AutoImageProcessor, AutoModel

    images = _images(photos)
    encoder = load_encoder(str(tiny_models["vit"]), device="cpu")
    assert encoder.family == "vision"
    assert encoder.modalities == {"image"}
    assert encoder.pooling == "cls"

    processor = AutoImageProcessor.from_pretrained(tiny_models["vit"])
    model = AutoModel.from_pretrained(tiny_models["vit"]).eval()
    with torch.inference_mode():
        hidden = model(**processor(images=images, return_tensors="pt")).last_hidden_state
    expected = _normalise(hidden[:, 0])
    got = encoder.encode_images(images)
    assert got.shape == (len(images), encoder.dim) == (len(images), 32)
    assert _row_cosines(got, expected).min() >= 0.9999


def test_dinov2_uses_its_layer_normed_pooled_output(tiny_models, photos):
    from transformers import AutoImageProcessor, AutoModel

    images = _images(photos)
    encoder = load_encoder(str(tiny_models["dinov2"]), device="cpu")
    assert (encoder.family, encoder.pooling) == ("vision", "pooler")
    processor = AutoImageProcessor.from_pretrained(tiny_models["dinov2"])
    model = AutoModel.from_pretrained(tiny_models["dinov2"]).eval()
    with torch.inference_mode():
        expected = _normalise(model(**processor(images=images, return_tensors="pt")).pooler_output)
    assert _row_cosines(encoder.encode_images(images, batch_size=3), expected).min() >= 0.9999


def test_image_only_model_refuses_text(tiny_models):
    encoder = load_encoder(str(tiny_models["vit"]), device="cpu")
    with pytest.raises(UnsupportedModel, match="cannot embed texts"):
        encoder.encode_texts(["hello"])


def test_sentence_encoder_mean_pooling_matches_manual_reference(tiny_models):
    from transformers import AutoModel, AutoTokenizer

    encoder = load_encoder(str(tiny_models["bert"]), device="cpu")
    assert encoder.family == "text"
    assert encoder.pooling == ("mean",)
    assert encoder.max_length == 48  # from sentence_bert_config.json

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    model = AutoModel.from_pretrained(tiny_models["bert"]).eval()
    tokens = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**tokens).last_hidden_state
    mask = tokens["attention_mask"].unsqueeze(-1).float()
    expected = _normalise((hidden * mask).sum(1) / mask.sum(1))
    assert _row_cosines(encoder.encode_texts(TEXTS, batch_size=2), expected).min() >= 0.9999


def test_real_minilm_matches_sentence_transformers_and_has_real_semantics(minilm_path):
    from sentence_transformers import SentenceTransformer

    sentences = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The stock market fell sharply today.",
    ]
    encoder = load_encoder(str(minilm_path), device="cpu")
    vectors = encoder.encode_texts(sentences)
    assert vectors.shape == (3, 384)

    reference = SentenceTransformer(str(minilm_path), device="cpu").encode(sentences)
    assert _row_cosines(vectors, reference).min() >= 0.9999

    similarity = vectors @ vectors.T
    assert similarity[0, 1] > 0.6  # paraphrase
    assert similarity[0, 2] < 0.2  # unrelated
    assert similarity[0, 1] > similarity[0, 2] + 0.4


def test_family_comes_from_config_not_name(tiny_models, tmp_path):
    """A CLIP checkpoint in a folder named like a BERT model is still CLIP."""
    import shutil

    misleading = tmp_path / "bert-base-uncased"
    shutil.copytree(tiny_models["clip"], misleading)
    assert load_encoder(str(misleading), device="cpu").family == "dual-tower"


def test_unknown_architecture_shape_falls_back_to_config_shape():
    from types import SimpleNamespace

    two_towers = SimpleNamespace(model_type="brand_new_clip", text_config=object(), vision_config=object())
    vision = SimpleNamespace(model_type="brand_new_vit", num_channels=3)
    text = SimpleNamespace(model_type="brand_new_bert", vocab_size=100)
    assert ENCODERS.family_for(two_towers).name == "dual-tower"
    assert ENCODERS.family_for(vision).name == "vision"
    assert ENCODERS.family_for(text).name == "text"
    with pytest.raises(UnsupportedModel, match="no encoder family handles"):
        ENCODERS.family_for(SimpleNamespace(model_type="mystery"), "x/y")


def test_registry_lists_families():
    names = {entry["family"] for entry in list_encoder_families()}
    assert names == {
        "dual-tower", "vision", "text", "video-text", "video", "clap", "audio", "open_clip", "timm", "torchvision"
    }  # fmt: skip
    clip = next(e for e in list_encoder_families() if e["family"] == "dual-tower")
    assert {"clip", "siglip", "siglip2", "metaclip_2"} <= set(clip["model_types"])


def test_missing_local_folder_is_model_not_found(tmp_path):
    with pytest.raises(ModelNotFound, match="does not exist"):
        load_encoder(str(tmp_path / "nope"))


def test_uncached_hub_model_offline_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotFound) as excinfo:
        load_encoder("openai/clip-vit-base-patch32")
    message = str(excinfo.value)
    assert "openai/clip-vit-base-patch32" in message
    assert "hf download" in message
    assert "HF_HUB_OFFLINE" in message


def test_checkpoint_for_another_task_is_refused_not_randomly_completed(tiny_models):
    """A BLIP captioning checkpoint has no contrastive heads; loading it as an encoder would fill them at random."""
    with pytest.raises(UnsupportedModel, match="saved as BlipForConditionalGeneration"):
        load_encoder(str(tiny_models["blip"]), device="cpu")


def test_a_model_without_its_familys_embedding_call_is_refused_by_name():
    from mmcli.errors import UnsupportedModel
    from mmcli.models import require_methods

    class TextOnly:
        def get_text_features(self):
            return None

    require_methods(TextOnly(), "m", ("get_text_features",), "a text model")
    with pytest.raises(UnsupportedModel, match=r"'m' \(TextOnly\) has no get_video_features\(\); it is not a video"):
        require_methods(TextOnly(), "m", ("get_video_features", "get_text_features"), "a video-text model")

"""The drop-in speed-ups compute what the modules they replace computed, and really replace them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmcli.encoders import load_encoder
from mmcli.speedups import fold_quick_gelu, fuse_vision_attention


def _plain_model(path):
    from transformers import AutoModel

    return AutoModel.from_pretrained(path).eval()


def _pixels(encoder, photos) -> dict[str, torch.Tensor]:
    from mmcli.encoders.base import collate

    images = [Image.open(p).convert("RGB") for p in sorted(photos.glob("*.jpg"))[:3]]
    return collate([encoder.preprocess_image(image) for image in images])


@pytest.mark.parametrize("name", ["clip", "siglip", "siglip2", "metaclip2"])
def test_loaded_dual_tower_runs_fused_attention_with_unchanged_embeddings(tiny_models, photos, name):
    encoder = load_encoder(str(tiny_models[name]), device="cpu")
    attention = [m for m in encoder.model.vision_model.modules() if hasattr(m, "output_projection")]
    assert len(attention) == 2 and all(hasattr(m, "qkv") and not hasattr(m, "q_proj") for m in attention)
    text_attention = [m for m in encoder.model.text_model.modules() if hasattr(m, "q_proj")]
    assert len(text_attention) == 2  # the text tower (causal masks) keeps transformers' own attention

    plain = _plain_model(tiny_models[name])
    inputs = _pixels(encoder, photos)
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(_image(plain, inputs))
    rows = encoder.embed_preprocessed([{k: v[i : i + 1] for k, v in inputs.items()} for i in range(3)])
    np.testing.assert_allclose(rows, expected.numpy(), atol=1e-5)
    texts = ["a dog runs on the grass", "coffee"]
    with torch.inference_mode():
        tokens = encoder.processor(
            text=texts, padding=encoder.padding, truncation=True, max_length=encoder.max_length, return_tensors="pt"
        )
        reference = torch.nn.functional.normalize(_text(plain, tokens))
    np.testing.assert_allclose(encoder.embed_texts(texts), reference.numpy(), atol=1e-5)


def _image(model, inputs):
    from mmcli.encoders.base import accepted_kwargs, features_tensor

    return features_tensor(model.get_image_features(**accepted_kwargs(model.get_image_features, dict(inputs))))


def _text(model, tokens):
    from mmcli.encoders.base import features_tensor

    return features_tensor(model.get_text_features(**tokens))


def test_quick_gelu_becomes_one_silu_with_the_scale_in_the_weights(tiny_models, photos):
    """CLIP's quick-GELU MLPs (both towers) turn into SiLU ones; the function stays the same."""
    model = _plain_model(tiny_models["clip"])
    fc1_before = model.vision_model.encoder.layers[0].mlp.fc1.weight.clone()
    pixels = torch.randn(2, 3, 32, 32)
    tokens = {"input_ids": torch.tensor([[0, 5, 9, 1]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    with torch.inference_mode():
        image, text = _image(model, {"pixel_values": pixels}), _text(model, tokens)
        assert fold_quick_gelu(model) == 4  # two layers in each tower
        mlp = model.vision_model.encoder.layers[0].mlp
        assert isinstance(mlp.activation_fn, torch.nn.SiLU)
        torch.testing.assert_close(mlp.fc1.weight, fc1_before * 1.702)
        torch.testing.assert_close(_image(model, {"pixel_values": pixels}), image, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(_text(model, tokens), text, atol=1e-5, rtol=1e-5)
    assert fold_quick_gelu(model) == 0  # nothing quick-GELU is left to fold


def test_half_precision_weights_are_not_rescaled(tiny_models):
    model = _plain_model(tiny_models["clip"]).to(torch.bfloat16)
    assert fold_quick_gelu(model) == 0
    assert type(model.vision_model.encoder.layers[0].mlp.activation_fn).__name__ == "QuickGELUActivation"


def test_attention_with_other_parts_keeps_its_own_forward():
    """An attention module with anything beyond four square projections (here a q-norm) is left alone."""

    class NormedAttention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.num_heads, self.scale, self.is_causal = 2, 0.5, False
            self.q_proj, self.k_proj, self.v_proj, self.out_proj = (torch.nn.Linear(8, 8) for _ in range(4))
            self.q_norm = torch.nn.LayerNorm(8)

    model = torch.nn.Sequential(NormedAttention()).eval()
    assert fuse_vision_attention(model) == 0
    assert hasattr(model[0], "q_proj")


def test_int8_quantizes_the_joined_projection(tiny_models, photos):
    encoder = load_encoder(str(tiny_models["clip"]), device="cpu", quantize="int8")
    attention = encoder.model.vision_model.encoder.layers[0].self_attn
    assert type(attention.qkv).__name__ == "Linear" and "quantized" in type(attention.qkv).__module__
    float32 = load_encoder(str(tiny_models["clip"]), device="cpu")
    inputs = _pixels(float32, photos)
    one = [{k: v[i : i + 1] for k, v in inputs.items()} for i in range(3)]
    cosine = np.sum(encoder.embed_preprocessed(one) * float32.embed_preprocessed(one), axis=1)
    assert cosine.min() > 0.99

"""Zero-shot classification equals a hand computation of the CLIP recipe (and SigLIP's sigmoid)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mmcli.classify import class_embeddings, probabilities
from mmcli.encoders import load_encoder

LABELS = ["cat", "rocket", "cup of coffee"]
TEMPLATES = ["a photo of a {}.", "a blurry photo of a {}."]


def _hand_computed(path, images, padding):
    """CLIP's recipe written out with transformers alone."""
    from transformers import AutoModel, AutoProcessor

    processor, model = AutoProcessor.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    with torch.inference_mode():
        image = model.get_image_features(**processor(images=images, return_tensors="pt")).pooler_output
        image = torch.nn.functional.normalize(image, dim=-1)
        classes = []
        for label in LABELS:
            tokens = processor(
                text=[t.format(label) for t in TEMPLATES], padding=padding, truncation=True, return_tensors="pt"
            )
            text = torch.nn.functional.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)
            classes.append(torch.nn.functional.normalize(text.mean(dim=0), dim=-1))
        logits = model.logit_scale.exp() * image @ torch.stack(classes).T
        if getattr(model, "logit_bias", None) is not None:
            return torch.sigmoid(logits + model.logit_bias).numpy()
        return logits.softmax(dim=-1).numpy()


@pytest.mark.parametrize(("name", "padding"), [("clip", True), ("siglip", "max_length")])
def test_probabilities_equal_the_hand_computed_recipe(tiny_models, photos, name, padding):
    images = [Image.open(p).convert("RGB") for p in sorted(photos.glob("*.jpg"))]
    encoder = load_encoder(str(tiny_models[name]), device="cpu")
    classes = class_embeddings(encoder, LABELS, TEMPLATES)
    got = probabilities(encoder.encode_images(images), classes)
    np.testing.assert_allclose(got, _hand_computed(tiny_models[name], images, padding), atol=1e-5)
    if name == "clip":
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-6)
    else:
        assert classes.logit_bias is not None  # SigLIP: independent sigmoids


def test_classify_command_from_images_and_from_features_agree(run_mmcli, tiny_models, photos, tmp_path):
    model = tiny_models["clip"]
    from_images = run_mmcli(
        "classify",
        photos,
        "--labels",
        ",".join(LABELS),
        "--model",
        model,
        *[arg for t in TEMPLATES for arg in ("--template", t)],
    )
    assert from_images.returncode == 0, from_images.stderr
    records = [json.loads(line) for line in from_images.stdout.splitlines()]
    assert len(records) == 4
    for record in records:
        assert set(record) == {"id", "source", "label", "score", "scores"}
        assert next(iter(record["scores"])) == record["label"] and record["score"] == max(record["scores"].values())
        assert abs(sum(record["scores"].values()) - 1.0) < 1e-4

    assert run_mmcli("extract-features", photos, "-o", tmp_path / "f.npy", "--model", model, "-q").returncode == 0
    from_features = run_mmcli(
        "classify",
        "--features",
        tmp_path / "f.npy",
        "--labels",
        ",".join(LABELS),
        *[arg for t in TEMPLATES for arg in ("--template", t)],
        "--top-k",
        "2",
    )
    assert from_features.returncode == 0, from_features.stderr
    again = [json.loads(line) for line in from_features.stdout.splitlines()]
    assert [r["label"] for r in again] == [r["label"] for r in records]
    assert all(len(r["scores"]) == 2 for r in again)
    np.testing.assert_allclose([r["score"] for r in again], [r["score"] for r in records], atol=1e-5)


def test_classify_needs_labels_and_a_dual_tower_model(run_mmcli, tiny_models, photos):
    no_labels = run_mmcli("classify", photos, "--model", tiny_models["clip"])  # not a classification checkpoint
    assert no_labels.returncode == 2 and "Give labels" in no_labels.stderr
    vision_only = run_mmcli("classify", photos, "--labels", "a,b", "--model", tiny_models["vit"])
    assert vision_only.returncode == 2 and "dual-tower" in vision_only.stderr
    bad_template = run_mmcli(
        "classify", photos, "--labels", "a,b", "--model", tiny_models["clip"], "--template", "no placeholder"
    )
    assert bad_template.returncode == 2 and "has no {}" in bad_template.stderr

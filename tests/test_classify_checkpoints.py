"""``mmcli classify`` with classification checkpoints and no --labels: an image classifier
(``*ForImageClassification``), a video classifier (``*ForVideoClassification``, Kinetics-style), an
audio classifier (``*ForAudioClassification``, AudioSet-style) and a timm classifier, each scored into
its own labels as the checkpoint scores them: the softmax (or, for a multi-label checkpoint, the
sigmoid) of the logits its own processor and forward give."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from audio_media import speech_like, tone, write_wav
from test_video_encoders import drawing
from test_video_media import write_video
from tiny_libraries import TIMM_LABELS
from tiny_models import CLIP_FRAMES, IMAGE_LABELS, SOUND_LABELS

from mmcli.media.images import load_image
from mmcli.media.video import SamplingOptions, sample_frames


def _records(result) -> list[dict]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _softmax(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.double(), dim=-1).numpy()


def _scores(records: list[dict], labels: list[str]) -> np.ndarray:
    return np.array([[record["scores"][label] for label in labels] for record in records])


def _photo_paths(photos) -> list:
    return sorted(photos.iterdir())


def test_an_image_classifier_classifies_into_its_own_labels(run_mmcli, tiny_models, photos):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    path = tiny_models["vit_classifier"]
    records = _records(run_mmcli("classify", photos, "--model", path, "--dtype", "float32"))
    processor = AutoImageProcessor.from_pretrained(path)
    model = AutoModelForImageClassification.from_pretrained(path).eval()
    images = [load_image(p) for p in _photo_paths(photos)]
    with torch.no_grad():
        expected = _softmax(model(**processor(images=images, return_tensors="pt")).logits)
    labels = list(IMAGE_LABELS.values())
    assert [r["id"] for r in records] == [str(p) for p in _photo_paths(photos)]
    np.testing.assert_allclose(_scores(records, labels), expected, atol=1e-5)
    assert [r["label"] for r in records] == [labels[i] for i in expected.argmax(axis=1)]
    assert np.ptp(expected, axis=0).max() > 0.01  # the probabilities are the photos', not one guess

    top = _records(run_mmcli("classify", photos, "--model", path, "--dtype", "float32", "--top-k", "2"))
    assert all(len(r["scores"]) == 2 for r in top) and [r["label"] for r in top] == [r["label"] for r in records]


def test_a_multi_label_checkpoint_scores_each_label_by_its_sigmoid(run_mmcli, tiny_models, photos, tmp_path):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    path = tmp_path / "multi-label"
    shutil.copytree(tiny_models["vit_classifier"], path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "problem_type": "multi_label_classification"}))
    records = _records(run_mmcli("classify", photos, "--model", path, "--dtype", "float32"))
    model = AutoModelForImageClassification.from_pretrained(path).eval()
    inputs = AutoImageProcessor.from_pretrained(path)(images=[load_image(p) for p in _photo_paths(photos)],
                                                      return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        expected = torch.sigmoid(model(**inputs).logits.double()).numpy()
    np.testing.assert_allclose(_scores(records, list(IMAGE_LABELS.values())), expected, atol=1e-5)
    assert not np.allclose(_scores(records, list(IMAGE_LABELS.values())).sum(axis=1), 1.0)  # not a softmax


def test_a_timm_classifier_classifies_into_the_labels_its_config_names(run_mmcli, tiny_models, photos):
    import timm
    import timm.data

    path = tiny_models["timm"]
    records = _records(run_mmcli("classify", photos, "--model", path, "--dtype", "float32"))
    model = timm.create_model(f"local-dir:{path}", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model), is_training=False)
    with torch.no_grad():
        expected = _softmax(model(torch.stack([transform(load_image(p)) for p in _photo_paths(photos)])))
    np.testing.assert_allclose(_scores(records, TIMM_LABELS), expected, atol=1e-5)
    assert [r["label"] for r in records] == [TIMM_LABELS[i] for i in expected.argmax(axis=1)]


def test_a_video_classifier_scores_each_video_as_one_clip(run_mmcli, tiny_models, tmp_path):
    from transformers import AutoImageProcessor, AutoModelForVideoClassification

    folder = tmp_path / "videos"
    folder.mkdir()
    write_video(folder / "a.mp4", drawing(0), fps=10, duration=4.0)
    write_video(folder / "b.mp4", drawing(2), fps=10, duration=3.0)
    path = tiny_models["videomae"]
    records = _records(run_mmcli("classify", folder, "--model", path, "--dtype", "float32"))
    processor = AutoImageProcessor.from_pretrained(path)
    model = AutoModelForVideoClassification.from_pretrained(path).eval()
    clips = [[f.image for f in sample_frames(folder / name, SamplingOptions(fps=None, frames=CLIP_FRAMES))]
             for name in ("a.mp4", "b.mp4")]  # fmt: skip
    with torch.no_grad():
        expected = _softmax(model(**processor(clips, return_tensors="pt")).logits)
    labels = ["archery", "juggling balls", "playing guitar"]
    assert [r["id"] for r in records] == [str(folder / "a.mp4"), str(folder / "b.mp4")]
    np.testing.assert_allclose(_scores(records, labels), expected, atol=1e-5)


def test_an_audio_classifier_scores_recordings_in_its_windows(run_mmcli, tiny_models, tmp_path):
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    folder = tmp_path / "sounds"
    folder.mkdir()
    rate = 16000
    recordings = {"tone.wav": tone(1.0, rate), "voice.wav": speech_like(1.2, rate, seed=3)}  # within a window
    for name, samples in recordings.items():
        write_wav(folder / name, samples, rate)
    path = tiny_models["ast_classifier"]
    records = _records(run_mmcli("classify", folder, "--model", path, "--dtype", "float32"))
    extractor = AutoFeatureExtractor.from_pretrained(path)
    model = AutoModelForAudioClassification.from_pretrained(path).eval()
    pcm = [np.round(np.clip(s, -1, 1) * 32767) / 32768 for s in recordings.values()]  # as the WAV holds them
    with torch.no_grad():
        expected = _softmax(model(**extractor(pcm, sampling_rate=rate, return_tensors="pt")).logits)
    labels = list(SOUND_LABELS.values())
    assert [r["id"] for r in records] == [str(folder / name) for name in recordings]
    np.testing.assert_allclose(_scores(records, labels), expected, atol=1e-5)


def test_without_labels_a_model_that_has_none_is_a_usage_error(run_mmcli, tiny_models, photos, tmp_path):
    default = run_mmcli("classify", photos)
    assert default.returncode == 2 and "no labels" in default.stderr and "classification checkpoint" in default.stderr
    clip = run_mmcli("classify", photos, "--model", tiny_models["clip"])
    assert clip.returncode == 2 and "no classifier of its own" in clip.stderr, clip.stderr
    backbone = run_mmcli("classify", photos, "--model", tiny_models["vit"])  # saved as ViTModel
    assert backbone.returncode == 2 and "ViTModel" in backbone.stderr, backbone.stderr
    features = tmp_path / "f.npy"
    assert run_mmcli("extract-features", photos, "-o", features, "--model", tiny_models["clip"]).returncode == 0
    rows = run_mmcli("classify", "--features", features)
    assert rows.returncode == 2 and "no labels" in rows.stderr
    for result in (default, clip, backbone, rows):
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("name", ["vit_classifier", "timm"])
def test_a_classifier_s_rows_are_its_logits_only_when_classifying(tiny_models, name, images):
    # extract-features takes the same checkpoint as a backbone: pooled features, not its logits.
    from mmcli.encoders import load_encoder

    features = load_encoder(str(tiny_models[name]), device="cpu", dtype="float32")
    classifier = load_encoder(str(tiny_models[name]), device="cpu", dtype="float32", head=True)
    assert features.labels is None and classifier.labels and classifier.dim == len(classifier.labels)
    assert features.encode_images(images[:1]).shape[1] == 32 != classifier.dim

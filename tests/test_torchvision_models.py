"""torchvision models (``torchvision:NAME[:WEIGHTS]``): weights from torch's own cache (``TORCH_HOME``,
laid out as a download leaves it, holding randomly initialised weights of the real architectures),
each input prepared by the weights' ``transforms()``; an image CNN's rows are the features its
classifier reads, a Kinetics 3D CNN's rows are consecutive clips of 16 frames at 15 fps (the clip
length and rate its weights' docs give), pooled per video; ``classify`` without labels gives the
softmax of the model's logits over the weights' categories."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_video_encoders import drawing
from test_video_media import write_video

from mmcli.encoders import load_encoder
from mmcli.errors import ModelNotFound
from mmcli.media.images import load_image
from mmcli.media.video import SamplingOptions, sample_frames
from mmcli.output.feature_set import read_feature_set

CLIP, RATE = 16, 15.0


@pytest.fixture
def torch_home(tiny_models, monkeypatch):
    home = tiny_models["torchvision"]
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def _reference_model(name: str, *, features: bool):
    import torchvision.models as models

    weights = models.get_model_weights(name).DEFAULT
    model = models.get_model(name, weights=weights).eval()
    if features:
        model.fc = torch.nn.Identity()  # both models' classifier is their fc layer
    return model, weights


def _normalised(rows: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(rows.float(), dim=-1).numpy()


def _clips(path) -> list[torch.Tensor]:
    """The video's frames at 15 fps, as (T, C, H, W) uint8 clips of 16 (the last filled by repeating)."""
    from torchvision.transforms.functional import pil_to_tensor

    frames = [pil_to_tensor(f.image) for f in sample_frames(path, SamplingOptions(fps=RATE))]
    clips = [frames[i : i + CLIP] for i in range(0, len(frames), CLIP)]
    return [torch.stack(clip + [clip[-1]] * (CLIP - len(clip))) for clip in clips]


def test_an_image_model_s_rows_are_the_features_its_classifier_reads(torch_home, photos):
    encoder = load_encoder("torchvision:resnet18", device="cpu", dtype="float32")
    assert encoder.family == "torchvision" and encoder.dim == 512
    model, weights = _reference_model("resnet18", features=True)
    images = [load_image(path) for path in sorted(photos.iterdir())]
    preprocess = weights.transforms()
    with torch.no_grad():
        expected = _normalised(model(torch.stack([preprocess(image) for image in images])))
    rows = encoder.encode_images(images)
    assert (rows * expected).sum(axis=1).min() >= 0.9999


def test_a_video_model_embeds_clips_at_its_weights_rate_and_pools_them(torch_home, run_mmcli, tmp_path):
    video = tmp_path / "v" / "moving.mp4"
    video.parent.mkdir()
    write_video(video, drawing(0), fps=10, duration=3.2)  # 32 frames: two clips of 16
    out = tmp_path / "rows.npy"
    result = run_mmcli("extract-features", video.parent, "-o", out, "--model", "torchvision:mc3_18",
                       "--pool", "both", "--dtype", "float32")  # fmt: skip
    assert result.returncode == 0, result.stderr
    feature_set = read_feature_set(out)
    records = feature_set.records
    assert [r["modality"] for r in records] == ["clip", "clip", "video"]
    assert records[0]["t"] == 0.0 and records[0]["end"] == pytest.approx(records[1]["t"], abs=0.11)
    assert records[0]["frames"] == records[1]["frames"] == CLIP and records[2]["clips"] == 2
    assert records[1]["id"].startswith(f"{video}#t=") and records[2]["id"] == str(video)

    model, weights = _reference_model("mc3_18", features=True)
    with torch.no_grad():
        expected = _normalised(torch.cat([model(weights.transforms()(clip).unsqueeze(0)) for clip in _clips(video)]))
    rows = np.asarray(feature_set.vectors)
    assert (rows[:2] * expected).sum(axis=1).min() >= 0.9999
    pooled = expected.mean(axis=0)
    assert float(rows[2] @ (pooled / np.linalg.norm(pooled))) >= 0.9999

    refused = run_mmcli("extract-features", video, "-o", tmp_path / "x.npy", "--model", "torchvision:mc3_18",
                        "--fps", "2")  # fmt: skip
    assert refused.returncode == 2 and "16 frames at 15 frames per second" in refused.stderr, refused.stderr


def test_classify_gives_the_softmax_of_the_model_over_its_weights_categories(torch_home, run_mmcli, tmp_path, photos):
    video = tmp_path / "v" / "one-clip.mp4"
    video.parent.mkdir()
    write_video(video, drawing(1), fps=10, duration=1.6)  # 16 frames: one clip
    result = run_mmcli("classify", video.parent, "--model", "torchvision:mc3_18", "--dtype", "float32")
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    model, weights = _reference_model("mc3_18", features=False)
    (clip,) = _clips(video)
    with torch.no_grad():
        expected = torch.softmax(model(weights.transforms()(clip).unsqueeze(0)).double(), dim=-1)[0].numpy()
    categories = weights.meta["categories"]
    assert len(record["scores"]) == len(categories) == 400
    np.testing.assert_allclose([record["scores"][c] for c in categories], expected, atol=1e-5)
    assert record["label"] == categories[int(expected.argmax())]

    top = run_mmcli("classify", photos, "--model", "torchvision:resnet18", "--top-k", "3", "--dtype", "float32")
    assert top.returncode == 0, top.stderr
    model, weights = _reference_model("resnet18", features=False)
    images = [load_image(path) for path in sorted(photos.iterdir())]
    with torch.no_grad():
        probabilities = torch.softmax(model(torch.stack([weights.transforms()(i) for i in images])).double(), -1)
    for line, row in zip(top.stdout.splitlines(), probabilities.numpy(), strict=True):
        scores = json.loads(line)["scores"]
        best = np.argsort(-row)[:3]
        assert list(scores) == [weights.meta["categories"][i] for i in best]
        np.testing.assert_allclose(list(scores.values()), row[best], atol=1e-5)


def test_weights_neither_cached_nor_downloadable_are_a_clear_error(tmp_path, monkeypatch):
    import urllib.error

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(ModelNotFound, match=r"not in torch's cache \(.*empty/hub/checkpoints/resnet18-"):
        load_encoder("torchvision:resnet18", device="cpu")
    with pytest.raises(ModelNotFound, match="its weights: IMAGENET1K_V1"):
        load_encoder("torchvision:resnet18:IMAGENET22K", device="cpu")
    with pytest.raises(ModelNotFound, match="near names: resnet18"):
        load_encoder("torchvision:resnet1", device="cpu")


def test_a_warm_process_keeps_a_torchvision_model_by_its_weights_file(torch_home, tmp_path, monkeypatch):
    from mmcli.keep import checkpoint_files

    path, stamps = checkpoint_files("torchvision:resnet18")
    assert path == str((torch_home / "hub" / "checkpoints" / stamps[0][0]).resolve()) and stamps[0][0].startswith(
        "resnet18-"
    )
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # not cached there: not kept, loaded afresh
    assert checkpoint_files("torchvision:resnet18") is None

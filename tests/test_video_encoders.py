"""Native video encoders (X-CLIP, VideoMAE): parity with reference usage, whole-clip extraction, text->video search.

Every video is generated in the test with ``cv2.VideoWriter``; the models are the tiny random checkpoints
of ``tiny_models.py`` (4 frames per clip).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from test_video_media import solid, write_video
from tiny_models import CLIP_FRAMES

from mmcli.encoders import load_encoder
from mmcli.errors import UsageError
from mmcli.items import InputItem
from mmcli.media.clips import ClipItem, clip_sampling, expand_clips, fill_clip
from mmcli.media.images import load_image
from mmcli.media.video import SamplingOptions, sample_frames
from mmcli.output.feature_set import read_feature_set
from mmcli.output.manifest import read_run_settings

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)]
TEXTS = ["a red square", "two people ride bicycles in the city", "a rocket"]


def drawing(offset: int):
    """Frames whose colour changes every second and a square that moves, so clips differ in time."""

    def draw(t: float) -> np.ndarray:
        frame = solid(COLOURS[(int(t) + offset) % len(COLOURS)])
        x = int(t * 12) % (frame.shape[1] - 8)
        frame[10:18, x : x + 8] = 255
        return frame

    return draw


@pytest.fixture(scope="module")
def media(tmp_path_factory, photos):
    folder = tmp_path_factory.mktemp("clips")
    write_video(folder / "clip.mp4", drawing(0), fps=10, duration=4.0)
    write_video(folder / "long.avi", drawing(1), fps=10, duration=8.0)
    write_video(folder / "short.mp4", drawing(2), fps=10, duration=0.2)  # 2 frames: fewer than a clip
    shutil.copy(photos / "chelsea.jpg", folder / "photo.jpg")
    (folder / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    return folder


@pytest.fixture(scope="module")
def clips(media) -> list[list[Image.Image]]:
    """Three different clips of CLIP_FRAMES frames, as mmcli samples them."""
    options = SamplingOptions(fps=None, frames=CLIP_FRAMES)
    long = [frame.image for frame in sample_frames(media / "long.avi", options)]
    return [[frame.image for frame in sample_frames(media / "clip.mp4", options)], long, long[::-1]]


@pytest.fixture(scope="module")
def xclip_index(media, tiny_models, tmp_path_factory, run_mmcli):
    """``extract-features`` of the media folder with the tiny X-CLIP (with its result)."""
    out = tmp_path_factory.mktemp("xclip-index") / "v.npy"
    return out, run_mmcli("extract-features", media, "-o", out, "--model", tiny_models["xclip"])


def _normalise(matrix: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(matrix.float(), dim=-1).numpy()


# --- parity with each family's reference usage -------------------------------------------------------------------


def test_xclip_matches_reference_usage(tiny_models, clips, images):
    """What the model card does: processor(videos=...) -> get_video_features / get_text_features."""
    from transformers import AutoModel, AutoProcessor

    path = tiny_models["xclip"]
    encoder = load_encoder(str(path), device="cpu", dtype="float32")
    assert encoder.family == "video-text" and encoder.modalities == {"video", "text", "image"}
    assert encoder.clip_frames == CLIP_FRAMES

    processor = AutoProcessor.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    with torch.inference_mode():
        videos = [
            model.get_video_features(**processor(videos=clip, return_tensors="pt")).pooler_output for clip in clips
        ]
        tokens = processor(text=TEXTS, padding=True, return_tensors="pt")
        texts = model.get_text_features(**tokens).pooler_output
        still = processor(videos=[images[0]] * CLIP_FRAMES, return_tensors="pt")
        still_clip = model.get_video_features(**still).pooler_output

    batched = encoder.encode_videos(clips, batch_size=3)
    assert batched.shape == (3, encoder.dim) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, _normalise(torch.cat(videos)), atol=1e-5)
    one_by_one = np.concatenate([encoder.encode_videos([clip]) for clip in clips])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    np.testing.assert_allclose(encoder.encode_texts(TEXTS), _normalise(texts), atol=1e-5)
    # An image is a still clip: the image repeated clip_frames times.
    np.testing.assert_allclose(encoder.encode_images(images[:1]), _normalise(still_clip), atol=1e-5)
    assert not np.allclose(batched[1], batched[2], atol=1e-3)  # frame order matters to a video model


def test_videomae_is_what_the_classifier_sees(tiny_models, clips, images):
    """A fine-tuned checkpoint: the mean over tokens through its trained fc_norm, the classifier's input."""
    from transformers import AutoProcessor, VideoMAEForVideoClassification

    path = tiny_models["videomae"]
    encoder = load_encoder(str(path), device="cpu", dtype="float32")
    assert encoder.family == "video" and encoder.modalities == {"video", "image"}
    assert encoder.clip_frames == CLIP_FRAMES and encoder.fc_norm is not None

    processor = AutoProcessor.from_pretrained(path)
    model = VideoMAEForVideoClassification.from_pretrained(path).eval()
    with torch.inference_mode():
        inputs = [processor(clip, return_tensors="pt") for clip in clips]
        pooled = torch.cat([model.fc_norm(model.videomae(**x).last_hidden_state.mean(dim=1)) for x in inputs])
        logits = torch.cat([model(**x).logits for x in inputs])
        still = processor([images[0]] * CLIP_FRAMES, return_tensors="pt")
        still_pooled = model.fc_norm(model.videomae(**still).last_hidden_state.mean(dim=1))

    raw = encoder.encode_videos(clips, batch_size=2, normalize=False)
    np.testing.assert_allclose(raw, pooled.numpy(), atol=1e-5)
    with torch.inference_mode():
        np.testing.assert_allclose(model.classifier(torch.from_numpy(raw)).numpy(), logits.numpy(), atol=1e-5)
    one_by_one = np.concatenate([encoder.encode_videos([clip]) for clip in clips])
    np.testing.assert_allclose(encoder.encode_videos(clips, batch_size=3), one_by_one, atol=1e-5)
    np.testing.assert_allclose(one_by_one, _normalise(pooled), atol=1e-5)
    np.testing.assert_allclose(encoder.encode_images(images[:1]), _normalise(still_pooled), atol=1e-5)


def test_videomae_base_checkpoint_is_the_plain_token_mean(tmp_path, clips):
    """A self-supervised checkpoint (no fc_norm; a final layer norm instead): mean of last_hidden_state."""
    from transformers import AutoModel, VideoMAEConfig, VideoMAEImageProcessor, VideoMAEModel

    config = VideoMAEConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        num_frames=CLIP_FRAMES,
        tubelet_size=2,
        use_mean_pooling=False,
    )
    torch.manual_seed(10)
    VideoMAEModel(config).eval().save_pretrained(tmp_path)
    processor = VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(tmp_path)

    encoder = load_encoder(str(tmp_path), device="cpu", dtype="float32")
    assert encoder.fc_norm is None
    model = AutoModel.from_pretrained(tmp_path).eval()
    with torch.inference_mode():
        expected = torch.cat(
            [model(**processor(clip, return_tensors="pt")).last_hidden_state.mean(1) for clip in clips]
        )
    np.testing.assert_allclose(encoder.encode_videos(clips, normalize=False), expected.numpy(), atol=1e-5)


def test_registry_claims_video_model_types():
    from types import SimpleNamespace

    from mmcli.encoders import list_encoder_families
    from mmcli.encoders.registry import ENCODERS

    families = {entry["family"]: entry["model_types"] for entry in list_encoder_families()}
    assert families["video-text"] == ["xclip"] and families["video"] == ["videomae"]
    assert ENCODERS.family_for(SimpleNamespace(model_type="xclip")).name == "video-text"
    assert ENCODERS.family_for(SimpleNamespace(model_type="videomae")).name == "video"
    # An unknown model type cut into tubelets of frames is judged a video backbone, not an image one.
    tubelets = SimpleNamespace(model_type="brand_new_videomae", num_channels=3, num_frames=16, tubelet_size=2)
    assert ENCODERS.family_for(tubelets).name == "video"


def test_short_clips_repeat_their_last_frame(tiny_models, clips):
    encoder = load_encoder(str(tiny_models["xclip"]), device="cpu", dtype="float32")
    two = clips[0][:2]
    assert fill_clip(two, 4) == [two[0], two[1], two[1], two[1]]
    np.testing.assert_allclose(encoder.encode_videos([two]), encoder.encode_videos([fill_clip(two, 4)]), atol=1e-6)
    with pytest.raises(ValueError, match="at least one frame"):
        fill_clip([], 4)
    with pytest.raises(ValueError, match="takes 4 per clip"):
        encoder.preprocess_video(clips[1] + clips[2])
    image_only = load_encoder(str(tiny_models["clip"]), device="cpu", dtype="float32")
    assert image_only.clip_frames is None
    with pytest.raises(Exception, match="cannot embed videos"):
        image_only.encode_videos([two])


def test_expand_clips_gives_one_item_per_video(media, tmp_path):
    items = [
        InputItem(id=name, modality="video", source=name, path=str(media / name))
        for name in ("clip.mp4", "short.mp4", "corrupt.mp4")
    ]
    photo = InputItem(id="photo", modality="image", source="photo", path=str(media / "photo.jpg"))
    clip, short, corrupt, passed = list(expand_clips([*items, photo], CLIP_FRAMES))
    assert isinstance(clip, ClipItem) and clip.modality == "video" and len(clip.frames) == CLIP_FRAMES
    assert clip.extra == {"frames": CLIP_FRAMES}
    assert len(short.frames) == 2 and short.extra == {"frames": 2, "padded": 2}
    assert "not a video" in corrupt.error and passed is photo
    (later,) = expand_clips(items[:1], CLIP_FRAMES, SamplingOptions(start=2.0, end=4.0))
    assert [f.tobytes() for f in later.frames] == [
        f.image.tobytes()
        for f in sample_frames(media / "clip.mp4", SamplingOptions(fps=None, frames=CLIP_FRAMES, start=2.0, end=4.0))
    ]
    data = (media / "long.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    (cut,) = expand_clips([InputItem(id="cut", modality="video", source="cut", path=str(tmp_path / "cut.avi"))], 4)
    assert cut.extra["truncated"] is True and 1 <= cut.extra["frames"] < 4
    assert cut.extra["padded"] == 4 - cut.extra["frames"]
    with pytest.raises(UsageError, match="4 evenly spaced frames"):
        clip_sampling(CLIP_FRAMES, keyframes=True)


# --- extract-features and retrieve through the CLI ---------------------------------------------------------------


def test_extract_features_embeds_each_video_as_one_clip(xclip_index, media, tiny_models, clips):
    out, result = xclip_index
    assert result.returncode == 1, result.stderr  # the corrupt video; the others are rows
    feature_set = read_feature_set(out)
    by_id = {record["id"]: row for row, record in enumerate(feature_set.records)}
    records = {record["id"]: record for record in feature_set.records}
    videos = [str(media / name) for name in ("clip.mp4", "long.avi", "short.mp4")]
    assert set(by_id) == {*videos, str(media / "photo.jpg")}
    assert all(records[v]["modality"] == "video" for v in videos)
    assert records[videos[0]]["frames"] == records[videos[1]]["frames"] == CLIP_FRAMES
    assert "padded" not in records[videos[0]] and "pool" not in records[videos[0]]
    assert records[videos[2]]["frames"] == 2 and records[videos[2]]["padded"] == 2
    assert records[str(media / "photo.jpg")]["modality"] == "image"
    errors = [json.loads(line) for line in out.with_name("v.errors.jsonl").read_text().splitlines()]
    assert [e["id"] for e in errors] == [str(media / "corrupt.mp4")] and "not a video" in errors[0]["error"]

    encoder = load_encoder(str(tiny_models["xclip"]), device="cpu", dtype="float32")
    short = [f.image for f in sample_frames(media / "short.mp4", SamplingOptions(fps=None, frames=CLIP_FRAMES))]
    expected = encoder.encode_videos([clips[0], clips[1], short])
    rows = np.asarray(feature_set.vectors)
    np.testing.assert_allclose(rows[[by_id[v] for v in videos]], expected, atol=1e-5)
    photo = encoder.encode_images([load_image(media / "photo.jpg")])
    np.testing.assert_allclose(rows[by_id[str(media / "photo.jpg")]], photo[0], atol=1e-5)

    video_settings = read_run_settings(out)["video"]
    assert video_settings["clip_frames"] == video_settings["frames"] == CLIP_FRAMES
    assert video_settings["fps"] is None and video_settings["keyframes"] is False and "pool" not in video_settings


def test_text_query_retrieves_videos(xclip_index, run_mmcli, tiny_models, media):
    out, _ = xclip_index
    feature_set = read_feature_set(out)
    ids = feature_set.ids
    result = run_mmcli("retrieve", "--index", out, "--query", TEXTS[0], "--query", TEXTS[1], "-k", "3")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["query"] for line in lines] == TEXTS[:2]

    encoder = load_encoder(str(tiny_models["xclip"]), device="cpu", dtype="float32")
    scores = encoder.encode_texts(TEXTS[:2]) @ np.asarray(feature_set.vectors).T
    for line, row in zip(lines, scores, strict=True):
        order = np.argsort(-row, kind="stable")[:3]
        assert [hit["id"] for hit in line["hits"]] == [ids[i] for i in order]
        assert [hit["score"] for hit in line["hits"]] == pytest.approx(row[order].tolist(), abs=1e-5)
    videos = {str(media / name) for name in ("clip.mp4", "long.avi", "short.mp4")}
    top_video = next(hit for hit in lines[0]["hits"] if hit["id"] in videos)
    assert top_video["source"] == top_video["id"]

    image_query = run_mmcli("retrieve", "--index", out, "--query-image", media / "photo.jpg", "-k", "1")
    assert image_query.returncode == 0, image_query.stderr
    (hit,) = json.loads(image_query.stdout)["hits"]
    assert hit["id"] == str(media / "photo.jpg") and hit["score"] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--fps", "2"], ["--fps does not apply", "4 frames"]),
        (["--pool", "none"], ["--pool none does not apply", "one row per video"]),
        (["--frames", "8"], ["--frames 8 does not fit", "--frames 4"]),
    ],
)
def test_frame_sampling_flags_are_refused_with_a_video_model(run_mmcli, tiny_models, media, tmp_path, flags, words):
    out = tmp_path / "v.npy"
    model = str(tiny_models["xclip"])
    result = run_mmcli("extract-features", media / "clip.mp4", "-o", out, "--model", model, *flags)
    assert result.returncode == 2
    assert f"model {model!r} (xclip) embeds each video whole" in result.stderr
    assert all(word in result.stderr for word in words), result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_videomae_through_the_cli(run_mmcli, tiny_models, media, tmp_path):
    out = tmp_path / "m.npy"
    model = str(tiny_models["videomae"])
    args = ["--frames", str(CLIP_FRAMES), "--start", "2", "--end", "6"]
    result = run_mmcli("extract-features", media / "long.avi", media / "photo.jpg", "-o", out, "--model", model, *args)
    assert result.returncode == 0, result.stderr
    feature_set = read_feature_set(out)
    video, photo = feature_set.records
    assert video["modality"] == "video" and video["frames"] == CLIP_FRAMES and photo["modality"] == "image"
    encoder = load_encoder(model, device="cpu", dtype="float32")
    options = SamplingOptions(fps=None, frames=CLIP_FRAMES, start=2.0, end=6.0)
    frames = [frame.image for frame in sample_frames(media / "long.avi", options)]
    np.testing.assert_allclose(feature_set.vectors[0], encoder.encode_videos([frames])[0], atol=1e-5)
    assert read_run_settings(out)["video"]["start"] == 2.0

    text = run_mmcli("extract-features", "--text", "a cat", "-o", tmp_path / "t.npy", "--model", model)
    assert text.returncode == 2
    assert "embeds image, video only, not texts" in text.stderr and "Traceback" not in text.stderr


def test_xclip_embeds_texts_through_the_cli(run_mmcli, tiny_models, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "t.npy"
    model = str(tiny_models["xclip"])
    result = run_mmcli("extract-features", "--modality", "text", texts, "-o", out, "--model", model)
    assert result.returncode == 0, result.stderr
    feature_set = read_feature_set(out)
    assert [r["modality"] for r in feature_set.records] == ["text"] * 3
    encoder = load_encoder(model, device="cpu", dtype="float32")
    np.testing.assert_allclose(feature_set.vectors, encoder.encode_texts(TEXTS), atol=1e-5)

"""``mmcli caption`` on videos: segment records at scene cuts, merged when they say the same thing, a summary."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from test_video_media import solid, write_video

from mmcli.caption import VideoCaptions, caption_items, join_captions, same_meaning_key
from mmcli.io.inputs import discover_images
from mmcli.media.clips import expand_videos
from mmcli.media.video import SamplingOptions, sample_frames

# Scenes of one second each. Two shades of green follow each other: a cut for scene detection, but
# the colour namer below calls both "green", so their segments must merge. Red comes back at the end.
SCENES = [(200, 20, 20), (20, 120, 20), (60, 230, 60), (20, 20, 200), (200, 20, 20)]
NAMES = {0: "a red screen", 1: "a green screen.", 2: "A green screen", 3: "a blue screen", 4: "a red screen"}


def scenes(t: float) -> np.ndarray:
    return solid(SCENES[min(int(t), len(SCENES) - 1)])


class ColourNamer:
    """A stand-in captioner that names a frame's dominant colour, so expected captions are known."""

    decode_min_side = None
    default_batch_size = 3
    clip_frames = None

    def __init__(self) -> None:
        self.calls: list[int] = []

    def generate(self, images, prompt=None, options=None) -> list[str]:
        self.calls.append(len(images))
        names = []
        for image in images:
            r, g, b = np.asarray(image, dtype=np.float32).reshape(-1, 3).mean(axis=0)
            if g > max(r, b):
                names.append("a green screen." if g < 175 else "A green screen")
            else:
                names.append("a red screen" if r > b else "a blue screen")
        return names


@pytest.fixture(scope="module")
def videos(tmp_path_factory, photos):
    folder = tmp_path_factory.mktemp("videos")
    write_video(folder / "scenes.mp4", scenes, fps=10, duration=5.0)
    return folder


def run_engine(paths, sampling, *, summary=True):
    captioner = ColourNamer()
    items = expand_videos(discover_images([str(p) for p in paths], videos=True), sampling)
    assembler = VideoCaptions("namer", summary=summary)
    records = []
    for batch in caption_items(items, captioner, workers=0):
        for outcome in assembler.records(batch):
            assert outcome.error is None, outcome.error
            records.append(outcome.value)
    return records, captioner, assembler


def test_keyframes_give_one_segment_per_scene_merged_where_captions_agree(videos):
    path = str(videos / "scenes.mp4")
    records, captioner, assembler = run_engine([path], SamplingOptions(keyframes=True))
    segments, summary = records[:-1], records[-1]
    # Cuts at 1, 2, 3, 4 s; the green scenes (1-2 and 2-3 s) merge; each boundary within one frame (0.1 s).
    assert [s["caption"] for s in segments] == ["a red screen", "a green screen.", "a blue screen", "a red screen"]
    expected = [(0.0, 1.0), (1.0, 3.0), (3.0, 4.0), (4.0, 5.0)]
    for segment, (t, end) in zip(segments, expected, strict=True):
        assert list(segment) == ["id", "source", "t", "end", "caption", "model"]
        assert segment["t"] == pytest.approx(t, abs=0.11) and segment["end"] == pytest.approx(end, abs=0.11)
        assert segment["id"] == f"{path}#t={segment['t']:.3f},{segment['end']:.3f}"
        assert segment["source"] == path and segment["model"] == "namer"
    for before, after in itertools.pairwise(segments):
        assert before["end"] == after["t"]  # segments tile the video
    assert segments[-1]["end"] == pytest.approx(5.0, abs=1e-3)  # the video's end, not the last keyframe
    # The summary joins the distinct captions in order: red once, although it comes back.
    assert summary == {
        "id": path,
        "source": path,
        "summary": "a red screen; a green screen; a blue screen",
        "segments": 4,
        "model": "namer",
    }
    assert assembler.videos == 1 and not assembler.pending
    # Five keyframes reached the captioner in batches of at most three, the end marker riding along.
    assert sum(captioner.calls) == 5 and max(captioner.calls) <= 3


def test_no_summary_and_fps_sampling(videos):
    path = str(videos / "scenes.mp4")
    records, _, _ = run_engine([path], SamplingOptions(fps=2.0, start=1.0, end=4.0), summary=False)
    # Frames at 1.0, 1.5, ..., 3.5 s: green x4 (merged), blue x2 (merged); the range ends at --end.
    assert [(r["t"], r["end"], r["caption"]) for r in records] == [
        (pytest.approx(1.0, abs=0.01), pytest.approx(3.0, abs=0.01), "a green screen."),
        (pytest.approx(3.0, abs=0.01), 4.0, "a blue screen"),
    ]
    assert all("summary" not in r for r in records)


def test_images_and_videos_mixed_keep_input_order(videos, photos):
    photo = sorted(photos.glob("*.jpg"))[0]
    records, _, assembler = run_engine([photo, videos / "scenes.mp4", photo], SamplingOptions(frames=2))
    assert records[0]["caption"] == records[-1]["caption"] and set(records[0]) == {"id", "source", "caption", "model"}
    assert [r.get("caption") for r in records[1:3]] == ["a red screen", "A green screen"]
    assert [r["id"] for r in records] == [
        str(photo),
        f"{videos / 'scenes.mp4'}#t=0.000,2.500",
        f"{videos / 'scenes.mp4'}#t=2.500,5.000",
        str(videos / "scenes.mp4"),
        str(photo),
    ]
    assert assembler.images == 2 and assembler.videos == 1


def test_same_meaning_and_summary_joining():
    assert same_meaning_key("A dog, on grass!") == same_meaning_key("a dog on  grass") == "a dog on grass"
    assert same_meaning_key("a dog on grass") != same_meaning_key("a dog on the grass")
    assert join_captions(["a dog", "a cat."]) == "a dog; a cat"
    assert join_captions(["A dog runs.", "It stops!"]) == "A dog runs. It stops!"


def caption_cli(run_mmcli, tiny_models, *args):
    return run_mmcli("caption", *map(str, args), "--model", str(tiny_models["blip"]), "--min-new-tokens", "3",
                     "--max-new-tokens", "5")  # fmt: skip


def test_cli_captions_videos_with_segments_equal_to_frame_captions(run_mmcli, tiny_models, videos, tmp_path):
    from mmcli.captioners import GenerationOptions, load_captioner

    path = videos / "scenes.mp4"
    out = tmp_path / "captions.jsonl"
    result = caption_cli(run_mmcli, tiny_models, path, "-o", out)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    # In-process: the keyframes the CLI samples, captioned one at a time, merged where equal.
    frames = sample_frames(path, SamplingOptions(keyframes=True))
    captioner = load_captioner(str(tiny_models["blip"]), device="cpu", dtype="float32")
    options = GenerationOptions(min_new_tokens=3, max_new_tokens=5)
    captions = [captioner.generate([frame.image], None, options)[0] for frame in frames]
    merged = [c for i, c in enumerate(captions) if i == 0 or same_meaning_key(c) != same_meaning_key(captions[i - 1])]
    assert [r["caption"] for r in records[:-1]] == merged
    assert records[0]["t"] == 0.0 and records[-2]["end"] == pytest.approx(5.0, abs=1e-3)
    assert records[-1]["id"] == str(path) and records[-1]["segments"] == len(merged)
    # The manifest gives every record the video's file entry, so the output is a complete description.
    manifest = [json.loads(line) for line in (tmp_path / "captions.files.jsonl").read_text().splitlines()]
    assert manifest[0]["settings"]["video"]["keyframes"] is True
    assert [entry["id"] for entry in manifest[1:]] == [r["id"] for r in records]
    assert {entry["path"] for entry in manifest[1:]} == {str(path)}

    text = caption_cli(run_mmcli, tiny_models, path, "--format", "text", "--no-summary")
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines() == merged


def test_cli_video_errors_and_refusals(run_mmcli, tiny_models, videos, photos, tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    result = caption_cli(run_mmcli, tiny_models, corrupt, videos / "scenes.mp4")
    assert result.returncode == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[0]["id"] == str(corrupt) and "not a video" in records[0]["error"]
    assert records[-1]["id"] == str(videos / "scenes.mp4") and "summary" in records[-1]
    assert result.stderr.count("skipping") == 1

    both = caption_cli(run_mmcli, tiny_models, videos / "scenes.mp4", "--fps", "1", "--keyframes")
    assert both.returncode == 2 and "--fps or --keyframes" in both.stderr


def test_caption_update_with_videos_equals_a_fresh_run(run_mmcli, tiny_models, videos, photos, tmp_path):
    folder = tmp_path / "library"
    folder.mkdir()
    shutil.copy(sorted(photos.glob("*.jpg"))[0], folder / "photo.jpg")
    shutil.copy(videos / "scenes.mp4", folder / "scenes.mp4")
    write_video(folder / "short.avi", scenes, fps=10, duration=2.0)
    out = tmp_path / "captions.jsonl"
    assert caption_cli(run_mmcli, tiny_models, folder, "-o", out, "-q").returncode == 0
    assert sum("summary" in json.loads(line) for line in out.read_text().splitlines()) == 2

    (folder / "scenes.mp4").rename(folder / "renamed.mp4")  # its segments and summary reused, renamed
    (folder / "short.avi").unlink()  # its records dropped
    shutil.copy(sorted(photos.glob("*.jpg"))[1], folder / "second.jpg")  # new: captioned
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))  # an error, as in a fresh run

    updated = caption_cli(run_mmcli, tiny_models, folder, "-o", out, "--update")
    assert updated.returncode == 1, updated.stderr
    assert "2 inputs kept (1 recognised by content), 1 captioned, 1 dropped; 1 failed" in updated.stderr

    fresh = tmp_path / "fresh.jsonl"
    assert caption_cli(run_mmcli, tiny_models, folder, "-o", fresh, "-q").returncode == 1
    assert out.read_text() == fresh.read_text()  # segments, summaries, images and the error record, in order
    assert (tmp_path / "captions.files.jsonl").read_text() == (tmp_path / "fresh.files.jsonl").read_text()
    renamed = [json.loads(line) for line in out.read_text().splitlines() if "renamed.mp4" in line]
    assert renamed[0]["id"].startswith(f"{folder / 'renamed.mp4'}#t=0.000,") and "summary" in renamed[-1]

    other = caption_cli(run_mmcli, tiny_models, folder, "-o", out, "--update", "--fps", "1")
    assert other.returncode == 2 and "--update must use the same settings" in other.stderr
    assert out.read_text() == fresh.read_text()


@pytest.fixture(scope="module")
def git_video_path(tiny_models):
    return tiny_models["git_video"]


def test_video_native_captioner_captions_each_video_whole(run_mmcli, git_video_path, videos, photos, tmp_path):
    from mmcli.captioners import GenerationOptions, load_captioner

    path = videos / "scenes.mp4"
    photo = sorted(photos.glob("*.jpg"))[0]
    args = ["--model", str(git_video_path), "--min-new-tokens", "3", "--max-new-tokens", "6"]
    result = run_mmcli("caption", str(photo), str(path), "--start", "1", *args)
    assert result.returncode == 0, result.stderr
    image, segment, summary = (json.loads(line) for line in result.stdout.splitlines())
    # In-process: the model's 4 frames, evenly spaced over 1..5 s, captioned as one clip.
    captioner = load_captioner(str(git_video_path), device="cpu", dtype="float32")
    options = GenerationOptions(min_new_tokens=3, max_new_tokens=6)
    frames = [frame.image for frame in sample_frames(path, SamplingOptions(frames=4, start=1.0))]
    assert [frame.t for frame in sample_frames(path, SamplingOptions(frames=4, start=1.0))] == pytest.approx(
        [1.0, 2.0, 3.0, 4.0], abs=0.01
    )
    expected = captioner.generate_videos([frames], None, options)[0]
    assert segment == {
        "id": f"{path}#t=1.000,5.000",
        "source": str(path),
        "t": 1.0,
        "end": pytest.approx(5.0, abs=1e-3),
        "caption": expected,
        "model": str(git_video_path),
    }
    assert summary["id"] == str(path) and summary["summary"] == expected and summary["segments"] == 1
    assert image["caption"] == captioner.generate([Image.open(photo).convert("RGB")], None, options)[0]

    refused = run_mmcli("caption", str(path), "--keyframes", *args)
    assert refused.returncode == 2 and "captions each video whole, as one clip of 4 frames" in refused.stderr

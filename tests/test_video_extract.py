"""``mmcli extract-features`` on videos: frame rows with their times, pooled video rows, cut and corrupt files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_video_media import solid, write_video

from mmcli.output.feature_set import read_feature_set

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)]


def scenes(t: float) -> np.ndarray:
    """A colour that changes every second, with a square moving across it, so frames differ."""
    frame = solid(COLOURS[int(t) % len(COLOURS)])
    x = int(t * 10) % (frame.shape[1] - 8)
    frame[10:18, x : x + 8] = 255
    return frame


@pytest.fixture(scope="module")
def media(tmp_path_factory, photos):
    folder = tmp_path_factory.mktemp("media")
    write_video(folder / "clip.mp4", scenes, fps=10, duration=4.0)
    write_video(folder / "long.avi", scenes, fps=10, duration=8.0)
    shutil.copy(sorted(photos.glob("*.jpg"))[0], folder / "photo.jpg")
    (folder / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    return folder


def extract(run_mmcli, tiny_models, inputs, out, *extra):
    return run_mmcli("extract-features", *map(str, inputs), "-o", str(out), "--model", str(tiny_models["clip"]), *extra)


def test_videos_in_a_folder_give_one_pooled_row_each_and_corrupt_ones_an_error(run_mmcli, tiny_models, media, tmp_path):
    out = tmp_path / "media.npy"
    result = extract(run_mmcli, tiny_models, [media], out)
    assert result.returncode == 1, result.stderr  # the corrupt video
    feature_set = read_feature_set(out)
    by_id = {record["id"]: record for record in feature_set.records}
    assert set(by_id) == {str(media / name) for name in ("clip.mp4", "long.avi", "photo.jpg")}
    clip = by_id[str(media / "clip.mp4")]
    assert clip["modality"] == "video" and clip["frames"] == 4 and clip["pool"] == "mean"
    assert by_id[str(media / "long.avi")]["frames"] == 8
    assert by_id[str(media / "photo.jpg")]["modality"] == "image"
    assert np.allclose(np.linalg.norm(feature_set.vectors, axis=1), 1.0, atol=1e-5)
    errors = [json.loads(line) for line in (tmp_path / "media.errors.jsonl").read_text().splitlines()]
    assert [e["id"] for e in errors] == [str(media / "corrupt.mp4")]
    assert "not a video" in errors[0]["error"]


def test_pooled_row_is_the_mean_of_the_frame_rows(run_mmcli, tiny_models, media, tmp_path):
    out = tmp_path / "both.npy"
    result = extract(run_mmcli, tiny_models, [media / "clip.mp4"], out, "--pool", "both", "--fps", "2")
    assert result.returncode == 0, result.stderr
    feature_set = read_feature_set(out)
    *frames, video = feature_set.records
    assert [f["t"] for f in frames] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5], abs=1e-3)
    assert all(f["modality"] == "frame" and f["video"] == str(media / "clip.mp4") for f in frames)
    assert frames[1]["id"] == f"{media / 'clip.mp4'}#t=0.500"
    assert video["modality"] == "video" and video["frames"] == len(frames)
    rows = np.asarray(feature_set.vectors)
    mean = rows[:-1].mean(axis=0)
    np.testing.assert_allclose(rows[-1], mean / np.linalg.norm(mean), atol=1e-6)

    maxed = tmp_path / "max.npy"
    assert extract(run_mmcli, tiny_models, [media / "clip.mp4"], maxed, "--pool", "max", "--fps", "2").returncode == 0
    top = rows[:-1].max(axis=0)
    np.testing.assert_allclose(read_feature_set(maxed).vectors[0], top / np.linalg.norm(top), atol=1e-6)


def test_frame_rows_only_with_sampling_modes(run_mmcli, tiny_models, media, tmp_path):
    out = tmp_path / "frames.npy"
    args = ["--pool", "none", "--frames", "3", "--start", "2", "--end", "8"]
    assert extract(run_mmcli, tiny_models, [media / "long.avi"], out, *args).returncode == 0
    assert [r["t"] for r in read_feature_set(out).records] == pytest.approx([2.0, 4.0, 6.0], abs=1e-3)
    cuts = tmp_path / "cuts.npy"
    assert extract(run_mmcli, tiny_models, [media / "clip.mp4"], cuts, "--pool", "none", "--keyframes").returncode == 0
    assert [r["t"] for r in read_feature_set(cuts).records] == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=0.11)


def test_a_truncated_video_is_used_and_marked(run_mmcli, tiny_models, media, tmp_path):
    data = (media / "long.avi").read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "cut.npy"
    result = extract(run_mmcli, tiny_models, [cut], out)
    assert result.returncode == 0, result.stderr
    (record,) = read_feature_set(out).records
    assert record["truncated"] is True and 1 <= record["frames"] < 8


def test_update_with_videos_equals_a_fresh_run_and_embeds_only_what_changed(run_mmcli, tiny_models, photos, tmp_path):
    folder = tmp_path / "library"
    folder.mkdir()
    for index, photo in enumerate(sorted(photos.glob("*.jpg"))[:2]):
        shutil.copy(photo, folder / f"p{index}.jpg")
    write_video(folder / "a.mp4", scenes, fps=10, duration=3.0)
    write_video(folder / "b.avi", scenes, fps=10, duration=2.0)
    out, flags = tmp_path / "set.npy", ("--pool", "both", "-b", "4")  # frame rows and a pooled row per video
    assert extract(run_mmcli, tiny_models, [folder], out, *flags).returncode == 0

    (folder / "a.mp4").rename(folder / "renamed.mp4")  # all its rows reused under the new id
    (folder / "b.avi").unlink()  # its frame rows and pooled row dropped
    write_video(folder / "c.mp4", lambda t: scenes(t + 1), fps=10, duration=2.0)  # new: embedded
    shutil.copy(sorted(photos.glob("*.jpg"))[3], folder / "p1.jpg")  # modified: embedded again
    (folder / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))  # fails as in a fresh run

    updated = extract(run_mmcli, tiny_models, [folder], out, *flags, "--update")
    assert updated.returncode == 1, updated.stderr
    assert "2 inputs kept (1 recognised by content), 2 embedded, 1 dropped; 1 failed" in updated.stderr

    fresh = tmp_path / "fresh.npy"
    assert extract(run_mmcli, tiny_models, [folder], fresh, *flags).returncode == 1
    got, want = read_feature_set(out), read_feature_set(fresh)
    assert got.records == want.records  # frame rows (t, video) and pooled rows, order included
    assert [r["id"] for r in got.records if r.get("video") == str(folder / "renamed.mp4")] == [
        f"{folder / 'renamed.mp4'}#t={t:.3f}" for t in (0, 1, 2)
    ]
    np.testing.assert_allclose(got.vectors, want.vectors, rtol=0, atol=1e-6)
    for suffix in (".files.jsonl", ".errors.jsonl"):
        assert out.with_suffix(suffix).read_text() == fresh.with_suffix(suffix).read_text()

    other = extract(run_mmcli, tiny_models, [folder], out, "--pool", "both", "--fps", "2", "--update")
    assert other.returncode == 2 and "--update must use the same settings" in other.stderr
    assert "video.fps=1.0, this run has video.fps=2.0" in other.stderr


def test_update_keeps_a_vanished_videos_rows_together_with_keep_missing(run_mmcli, tiny_models, photos, tmp_path):
    folder = tmp_path / "library"
    folder.mkdir()
    shutil.copy(sorted(photos.glob("*.jpg"))[0], folder / "photo.jpg")
    write_video(folder / "clip.mp4", scenes, fps=10, duration=2.0)
    out = tmp_path / "set.npy"
    assert extract(run_mmcli, tiny_models, [folder], out, "--pool", "both").returncode == 0
    before = read_feature_set(out)
    video_rows = [row for row, r in enumerate(before.records) if r["source"] == str(folder / "clip.mp4")]
    (folder / "clip.mp4").unlink()
    kept = extract(run_mmcli, tiny_models, [folder], out, "--pool", "both", "--update", "--keep-missing")
    assert kept.returncode == 0, kept.stderr
    assert f"{len(video_rows)} rows of vanished files kept" in kept.stderr
    after = read_feature_set(out)
    photo_row = next(row for row in range(len(before)) if row not in video_rows)  # clip.mp4 sorts first
    assert after.records == [before.records[photo_row], *(before.records[row] for row in video_rows)]
    np.testing.assert_array_equal(after.vectors[1:], before.vectors[video_rows])


@pytest.mark.parametrize("model", ["clip", "xclip"])  # sampled frames, and one clip of frames
def test_a_start_past_the_end_gives_the_videos_duration(run_mmcli, tiny_models, media, tmp_path, model):
    out = tmp_path / "late.npy"
    args = ["extract-features", media / "clip.mp4", "-o", out, "--model", tiny_models[model], "--start", "60"]
    result = run_mmcli(*args)
    assert result.returncode == 1
    (error,) = [json.loads(line) for line in out.with_suffix(".errors.jsonl").read_text().splitlines()]
    assert error["error"] == "--start 60 is at or past the end of the video, which is 4.0 s long"


def test_frames_of_a_video_that_failed_part_way_are_not_pooled_into_the_next():
    from mmcli.extract import Pooler
    from mmcli.items import InputItem
    from mmcli.media.clips import VIDEO_END, FrameItem, VideoEnd
    from mmcli.pipeline import Outcome

    def frame(video: str, t: float, value: float) -> Outcome:
        item = FrameItem(f"{video}#t={t:.3f}", "frame", video, extra={"t": t, "video": video})
        return Outcome(item, np.array([value, 1.0], np.float32))

    failed = Outcome(InputItem("a.mp4", "video", "a.mp4"), error="decoding failed at 2.0 s")
    end = Outcome(VideoEnd("b.mp4", VIDEO_END, "b.mp4"))
    rows = Pooler("mean", normalize=False).rows([frame("a.mp4", 0, 100.0), frame("a.mp4", 1, 100.0), failed,
                                                 frame("b.mp4", 0, 2.0), frame("b.mp4", 1, 4.0), end])  # fmt: skip
    assert [(row.item.id, row.error) for row in rows] == [("a.mp4", "decoding failed at 2.0 s"), ("b.mp4", None)]
    np.testing.assert_allclose(rows[1].value, [3.0, 1.0])  # b's frames alone, not a's

"""``mmcli extract-features`` on videos: frame rows with their times, pooled video rows, cut and corrupt files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_video_media import solid, write_video

from mmcli.io.features import read_feature_set

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


def test_update_refuses_videos_rather_than_leaving_them_out(run_mmcli, tiny_models, media, photos, tmp_path):
    folder = tmp_path / "library"
    folder.mkdir()
    shutil.copy(sorted(photos.glob("*.jpg"))[0], folder / "photo.jpg")
    out = tmp_path / "set.npy"
    assert extract(run_mmcli, tiny_models, [folder], out).returncode == 0
    before = out.read_bytes()
    shutil.copy(media / "clip.mp4", folder / "new.mp4")
    update = extract(run_mmcli, tiny_models, [folder], out, "--update")
    assert update.returncode == 2 and f"the inputs include videos ({folder / 'new.mp4'})" in update.stderr
    assert out.read_bytes() == before
    (folder / "new.mp4").unlink()
    assert extract(run_mmcli, tiny_models, [media / "clip.mp4"], tmp_path / "v.npy").returncode == 0
    update = extract(run_mmcli, tiny_models, [folder], tmp_path / "v.npy", "--update")
    assert update.returncode == 2 and "holds video results" in update.stderr

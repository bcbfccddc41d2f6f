"""Video decoding: frames sampled by container time, scene cuts found, damaged files reported readably.

Every test video is generated inside the test with ``cv2.VideoWriter``, in ``tmp_path``; nothing binary
is committed. Sizes are tiny so the whole file runs in seconds.
"""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
from collections.abc import Callable, Iterable

import cv2
import numpy as np
import pytest

from mmcli.errors import ItemError, UsageError
from mmcli.media.video import (
    SCENE_ANALYSIS_FPS,
    VIDEO_EXTENSIONS,
    Frame,
    SamplingOptions,
    VideoReader,
    is_video_path,
    sample_frames,
)

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
BLACK = (0, 0, 0)
WHITE = (255, 255, 255)
SIZE = (64, 48)  # width, height
CUTS = (2.0, 5.5)  # seconds at which the scene video changes colour
SCENE_COLOURS = (RED, GREEN, BLUE)
TOLERANCE = 1e-3


def write_video(
    path,
    frames: Iterable[np.ndarray] | Callable[[float], np.ndarray],
    fps: float = 10.0,
    size: tuple[int, int] = SIZE,
    *,
    duration: float | None = None,
):
    """Write RGB frames (arrays, or ``draw(t)`` called for each frame time up to ``duration``) to ``path``.

    The codec follows the extension: MJPG for .avi/.mkv/.mjpeg, MPEG-4 Part 2 otherwise, both of
    which every FFmpeg build of OpenCV can write.
    """
    if callable(frames):
        assert duration is not None, "a draw function needs a duration"
        draw = frames
        frames = (draw(i / fps) for i in range(round(duration * fps)))
    codec = "MJPG" if str(path).endswith((".avi", ".mkv", ".mjpeg")) else "mp4v"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)
    assert writer.isOpened(), f"this OpenCV build cannot write {codec} into {os.path.basename(path)}"
    try:
        for rgb in frames:
            assert rgb.shape == (size[1], size[0], 3)
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def solid(colour, size=SIZE) -> np.ndarray:
    return np.full((size[1], size[0], 3), colour, dtype=np.uint8)


def scene_colour(t: float):
    return SCENE_COLOURS[sum(t >= cut for cut in CUTS)]


def scenes(t: float) -> np.ndarray:
    """Solid colour scenes changing at CUTS."""
    return solid(scene_colour(t))


def scenes_with_moving_square(t: float) -> np.ndarray:
    """The same scenes with a large grey square crossing the picture, 30 pixels a second."""
    frame = solid(scene_colour(t))
    x = round(30 * t) % (SIZE[0] - 16)
    frame[16:32, x : x + 16] = (128, 128, 128)
    return frame


def moving_square_only(t: float) -> np.ndarray:
    """A white square bouncing across a black background, fast: motion but never a cut."""
    frame = solid(BLACK)
    travel = SIZE[0] - 20
    position = round(60 * t) % (2 * travel)
    x = position if position < travel else 2 * travel - position
    frame[10:30, x : x + 20] = WHITE
    return frame


@pytest.fixture
def scene_video(tmp_path):
    return write_video(tmp_path / "scenes.mp4", scenes, fps=10, duration=8.0)


@pytest.fixture
def counting_video(tmp_path):
    """10 fps, 8 s, frame i has grey level 3*i so a frame's identity can be checked from its pixels."""
    return write_video(tmp_path / "count.avi", (solid((3 * i,) * 3) for i in range(80)), fps=10)


def times(frames: list[Frame]) -> list[float]:
    return [frame.t for frame in frames]


def close_to(pixel, expected, tolerance=24):
    return all(abs(int(a) - int(e)) <= tolerance for a, e in zip(pixel, expected, strict=True))


def item_error(path, **kwargs) -> str:
    with pytest.raises(ItemError) as caught:
        sample_frames(path, **kwargs)
    message = str(caught.value)
    assert "Traceback" not in message and "cv2.error" not in message and "Error" not in message
    return message


# --- paths and options -------------------------------------------------------------------------------------------


def test_is_video_path_goes_by_extension():
    assert is_video_path("clip.mp4") and is_video_path("A/B/CLIP.MKV") and is_video_path("x.webm")
    assert not is_video_path("photo.jpg") and not is_video_path("notes.txt") and not is_video_path("mp4")
    assert {".mp4", ".mov", ".avi", ".ts", ".ogv"} <= VIDEO_EXTENSIONS


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"fps": 0}, "positive"),
        ({"fps": -2.0}, "positive"),
        ({"fps": float("nan")}, "positive"),
        ({"fps": None}, "sampling mode"),
        ({"frames": 0}, "at least 1"),
        ({"frames": 4, "keyframes": True}, "not both"),
        ({"start": -1.0}, "start"),
        ({"start": 2.0, "end": 2.0}, "after the start"),
        ({"start": 3.0, "end": 1.0}, "after the start"),
        ({"keyframes": True, "scene_threshold": 0.0}, "between 0 and 1"),
        ({"keyframes": True, "scene_threshold": 1.5}, "between 0 and 1"),
    ],
)
def test_sampling_options_refuse_bad_values(kwargs, words):
    with pytest.raises(UsageError, match=words):
        SamplingOptions(**kwargs)


def test_sampling_options_accept_each_mode():
    assert SamplingOptions().fps == 1.0
    SamplingOptions(fps=None, frames=8)
    SamplingOptions(fps=None, keyframes=True, scene_threshold=0.5, start=1.0, end=2.0)
    SamplingOptions(frames=3)  # the default fps is simply not used


def test_importing_the_module_does_not_import_cv2():
    code = "import sys, mmcli.media.video; assert 'cv2' not in sys.modules, 'cv2 imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- fps and frames sampling -------------------------------------------------------------------------------------


def test_probe_reports_the_container(counting_video):
    with VideoReader(counting_video) as reader:
        info = reader.info
    assert (info.width, info.height, info.fps, info.frame_count) == (64, 48, 10.0, 80)
    assert info.duration == pytest.approx(8.0)


def test_fps_picks_the_first_frame_at_each_target_time(counting_video):
    with VideoReader(counting_video, SamplingOptions(fps=2)) as reader:
        frames = list(reader.frames())
        assert not reader.truncated and reader.frames_decoded == 80
    assert times(frames) == pytest.approx([k * 0.5 for k in range(16)], abs=TOLERANCE)
    assert [frame.index for frame in frames] == list(range(0, 80, 5))
    for frame in frames:  # the pixels are those of the frame the timestamp names
        assert close_to(frame.image.getpixel((32, 24)), (3 * frame.index,) * 3, tolerance=6)


def test_fps_between_frames_takes_the_next_frame(counting_video):
    frames = sample_frames(counting_video, SamplingOptions(fps=3))
    # targets 0, 1/3, 2/3, 1, ... each answered by the first 10 fps frame at or after it
    assert times(frames)[:4] == pytest.approx([0.0, 0.4, 0.7, 1.0], abs=TOLERANCE)
    assert len(frames) == 24


def test_fps_above_the_video_rate_never_repeats_a_frame(counting_video):
    frames = sample_frames(counting_video, SamplingOptions(fps=25))
    assert [frame.index for frame in frames] == list(range(80))


def test_evenly_spaced_frames(counting_video):
    frames = sample_frames(counting_video, SamplingOptions(frames=5))
    assert times(frames) == pytest.approx([0.0, 1.6, 3.2, 4.8, 6.4], abs=TOLERANCE)


def test_more_frames_than_the_video_has_gives_each_frame_once(counting_video):
    frames = sample_frames(counting_video, SamplingOptions(frames=200, end=2.0))
    assert [frame.index for frame in frames] == list(range(20))


def test_start_and_end_bound_the_reading(counting_video):
    with VideoReader(counting_video, SamplingOptions(fps=2, start=1.0, end=3.0)) as reader:
        frames = list(reader.frames())
        assert times(frames) == pytest.approx([1.0, 1.5, 2.0, 2.5], abs=TOLERANCE)
        assert reader.frames_decoded <= 31  # stopped at the end time, not at the end of the file
        assert not reader.truncated

    with VideoReader(counting_video, SamplingOptions(frames=4, start=2.0, end=6.0)) as reader:
        frames = list(reader.frames())
        assert times(frames) == pytest.approx([2.0, 3.0, 4.0, 5.0], abs=TOLERANCE)
        assert reader.frames_decoded == 51  # stopped after the last frame asked for
        assert not reader.truncated


def test_end_past_the_video_is_fine(counting_video):
    frames = sample_frames(counting_video, SamplingOptions(frames=4, start=6.0, end=100.0))
    assert times(frames) == pytest.approx([6.0, 6.5, 7.0, 7.5], abs=TOLERANCE)


def test_start_past_the_end_is_a_readable_error(counting_video):
    assert "ends before the start time" in item_error(counting_video, options=SamplingOptions(start=20.0))
    assert "ends before" in item_error(counting_video, options=SamplingOptions(frames=3, start=20.0))


def test_frames_without_an_announced_duration_measure_it(tmp_path):
    """Raw MJPEG has no duration or rate in it: FFmpeg assumes 25 fps and OpenCV reports no frame count."""
    path = write_video(tmp_path / "raw.mjpeg", (solid((4 * i,) * 3) for i in range(50)))
    with VideoReader(path, SamplingOptions(frames=4)) as reader:
        assert reader.info.frame_count is None and reader.info.duration is None
        frames = list(reader.frames())
        assert reader.info.frame_count == 50
        assert reader.info.duration == pytest.approx(50 / reader.info.fps)
    assert [frame.index for frame in frames] == [0, 13, 25, 38]  # first 25 fps frame at or after 0, 0.5, 1, 1.5 s


def test_frames_are_rgb(tmp_path):
    path = write_video(tmp_path / "red.mp4", [solid(RED)] * 5)
    frame = sample_frames(path)[0]
    assert frame.image.mode == "RGB" and frame.image.size == SIZE
    assert close_to(frame.image.getpixel((32, 24)), RED)


def test_rotation_metadata_is_applied(tmp_path):
    """A phone video stored landscape with a 90 degree display matrix comes out portrait."""
    left_red = solid(BLACK)
    left_red[:, : SIZE[0] // 2] = RED
    path = write_video(tmp_path / "phone.mp4", [left_red] * 5)
    set_mp4_rotation_90(path)
    with VideoReader(path) as reader:
        assert (reader.info.width, reader.info.height) == (48, 64)
        image = next(reader.frames()).image
    assert image.size == (48, 64)
    assert close_to(image.getpixel((24, 8)), RED) and close_to(image.getpixel((24, 56)), BLACK)


def set_mp4_rotation_90(path):
    """Write a clockwise 90 degree display matrix into the video track header, as phones do."""
    data = bytearray(path.read_bytes())
    box = data.rfind(b"tkhd")  # the only track; the movie header sits at the end of OpenCV's files
    assert box > 0 and data[box + 4] == 0, "expected a version 0 track header"
    matrix = box + 4 + 4 + 4 + 4 + 4 + 4 + 4 + 8 + 2 + 2 + 2 + 2  # type, version/flags, times, id, ..., volume
    assert struct.unpack(">9i", data[matrix : matrix + 36]) == (65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30)
    data[matrix : matrix + 36] = struct.pack(">9i", 0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))


# --- scene detection ---------------------------------------------------------------------------------------------


def assert_cuts_found(frames: list[Frame], fps: float):
    """The first frame, then one frame per cut: at or after it, within one analysed frame."""
    analysis_period = math.ceil(fps / SCENE_ANALYSIS_FPS) / fps
    assert len(frames) == 1 + len(CUTS), f"scene starts at {times(frames)}"
    assert frames[0].t == pytest.approx(0.0)
    for frame, cut in zip(frames[1:], CUTS, strict=True):
        assert cut - TOLERANCE <= frame.t <= cut + analysis_period + TOLERANCE, f"cut at {cut} s found at {frame.t}"
    for frame, colour in zip(frames, SCENE_COLOURS, strict=True):
        assert close_to(frame.image.getpixel((2, 2)), colour)


@pytest.mark.parametrize("fps", [10, 30])
def test_keyframes_find_each_cut(tmp_path, fps):
    path = write_video(tmp_path / "scenes.mp4", scenes, fps=fps, duration=8.0)
    assert_cuts_found(sample_frames(path, SamplingOptions(keyframes=True)), fps)


@pytest.mark.parametrize("fps", [10, 30])
def test_keyframes_ignore_motion_within_a_scene(tmp_path, fps):
    path = write_video(tmp_path / "moving.mp4", scenes_with_moving_square, fps=fps, duration=8.0)
    assert_cuts_found(sample_frames(path, SamplingOptions(keyframes=True)), fps)


def test_a_moving_shape_alone_is_one_scene(tmp_path):
    path = write_video(tmp_path / "bounce.mp4", moving_square_only, fps=25, duration=6.0)
    frames = sample_frames(path, SamplingOptions(keyframes=True))
    assert times(frames) == [0.0]


def test_keyframes_honour_start_and_end(scene_video):
    frames = sample_frames(scene_video, SamplingOptions(keyframes=True, start=1.0, end=5.0))
    assert times(frames) == pytest.approx([1.0, 2.0], abs=TOLERANCE)


def test_a_lower_threshold_only_adds_scenes(scene_video):
    strict = sample_frames(scene_video, SamplingOptions(keyframes=True, scene_threshold=0.9))
    loose = sample_frames(scene_video, SamplingOptions(keyframes=True, scene_threshold=0.3))
    assert set(times(strict)) <= set(times(loose))


# --- damaged and unreadable files --------------------------------------------------------------------------------


def test_a_complete_read_is_not_truncated(scene_video):
    with VideoReader(scene_video, SamplingOptions(keyframes=True)) as reader:
        list(reader.frames())
        assert reader.frames_decoded == 80 and not reader.truncated
        assert reader.span_end == pytest.approx(8.0, abs=TOLERANCE)


def test_span_end_is_the_end_time_or_the_video_end(scene_video):
    for options, expected in ((SamplingOptions(fps=1, end=3.0), 3.0), (SamplingOptions(frames=2), 8.0),
                              (SamplingOptions(fps=1, start=2.0, end=20.0), 8.0)):  # fmt: skip
        with VideoReader(scene_video, options) as reader:
            list(reader.frames())
            assert reader.span_end == pytest.approx(expected, abs=TOLERANCE), options


@pytest.mark.parametrize("name", ["cut.avi", "cut.mkv"])
def test_truncated_file_gives_the_frames_before_the_cut(tmp_path, name):
    path = write_video(tmp_path / name, (solid((3 * i,) * 3) for i in range(80)), fps=10)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    with VideoReader(path, SamplingOptions(fps=2)) as reader:
        assert reader.info.frame_count == 80  # the header still announces the whole video
        frames = list(reader.frames())
        assert reader.truncated
        assert 30 <= reader.frames_decoded < 70
    assert times(frames) == pytest.approx([k * 0.5 for k in range(len(frames))], abs=TOLERANCE)
    assert frames[-1].t < 7.0
    # The range read ends one frame after the last one decoded, not at the announced 8 s.
    assert reader.span_end == pytest.approx((reader.frames_decoded - 1) * 0.1 + 0.1, abs=TOLERANCE)

    for options in (SamplingOptions(frames=8), SamplingOptions(keyframes=True, scene_threshold=0.01)):
        with VideoReader(path, options) as reader:
            assert list(reader.frames()) and reader.truncated


def test_truncated_mp4_without_its_index_is_not_a_video(tmp_path, scene_video):
    """OpenCV writes the MP4 index (moov) last, so a cut MP4 has nothing FFmpeg can open."""
    data = scene_video.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    assert "not a video OpenCV can decode" in item_error(cut)


def test_unreadable_inputs_raise_readable_item_errors(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.mp4"
    empty.touch()
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 50)

    assert "not a video OpenCV can decode" in item_error(garbage)
    assert "not a video OpenCV can decode" in item_error(text)
    assert item_error(empty) == "empty file (0 bytes)"
    assert item_error(tmp_path / "missing.mp4") == "no such file"
    assert item_error(tmp_path) == "is a directory, not a video"


def test_permission_denied(scene_video, monkeypatch):
    if os.name != "posix" or os.geteuid() == 0:  # permissions do not bind root: make the open fail as they would

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr("mmcli.media.video.open", refuse, raising=False)
    scene_video.chmod(0)
    try:
        assert item_error(scene_video) == "permission denied"
    finally:
        scene_video.chmod(0o644)


def test_frames_over_max_pixels_are_refused_at_open(scene_video):
    message = item_error(scene_video, max_pixels=1000)
    assert "64x48" in message and "--max-pixels" in message


def test_a_reader_reads_once_and_closes(scene_video):
    reader = VideoReader(scene_video)
    with reader:
        list(reader.frames())
        with pytest.raises(RuntimeError):
            reader.frames()
    reader.close()  # closing twice is harmless


# --- memory ------------------------------------------------------------------------------------------------------

MEASURE_PEAK_RSS_GROWTH = """
import sys
from mmcli.media.video import SamplingOptions, VideoReader


def peak_rss():  # VmHWM: this process's own high-water mark (ru_maxrss carries the parent's across exec)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


path, mode, keep = sys.argv[1], sys.argv[2], sys.argv[3] == "keep"
options = SamplingOptions(keyframes=True) if mode == "keyframes" else SamplingOptions(fps=30)
with VideoReader(path, SamplingOptions(fps=30, end=1.0)) as warm_up:  # decoder buffers, imports
    list(warm_up.frames())
before = peak_rss()
kept = []
with VideoReader(path, options) as reader:
    for frame in reader.frames():
        if keep:
            kept.append(frame)
assert reader.frames_decoded == 3000, reader.frames_decoded
print(peak_rss() - before)
"""


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """3000 frames, 100 s at 30 fps: about 37 MB of pixels as Pillow stores them."""
    return write_video(tmp_path_factory.mktemp("long") / "long.mp4", moving_square_only, fps=30, duration=100.0)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the peak RSS from Linux /proc")
@pytest.mark.parametrize(
    ("mode", "keep", "flat"),
    [("fps", "drop", True), ("keyframes", "drop", True), ("fps", "keep", False)],  # the last checks the check
)
def test_memory_stays_flat_on_a_long_video(long_video, mode, keep, flat):
    """Peak RSS growth in a fresh process (its high-water mark is its own) while reading every frame."""
    result = subprocess.run(
        [sys.executable, "-c", MEASURE_PEAK_RSS_GROWTH, str(long_video), mode, keep],
        check=True,
        capture_output=True,
        text=True,
    )
    growth = int(result.stdout.split()[-1])
    assert (growth < 10_000_000) == flat, f"peak RSS grew by {growth:,} bytes"

"""Video decoding that streams: frames are sampled by time as the file is read, never all held at once.

Every command that reads video goes through :class:`VideoReader` (or :func:`sample_frames`), so a clip
gives the same frames at the same timestamps whether it is embedded or captioned. Decoding is
OpenCV's FFmpeg backend; ``cv2`` is imported only when a video is opened, so commands that never
touch video start without it.

Timestamps come from the container (correct under variable frame rate), not from ``index / fps``.
Time ranges are half-open: a frame at exactly ``end`` is not part of ``[start, end)``.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
from PIL import Image

from mmcli.errors import ItemError, UsageError, option
from mmcli.media.images import DEFAULT_MAX_PIXELS

VIDEO_EXTENSIONS = frozenset(
    {
        ".mp4",
        ".m4v",
        ".avi",
        ".mov",
        ".mkv",
        ".webm",
        ".mpg",
        ".mpeg",
        ".wmv",
        ".flv",
        ".3gp",
        ".ts",
        ".mts",
        ".ogv",
    }
)
# Scene detection looks at no more than this many frames per second: a cut is still placed within
# about 0.1 s, and an hour of 60 fps video costs 36,000 thumbnails instead of 216,000.
SCENE_ANALYSIS_FPS = 10.0
# Thumbnail width for scene detection: enough to see a cut, small enough to blur away noise and detail.
_THUMBNAIL_WIDTH = 64
# Container timestamps are rationals turned into floats; a frame at 0.5 s may read as 0.49999999999.
_TIME_TOLERANCE = 1e-6
_NOT_A_VIDEO = "not a video OpenCV can decode (unknown format, or a corrupt or truncated file)"


def is_video_path(path: str | os.PathLike[str]) -> bool:
    """Judge by extension, as directory walks must not open every file they pass."""
    return os.path.splitext(os.fspath(path))[1].lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class SamplingOptions:
    """Which frames of a video to keep; exactly one mode applies.

    - ``fps`` (the default mode): for each target time ``start, start + 1/fps, ...`` before ``end``,
      the first frame whose timestamp is at or after it. A frame is never repeated, so asking for
      more than the video's own rate gives every frame.
    - ``frames``: ``frames`` targets evenly spaced over ``[start, end)`` (``end`` defaults to the
      video's duration), ``start + i * span / frames``, each again the first frame at or after it;
      never more than ``frames`` frames. Where the container announces no duration, the reader
      measures it with an extra pass over the file.
    - ``keyframes``: the first frame at ``start`` and the first frame of every new scene. See
      :class:`VideoReader` for the scene score that ``scene_threshold`` applies to.

    ``fps`` is ignored in the other two modes; ``fps=None`` requires one of them.
    """

    fps: float | None = 1.0
    frames: int | None = None
    keyframes: bool = False
    scene_threshold: float = 0.3
    start: float = 0.0
    end: float | None = None

    def __post_init__(self) -> None:
        if self.frames is not None and self.keyframes:
            raise UsageError("choose one sampling mode: a number of frames or keyframes, not both")
        if self.frames is None and not self.keyframes:
            if self.fps is None:
                raise UsageError("choose a sampling mode: frames per second, a number of frames, or keyframes")
            if not (math.isfinite(self.fps) and self.fps > 0):
                raise UsageError(f"frames per second must be a positive number, not {self.fps}")
        if self.frames is not None and self.frames < 1:
            raise UsageError(f"number of frames must be at least 1, not {self.frames}")
        if not 0.0 < self.scene_threshold < 1.0:
            raise UsageError(f"scene threshold must be between 0 and 1 (exclusive), not {self.scene_threshold}")
        if not (math.isfinite(self.start) and self.start >= 0):
            raise UsageError(f"start time must be 0 or more seconds, not {self.start}")
        if self.end is not None and not self.end > self.start:
            raise UsageError(f"end time ({self.end} s) must come after the start time ({self.start} s)")


def video_sampling(
    fps: float | None = None,
    frames: int | None = None,
    keyframes: bool = False,
    scene_threshold: float = 0.3,
    start: float = 0.0,
    end: float | None = None,
    *,
    default: str = "fps",
) -> SamplingOptions:
    """The sampling asked for by at most one of ``fps``, ``frames`` and ``keyframes``; with none given,
    ``default`` applies (``fps``: one frame a second, or ``keyframes``)."""
    chosen = [
        option(name)
        for name, given in (("fps", fps is not None), ("frames", frames is not None), ("keyframes", keyframes))
        if given
    ]
    if len(chosen) > 1:
        raise UsageError(f"choose one way to sample videos: {' or '.join(chosen)}, not both")
    if not chosen and default == "keyframes":
        keyframes = True
    return SamplingOptions(
        fps=1.0 if fps is None else fps,
        frames=frames,
        keyframes=keyframes,
        scene_threshold=scene_threshold,
        start=start,
        end=end,
    )


@dataclass(frozen=True)
class Frame:
    """One sampled frame: an upright RGB picture and where it sits in the video."""

    image: Image.Image
    t: float  # seconds from the start of the video, from the container's timestamps
    index: int  # decoded frame number, counting from 0 at the start of the file


@dataclass
class VideoInfo:
    """What the container announces; counts and durations are estimates and may be missing.

    ``fps`` is the nominal frame rate (0.0 when the container gives none); ``width`` and
    ``height`` are the displayed size, after rotation metadata. ``duration`` is
    ``frame_count / fps``, filled in by measurement when a ``frames=N`` read needs it.
    """

    fps: float
    frame_count: int | None
    duration: float | None
    width: int
    height: int


class VideoReader:
    """Open with ``VideoReader(path, options, max_pixels=...)``; iterate :meth:`frames` once;
    afterwards ``truncated`` and ``frames_decoded`` tell what happened.

    Opening probes the file and raises :class:`ItemError` for anything that cannot be read, so a
    failed item is reported before any work is spent on it. Every frame is decoded in order with
    ``grab()``, but only the frames kept are converted to pixels (``retrieve()``), and at most one
    frame is held at a time, so memory does not grow with the length of the video. Reading stops as
    soon as the options need nothing further (past ``end``, or after the last of ``frames``).

    ``truncated`` is True when reading ran to the end of the file but decoded fewer frames than the
    container announced (a cut or corrupt file); the frames before the damage were still yielded.

    Scene detection (``keyframes``) uses FFmpeg's scene score (``select='gt(scene,0.3)'``), so
    ``scene_threshold`` reads as it does there: with ``D`` the mean absolute difference, in 8-bit
    levels over all three colour channels, between a frame and the previous analysed frame, the
    score is ``min(D, |D - D_previous|) / 100``, clipped to [0, 1], and a score above the threshold
    starts a new scene. The ``|D - D_previous|`` term is what makes steady motion (a pan, an object
    moving across the frame) score low while a cut, a sudden jump in difference, scores high. It is
    computed on 64-pixel-wide thumbnails of every ``ceil(fps / SCENE_ANALYSIS_FPS)``-th frame from
    ``start``: at most 10 a second, and evenly spaced, as uneven gaps would make steady motion look
    unsteady. A scene's first frame is therefore placed within one analysed frame of the cut
    (0.1 s at 10 or 30 fps, 0.12 s at 25 fps).
    """

    info: VideoInfo
    truncated: bool
    frames_decoded: int

    def __init__(
        self,
        path: str | os.PathLike[str],
        options: SamplingOptions | None = None,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.path = os.fspath(path)
        self.options = options if options is not None else SamplingOptions()
        self.truncated = False
        self.frames_decoded = 0
        self._last_t: float | None = None  # timestamp of the last frame decoded
        self._ran_out = False  # whether the file itself ended (rather than reading stopping early)
        self._started = False
        self._capture: Any = _open_capture(self.path)
        try:
            self.info = _probe(self._capture)
            if self.info.width * self.info.height > max_pixels:
                raise ItemError(
                    f"video frames are {self.info.width}x{self.info.height} pixels, over the limit of "
                    f"{max_pixels:,}; raise the limit with --max-pixels if it is genuine"
                )
        except BaseException:
            self.close()
            raise

    def frames(self) -> Iterator[Frame]:
        """The sampled frames in time order, decoded as they are consumed."""
        if self._started:
            raise RuntimeError("VideoReader.frames() reads the file once; open a new reader to read it again")
        if self._capture is None:
            raise RuntimeError("VideoReader is closed")
        self._started = True
        options = self.options
        if options.keyframes:
            return self._scene_starts()
        if options.frames is not None:
            return self._first_frames_at(self._evenly_spaced_targets(options.frames))
        assert options.fps is not None  # SamplingOptions guarantees a rate in the default mode
        return self._first_frames_at(_time_grid(options.start, options.fps, options.end))

    def frames_at(self, times: Iterable[float]) -> Iterator[Frame]:
        """For each of ``times`` (seconds, in ascending order), the first frame at or after it, in one
        pass over the file whatever the sampling options; a frame answering several times comes once,
        and a time past the end gets none. This is how a report shows each segment's first frame."""
        if self._started:
            raise RuntimeError("VideoReader reads the file once; open a new reader to read it again")
        if self._capture is None:
            raise RuntimeError("VideoReader is closed")
        self._started = True
        return self._first_frames_at(iter(sorted(times)))

    def close(self) -> None:
        """Release the decoder; safe to call more than once."""
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _first_frames_at(self, targets: Iterator[float]) -> Iterator[Frame]:
        """For each target time, the first frame at or after it; stops once no target is left."""
        target = next(targets, None)
        if target is None:
            return
        for index, t in self._grab_frames():
            if t + _TIME_TOLERANCE < target:
                continue
            bgr = self._retrieve()
            if bgr is None:
                continue  # undecodable pixels: the next frame answers this target instead
            yield _to_frame(bgr, t, index)
            while target is not None and target <= t + _TIME_TOLERANCE:
                target = next(targets, None)
            if target is None:
                return

    def _scene_starts(self) -> Iterator[Frame]:
        """The first frame at ``start``, then the first analysed frame of each new scene."""
        fps = self.info.fps
        stride = max(1, math.ceil(fps / SCENE_ANALYSIS_FPS - _TIME_TOLERANCE)) if fps > 0 else 1
        detector = _SceneDetector(self.options.scene_threshold)
        first_index = None
        for index, t in self._grab_frames():
            if t + _TIME_TOLERANCE < self.options.start:
                continue
            if first_index is None:
                first_index = index
            if (index - first_index) % stride:
                continue
            bgr = self._retrieve()
            if bgr is not None and detector.starts_scene(bgr):
                yield _to_frame(bgr, t, index)

    def _grab_frames(self) -> Iterator[tuple[int, float]]:
        """Decode frames in order from the start of the file, yielding ``(index, t)`` for those
        before ``end``; judges truncation only when the file itself ran out."""
        import cv2

        capture = self._capture
        end = self.options.end if self.options.end is not None else math.inf
        previous = 0.0
        while capture.grab():
            index = self.frames_decoded
            self.frames_decoded += 1
            t = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if not math.isfinite(t) or t < previous or (t <= 0.0 and index > 0):
                # No usable timestamp from the container: count frames at the nominal rate instead.
                t = max(previous, index / self.info.fps) if self.info.fps > 0 else previous
            previous = t
            if t >= end:
                return
            self._last_t = t
            yield index, t
        self._ran_out = True
        self.truncated = self._ended_early()

    @property
    def span_end(self) -> float | None:
        """Where the sampled range ends, once :meth:`frames` is consumed: ``end``, or the end of the
        video where that comes first (for a cut file, one frame period after its last frame)."""
        ends = [e for e in (self.options.end, self.info.duration) if e is not None]
        if self._ran_out and self._last_t is not None:
            ends = [e for e in ends if e > self._last_t] or ends
            period = 1.0 / self.info.fps if self.info.fps > 0 else 0.0
            ends.append(self._last_t + period)
        return min(ends) if ends else None

    def _ended_early(self) -> bool:
        """Whether the file gave out before the frame count it announced; as counts are often
        estimates (duration times rate), a frame or 2 % short still counts as complete."""
        announced = self.info.frame_count
        if announced is None:
            return False
        return self.frames_decoded + max(1.0, 0.02 * announced) < announced

    def _retrieve(self) -> np.ndarray | None:
        ok, bgr = self._capture.retrieve()
        return bgr if ok and bgr is not None and bgr.size else None

    def _evenly_spaced_targets(self, count: int) -> Iterator[float]:
        start, end = self.options.start, self.options.end
        duration = self.info.duration
        if duration is None:
            duration = self._measure_duration()
        if duration is not None:
            end = duration if end is None else min(end, duration)
        if end is None or end <= start:
            return iter(())
        step = (end - start) / count
        return (start + i * step for i in range(count))

    def _measure_duration(self) -> float | None:
        """Decode the whole file once (grab only) to time it, for containers that do not say.

        Runs on a second capture so the reader's own stays at the first frame; fills in
        ``info.frame_count`` and ``info.duration``. None if not even one frame decodes.
        """
        import cv2

        capture = _open_capture(self.path)
        try:
            count, first, last = 0, 0.0, 0.0
            while capture.grab():
                t = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                if count == 0:
                    first = t
                last = max(last, t)
                count += 1
        finally:
            capture.release()
        if count == 0:
            return None
        if last > first:
            duration = last + (last - first) / (count - 1)  # the last frame lasts one average frame period
        else:
            duration = count / self.info.fps if self.info.fps > 0 else 0.0
        self.info.frame_count = count
        self.info.duration = duration
        return duration


def sample_frames(
    path: str | os.PathLike[str], options: SamplingOptions | None = None, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> list[Frame]:
    """All the frames ``options`` selects from ``path``, in time order.

    A convenience for short clips; use :class:`VideoReader` to stream, or to learn whether the
    file was truncated (here a truncated file simply gives the frames before the damage).
    """
    with VideoReader(path, options, max_pixels=max_pixels) as reader:
        frames = list(reader.frames())
        if not frames:
            start, duration = reader.options.start, reader.info.duration
            if start > 0 and (reader.frames_decoded > 0 or (duration is not None and start >= duration)):
                length = f" (it lasts {duration:g} s)" if duration is not None else ""
                raise ItemError(f"the video ends before the start time of {start:g} s{length}")
            raise ItemError("no decodable frame")
    return frames


class _SceneDetector:
    """FFmpeg's scene score between consecutive analysed frames (see :class:`VideoReader`)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._previous: np.ndarray | None = None
        self._previous_difference = 0.0

    def starts_scene(self, bgr: np.ndarray) -> bool:
        """True for the first frame seen and for each frame that differs suddenly from the one before."""
        thumbnail = _thumbnail(bgr)
        previous, self._previous = self._previous, thumbnail
        if previous is None:
            return True
        difference = float(np.abs(thumbnail - previous).mean())
        score = min(difference, abs(difference - self._previous_difference)) / 100.0
        self._previous_difference = difference
        return min(score, 1.0) > self.threshold


def _thumbnail(bgr: np.ndarray) -> np.ndarray:
    """Area-averaged, 64 pixels wide, as signed integers so differences do not wrap around."""
    import cv2

    height, width = bgr.shape[:2]
    size = (_THUMBNAIL_WIDTH, max(1, round(_THUMBNAIL_WIDTH * height / width)))
    return cv2.resize(bgr, size, interpolation=cv2.INTER_AREA).astype(np.int16)


def _time_grid(start: float, rate: float, end: float | None) -> Iterator[float]:
    """``start, start + 1/rate, ...`` before ``end``, by multiplication so no rounding error builds up."""
    k = 0
    while True:
        t = start + k / rate
        if end is not None and t >= end:
            return
        yield t
        k += 1


def _to_frame(bgr: np.ndarray, t: float, index: int) -> Frame:
    import cv2

    return Frame(image=Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), t=t, index=index)


@contextmanager
def local_video(path: str | None, blob: Any = None) -> Iterator[str]:
    """A local file OpenCV can open: ``path`` itself, or ``blob`` (a shard member, a Parquet cell, a
    URL: anything with ``copy_to(handle)`` and a ``suffix``) spooled to a temporary file that is
    deleted afterwards, as OpenCV reads videos from paths only."""
    if blob is None:
        assert path is not None
        yield path
        return
    import tempfile

    handle = tempfile.NamedTemporaryFile(prefix="mmcli-video-", suffix=blob.suffix or ".video", delete=False)
    try:
        with handle:
            blob.copy_to(handle)
        yield handle.name
    finally:
        os.unlink(handle.name)


def _open_capture(path: str) -> Any:
    """An opened ``cv2.VideoCapture`` on ``path``, or an :class:`ItemError` saying why not.

    The file is checked first, as OpenCV only reports that it could not open it. The absolute path
    keeps FFmpeg from reading a name such as ``http:x.mp4`` or ``concat:a|b`` as a protocol, and
    forcing the FFmpeg backend keeps OpenCV from reading ``clip_%03d.mp4`` as an image sequence.
    """
    try:
        status = os.stat(path)
        if stat.S_ISDIR(status.st_mode):
            raise ItemError("is a directory, not a video")
        if status.st_size == 0:
            raise ItemError("empty file (0 bytes)")
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise ItemError("no such file") from None
    except PermissionError:
        raise ItemError("permission denied") from None
    except OSError as exc:
        raise ItemError(f"cannot read file: {exc.strerror or exc}") from None

    import cv2

    backend = cv2.CAP_FFMPEG if cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG) else cv2.CAP_ANY
    try:
        capture = cv2.VideoCapture(os.path.abspath(path), backend)
    except cv2.error:
        raise ItemError(_NOT_A_VIDEO) from None
    if not capture.isOpened():
        capture.release()
        raise ItemError(_NOT_A_VIDEO)
    # On by default since OpenCV 4.5; set explicitly so phone videos are upright whatever the build.
    capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    return capture


def _probe(capture: Any) -> VideoInfo:
    import cv2

    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width <= 0 or height <= 0:
        raise ItemError(_NOT_A_VIDEO)
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if math.isfinite(fps) and fps > 0 else 0.0
    # Streams without a duration (raw MJPEG, some live captures) report a huge negative count.
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    frame_count = round(count) if math.isfinite(count) and count >= 1 else None
    duration = frame_count / fps if frame_count is not None and fps > 0 else None
    return VideoInfo(fps=fps, frame_count=frame_count, duration=duration, width=width, height=height)

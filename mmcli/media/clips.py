"""Videos as input items: their sampled frames, or one clip each for models that take a video whole.

A video enters a batch pipeline as its sampled frames (:class:`FrameItem`, decoded on the feeder thread,
a few at a time) followed by an end marker (:class:`VideoEnd`), so a long video never sits in
memory; or, for a native video model (``clip_frames`` set: X-CLIP, VideoMAE, GIT VATEX, Qwen2-VL), as
one :class:`ClipItem` of that many evenly spaced frames (:func:`expand_clips`), filled to length by
:func:`fill_clip`; or, for a model of short clips at a fixed rate (torchvision's 3D CNNs), as the
series of consecutive clips that cover it, followed by its end marker (:func:`expand_clip_series`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from mmcli.errors import ItemError, UsageError, option
from mmcli.items import InputItem
from mmcli.media.images import DEFAULT_MAX_PIXELS
from mmcli.media.video import SamplingOptions, VideoReader, local_video

T = TypeVar("T")
VIDEO_END = "video-end"  # the modality of the marker item that follows a video's last frame


@dataclass
class FrameItem(InputItem):
    """One sampled video frame; ``extra`` carries its ``t`` and parent ``video`` into the row's record."""

    image: Any = None


@dataclass
class VideoEnd(InputItem):
    """The marker after a video's last sampled frame. ``span_end`` is where the sampled range ended
    (seconds: ``--end``, or the end of the video where that comes first), for caption segments."""

    span_end: float | None = None


def no_frames_error(reader: Any) -> str:
    """Why a video gave no frame: a --start at or past its end says how long the video is."""
    start, duration = reader.options.start, reader.info.duration
    if start and duration is not None and start >= duration:
        return f"--start {start:g} is at or past the end of the video, which is {duration:.1f} s long"
    return "no decodable frame in the sampled range"


def expand_videos(
    items: Iterable[InputItem], sampling: Any = None, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Iterator[InputItem]:
    """Replace each video item by its sampled frames and an end marker (or by an error item).

    The marker (a :class:`VideoEnd`) says in ``extra`` how many frames were used and whether the
    file was cut short.
    ``sampling`` is a :class:`~mmcli.media.video.SamplingOptions` (default: one frame a second).
    """
    for item in items:
        if item.modality != "video" or item.error:
            yield item
            continue
        count, truncated = 0, False
        try:
            with (
                local_video(item.path, item.blob) as path,
                VideoReader(path, sampling, max_pixels=max_pixels) as reader,
            ):
                for frame in reader.frames():
                    count += 1
                    extra = {**item.extra, "t": round(frame.t, 6), "video": item.id}
                    frame_id = f"{item.id}#t={frame.t:.3f}"  # a W3C media fragment
                    yield FrameItem(frame_id, "frame", item.source, path=item.path, extra=extra, image=frame.image)
                truncated, span_end = reader.truncated, reader.span_end
                empty = None if count else no_frames_error(reader)
        except ItemError as exc:
            yield replace(item, error=str(exc))
            continue
        if empty:
            yield replace(item, error=empty)
            continue
        facts = {"frames": count, **({"truncated": True} if truncated else {})}
        extra = {**item.extra, **facts}
        yield VideoEnd(item.id, VIDEO_END, item.source, path=item.path, text=item.text, extra=extra, blob=item.blob,
                       span_end=span_end)  # fmt: skip


@dataclass
class ClipItem(InputItem):
    """A whole video as one clip for a native video encoder: its sampled ``frames`` (PIL images),
    decoded on the feeder thread. ``extra`` says how many were decoded (``frames``), and ``padded`` /
    ``truncated`` where that applies. The frames are released once preprocessed, so clips waiting
    for the model hold tensors at the model's input size, not full-size pictures. The clip covers
    ``start`` to ``span_end`` seconds (as :attr:`VideoEnd.span_end`)."""

    frames: list[Any] = field(default_factory=list, repr=False)
    start: float = 0.0
    span_end: float | None = None


def clip_sampling(
    clip_frames: int,
    *,
    fps: float | None = None,
    frames: int | None = None,
    keyframes: bool = False,
    start: float = 0.0,
    end: float | None = None,
    what: str = "a native video model takes each video whole",
) -> SamplingOptions:
    """The sampling of a model that takes each video whole, as one clip of ``clip_frames`` evenly spaced
    frames over ``start``..``end``: asking for other frames (``fps``, ``keyframes``, another number of
    ``frames``) is refused, naming the model (``what``) rather than guessing which frames it should see."""
    what = f"{what}, as one clip of {clip_frames} frames"
    if fps is not None or keyframes:
        given = option("fps") if fps is not None else option("keyframes")
        raise UsageError(
            f"{what}: it takes {clip_frames} evenly spaced frames over {option('start')}..{option('end')}; "
            f"{given} does not apply (it samples frames for image models)"
        )
    if frames is not None and frames != clip_frames:
        raise UsageError(
            f"{what}; {option('frames', frames)} does not fit it (leave {option('frames')} out, "
            f"or give {option('frames', clip_frames)})"
        )
    return SamplingOptions(fps=None, frames=clip_frames, start=start, end=end)


def expand_clips(
    items: Iterable[InputItem], clip_frames: int, sampling: Any = None, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Iterator[InputItem]:
    """Replace each video item by one :class:`ClipItem` (``modality: video``), or by an error item.

    The clip is ``clip_frames`` evenly spaced frames over ``[start, end)`` (see :func:`clip_sampling`).
    A video that gives fewer (shorter than the clip, or cut short) keeps them all and is filled by
    repeating its last frame when preprocessed (:func:`fill_clip`); the record's
    ``frames`` counts the decoded ones and ``padded`` the repeats. No decodable frame is an error.
    """
    options = clip_sampling(
        clip_frames,
        frames=sampling.frames if sampling else None,
        keyframes=sampling.keyframes if sampling else False,
        start=sampling.start if sampling else 0.0,
        end=sampling.end if sampling else None,
    )
    for item in items:
        if item.modality != "video" or item.error:
            yield item
            continue
        try:
            with local_video(item.path, item.blob) as path, VideoReader(path, options, max_pixels=max_pixels) as reader:
                frames = [frame.image for frame in reader.frames()]
                truncated, span_end = reader.truncated, reader.span_end
                empty = None if frames else no_frames_error(reader)
        except ItemError as exc:
            yield replace(item, error=str(exc))
            continue
        if empty:
            yield replace(item, error=empty)
            continue
        facts: dict[str, Any] = {"frames": len(frames)}
        if len(frames) < clip_frames:
            facts["padded"] = clip_frames - len(frames)
        if truncated:
            facts["truncated"] = True
        extra = {**item.extra, **facts}
        yield ClipItem(
            item.id, "video", item.source, path=item.path, text=item.text, extra=extra, frames=frames,
            start=options.start, span_end=span_end,
        )  # fmt: skip


def fill_clip(frames: Sequence[T], length: int) -> list[T]:
    """``frames`` as a clip of exactly ``length``: a short video (or one cut short) repeats its last
    frame, as a clip model's temporal position embeddings take no other length."""
    frames = list(frames)
    if not frames:
        raise ValueError("a clip needs at least one frame")
    if len(frames) > length:
        raise ValueError(f"got {len(frames)} frames for a model that takes {length} per clip; sample {length}")
    return frames + [frames[-1]] * (length - len(frames))


def expand_clip_series(
    items: Iterable[InputItem],
    clip_frames: int,
    rate: float,
    sampling: Any = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[InputItem]:
    """Replace each video item by consecutive clips of ``clip_frames`` frames sampled at ``rate`` frames
    per second (``modality: clip``, each ``t`` to ``end`` seconds, with its ``video``), then its end
    marker (:class:`VideoEnd`, counting the ``clips``) whose rows :class:`~mmcli.extract.Pooler` pools;
    or by an error item.

    The frames are :func:`expand_videos`' at that rate, a clip's worth held at a time. The last clip of
    a video, shorter than a clip, is filled by repeating its last frame (``padded`` says how many).
    ``sampling`` gives ``start`` and ``end`` (its rate and modes do not apply: the model's rate does)."""
    options = SamplingOptions(
        fps=rate, start=sampling.start if sampling else 0.0, end=sampling.end if sampling else None
    )
    pending: list[FrameItem] = []
    clips = 0

    def clip() -> ClipItem:
        first, last = pending[0], pending[-1]
        t, end = first.extra["t"], last.extra["t"] + 1.0 / rate
        facts: dict[str, Any] = {"t": t, "end": round(end, 6), "frames": len(pending)}
        if len(pending) < clip_frames:
            facts["padded"] = clip_frames - len(pending)
        return ClipItem(f"{first.extra['video']}#t={t:.3f},{end:.3f}", "clip", first.source, path=first.path,
                        extra={**first.extra, **facts}, frames=[frame.image for frame in pending], start=t,
                        span_end=end)  # fmt: skip

    for item in expand_videos(items, options, max_pixels=max_pixels):
        if isinstance(item, FrameItem):
            pending.append(item)
            if len(pending) == clip_frames:
                yield clip()
                pending, clips = [], clips + 1
        elif item.modality == VIDEO_END:
            if pending:
                yield clip()
                pending, clips = [], clips + 1
            yield replace(item, extra={**item.extra, "clips": clips})
            clips = 0
        else:
            if item.modality == "video":  # a video that failed part-way: its partial clip is not a clip
                pending, clips = [], 0
            yield item

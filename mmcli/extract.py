"""Embedding a stream of input items: the engine behind ``mmcli extract-features``.

Videos enter the stream as their sampled frames (decoded on the feeder thread, a few at a time)
followed by an end marker, so a long video never sits in memory; :class:`VideoPooler` turns the
frames' embeddings into frame rows and/or one pooled row per video. For a native video encoder
(``encoder.clip_frames`` set: X-CLIP, VideoMAE) each video enters instead as one :class:`ClipItem`
of that many frames, embedded whole into one video row (:func:`expand_clips`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from mmcli.encoders.base import Encoder
from mmcli.errors import ItemError, UnsupportedModel, UsageError
from mmcli.io.inputs import InputItem
from mmcli.media.images import DEFAULT_MAX_PIXELS, load_image
from mmcli.pipeline import Outcome, default_workers, map_batches

POOLING = ("mean", "max", "none", "both")
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


def expand_videos(
    items: Iterable[InputItem], sampling: Any = None, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Iterator[InputItem]:
    """Replace each video item by its sampled frames and an end marker (or by an error item).

    The marker (a :class:`VideoEnd`) says in ``extra`` how many frames were used and whether the
    file was cut short.
    ``sampling`` is a :class:`~mmcli.media.video.SamplingOptions` (default: one frame a second).
    """
    from mmcli.media.video import VideoReader

    for item in items:
        if item.modality != "video" or item.error:
            yield item
            continue
        count, truncated = 0, False
        try:
            with VideoReader(item.path, sampling, max_pixels=max_pixels) as reader:
                for frame in reader.frames():
                    count += 1
                    extra = {**item.extra, "t": round(frame.t, 6), "video": item.id}
                    frame_id = f"{item.id}#t={frame.t:.3f}"  # a W3C media fragment
                    yield FrameItem(frame_id, "frame", item.source, path=item.path, extra=extra, image=frame.image)
                truncated, span_end = reader.truncated, reader.span_end
        except ItemError as exc:
            yield replace(item, error=str(exc))
            continue
        if count == 0:
            yield replace(item, error="no decodable frame in the sampled range")
            continue
        facts = {"frames": count, **({"truncated": True} if truncated else {})}
        extra = {**item.extra, **facts}
        yield VideoEnd(item.id, VIDEO_END, item.source, path=item.path, text=item.text, extra=extra, span_end=span_end)


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


def clip_sampling(clip_frames: int, sampling: Any = None) -> Any:
    """The sampling a native video encoder's clips use: ``clip_frames`` evenly spaced frames over
    ``sampling``'s ``[start, end)`` (its own mode must be unset or the same ``frames=clip_frames``)."""
    from mmcli.media.video import SamplingOptions

    if sampling is not None and (sampling.keyframes or sampling.frames not in (None, clip_frames)):
        raise UsageError(f"a native video encoder samples {clip_frames} evenly spaced frames per clip, no other way")
    start, end = (sampling.start, sampling.end) if sampling is not None else (0.0, None)
    return SamplingOptions(fps=None, frames=clip_frames, start=start, end=end)


def expand_clips(
    items: Iterable[InputItem], clip_frames: int, sampling: Any = None, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Iterator[InputItem]:
    """Replace each video item by one :class:`ClipItem` (``modality: video``), or by an error item.

    The clip is ``clip_frames`` evenly spaced frames over ``[start, end)`` (see :func:`clip_sampling`).
    A video that gives fewer (shorter than the clip, or cut short) keeps them all and is filled by
    repeating its last frame when preprocessed (:func:`~mmcli.encoders.base.fill_clip`); the record's
    ``frames`` counts the decoded ones and ``padded`` the repeats. No decodable frame is an error.
    """
    from mmcli.media.video import VideoReader

    options = clip_sampling(clip_frames, sampling)
    for item in items:
        if item.modality != "video" or item.error:
            yield item
            continue
        try:
            with VideoReader(item.path, options, max_pixels=max_pixels) as reader:
                frames = [frame.image for frame in reader.frames()]
                truncated, span_end = reader.truncated, reader.span_end
        except ItemError as exc:
            yield replace(item, error=str(exc))
            continue
        if not frames:
            yield replace(item, error="no decodable frame in the sampled range")
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


class VideoPooler:
    """Turns a stream of outcomes with video frames into the rows to write.

    ``pool``: ``mean`` or ``max`` gives one ``modality: video`` row per video, pooled over its
    frame rows (then re-normalised when rows are normalised); ``none`` gives the frame rows;
    ``both`` gives the frame rows followed by the pooled row. Images and texts pass through.
    """

    def __init__(self, pool: str = "mean", *, normalize: bool = True) -> None:
        if pool not in POOLING:
            raise UsageError(f"unknown pooling {pool!r}; choose from {', '.join(POOLING)}")
        self.pool = pool
        self.normalize = normalize
        self._frames: list[np.ndarray] = []

    @property
    def pending(self) -> bool:
        """Whether a video's frames are held, waiting for its end (no checkpoint may fall here)."""
        return bool(self._frames)

    def rows(self, outcomes: Iterable[Outcome[InputItem]]) -> list[Outcome[InputItem]]:
        result = []
        for outcome in outcomes:
            modality = outcome.item.modality
            if modality == "frame":
                if outcome.error is None:
                    self._frames.append(outcome.value)
                if outcome.error is not None or self.pool in ("none", "both"):
                    result.append(outcome)
            elif modality == VIDEO_END:
                frames, self._frames = self._frames, []
                if self.pool == "none":
                    continue
                if not frames:
                    result.append(replace(outcome, item=_video_item(outcome.item), error="no frame could be embedded"))
                    continue
                result.append(Outcome(_video_item(outcome.item, self.pool), self._pooled(frames)))
            else:
                result.append(outcome)
        return result

    def _pooled(self, frames: list[np.ndarray]) -> np.ndarray:
        stacked = np.stack(frames)
        pooled = stacked.max(axis=0) if self.pool == "max" else stacked.mean(axis=0)
        if self.normalize:
            pooled = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
        return pooled.astype(np.float32)


def _video_item(marker: InputItem, pool: str | None = None) -> InputItem:
    extra = {**marker.extra, **({"pool": "mean" if pool == "both" else pool} if pool else {})}
    return replace(marker, modality="video", extra=extra)


def _batch_group(item: InputItem) -> str:
    """Items embedded by one model call share a group: texts, clips, images (video frames included)."""
    if isinstance(item, ClipItem):
        return "video"
    return item.modality if item.modality in ("text", VIDEO_END) else "image"


def embed_items(
    items: Iterable[InputItem],
    encoder: Encoder,
    *,
    batch_size: int | None = None,
    workers: int | None = None,
    normalize: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    exact_decode: bool = False,
) -> Iterator[list[Outcome[InputItem]]]:
    """Embed images, texts and clips in input order, yielding one list of outcomes per batch.

    Each outcome's ``value`` is a float32 vector, or its ``error`` says why there is none (missing,
    undecodable, too large, non-finite output); a failed item never stops the rest. Images are
    decoded and preprocessed on worker threads while the model embeds the previous batch.
    ``batch_size`` defaults to the encoder's choice for its device. Large JPEGs are decoded at reduced scale
    (see :func:`~mmcli.media.images.load_image`) unless ``exact_decode``.
    """

    min_side = None if exact_decode else encoder.decode_min_side

    def prepare(item: InputItem) -> Any:
        if item.error:
            raise ItemError(item.error)
        if item.modality == "text":
            return item.text
        if item.modality == VIDEO_END:
            return None
        if isinstance(item, FrameItem):
            return encoder.preprocess_image(item.image)
        if isinstance(item, ClipItem):
            frames, item.frames = item.frames, []
            return encoder.preprocess_video(frames)
        return encoder.preprocess_image(load_image(item.path, max_pixels=max_pixels, min_side=min_side))

    def embed(modality: str, values: list[Any]) -> list[np.ndarray | None]:
        if modality == VIDEO_END:
            return [None] * len(values)
        if modality == "text":
            vectors = encoder.embed_texts(values, normalize=normalize)
        elif modality == "video":
            vectors = encoder.embed_videos(values, normalize=normalize)
        else:
            vectors = encoder.embed_preprocessed(values, normalize=normalize)
        return list(vectors)

    for outcomes in map_batches(
        items,
        prepare,
        embed,
        batch_size=batch_size or encoder.default_batch_size,
        workers=default_workers() if workers is None else workers,
        group=_batch_group,
        fatal=(UnsupportedModel,),
    ):
        for outcome in outcomes:
            if outcome.error is None and outcome.value is not None and not np.all(np.isfinite(outcome.value)):
                outcome.value, outcome.error = None, "model produced a non-finite embedding (NaN or inf)"
        yield outcomes

"""Captioning a stream of input items: the engine behind ``mmcli caption``.

Images get one caption each. A video is captioned scene by scene: its sampled frames (keyframes by
default) enter the stream as frame items followed by an end marker (see
:func:`mmcli.extract.expand_videos`), and :class:`VideoCaptions` turns their captions into segment
records, merging neighbours that say the same thing, and a summary record. A video-native
captioner (``captioner.clip_frames`` set: GIT VATEX, Qwen2-VL) gets each video whole instead, as one
:class:`~mmcli.extract.ClipItem` of that many frames, and writes one caption for it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from mmcli.captioners.base import Captioner, GenerationOptions
from mmcli.errors import ItemError, UsageError
from mmcli.extract import VIDEO_END, ClipItem, FrameItem
from mmcli.io.inputs import InputItem
from mmcli.media.images import DEFAULT_MAX_PIXELS, load_image
from mmcli.pipeline import Outcome, default_workers, map_batches


def caption_items(
    items: Iterable[InputItem],
    captioner: Captioner,
    *,
    prompt: str | None = None,
    video_prompt: str | None = None,
    options: GenerationOptions | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    exact_decode: bool = False,
) -> Iterator[list[Outcome[InputItem]]]:
    """Caption images and video frames in input order, one list of outcomes per batch (``value`` is
    the caption; ``None`` for a video's end marker). Clips are captioned with ``video_prompt``.

    Images are decoded on worker threads while the model generates for the previous batch; an
    image that cannot be decoded gets an ``error`` and the rest of its batch goes on. ``batch_size``
    defaults to the captioner's choice for its device. Large JPEGs are decoded at reduced
    scale (see :func:`~mmcli.media.images.load_image`) unless ``exact_decode``.
    """
    options = options or GenerationOptions()
    if options.seed is not None:
        import torch

        torch.manual_seed(options.seed)

    min_side = None if exact_decode else captioner.decode_min_side

    def prepare(item: InputItem) -> Any:
        if item.error:
            raise ItemError(item.error)
        if item.modality == VIDEO_END:
            return None
        if isinstance(item, FrameItem):
            return item.image
        if isinstance(item, ClipItem):
            from mmcli.encoders.base import fill_clip

            frames, item.frames = item.frames, []  # held once, by the batch
            return fill_clip(frames, captioner.clip_frames or len(frames))
        return load_image(item.path, max_pixels=max_pixels, min_side=min_side)

    def generate(group: str, images: list[Any]) -> list[str | None]:
        if group == "clip":
            return list(captioner.generate_videos(images, video_prompt, options))
        # End markers ride along in the batch (as None) rather than splitting it in two.
        present = [image for image in images if image is not None]
        captions = iter(captioner.generate(present, prompt, options) if present else [])
        return [None if image is None else next(captions) for image in images]

    yield from map_batches(
        items,
        prepare,
        generate,
        batch_size=batch_size or captioner.default_batch_size,
        workers=default_workers() if workers is None else workers,
        group=lambda item: "clip" if isinstance(item, ClipItem) else "image",
        fatal=(UsageError,),
    )


def caption_record(item: InputItem, caption: str, model: str) -> dict[str, Any]:
    """An image's record: ``{"id", "source", "caption", "model"}`` and the input's extra fields."""
    return item.record(modality=False, source=item.source, caption=caption, model=model)


_NOT_WORDS = re.compile(r"[\W_]+")


def same_meaning_key(caption: str) -> str:
    """What two captions must share to count as saying the same thing: their words, case and
    punctuation aside (``"A dog on grass."`` and ``"a dog on grass"``)."""
    return " ".join(_NOT_WORDS.sub(" ", caption.lower()).split())


def join_captions(captions: list[str]) -> str:
    """A video's summary: its distinct captions in order. Sentences (chat models write them) are
    joined with spaces, caption fragments (``"a dog on grass"``) with semicolons."""
    if all(caption.rstrip().endswith((".", "!", "?")) for caption in captions):
        return " ".join(caption.strip() for caption in captions)
    return "; ".join(caption.strip().rstrip(".") for caption in captions)


@dataclass
class VideoCaptions:
    """Turns a stream of caption outcomes with video frames into the records to write.

    Each sampled frame of a video opens a segment that lasts until the next one; the last lasts to
    the end of the sampled range. Consecutive segments whose captions say the same thing (see
    :func:`same_meaning_key`) merge into one, keeping the first caption. Each segment becomes a record
    ``{"id": "VIDEO#t=START,END", "source", "t", "end", "caption", "model"}`` and, unless
    ``summary`` is off, a final ``{"id": "VIDEO", "source", "summary", "segments", "model"}`` record
    joins the distinct captions in order. Images pass through as caption records. A clip (a video
    captioned whole) is one segment over its sampled range.

    Outcomes come back with the record as ``value`` (or with their ``error``); the item of a
    segment record carries the segment's id and the video's path, for its manifest entry, and the
    video's id as ``extra["video"]``.
    """

    model: str
    summary: bool = True
    videos: int = 0  # videos completed
    images: int = 0
    _frames: list[tuple[float, str]] = field(default_factory=list)  # (t, caption) of the open video

    @property
    def pending(self) -> bool:
        """Whether a video's captions are held, waiting for its end (no checkpoint may fall here)."""
        return bool(self._frames)

    def records(self, outcomes: Iterable[Outcome[InputItem]]) -> list[Outcome[InputItem]]:
        result: list[Outcome[InputItem]] = []
        for outcome in outcomes:
            item = outcome.item
            if outcome.error is not None:
                result.append(outcome)
            elif item.modality == "frame":
                self._frames.append((float(item.extra["t"]), outcome.value))
            elif item.modality == VIDEO_END:
                frames, self._frames = self._frames, []
                video = replace(item, modality="video")
                if not frames:
                    result.append(Outcome(video, error="no frame could be captioned"))
                    continue
                result.extend(self._video_records(video, frames, getattr(item, "span_end", None)))
                self.videos += 1
            elif isinstance(item, ClipItem):
                result.extend(self._video_records(item, [(item.start, outcome.value)], item.span_end))
                self.videos += 1
            else:
                result.append(Outcome(item, caption_record(item, outcome.value, self.model)))
                self.images += 1
        return result

    def _video_records(
        self, video: InputItem, captioned: list[tuple[float, str]], span_end: float | None
    ) -> list[Outcome[InputItem]]:
        """Segment and summary records from ``(t, caption)`` pairs in time order; each segment ends
        where the next starts, the last at ``span_end`` (unknown: at its own start)."""
        times = [t for t, _ in captioned]
        ends = [*times[1:], times[-1] if span_end is None else span_end]
        segments: list[list[Any]] = []  # [t, end, caption]
        for t, end, (_, caption) in zip(times, ends, captioned, strict=True):
            if segments and same_meaning_key(segments[-1][2]) == same_meaning_key(caption):
                segments[-1][1] = end
            else:
                segments.append([t, end, caption])
        result = []
        for t, end, caption in segments:
            segment_id = f"{video.id}#t={t:.3f},{end:.3f}"  # a W3C media fragment
            record = {"id": segment_id, "source": video.source, "t": round(t, 6), "end": round(end, 6)}
            record.update(caption=caption, model=self.model)
            segment = InputItem(segment_id, "segment", video.source, path=video.path, extra={"video": video.id})
            result.append(Outcome(segment, record))
        if self.summary:
            distinct: dict[str, str] = {}
            for _, _, caption in segments:
                distinct.setdefault(same_meaning_key(caption), caption)
            record = {"id": video.id, "source": video.source, "summary": join_captions(list(distinct.values()))}
            record.update(segments=len(segments), model=self.model)
            if video.extra.get("truncated"):
                record["truncated"] = True
            result.append(Outcome(video, record))
        return result

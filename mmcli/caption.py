"""Captioning: :func:`caption_files` (the run behind ``mmcli caption``) and the batch pipeline under
it, :func:`caption_items`.

Images get one caption each. A video is captioned scene by scene: its sampled frames (keyframes by
default) enter the stream as frame items followed by an end marker (see
:func:`mmcli.media.clips.expand_videos`), and :class:`VideoCaptions` turns their captions into segment
records, merging neighbours that say the same thing, and a summary record. A video-native
captioner (``captioner.clip_frames`` set: GIT VATEX, Qwen2-VL) gets each video whole instead, as one
:class:`~mmcli.media.clips.ClipItem` of that many frames, and writes one caption for it.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mmcli.captioners import DEFAULT_CAPTIONER
from mmcli.captioners.options import GenerationOptions
from mmcli.errors import ItemError, UsageError, option
from mmcli.items import InputItem
from mmcli.media.clips import VIDEO_END, ClipItem, FrameItem, fill_clip
from mmcli.media.images import DEFAULT_MAX_PIXELS, load_image
from mmcli.pipeline import Outcome, default_workers, map_batches

if TYPE_CHECKING:
    from mmcli.captioners.base import Captioner
    from mmcli.engine import Reporter, RunStats


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
    linger: float | None = None,
) -> Iterator[list[Outcome[InputItem]]]:
    """Caption images and video frames in input order, one list of outcomes per batch (``value`` is
    the caption; ``None`` for a video's end marker). Clips are captioned with ``video_prompt``.

    Images are decoded on worker threads while the model generates for the previous batch; an
    image that cannot be decoded gets an ``error`` and the rest of its batch goes on. ``batch_size``
    defaults to the captioner's choice for its device. Large JPEGs are decoded at reduced
    scale (see :func:`~mmcli.media.images.load_image`) unless ``exact_decode``. Batches are exactly
    ``batch_size`` items unless a ``linger`` lets a slow stream ship them short.
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
            frames, item.frames = item.frames, []  # held once, by the batch
            return fill_clip(frames, captioner.clip_frames or len(frames))
        return load_image(item.media(), max_pixels=max_pixels, min_side=min_side)

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
        linger=linger,
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
    #: A video's speech, as :class:`~mmcli.speech.Segment` s (or an ItemError saying why there is none):
    #: each record then gets the ``speech`` said during it, the summary the whole transcript.
    speech: Callable[[InputItem], list[Any]] | None = None
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
        speech, speech_error = self._speech(video)
        result = []
        for t, end, caption in segments:
            segment_id = f"{video.id}#t={t:.3f},{end:.3f}"  # a W3C media fragment
            record = {"id": segment_id, "source": video.source, "t": round(t, 6), "end": round(end, 6)}
            record.update(caption=caption, model=self.model)
            if speech is not None:
                record["speech"] = speech_during(speech, t, end)
            segment = InputItem(segment_id, "segment", video.source, path=video.path, extra={"video": video.id})
            result.append(Outcome(segment, record))
        if self.summary:
            distinct: dict[str, str] = {}
            for _, _, caption in segments:
                distinct.setdefault(same_meaning_key(caption), caption)
            record = {"id": video.id, "source": video.source, "summary": join_captions(list(distinct.values()))}
            record.update(segments=len(segments), model=self.model)
            if speech is not None:
                record["speech"] = " ".join(segment.text for segment in speech)
            if speech_error is not None:
                record["speech_error"] = speech_error
            if video.extra.get("truncated"):
                record["truncated"] = True
            result.append(Outcome(video, record))
        return result

    def _speech(self, video: InputItem) -> tuple[list[Any] | None, str | None]:
        """The video's transcript segments, or why there are none."""
        if self.speech is None:
            return None, None
        try:
            return self.speech(video), None
        except ItemError as exc:
            return [], str(exc)


def speech_during(segments: Sequence[Any], t: float, end: float) -> str:
    """The text of the transcript segments that overlap ``[t, end)`` (at ``t``, for an instant)."""
    said = [s.text for s in segments if (s.t < end and s.end > t) or (end <= t and s.t <= t < s.end)]
    return " ".join(said)


@dataclass
class CaptionResult:
    """What :func:`caption_files` wrote: to ``output`` (``None``: the ``stream``), how many ``images``
    and ``videos`` it captioned, and the run's :class:`~mmcli.engine.RunStats`; with neither an output
    nor a stream, the ``records`` themselves."""

    output: Path | None
    images: int
    videos: int
    stats: RunStats
    records: list[dict[str, Any]] | None = None


class _CaptionJob:
    """Captioning as a :class:`~mmcli.engine.Job`: videos expanded to frames (assembled into segment
    and summary records) or to clips for a video-native captioner."""

    unit = "input"

    def __init__(
        self, captioner: Captioner, sampling: Any, summary: bool, options: dict[str, Any], speech: Any = None
    ) -> None:
        self.captioner, self.sampling, self.summary, self.options = captioner, sampling, summary, options
        self.speech = speech
        self.videos = VideoCaptions(captioner.name, summary=summary, speech=speech)

    def batches(self, items: Iterable[InputItem], counters: dict[str, int] | None = None) -> Iterator[Any]:
        from mmcli.media.clips import expand_clips, expand_videos

        counters = counters or {}
        max_pixels = self.options["max_pixels"]
        if self.captioner.clip_frames:
            items = expand_clips(items, self.captioner.clip_frames, self.sampling, max_pixels=max_pixels)
        else:
            items = expand_videos(items, self.sampling, max_pixels=max_pixels)
        self.videos = VideoCaptions(
            self.captioner.name,
            summary=self.summary,
            images=counters.get("captioned", 0),
            videos=counters.get("videos", 0),
            speech=self.speech,
        )
        for batch in caption_items(items, self.captioner, **self.options):
            yield self.videos.records(batch), batch

    @property
    def pending(self) -> bool:
        return self.videos.pending

    def counters(self) -> dict[str, int]:
        return {"captioned": self.videos.images, "videos": self.videos.videos}


def _load_caption_job(
    model: str, loading: dict[str, Any], sampling: Any, summary: bool, options: dict[str, Any]
) -> Any:
    """The captioning job with its model loaded: what each worker of a distributed run builds."""
    from mmcli.captioners import load_captioner

    return _CaptionJob(load_captioner(model, **loading), sampling, summary, options)


def caption_files(
    inputs: Sequence[str],
    output: str | os.PathLike[str] | None = None,
    *,
    stream: IO[str] | None = None,
    output_format: str = "jsonl",
    model: str = DEFAULT_CAPTIONER,
    prompt: str | None = None,
    detail: str = "brief",
    options: GenerationOptions | None = None,
    summary: bool = True,
    speech: str | None = None,
    speech_language: str | None = None,
    image_column: str | None = None,
    text_column: str | None = None,
    id_column: str | None = None,
    reporter: Reporter | None = None,
    **run_options: Any,
) -> CaptionResult:
    """Caption images and videos (files and folders; ``-`` reads paths or JSONL records from stdin)
    into ``output`` (JSONL, TSV or plain text, per ``output_format``), or into ``stream``; with
    neither, the records come back in the result.

    A video is captioned scene by scene (keyframes, unless ``fps`` or ``frames`` is given), one
    record per segment and a ``summary`` record; a video-native captioner captions each whole. With
    ``output``, progress is journalled beside it: a killed run resumes where it stopped (``restart``
    discards it), and ``update`` rewrites an existing JSONL captioning only new or changed files.
    ``.tar`` inputs are webdataset shards, ``.parquet`` inputs tables of ``image_column`` (with
    ``text_column`` carried as ``text``, ``id_column`` as ids), URLs read through fsspec (see
    :mod:`mmcli.io`). ``run_options`` are the settings every run takes (:class:`~mmcli.engine.RunOptions`).

    ``speech`` names a speech recognition model (Whisper) that transcribes each video's soundtrack
    (in ``speech_language``, or as detected): every video record gets the ``speech`` said during
    it, the summary the whole transcript (and ``speech_error`` where there is none to be had).
    """
    from mmcli.captioners import load_captioner
    from mmcli.engine import Reporter, RunOptions, require_inputs, run_into, stream_linger, with_total
    from mmcli.io.inputs import discover_images, unique_ids
    from mmcli.io.parquet import Columns
    from mmcli.items import STDIN
    from mmcli.output.destination import RecordFile

    reporter = reporter or Reporter()
    run = RunOptions.of(run_options)
    output = Path(output) if output is not None else None
    inputs = [str(i) for i in inputs]
    require_inputs(inputs, hint="give image or video files or folders, or - to read paths from stdin")
    if run.update:
        if output is None or output_format != "jsonl" or STDIN in inputs or not output.exists():
            raise UsageError(
                f"{option('update')} brings an existing -o JSONL file up to date from image and video files"
                + ("" if output is None or output.exists() else f": {output} does not exist yet")
            )
    elif run.keep_missing:
        raise UsageError(f"{option('keep_missing')} goes with {option('update')}")
    collected = io.StringIO() if output is None and stream is None else None
    destination = RecordFile(output, fmt=output_format, text_fields=("caption", "summary"), stream=collected or stream)
    with destination.check(overwrite=run.overwrite, update=run.update):
        run.check_backend(inputs)
        sampling = run.video_sampling(default="keyframes")
        columns = Columns(image_column, text_column, id_column)
        discovered = discover_images(inputs, videos=True, columns=columns)
        items, total = with_total(discovered, inputs, what="images or videos")
        items = unique_ids(items)
        previous, listed = None, []
        if run.update:  # what cannot be updated is refused before the model loads
            assert output is not None
            listed = list(items)
            previous = destination.previous(listed)

        if speech is not None and run.backend != "local":
            raise UsageError(f"{option('speech')} transcribes on this machine; leave out {option('backend')}")
        with reporter.loading(model):
            captioner = load_captioner(model, **run.loading)
        batch_size = run.batch_size or captioner.default_batch_size
        transcript = None
        if speech is not None:
            from mmcli.speech import load_transcriber, transcribe_recording, transcript_windowing

            with reporter.loading(speech):
                transcriber = load_transcriber(speech, **run.loading)
            windowing = transcript_windowing(transcriber, sampling.start, sampling.end)
            transcript = partial(transcribe_recording, transcriber, windowing=windowing, language=speech_language,
                                 workers=run.workers)  # fmt: skip
        run_prompt = captioner.prompt_for(prompt, detail)
        video_prompt = None
        if captioner.clip_frames:
            what = f"model {model!r} ({captioner.family}) captions each video whole"
            sampling = run.clip_sampling(captioner.clip_frames, what)
            video_prompt = captioner.video_prompt_for(prompt, detail)
        options = options or GenerationOptions()
        # What decides the captions; recorded in the manifest so an update can insist on the same.
        settings = {
            "model": model,
            "prompt": run_prompt,
            "options": vars(options),
            "max_pixels": run.max_pixels,
            "exact_decode": run.exact_decode,
            "dtype": str(captioner.dtype),
            "quantize": captioner.quantized,
            "video": {**vars(sampling), "summary": summary},
            **({"speech": {"model": speech, "language": speech_language}} if speech else {}),
            **({"video_prompt": video_prompt, "clip_frames": captioner.clip_frames} if captioner.clip_frames else {}),
        }
        engine_options = {"prompt": run_prompt, "video_prompt": video_prompt, "options": options,
                          "batch_size": batch_size, "workers": run.workers, "max_pixels": run.max_pixels,
                          "exact_decode": run.exact_decode, "linger": stream_linger(inputs)}  # fmt: skip
        job = run.distribute(
            _CaptionJob(captioner, sampling, summary, engine_options, transcript),
            partial(_load_caption_job, model, run.loading, sampling, summary, engine_options),
            batch_size=batch_size,
            min_side=captioner.decode_min_side,
            reporter=reporter,
        )
        identity = {"command": "caption", "inputs": inputs, "format": output_format, **columns.recorded()}
        stats = run_into(
            destination, job, listed if previous is not None else items, settings=settings,
            identity=None if STDIN in inputs else identity, previous=previous, total=total, batch_size=batch_size,
            device=str(captioner.device), run=run, reporter=reporter, desc="captioning", unit="images",
        )  # fmt: skip
    counters = stats.counters
    records = None
    if collected is not None:
        records = [json.loads(line) for line in collected.getvalue().splitlines()] if output_format == "jsonl" else None
    return CaptionResult(output, counters["captioned"], counters["videos"], stats, records)

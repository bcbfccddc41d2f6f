"""Speech to text: Whisper-family checkpoints turn recordings (and the soundtracks of videos) into
timed segments, the run behind ``mmcli transcribe`` and ``mmcli caption --speech``.

A recording is cut into the model's 30 s windows, end to end (:mod:`mmcli.media.audio`); windows of
any recordings are batched through ``generate`` with timestamps, and each window's timed pieces
(its processor's ``output_offsets``) become segments at their place in the recording. A segment
that runs over a window's end is cut there: windows are transcribed independently, so they batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from mmcli.errors import ItemError, UsageError, option
from mmcli.items import InputItem
from mmcli.media.audio import AUDIO_END, AudioEnd, AudioWindow, Windowing, expand_audio, silence_error
from mmcli.models import LoadedModel
from mmcli.pipeline import Outcome, default_workers, map_batches
from mmcli.transcribers import TRANSCRIBERS

if TYPE_CHECKING:
    import torch

    from mmcli.engine import Reporter, RunStats

DEFAULT_TRANSCRIBER = "openai/whisper-small"
TASKS = ("transcribe", "translate")


@dataclass(frozen=True)
class Segment:
    """A stretch of speech: ``text`` said from ``t`` to ``end`` seconds into the recording."""

    t: float
    end: float
    text: str


class Transcriber(LoadedModel):
    """Turns windows of samples into timed text.

    Attributes (beyond :class:`~mmcli.models.LoadedModel`'s): ``audio_rate`` (Hz) and
    ``audio_window`` (seconds), what the model takes at once.
    """

    family = "whisper"
    # Each window is a 30 s log-mel spectrogram and a short autoregressive decode: 4 keep two CPU
    # cores busy, a GPU takes many more.
    cpu_batch_size = 4
    gpu_batch_size = 32
    required_methods = ("generate",)
    model_kind = "a speech recognition model"

    def __init__(self, name: str, model: Any, processor: Any, **kwargs: Any) -> None:
        super().__init__(name, model, processor, **kwargs)
        features = processor.feature_extractor
        self.audio_rate = int(features.sampling_rate)
        self.audio_window = float(features.chunk_length)

    def preprocess_audio(self, samples: np.ndarray) -> dict[str, torch.Tensor]:
        """One piece of a recording -> the model's input features, batch dimension 1 (thread-safe): a
        piece of one window padded to it, as Whisper reads short audio; a longer one whole, with its
        attention mask, as its sequential long-form decoding reads it."""
        extractor = self.processor.feature_extractor
        if not self.long_form(len(samples)):
            features = extractor(samples, sampling_rate=self.audio_rate, return_tensors="pt")
            return {"input_features": features["input_features"]}
        features = extractor(samples, sampling_rate=self.audio_rate, return_tensors="pt", truncation=False,
                             padding="longest", return_attention_mask=True)  # fmt: skip
        return {"input_features": features["input_features"], "attention_mask": features["attention_mask"]}

    def long_form(self, samples: int) -> bool:
        """Whether a piece of ``samples`` is longer than one window: decoded by long-form generation."""
        return samples > self.audio_window * self.audio_rate

    def transcribe(
        self, inputs: Sequence[dict[str, torch.Tensor]], durations: Sequence[float], *, language: str | None = None,
        task: str = "transcribe",
    ) -> list[list[Segment]]:  # fmt: skip
        """The segments of each piece (times from the piece's start, none past its ``durations``). Pieces
        longer than one window go through Whisper's sequential long-form generation: each next window
        starts where the last whole segment ended, so speech across a 30 s boundary is not cut."""
        kwargs: dict[str, Any] = {"return_timestamps": True}
        if task != "transcribe":  # the default; English-only checkpoints refuse to be told any task
            kwargs["task"] = task
        if language:
            kwargs["language"] = language
        import torch

        with torch.inference_mode():
            batch = self.to_device(_padded(inputs))
            try:
                generated = self.model.generate(**batch, **kwargs)
            except ValueError as exc:  # an unknown language, a task the checkpoint lacks
                raise UsageError(f"model {self.name!r}: {exc}") from None
        sequences = getattr(generated, "sequences", generated)
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        # one at a time: the tokenizer computes offsets for a single sequence (a list) only
        decoded = [tokenizer.decode(row.tolist(), skip_special_tokens=True, output_offsets=True) for row in sequences]
        return [_segments(piece, duration) for piece, duration in zip(decoded, durations, strict=True)]


def _padded(inputs: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One batch of pieces: long-form features of several lengths padded to the longest (the padding
    is masked: generation reads each piece to its own length), short ones as they are."""
    import torch

    from mmcli.encoders.base import collate

    if "attention_mask" not in inputs[0]:
        return collate(inputs)
    frames = max(item["input_features"].shape[-1] for item in inputs)

    def pad(tensor: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(tensor, (0, frames - tensor.shape[-1]))

    return {key: torch.cat([pad(item[key]) for item in inputs]) for key in ("input_features", "attention_mask")}


def _segments(decoded: dict[str, Any], duration: float) -> list[Segment]:
    """A window's decoded pieces as segments; text with no timestamps spans the whole window."""
    pieces = decoded.get("offsets") or []
    if not pieces:
        text = str(decoded.get("text", "")).strip()
        return [Segment(0.0, duration, text)] if text else []
    segments = []
    for piece in pieces:
        text = str(piece.get("text", "")).strip()
        start, end = piece.get("timestamp") or (0.0, None)
        start = float(start or 0.0)
        end = duration if end is None else min(float(end), duration)
        if text and start < duration and end >= start:  # times past a short window's end are padding
            segments.append(Segment(start, end, text))
    return segments


def load_whisper(
    name: str, path: str, config: Any, *, device: str, dtype: Any, trust_remote_code: bool = False
) -> Transcriber:
    return Transcriber.from_checkpoint(
        name, path, "AutoModelForSpeechSeq2Seq", device=device, dtype=dtype, trust_remote_code=trust_remote_code
    )


def load_transcriber(
    name_or_path: str = DEFAULT_TRANSCRIBER,
    *,
    device: str = "auto",
    dtype: str = "auto",
    quantize: str | None = None,
    trust_remote_code: bool = False,
) -> Transcriber:
    """Load a hub id or local checkpoint folder as a :class:`Transcriber` (family from its config)."""
    return TRANSCRIBERS.load(
        name_or_path, device=device, dtype=dtype, quantize=quantize, trust_remote_code=trust_remote_code
    )


# A recording is transcribed in pieces of at most this long, end to end (the last one short): each
# piece is decoded as Whisper's own long-form generation decodes a whole recording, and holds its
# samples (about 115 MB for 30 minutes at 16 kHz) and their features while it is decoded.
LONG_FORM_PIECE_S = 1800.0


def transcript_windowing(transcriber: Transcriber, start: float = 0.0, end: float | None = None) -> Windowing:
    """Pieces of :data:`LONG_FORM_PIECE_S` end to end, the last one short, so no stretch of speech is
    transcribed twice; within a piece, Whisper's long-form decoding moves its 30 s window itself."""
    return Windowing(max(LONG_FORM_PIECE_S, transcriber.audio_window), None, start, end, tail="short")


def transcribe_items(
    items: Iterable[InputItem],
    transcriber: Transcriber,
    windowing: Windowing,
    *,
    language: str | None = None,
    task: str = "transcribe",
    batch_size: int | None = None,
    workers: int | None = None,
    linger: float | None = None,
) -> Iterator[list[Outcome[InputItem]]]:
    """Transcribe recordings (``modality: audio`` items) in input order, one list of outcomes per
    batch: each window's ``value`` is its segments (times in the recording), the end marker's
    ``None``; an item that fails gets its ``error``."""
    items = expand_audio(items, transcriber.audio_rate, windowing)

    def prepare(item: InputItem) -> Any:
        if item.error:
            raise ItemError(item.error)
        if isinstance(item, AudioWindow):
            samples, item.samples = item.samples, None  # released once preprocessed
            return transcriber.preprocess_audio(samples), len(samples) / transcriber.audio_rate
        return None

    def run(group: str, values: list[Any]) -> list[Any]:
        if group == "end":
            return [None] * len(values)
        return transcriber.transcribe([v[0] for v in values], [v[1] for v in values], language=language, task=task)

    for outcomes in map_batches(
        items,
        prepare,
        run,
        batch_size=batch_size or transcriber.default_batch_size,
        workers=default_workers() if workers is None else workers,
        group=lambda item: _piece_kind(transcriber, item),
        markers=("end",),
        fatal=(UsageError,),
        linger=linger,
    ):
        for outcome in outcomes:
            if isinstance(outcome.item, AudioWindow) and outcome.value is not None:
                t = float(outcome.item.extra["t"])
                outcome.value = [Segment(t + s.t, t + s.end, s.text) for s in outcome.value]
        yield outcomes


def _piece_kind(transcriber: Transcriber, item: InputItem) -> str:
    """Which model call a piece joins: short pieces (one window) and long ones (long-form) apart."""
    if not isinstance(item, AudioWindow):
        return "end"
    seconds = float(item.extra["end"]) - float(item.extra["t"])
    return "long" if transcriber.long_form(round(seconds * transcriber.audio_rate)) else "window"


def transcribe_recording(
    transcriber: Transcriber, item: InputItem, windowing: Windowing, **options: Any
) -> list[Segment]:
    """All the segments of one recording (or video soundtrack), or an :class:`ItemError` saying why
    there are none."""
    segments: list[Segment] = []
    for outcomes in transcribe_items([replace(item, modality="audio")], transcriber, windowing, **options):
        for outcome in outcomes:
            if outcome.error is not None:
                raise ItemError(outcome.error)
            if isinstance(outcome.item, AudioEnd) and (silent := silence_error(outcome.item.peak)):
                raise ItemError(silent)
            segments.extend(outcome.value or ())
    return segments


@dataclass
class TranscriptRecords:
    """Turns transcript outcomes into segment records ``{"id": "REC#t=START,END", "source", "t",
    "end", "text", "model"}``, each recording's in time order; a recording silent throughout is an
    error (see :func:`~mmcli.media.audio.silence_error`), one with no speech gives no record."""

    model: str
    recordings: int = 0
    segments: int = 0
    without_speech: int = 0
    _held: list[Outcome[InputItem]] = field(default_factory=list)  # the open recording's segments
    _failed: str | None = None  # why a window of the open recording failed, which fails the recording

    @property
    def pending(self) -> bool:
        return bool(self._held) or self._failed is not None

    def records(self, outcomes: Iterable[Outcome[InputItem]]) -> list[Outcome[InputItem]]:
        result: list[Outcome[InputItem]] = []
        for outcome in outcomes:
            item = outcome.item
            if isinstance(item, AudioWindow):
                if outcome.error is not None:
                    self._failed = self._failed or f"at {item.extra['t']:g} s: {outcome.error}"
                else:
                    self._held.extend(Outcome(*_segment_record(item, s, self.model)) for s in outcome.value)
            elif outcome.error is not None:
                result.append(outcome)
            elif item.modality == AUDIO_END:
                held, self._held, failed, self._failed = self._held, [], self._failed, None
                silent = silence_error(item.peak) if isinstance(item, AudioEnd) else None
                if failed or silent:  # a transcript with a hole in it is not given as the transcript
                    result.append(Outcome(replace(item, modality="audio"), error=failed or silent))
                    continue
                result.extend(held)
                self.recordings += 1
                self.segments += len(held)
                self.without_speech += not held
        return result


def _segment_record(window: AudioWindow, segment: Segment, model: str) -> tuple[InputItem, dict[str, Any]]:
    parent = window.extra["audio"]
    segment_id = f"{parent}#t={segment.t:.3f},{segment.end:.3f}"  # a W3C media fragment
    record = {"id": segment_id, "source": window.source, "t": round(segment.t, 6), "end": round(segment.end, 6),
              "text": segment.text, "model": model}  # fmt: skip
    reserved = {*record, "audio", "t", "end", "modality"}
    record.update((k, v) for k, v in window.extra.items() if k not in reserved)
    item = InputItem(segment_id, "segment", window.source, path=window.path, extra={"audio": parent})
    return item, record


class _TranscribeJob:
    """Transcription as a :class:`~mmcli.engine.Job`: recordings expanded to windows, assembled into
    segment records."""

    unit = "recording"

    def __init__(self, transcriber: Transcriber, windowing: Windowing, options: dict[str, Any]) -> None:
        self.transcriber, self.windowing, self.options = transcriber, windowing, options
        self.assembler = TranscriptRecords(transcriber.name)

    def batches(self, items: Iterable[InputItem], counters: dict[str, int] | None = None) -> Iterator[Any]:
        counters = counters or {}
        self.assembler = TranscriptRecords(
            self.transcriber.name, counters.get("recordings", 0), counters.get("segments", 0),
            counters.get("without_speech", 0),
        )  # fmt: skip
        for batch in transcribe_items(items, self.transcriber, self.windowing, **self.options):
            yield self.assembler.records(batch), batch

    @property
    def pending(self) -> bool:
        return self.assembler.pending

    def counters(self) -> dict[str, int]:
        a = self.assembler
        return {"recordings": a.recordings, "segments": a.segments, "without_speech": a.without_speech}


def _load_transcribe_job(model: str, loading: dict[str, Any], windowing: Windowing, options: dict[str, Any]) -> Any:
    """The transcription job with its model loaded: what each worker of a distributed run builds."""
    return _TranscribeJob(load_transcriber(model, **loading), windowing, options)


@dataclass
class TranscribeResult:
    """What :func:`transcribe_files` wrote: to ``output`` (``None``: the ``stream``), how many
    ``recordings`` and ``segments``, how many recordings had ``without_speech``, and the run's
    :class:`~mmcli.engine.RunStats`."""

    output: Path | None
    recordings: int
    segments: int
    without_speech: int
    stats: RunStats


def transcribe_files(
    inputs: Sequence[str],
    output: str | os.PathLike[str] | None = None,
    *,
    stream: IO[str] | None = None,
    model: str = DEFAULT_TRANSCRIBER,
    language: str | None = None,
    task: str = "transcribe",
    reporter: Reporter | None = None,
    **run_options: Any,
) -> TranscribeResult:
    """Transcribe recordings and the soundtracks of videos (files and folders; ``-`` reads paths or
    JSONL records from stdin) into JSONL segment records in ``output`` (or ``stream``, default stdout).

    ``language`` (``en``, ``german``, ...) skips the model's language detection; ``task="translate"``
    gives English. ``start`` and ``end`` (in ``run_options``) bound each recording. With ``output``,
    progress is journalled beside it: a killed run resumes where it stopped (``restart`` discards it).
    ``run_options`` are the settings every run takes (:class:`~mmcli.engine.RunOptions`).
    """
    from mmcli.engine import Reporter, RunOptions, require_inputs, run_into, stream_linger, with_total
    from mmcli.io.inputs import discover_images, unique_ids
    from mmcli.items import STDIN
    from mmcli.output.destination import RecordFile

    reporter = reporter or Reporter()
    run = RunOptions.of(run_options)
    output = Path(output) if output is not None else None
    inputs = [str(i) for i in inputs]
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}; choose {' or '.join(TASKS)}")
    require_inputs(inputs, hint="give audio or video files or folders, or - to read paths from stdin")
    if run.update or run.keep_missing:
        raise UsageError(f"{option('update')} is not available for transcripts; rerun into a new -o file")
    with RecordFile(output, stream=stream).check(overwrite=run.overwrite) as destination:
        run.check_backend(inputs)
        sampling = run.video_sampling()
        items, total = with_total(discover_images(inputs, audio=True), inputs, what="audio or video files")
        items = unique_ids(items)

        with reporter.loading(model):
            transcriber = load_transcriber(model, **run.loading)
        batch_size = run.batch_size or transcriber.default_batch_size
        windowing = transcript_windowing(transcriber, sampling.start, sampling.end)
        settings = {"model": model, "language": language, "task": task, "dtype": str(transcriber.dtype),
                    "quantize": transcriber.quantized, "audio": vars(windowing)}  # fmt: skip
        options = {"language": language, "task": task, "batch_size": batch_size, "workers": run.workers,
                   "linger": stream_linger(inputs)}  # fmt: skip
        job = run.distribute(
            _TranscribeJob(transcriber, windowing, options),
            partial(_load_transcribe_job, model, run.loading, windowing, options),
            batch_size=batch_size,
            min_side=None,
            reporter=reporter,
        )
        stats = run_into(
            destination, job, items, settings=settings,
            identity=None if STDIN in inputs else {"command": "transcribe", "inputs": inputs}, previous=None,
            total=total, batch_size=batch_size, device=str(transcriber.device), run=run, reporter=reporter,
            desc="transcribing", unit="recordings",
        )  # fmt: skip
    counters = stats.counters
    return TranscribeResult(output, counters["recordings"], counters["segments"], counters["without_speech"], stats)

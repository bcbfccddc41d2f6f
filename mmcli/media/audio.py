"""Audio decoding that streams: a file (or a video's soundtrack) is read, resampled to the model's rate
and cut into windows as it goes, so a two-hour recording never sits in memory.

Decoding is FFmpeg's, through PyAV (the ``audio`` extra: ``pip install av``), imported only when audio is
opened: WAV, FLAC, OGG/Vorbis, Opus, MP3, M4A/AAC and the audio track of any video FFmpeg reads.
Samples are float32 at the rate the model was trained on (FFmpeg's resampler), and mono: channels
are averaged, as ``librosa.load`` and the models' reference usage do (``ffmpeg -ac 1`` mixes at -3 dB
instead). Times are seconds from the start of the file; windows are
half-open ``[t, end)``.

An audio file enters a batch pipeline as its windows (:class:`AudioWindow`) followed by an end
marker (:class:`AudioEnd`), as a video enters as its frames (see :mod:`mmcli.media.clips`).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from mmcli.errors import ItemError, UsageError, install_hint, option
from mmcli.items import InputItem

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".aif", ".aiff"})
AUDIO_END = "audio-end"  # the modality of the marker item that follows an audio file's last window
# A file whose every sample stays below -80 dBFS holds no sound to embed or transcribe: a failed
# recording, a placeholder, a video with a muted track.
SILENCE_PEAK = 1e-4
_NOT_AUDIO = "not audio FFmpeg can decode (unknown format, or a corrupt or truncated file)"
_INSTALL = f"reading audio needs PyAV: {install_hint('audio')}"


def is_audio_path(path: str | os.PathLike[str]) -> bool:
    """Judge by extension, as directory walks must not open every file they pass."""
    return os.path.splitext(os.fspath(path))[1].lower() in AUDIO_EXTENSIONS


@dataclass(frozen=True)
class Windowing:
    """How a recording is cut for a model: windows of ``window`` seconds every ``hop`` seconds over
    ``[start, end)``.

    ``tail``: what happens to the samples after the last whole window. ``"align"`` (embeddings) adds
    one last whole window ending at the end of the recording, so every window is the model's full
    input and nothing at the end is left out; ``"short"`` (transcripts, where windows must not
    overlap) gives the rest as a shorter window, which the model's processor pads. A recording
    shorter than one window is one window of its whole length either way.
    """

    window: float
    hop: float | None = None
    start: float = 0.0
    end: float | None = None
    tail: str = "align"

    def __post_init__(self) -> None:
        if not self.window > 0:
            raise UsageError(f"{option('window')} must be a positive number of seconds")
        if self.hop is not None and not self.hop > 0:
            raise UsageError(f"{option('hop')} must be a positive number of seconds")
        if self.start < 0:
            raise UsageError(f"{option('start')} must be zero or more seconds")
        if self.end is not None and not self.end > self.start:
            raise UsageError(f"end time ({self.end} s) must come after the start time ({self.start} s)")

    @property
    def step(self) -> float:
        return self.window if self.hop is None else self.hop


def audio_windowing(
    model_window: float,
    window: float | None = None,
    hop: float | None = None,
    *,
    start: float = 0.0,
    end: float | None = None,
    tail: str = "align",
    model: str = "the model",
) -> Windowing:
    """The windows asked for, checked against what the model takes at once (``model_window`` seconds):
    a longer window would be cropped at random or truncated by its processor, so it is refused."""
    if window is not None and window > model_window + 1e-9:
        raise UsageError(
            f"{model} takes at most {model_window:g} s of audio at once; {option('window', window)} is longer "
            f"(give {option('window')} {model_window:g} or less, and {option('hop')} for overlap)"
        )
    return Windowing(window or model_window, hop, start, end, tail)


@dataclass
class AudioWindow(InputItem):
    """One window of a recording: its ``samples`` (float32 at the model's rate, released once
    preprocessed) and ``peak`` amplitude; ``extra`` carries ``t``, ``end`` and the parent ``audio`` id
    into the row's record, whose ``modality`` is ``audio``."""

    samples: Any = field(default=None, repr=False)
    peak: float = 0.0

    def record(self, *, modality: bool = True, **fields: Any) -> dict[str, Any]:
        record = super().record(modality=modality, **fields)
        if modality:
            record["modality"] = "audio"
        return record


@dataclass
class AudioEnd(InputItem):
    """The marker after a recording's last window: ``peak`` is the loudest sample of the whole range
    (a silent recording is an error), ``duration`` where the decoded range ended (seconds)."""

    peak: float = 0.0
    duration: float = 0.0


class AudioReader:
    """The first audio track of a file (or of bytes), decoded and resampled to ``rate`` Hz mono float32.

    ``chunks()`` yields arrays as FFmpeg decodes them, from ``start`` to ``end`` seconds; ``samples``
    counts what it gave. Errors (no such file, not audio, no audio track) are :class:`ItemError`; a
    file that fails part way (cut short, corrupt) ends there, ``truncated``.
    """

    def __init__(self, source: str | bytes, rate: int, *, start: float = 0.0, end: float | None = None) -> None:
        try:
            import av
        except ImportError:
            raise UsageError(_INSTALL) from None
        self.rate, self.start, self.end = int(rate), float(start), end
        self.samples = 0
        self.truncated = False
        self._av = av
        opened: Any = io.BytesIO(source) if isinstance(source, bytes) else _local_path(source)
        self._opened = opened
        try:
            self._container = av.open(opened, mode="r", metadata_errors="ignore")
        except av.FFmpegError as exc:
            raise ItemError(_describe(exc)) from None
        streams = self._container.streams.audio
        if not streams:
            self._container.close()
            raise ItemError("has no audio track")
        self._stream = streams[0]

    def chunks(self) -> Iterator[np.ndarray]:
        av = self._av
        resampler = None
        skip = round(self.start * self.rate)  # samples before start, dropped as they are decoded
        left = None if self.end is None else round(self.end * self.rate) - skip
        try:
            for frame in self._decoded():
                if resampler is None:
                    if frame is None:
                        return
                    resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=self.rate)
                for out in resampler.resample(frame):
                    planes = out.to_ndarray()
                    chunk = planes[0] if len(planes) == 1 else planes.mean(axis=0)
                    if skip:
                        dropped = min(skip, len(chunk))
                        chunk, skip = chunk[dropped:], skip - dropped
                    if left is not None:
                        chunk = chunk[:left]
                        left -= len(chunk)
                    if len(chunk):
                        self.samples += len(chunk)
                        yield chunk.astype(np.float32, copy=False)
                    if left == 0:
                        return
            if "wav" in self._container.format.name.split(",") and _riff_cut_short(self._opened):
                self.truncated = True  # FFmpeg decodes the bytes there are and says nothing of the rest
        except av.FFmpegError as exc:
            if not self.samples:
                raise ItemError(_describe(exc)) from None
            self.truncated = True  # what was decoded is used, as for a video cut short

    def _decoded(self) -> Iterator[Any]:
        yield from self._container.decode(self._stream)
        yield None  # flushes the resampler

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _riff_cut_short(opened: Any) -> bool:
    """Whether a RIFF/WAVE file's ``data`` chunk claims more bytes than the file holds: a header
    written for a longer recording than the one there (sizes 0 and 0xFFFFFFFF mean "unknown", as a
    writer streaming to a pipe leaves them, and are not a shortfall)."""
    try:
        handle = opened if hasattr(opened, "read") else open(opened, "rb")  # (closed below unless given)
    except OSError:
        return False
    try:
        handle.seek(0)
        head = handle.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return False
        while len(chunk := handle.read(8)) == 8:
            size = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                start = handle.tell()
                available = handle.seek(0, io.SEEK_END) - start
                return size not in (0, 0xFFFFFFFF) and size > available
            handle.seek(size + (size & 1), io.SEEK_CUR)
        return False
    except OSError:
        return False
    finally:
        if handle is not opened:
            handle.close()


def decode_audio(source: str | bytes, rate: int, *, start: float = 0.0, end: float | None = None) -> np.ndarray:
    """A whole (short) recording as one float32 mono array at ``rate`` Hz."""
    with AudioReader(source, rate, start=start, end=end) as reader:
        chunks = list(reader.chunks())
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def windows(chunks: Iterable[np.ndarray], rate: int, windowing: Windowing) -> Iterator[tuple[int, np.ndarray]]:
    """``(first sample, samples)`` of each window over a stream of chunks (which start at sample 0),
    holding no more than about a window of samples; see :class:`Windowing` for the tail."""
    size = max(1, round(windowing.window * rate))
    step = max(1, round(windowing.step * rate))
    pending: list[np.ndarray] = []  # the samples from `first` on, as decoded
    held, first, position = 0, 0, 0  # samples pending, the sample pending starts at, the next window's start
    last: tuple[int, np.ndarray] | None = None  # the last window given
    for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        if first + held < position + size:
            continue
        buffer = np.concatenate(pending)
        while first + len(buffer) >= position + size:
            offset = position - first
            last = (position, buffer[offset : offset + size].copy())
            yield last
            position += step
            drop = min(len(buffer), max(0, position - first))
            buffer, first = buffer[drop:], first + drop
        pending, held = [buffer], len(buffer)
    rest = np.concatenate(pending) if pending else np.zeros(0, np.float32)
    seen = first + len(rest)
    if last is None:
        if seen:
            yield 0, rest  # shorter than one window: the whole recording
        return
    last_start, last_window = last
    if seen <= last_start + size:
        return
    if windowing.tail == "align" and first <= last_start + size:
        yield seen - size, np.concatenate([last_window, rest[last_start + size - first :]])[-size:]
    else:
        offset = max(0, position - first)
        if offset < len(rest):
            yield first + offset, rest[offset:].copy()


def expand_audio(items: Iterable[InputItem], rate: int, windowing: Windowing) -> Iterator[InputItem]:
    """Replace each audio item (an audio file, or a video whose soundtrack is wanted) by its windows
    and an end marker, or by an error item; other items pass through. Windows are decoded on the
    thread that walks the items, a few ahead of the model."""
    for item in items:
        if item.modality != "audio" or item.error or isinstance(item, AudioWindow):
            yield item
            continue
        peak, count, seen, truncated = 0.0, 0, 0, False
        try:
            with AudioReader(item.media(), rate, start=windowing.start, end=windowing.end) as reader:
                for first, samples in windows(reader.chunks(), rate, windowing):
                    t = windowing.start + first / rate
                    end = t + len(samples) / rate
                    window_peak = float(np.max(np.abs(samples))) if len(samples) else 0.0
                    peak = max(peak, window_peak)
                    count += 1
                    extra = {**item.extra, "t": round(t, 6), "end": round(end, 6), "audio": item.id}
                    window_id = f"{item.id}#t={t:.3f},{end:.3f}"  # a W3C media fragment
                    yield AudioWindow(
                        window_id, "window", item.source, path=item.path, extra=extra, samples=samples,
                        peak=window_peak,
                    )  # fmt: skip
                seen, truncated = reader.samples, reader.truncated
        except ItemError as exc:
            yield replace(item, error=str(exc))
            continue
        if count == 0:
            yield replace(
                item,
                error="no audio samples in the range"
                if windowing.start
                else "no audio samples (an empty, corrupt or truncated file)",
            )
            continue
        duration = windowing.start + seen / rate
        extra = {
            **item.extra,
            "windows": count,
            "duration": round(duration, 6),
            **({"truncated": True} if truncated else {}),
        }
        yield AudioEnd(item.id, AUDIO_END, item.source, path=item.path, text=item.text, extra=extra, peak=peak,
                       duration=duration)  # fmt: skip


def silence_error(peak: float) -> str | None:
    """Why a recording whose loudest sample is ``peak`` cannot be used, if it cannot."""
    if peak >= SILENCE_PEAK:
        return None
    level = "no signal at all" if peak == 0 else f"peak {20 * math.log10(peak):.0f} dBFS"
    return f"silent: no sample above {20 * math.log10(SILENCE_PEAK):.0f} dBFS ({level})"


def _local_path(path: str) -> str:
    if not os.path.lexists(path):
        raise ItemError("no such file")
    if os.path.isdir(path):
        raise ItemError("is a directory")
    # An absolute path keeps FFmpeg from reading a name such as ``http:x.wav`` as a protocol.
    return os.path.abspath(path)


def _describe(exc: BaseException) -> str:
    reason = getattr(exc, "strerror", None) or str(exc)
    return f"{_NOT_AUDIO}: {reason}" if reason else _NOT_AUDIO

"""Generated recordings for the audio tests and benchmark: tones, a spoken-like signal, and the
same samples written as WAV, MP3 and as the soundtrack of an MP4 (PyAV's encoders, no shelling out)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np


def tone(seconds: float, rate: int, frequency: float = 440.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def speech_like(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """Syllables of voiced sound: a 120 Hz pulse train through two moving formants, 0.2 s on and
    0.1 s off, with an amplitude envelope; not words, but speech's structure in time and spectrum."""
    rng = np.random.default_rng(seed)
    n = round(seconds * rate)
    t = np.arange(n) / rate
    voice = np.sign(np.sin(2 * np.pi * 120 * t)) * 0.5
    formants = np.sin(2 * np.pi * (500 + 300 * np.sin(2 * np.pi * 1.5 * t)) * t)
    formants += 0.5 * np.sin(2 * np.pi * (1500 + 500 * np.sin(2 * np.pi * 0.7 * t)) * t)
    envelope = ((t % 0.3) < 0.2) * np.sin(np.pi * (t % 0.3) / 0.2).clip(0)
    signal = 0.25 * voice * formants * envelope + 0.003 * rng.standard_normal(n)
    return signal.astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int, channels: int = 1) -> Path:
    """16-bit PCM; with ``channels`` 2 the samples go to both, so their average is the samples again."""
    pcm = np.round(np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(np.repeat(pcm, channels).tobytes() if channels > 1 else pcm.tobytes())
    return path


def as_pcm16(samples: np.ndarray) -> np.ndarray:
    """What 16-bit PCM of ``samples`` decodes to."""
    return (np.round(np.clip(samples, -1, 1) * 32767) / 32768).astype(np.float32)


def write_mp3(path: Path, samples: np.ndarray, rate: int) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libmp3lame", rate=rate, layout="mono")
        _encode_audio(container, stream, samples, rate)
    return path


def write_mp4(path: Path, samples: np.ndarray | None, rate: int, *, codec: str = "aac", fps: int = 10) -> Path:
    """A small MPEG-4 video as long as ``samples``, with them as its soundtrack (``codec``: aac, or
    alac for a lossless track), or with no audio track at all when ``samples`` is None."""
    import av

    seconds = 2.0 if samples is None else len(samples) / rate
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        audio = container.add_stream(codec, rate=rate, layout="mono") if samples is not None else None
        for index in range(round(seconds * fps)):
            picture = np.full((32, 32, 3), (index * 8) % 256, np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if audio is not None:
            _encode_audio(container, audio, samples, rate)
    return path


def _encode_audio(container, stream, samples: np.ndarray, rate: int) -> None:
    import av

    fmt = stream.codec_context.format.name
    size = stream.codec_context.frame_size or 1024
    for start in range(0, len(samples), size):
        chunk = samples[start : start + size]
        if fmt.startswith("s16"):
            planes = np.round(chunk * 32767).astype(np.int16)
        elif fmt.startswith("s32"):
            planes = np.round(chunk * 32767).astype(np.int32) << 16
        else:
            planes = chunk.astype(np.float32)
        frame = av.AudioFrame.from_ndarray(planes.reshape(1, -1), format=fmt, layout="mono")
        frame.rate, frame.pts = rate, start
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)

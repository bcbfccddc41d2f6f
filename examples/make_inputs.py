"""The example inputs the documentation's commands read, made from nothing but ``examples/photos``:
videos, recordings, webdataset shards and a Parquet table, small and synthetic.

    python examples/make_inputs.py            # in the folder that holds examples/ (a scratch copy, or the checkout)

It writes ``clips/`` (two short videos: three coloured scenes, and a still one), ``talk.mp4`` (a
video with a speech-like soundtrack), ``sounds/`` (a tone and a speech-like recording),
``long.wav``, ``data/shard-000000.tar`` and ``data/shard-000001.tar`` (the four photos as webdataset
samples with a caption and metadata each) and ``train.parquet`` (the photos in a table, with
captions). The sounds are not words and the videos not films: every command runs on them as on
real ones. It needs the ``audio`` and ``scale`` extras (PyAV, pyarrow).
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

PHOTOS = Path(__file__).resolve().parent / "photos"
SCENES = ((220, 30, 30), (30, 200, 30), (30, 30, 220))  # red, green, blue, cut at 2 s and 5.5 s


def speech_like(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """Syllables of voiced sound (a 120 Hz pulse train through two moving formants), 0.2 s on, 0.1 s off."""
    t = np.arange(round(seconds * rate)) / rate
    voice = np.sign(np.sin(2 * np.pi * 120 * t)) * 0.5
    formants = np.sin(2 * np.pi * (500 + 300 * np.sin(2 * np.pi * 1.5 * t)) * t)
    formants += 0.5 * np.sin(2 * np.pi * (1500 + 500 * np.sin(2 * np.pi * 0.7 * t)) * t)
    envelope = ((t % 0.3) < 0.2) * np.sin(np.pi * (t % 0.3) / 0.2).clip(0)
    noise = 0.003 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.25 * voice * formants * envelope + noise).astype(np.float32)


def tone(seconds: float, rate: int, frequency: float = 440.0) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * frequency * np.arange(round(seconds * rate)) / rate)).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(np.round(np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def write_video(
    path: Path, seconds: float, colour_at: Callable[[float], tuple[int, int, int]], *,
    sound: np.ndarray | None = None, rate: int = 16000,
) -> None:  # fmt: skip
    """An MPEG-4 video of 64x48 frames at 10 fps, ``colour_at(t)`` each, with ``sound`` as its AAC track."""
    import av

    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=rate, layout="mono") if sound is not None else None
        for index in range(round(seconds * 10)):
            picture = np.full((48, 64, 3), colour_at(index / 10), np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if audio is not None:
            pcm = np.round(np.clip(sound, -1, 1) * 32767).astype(np.int16)
            step = 1024
            for start in range(0, len(pcm), step):
                frame = av.AudioFrame.from_ndarray(pcm[None, start : start + step], format="s16", layout="mono")
                frame.sample_rate = rate
                for packet in audio.encode(frame):
                    container.mux(packet)
            for packet in audio.encode(None):
                container.mux(packet)


def write_shard(path: Path, names: list[str], first: int) -> None:
    """The photos as webdataset samples: ``KEY.jpg``, ``KEY.txt`` (a caption), ``KEY.json`` (metadata)."""
    with tarfile.open(path, "w") as archive:
        for index, name in enumerate(names, start=first):
            members = {
                "jpg": (PHOTOS / f"{name}.jpg").read_bytes(),
                "txt": f"a photo of {name}".encode(),
                "json": json.dumps({"name": name, "index": index}).encode(),
            }
            for extension, data in members.items():
                info = tarfile.TarInfo(f"{index:06d}.{extension}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))


def write_table(path: Path, names: list[str]) -> None:
    """The photos in a Parquet table, as Hugging Face datasets store images: ``{bytes, path}`` structs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = [(PHOTOS / f"{name}.jpg").read_bytes() for name in names]
    table = pa.table(
        {
            "key": [f"k{index}" for index in range(len(names))],
            "caption": [f"a photo of {name}" for name in names],
            "image": [{"bytes": value, "path": f"{name}.jpg"} for value, name in zip(data, names, strict=True)],
        }
    )
    pq.write_table(table, path, row_group_size=3)


def main(folder: Path) -> None:
    names = sorted(path.stem for path in PHOTOS.glob("*.jpg"))
    (folder / "clips").mkdir(exist_ok=True)
    write_video(folder / "clips" / "scenes.mp4", 3.0, lambda t: SCENES[int(t >= 2.0) + int(t >= 5.5)])
    write_video(folder / "clips" / "steady.mp4", 2.0, lambda t: (90, 90, 90))
    write_video(folder / "talk.mp4", 6.0, lambda t: (int(t * 40) % 256,) * 3, sound=speech_like(6.0, 16000))
    (folder / "sounds").mkdir(exist_ok=True)
    write_wav(folder / "sounds" / "tone.wav", tone(3.0, 48000), 48000)
    write_wav(folder / "sounds" / "voice.wav", speech_like(3.0, 48000), 48000)
    write_wav(folder / "long.wav", speech_like(8.0, 48000, seed=1), 48000)
    (folder / "data").mkdir(exist_ok=True)
    write_shard(folder / "data" / "shard-000000.tar", names[:2], 0)
    write_shard(folder / "data" / "shard-000001.tar", names[2:], 2)
    write_table(folder / "train.parquet", names)
    print("wrote clips/, talk.mp4, sounds/, long.wav, data/shard-00000{0,1}.tar and train.parquet", file=sys.stderr)


if __name__ == "__main__":
    try:
        import av  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError as missing:
        sys.exit(f"make_inputs.py needs PyAV and pyarrow ({missing.name} is missing): pip install av pyarrow "
                 "(or, in mmcli's source folder, pip install '.[audio,scale]')")  # fmt: skip
    main(Path.cwd())

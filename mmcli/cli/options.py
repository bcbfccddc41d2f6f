"""Option bundles declared once and shared by every model command (typer ``Annotated`` aliases)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

# Mirror mmcli.encoders.DEFAULT_MODEL and mmcli.captioners.DEFAULT_CAPTIONER without importing torch.
DEFAULT_ENCODER = "openai/clip-vit-base-patch32"
DEFAULT_CAPTIONER = "Salesforce/blip-image-captioning-base"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class DType(str, Enum):
    auto = "auto"
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


class OnError(str, Enum):
    skip = "skip"
    fail = "fail"


class StorageDType(str, Enum):
    float32 = "float32"
    float16 = "float16"


def in_panel(panel: str, kind: Any, help: str | None = None, *names: str, **settings: Any) -> Any:
    """An option of type ``kind`` shown in the help panel ``panel``; ``names`` and ``settings`` go to
    ``typer.Option`` (limits, ``show_default``)."""
    return Annotated[kind, typer.Option(*names, help=help, rich_help_panel=panel, **settings)]


Inputs = Annotated[
    list[str] | None,
    typer.Argument(
        help="Files, folders (recursive), glob patterns, or - for stdin (paths or JSONL records).", show_default=False
    ),
]
CaptionerModel = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        envvar="MMCLI_CAPTION_MODEL",
        help="Captioning model: Hugging Face id or local checkpoint folder.",
        rich_help_panel="Model",
    ),
]
EncoderModel = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        envvar="MMCLI_MODEL",
        help="Hugging Face model id (transformers, open_clip or timm) or local checkpoint folder; "
        "open_clip:ARCH/TAG, hf-hub:ORG/REPO, torchvision:NAME[:WEIGHTS].",
        rich_help_panel="Model",
    ),
]
QueryModel = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Embed queries with this model \\[default: the model named in the index's records].",
        show_default=False,
        rich_help_panel="Model",
    ),
]
DeviceOption = Annotated[Device, typer.Option(help="Where the model runs.", rich_help_panel="Model")]
DTypeOption = Annotated[
    DType,
    typer.Option(
        envvar="MMCLI_DTYPE",
        metavar="<dtype>",  # (the choices are in the help: spelled out there, they leave the model's name room)
        help="Model numerics: auto, float32, float16 or bfloat16. auto: bfloat16 on CPUs with native bfloat16 "
        "(AVX-512 BF16, AMX), else float32; float16 on GPUs (bfloat16 for models released in it).",
        rich_help_panel="Model",
    ),
]


class Quantization(str, Enum):
    int8 = "int8"


QuantizeOption = Annotated[
    Quantization | None,
    typer.Option(
        help="CPU only: int8 Linear layers, about 1.5x float32 speed without bfloat16 hardware, "
        "at a small cost in accuracy (cosine ~0.9995 to float32).",
        show_default=False,
        rich_help_panel="Model",
    ),
]


def _batch_size(defaults: str) -> Any:
    return Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            "-b",
            min=1,
            help=f"Items per model call \\[default: {defaults}].",
            show_default=False,
            rich_help_panel="Model",
        ),
    ]


# What each kind of model takes when the user gives no batch size (tests/test_help_defaults.py holds
# these to the classes' cpu_batch_size and gpu_batch_size).
BatchSize = _batch_size("16 on a CPU, 64 on a GPU; audio models 8 and 64; video models that over their clip's frames")
CaptionBatchSize = _batch_size("8 on a CPU, 32 on a GPU")
TranscribeBatchSize = _batch_size("4 on a CPU, 32 on a GPU")
QueryBatchSize = _batch_size("16")
Workers = Annotated[
    int | None,
    typer.Option(
        min=0,
        help="Threads decoding inputs ahead of the model \\[default: CPU count, at most 8].",
        show_default=False,
        rich_help_panel="Model",
    ),
]
ExactDecode = Annotated[
    bool,
    typer.Option(
        envvar="MMCLI_EXACT_DECODE",
        help="Decode JPEGs at full size even when the model sees far fewer pixels: identical pixels to the "
        "processor's reference usage, but several times slower on large photos (by default they are decoded "
        "at 1/2-1/8 scale, never below twice the model's input size).",
        rich_help_panel="Model",
    ),
]
TrustRemoteCode = Annotated[
    bool, typer.Option(help="Allow a hub model to run its own Python code.", rich_help_panel="Model")
]
OnErrorOption = Annotated[
    OnError, typer.Option(help="On a bad item: skip it (reported, exit status 1) or stop at once.")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary on stderr.")]
Overwrite = Annotated[bool, typer.Option(help="Replace existing output files.")]
MaxPixels = Annotated[
    int, typer.Option(min=1, help="Refuse images larger than this many pixels (decompression bombs).")
]
OutputNpy = Annotated[
    str,
    typer.Option(
        "--output",
        "-o",
        help="Feature matrix to write (.npy); the .jsonl sidecar goes beside it. DIR/ (or an existing folder): "
        "a sharded set, parts of --shard-rows rows with an index.json.",
        show_default=False,
    ),
]

SOURCES = "Parquet inputs"
ImageColumn = Annotated[
    str | None,
    typer.Option(
        help="Column of a .parquet input holding the images: paths (relative to the table's folder), URLs, "
        "image bytes, or {bytes, path} structs (Hugging Face datasets).",
        show_default=False,
        rich_help_panel=SOURCES,
    ),
]


def _text_column(use: str) -> Any:
    return Annotated[
        str | None,
        typer.Option(
            help=f"Column of a .parquet input holding texts: {use}.", show_default=False, rich_help_panel=SOURCES
        ),
    ]


TextColumn = _text_column("the inputs with --modality text, else carried into each record as 'text'")
RecordTextColumn = _text_column("carried into each record as 'text'")
CaptionColumn = _text_column("each image's caption (its training target)")
IdColumn = Annotated[
    str | None,
    typer.Option(
        help="Column of a .parquet input holding the ids \\[default: TABLE:ROW, rows counted from 0].",
        show_default=False,
        rich_help_panel=SOURCES,
    ),
]


VIDEO = "Video and audio"
AUDIO = VIDEO  # the time range and pooling flags apply to both


def _video_fps(help: str) -> Any:
    return Annotated[float | None, typer.Option(min=0.0, help=help, show_default=False, rich_help_panel=VIDEO)]


def _video_keyframes(help: str) -> Any:
    return Annotated[bool, typer.Option("--keyframes", help=help, show_default=False, rich_help_panel=VIDEO)]


VideoFps = _video_fps("Sample video frames at this rate \\[default: 1 per second].")
VideoKeyframes = _video_keyframes("Sample the first frame of every scene instead (scene-change detection).")
# caption samples keyframes unless told otherwise: a caption per scene, not per second
CaptionVideoFps = _video_fps("Caption video frames sampled at this rate instead of the first frame of each scene.")
CaptionKeyframes = _video_keyframes(
    "Caption the first frame of every scene (scene-change detection) \\[default, unless --fps or --frames]."
)
VideoFrames = Annotated[
    int | None,
    typer.Option(
        min=1, help="Sample N evenly spaced frames per video instead.", show_default=False, rich_help_panel=VIDEO
    ),
]
SceneThreshold = Annotated[
    float,
    typer.Option(
        min=0.0,
        max=1.0,
        help="Scene-change score that starts a new scene (as ffmpeg's scene score).",
        rich_help_panel=VIDEO,
    ),
]
VideoStart = Annotated[
    float, typer.Option(min=0.0, help="Seconds into each video (or recording) to start.", rich_help_panel=VIDEO)
]
VideoEnd = Annotated[
    float | None,
    typer.Option(help="Seconds into each video (or recording) to stop.", show_default=False, rich_help_panel=VIDEO),
]
Restart = Annotated[
    bool, typer.Option(help="Discard the progress of an interrupted run (OUT.partial) instead of resuming it.")
]
KeepMissing = Annotated[
    bool, typer.Option(help="With --update, keep the records of inputs that no longer exist (at the end).")
]


SCALE = "Scale-out"


class Backend(str, Enum):
    local = "local"
    ray = "ray"


BackendOption = Annotated[
    Backend,
    typer.Option(
        help="Where the model runs: in this process, or on a Ray cluster (Ray Data; pip install 'mmcli\\[ray]'), "
        "with the same output.",
        rich_help_panel=SCALE,
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        help="The Ray cluster to join: auto (the one started on this machine with ray start), or HOST:PORT "
        "\\[default: start a Ray for this run].",
        show_default=False,
        rich_help_panel=SCALE,
    ),
]
NumWorkers = Annotated[
    int, typer.Option(min=1, help="Ray actors running the model, each loading it once.", rich_help_panel=SCALE)
]
GpusPerWorker = Annotated[
    float, typer.Option(min=0.0, help="GPUs each Ray actor holds (fractions share a GPU).", rich_help_panel=SCALE)
]


def run_flags(flags: dict[str, Any]) -> dict[str, Any]:
    """The :class:`~mmcli.engine.RunOptions` among a command's flags (its ``locals()``), as plain values."""
    from mmcli.engine import RUN_OPTIONS

    return {name: getattr(value, "value", value) for name, value in flags.items() if name in RUN_OPTIONS}


def model_loading(
    device: Device, dtype: DType, quantize: Quantization | None, trust_remote_code: bool
) -> dict[str, Any]:
    """The keyword arguments of ``load_encoder`` / ``load_captioner`` from the shared model flags."""
    return {
        "device": device.value,
        "dtype": dtype.value,
        "quantize": quantize.value if quantize else None,
        "trust_remote_code": trust_remote_code,
    }


# Where a command's JSONL records go: a file (written atomically), or standard output.
RecordsOutput = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write JSONL here instead of stdout.", dir_okay=False)
]

"""``mmcli extract-features``: images and texts -> a feature set (``.npy`` + ``.jsonl``)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from mmcli.cli import options as opt
from mmcli.cli.common import EXIT_ITEMS_FAILED, CommandReporter, note, reports_errors

EXAMPLES = """\
Examples:

  mmcli extract-features photos/ -o photos.npy

  mmcli extract-features --modality text captions.txt -o captions.npy

  mmcli extract-features photos/ -o photos-feats/ --shard-rows 100000

  mmcli extract-features sounds/ -o sounds.npy --model laion/clap-htsat-unfused --pool both

  find . -name '*.jpg' | mmcli extract-features - -o feats.npy --model google/siglip-base-patch16-224
"""


class VideoPool(str, Enum):
    mean = "mean"
    max = "max"
    none = "none"
    both = "both"


class Compile(str, Enum):
    auto = "auto"
    on = "on"
    off = "off"


class InputModality(str, Enum):
    image = "image"
    text = "text"
    audio = "audio"


@reports_errors
def extract_features(
    inputs: opt.Inputs = None,
    output: opt.OutputNpy = ...,  # type: ignore[assignment]
    text: Annotated[
        list[str] | None, typer.Option("--text", "-t", help="A text to embed (repeatable).", show_default=False)
    ] = None,
    modality: Annotated[
        InputModality | None,
        typer.Option(
            help="What INPUTS hold: images; texts (.txt, one per line; .jsonl with --field; -); or audio (audio "
            "files, and the soundtracks of videos) \\[default: what the model reads: audio for CLAP, else image].",
            show_default=False,
        ),
    ] = None,
    field: Annotated[str, typer.Option(help="JSONL field holding the text.")] = "text",
    image_column: opt.ImageColumn = None,
    text_column: opt.TextColumn = None,
    id_column: opt.IdColumn = None,
    model: opt.EncoderModel = opt.DEFAULT_ENCODER,
    batch_size: opt.BatchSize = None,
    workers: opt.Workers = None,
    device: opt.DeviceOption = opt.Device.auto,
    dtype: opt.DTypeOption = opt.DType.auto,
    quantize: opt.QuantizeOption = None,
    normalize: Annotated[bool, typer.Option(help="L2-normalise each row.")] = True,
    output_dtype: Annotated[
        opt.StorageDType, typer.Option(help="Storage type of the .npy rows.")
    ] = opt.StorageDType.float32,
    max_pixels: opt.MaxPixels = 178_956_970,
    exact_decode: opt.ExactDecode = False,
    compile: Annotated[
        Compile,
        typer.Option(
            help="Compile the image tower with torch.compile (a one-off compile of tens of seconds, then a few "
            "percent faster on a CPU); auto: for local CPU runs of 20,000 images or more.",
        ),
    ] = Compile.auto,
    on_error: opt.OnErrorOption = opt.OnError.skip,
    overwrite: opt.Overwrite = False,
    restart: opt.Restart = False,
    update: Annotated[
        bool,
        typer.Option(help="Bring an existing OUT up to date: embed only new or changed inputs, drop vanished ones."),
    ] = False,
    keep_missing: opt.KeepMissing = False,
    shard_rows: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="With -o DIR/: close each part at the first item boundary once it holds this many rows "
            "\\[default: 100000; a resumed or updated set keeps its own].",
            show_default=False,
        ),
    ] = None,
    pool: Annotated[
        VideoPool,
        typer.Option(
            help="Video and audio rows: one per video or recording, the mean or max of its frame or window rows; "
            "none: the frame or window rows; both: those rows then the mean row.",
            rich_help_panel=opt.VIDEO,
        ),
    ] = VideoPool.mean,
    window: Annotated[
        float | None,
        typer.Option(
            help="Audio: seconds per window \\[default: the model's input length, 10 for CLAP; no longer].",
            show_default=False,
            rich_help_panel=opt.AUDIO,
        ),
    ] = None,
    hop: Annotated[
        float | None,
        typer.Option(
            help="Audio: seconds from one window's start to the next \\[default: the window, no overlap].",
            show_default=False,
            rich_help_panel=opt.AUDIO,
        ),
    ] = None,
    fps: opt.VideoFps = None,
    frames: opt.VideoFrames = None,
    keyframes: opt.VideoKeyframes = False,
    scene_threshold: opt.SceneThreshold = 0.3,
    start: opt.VideoStart = 0.0,
    end: opt.VideoEnd = None,
    trust_remote_code: opt.TrustRemoteCode = False,
    backend: opt.BackendOption = opt.Backend.local,
    ray_address: opt.RayAddress = None,
    num_workers: opt.NumWorkers = 1,
    gpus_per_worker: opt.GpusPerWorker = 0.0,
    quiet: opt.Quiet = False,
) -> None:
    """Embed images, videos, audio and texts into a feature set: OUT.npy rows with an OUT.jsonl record each.

    Videos (mp4, mov, mkv, webm, avi, ...) are sampled at --fps (or --frames, --keyframes) and give
    one row each, pooled over their frames (--pool), or a row per frame with its time t. A native video
    model (X-CLIP, VideoMAE) instead embeds each video whole, as one clip of the frame count it was
    built for, evenly spaced over --start..--end.

    An audio model (CLAP) reads audio files (wav, flac, ogg, opus, mp3, m4a) and the soundtracks of
    videos, cut into --window second windows every --hop seconds, one row each (pooled by --pool) with
    its time t and end; a last window ends where the recording does. Texts (--text) embed beside them.

    Progress is kept in OUT.partial/ as the run goes: if it is interrupted (even killed), the
    same command resumes where it stopped and gives exactly the output of an uninterrupted run.

    -o DIR/ writes a sharded set: DIR/part-00000.npy + .jsonl, ... and DIR/index.json; every command
    that reads a feature set takes DIR/. A killed run resumes after its last finished part.
    """
    flags = dict(locals())  # the shared run options go to the library as they are
    from mmcli.extract import extract_features as run
    from mmcli.output.npy import sidecar_path
    from mmcli.output.sharded import INDEX_NAME, read_index

    result = run(
        inputs or [],
        output,
        texts=text or [],
        modality=modality.value if modality else None,
        field=field,
        model=model,
        normalize=normalize,
        output_dtype=output_dtype.value,
        pool=pool.value,
        window=window,
        hop=hop,
        compile=compile.value,
        image_column=image_column,
        text_column=text_column,
        id_column=id_column,
        shard_rows=shard_rows,
        **opt.run_flags(flags),
        reporter=CommandReporter(quiet=quiet),
    )
    stats = result.stats
    if stats.update:
        summary = (
            f"updated {output}: {stats.kept} inputs kept ({stats.moved} recognised by content), "
            f"{stats.processed} embedded, {stats.dropped} dropped"
        )
        if stats.kept_missing:
            summary += f", {stats.kept_missing} rows of vanished files kept"
    elif result.output.is_dir():
        parts = len(read_index(result.output)["parts"])
        summary = f"wrote {result.rows} rows x {result.dim} to {result.output}/ ({parts} parts, {INDEX_NAME})"
    else:
        summary = f"wrote {result.rows} rows x {result.dim} to {output} + {sidecar_path(result.output)}"
    if stats.failed:
        summary += f"; {stats.failed} failed, listed in {result.errors}"
    note(summary, quiet=quiet)
    if stats.failed:
        raise typer.Exit(EXIT_ITEMS_FAILED)

"""``mmcli evaluate captions``: the COCO caption metrics, and CLIPScore, of a caption file."""

from __future__ import annotations

from enum import Enum
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from mmcli.cli import options as opt
from mmcli.cli.common import note, reports_errors
from mmcli.cli.evaluate_common import Format, FormatOption, Quiet, StrictOption, emit, strict_flag
from mmcli.errors import UsageError

EXAMPLES = """\
Examples:

  mmcli caption photos/ > pred.jsonl && mmcli evaluate captions --pred pred.jsonl --refs refs.jsonl

  mmcli evaluate captions --pred pred.jsonl --refs refs.jsonl --metrics bleu,cider --per-item scores.jsonl

  mmcli evaluate captions --pred pred.jsonl --refs refs.jsonl --clipscore --images photos.npy

  mmcli caption clips/ > pred.jsonl && mmcli evaluate captions --pred pred.jsonl --refs refs.jsonl --video segments
"""


class Video(str, Enum):
    summary = "summary"
    segments = "segments"


@reports_errors
def captions(
    pred: Annotated[
        Path, typer.Option(help='Predictions: {"id", "caption"} JSONL (mmcli caption output, videos too).')
    ] = ...,  # type: ignore[assignment]
    refs: Annotated[
        Path, typer.Option(help='References: {"id", "captions": [...]} or several {"id", "caption"} lines per id.')
    ] = ...,  # type: ignore[assignment]
    metrics: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated: bleu, rouge, cider, meteor, spice \\[default: those this machine can compute: "
            "bleu, rouge and cider; meteor and spice where Java and pycocoevalcap are installed (the metrics extra)].",
            show_default=False,
        ),
    ] = None,
    per_item: Annotated[
        Path | None, typer.Option(help="Write each prediction's own scores here (JSONL).", show_default=False)
    ] = None,
    clipscore: Annotated[
        bool, typer.Option(help="Add CLIPScore and RefCLIPScore (Hessel et al., 2021); needs --images.")
    ] = False,
    images: Annotated[
        Path | None,
        typer.Option(
            help="For --clipscore: an image feature set (.npy, or a sharded DIR/) or a folder of the images.",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="For --clipscore: the CLIP model \\[default: the feature set's, or CLIP ViT-B/32].",
            show_default=False,
        ),
    ] = None,
    device: opt.DeviceOption = opt.Device.auto,
    dtype: opt.DTypeOption = opt.DType.auto,
    video: Annotated[
        Video,
        typer.Option(
            help="Videos: score each by its summary against the video's references, or each segment "
            "(VIDEO#t=START,END) by its own id."
        ),
    ] = Video.summary,
    fmt: FormatOption = Format.auto,
    strict: StrictOption = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --per-item file.")] = False,
    quiet: Quiet = False,
) -> None:
    """Caption metrics identical to the COCO caption toolkit (pycocoevalcap), computed without Java."""
    from mmcli.jsonl import dumps
    from mmcli.metrics.captions import ALL_METRICS
    from mmcli.metrics.files import evaluate_caption_files
    from mmcli.output.atomic import atomic_output
    from mmcli.output.destination import Destination, check_writable

    chosen = None if metrics is None else [name.strip().lower() for name in metrics.split(",") if name.strip()]
    unknown = [name for name in chosen or [] if name not in ALL_METRICS]
    if unknown or chosen == []:
        raise UsageError(f"unknown metric {', '.join(unknown) or metrics!r}; choose from {', '.join(ALL_METRICS)}")
    if clipscore and images is None:
        raise UsageError("--clipscore needs --images: an image feature set (.npy) or the folder of the images")
    if per_item is not None:
        check_writable(per_item, overwrite=overwrite)
    if clipscore:
        from mmcli.cli.common import quiet_libraries

        quiet_libraries()
    with strict_flag():
        report = evaluate_caption_files(
            pred, refs, chosen, images=images if clipscore else None, model=model, device=device.value,
            dtype=dtype.value, strict=strict, video=video.value, on_note=partial(note, quiet=quiet),
        )  # fmt: skip
    if per_item is not None:
        with Destination(per_item), atomic_output(per_item) as handle:
            for identifier, scores in report.per_item.items():
                handle.write(dumps({"id": identifier, **scores}) + "\n")
    count = len(report.per_item)
    emit(f"captions ({count} predictions)", report.metrics, fmt, extra={"count": count, "notes": report.captions.notes})

"""``mmcli evaluate detection``: COCO box metrics of detection records, by pycocotools' COCOeval."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from mmcli.cli.common import note, reports_errors
from mmcli.cli.evaluate_common import Format, FormatOption, Quiet, StrictOption, emit, strict_flag

EXAMPLES = """\
Examples:

  mmcli evaluate detection --pred detections.jsonl --truth instances_val2017.json

  mmcli evaluate detection --pred detections.jsonl --truth boxes.jsonl --format json | jq .metrics.AP
"""


@reports_errors
def detection(
    pred: Annotated[
        Path,
        typer.Option(help='Predictions: {"id", "boxes": [{"label", "score", "box": [x0, y0, x1, y1]}]} JSONL.'),
    ] = ...,  # type: ignore[assignment]
    truth: Annotated[
        Path,
        typer.Option(
            help="The ground truth: a COCO annotation file (.json; images matched by file_name, categories by "
            'name, iscrowd honoured), or JSONL records of the same shape (boxes without scores; "iscrowd": true '
            "marks a crowd region)."
        ),
    ] = ...,  # type: ignore[assignment]
    fmt: FormatOption = Format.auto,
    strict: StrictOption = False,
    quiet: Quiet = False,
) -> None:
    """COCO box metrics (AP, AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l) as COCOeval computes them."""
    from mmcli.metrics.detection import evaluate_detection_files

    with strict_flag():
        report = evaluate_detection_files(pred, truth, strict=strict, on_note=partial(note, quiet=quiet))
    emit(f"detection ({report.images} images, {report.detections} boxes)", report.metrics, fmt,
         extra={"images": report.images, "detections": report.detections, "notes": report.notes})  # fmt: skip

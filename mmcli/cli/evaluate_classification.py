"""``mmcli evaluate classification``: accuracy and per-class metrics of a classification file."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from mmcli.cli.common import note, reports_errors
from mmcli.cli.evaluate_common import (
    Format,
    FormatOption,
    Quiet,
    StrictOption,
    emit,
    parse_ints,
    strict_flag,
    wants_table,
)
from mmcli.errors import MissingScores, UsageError

EXAMPLES = """\
Examples:

  mmcli classify photos/ --labels cat,dog > pred.jsonl
  mmcli evaluate classification --pred pred.jsonl --truth truth.jsonl --top-k 1,2 --confusion confusion.csv
"""


@reports_errors
def classification(
    pred: Annotated[
        Path, typer.Option(help='Predictions: {"id", "label"} JSONL, with "scores" for top-k (mmcli classify).')
    ] = ...,  # type: ignore[assignment]
    labels: Annotated[Path, typer.Option("--truth", "--labels", help='The true labels: {"id", "label"} JSONL.')] = ...,  # type: ignore[assignment]
    top_k: Annotated[
        str | None,
        typer.Option("--top-k", "-k", help="Top-k accuracies to report, e.g. 1,5 (needs scores).", show_default=False),
    ] = None,
    confusion: Annotated[
        Path | None, typer.Option(help="Write the confusion matrix here (CSV).", show_default=False)
    ] = None,
    fmt: FormatOption = Format.auto,
    strict: StrictOption = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --confusion file.")] = False,
    quiet: Quiet = False,
) -> None:
    """Accuracy, top-k accuracy, macro/micro/weighted precision, recall and F1, per class."""
    from mmcli.metrics.files import evaluate_classification_files
    from mmcli.output.atomic import atomic_output
    from mmcli.output.destination import Destination, check_writable

    ks = parse_ints(top_k, "--top-k") if top_k else []
    if confusion is not None:
        check_writable(confusion, overwrite=overwrite)
    try:
        with strict_flag():
            report = evaluate_classification_files(pred, labels, ks, strict=strict, on_note=partial(note, quiet=quiet))
    except MissingScores:
        raise UsageError(f"--top-k needs per-label scores in {pred} (mmcli classify writes them)") from None
    result = report.scores
    if confusion is not None:
        with Destination(confusion), atomic_output(confusion) as handle:
            handle.write(",".join(["true \\ predicted", *map(_csv, result.labels)]) + "\n")
            for label, row in zip(result.labels, result.confusion.tolist(), strict=True):
                handle.write(",".join([_csv(label), *map(str, row)]) + "\n")
    count = int(result.confusion.sum())
    emit(f"classification ({count} items)", result.metrics, fmt, extra={"count": count, "per_class": result.per_class})
    if wants_table(fmt):
        _per_class_table(result.per_class)


def _csv(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def _per_class_table(per_class: dict[str, dict[str, float]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="per class")
    for column in ("label", "precision", "recall", "f1", "support"):
        table.add_column(column, justify="left" if column == "label" else "right")
    for label, values in per_class.items():
        table.add_row(label, *(f"{values[name]:.4f}" for name in ("precision", "recall", "f1")), str(values["support"]))
    Console().print(table)

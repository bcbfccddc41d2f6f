"""What the ``mmcli evaluate`` commands share: output flags, cut-off lists and the metrics table."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Annotated, Any

import typer

from mmcli.errors import IdMismatch, InputError, UsageError


class Format(str, Enum):
    auto = "auto"
    table = "table"
    json = "json"


FormatOption = Annotated[Format, typer.Option("--format", help="auto: a table on a terminal, JSON otherwise.")]
StrictOption = Annotated[bool, typer.Option(help="Missing or unknown ids are errors, not notes.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No notes on stderr.")]


def parse_ints(text: str, option: str) -> list[int]:
    """Positive integers separated by commas, as ``--top-k 1,5,10`` gives them."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"{option} takes positive integers separated by commas, got {text!r}") from None
    if min(values) < 1:
        raise UsageError(f"{option} takes positive integers, got {text!r}")
    return values


@contextmanager
def strict_flag() -> Iterator[None]:
    """Name ``--strict`` in the library's refusal of ids that do not line up."""
    try:
        yield
    except IdMismatch as exc:
        raise InputError(f"--strict: {exc}") from None


def wants_table(fmt: Format) -> bool:
    """Tables on a terminal (or with ``--format table``), JSON for pipes and files."""
    return fmt is Format.table or (fmt is Format.auto and sys.stdout.isatty())


def emit(title: str, metrics: dict[str, Any], fmt: Format, *, extra: dict[str, Any] | None = None) -> None:
    """Metrics as a rich table, or as one JSON object with ``extra`` beside them."""
    from mmcli.jsonl import dumps

    if not wants_table(fmt):
        print(dumps({"metrics": metrics, **(extra or {})}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, "unavailable" if value is None else f"{value:.4f}")
    Console().print(table)

"""Record output for commands that emit one line per item: JSONL, TSV or bare text.

Records go to stdout (flushed per batch, so pipelines see them as they are made) or, with
``-o``, to a temporary file that replaces the target only when the run completes.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import IO, Any

from mmcli.jsonl import dumps
from mmcli.output.atomic import publish, publishing_path, temporary_sibling
from mmcli.output.journal import Journal
from mmcli.output.manifest import manifest_header, manifest_path

FORMATS = ("jsonl", "tsv", "text")


class RecordWriter:
    """Writes records in ``fmt`` to ``output`` (atomically) or, without one, to ``stream`` (default:
    stdout); the first of ``text_fields`` a record has is what the tsv and text
    formats show.

    With ``settings`` (JSONL written to ``-o`` only), a manifest ``NAME.files.jsonl`` records the
    settings and, for each record written with a ``file`` entry, the file it came from, so a later
    ``--update`` can tell which inputs changed.
    """

    def __init__(
        self,
        output: Path | None,
        *,
        stream: IO[str] | None = None,
        fmt: str = "jsonl",
        text_fields: tuple[str, ...] = ("caption",),
        journal: Journal | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}")
        self.output = output
        self.fmt = fmt
        self.text_fields = text_fields
        self.journal = journal
        self.count = 0
        self._manifest: IO[bytes] | None = None
        self._manifest_temporary: Path | None = None
        if output is not None and settings is not None and fmt == "jsonl":
            if journal is not None:
                self._manifest = journal.handles["files.jsonl"]
                if journal.state["files.jsonl"] == 0:
                    self._manifest.write(manifest_header(settings))
            else:
                self._manifest_temporary = temporary_sibling(manifest_path(output), ".part")
                self._manifest = open(self._manifest_temporary, "wb")
                self._manifest.write(manifest_header(settings))
        if journal is not None and output is not None:
            # Lines an interrupted run committed are already part of the output.
            self._temporary: Path | None = journal.path("records.jsonl")
            self._handle: IO[str] = io.TextIOWrapper(
                journal.handles["records.jsonl"], encoding="utf-8", errors="surrogateescape"
            )
            with open(self._temporary, "rb") as committed:
                self.count = sum(chunk.count(b"\n") for chunk in iter(lambda: committed.read(1 << 20), b""))
            return
        self._temporary = temporary_sibling(output) if output else None
        self._handle = (
            open(self._temporary, "w", encoding="utf-8", errors="surrogateescape")
            if self._temporary
            else stream or sys.stdout
        )

    def write(self, record: dict[str, Any], file: dict[str, Any] | None = None) -> None:
        """One record. In tsv and text an error record is an empty text (``ID<TAB>``, or an empty line),
        so the lines still pair with the inputs, as ``paste`` or ``while read`` pair them; the error itself
        is on stderr. ``file`` (a :func:`~mmcli.output.npy.file_entry`) goes to the manifest, if there is one."""
        if file is not None and self._manifest is not None:
            self._manifest.write((dumps(file) + "\n").encode("utf-8"))
        if self.fmt == "jsonl":
            line = dumps(record)
        else:
            shown = next((record[key] for key in self.text_fields if key in record), None)
            text = "" if "error" in record or shown is None else _one_line(str(shown))
            line = f"{_one_line(str(record['id']))}\t{text}" if self.fmt == "tsv" else text
        self._handle.write(line + "\n")
        self.count += 1

    def flush(self) -> None:
        self._handle.flush()
        if self._manifest is not None:
            self._manifest.flush()

    def checkpoint(self, consumed: int, counters: dict[str, int] | None = None) -> None:
        """Make the lines so far durable: a rerun resumes after ``consumed`` input items."""
        if self.journal is not None:
            self._handle.flush()
            self.journal.commit(consumed=consumed, rows=self.count, dim=None, counters=counters)

    def close(self) -> None:
        """Publish ``-o`` output with its manifest (see :func:`~mmcli.output.atomic.publish`); stdout is
        only flushed."""
        self.flush()
        if not self._temporary:
            return
        assert self.output is not None
        self._handle.close()
        moves: list[tuple[Path, Path]] = []
        removals: list[Path] = []
        if self._manifest is not None:
            self._manifest.close()
            manifest = self._manifest_temporary or self.journal.path("files.jsonl")  # type: ignore[union-attr]
            moves.append((manifest, manifest_path(self.output)))
        else:  # no manifest this time: one from an earlier run would describe other records
            removals.append(manifest_path(self.output))
        moves.append((self._temporary, self.output))
        if self.journal is not None:
            self.journal.close()
            removals.append(self.journal.folder)
        try:
            publish(self.output, moves, removals)
        except BaseException:
            if self.journal is None and not publishing_path(self.output).exists():  # nothing was decided
                for temporary, _ in moves:
                    temporary.unlink(missing_ok=True)
            raise

    def abort(self) -> None:
        """Drop the output (a journal keeps what it committed, for a rerun to resume)."""
        if self._temporary:
            self._handle.close()
            if self.journal is not None:
                self.journal.abandon()
            else:
                self._temporary.unlink(missing_ok=True)
                if self._manifest is not None and self._manifest_temporary is not None:
                    self._manifest.close()
                    self._manifest_temporary.unlink(missing_ok=True)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _one_line(text: str) -> str:
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")

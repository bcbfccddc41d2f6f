"""Feature sets: ``NAME.npy`` (N x D matrix) with ``NAME.jsonl`` (N records), as the documentation's
"Files and streams" page (docs/formats.md) describes them.

Rows are streamed to temporary files as they are produced, so memory stays flat in the number of
inputs, and the pair only appears under its final names once every row is written.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from mmcli.errors import InputError, UsageError
from mmcli.jsonl import dumps, read_jsonl
from mmcli.output.atomic import publish, publishing_path, settle, temporary_sibling
from mmcli.output.journal import Journal
from mmcli.output.manifest import count_entries, manifest_header, manifest_path

REQUIRED_KEYS = ("id", "modality", "model", "source")
STORAGE_DTYPES = ("float32", "float16")


def sidecar_path(npy: Path) -> Path:
    """``feats.npy`` -> ``feats.jsonl``."""
    return npy.with_suffix(".jsonl")


def errors_path(npy: Path) -> Path:
    """``feats.npy`` -> ``feats.errors.jsonl``: failed items, which are never rows."""
    return npy.with_suffix(".errors.jsonl")


@dataclass
class FeatureSet:
    """A loaded feature set: ``vectors`` is memory-mapped, ``records`` are the sidecar lines. For a
    sharded set (``path`` a folder) ``vectors`` is a :class:`~mmcli.output.sharded.ShardedVectors`, which
    reads like a read-only 2-D array."""

    vectors: Any
    records: list[dict[str, Any]]
    path: Path

    def __len__(self) -> int:
        return len(self.records)

    @property
    def ids(self) -> list[str]:
        return [record["id"] for record in self.records]

    @property
    def models(self) -> set[str]:
        """Names of the models that made the rows (a fused row names several, as a list, nested where
        fused rows were fused again)."""
        names: set[str] = set()
        pending = [record.get("model") for record in self.records]
        while pending:
            model = pending.pop()
            if isinstance(model, list):
                pending.extend(model)
            elif isinstance(model, str):
                names.add(model)
        return names

    @property
    def fused(self) -> bool:
        return any(record.get("modality") == "fused" for record in self.records)


def read_npy(npy: Path, *, mmap: bool = True) -> FeatureSet:
    """Load ``NAME.npy`` and its sidecar, refusing anything inconsistent or pickled."""
    settle(npy)  # a set whose publication a killed run left half done is completed first
    if not npy.exists():
        raise InputError(f"feature set {npy} does not exist")
    try:
        vectors = np.load(npy, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as exc:
        raise InputError(f"{npy}: not a plain numeric .npy file ({exc})") from None
    except EOFError:  # (which the command line would take for Ctrl-D and answer "Aborted.")
        raise InputError(f"{npy}: empty or cut short before its header ends; not a .npy file") from None
    except OSError as exc:
        raise InputError(f"{npy}: cannot read ({exc})") from None
    if vectors.ndim != 2:
        raise InputError(f"{npy}: expected a 2-D matrix, got shape {vectors.shape}")
    if not np.issubdtype(vectors.dtype, np.floating):
        raise InputError(f"{npy}: expected float rows, got dtype {vectors.dtype}")
    sidecar = sidecar_path(npy)
    if not sidecar.exists():
        raise InputError(f"{npy}: its sidecar {sidecar} is missing")
    records = read_sidecar(sidecar)
    if len(records) != vectors.shape[0]:
        raise InputError(
            f"{npy} has {vectors.shape[0]} rows but {sidecar} has {len(records)} records; "
            "they must match line for line (was one of them replaced or edited?)"
        )
    return FeatureSet(vectors=vectors, records=records, path=npy)


def read_sidecar(sidecar: Path) -> list[dict[str, Any]]:
    """The sidecar's records, each with the keys docs/formats.md requires and an id no other line has:
    a hit, a fused row or a prediction is named by its id, so a repeated one would name two rows."""
    records: list[dict[str, Any]] = []
    line_of: dict[Any, tuple[int, int]] = {}  # id -> (row, line)
    for number, record in read_jsonl(sidecar):
        missing = [key for key in REQUIRED_KEYS if key not in record]
        if missing:
            raise InputError(
                f"{sidecar}:{number}: record lacks {', '.join(repr(key) for key in missing)} "
                f"(every line needs {', '.join(REQUIRED_KEYS)})"
            )
        identifier = record["id"]
        if isinstance(identifier, (dict, list)):
            raise InputError(f"{sidecar}:{number}: id must be a string, got {type(identifier).__name__}")
        if identifier in line_of:
            first = line_of[identifier]
            raise InputError(
                f"{sidecar}: id {identifier!r} appears on rows {first[0]} and {len(records)} "
                f"(lines {first[1]} and {number}); ids must be unique within a set"
            )
        line_of[identifier] = (len(records), number)
        records.append(record)
    return records


class FeatureSetWriter:
    """Streams rows and records to temporary files; ``close()`` publishes the pair atomically.

    Use as a context manager: leaving the block with an exception discards everything, so a
    failed or interrupted run never leaves a feature set that looks valid.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        dtype: str = "float32",
        journal: Journal | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        if dtype not in STORAGE_DTYPES:
            raise UsageError(f"unknown storage dtype {dtype!r}; choose from {', '.join(STORAGE_DTYPES)}")
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.count = 0
        self.dim: int | None = None
        self.errors: list[dict[str, Any]] = []
        self._ids: set[str] = set()
        self.closed = False
        self.journal = journal
        self._manifest_rows = 0
        if journal is None:
            self._rows_path = temporary_sibling(self.path, ".rows")
            self._records_path = temporary_sibling(sidecar_path(self.path), ".part")
            self._files_path = temporary_sibling(manifest_path(self.path), ".part")
            self._rows: IO[bytes] = open(self._rows_path, "wb")
            self._records: IO[bytes] = open(self._records_path, "wb")
            self._files: IO[bytes] = open(self._files_path, "wb")
            if settings is not None:
                self._files.write(manifest_header(settings))
            return
        # Resuming: what the journal committed is already part of the output.
        self._rows_path, self._records_path = journal.path("rows.bin"), journal.path("records.jsonl")
        self._files_path = journal.path("files.jsonl")
        self._rows, self._records = journal.handles["rows.bin"], journal.handles["records.jsonl"]
        self._files = journal.handles["files.jsonl"]
        if settings is not None and journal.state["files.jsonl"] == 0:
            self._files.write(manifest_header(settings))
        self._manifest_rows = count_entries(self._files_path)
        self.count, self.dim = journal.rows, journal.dim
        self._ids = {record["id"] for _, record in read_jsonl(self._records_path)}
        self.errors = [record for _, record in read_jsonl(journal.path("errors.jsonl"))]

    def add(
        self, vectors: np.ndarray, records: Sequence[dict[str, Any]], files: Sequence[dict[str, Any]] | None = None
    ) -> None:
        """Append a batch of rows with one record each (and, for a manifest, one ``file_entry`` each)."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[0] != len(records):
            raise ValueError(f"{vectors.shape[0]} rows for {len(records)} records")
        if self.dim is None:
            self.dim = vectors.shape[1]
        elif vectors.shape[1] != self.dim:
            raise ValueError(f"row width {vectors.shape[1]} differs from earlier rows ({self.dim})")
        for record in records:
            missing = [key for key in REQUIRED_KEYS if key not in record]
            if missing:
                raise ValueError(f"record lacks {missing}: {record}")
            if record["id"] in self._ids:
                raise ValueError(f"duplicate id {record['id']!r}")
            self._ids.add(record["id"])
        self._rows.write(np.ascontiguousarray(vectors, dtype=self.dtype).tobytes())
        for record in records:
            self._records.write((dumps(record) + "\n").encode("utf-8"))
        if files is not None:
            if len(files) != len(records) or self._manifest_rows != self.count:
                raise ValueError("a manifest needs one file entry for every row")
            for entry in files:
                self._files.write((dumps(entry) + "\n").encode("utf-8"))
            self._manifest_rows += len(files)
        self.count += len(records)

    def add_error(self, record: dict[str, Any]) -> None:
        """Remember a failed item; it goes to ``NAME.errors.jsonl``, never into the matrix."""
        self.errors.append(record)
        if self.journal is not None:
            self.journal.write("errors.jsonl", (dumps(record) + "\n").encode("utf-8"))

    def checkpoint(self, consumed: int) -> None:
        """Make everything added so far durable: a rerun resumes after ``consumed`` input items."""
        if self.journal is not None:
            self.journal.commit(consumed=consumed, rows=self.count, dim=self.dim)

    def close(self) -> None:
        """Publish ``NAME.npy``, ``NAME.jsonl``, the manifest (and ``NAME.errors.jsonl`` if items failed)
        together: a crash part-way through is completed by the next reader
        (see :func:`~mmcli.output.atomic.publish`)."""
        if self.closed:
            return
        if self.journal is not None:
            self.journal.close()
        self._rows.close()
        self._records.close()
        self._files.close()
        self.closed = True
        moves: list[tuple[Path, Path]] = []
        removals: list[Path] = []
        made: list[Path] = []  # temporaries made here, dropped if the set cannot be published
        try:
            if self.errors:
                made.append(self._write_errors())
                moves.append((made[-1], errors_path(self.path)))
            else:
                removals.append(errors_path(self.path))  # a stale list from an earlier run would mislead
            if self.count:
                moves.append((self._records_path, sidecar_path(self.path)))
                if self._manifest_rows == self.count:
                    moves.append((self._files_path, manifest_path(self.path)))
                else:  # rows without file entries: a manifest from an earlier run would describe other rows
                    removals.append(manifest_path(self.path))
                made.append(self._write_npy())
                moves.append((made[-1], self.path))
            # The streamed rows are spent once the matrix is written: they go in the same change.
            removals.append(self.journal.folder if self.journal is not None else self._rows_path)
            publish(self.path, moves, removals)
        except BaseException:
            if not publishing_path(self.path).exists():  # nothing was decided: the old set stands
                for temporary in made:
                    temporary.unlink(missing_ok=True)
                if self.journal is None:  # a journal keeps its committed progress, for a rerun to finish
                    self._discard()
            raise  # (once decided, the next reader completes the change from the files left in place)
        self._discard()

    def _write_npy(self) -> Path:
        """The ``.npy`` file: its header, then the streamed rows."""
        npy_temporary = temporary_sibling(self.path, ".npy")
        with open(npy_temporary, "wb") as out, open(self._rows_path, "rb") as rows:
            header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                      "shape": (self.count, self.dim)}  # fmt: skip
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(rows, out, 1 << 22)
        return npy_temporary

    def _write_errors(self) -> Path:
        temporary = temporary_sibling(errors_path(self.path))
        with open(temporary, "w", encoding="utf-8") as handle:
            for record in self.errors:
                handle.write(dumps(record) + "\n")
        return temporary

    def abort(self) -> None:
        """Drop everything written so far (a journal keeps what it committed, for a rerun to resume);
        the previous outputs, if any, stay as they were."""
        if not self.closed:
            if self.journal is not None:
                self.journal.abandon()
            self._rows.close()
            self._records.close()
            self._files.close()
            self.closed = True
        if self.journal is None:
            self._discard()

    def _discard(self) -> None:
        if self.journal is not None:
            self.journal.discard()
            return
        self._rows_path.unlink(missing_ok=True)
        self._records_path.unlink(missing_ok=True)
        self._files_path.unlink(missing_ok=True)

    def __enter__(self) -> FeatureSetWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

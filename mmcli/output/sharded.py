"""Sharded feature sets: a folder ``DIR/`` of parts, each a feature set of its own (``part-00000.npy``
+ ``part-00000.jsonl``, its manifest and error list), and ``DIR/index.json`` naming the finished parts
in order. The set's rows are the parts' rows, part after part.

A run writes one part at a time through a :class:`~mmcli.output.npy.FeatureSetWriter` (so each part
appears atomically) and closes it at the first input-item boundary once it holds ``shard_rows`` rows
(a video's rows never straddle two parts); after each part the index is rewritten atomically, with
the number of input items consumed up to that part's end. A killed run leaves an index marked
unfinished, which no reader takes for a set, and which the same command resumes after its last
finished part. An update stages the parts it rewrites in ``DIR/.staging/`` and swaps them in together
with the new index (:func:`~mmcli.output.atomic.publish`); parts that come out as they were are kept.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmcli.errors import InputError, OutputExists, UsageError, option
from mmcli.jsonl import dumps, read_jsonl
from mmcli.output.atomic import atomic_output, publish, settle, temporary_sibling
from mmcli.output.failures import report_failures
from mmcli.output.manifest import FileEntries, file_groups
from mmcli.output.manifest import read_manifest as read_one
from mmcli.output.npy import FeatureSet, FeatureSetWriter, errors_path, read_sidecar, sidecar_path
from mmcli.settings import describe_differences

INDEX_NAME = "index.json"
FORMAT = "mmcli-sharded-feature-set"
VERSION = 1
DEFAULT_SHARD_ROWS = 100_000
STAGING = ".staging"
PART_SUFFIXES = (".npy", ".jsonl", ".files.jsonl", ".errors.jsonl")


def index_path(folder: Path) -> Path:
    return folder / INDEX_NAME


def is_sharded(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a sharded set (an existing folder): what readers take instead of ``NAME.npy``."""
    return Path(path).is_dir()


def is_sharded_output(output: str | os.PathLike[str]) -> bool:
    """Whether ``-o`` asks for a sharded set: a path ending in ``/`` or naming an existing folder."""
    text = os.fspath(output)
    return text.endswith(("/", os.sep)) or Path(text).is_dir()


def part_name(number: int) -> str:
    return f"part-{number:05d}"


def part_files(folder: Path, name: str) -> list[Path]:
    """The files of one part: matrix, sidecar, manifest, error list."""
    return [folder / f"{name}{suffix}" for suffix in PART_SUFFIXES]


def read_index(folder: Path, *, complete: bool = True) -> dict[str, Any]:
    """``DIR/index.json``, checked; ``complete``: refuse an unfinished run's index."""
    path = index_path(folder)
    settle(path)  # an update that a killed run left half swapped in is completed first
    try:
        with open(path, encoding="utf-8") as handle:
            index = json.load(handle)
    except FileNotFoundError:
        raise InputError(f"{folder} is a folder without {INDEX_NAME}: not a sharded feature set") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read this sharded set's index ({exc})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise InputError(f'{path}: not the index of a sharded feature set (no "format": {FORMAT!r})')
    if index.get("version") != VERSION:
        raise InputError(f"{path}: index version {index.get('version')!r}; this mmcli reads version {VERSION}")
    parts = index.get("parts")
    if not isinstance(parts, list) or not all(isinstance(p, dict) and "name" in p and "rows" in p for p in parts):
        raise InputError(f'{path}: "parts" must list {{"name", "rows", ...}} objects')
    if complete and not index.get("complete"):
        raise InputError(
            f"{folder} is an unfinished run ({len(parts)} parts so far); rerun the command that made it to finish it"
        )
    return index


def write_index(folder: Path, index: dict[str, Any]) -> None:
    """Replace ``DIR/index.json`` atomically."""
    with atomic_output(index_path(folder)) as handle:
        json.dump(index, handle, indent=1)
        handle.write("\n")


def new_index(settings: dict[str, Any], run: dict[str, Any], shard_rows: int) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "complete": False, "shard_rows": shard_rows,
            "settings": settings, "run": run, "parts": []}  # fmt: skip


# -- reading -------------------------------------------------------------------------------------------


def _npy_header(npy: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset of a ``.npy`` file, read from its header alone."""
    with open(npy, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        offset = handle.tell()
    if fortran:
        raise ValueError("Fortran-ordered arrays are not feature sets")
    return shape, dtype, offset


class ShardedVectors:
    """The rows of a sharded set as one read-only 2-D array: ``shape``, ``dtype``, ``len``, row access
    by int, slice, index array or mask, ``np.asarray`` (which loads every part), and :meth:`chunks`.
    Each part is memory-mapped when first touched; a slice within a part is a view of it, one across
    parts only copies the rows it spans."""

    ndim = 2

    def __init__(self, paths: Sequence[Path], rows: Sequence[int], dim: int, dtype: np.dtype) -> None:
        self.paths = list(paths)
        self.offsets = np.concatenate([[0], np.cumsum(np.asarray(rows, dtype=np.int64))]).astype(np.int64)
        self.shape = (int(self.offsets[-1]), int(dim))
        self.dtype = np.dtype(dtype)
        self._parts: list[np.ndarray | None] = [None] * len(self.paths)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __repr__(self) -> str:
        return f"ShardedVectors(shape={self.shape}, dtype={self.dtype}, parts={len(self.paths)})"

    def part(self, number: int) -> np.ndarray:
        """Part ``number``'s rows, memory-mapped on first use."""
        array = self._parts[number]
        if array is None:
            path = self.paths[number]
            try:
                array = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                reason = str(exc) if not isinstance(exc, EOFError) else "empty or cut short before its header ends"
                raise InputError(f"part {path.name} of {path.parent}: cannot read ({reason})") from None
            self._parts[number] = array
        return array

    def chunks(self, chunk_rows: int = 65_536) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, rows)`` over the whole set, at most ``chunk_rows`` at a time, never across parts."""
        for number in range(len(self.paths)):
            start, stop = int(self.offsets[number]), int(self.offsets[number + 1])
            for first in range(start, stop, chunk_rows):
                yield first, self.part(number)[first - start : min(first + chunk_rows, stop) - start]

    def __iter__(self) -> Iterator[np.ndarray]:
        for _, rows in self.chunks():
            yield from rows

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        whole = self._rows(0, len(self))
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def astype(self, dtype: Any, copy: bool = True) -> np.ndarray:
        return np.asarray(self, dtype=dtype)

    def _part_of(self, rows: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.offsets, rows, side="right") - 1

    def _rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` (in range, start <= stop): a view where they lie in one part."""
        if start >= stop:
            return np.empty((0, self.shape[1]), self.dtype)
        first, last = int(self._part_of(np.int64(start))), int(self._part_of(np.int64(stop - 1)))
        pieces = []
        for number in range(first, last + 1):
            base = int(self.offsets[number])
            low, high = max(start, base) - base, min(stop, int(self.offsets[number + 1])) - base
            pieces.append(self.part(number)[low:high])
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def _take(self, rows: np.ndarray) -> np.ndarray:
        flat = rows.reshape(-1)
        out = np.empty((flat.shape[0], self.shape[1]), self.dtype)
        parts = self._part_of(flat)
        for number in np.unique(parts).tolist():
            where = parts == number
            out[where] = self.part(number)[flat[where] - self.offsets[number]]
        return out.reshape(*rows.shape, self.shape[1])

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, tuple):
            if not key:
                return np.asarray(self)
            head = self[key[0]]
            rest = key[1:]
            return head[(slice(None), *rest)] if np.ndim(head) == 2 and not np.isscalar(key[0]) else head[rest]
        count = len(self)
        if isinstance(key, (int, np.integer)):
            row = int(key) + count if key < 0 else int(key)
            if not 0 <= row < count:
                raise IndexError(f"row {key} is out of range for {count} rows")
            number = int(self._part_of(np.int64(row)))
            return self.part(number)[row - int(self.offsets[number])]
        if isinstance(key, slice):
            start, stop, step = key.indices(count)
            if step == 1:
                return self._rows(start, max(start, stop))
            return self._take(np.arange(start, stop, step, dtype=np.int64))
        if key is Ellipsis:
            return np.asarray(self)
        rows = np.asarray(key)
        if rows.dtype == bool:
            if rows.shape != (count,):
                raise IndexError(f"a boolean index of shape {rows.shape} for {count} rows")
            rows = np.flatnonzero(rows)
        elif rows.size == 0:
            rows = rows.astype(np.int64)
        elif not np.issubdtype(rows.dtype, np.integer):
            raise IndexError(f"rows are indexed by integers, not {rows.dtype}")
        rows = np.where(rows < 0, rows + count, rows).astype(np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= count):
            raise IndexError(f"row index out of range for {count} rows")
        return self._take(rows)


def read_sharded(folder: Path, *, mmap: bool = True) -> Any:
    """A sharded set as a :class:`~mmcli.output.npy.FeatureSet`: every part's header and sidecar are
    checked now (a missing, cut-short or inconsistent part is refused by name), the rows are mapped
    as they are read. Ids must be unique across the parts, as within one."""
    index = read_index(folder)
    records: list[dict[str, Any]] = []
    first_seen: dict[Any, tuple[str, int]] = {}
    paths, counts = [], []
    dim: int | None = None
    dtype: np.dtype | None = None
    for part in index["parts"]:
        name = str(part["name"])
        npy = folder / f"{name}.npy"
        where = f"{folder}: part {npy.name}"
        settle(npy)
        if not npy.exists():
            raise InputError(f"{where} is missing (listed in {INDEX_NAME}); make the set again")
        try:
            shape, part_dtype, offset = _npy_header(npy)
        except (OSError, ValueError) as exc:
            raise InputError(f"{where}: not a plain numeric .npy file ({exc})") from None
        if len(shape) != 2 or not np.issubdtype(part_dtype, np.floating):
            raise InputError(f"{where}: expected a 2-D float matrix, got shape {shape}, dtype {part_dtype}")
        if os.path.getsize(npy) < offset + shape[0] * shape[1] * part_dtype.itemsize:
            raise InputError(f"{where} is cut short: its header promises {shape[0]} x {shape[1]} rows")
        if shape[0] != part["rows"]:
            raise InputError(f"{where} has {shape[0]} rows but {INDEX_NAME} lists {part['rows']}")
        if dim is None:
            dim, dtype = shape[1], part_dtype
        elif shape[1] != dim or part_dtype != dtype:
            raise InputError(f"{where} holds {shape[1]}-wide {part_dtype} rows, the parts before it {dim}-wide {dtype}")
        sidecar = sidecar_path(npy)
        if not sidecar.exists():
            raise InputError(f"{where}: its sidecar {sidecar.name} is missing")
        part_records = read_sidecar(sidecar)
        if len(part_records) != shape[0]:
            raise InputError(
                f"{where} has {shape[0]} rows but {sidecar.name} has {len(part_records)} records; "
                "they must match line for line"
            )
        for line, record in enumerate(part_records, 1):
            identifier = record["id"]
            if identifier in first_seen:
                other, other_line = first_seen[identifier]
                raise InputError(
                    f"{folder}: id {identifier!r} appears in {other} (line {other_line}) and {sidecar.name} "
                    f"(line {line}); ids must be unique within a set"
                )
            first_seen[identifier] = (sidecar.name, line)
        records.extend(part_records)
        paths.append(npy)
        counts.append(shape[0])
    vectors = ShardedVectors(paths, counts, dim or 0, dtype if dtype is not None else np.dtype(np.float32))
    if not mmap:
        return FeatureSet(vectors=np.array(vectors), records=records, path=folder)
    return FeatureSet(vectors=vectors, records=records, path=folder)


def read_manifest(folder: Path) -> list[dict[str, Any]] | None:
    """The parts' manifests, concatenated (None if a part has none)."""
    entries: list[dict[str, Any]] = []
    for part in read_index(folder)["parts"]:
        found = read_one(folder / f"{part['name']}.npy")
        if found is None:
            return None
        entries.extend(found)
    return entries


def read_run_settings(folder: Path) -> dict[str, Any] | None:
    """The settings that decided the rows' values, as the index records them."""
    return read_index(folder, complete=False).get("settings")


def read_errors(folder: Path) -> list[dict[str, Any]]:
    """The error records of every part, in order."""
    found = []
    for part in read_index(folder)["parts"]:
        errors = errors_path(folder / f"{part['name']}.npy")
        if errors.exists():
            found.extend(record for _, record in read_jsonl(errors))
    return found


# -- writing -------------------------------------------------------------------------------------------


@dataclass
class ShardedResume:
    """Where a sharded run starts: the index (with its finished parts), the items they consumed, the
    items that failed in them, and the part size."""

    index: dict[str, Any]
    shard_rows: int
    consumed: int = 0
    failed: int = 0
    parts: list[dict[str, Any]] = field(default_factory=list)


def check_sharded_output(folder: Path, *, overwrite: bool, update: bool) -> dict[str, Any] | None:
    """Validate ``-o DIR/`` before any work: returns its index if it holds one. A finished set needs
    ``overwrite`` (or ``update``), a folder with other files in it is never written into."""
    parent = folder.parent if str(folder.parent) else Path(".")
    if not folder.exists() and not parent.is_dir():
        raise UsageError(f"cannot write {folder}/: folder {str(parent)!r} does not exist")
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"cannot write a sharded set to {folder}/: it is a file")
    target = folder if folder.exists() else parent
    if not os.access(target, os.W_OK):
        raise UsageError(f"cannot write {folder}/: folder {str(target)!r} is not writable")
    if not folder.exists():
        return None
    if not index_path(folder).exists():
        settle(index_path(folder))
    if not index_path(folder).exists():
        stray = [entry.name for entry in folder.iterdir() if not _ours(entry.name)]
        if stray:  # (part files alone: what a run whose every item failed leaves, its error list)
            raise UsageError(
                f"{folder}/ holds files but no {INDEX_NAME} ({stray[0]}, ...): not a sharded feature set; "
                "give a new or empty folder"
            )
        return None
    index = read_index(folder, complete=False)
    if index.get("complete") and not (overwrite or update):
        raise OutputExists(f"{folder}/ already exists; pass --overwrite to replace it")
    return index


def resume_sharded(
    folder: Path,
    index: dict[str, Any] | None,
    *,
    settings: dict[str, Any],
    run: dict[str, Any],
    shard_rows: int | None,
    restart: bool,
    overwrite: bool,
    resumable: bool,
) -> ShardedResume:
    """The parts an interrupted run with the same settings finished, to be skipped (``restart`` or
    ``overwrite`` start over; a stream, not ``resumable``, always does); other settings are refused,
    naming the one that differs."""
    if index is None or index.get("complete") or restart or overwrite or not resumable or not index["parts"]:
        rows = shard_rows or DEFAULT_SHARD_ROWS
        return ShardedResume(new_index(settings, run, rows), rows)
    stored = {"shard_rows": index.get("shard_rows"), **(index.get("run") or {}), **(index.get("settings") or {})}
    wanted = {"shard_rows": shard_rows or index.get("shard_rows"), **run, **settings}
    differing = describe_differences(stored, wanted, first_only=True)
    if differing:
        raise UsageError(
            f"{folder}/ holds an unfinished run with other settings ({differing}); run the same command "
            f"again to resume it, or pass {option('restart')} to discard it"
        )
    parts = list(index["parts"])
    return ShardedResume(
        index, int(index["shard_rows"]), consumed=int(parts[-1]["consumed"]),
        failed=sum(int(part.get("errors", 0)) for part in parts), parts=parts,
    )  # fmt: skip


def write_rows_sharded(
    folder: Path,
    rows_of: Any,
    records: Sequence[dict[str, Any]],
    *,
    shard_rows: int | None,
    dtype: str,
    settings: dict[str, Any],
    overwrite: bool,
) -> int:
    """A sharded set of rows known before it is written (``rows_of(start, stop)`` gives rows ``start`` to
    ``stop`` of ``records``' order), a part of ``shard_rows`` rows at a time, each published as it
    closes and listed in the index; a killed run resumes after its finished parts when run again with
    the same ``settings`` (others are refused by name), and the index is marked complete last."""
    existing = check_sharded_output(folder, overwrite=overwrite, update=False)
    resume = resume_sharded(folder, existing, settings=settings, run={}, shard_rows=shard_rows, restart=False,
                            overwrite=overwrite, resumable=True)  # fmt: skip
    if existing is not None and not resume.parts:  # starting over: the old parts go, and the index with them
        for part in existing.get("parts", []):
            for path in part_files(folder, str(part["name"])):
                path.unlink(missing_ok=True)
        index_path(folder).unlink(missing_ok=True)
    folder.mkdir(exist_ok=True)
    index = dict(resume.index, parts=list(resume.parts), complete=False)
    for start in range(resume.consumed, len(records), resume.shard_rows):
        stop = min(start + resume.shard_rows, len(records))
        name = part_name(len(index["parts"]))
        with FeatureSetWriter(folder / f"{name}.npy", dtype=dtype) as writer:
            writer.add(rows_of(start, stop), list(records[start:stop]))
        index["parts"].append({"name": name, "rows": stop - start, "consumed": stop, "errors": 0})
        write_index(folder, index)
    index["complete"] = True
    write_index(folder, index)
    return len(records)


class ShardedSink:
    """A sharded set as an engine sink (see :class:`~mmcli.engine.Sink`): parts of about ``shard_rows``
    rows, one :class:`~mmcli.output.npy.FeatureSetWriter` each.

    A fresh run (``previous`` None) publishes each part as it closes and records it in the index,
    after the parts of ``resume``. An update (``previous``: the set it starts from) stages the parts,
    keeps those that come out as they were, and swaps the rest in with the index at the end."""

    def __init__(
        self,
        folder: Path,
        model: str,
        resume: ShardedResume,
        *,
        dtype: str = "float32",
        settings: dict[str, Any] | None = None,
        previous: Any = None,
    ) -> None:
        self.folder, self.model, self.resume = folder, model, resume
        self.dtype, self.settings, self.previous = dtype, settings, previous
        self.shard_rows = resume.shard_rows
        self.files = FileEntries()
        self.failed_before = resume.failed
        self.counters: dict[str, int] = {}
        self.index = dict(resume.index, parts=list(resume.parts), complete=False)
        self.parts: list[dict[str, Any]] = self.index["parts"]
        self.rows = sum(int(part["rows"]) for part in self.parts)
        self.dim: int | None = None
        if self.parts:  # resumed: the width of the rows written already
            self.dim = int(_npy_header(folder / f"{self.parts[0]['name']}.npy")[0][1])
        self.consumed = resume.consumed  # input items whose rows (or errors) are written
        self._writer: Any = None
        self._count = 0  # rows in the current part
        self._errors = 0  # failed items in the current part
        self._open = False  # an item's outcomes have begun and not ended
        self._staged: list[tuple[str, bool]] = []  # (part name, rewritten) for an update
        self._old: list[dict[str, Any]] = []
        if previous is not None:
            self._old = list(read_index(folder)["parts"])
            self._old_offsets = np.concatenate([[0], np.cumsum([int(p["rows"]) for p in self._old])])
        self._start_part()

    # -- the parts ----------------------------------------------------------------------------------

    @property
    def _number(self) -> int:
        return len(self.parts) if self.previous is None else len(self._staged)

    def _start_part(self) -> None:
        self._writer, self._count, self._errors = None, 0, 0
        number = self._number
        # An update keeps a part that comes out as it was: carried rows are held back (by index) while
        # they match the old part's, and only written once something differs.
        self._pending: list[tuple[list[int], list[dict], list[dict]]] | None = None
        if self.previous is not None and number < len(self._old) and not self._old[number].get("errors"):
            self._pending, self._expected = [], int(self._old_offsets[number])

    def _part_path(self, number: int) -> Path:
        base = self.folder / STAGING if self.previous is not None else self.folder
        return base / f"{part_name(number)}.npy"

    def _open_writer(self) -> Any:
        if self._writer is None:
            path = self._part_path(self._number)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = FeatureSetWriter(path, dtype=self.dtype, settings=self.settings)
            pending, self._pending = self._pending or [], None
            for rows, records, entries in pending:
                self._writer.add(np.asarray(self.previous.vectors[rows], np.float32), records, files=entries)
        return self._writer

    def _unchanged(self) -> bool:
        number = self._number
        return (
            self._pending is not None
            and self._writer is None
            and self._count > 0
            and self._expected == int(self._old_offsets[number + 1])
        )

    def _close_part(self, *, final: bool = False) -> None:
        """Close the current part (publishing or staging it) and record it."""
        number = self._number
        name = part_name(number)
        if self.previous is not None:
            if self._unchanged():
                self._staged.append((name, False))
                self.parts.append(dict(self._old[number], name=name, consumed=self.consumed))
                return
            writer = self._open_writer()
            writer.close()
            self._staged.append((name, True))
            self.parts.append({"name": name, "rows": writer.count, "consumed": self.consumed, "errors": self._errors})
            return
        writer = self._open_writer()
        writer.close()
        self.parts.append({"name": name, "rows": writer.count, "consumed": self.consumed, "errors": self._errors})
        if not final:
            write_index(self.folder, self.index)

    def _begin_item(self) -> None:
        """An item's first outcome: close the part first if it is full."""
        if self._count >= self.shard_rows:
            self._close_part()
            self._start_part()

    def _add(self, vectors: Any, records: list[dict], entries: list[dict]) -> None:
        self._open_writer().add(vectors, records, files=entries)
        self._count += len(records)
        self.rows += len(records)
        self.dim = self._writer.dim

    def _write_item(self, outcomes: Sequence[Any], on_error: str, reporter: Any, kept: str) -> int:
        good = [outcome for outcome in outcomes if outcome.error is None]
        if good:
            records = [o.item.record(model=self.model) for o in good]
            self._add([o.value for o in good], records, [self.files.entry(o.item) for o in good])
        return report_failures(outcomes, self._keep_error, on_error, reporter, kept)

    def _keep_error(self, record: dict[str, Any]) -> None:
        self._open_writer().add_error(record)
        self._errors += 1

    # -- the sink -----------------------------------------------------------------------------------

    def write(self, outcomes: list[Any], on_error: str, reporter: Any, kept: str) -> int:
        ends = getattr(outcomes, "ends", None)
        if ends is None:  # an update writes one input item's outcomes at a time, and never resumes:
            if any(outcome.error is None for outcome in outcomes):  # a failed one joins the part before it
                self._begin_item()
            self.consumed += 1
            return self._write_item(outcomes, on_error, reporter, kept)
        failed, start = 0, 0
        for end in ends:  # each item that ends in this batch
            segment = outcomes[start:end]
            if segment and not self._open:
                self._begin_item()
            failed += self._write_item(segment, on_error, reporter, kept)
            self.consumed += 1
            self._open, start = False, end
        tail = outcomes[start:]  # an item (a video) that goes on in the next batch
        if tail:
            if not self._open:
                self._begin_item()
            failed += self._write_item(tail, on_error, reporter, kept)
            self._open = True
        return failed

    def carry(self, previous: Any, rows: list[int], records: list[dict], entries: list[dict]) -> None:
        if len(rows) > 1 and len(file_groups(entries)) > 1:  # the rows of several vanished files
            for group in file_groups(entries):
                self.carry(previous, [rows[i] for i in group], [records[i] for i in group], [entries[i] for i in group])
            return
        self._begin_item()
        self.consumed += 1
        if self._pending is not None and self._writer is None:
            matches = (
                rows == list(range(self._expected, self._expected + len(rows)))
                and self._expected + len(rows) <= int(self._old_offsets[self._number + 1])
                and records == [previous.records[row] for row in rows]
                and entries == [previous.manifest[row] for row in rows]
            )
            if matches:
                self._pending.append((rows, records, entries))
                self._expected += len(rows)
                self._count += len(rows)
                self.rows += len(rows)
                self.dim = previous.vectors.shape[1]
                return
        self._add(np.asarray(previous.vectors[rows], np.float32), records, entries)

    def checkpoint(self, consumed: int, counters: dict[str, int]) -> None:
        """Progress is kept a part at a time (see :meth:`_close_part`)."""

    def __enter__(self) -> ShardedSink:
        self.folder.mkdir(exist_ok=True)
        if self.previous is None:
            if not self.resume.parts:
                write_index(self.folder, self.index)  # an earlier set here is no longer one
                clear_parts(self.folder, keep=())
            else:
                clear_parts(self.folder, keep=[part["name"] for part in self.parts])
        else:
            shutil.rmtree(self.folder / STAGING, ignore_errors=True)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            if self._writer is not None:
                self._writer.abort()
            if self.previous is not None:
                shutil.rmtree(self.folder / STAGING, ignore_errors=True)
            return
        self.close()

    def close(self) -> None:
        """Close the last part and mark the set complete (an update swaps its parts in now)."""
        if self._count == 0 and self._writer is not None and self.parts:
            self._fold_errors_into_last_part()
        elif self._count or self._writer is not None:
            self._close_part(final=True)
        if self.rows == 0:  # every item failed: the errors are kept, but no set is
            if self.previous is None:
                index_path(self.folder).unlink(missing_ok=True)
            else:
                shutil.rmtree(self.folder / STAGING, ignore_errors=True)
            return
        self.index["complete"] = True
        if self.previous is None:
            write_index(self.folder, self.index)
            return
        self._swap_in()

    def _fold_errors_into_last_part(self) -> None:
        """Items after the last row all failed (a fresh run's last items): their errors join the last
        part's list, which keeps the ones its index entry counts (a rerun after a kill here adds them once)."""
        writer = self._writer
        writer.abort()
        last = self.parts[-1]
        target = errors_path(self.folder / f"{last['name']}.npy")
        old = [record for _, record in read_jsonl(target)] if target.exists() else []
        with atomic_output(target) as handle:
            for record in [*old[: int(last.get("errors", 0))], *writer.errors]:
                handle.write(dumps(record) + "\n")
        last.update(consumed=self.consumed, errors=int(last.get("errors", 0)) + len(writer.errors))

    def _swap_in(self) -> None:
        """An update's staged parts, the new index, and the removal of parts no longer in it, as one change."""
        staging = self.folder / STAGING
        moves: list[tuple[Path, Path]] = []
        removals: list[Path] = []
        for name, rewritten in self._staged:
            if not rewritten:
                continue
            for staged, final in zip(part_files(staging, name), part_files(self.folder, name), strict=True):
                if staged.exists():
                    moves.append((staged, final))
                else:
                    removals.append(final)
        kept = {name for name, _ in self._staged}
        for part in self._old:
            if part["name"] not in kept:
                removals.extend(part_files(self.folder, part["name"]))
        index_temporary = temporary_sibling(index_path(self.folder), ".tmp")
        with open(index_temporary, "w", encoding="utf-8") as handle:
            json.dump(self.index, handle, indent=1)
            handle.write("\n")
        moves.append((index_temporary, index_path(self.folder)))
        removals.append(staging)
        publish(index_path(self.folder), moves, removals)


def _ours(name: str) -> bool:
    """Whether a file in a sharded set's folder is one a run writes: parts, their temporaries, the
    index's temporaries, an update's staging folder."""
    return name.startswith(("part-", ".part-")) or name == STAGING or name.startswith(f".{INDEX_NAME}.")


def clear_parts(folder: Path, *, keep: Sequence[str]) -> None:
    """Remove part files (and a killed writer's temporaries) that ``keep`` does not name: what an
    earlier or interrupted run left beyond the parts a run starts from."""
    for marker in folder.glob(".part-*.publishing"):  # a part whose publication was cut short is finished first
        settle(folder / marker.name[1 : -len(".publishing")])
    kept = {f"{name}{suffix}" for name in keep for suffix in PART_SUFFIXES}
    for entry in folder.iterdir():
        name = entry.name
        if not _ours(name) or name in kept or name == STAGING:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    shutil.rmtree(folder / STAGING, ignore_errors=True)

"""An output, from refusal to publication: each command hands its ``output`` here and nothing else.

A :class:`Destination` is one of three kinds, chosen from the path: a :class:`FeatureFile`
(``NAME.npy`` with its sidecar), a :class:`ShardedFolder` (``DIR/`` of parts) or a
:class:`RecordFile` (JSONL, TSV or text; or stdout). ``check`` refuses a destination that cannot be
written before any model loads and takes an exclusive lock on it for the whole run, so a second run
to the same output stops at once; ``previous`` reads what an earlier run left there for an
``--update``; ``open`` resumes the journal of an interrupted run and hands the engine a sink, which
publishes atomically. Leaving the ``with`` block releases the lock, and a write that failed midway
(a full disk, an I/O error) becomes one line naming the destination, with the unfinished state kept
for a rerun.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import os
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import IO, Any, TypeVar

from mmcli.errors import WRITE_ERRNOS, OutputBusy, OutputCompleted, OutputExists, OutputFailed, UsageError, option
from mmcli.items import InputItem
from mmcli.output.atomic import settle, sweep_temporaries
from mmcli.output.journal import Journal, journal_path
from mmcli.output.manifest import manifest_path
from mmcli.output.npy import FeatureSetWriter, errors_path, sidecar_path
from mmcli.output.previous import Previous, kept_progress, previous_feature_set, previous_records
from mmcli.output.records import RecordWriter
from mmcli.output.sharded import (
    ShardedResume,
    ShardedSink,
    check_sharded_output,
    index_path,
    is_sharded_output,
    resume_sharded,
)
from mmcli.output.sinks import FeatureSink, RecordSink
from mmcli.reporting import Reporter

try:  # POSIX; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

# Failures that are the destination's, not an input's: reported as one line naming the output.
WRITE_ERRORS = WRITE_ERRNOS | {errno.EACCES, errno.EPERM}
# Why a lock file cannot be made where the folder itself is at fault: the output's checks word those.
FOLDER_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.EROFS})


def write_failure(shown: str, exc: OSError, kept: str, errnos: frozenset[int] = WRITE_ERRORS) -> OutputFailed | None:
    """A failed write as the one line that names its output (``kept``: what is left for a rerun), or
    None where ``exc`` is not a failure of the output's disk."""
    if isinstance(exc, BlockingIOError) or exc.errno not in errnos:
        return None
    where = f" ({exc.filename})" if exc.filename else ""
    return OutputFailed(f"cannot write {shown}: {exc.strerror or exc}{where}{kept}")


def lock_path(output: Path) -> Path:
    """``feats.npy`` -> ``.feats.npy.lock``; ``out/`` -> ``.out.lock`` beside the folder."""
    return output.with_name(f".{output.name}.lock")


class OutputLock:
    """An exclusive ``flock`` on a lock file beside an output, held for a whole run. The kernel
    releases it when the process dies, so a killed run never leaves a lock that blocks its rerun;
    the file names the holder's process id for the refusal."""

    def __init__(self, output: Path, shown: str) -> None:
        self.path, self.shown = lock_path(output), shown
        self._fd: int | None = None

    def acquire(self) -> None:
        if fcntl is None or self._fd is not None:
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode("ascii", "replace").strip()
                os.close(fd)
                raise OutputBusy(
                    f"{self.shown} is being written by another mmcli run"
                    + (f" (process {holder})" if holder.isdigit() else "")
                    + "; wait for it to finish, or stop it, then run this again"
                ) from None
            try:  # the previous holder may have removed the file between our open and our lock
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still held: a run waiting on this file retries on a new one
        os.close(self._fd)
        self._fd = None


class Destination:
    """Where a run writes; see the module's description. Use as a context manager around the run."""

    def __init__(self, path: Path | None, *, companions: tuple[Path, ...] = ()) -> None:
        self.path, self.companions = path, companions
        self._lock = OutputLock(path, self.shown) if path is not None else None

    @property
    def shown(self) -> str:
        return "standard output" if self.path is None else str(self.path)

    def check(self, *, overwrite: bool = False, update: bool = False) -> Destination:
        """Refuse, before any work, a destination that cannot be written or exists without ``overwrite``
        (or ``update``); then hold the lock for the rest of the run."""
        if self._lock is None:
            return self
        try:  # first the lock: what is beside the output (temporaries, a publication) may be another run's
            self._lock.acquire()
        except OSError as exc:
            if exc.errno in FOLDER_ERRNOS:
                self._check(overwrite=overwrite, update=update)  # says which folder cannot be written
            self._raise_failure(exc)  # (a full disk can refuse even the lock file)
            raise
        try:
            self._check(overwrite=overwrite, update=update)
        except BaseException as exc:
            self._lock.release()
            if isinstance(exc, OSError):
                self._raise_failure(exc)
            raise
        return self

    def _check(self, *, overwrite: bool, update: bool) -> None:
        check_writable(self.path, overwrite=overwrite or update, companions=self.companions)  # type: ignore[arg-type]

    def stopped_note(self, *, update: bool) -> str:
        """What a run stopped at a failed item (``on_error="fail"``) leaves, for its message."""
        return ""

    def kept(self) -> str:
        """What a run that failed midway left for its rerun, for the message."""
        if self.path is None:
            return ""
        if kept_progress(journal_path(self.path)):
            return f"; the progress so far is kept in {journal_path(self.path)}: run the same command again to resume"
        return f"; {self.shown} was left as it was"

    def __enter__(self) -> Destination:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._lock is not None:
            self._lock.release()
        if isinstance(exc, OSError):
            self._raise_failure(exc)

    def _raise_failure(self, exc: OSError) -> None:
        """A failure of the destination's disk as one line naming it (other errors are left as they are)."""
        failure = write_failure(self.shown, exc, self.kept())
        if failure is not None:
            raise failure from None

    def open(
        self,
        settings: dict[str, Any],
        items: Iterator[Any],
        *,
        previous: Previous | None = None,
        journalled: dict[str, Any] | None = None,
        restart: bool = False,
        reporter: Reporter,
        unit: str,
    ) -> tuple[Any, int, Iterator[Any]]:
        """The sink a run writes into, the input items an interrupted run already did, and those left:
        for an update of ``previous``, a sink that rewrites it; else one that resumes the journal of an
        interrupted run with the same ``journalled`` settings (None: a stream, never resumed)."""
        if previous is not None:
            return self._update_sink(settings, previous), 0, items
        return self._fresh_sink(settings, items, journalled, restart=restart, reporter=reporter, unit=unit)

    def _update_sink(self, settings: dict[str, Any], previous: Previous) -> Any:
        raise NotImplementedError

    def _fresh_sink(
        self,
        settings: dict[str, Any],
        items: Iterator[Any],
        journalled: dict[str, Any] | None,
        *,
        restart: bool,
        reporter: Reporter,
        unit: str,
    ) -> tuple[Any, int, Iterator[Any]]:
        journal, items = self._journal(journalled, items, restart=restart, reporter=reporter, unit=unit)
        return self._journalled_sink(settings, journal), journal.consumed if journal is not None else 0, items

    def _journalled_sink(self, settings: dict[str, Any], journal: Journal | None) -> Any:
        raise NotImplementedError

    def _journal(
        self, journalled: dict[str, Any] | None, items: Iterator[Any], *, restart: bool, reporter: Reporter, unit: str
    ) -> tuple[Journal | None, Iterator[Any]]:
        """The journal of a resumable run (``journalled``: the settings a resume must share; None for a
        stream, which cannot be replayed) and the items still to do after what it committed."""
        if journalled is None or self.path is None:
            return None, items
        journal = Journal(journal_path(self.path), journalled, restart=restart)
        reporter.journal(journal.folder)
        if journal.consumed:
            reporter.note(f"resuming: {journal.consumed} {unit} were done by an earlier run ({journal.folder})")
            items = islice(items, journal.consumed, None)
        return journal, items


class FeatureFile(Destination):
    """``NAME.npy`` with its sidecar ``NAME.jsonl``, manifest and error list."""

    def __init__(self, path: Path, *, model: str = "", dtype: str = "float32") -> None:
        super().__init__(path)
        self.model, self.dtype = model, dtype
        self.sink: Any = None

    def _check(self, *, overwrite: bool, update: bool) -> None:
        check_output_path(self.path, overwrite=overwrite or update)  # type: ignore[arg-type]

    def exists(self) -> bool:
        return self.path is not None and self.path.exists()

    def previous(self, items: Sequence[InputItem]) -> Previous:
        return previous_feature_set(self.path, items, self.model)  # type: ignore[arg-type]

    def _update_sink(self, settings: dict[str, Any], previous: Previous) -> Any:
        return self._journalled_sink(settings, None)

    def _journalled_sink(self, settings: dict[str, Any], journal: Journal | None) -> Any:
        writer = FeatureSetWriter(self.path, dtype=self.dtype, journal=journal, settings=settings)  # type: ignore[arg-type]
        self.sink = FeatureSink(writer, self.model)
        return self.sink

    @property
    def rows(self) -> int:
        return self.sink.writer.count

    @property
    def dim(self) -> int | None:
        return self.sink.writer.dim

    @property
    def errors(self) -> Path:
        return errors_path(self.path)  # type: ignore[arg-type]

    def stopped_note(self, *, update: bool) -> str:
        return "; the set was left as it was" if update else "; nothing was written"


class ShardedFolder(FeatureFile):
    """A folder ``DIR/`` of parts and its ``index.json`` (see :mod:`mmcli.output.sharded`)."""

    def __init__(self, path: Path, *, model: str = "", dtype: str = "float32", shard_rows: int | None = None) -> None:
        super().__init__(path, model=model, dtype=dtype)
        self.shard_rows = shard_rows
        self.overwrite = False  # as check() was told
        self.existing: dict[str, Any] | None = None

    @property
    def shown(self) -> str:
        return f"{self.path}/"

    def _check(self, *, overwrite: bool, update: bool) -> None:
        self.overwrite = overwrite
        self.existing = check_sharded_output(self.path, overwrite=overwrite, update=update)  # type: ignore[arg-type]

    def exists(self) -> bool:
        return self.path is not None and index_path(self.path).exists()

    def kept(self) -> str:
        if self.path is not None and kept_progress(self.path):
            return f"; the finished parts are kept in {self.shown}: run the same command again to resume"
        return f"; {self.shown} was left as it was"

    def _update_sink(self, settings: dict[str, Any], previous: Previous) -> Any:
        assert self.existing is not None
        rows = int(self.shard_rows or self.existing.get("shard_rows") or 1)
        resume = ShardedResume(dict(self.existing, shard_rows=rows), rows)
        self.sink = ShardedSink(self.path, self.model, resume, dtype=self.dtype, settings=settings,  # type: ignore[arg-type]
                                previous=previous)  # fmt: skip
        return self.sink

    def _fresh_sink(
        self,
        settings: dict[str, Any],
        items: Iterator[Any],
        journalled: dict[str, Any] | None,
        *,
        restart: bool,
        reporter: Reporter,
        unit: str,
    ) -> tuple[Any, int, Iterator[Any]]:
        """The set's own index is its journal: the parts an interrupted run finished are kept."""
        assert self.path is not None
        run = {key: value for key, value in (journalled or {}).items() if key not in settings}
        resume = resume_sharded(
            self.path, self.existing, settings=settings, run=run, shard_rows=self.shard_rows, restart=restart,
            overwrite=self.overwrite, resumable=journalled is not None,
        )  # fmt: skip
        reporter.journal(self.path)  # an interrupted run keeps its finished parts for a rerun
        if resume.parts:
            reporter.note(
                f"resuming: {len(resume.parts)} finished parts ({resume.consumed} items) were done by an earlier "
                f"run ({index_path(self.path)})"
            )
            items = islice(items, resume.consumed, None)
        self.sink = ShardedSink(self.path, self.model, resume, dtype=self.dtype, settings=settings)
        return self.sink, resume.consumed, items

    @property
    def rows(self) -> int:
        return self.sink.rows

    @property
    def dim(self) -> int | None:
        return self.sink.dim

    @property
    def errors(self) -> Path:
        return self.path / "part-NNNNN.errors.jsonl"  # type: ignore[operator]

    def stopped_note(self, *, update: bool) -> str:
        return "; the set was left as it was" if update else f"; the parts finished before it are kept in {self.shown}"


class RecordFile(Destination):
    """Records (JSONL, TSV or text) in a file, with a manifest where they are JSONL; or, with no path,
    on ``stream`` (stdout by default), which is neither locked nor resumable."""

    def __init__(
        self, path: Path | None, *, fmt: str = "jsonl", text_fields: tuple[str, ...] = ("caption",),
        stream: IO[str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(path)
        self.fmt, self.text_fields, self.stream = fmt, text_fields, stream

    def exists(self) -> bool:
        return self.path is not None and self.path.exists()

    def previous(self, items: Sequence[InputItem]) -> Previous:
        return previous_records(self.path, items)  # type: ignore[arg-type]

    def _update_sink(self, settings: dict[str, Any], previous: Previous) -> Any:
        return RecordSink(RecordWriter(self.path, fmt="jsonl", settings=settings), manifest=True)

    def _journalled_sink(self, settings: dict[str, Any], journal: Journal | None) -> Any:
        writer = RecordWriter(self.path, stream=self.stream, fmt=self.fmt, text_fields=self.text_fields,
                              journal=journal, settings=settings if journal else None)  # fmt: skip
        # A manifest for a later update: file inputs written to an output only (a stream cannot be compared).
        return RecordSink(writer, manifest=journal is not None)


def feature_destination(
    output: str | os.PathLike[str], *, model: str = "", dtype: str = "float32", shard_rows: int | None = None
) -> FeatureFile:
    """A feature set's destination: a sharded folder where ``output`` ends in ``/`` or names a folder,
    else ``NAME.npy``."""
    if is_sharded_output(output):
        return ShardedFolder(Path(output), model=model, dtype=dtype, shard_rows=shard_rows)
    return FeatureFile(Path(output), model=model, dtype=dtype)


@contextlib.contextmanager
def writing(path: Path | None, *, overwrite: bool, companions: tuple[Path, ...] = ()) -> Iterator[Path | None]:
    """For the commands that write a file or two at the end (an index, a report, a head, metrics):
    the same refusal, lock and write-failure line as a run's destination."""
    with Destination(path, companions=companions).check(overwrite=overwrite):
        yield path


def check_writable(path: Path, *, overwrite: bool, companions: tuple[Path, ...] = ()) -> Path:
    """Fail before any work if ``path`` cannot be written, or exists (with its companions) without ``overwrite``.

    Temporaries a killed run left beside the output go first (see :func:`sweep_temporaries`). Where the
    output exists only because this call completed the publication of a killed run (see
    :func:`settle`), :class:`~mmcli.errors.OutputCompleted` says so: rerunning that run has nothing to do.
    """
    finished = settle(path)
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"cannot write {path}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"cannot write {path}: folder {str(folder)!r} is not writable")
    # A killed run's temporaries: of the output, its companions, and the manifest and error list beside it.
    sweep_temporaries(path, *companions, manifest_path(path), errors_path(path))
    if not overwrite:
        if finished and path.exists():
            raise OutputCompleted(
                f"{path}: the run that wrote it was stopped as it finished, and the output is now complete; "
                f"nothing left to do (pass {option('overwrite')} to make it again)"
            )
        for existing in (path, *companions):
            if existing.exists():
                how = " (the run that wrote it was stopped as it finished, and is now complete)" if finished else ""
                raise OutputExists(f"{existing} already exists{how}; pass --overwrite to replace it")
    return path


def check_output_path(npy: Path, *, overwrite: bool) -> Path:
    """Validate ``-o`` before any work is done, so a bad path fails fast and loses nothing."""
    if npy.suffix != ".npy":
        raise UsageError(f"output must end in .npy (got {str(npy)!r}); the sidecar .jsonl is written beside it")
    check_writable(npy, overwrite=overwrite, companions=(sidecar_path(npy),))
    return npy


F = TypeVar("F", bound=Callable[..., Any])


def writes(parameter: str) -> Callable[[F], F]:
    """For a library call that writes the output named by its ``parameter`` (fuse, report, a trained
    model): the output's lock for the whole call, and a write that fails midway (a full disk, an I/O
    error) as one line naming that output. The call's own checks refuse a folder that cannot be written."""

    def decorate(function: F) -> F:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            output = signature.bind_partial(*args, **kwargs).arguments.get(parameter)
            on_stdout = output is None or str(output) == "-"
            lock = None if on_stdout else OutputLock(Path(output), str(output))
            try:
                if lock is not None:
                    try:
                        lock.acquire()
                    except OSError as exc:
                        if exc.errno not in FOLDER_ERRNOS:
                            raise
                        lock = None  # (the call refuses the folder in its own words)
                return function(*args, **kwargs)
            except OSError as exc:
                failure = write_failure(str(output), exc, f"; an existing {output} was left as it was", WRITE_ERRNOS)
                if failure is None:
                    raise
                raise failure from None
            finally:
                if lock is not None:
                    lock.release()

        return wrapper  # type: ignore[return-value]

    return decorate

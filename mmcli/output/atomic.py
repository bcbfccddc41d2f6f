"""Atomic file replacement: a killed run never leaves a half-written file under the final name.

One file is replaced by a rename. Several files that belong together (a feature set's ``.npy``,
``.jsonl``, manifest and error list; a caption file and its manifest) are replaced by
:func:`publish`: it first writes ``.NAME.publishing``, a list of the renames and removals still to
do, then does them, then deletes the list. A run killed in between leaves the list behind, and
the next mmcli command that reads or writes the output finishes the job (:func:`settle`) before it
looks at any of the files, so it sees the old set or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path


def temporary_sibling(path: Path, suffix: str = ".part") -> Path:
    """Create an empty hidden temporary file beside ``path`` (same folder, so rename is atomic):
    ``.NAME.XXXXXXXX.SUFFIX``, a name :func:`sweep_temporaries` knows as ``path``'s."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(name)


_RANDOM_AND_SUFFIX = re.compile(r"[a-z0-9_]{8}(\.[a-z]+)+")  # what mkstemp adds after the prefix


def sweep_temporaries(*paths: Path) -> None:
    """Remove the temporaries of ``paths`` that a killed run left before it could rename them: a
    writer calls this as it starts, after :func:`settle` has carried out any change already decided."""
    listings: dict[Path, list[str]] = {}  # each folder is listed once
    for path in paths:
        if path.parent not in listings:
            try:
                listings[path.parent] = os.listdir(path.parent)
            except OSError:
                listings[path.parent] = []
        prefix = f".{path.name}."
        for name in listings[path.parent]:
            if name.startswith(prefix) and _RANDOM_AND_SUFFIX.fullmatch(name[len(prefix) :]):
                (path.parent / name).unlink(missing_ok=True)


def commit(temporary: Path, final: Path) -> None:
    """Flush ``temporary`` to disk and rename it over ``final``."""
    _make_durable(temporary)
    os.replace(temporary, final)


def publishing_path(primary: Path) -> Path:
    """``feats.npy`` -> ``.feats.npy.publishing``: the renames a :func:`publish` of ``feats.npy`` has yet to do."""
    return primary.with_name(f".{primary.name}.publishing")


def publish(primary: Path, moves: Sequence[tuple[Path, Path]], removals: Sequence[Path] = ()) -> None:
    """Rename each ``(temporary, final)`` of ``moves`` and delete ``removals`` (files or folders) as one
    change to the output ``primary``: after a crash, :func:`settle` completes it. The temporaries must be
    in ``primary``'s folder or below it (a rename within one file system)."""
    for temporary, _ in moves:
        _make_durable(temporary)
    folder = primary.parent
    plan = {
        "moves": [[os.path.relpath(temporary, folder), os.path.relpath(final, folder)] for temporary, final in moves],
        "removals": [os.path.relpath(path, folder) for path in removals],
    }
    marker = publishing_path(primary)
    pending = temporary_sibling(primary, ".publishing.tmp")
    with open(pending, "w", encoding="utf-8") as handle:
        json.dump(plan, handle)
    commit(pending, marker)
    _sync_folder(folder)  # from here on the change is decided: a crash is rolled forward
    _carry_out(folder, plan)
    _sync_folder(folder)
    marker.unlink()


def settle(primary: Path) -> bool:
    """Finish a :func:`publish` of ``primary`` that a killed run left half done; True if there was one."""
    from mmcli.errors import InputError

    marker = publishing_path(primary)
    try:
        with open(marker, encoding="utf-8") as handle:
            plan = json.load(handle)
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as exc:
        raise InputError(f"{marker}: cannot read this record of an unfinished write of {primary} ({exc})") from None
    try:
        _carry_out(primary.parent, plan)
        _sync_folder(primary.parent)
        marker.unlink()
    except OSError as exc:
        raise InputError(
            f"{primary} was being replaced when a run stopped, and finishing that failed ({exc.strerror}); "
            f"rerun any mmcli command that reads it with write access to {str(primary.parent)!r}"
        ) from None
    return True


def _carry_out(folder: Path, plan: dict) -> None:
    """Do what is left of ``plan``: a rename whose temporary is gone was done already."""
    for temporary, final in plan["moves"]:
        if os.path.lexists(folder / temporary):
            os.replace(folder / temporary, folder / final)
    for name in plan["removals"]:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _make_durable(temporary: Path) -> None:
    with open(temporary, "rb+") as handle:
        os.fsync(handle.fileno())
    os.chmod(temporary, 0o644 & ~_umask())


def _sync_folder(folder: Path) -> None:
    """Make renames in ``folder`` durable (a no-op where folders cannot be opened, as on Windows)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_output(path: Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator:
    """Open a temporary sibling for writing; rename it to ``path`` only if the block succeeds."""
    temporary = temporary_sibling(path)
    try:
        with open(temporary, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
        commit(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current

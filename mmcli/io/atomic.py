"""Atomic file replacement: a killed run never leaves a half-written file under the final name."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def temporary_sibling(path: Path, suffix: str = ".part") -> Path:
    """Create an empty hidden temporary file beside ``path`` (same folder, so rename is atomic)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(name)


def commit(temporary: Path, final: Path) -> None:
    """Flush ``temporary`` to disk and rename it over ``final``."""
    with open(temporary, "rb+") as handle:
        os.fsync(handle.fileno())
    os.chmod(temporary, 0o644 & ~_umask())
    os.replace(temporary, final)


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


def check_writable(path: Path, *, overwrite: bool, companions: tuple[Path, ...] = ()) -> Path:
    """Fail before any work if ``path`` cannot be written, or exists (with its companions) without ``overwrite``."""
    from mmcli.errors import OutputExists, UsageError

    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"cannot write {path}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"cannot write {path}: folder {str(folder)!r} is not writable")
    if not overwrite:
        for existing in (path, *companions):
            if existing.exists():
                raise OutputExists(f"{existing} already exists; pass --overwrite to replace it")
    return path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current

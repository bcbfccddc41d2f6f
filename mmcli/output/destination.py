"""An output, from refusal to publication: each command hands its ``output`` here and nothing else.

A :class:`Destination` is one of three kinds, chosen from the path: a feature file (``NAME.npy``
with its sidecar), a sharded folder (``DIR/`` of parts) or a record file (JSONL, TSV or text; or
stdout). It refuses a destination that cannot be written before any model loads, holds an exclusive
lock on it for the whole run (a second run to the same output stops at once), reads what an earlier
run left there (settings, the rows an ``--update`` keeps, the progress a resume skips), hands the
engine a sink, and publishes atomically; a write that fails midway (a full disk, an I/O error) is
one line naming the destination, with the unfinished state kept for a rerun.
"""

from __future__ import annotations

import os
from pathlib import Path

from mmcli.errors import OutputCompleted, OutputExists, UsageError, option
from mmcli.output.atomic import settle, sweep_temporaries
from mmcli.output.manifest import manifest_path
from mmcli.output.npy import errors_path, sidecar_path


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

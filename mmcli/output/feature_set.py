"""Reading a feature set whichever form it takes: ``NAME.npy`` with its sidecar, or a sharded
``DIR/`` of parts. Every reader comes through here, so the choice is made once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mmcli.errors import InputError
from mmcli.jsonl import read_jsonl
from mmcli.output import manifest, sharded
from mmcli.output.npy import FeatureSet, errors_path, read_npy


def is_feature_set_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a feature set: ``NAME.npy``, or a folder (a sharded set)."""
    return os.fspath(path).endswith(".npy") or Path(path).is_dir()


def feature_set_errors(path: Path) -> list[dict[str, Any]]:
    """The error records beside a set (``NAME.errors.jsonl``; every part's, for a sharded set)."""
    if path.is_dir():
        return sharded.read_errors(path)
    errors = errors_path(path)
    return [record for _, record in read_jsonl(errors)] if errors.exists() else []


def read_feature_set(path: str | os.PathLike[str], *, mmap: bool = True) -> FeatureSet:
    """Load ``NAME.npy`` and its sidecar, or a sharded set ``DIR/`` (see :mod:`mmcli.output.sharded`),
    refusing anything inconsistent or pickled."""
    npy = Path(path)
    if npy.is_dir():
        return sharded.read_sharded(npy, mmap=mmap)
    return read_npy(npy, mmap=mmap)


def require_rows(feature_set: FeatureSet) -> None:
    """Refuse a set with no rows: searching, indexing, classifying or fusing it has nothing to work on,
    and an empty result would look like an answer."""
    if len(feature_set) == 0:
        raise InputError(f"{feature_set.path} has no rows; make it again from inputs that give vectors")


def check_rows(feature_set: FeatureSet, chunk_rows: int = 65_536) -> None:
    """What every command that uses a set's vectors asks of them: at least one row, and every value finite."""
    require_rows(feature_set)
    check_finite(feature_set, chunk_rows)


def check_finite(feature_set: FeatureSet, chunk_rows: int = 65_536) -> None:
    """Refuse a set with NaN or infinite values, naming the first bad row, before it poisons a result."""
    vectors = feature_set.vectors
    for start in range(0, vectors.shape[0], chunk_rows):
        finite = np.isfinite(vectors[start : start + chunk_rows]).all(axis=1)
        if not finite.all():
            row = start + int(np.argmin(finite))
            bad = int((~finite).sum())
            raise InputError(
                f"{feature_set.path}: row {row} (id {feature_set.records[row].get('id')!r}) holds NaN or infinite "
                f"values ({bad} such rows in rows {start}-{start + len(finite) - 1}); regenerate or drop them"
            )


def read_output_manifest(output: Path) -> list[dict[str, Any]] | None:
    """The file entries of an output's manifest (every part's, in order, for a sharded set), or None."""
    return sharded.read_manifest(output) if output.is_dir() else manifest.read_manifest(output)


def read_output_settings(output: Path) -> dict[str, Any] | None:
    """The settings of the run that wrote an output (its manifest's first line; a sharded set's index)."""
    return sharded.read_run_settings(output) if output.is_dir() else manifest.read_run_settings(output)

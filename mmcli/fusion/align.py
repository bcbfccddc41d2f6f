"""Row alignment of several feature sets, by id (inner join) or by position.

Fusion reads the sets in chunks of aligned rows rather than loading them, so an early fusion of
large sets stays within the memory of one chunk per input.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmcli.errors import InputError, UsageError
from mmcli.output.npy import FeatureSet

ALIGN_MODES = ("id", "row")
CHUNK_ROWS = 8_192


@dataclass
class AlignedSets:
    """Feature sets joined row for row: output row ``j`` is row ``rows[i][j]`` of set ``i``."""

    sets: list[FeatureSet]
    rows: list[np.ndarray]
    dropped: list[int]

    def __len__(self) -> int:
        return len(self.rows[0])

    @property
    def widths(self) -> list[int]:
        return [feature_set.vectors.shape[1] for feature_set in self.sets]

    @property
    def ids(self) -> list[str]:
        first = self.sets[0].records
        return [first[row]["id"] for row in self.rows[0].tolist()]

    def blocks(self, start: int = 0, stop: int | None = None) -> list[np.ndarray]:
        """The aligned rows ``start:stop`` of every set, as float32 matrices."""
        return [
            np.asarray(feature_set.vectors[rows[start:stop]], dtype=np.float32)
            for feature_set, rows in zip(self.sets, self.rows, strict=True)
        ]

    def chunks(self, chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[int, list[np.ndarray]]]:
        """``(start, blocks)`` for consecutive chunks of aligned rows."""
        for start in range(0, len(self), chunk_rows):
            yield start, self.blocks(start, start + chunk_rows)

    def records(self, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        """Sidecar records for fused rows: the first set's id and source, every input's model,
        source and id under ``inputs``, and the inputs' extra keys (earlier sets win)."""
        fused = []
        for position in range(start, len(self) if stop is None else min(stop, len(self))):
            originals = [fs.records[int(rows[position])] for fs, rows in zip(self.sets, self.rows, strict=True)]
            record: dict[str, Any] = {
                "id": originals[0]["id"],
                "modality": "fused",
                "model": [original.get("model") for original in originals],
                "source": originals[0].get("source"),
                "inputs": [
                    {"set": str(fs.path), "id": original["id"], "source": original.get("source")}
                    for fs, original in zip(self.sets, originals, strict=True)
                ],
            }
            for original in originals:
                for key, value in original.items():
                    if key not in record and key not in ("t", "video"):
                        record[key] = value
            fused.append(record)
        return fused


def align(sets: Sequence[FeatureSet], *, by: str = "id", strict: bool = False) -> AlignedSets:
    """Join ``sets`` by ``id`` (rows in the first set's order) or by position (``by="row"``)."""
    if len(sets) < 2:
        raise UsageError("fusion needs at least two feature sets")
    if by == "row":
        counts = [len(feature_set) for feature_set in sets]
        if len(set(counts)) > 1:
            listing = ", ".join(f"{fs.path} has {count}" for fs, count in zip(sets, counts, strict=True))
            raise InputError(f"--align row needs sets with the same number of rows: {listing}")
        rows = [np.arange(counts[0], dtype=np.int64) for _ in sets]
        return AlignedSets(list(sets), rows, [0] * len(sets))
    if by != "id":
        raise UsageError(f"unknown alignment {by!r}; choose from {', '.join(ALIGN_MODES)}")
    positions = [_positions(feature_set) for feature_set in sets]
    common = set(positions[0])
    for position in positions[1:]:
        common &= position.keys()
    if not common:
        names = " and ".join(str(fs.path) for fs in sets)
        raise InputError(
            f"{names} share no ids, so no row can be fused; check that they describe the same items, "
            "or use --align row if they are in the same order"
        )
    ordered = [identifier for identifier in positions[0] if identifier in common]
    dropped = [len(feature_set) - len(ordered) for feature_set in sets]
    if strict and any(dropped):
        listing = ", ".join(f"{count} of {fs.path}" for fs, count in zip(sets, dropped, strict=True) if count)
        raise InputError(f"--strict: ids differ between the sets ({listing} rows have no partner in every set)")
    rows = [np.fromiter((position[i] for i in ordered), dtype=np.int64, count=len(ordered)) for position in positions]
    return AlignedSets(list(sets), rows, dropped)


def _positions(feature_set: FeatureSet) -> dict[str, int]:
    positions: dict[str, int] = {}
    for row, record in enumerate(feature_set.records):
        identifier = record.get("id")
        if identifier in positions:
            raise InputError(f"{feature_set.path}: id {identifier!r} appears on rows {positions[identifier]} and {row}")
        positions[identifier] = row
    return positions

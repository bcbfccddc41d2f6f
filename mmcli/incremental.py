"""Incremental updates of an output (a feature set, captions): process only what is new or changed.

The manifest beside an output (``NAME.files.jsonl``) gives each row's file size, modification time
and content hash, after a first line with the settings of the run that wrote it. A current input
whose path, size and mtime match keeps its row; one whose content hash matches a row (a renamed,
copied or touched file) reuses that row under its new id; the rest are processed. Rows are written
in the order a fresh run would write them, so the result is the fresh run's, row for row.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmcli.errors import UsageError
from mmcli.io.features import file_entry, read_run_settings
from mmcli.io.inputs import InputItem


@dataclass
class UpdatePlan:
    """What to do with each current input, and which old rows are kept although their file is gone."""

    reuse: dict[int, tuple[int, dict[str, Any]]] = field(default_factory=dict)  # item -> (old row, manifest entry)
    embed: list[int] = field(default_factory=list)  # items to run through the model, in input order
    hashed: dict[int, dict[str, Any]] = field(default_factory=dict)  # manifest entries already computed
    kept_missing: list[int] = field(default_factory=list)  # old rows of vanished files (--keep-missing)
    moved: int = 0  # reused by content hash: renamed, copied or touched files
    dropped: int = 0  # old rows of vanished files left out


# Settings that cannot make old and new rows disagree: --update refuses videos, so how they are sampled is moot.
NOT_COMPARED = frozenset({"video"})


def check_same_settings(output: Path, settings: dict[str, Any]) -> None:
    """Refuse to update ``output`` with settings that would make its old and new parts disagree."""
    stored = read_run_settings(output)
    if stored is None:  # written before runs recorded their settings
        return
    compared = [key for key in settings if key not in NOT_COMPARED and key in stored]
    differing = [key for key in compared if stored[key] != settings[key]]
    if differing:
        was = ", ".join(f"{key}={stored[key]!r}" for key in differing)
        now = ", ".join(f"{key}={settings[key]!r}" for key in differing)
        raise UsageError(
            f"{output} was made with {was}, this run has {now}; --update must use the same settings "
            "(give the same flags again, or rebuild it with --overwrite)"
        )


def outcomes_of(
    items: Sequence[InputItem], indices: Sequence[int], run: Callable[[list[InputItem]], Iterable[list[Any]]], bar: Any
) -> dict[int, Any]:
    """Run only ``items[i]`` for ``i`` in ``indices`` through ``run`` (a batch pipeline such as
    ``embed_items``), returning each one's outcome by its index; ``bar`` counts them."""
    outcomes: dict[int, Any] = {}
    pending = iter(indices)
    for batch in run([items[i] for i in indices]):
        for outcome in batch:
            outcomes[next(pending)] = outcome
        bar.update(len(batch))
    return outcomes


def refuse_videos(output: Path, items: Sequence[InputItem], holds_videos: bool) -> None:
    """``--update`` compares files row by row; a video makes many rows (or segment records) from one
    file, which it does not handle yet: refused, rather than left out of a result meant to equal a fresh run."""
    video = next((item.source for item in items if item.modality == "video"), None)
    if holds_videos or video is not None:
        what = f"the inputs include videos ({video})" if video is not None else f"{output} holds video results"
        raise UsageError(f"{what}, which --update does not handle yet; rebuild {output} with --overwrite")


def plan_update(
    items: Sequence[InputItem],
    records: Sequence[dict[str, Any]],
    manifest: Sequence[dict[str, Any]],
    *,
    name: str,
    keep_missing: bool = False,
) -> UpdatePlan:
    """Match current inputs to old output ``records`` (one manifest entry each, in order) by
    path + size + mtime, then by content hash. ``name`` names the output in errors."""
    if len(manifest) != len(records):
        raise UsageError(
            f"{name}'s file manifest has {len(manifest)} entries for {len(records)} records; "
            "rerun without --update to rebuild it"
        )
    by_path: dict[str, int] = {}
    by_digest: dict[str, int] = {}
    by_text: dict[str, int] = {}
    for row, (entry, record) in enumerate(zip(manifest, records, strict=True)):
        if "path" in entry:
            by_path.setdefault(entry["path"], row)
            by_digest.setdefault(entry["blake2b"], row)
        elif record.get("modality") == "text":
            by_text.setdefault(record["source"], row)
    plan = UpdatePlan()
    used: set[int] = set()
    for index, item in enumerate(items):
        row, entry, moved = _match(item, manifest, by_path, by_digest, by_text)
        if row is None:
            plan.embed.append(index)
            if entry is not None:
                plan.hashed[index] = entry
            continue
        assert entry is not None
        plan.reuse[index] = (row, entry)
        plan.moved += moved
        used.add(row)
    for row, entry in enumerate(manifest):
        if row in used or "path" not in entry or os.path.exists(entry["path"]):
            continue
        if keep_missing:
            plan.kept_missing.append(row)
        else:
            plan.dropped += 1
    return plan


def _match(
    item: InputItem,
    manifest: Sequence[dict[str, Any]],
    by_path: dict[str, int],
    by_digest: dict[str, int],
    by_text: dict[str, int],
) -> tuple[int | None, dict[str, Any] | None, bool]:
    """``(old row or None, the item's manifest entry if known, matched by content)``."""
    if item.error:
        return None, None, False  # run it through the pipeline, which reports it as the fresh run would
    if item.modality == "text":
        return by_text.get(item.text or ""), {"id": item.id}, False
    assert item.path is not None
    try:
        status = os.stat(item.path)
    except OSError:
        return None, None, False
    row = by_path.get(item.path)
    if row is not None:
        entry = manifest[row]
        if entry["size"] == status.st_size and entry["mtime_ns"] == status.st_mtime_ns:
            return row, {**entry, "id": item.id}, False
    try:
        current = file_entry(item.id, item.path)
    except OSError:
        return None, None, False
    row = by_digest.get(current["blake2b"])
    return row, current, row is not None

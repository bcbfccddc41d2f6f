"""Incremental updates of an output (a feature set, captions): process only what is new or changed.

The manifest beside an output (``NAME.files.jsonl``) gives each row's file size, modification time
and content hash, after a first line with the settings of the run that wrote it. The rows of one
file (an image's row; a video's frame, pooled, segment and summary rows) form one group. A current
input whose path, size and mtime match keeps its file's rows; one whose content hash matches (a
renamed, copied or touched file) reuses them under its new id; the rest are processed. A file that
failed in part (a frame that could not be embedded) is processed again, so its error is reported
again, as a fresh run would. Rows are written in the order a fresh run would write them, so the
result is the fresh run's, row for row.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmcli.errors import UsageError, option
from mmcli.items import InputItem
from mmcli.output.manifest import file_entry, file_groups


@dataclass
class UpdatePlan:
    """What to do with each current input, and which old rows are kept although their file is gone."""

    reuse: dict[int, tuple[list[int], dict[str, Any]]] = field(default_factory=dict)  # item -> (old rows, file entry)
    embed: list[int] = field(default_factory=list)  # items to run through the model, in input order
    hashed: dict[int, dict[str, Any]] = field(default_factory=dict)  # manifest entries already computed
    kept_missing: list[int] = field(default_factory=list)  # old rows of vanished files (--keep-missing)
    moved: int = 0  # inputs reused by content hash: renamed, copied or touched files
    dropped: int = 0  # vanished files whose rows are left out

    def carried(
        self, index: int, item: InputItem, records: Sequence[dict[str, Any]], manifest: Sequence[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The old records and manifest entries of the rows that input ``index`` (``item``) reuses, under
        the item's id and path where its file was renamed or copied."""
        rows, entry = self.reuse[index]
        if "path" not in manifest[rows[0]]:  # a text: its record is the current item's (id and extra fields may differ)
            return [item.record(model=records[rows[0]]["model"])], [entry]
        old = [records[row] for row in rows]
        old_id = _input_id(old)
        carried = [_renamed(record, old_id, item.id, item.source) for record in old]
        return carried, [{**entry, "id": record["id"]} for record in carried]


def input_id(outcome: Any) -> str:
    """The id of the input an outcome belongs to: a video's frames and segments, and a recording's
    windows, name it in ``extra``."""
    item = outcome.item
    if item.modality in ("frame", "clip", "segment", "window"):
        return item.extra.get("video", item.extra.get("audio", item.id))
    return item.id


def outcomes_of(
    items: Sequence[InputItem], indices: Sequence[int], run: Callable[[list[InputItem]], Iterable[list[Any]]], bar: Any
) -> dict[int, list[Any]]:
    """Run only ``items[i]`` for ``i`` in ``indices`` through ``run`` (a batch pipeline such as
    ``embed_items``, videos expanded), returning each input's outcomes (its rows or records, and its
    errors) by its index; ``bar`` counts the inputs."""
    from mmcli.pipeline import Outcome

    outcomes: dict[int, list[Any]] = {}
    for i in indices:  # a failed item (a missing file, a repeated id) fails as the pipeline would say
        if items[i].error:
            outcomes[i] = [Outcome(items[i], error=items[i].error)]
            bar.update(1)
    todo = [i for i in indices if not items[i].error]  # unique ids, so each outcome finds its input
    position = {items[i].id: i for i in todo}
    for batch in run([items[i] for i in todo]):
        for outcome in batch:
            index = position[input_id(outcome)]
            if index not in outcomes:
                outcomes[index] = []
                bar.update(1)
            outcomes[index].append(outcome)
    return outcomes


def plan_update(
    items: Sequence[InputItem],
    records: Sequence[dict[str, Any]],
    manifest: Sequence[dict[str, Any]],
    *,
    name: str,
    keep_missing: bool = False,
    failed: Collection[str] = (),
) -> UpdatePlan:
    """Match current inputs to old output ``records`` (one manifest entry each, in order) by
    path + size + mtime, then by content hash. ``failed``: paths of files with an error in the old
    output, which are processed again. ``name`` names the output in errors."""
    if len(manifest) != len(records) or any(e["id"] != r["id"] for e, r in zip(manifest, records, strict=False)):
        raise UsageError(
            f"{name}'s file manifest does not describe its {len(records)} records; "
            f"rerun without {option('update')} to rebuild it"
        )
    groups = file_groups(manifest)
    by_path: dict[str, list[int]] = {}
    by_digest: dict[str, list[int]] = {}
    by_text: dict[str, list[int]] = {}
    for rows in groups:
        entry, record = manifest[rows[0]], records[rows[0]]
        if "path" in entry:
            if entry["path"] not in failed:
                by_path.setdefault(entry["path"], rows)
                by_digest.setdefault(entry["blake2b"], rows)
        elif record.get("modality") == "text" and not record.get("source_truncated"):
            by_text.setdefault(record["source"], rows)  # (a cut source is no text's whole: embedded again)
    plan = UpdatePlan()
    used: set[int] = set()
    for index, item in enumerate(items):
        rows, entry, moved = _match(item, manifest, by_path, by_digest, by_text)
        if rows is None:
            plan.embed.append(index)
            if entry is not None:
                plan.hashed[index] = entry
            continue
        assert entry is not None
        plan.reuse[index] = (rows, entry)
        plan.moved += moved
        used.add(rows[0])
    for rows in groups:
        path = manifest[rows[0]].get("path")
        if rows[0] in used or path is None or os.path.exists(path):
            continue
        if keep_missing:
            plan.kept_missing.extend(rows)
        else:
            plan.dropped += 1
    return plan


def _input_id(records: Sequence[dict[str, Any]]) -> str:
    """The id of the input that made ``records`` (one file's rows): frame rows name it as ``video``; an
    image's row, a pooled video row and a summary carry it as their id; segments as ``ID#t=START,END``."""
    for parent in ("video", "audio"):  # frame and window rows name their input
        if parent in records[0]:
            return records[0][parent]
    whole = next((record["id"] for record in records if "#t=" not in record["id"]), None)
    return whole if whole is not None else records[0]["id"].rpartition("#t=")[0]


def _renamed(record: dict[str, Any], old_id: str, new_id: str, source: str) -> dict[str, Any]:
    """``record`` (of the input ``old_id``, or of one of its frames or segments: ``OLD#t=...``) for the
    input ``new_id``, key order kept."""
    renamed = dict(record)
    if record["id"] == old_id or record["id"].startswith(old_id + "#"):
        renamed["id"] = new_id + record["id"][len(old_id) :]
    for parent in ("video", "audio"):
        if record.get(parent) == old_id:
            renamed[parent] = new_id
    if "source" in record:
        renamed["source"] = source
    return renamed


def _match(
    item: InputItem,
    manifest: Sequence[dict[str, Any]],
    by_path: dict[str, list[int]],
    by_digest: dict[str, list[int]],
    by_text: dict[str, list[int]],
) -> tuple[list[int] | None, dict[str, Any] | None, bool]:
    """``(old rows or None, the item's manifest entry if known, matched by content)``."""
    if item.error:
        return None, None, False  # run it through the pipeline, which reports it as the fresh run would
    if item.modality == "text":
        return by_text.get(item.text or ""), {"id": item.id}, False
    assert item.path is not None
    try:
        status = os.stat(item.path)
    except OSError:
        return None, None, False
    rows = by_path.get(item.path)
    if rows is not None:
        entry = manifest[rows[0]]
        if entry["size"] == status.st_size and entry["mtime_ns"] == status.st_mtime_ns:
            return rows, {**entry, "id": item.id}, False
    try:
        current = file_entry(item.id, item.path)
    except OSError:
        return None, None, False
    rows = by_digest.get(current["blake2b"])
    return rows, current, rows is not None

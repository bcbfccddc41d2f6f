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
from pathlib import Path
from typing import Any

from mmcli.errors import UsageError, option
from mmcli.io.inputs import InputItem
from mmcli.io.manifest import file_entry, read_manifest, read_run_settings


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


@dataclass
class Previous:
    """The output ``--update`` starts from: its records (error records aside) and, for a feature set,
    its ``vectors``; their file ``manifest``; the paths of files that ``failed`` in it; and whether
    ``videos`` are involved (in it or in the current inputs), whose sampling must then match."""

    output: Path
    records: list[dict[str, Any]]
    manifest: list[dict[str, Any]]
    failed: set[str]
    videos: bool
    vectors: Any = None


def _manifest_of(output: Path, items: Sequence[InputItem] = ()) -> list[dict[str, Any]]:
    for item in items:  # an update compares files on this disk (path, size, mtime, content)
        if item.blob is not None:
            raise UsageError(
                f"{option('update')} compares local files with those {output} was made from; {item.source} is "
                f"inside a shard or a Parquet table, or at a URL: rebuild it with {option('overwrite')} instead"
            )
    manifest = read_manifest(output)
    if manifest is None:
        raise UsageError(
            f"{output} has no file manifest to compare against; rebuild it once with {option('overwrite')}"
        )
    return manifest


def _has_videos(items: Sequence[InputItem]) -> bool:
    return any(item.modality == "video" for item in items)


def previous_feature_set(output: Path, items: Sequence[InputItem], model: str) -> Previous:
    """The feature set and manifest ``--update`` starts from, refused early where it cannot be updated."""
    from mmcli.io.features import feature_set_errors, read_feature_set

    old = read_feature_set(output)
    manifest = _manifest_of(output, items)
    if old.models != {model}:
        raise UsageError(
            f"{output} was made with {', '.join(sorted(old.models))}; "
            f"{option('update')} must use the same {option('model')}"
        )
    failed = {record.get("source") for record in feature_set_errors(output)}
    videos = any(record.get("modality") in ("video", "frame") for record in old.records)
    return Previous(output, old.records, manifest, failed, videos or _has_videos(items), old.vectors)


def previous_records(output: Path, items: Sequence[InputItem]) -> Previous:
    """The records (captions) and manifest ``--update`` starts from, refused early where they cannot be updated."""
    from mmcli.io.jsonl import read_jsonl

    manifest = _manifest_of(output, items)
    records = [record for _, record in read_jsonl(output)]
    kept = [record for record in records if "error" not in record]
    failed = {record.get("source") for record in records if "error" in record}
    videos = any("summary" in record or "t" in record for record in kept)
    return Previous(output, kept, manifest, failed, videos or _has_videos(items))


# Settings that cannot make old and new rows disagree where no video is involved: how videos are sampled.
VIDEO_SETTINGS = frozenset({"video"})


def check_same_settings(output: Path, settings: dict[str, Any], *, videos: bool = True) -> None:
    """Refuse to update ``output`` with settings that would make its old and new parts disagree.
    ``videos``: whether the output or the inputs hold videos (else their sampling is moot)."""
    stored = read_run_settings(output)
    if stored is None:  # written before runs recorded their settings
        return
    ignored = frozenset() if videos else VIDEO_SETTINGS
    compared = [key for key in settings if key not in ignored and key in stored]
    stored = flat_settings({key: stored[key] for key in compared})
    settings = flat_settings({key: settings[key] for key in compared})
    differing = [key for key in {**stored, **settings} if stored.get(key) != settings.get(key)]
    if differing:
        was = ", ".join(f"{key}={stored.get(key)!r}" for key in differing)
        now = ", ".join(f"{key}={settings.get(key)!r}" for key in differing)
        raise UsageError(
            f"{output} was made with {was}, this run has {now}; {option('update')} must use the same settings "
            f"(give the same flags again, or rebuild it with {option('overwrite')})"
        )


def flat_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Nested settings as ``video.pool``-style keys, so a refusal names just the one that differs."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update((f"{key}.{inner}", item) for inner, item in flat_settings(value).items())
        else:
            flat[key] = value
    return flat


# Settings a refusal names as they are, not as a flag (they are no flag, or not one by that name).
NOT_FLAGS = frozenset({"command", "inputs", "texts", "device", "settings"})


def describe_differences(stored: dict[str, Any], now: dict[str, Any], *, first_only: bool = False) -> str:
    """``--batch-size was 32, now 8`` for each setting (nested ones as ``video.pool``) that differs
    between a stored run and this one, compared as JSON, as stored settings were written."""
    import json

    was, wanted = flat_settings(stored or {}), flat_settings(json.loads(json.dumps(now)))
    keys = [key for key in {**was, **wanted} if was.get(key) != wanted.get(key)]
    shown = [
        f"{key if '.' in key or key in NOT_FLAGS else option(key)} was {was.get(key)!r}, now {wanted.get(key)!r}"
        for key in (keys[:1] if first_only else keys)
    ]
    return "; ".join(shown)


def input_id(outcome: Any) -> str:
    """The id of the input an outcome belongs to: a video's frames and segments, and a recording's
    windows, name it in ``extra``."""
    item = outcome.item
    if item.modality in ("frame", "segment", "window"):
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


def file_groups(manifest: Sequence[dict[str, Any]]) -> list[list[int]]:
    """Old rows grouped by the file they came from: consecutive rows with one path (a video's) share a
    group; every other row (a text) is a group of its own."""
    groups: list[list[int]] = []
    for row, entry in enumerate(manifest):
        path = entry.get("path")
        if groups and path is not None and manifest[groups[-1][0]].get("path") == path:
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


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
        elif record.get("modality") == "text":
            by_text.setdefault(record["source"], rows)
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

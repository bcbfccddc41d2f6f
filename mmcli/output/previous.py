"""What an earlier run left in an output, read before a run replaces it: the records (and rows) an
``--update`` carries over, their file manifest, and the settings the new run must share."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmcli.errors import UsageError, option
from mmcli.items import InputItem
from mmcli.jsonl import read_jsonl
from mmcli.output import sharded
from mmcli.output.feature_set import feature_set_errors, read_feature_set, read_output_manifest, read_output_settings
from mmcli.output.journal import STATE_FILE
from mmcli.settings import flat_settings


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
    manifest = read_output_manifest(output)
    if manifest is None:
        raise UsageError(
            f"{output} has no file manifest to compare against; rebuild it once with {option('overwrite')}"
        )
    return manifest


def _has_videos(items: Sequence[InputItem]) -> bool:
    return any(item.modality == "video" for item in items)


def previous_feature_set(output: Path, items: Sequence[InputItem], model: str) -> Previous:
    """The feature set and manifest ``--update`` starts from, refused early where it cannot be updated."""
    old = read_feature_set(output)
    manifest = _manifest_of(output, items)
    if old.models != {model}:
        raise UsageError(
            f"{output} was made with {', '.join(sorted(old.models))}; "
            f"{option('update')} must use the same {option('model')}"
        )
    failed = {record.get("source") for record in feature_set_errors(output)}
    videos = any(record.get("modality") in ("video", "frame", "clip") for record in old.records)
    return Previous(output, old.records, manifest, failed, videos or _has_videos(items), old.vectors)


def previous_records(output: Path, items: Sequence[InputItem]) -> Previous:
    """The records (captions) and manifest ``--update`` starts from, refused early where they cannot be updated."""
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
    stored = read_output_settings(output)
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


def kept_progress(folder: Path) -> bool:
    """Whether ``folder`` holds progress a rerun resumes from: a journal's committed state, or a
    sharded set's unfinished index listing finished parts."""
    if (folder / STATE_FILE).exists():
        return True
    try:
        return bool(json.loads(sharded.index_path(folder).read_text(encoding="utf-8")).get("parts"))
    except (OSError, ValueError, AttributeError):
        return False

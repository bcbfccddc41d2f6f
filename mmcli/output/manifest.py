"""The file manifest beside an output (``NAME.files.jsonl``): the settings of the run that wrote it,
then for each row or record the file it came from (size, mtime, content hash), so ``--update`` can
tell unchanged, renamed and new files apart.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmcli.jsonl import dumps, read_jsonl
from mmcli.output.atomic import settle

MANIFEST_SETTINGS = "settings"


def manifest_path(npy: Path) -> Path:
    """``feats.npy`` -> ``feats.files.jsonl``: per row, the file it came from (size, mtime, content hash),
    so ``--update`` can tell unchanged, renamed and new files apart."""
    return npy.with_suffix(".files.jsonl")


def file_entry(item_id: str, path: str | None) -> dict[str, Any]:
    """A manifest line: the file's size, modification time and BLAKE2b digest (texts have no file)."""
    import hashlib

    if path is None:
        return {"id": item_id}
    status = os.stat(path)
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"id": item_id, "path": path, "size": status.st_size, "mtime_ns": status.st_mtime_ns,
            "blake2b": digest.hexdigest()}  # fmt: skip


class FileEntries:
    """Manifest entries for output rows; the rows of one video (frames, segments) share one hash of
    the file, computed once."""

    def __init__(self) -> None:
        self._last: tuple[str | None, dict[str, Any]] = (None, {})

    def entry(self, item: Any) -> dict[str, Any]:
        """The entry for a row made from ``item`` (an :class:`~mmcli.io.inputs.InputItem`)."""
        if item.path is None or item.path != self._last[0]:
            self._last = (item.path, file_entry(item.id, item.path))
        return {**self._last[1], "id": item.id}

    def remember(self, entry: dict[str, Any]) -> None:
        """Use ``entry`` (a :func:`file_entry` computed already) for the rows of its file that follow."""
        if "path" in entry:
            self._last = (entry["path"], entry)


def read_manifest(npy: Path) -> list[dict[str, Any]] | None:
    """The file entries of the manifest beside a one-file output, or None when there is none (a
    sharded set's are its parts': :func:`mmcli.output.previous.read_output_manifest`)."""
    settle(npy)
    path = manifest_path(npy)
    if not path.exists():
        return None
    return [record for _, record in read_jsonl(path) if MANIFEST_SETTINGS not in record]


def read_run_settings(npy: Path) -> dict[str, Any] | None:
    """The settings of the run that wrote a one-file output (its manifest's first line), if it recorded them."""
    settle(npy)
    path = manifest_path(npy)
    if not path.exists():
        return None
    for _, record in read_jsonl(path):
        return record.get(MANIFEST_SETTINGS)
    return None


def manifest_header(settings: dict[str, Any]) -> bytes:
    """The manifest's first line: the settings that decide the output, which ``--update`` must share."""
    return (dumps({MANIFEST_SETTINGS: settings}) + "\n").encode("utf-8")


def count_entries(manifest: Path) -> int:
    """File entries in a (partial) manifest: its lines, less the settings line."""
    with open(manifest, "rb") as handle:
        data = handle.read()
    return data.count(b"\n") - int(data.startswith(b'{"' + MANIFEST_SETTINGS.encode()))


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

"""The items a run processes and the names every layer shares for them: the bottom of the package,
importing nothing of mmcli but its errors."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

STDIN = "-"


# Items that are pieces of one input (a video's sampled frames or clips, a recording's windows), not
# inputs of their own: progress and resumed runs count the input, once, at its end marker.
PART_MODALITIES = frozenset({"frame", "clip", "window"})

# A text's ``source`` in a record (a sidecar row, a hit, an error line): its first characters, which
# keep a paragraph whole, and a flag where more was cut; the model reads the text itself, bounded by
# what the model can read (see mmcli.encoders.base.model_prefix).
SOURCE_CHARS = 4096


@dataclass
class InputItem:
    """One thing to process: an image file or a text, with the record fields it carries along."""

    id: str
    modality: str  # "image" or "text"
    source: str  # the path as given, or the text itself
    path: str | None = None
    text: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # set when discovery already knows the item cannot be processed
    # Where the bytes are when they are not a local file: a shard member, a Parquet cell, a URL
    # (a frozen reference from mmcli.io.remote or mmcli.io.parquet, read when the item is decoded).
    blob: Any = None

    def media(self) -> str | bytes:
        """What :func:`~mmcli.media.images.load_image` decodes: the local path, or the blob's bytes
        (read now, so on the worker thread that decodes the item)."""
        if self.blob is not None:
            return self.blob.read()
        assert self.path is not None
        return self.path

    def record(self, *, modality: bool = True, **fields: Any) -> dict[str, Any]:
        """The output record: ``id`` (and ``modality``), ``fields`` in order, ``source`` (unless placed
        in ``fields``), then the item's extra keys, which never override the others."""
        record: dict[str, Any] = {"id": self.id, "modality": self.modality} if modality else {"id": self.id}
        record.update(fields)
        if "source" not in record:
            record["source"] = self.shown_source
            if self.shown_source is not self.source:
                record["source_truncated"] = True
        reserved = {*record, "id", "modality", "source"}
        record.update((k, v) for k, v in self.extra.items() if k not in reserved)
        return record

    def error_record(self, message: str) -> dict[str, Any]:
        cut = {"source_truncated": True} if self.shown_source is not self.source else {}
        return {"id": self.id, "source": self.shown_source, **cut, "error": message}

    @property
    def shown_source(self) -> str:
        """``source`` as records and messages carry it: a text's first :data:`SOURCE_CHARS` characters."""
        if self.modality == "text" and isinstance(self.source, str) and len(self.source) > SOURCE_CHARS:
            return self.source[:SOURCE_CHARS]
        return self.source


def path_sort_key(path: str) -> list[str]:
    """Order by path components, so ``a/b.jpg`` sorts with folder ``a`` and before ``a-b.jpg``."""
    return path.split(os.sep)

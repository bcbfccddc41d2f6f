"""Turn command-line inputs (files, folders, globs, ``-``, texts) into a stream of items.

Discovery is lazy for stdin so a pipeline can feed mmcli as it goes; folders are walked in
sorted order so the same command always gives the same rows in the same order.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import IO, Any

from mmcli.errors import InputError, UsageError, option
from mmcli.io.jsonl import parse_line, text_lines
from mmcli.media.images import is_image_path
from mmcli.media.video import is_video_path

STDIN = "-"
JSONL_SUFFIXES = (".jsonl", ".ndjson")


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

    def record(self, *, modality: bool = True, **fields: Any) -> dict[str, Any]:
        """The output record: ``id`` (and ``modality``), ``fields`` in order, ``source`` (unless placed
        in ``fields``), then the item's extra keys, which never override the others."""
        record: dict[str, Any] = {"id": self.id, "modality": self.modality} if modality else {"id": self.id}
        record.update(fields)
        record.setdefault("source", self.source)
        reserved = {*record, "id", "modality", "source"}
        record.update((k, v) for k, v in self.extra.items() if k not in reserved)
        return record

    def error_record(self, message: str) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "error": message}


def discover_images(
    inputs: Iterable[str], *, stdin: IO[str] | None = None, videos: bool = False
) -> Iterator[InputItem]:
    """Image items (and with ``videos``, video items) from files, folders (recursive, sorted), glob
    patterns and ``-``.

    Files in a folder that are not images (or videos) by extension are skipped silently; a path
    named explicitly is always an item, so a wrong one becomes an error record rather than vanishing.
    """

    def item(path: str) -> InputItem:
        modality = "video" if videos and is_video_path(path) else "image"
        return InputItem(id=path, modality=modality, source=path, path=path)

    for given in inputs:
        if given == STDIN:
            yield from (
                replace(found, modality="video") if videos and found.path and is_video_path(found.path) else found
                for found in _image_records_from_stream(stdin or sys.stdin, "<stdin>")
            )
        elif os.path.isdir(given):
            yield from map(item, walk_images(given, videos=videos))
        elif os.path.lexists(given):
            yield item(given)
        elif glob.has_magic(given):
            found: set[str] = set()  # `**/*` matches folders and the files inside them: list each once
            for path in glob.glob(given, recursive=True):
                if os.path.isdir(path):
                    found.update(walk_images(path, videos=videos))
                elif is_image_path(path) or (videos and is_video_path(path)):
                    found.add(path)
            if not found:
                yield _missing(given, "no image matches this pattern")
            yield from map(item, sorted(found, key=path_sort_key))
        else:
            yield _missing(given, "no such file or directory")


def discover_texts(
    inputs: Iterable[str],
    texts: Iterable[str] = (),
    *,
    field_name: str = "text",
    stdin: IO[str] | None = None,
) -> Iterator[InputItem]:
    """Text items from ``--text`` values, ``.txt`` files (a text per line), JSONL files and ``-``.

    A bare text's id is its line number; when several sources are given, the id is prefixed with
    the source (``notes.txt:3``, ``text:2``) so ids stay unique and predictable.
    """
    inputs = list(inputs)
    texts = list(texts)
    several = len(inputs) + (1 if texts else 0) > 1
    for number, text in enumerate(texts, start=1):
        yield _text_item(text, number, "text" if several else None, {})
    for given in inputs:
        prefix = given if several else None
        if given == STDIN:
            yield from _texts_from_stream(stdin or sys.stdin, "<stdin>", prefix, field_name)
            continue
        if os.path.isdir(given):
            raise UsageError(f"{given} is a folder; text inputs are .txt or .jsonl files, or -")
        try:
            handle = open(given, encoding="utf-8", errors="surrogateescape")
        except FileNotFoundError:
            raise UsageError(f"{given}: no such file") from None
        except OSError as exc:
            raise UsageError(f"{given}: cannot read ({exc.strerror})") from None
        with handle:
            yield from _texts_from_stream(handle, given, prefix, field_name)


def queries_from_stream(stream: IO[str], name: str) -> Iterator[InputItem]:
    """Query items: JSONL records with ``text`` or ``path`` (and ``id``), or bare text lines."""
    for number, line in text_lines(stream, name):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if not (name.endswith(JSONL_SUFFIXES) or line.lstrip().startswith("{")):
            yield _text_item(line, number, None, {})
            continue
        record = parse_line(line, f"{name}:{number}")
        extra = {k: v for k, v in record.items() if k not in ("id", "text", "path")}
        if isinstance(record.get("text"), str):
            item = _text_item(record["text"], number, None, extra)
        elif isinstance(record.get("path"), str):
            item = InputItem(
                id=record["path"], modality="image", source=record["path"], path=record["path"], extra=extra
            )
        else:
            raise InputError(f"{name}:{number}: a query record needs a 'text' or a 'path' field")
        if "id" in record:
            item.id = str(record["id"])
        yield item


def walk_images(root: str, *, videos: bool = False) -> list[str]:
    """All image (and with ``videos``, video) files under ``root``, sorted; symlinked folders
    followed once, loops broken."""
    found: list[str] = []
    seen: set[tuple[int, int]] = set()

    def visit(folder: str) -> None:
        try:
            stat = os.stat(folder)
        except OSError:
            return
        key = (stat.st_dev, stat.st_ino)
        if key in seen:
            return
        seen.add(key)
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError:
            return
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                continue
            if is_dir:
                visit(entry.path)
            elif is_image_path(entry.name) or (videos and is_video_path(entry.name)):
                found.append(entry.path)

    visit(root.rstrip(os.sep) if root not in (os.sep, "") else root)
    return sorted(found, key=path_sort_key)


def path_sort_key(path: str) -> list[str]:
    """Order by path components, so ``a/b.jpg`` sorts with folder ``a`` and before ``a-b.jpg``."""
    return path.split(os.sep)


def _missing(given: str, reason: str) -> InputItem:
    return InputItem(id=given, modality="image", source=given, path=given, error=reason)


def _image_records_from_stream(stream: IO[str], name: str) -> Iterator[InputItem]:
    for number, line in text_lines(stream, name, paths=True):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            record = parse_line(line, f"{name}:{number}")
            path = record.get("path")
            if not isinstance(path, str) or not path:
                raise InputError(f"{name}:{number}: record has no 'path' field")
            extra = {k: v for k, v in record.items() if k not in ("path", "id")}
            item_id = str(record.get("id", path))
            yield InputItem(id=item_id, modality="image", source=path, path=path, extra=extra)
        else:
            yield InputItem(id=line, modality="image", source=line, path=line)


def _texts_from_stream(stream: IO[str], name: str, prefix: str | None, field_name: str) -> Iterator[InputItem]:
    as_jsonl = name.endswith(JSONL_SUFFIXES)
    for number, line in text_lines(stream, name):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if as_jsonl or (name == "<stdin>" and line.lstrip().startswith("{")):
            record = parse_line(line, f"{name}:{number}")
            text = record.get(field_name)
            if not isinstance(text, str):
                raise InputError(f"{name}:{number}: record has no text field {field_name!r} (see {option('field')})")
            extra = {k: v for k, v in record.items() if k not in (field_name, "id")}
            item = _text_item(text, number, prefix, extra)
            if "id" in record:
                item.id = str(record["id"])
            yield item
        else:
            yield _text_item(line, number, prefix, {})


def _text_item(text: str, number: int, prefix: str | None, extra: dict[str, Any]) -> InputItem:
    item_id = f"{prefix}:{number}" if prefix else str(number)
    return InputItem(id=item_id, modality="text", source=text, text=text, extra=extra)


def unique_ids(items: Iterable[InputItem]) -> Iterator[InputItem]:
    """``items`` with the first of each id kept and every later one turned into a failed item, so an
    output never holds two rows or records under one id (the same file given twice, repeated ids on
    stdin) and nothing that was asked for goes unreported. Lazy, for stdin."""
    first: dict[str, str] = {}
    for item in items:
        if item.id in first and not item.error:
            yield replace(item, error=f"duplicate id {item.id!r}: an earlier input ({first[item.id]}) has it")
            continue
        first.setdefault(item.id, item.source)
        yield item

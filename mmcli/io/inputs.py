"""Turn command-line inputs (files, folders, globs, ``-``, texts) into a stream of items.

Discovery is lazy for stdin so a pipeline can feed mmcli as it goes; folders are walked in
sorted order so the same command always gives the same rows in the same order.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import IO, Any

from mmcli.errors import InputError, UsageError, option
from mmcli.items import STDIN, InputItem, path_sort_key
from mmcli.jsonl import parse_line, text_lines
from mmcli.media.images import is_image_path
from mmcli.media.video import is_video_path

JSONL_SUFFIXES = (".jsonl", ".ndjson")


def discover_images(
    inputs: Iterable[str],
    *,
    stdin: IO[str] | None = None,
    videos: bool = False,
    columns: Any = None,
    audio: bool = False,
) -> Iterator[InputItem]:
    """Image items (and with ``videos``, video items) from files, folders (recursive, sorted), glob
    patterns, brace patterns (``data-{000..009}.tar``), URLs and ``-``. With ``audio``, the items are
    recordings instead (``modality: audio``): audio files, and videos for their soundtracks.

    Files in a folder that are not images (or videos) by extension are skipped silently; a path
    named explicitly is always an item, so a wrong one becomes an error record rather than vanishing.
    A ``.tar`` file (named, matched or met in a folder) is read as a webdataset shard, one item per
    sample; a ``.parquet`` file as a table of ``columns`` (a :class:`~mmcli.io.parquet.Columns`;
    in folders only when ``columns.image`` is given). See :mod:`mmcli.io`.
    """
    for given in inputs:
        if given == STDIN:
            for found in _image_records_from_stream(stdin or sys.stdin, "<stdin>"):
                path = found.path
                if audio:
                    yield replace(found, modality="audio")
                elif path is not None and _is_container(path, columns, text_mode=False):
                    yield from _container_items(path, columns, videos=videos, defaults=found.extra)
                elif path is not None and is_url(path):
                    yield replace(_url(path, videos=videos), id=found.id, extra=found.extra)
                elif videos and path and is_video_path(path):
                    yield replace(found, modality="video")
                else:
                    yield found
        else:
            yield from _discover_images(given, videos, columns, audio)


def _discover_images(given: str, videos: bool, columns: Any, audio: bool = False) -> Iterator[InputItem]:
    def item(path: str) -> InputItem:
        modality = "audio" if audio else "video" if videos and is_video_path(path) else "image"
        return InputItem(id=path, modality=modality, source=path, path=path)

    def named(path: str) -> Iterator[InputItem]:
        if not audio and _is_container(path, columns, text_mode=False, named=True):
            yield from _container_items(path, columns, videos=videos)
        elif is_url(path):
            yield replace(_url(path, videos=True), modality="audio") if audio else _url(path, videos=videos)
        else:
            yield item(path)

    def wanted(path: str) -> bool:
        if audio:
            return _is_audio_path(path) or is_video_path(path)
        return is_image_path(path) or (videos and is_video_path(path)) or _is_container(path, columns, text_mode=False)

    what = "audio or video file" if audio else "image"
    if is_url(given) and not has_braces(given):
        from mmcli.io.remote import is_media_url, is_remote_folder, walk_url

        web = given.lower().startswith(("http://", "https://"))  # no folders, and ? starts a query
        pattern = not web and glob.has_magic(given)
        if not pattern and (
            _is_container(given, columns, text_mode=False, named=True) or is_media_url(given, videos=videos)
        ):
            yield from named(given)
        elif pattern or (not web and is_remote_folder(given)):
            found = walk_url(given, wanted)
            if not found:
                yield _missing(given, f"no {what} matches this pattern" if pattern else f"no {what} found")
            for path in found:
                yield from named(path)
        else:
            yield from named(given)
    elif os.path.isdir(given):
        also = () if audio else _container_suffixes(columns, text_mode=False)
        for path in walk_images(given, videos=videos, also=also, audio=audio):
            yield from named(path)
    elif os.path.lexists(given):
        yield from named(given)
    elif has_braces(given):
        for expanded in expand_braces(given):
            yield from _discover_images(expanded, videos, columns, audio)
    elif glob.has_magic(given):
        found: set[str] = set()  # `**/*` matches folders and the files inside them: list each once
        for path in glob.glob(given, recursive=True):
            if os.path.isdir(path):
                found.update(
                    walk_images(path, videos=videos, also=_container_suffixes(columns, text_mode=False), audio=audio)
                )
            elif wanted(path):
                found.add(path)
        if not found:
            yield _missing(given, f"no {what} matches this pattern")
        for path in sorted(found, key=path_sort_key):
            yield from named(path)
    else:
        yield _missing(given, "no such file or directory")


def _container_suffixes(columns: Any, *, text_mode: bool) -> tuple[str, ...]:
    """The containers a folder walk reads besides images: shards always, tables when their column is named."""
    from mmcli.io.parquet import PARQUET_SUFFIX
    from mmcli.io.webdataset import TAR_SUFFIX

    column = getattr(columns, "text" if text_mode else "image", None) if columns is not None else None
    return (TAR_SUFFIX, PARQUET_SUFFIX) if column else (TAR_SUFFIX,)


def _is_container(path: str, columns: Any, *, text_mode: bool, named: bool = False) -> bool:
    """A shard, or a table (always when ``named`` explicitly: it then needs its column flag)."""
    from mmcli.io.parquet import is_parquet_path
    from mmcli.io.webdataset import is_webdataset_path

    if is_webdataset_path(path):
        return True
    return is_parquet_path(path) and (
        named or os.path.splitext(path)[1].lower() in _container_suffixes(columns, text_mode=text_mode)
    )


def _container_items(
    path: str, columns: Any, *, videos: bool = False, text_mode: bool = False, defaults: dict[str, Any] | None = None
) -> Iterator[InputItem]:
    from mmcli.io.parquet import Columns, parquet_items
    from mmcli.io.webdataset import is_webdataset_path, webdataset_items

    if is_webdataset_path(path):
        return webdataset_items(path, text_mode=text_mode, videos=videos, defaults=defaults)
    return parquet_items(path, columns or Columns(), text_mode=text_mode, videos=videos)


def _url(url: str, *, videos: bool) -> InputItem:
    from mmcli.io.remote import url_item

    return url_item(url, videos=videos)


def is_url(name: str) -> bool:
    """Whether ``name`` is a URL (``scheme://...``), read through fsspec, rather than a local path."""
    from mmcli.io.remote import is_url as check

    return check(name)


def has_braces(name: str) -> bool:
    if "{" not in name:
        return False
    from mmcli.io.patterns import has_braces as check

    return check(name)


def expand_braces(name: str) -> list[str]:
    from mmcli.io.patterns import expand_braces as expand

    return expand(name)


def discover_texts(
    inputs: Iterable[str],
    texts: Iterable[str] = (),
    *,
    field_name: str = "text",
    stdin: IO[str] | None = None,
    columns: Any = None,
    on_note: Callable[[str], None] | None = None,
) -> Iterator[InputItem]:
    """Text items from ``--text`` values, ``.txt`` files (a text per line), JSONL files, ``-``,
    webdataset shards (their ``txt`` members, id the sample's key) and Parquet tables (``columns.text``).

    A bare text's id is its line number; when several sources are given, the id is prefixed with
    the source (``notes.txt:3``, ``text:2``) so ids stay unique and predictable. A JSONL record whose
    ``field_name`` is a list gives a text per element (ids ``ID#1``, ``ID#2``, ..., with ``parent``:
    the record's id); records without the field, such as the summary and error records another
    command's output holds beside its results, are skipped, and ``on_note`` hears how many.
    """
    inputs = [expanded for given in inputs for expanded in _braces_unless_present(given)]
    texts = list(texts)
    several = len(inputs) + (1 if texts else 0) > 1
    for number, text in enumerate(texts, start=1):
        yield _text_item(text, number, "text" if several else None, {})
    for given in inputs:
        prefix = given if several else None
        if given == STDIN:
            yield from _texts_from_stream(stdin or sys.stdin, "<stdin>", prefix, field_name, on_note)
            continue
        if _is_container(given, columns, text_mode=True, named=True):
            yield from _container_items(given, columns, text_mode=True)
            continue
        if os.path.isdir(given):
            containers = [p for p in walk_images(given, also=_container_suffixes(columns, text_mode=True))
                          if not is_image_path(p)]  # fmt: skip
            if not containers:
                raise UsageError(
                    f"{given} is a folder; text inputs are .txt or .jsonl files, shards, Parquet tables, or -"
                )
            for path in containers:
                yield from _container_items(path, columns, text_mode=True)
            continue
        try:
            if is_url(given):
                from mmcli.io.remote import filesystem

                fs, remote = filesystem(given)
                handle = fs.open(remote, "rt", encoding="utf-8", errors="surrogateescape")
            else:
                handle = open(given, encoding="utf-8", errors="surrogateescape")
        except FileNotFoundError:
            raise UsageError(f"{given}: no such file") from None
        except OSError as exc:
            raise UsageError(f"{given}: cannot read ({exc.strerror or exc})") from None
        with handle:
            yield from _texts_from_stream(handle, given, prefix, field_name, on_note)


def _braces_unless_present(given: str) -> list[str]:
    if given == STDIN or os.path.lexists(given) or not has_braces(given):
        return [given]
    return expand_braces(given)


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


def walk_images(root: str, *, videos: bool = False, also: tuple[str, ...] = (), audio: bool = False) -> list[str]:
    """All image (and with ``videos``, video) files under ``root``, sorted; symlinked folders
    followed once, loops broken. ``also``: further extensions to list (``.tar`` shards ...). With
    ``audio``, the audio and video files instead of the images."""
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
            elif (
                (_is_audio_path(entry.name) or is_video_path(entry.name))
                if audio
                else is_image_path(entry.name)
                or (videos and is_video_path(entry.name))
                or (also and os.path.splitext(entry.name)[1].lower() in also)
            ):
                found.append(entry.path)

    visit(root.rstrip(os.sep) if root not in (os.sep, "") else root)
    return sorted(found, key=path_sort_key)


def _is_audio_path(path: str) -> bool:
    from mmcli.media.audio import is_audio_path  # the audio module builds on this one's items

    return is_audio_path(path)


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


def _texts_from_stream(
    stream: IO[str], name: str, prefix: str | None, field_name: str, on_note: Callable[[str], None] | None = None
) -> Iterator[InputItem]:
    as_jsonl = name.endswith(JSONL_SUFFIXES)
    records = skipped = 0
    for number, line in text_lines(stream, name):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if as_jsonl or (name == "<stdin>" and line.lstrip().startswith("{")):
            records += 1
            record = parse_line(line, f"{name}:{number}")
            value = record.get(field_name)
            if value is None or value == []:
                skipped += 1
                continue
            texts = value if isinstance(value, list) else [value]
            if not all(isinstance(text, str) for text in texts):
                raise InputError(
                    f"{name}:{number}: the field {field_name!r} is {type(value).__name__}, not a text or a list "
                    f"of texts (see {option('field')})"
                )
            extra = {k: v for k, v in record.items() if k not in (field_name, "id")}
            own = str(record["id"]) if "id" in record else _line_id(number, prefix)
            if not isinstance(value, list):
                yield InputItem(id=own, modality="text", source=value, text=value, extra=extra)
                continue
            for position, text in enumerate(texts, start=1):
                yield InputItem(id=f"{own}#{position}", modality="text", source=text, text=text,
                                extra={**extra, "parent": own})  # fmt: skip
        else:
            yield _text_item(line, number, prefix, {})
    if skipped and records == skipped:
        raise InputError(f"{name}: no record has a text field {field_name!r} (see {option('field')})")
    if skipped and on_note is not None:
        on_note(f"{name}: skipped {skipped} of {records} records without {field_name!r} (summary or error records)")


def _line_id(number: int, prefix: str | None) -> str:
    return f"{prefix}:{number}" if prefix else str(number)


def _text_item(text: str, number: int, prefix: str | None, extra: dict[str, Any]) -> InputItem:
    return InputItem(id=_line_id(number, prefix), modality="text", source=text, text=text, extra=extra)


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

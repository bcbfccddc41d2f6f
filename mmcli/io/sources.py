"""Inputs that are not loose local files: webdataset ``.tar`` shards, Parquet tables and fsspec URLs.

Discovery lists where each item's bytes are (a :class:`ByteRange` in a shard or a remote file, a
:class:`ParquetCell` in a table) without reading them; the bytes are read when the item is decoded,
on the pipeline's worker threads, so a 100 GB shard set costs an index in memory, not its images.
Both references are frozen dataclasses of plain values: items pickle with plain :mod:`pickle` (a
process-based backend can ship them) and reopen their source wherever they are decoded.

URLs (``s3://``, ``gs://``, ``hf://``, ``http(s)://``, ``file://``, ...) are read through fsspec,
which finds credentials as it always does (the environment, ``~/.aws``, ``gcloud`` ...) and takes
per-protocol settings from ``FSSPEC_<PROTOCOL>_<KWARG>`` variables (``FSSPEC_S3_ENDPOINT_URL``).
fsspec, s3fs and pyarrow are imported only when such an input is met.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from mmcli.errors import ItemError, UsageError, option
from mmcli.media.images import IMAGE_EXTENSIONS, is_image_path
from mmcli.media.video import VIDEO_EXTENSIONS, is_video_path

if TYPE_CHECKING:
    from mmcli.items import InputItem

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
SHARD_SUFFIX = ".tar"
PARQUET_SUFFIX = ".parquet"
# webdataset members that name a sample's picture, in the order one is chosen when a sample has several.
SHARD_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", *sorted(e[1:] for e in IMAGE_EXTENSIONS))
SHARD_VIDEO_EXTENSIONS = ("mp4", "webm", *sorted(e[1:] for e in VIDEO_EXTENSIONS))
_CHUNK = 1 << 20


def is_url(name: str) -> bool:
    """Whether ``name`` is a URL (``scheme://...``) rather than a local path."""
    return bool(_URL.match(name))


def _suffix(name: str) -> str:
    """The lower-cased extension of a path or URL, query string aside."""
    if is_url(name):
        name = name.split("?", 1)[0]
    return os.path.splitext(name)[1].lower()


def is_shard_path(name: str) -> bool:
    """A webdataset shard, judged by its name (``.tar``; compressed tars allow no random access)."""
    return _suffix(name) == SHARD_SUFFIX


def is_parquet_path(name: str) -> bool:
    return _suffix(name) == PARQUET_SUFFIX


# -- brace patterns ------------------------------------------------------------------------------------

_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?$")


def expand_braces(pattern: str) -> list[str]:
    """Expand shell-style braces as webdataset (and bash) do: ``a{1,2}`` -> ``a1 a2``;
    ``data-{000..002}.tar`` -> ``data-000.tar data-001.tar data-002.tar`` (zero-padded to the
    bounds' width when a bound has a leading zero; an optional step ``{0..10..5}``; nesting).
    Braces that hold neither a comma nor a range stay as they are."""
    start = pattern.find("{")
    while start != -1:
        depth, end = 0, -1
        for index in range(start, len(pattern)):
            if pattern[index] == "{":
                depth += 1
            elif pattern[index] == "}":
                depth -= 1
                if depth == 0:
                    end = index
                    break
        if end == -1:
            return [pattern]
        choices = _alternatives(pattern[start + 1 : end])
        if choices is not None:
            prefix, rests = pattern[:start], expand_braces(pattern[end + 1 :])
            return [prefix + head + rest for choice in choices for head in expand_braces(choice) for rest in rests]
        start = pattern.find("{", start + 1)
    return [pattern]


def _alternatives(body: str) -> list[str] | None:
    parts, depth, last = [], 0, 0
    for index, char in enumerate(body):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(body[last:index])
            last = index + 1
    if parts:
        return [*parts, body[last:]]
    match = _RANGE.match(body)
    if not match:
        return None
    low, high = int(match.group(1)), int(match.group(2))
    step = abs(int(match.group(3) or 1)) or 1
    padded = any(re.match(r"^-?0\d", bound) for bound in match.group(1, 2))
    width = max(len(match.group(1)), len(match.group(2))) if padded else 0
    numbers = range(low, high + 1, step) if low <= high else range(low, high - 1, -step)
    return [f"{number:0{width}d}" for number in numbers]


def has_braces(pattern: str) -> bool:
    return expand_braces(pattern) != [pattern]


# -- fsspec --------------------------------------------------------------------------------------------


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path within it; a missing backend is a usage error."""
    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise UsageError(f"{url}: reading URLs needs fsspec: pip install 'mmcli[scale]'") from None
    try:
        return url_to_fs(url)
    except ImportError as exc:
        raise UsageError(f"{url}: this protocol needs a package that is not installed ({exc})") from None
    except ValueError as exc:
        raise UsageError(f"{url}: {exc}") from None


def _io_error(exc: BaseException) -> str:
    """A reading failure (local or remote) as a short reason."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    return f"cannot read: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}"


def open_binary(url: str) -> IO[bytes]:
    """A seekable binary file object on a local path or a URL."""
    if not is_url(url):
        return open(url, "rb")
    fs, path = filesystem(url)
    return fs.open(path, "rb")


@dataclass(frozen=True)
class ByteRange:
    """``size`` bytes from ``offset`` of the file at ``url`` (a local path or a URL); ``size=None``:
    the whole file. ``name`` (a shard member's name, or the file's) tells the format by its extension."""

    url: str
    offset: int = 0
    size: int | None = None
    name: str = ""

    @property
    def suffix(self) -> str:
        return _suffix(self.name or self.url)

    def read(self) -> bytes:
        """The bytes, or an :class:`ItemError` (missing, unreadable, or a shard cut short)."""
        try:
            if not is_url(self.url):
                with open(self.url, "rb") as handle:
                    handle.seek(self.offset)
                    data = handle.read() if self.size is None else handle.read(self.size)
            else:
                fs, path = filesystem(self.url)
                end = None if self.size is None else self.offset + self.size
                data = fs.cat_file(path, start=self.offset or None, end=end) if self.size != 0 else b""
                if self.size is not None and len(data) >= self.offset + self.size > self.size:
                    data = data[self.offset : self.offset + self.size]  # a server that ignores Range sent it all
        except UsageError:
            raise
        except Exception as exc:  # remote backends raise their own kinds (botocore, aiohttp ...)
            raise ItemError(_io_error(exc)) from None
        self._check(len(data))
        return data

    def copy_to(self, handle: IO[bytes]) -> None:
        """Write the bytes into ``handle`` a block at a time (a video need not fit in memory)."""
        try:
            with open_binary(self.url) as source:
                source.seek(self.offset)
                left, copied = self.size, 0
                while left is None or left > 0:
                    block = source.read(_CHUNK if left is None else min(_CHUNK, left))
                    if not block:
                        break
                    handle.write(block)
                    copied += len(block)
                    left = None if left is None else left - len(block)
        except UsageError:
            raise
        except Exception as exc:
            raise ItemError(_io_error(exc)) from None
        self._check(copied)

    def _check(self, length: int) -> None:
        if self.size is not None and length != self.size:
            raise ItemError(f"truncated: the shard ends {self.size - length} bytes into this member ({self.name})")


# Row groups read for decoding, kept a little while: consecutive rows decode from one read.
_ROW_GROUPS: OrderedDict[tuple[str, int, str], Any] = OrderedDict()
_ROW_GROUPS_LOCK = threading.Lock()
_ROW_GROUPS_KEPT = 2


@dataclass(frozen=True)
class ParquetCell:
    """The image bytes in row ``row`` of row group ``row_group`` of the Parquet file at ``url``: column
    ``column`` (a binary column, or a struct's ``field``); where that is null, the file at ``fallback``
    (the struct's ``path``, resolved as discovery did).

    Decoding reads the row group's one column (cached for the rows that follow), so memory follows
    the table's row-group size, never the whole table."""

    url: str
    row_group: int
    row: int
    column: str
    field: str | None = None
    fallback: str | None = None
    name: str = ""

    @property
    def suffix(self) -> str:
        return _suffix(self.name)

    def read(self) -> bytes:
        value = self._value()
        if value is None:
            if self.fallback is None:
                raise ItemError(f"no image bytes in column {self.column!r}")
            return ByteRange(self.fallback, name=self.fallback).read()
        if not isinstance(value, bytes):
            raise ItemError(f"column {self.column!r} holds {type(value).__name__}, not image bytes")
        return value

    def copy_to(self, handle: IO[bytes]) -> None:
        handle.write(self.read())

    def _value(self) -> Any:
        selected = f"{self.column}.{self.field}" if self.field else self.column
        key = (self.url, self.row_group, selected)
        with _ROW_GROUPS_LOCK:  # one reader at a time: a file object's position is shared
            values = _ROW_GROUPS.get(key)
            if values is None:
                try:
                    with open_binary(self.url) as handle:
                        table = _parquet_file(handle).read_row_group(self.row_group, columns=[selected])
                except UsageError:
                    raise
                except Exception as exc:
                    raise ItemError(f"cannot read row group {self.row_group}: {_io_error(exc)}") from None
                values = table.column(0)
                if self.field:
                    values = values.combine_chunks().field(self.field)
                _ROW_GROUPS[key] = values
                while len(_ROW_GROUPS) > _ROW_GROUPS_KEPT:
                    _ROW_GROUPS.popitem(last=False)
            else:
                _ROW_GROUPS.move_to_end(key)
        return values[self.row].as_py()


def _parquet_file(handle: IO[bytes]) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("reading Parquet needs pyarrow: pip install 'mmcli[scale]'") from None
    return pq.ParquetFile(handle)


# -- walking URLs ----------------------------------------------------------------------------------------


def walk_url(url: str, accept: Callable[[str], bool]) -> list[str]:
    """The files under a folder URL (or matching a glob URL) that ``accept`` takes, as URLs, sorted by
    path components like a local walk. A folder that cannot be listed is a usage error."""
    from mmcli.items import path_sort_key

    fs, path = filesystem(url)
    try:
        if any(char in path for char in "*?["):
            found = []
            for match in fs.glob(path):
                found += fs.find(match) if fs.isdir(match) else [match]
        else:
            found = fs.find(path)
    except Exception as exc:
        raise UsageError(f"{url}: cannot list it ({_io_error(exc)})") from None
    urls = [fs.unstrip_protocol(name) for name in found]
    return sorted((u for u in urls if accept(u)), key=lambda u: path_sort_key(u.replace("/", os.sep)))


def is_remote_folder(url: str) -> bool:
    """Whether a URL without a media extension names a folder (HTTP has none)."""
    if url.lower().startswith(("http://", "https://")):
        return False
    fs, path = filesystem(url)
    try:
        return bool(fs.isdir(path))
    except Exception:
        return False


# -- webdataset shards -----------------------------------------------------------------------------------

_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's base_plus_ext


def split_key(name: str) -> tuple[str | None, str | None]:
    """A member name as webdataset reads it: the key (the path up to the first ``.`` of the basename,
    folders kept) and the extension (the rest, lower-cased); ``(None, None)`` for a name without one."""
    match = _KEY.match(name)
    return (match.group(1), match.group(2).lower()) if match else (None, None)


def shard_items(
    shard: str, *, text_mode: bool = False, videos: bool = False, defaults: dict[str, Any] | None = None
) -> Iterator[InputItem]:
    """The samples of one webdataset shard as items, in member order.

    Consecutive members sharing a key are one sample (as webdataset groups them): its picture (the
    first of ``jpg``/``jpeg``/``png``/``webp``/... members) or, with ``videos``, its video; a ``txt``
    member becomes ``text``, a ``json`` object's fields are carried into the record. The item's
    ``id`` is the key, its ``source`` ``SHARD#KEY``. With ``text_mode``, the ``txt`` members are the
    items (texts). A sample without the member it needs, or with a bad ``json``, is an error item;
    so is a shard that cannot be read (the samples before the damage are kept).

    Read with stdlib :mod:`tarfile` over a seekable file object (local, or fsspec's for a URL), not
    with webdataset's streaming reader: only the headers (and the small ``txt``/``json`` members) are
    read here, each picture's offset and size are remembered, and the picture is read when decoded,
    so the index of a large shard set fits in memory and decoding runs on the worker threads.
    """
    import tarfile

    from mmcli.items import InputItem

    defaults = defaults or {}
    current: dict[str, Any] = {}
    key: str | None = None

    def finished() -> Iterator[InputItem]:
        if key is not None:
            yield _sample_item(shard, key, current, text_mode=text_mode, videos=videos, defaults=defaults)

    try:
        handle = open_binary(shard)
    except UsageError:
        raise
    except Exception as exc:
        yield InputItem(id=shard, modality="text" if text_mode else "image", source=shard, error=_io_error(exc))
        return
    with handle:
        try:
            with tarfile.open(fileobj=handle, mode="r:") as archive:
                while (member := archive.next()) is not None:
                    archive.members.clear()  # TarFile keeps every header it reads; an index of offsets is enough
                    if not member.isfile():
                        continue
                    member_key, extension = split_key(member.name)
                    if member_key is None:
                        continue
                    if member_key != key:
                        yield from finished()
                        key, current = member_key, {}
                    if extension in current:
                        current["!"] = f"duplicate member {member.name}"
                    if extension in ("txt", "json"):
                        extracted = archive.extractfile(member)
                        current[extension] = extracted.read() if extracted else b""
                    else:
                        current[extension] = ByteRange(shard, member.offset_data, member.size, name=member.name)
        except (tarfile.TarError, OSError, EOFError) as exc:
            yield from finished()
            yield InputItem(
                id=shard,
                modality="text" if text_mode else "image",
                source=shard,
                error=f"corrupt or truncated shard: {exc}",
            )
            return
    yield from finished()


def _sample_item(
    shard: str, key: str, members: dict[str, Any], *, text_mode: bool, videos: bool, defaults: dict[str, Any]
) -> InputItem:
    from mmcli.items import InputItem

    source = f"{shard}#{key}"
    item = InputItem(id=key, modality="text" if text_mode else "image", source=source)
    extra = dict(defaults)
    try:
        if "!" in members:
            raise ItemError(members["!"])
        if "json" in members:
            try:
                value = json.loads(members["json"].decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise ItemError(f"{key}.json is not valid JSON ({exc})") from None
            extra.update(value if isinstance(value, dict) else {"json": value})
        text = members["txt"].decode("utf-8", errors="replace") if "txt" in members else None
        if text_mode:
            if text is None:
                raise ItemError(f"sample has no txt member (members: {', '.join(sorted(members))})")
            item.source = item.text = text
        else:
            if text is not None:
                extra["text"] = text
            picture = next((members[e] for e in SHARD_IMAGE_EXTENSIONS if e in members), None)
            if picture is None and videos:
                picture = next((members[e] for e in SHARD_VIDEO_EXTENSIONS if e in members), None)
                item.modality = "video" if picture is not None else item.modality
            if picture is None:
                wanted = "image or video" if videos else "image"
                raise ItemError(f"sample has no {wanted} member (members: {', '.join(sorted(members)) or 'none'})")
            item.blob = picture
    except ItemError as exc:
        item.error = str(exc)
    item.extra = extra
    return item


# -- Parquet -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Columns:
    """Which Parquet columns hold the images, the texts and the ids (``--image-column`` ...)."""

    image: str | None = None
    text: str | None = None
    id: str | None = None

    def any(self) -> bool:
        return any((self.image, self.text, self.id))


def parquet_items(
    table: str, columns: Columns, *, text_mode: bool = False, videos: bool = False
) -> Iterator[InputItem]:
    """The rows of a Parquet file as items, read a row group at a time.

    Image rows need ``columns.image``: local paths (relative ones from the table's folder), URLs,
    raw bytes, or Hugging Face ``datasets`` structs ``{"bytes", "path"}`` (the bytes, else the path);
    bytes stay in the file until decoded (:class:`ParquetCell`). With ``text_mode``, ``columns.text``
    holds the texts; on image rows it is carried as ``text``. ``id``: the ``columns.id`` value, else
    ``TABLE:ROW`` (``ROW`` counting from 0 over the whole file, as pyarrow and pandas number rows).
    ``source``: the path or URL of a row's image, ``TABLE#ROW`` for bytes, the text for text rows.
    Every other column of strings, numbers or booleans is carried into the record.
    """
    from mmcli.items import InputItem

    needed = columns.text if text_mode else columns.image
    if needed is None:
        flag = option("text_column") if text_mode else option("image_column")
        raise UsageError(
            f"{table} is a Parquet table: name the column holding the {'texts' if text_mode else 'images'} with {flag}"
        )
    try:
        handle = open_binary(table)
        parquet = _parquet_file(handle)
    except UsageError:
        raise
    except Exception as exc:
        reason = _io_error(exc) if isinstance(exc, OSError) else f"not a readable Parquet file ({exc})"
        yield InputItem(id=table, modality="text" if text_mode else "image", source=table, error=reason)
        return
    with handle:
        schema = parquet.schema_arrow
        for flag, name in (("image_column", columns.image), ("text_column", columns.text), ("id_column", columns.id)):
            if name is not None and schema.get_field_index(name) < 0:
                raise UsageError(
                    f"{table} has no column {name!r} ({option(flag)}); its columns: {', '.join(schema.names)}"
                )
        read, image_kind = _columns_to_read(schema, columns, text_mode)
        base = _url_folder(table) if is_url(table) else None
        folder = os.path.dirname(table)
        modality = "text" if text_mode else "image"
        row = 0
        for group in range(parquet.num_row_groups):
            try:
                rows = parquet.read_row_group(group, columns=read).to_pylist()
            except Exception as exc:
                yield InputItem(id=table, modality=modality, source=table, error=f"row group {group}: {exc}")
                return
            for index, values in enumerate(rows):
                item_id = (
                    f"{table}:{row}"
                    if columns.id is None or values.get(columns.id) is None
                    else str(values[columns.id])
                )
                extra = {
                    name: value
                    for name, value in values.items()
                    if name not in (columns.image, columns.text, columns.id) and _scalar(value)
                }
                text = values.get(columns.text) if columns.text else None
                if text_mode:
                    item = InputItem(id=item_id, modality="text", source=str(text), text=text, extra=extra)
                    if not isinstance(text, str):
                        item.error = f"no text in column {columns.text!r}"
                else:
                    if isinstance(text, str):
                        extra["text"] = text
                    cell = ParquetCell(table, group, index, columns.image)
                    item = _image_row(item_id, table, row, values.get(columns.image), image_kind, cell,
                                      base, folder, videos)  # fmt: skip
                    item.extra = extra
                yield item
                row += 1


def _url_folder(url: str) -> str:
    """``s3://bucket/data/t.parquet`` -> ``s3://bucket/data/``: where the table's relative paths start."""
    scheme = url.index("://") + 3
    path = url[scheme:].split("?", 1)[0]
    return url[:scheme] + (path.rsplit("/", 1)[0] if "/" in path else path) + "/"


def _columns_to_read(schema: Any, columns: Columns, text_mode: bool) -> tuple[list[str], str]:
    """The columns listing reads (never image bytes) and the kind of the image column."""
    import pyarrow as pa

    read, kind = [], "none"
    for name in schema.names:
        field_type = schema.field(name).type
        if name == columns.image and not text_mode:
            if pa.types.is_string(field_type) or pa.types.is_large_string(field_type):
                kind = "path"
                read.append(name)
            elif pa.types.is_binary(field_type) or pa.types.is_large_binary(field_type):
                kind = "bytes"
            elif pa.types.is_struct(field_type) and field_type.get_field_index("bytes") >= 0:
                kind = "struct"
                if field_type.get_field_index("path") >= 0:
                    read.append(f"{name}.path")
            else:
                raise UsageError(
                    f"column {name!r} ({option('image_column')}) holds {field_type}: give a column of paths, "
                    "URLs, image bytes, or {bytes, path} structs"
                )
        elif name in (columns.text, columns.id) or _scalar_type(field_type):
            read.append(name)
    return read, kind


def _scalar_type(field_type: Any) -> bool:
    import pyarrow as pa

    return any(
        check(field_type)
        for check in (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer,
                      pa.types.is_floating, pa.types.is_boolean, pa.types.is_null)
    )  # fmt: skip


def _scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (str, int, bool))


def _image_row(
    item_id: str,
    table: str,
    row: int,
    value: Any,
    kind: str,
    cell: ParquetCell,
    base: str | None,
    folder: str,
    videos: bool,
) -> InputItem:
    from mmcli.items import InputItem

    item = InputItem(id=item_id, modality="image", source=f"{table}#{row}")

    def resolve(path: str) -> str:
        if is_url(path) or os.path.isabs(path):
            return path
        return base + path if base is not None else os.path.join(folder, path)

    if kind == "bytes":
        item.blob = cell
        return item
    if kind == "struct":
        path = value.get("path") if isinstance(value, dict) else None
        located = resolve(path) if isinstance(path, str) and path else None
        item.blob = ParquetCell(cell.url, cell.row_group, cell.row, cell.column, "bytes", located, name=path or "")
        if videos and path and is_video_path(path):
            item.modality = "video"
        return item
    if not isinstance(value, str) or not value:
        item.error = f"no image in column {cell.column!r}"
        return item
    located = resolve(value)
    item.source = located
    if videos and is_video_path(located.split("?", 1)[0]):
        item.modality = "video"
    if is_url(located):
        item.blob = ByteRange(located, name=located)
    else:
        item.path = located
    return item


def url_item(url: str, *, videos: bool) -> InputItem:
    """A remote image or video file as an item; its bytes are read when it is decoded."""
    from mmcli.items import InputItem

    filesystem(url)  # a protocol without its backend is refused now, not once per item
    modality = "video" if videos and is_video_path(url.split("?", 1)[0]) else "image"
    return InputItem(id=url, modality=modality, source=url, blob=ByteRange(url, name=url))


def is_media_url(url: str, *, videos: bool) -> bool:
    plain = url.split("?", 1)[0]
    return is_image_path(plain) or (videos and is_video_path(plain))

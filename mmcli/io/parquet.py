"""Parquet tables as inputs: one item per row, its image (bytes, or a path relative to the table)
and text read from the named columns, a row group at a time."""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from mmcli.errors import ItemError, UsageError, install_hint, option
from mmcli.io.remote import ByteRange, is_url, open_binary, reading_error, suffix_of, url_folder
from mmcli.items import InputItem
from mmcli.media.video import is_video_path

PARQUET_SUFFIX = ".parquet"


def is_parquet_path(name: str) -> bool:
    return suffix_of(name) == PARQUET_SUFFIX


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
        return suffix_of(self.name)

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
                    raise ItemError(f"cannot read row group {self.row_group}: {reading_error(exc)}") from None
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
        raise UsageError(f"reading Parquet needs pyarrow: {install_hint('scale')}") from None
    return pq.ParquetFile(handle)


@dataclass(frozen=True)
class Columns:
    """Which Parquet columns hold the images, the texts and the ids (``--image-column`` ...)."""

    image: str | None = None
    text: str | None = None
    id: str | None = None

    def recorded(self) -> dict[str, Any]:
        """The columns as a run records them among its settings: nothing where none were named."""
        return {"columns": vars(self)} if self.any() else {}

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
        reason = reading_error(exc) if isinstance(exc, OSError) else f"not a readable Parquet file ({exc})"
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
        base = url_folder(table) if is_url(table) else None
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
                    if isinstance(text, str):
                        item = InputItem(id=item_id, modality="text", source=text, text=text, extra=extra)
                    else:  # the row's place names it, not the text it lacks
                        what = "null" if text is None else f"a {type(text).__name__}, not a text"
                        item = InputItem(id=item_id, modality="text", source=f"{table}:{row}", extra=extra,
                                         error=f"no text in column {columns.text!r} ({what})")  # fmt: skip
                else:
                    if isinstance(text, str):
                        extra["text"] = text
                    cell = ParquetCell(table, group, index, columns.image)
                    item = _image_row(item_id, table, row, values.get(columns.image), image_kind, cell,
                                      base, folder, videos)  # fmt: skip
                    item.extra = extra
                yield item
                row += 1


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

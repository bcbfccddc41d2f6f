"""Webdataset shards as inputs: a ``.tar`` of samples, the members of one sample sharing a key
(``0001.jpg``, ``0001.txt``, ``0001.json``); one item per sample, its bytes a range of the tar."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mmcli.errors import ItemError, UsageError
from mmcli.io.remote import ByteRange, open_binary, reading_error, suffix_of
from mmcli.items import InputItem
from mmcli.media.images import IMAGE_EXTENSIONS
from mmcli.media.video import VIDEO_EXTENSIONS

if TYPE_CHECKING:
    import tarfile

TAR_SUFFIX = ".tar"


# webdataset members that name a sample's picture, in the order one is chosen when a sample has several.
MEMBER_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", *sorted(e[1:] for e in IMAGE_EXTENSIONS))


MEMBER_VIDEO_EXTENSIONS = ("mp4", "webm", *sorted(e[1:] for e in VIDEO_EXTENSIONS))


def is_webdataset_path(name: str) -> bool:
    """A webdataset shard, judged by its name (``.tar``; compressed tars allow no random access)."""
    return suffix_of(name) == TAR_SUFFIX


_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's base_plus_ext


def split_key(name: str) -> tuple[str | None, str | None]:
    """A member name as webdataset reads it: the key (the path up to the first ``.`` of the basename,
    folders kept) and the extension (the rest, lower-cased); ``(None, None)`` for a name without one."""
    match = _KEY.match(name)
    return (match.group(1), match.group(2).lower()) if match else (None, None)


def webdataset_items(
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
        yield InputItem(id=shard, modality="text" if text_mode else "image", source=shard, error=reading_error(exc))
        return
    with handle:
        try:
            with tarfile.open(fileobj=handle, mode="r:") as archive:
                while (member := archive.next()) is not None:
                    archive.members.clear()  # TarFile keeps every header it reads; an index of offsets is enough
                    if member.isdir():
                        continue
                    member_key, extension = split_key(member.name)
                    if member_key is None:
                        continue
                    if member_key != key:
                        yield from finished()
                        key, current = member_key, {}
                    if not member.isfile():  # a link or device has no bytes of its own: the sample cannot be read
                        current.setdefault("!", f"member {member.name} is {_kind(member)}, not a regular file")
                        continue
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


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"a symbolic link (to {member.linkname})"
    if member.islnk():
        return f"a hard link (to {member.linkname})"
    if member.ischr() or member.isblk():
        return "a device"
    return "a FIFO" if member.isfifo() else "not a file"


def _sample_item(
    shard: str, key: str, members: dict[str, Any], *, text_mode: bool, videos: bool, defaults: dict[str, Any]
) -> InputItem:
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
            picture = next((members[e] for e in MEMBER_IMAGE_EXTENSIONS if e in members), None)
            if picture is None and videos:
                picture = next((members[e] for e in MEMBER_VIDEO_EXTENSIONS if e in members), None)
                item.modality = "video" if picture is not None else item.modality
            if picture is None:
                wanted = "image or video" if videos else "image"
                raise ItemError(f"sample has no {wanted} member (members: {', '.join(sorted(members)) or 'none'})")
            item.blob = picture
    except ItemError as exc:
        item.error = str(exc)
    item.extra = extra
    return item

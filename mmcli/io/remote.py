"""Where an input's bytes are when they are not a loose local file: URLs read through fsspec (any
protocol it has a backend for), and frozen byte references that a worker reads when it decodes."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from mmcli.errors import ItemError, UsageError, install_hint
from mmcli.items import InputItem, path_sort_key
from mmcli.media.images import is_image_path
from mmcli.media.video import is_video_path

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


CHUNK = 1 << 20


def is_url(name: str) -> bool:
    """Whether ``name`` is a URL (``scheme://...``) rather than a local path."""
    return bool(_URL.match(name))


def suffix_of(name: str) -> str:
    """The lower-cased extension of a path or URL, query string aside."""
    if is_url(name):
        name = name.split("?", 1)[0]
    return os.path.splitext(name)[1].lower()


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path within it; a missing backend is a usage error."""
    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise UsageError(f"{url}: reading URLs needs fsspec: {install_hint('scale')}") from None
    try:
        return url_to_fs(url)
    except ImportError as exc:
        raise UsageError(f"{url}: this protocol needs a package that is not installed ({exc})") from None
    except ValueError as exc:
        raise UsageError(f"{url}: {exc}") from None


def reading_error(exc: BaseException) -> str:
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
        return suffix_of(self.name or self.url)

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
            raise ItemError(reading_error(exc)) from None
        self._check(len(data))
        return data

    def copy_to(self, handle: IO[bytes]) -> None:
        """Write the bytes into ``handle`` a block at a time (a video need not fit in memory)."""
        try:
            with open_binary(self.url) as source:
                source.seek(self.offset)
                left, copied = self.size, 0
                while left is None or left > 0:
                    block = source.read(CHUNK if left is None else min(CHUNK, left))
                    if not block:
                        break
                    handle.write(block)
                    copied += len(block)
                    left = None if left is None else left - len(block)
        except UsageError:
            raise
        except Exception as exc:
            raise ItemError(reading_error(exc)) from None
        self._check(copied)

    def _check(self, length: int) -> None:
        if self.size is not None and length != self.size:
            raise ItemError(f"truncated: the shard ends {self.size - length} bytes into this member ({self.name})")


def walk_url(url: str, accept: Callable[[str], bool]) -> list[str]:
    """The files under a folder URL (or matching a glob URL) that ``accept`` takes, as URLs, sorted by
    path components like a local walk. A folder that cannot be listed is a usage error."""
    fs, path = filesystem(url)
    try:
        if any(char in path for char in "*?["):
            found = []
            for match in fs.glob(path):
                found += fs.find(match) if fs.isdir(match) else [match]
        else:
            found = fs.find(path)
    except Exception as exc:
        raise UsageError(f"{url}: cannot list it ({reading_error(exc)})") from None
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


def url_folder(url: str) -> str:
    """``s3://bucket/data/t.parquet`` -> ``s3://bucket/data/``: where the table's relative paths start."""
    scheme = url.index("://") + 3
    path = url[scheme:].split("?", 1)[0]
    return url[:scheme] + (path.rsplit("/", 1)[0] if "/" in path else path) + "/"


def url_item(url: str, *, videos: bool) -> InputItem:
    """A remote image or video file as an item; its bytes are read when it is decoded."""
    filesystem(url)  # a protocol without its backend is refused now, not once per item
    modality = "video" if videos and is_video_path(url.split("?", 1)[0]) else "image"
    return InputItem(id=url, modality=modality, source=url, blob=ByteRange(url, name=url))


def is_media_url(url: str, *, videos: bool) -> bool:
    plain = url.split("?", 1)[0]
    return is_image_path(plain) or (videos and is_video_path(plain))

"""Thumbnails of the images and video frames that result records name, for reports and contact sheets.

Every picture is decoded by :func:`mmcli.media.images.load_image` (the one safe decoder, with its pixel
limit) or, for a video frame, by :class:`mmcli.media.video.VideoReader`. A picture that cannot be
shown becomes a :class:`Thumb` with an ``error`` (and the report a placeholder), never an exception,
and is counted in :attr:`Thumbnails.missing`. Sources are paths: relative ones are relative to the
current folder, as the commands that wrote them saw them.
"""

from __future__ import annotations

import base64
import io
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from PIL import Image

from mmcli.errors import ItemError
from mmcli.media.images import DEFAULT_MAX_PIXELS, is_image_path, load_image

DEFAULT_THUMB_SIZE = 192
JPEG_QUALITY = 80
_FRAGMENT = re.compile(r"#t=([0-9.]+)(?:,([0-9.]+))?$")  # a W3C media fragment, as segment ids carry


@dataclass(frozen=True)
class Thumb:
    """One picture as a report shows it: ``src`` (a ``data:`` URI or a relative link) and the small
    image itself for a contact sheet; or, where it cannot be shown, ``error`` says why."""

    source: str
    src: str | None = None
    image: Image.Image | None = None
    error: str | None = None
    t: float | None = None  # for a video frame: the time asked for

    @property
    def width(self) -> int:
        return self.image.width if self.image is not None else 0

    @property
    def height(self) -> int:
        return self.image.height if self.image is not None else 0


def is_video_source(source: str) -> bool:
    from mmcli.media.video import is_video_path

    return is_video_path(source)


def looks_like_media(source: object) -> bool:
    """Whether ``source`` names a picture (an image or video path, or any existing file), as opposed
    to a text row's text: a text hit or query is shown as text, not as a missing image."""
    if not isinstance(source, str) or not source or "\n" in source:
        return False
    path = _without_fragment(source)
    return is_image_path(path) or is_video_source(path) or os.path.isfile(path)


def media_time(identifier: object) -> float | None:
    """The start of a ``VIDEO#t=START,END`` segment id (or a frame id ``VIDEO#t=T``); None otherwise."""
    found = _FRAGMENT.search(identifier) if isinstance(identifier, str) else None
    return float(found.group(1)) if found else None


def _without_fragment(source: str) -> str:
    found = _FRAGMENT.search(source)
    return source[: found.start()] if found and not os.path.exists(source) else source


class Thumbnails:
    """Makes and caches thumbnails, embedded as ``data:`` JPEGs or, with ``link_images``, as links
    relative to ``base`` (the report's folder) to the original files. Video frames have no file of
    their own, so they are embedded either way."""

    def __init__(
        self,
        *,
        size: int = DEFAULT_THUMB_SIZE,
        link_images: bool = False,
        base: str | os.PathLike[str] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.size = size
        self.link_images = link_images
        self.base = os.path.abspath(base if base is not None else ".")  # lexically: links keep the user's symlinks
        self.max_pixels = max_pixels
        self.missing: dict[str, str] = {}  # source -> why it is not shown
        self._cache: dict[tuple[str, float | None], Thumb] = {}

    @property
    def shown(self) -> int:
        """How many distinct pictures were made."""
        return sum(1 for thumb in self._cache.values() if thumb.error is None)

    def image(self, source: str) -> Thumb:
        """The thumbnail of the image at ``source`` (a video: its first frame)."""
        if is_video_source(_without_fragment(source)):
            return self.frame(source, media_time(source) or 0.0)
        key = (source, None)
        if key not in self._cache:
            self._cache[key] = self._make_image(source)
        return self._cache[key]

    def frame(self, source: str, t: float) -> Thumb:
        """The thumbnail of the first frame at or after ``t`` seconds of the video at ``source``."""
        return self.frames(source, [t])[t]

    def frames(self, source: str, times: Iterable[float]) -> dict[float, Thumb]:
        """Thumbnails of the first frame at or after each of ``times``, decoding the video once."""
        path = _without_fragment(source)
        wanted = sorted({float(t) for t in times if (path, float(t)) not in self._cache})
        if wanted:
            for t, thumb in self._make_frames(path, wanted).items():
                self._cache[(path, t)] = thumb
        return {float(t): self._cache[(path, float(t))] for t in times}

    def _make_image(self, source: str) -> Thumb:
        if "://" in source:
            return self._failed(source, "not a local file")
        try:
            image = load_image(source, max_pixels=self.max_pixels)
        except ItemError as exc:
            return self._failed(source, str(exc))
        small = self._shrink(image)
        src = self._link(source) if self.link_images else data_uri(small)
        return Thumb(source, src=src, image=small)

    def _make_frames(self, path: str, times: list[float]) -> dict[float, Thumb]:
        from mmcli.media.video import VideoReader

        if "://" in path:
            return {t: self._failed(path, "not a local file", t) for t in times}
        found: dict[float, Thumb] = {}
        try:
            with VideoReader(path, max_pixels=self.max_pixels) as reader:
                pending = list(times)
                for frame in reader.frames_at(times):
                    small = self._shrink(frame.image)
                    thumb = Thumb(path, src=data_uri(small), image=small)
                    while pending and pending[0] <= frame.t + 1e-3:
                        found[pending.pop(0)] = Thumb(thumb.source, thumb.src, thumb.image, t=frame.t)
        except ItemError as exc:
            return {t: self._failed(path, str(exc), t) for t in times}
        except Exception as exc:  # a decoder failing part way: the frames so far are kept
            reason = f"video could not be read ({exc})"
            return {t: found.get(t) or self._failed(path, reason, t) for t in times}
        return {t: found.get(t) or self._failed(path, f"no frame at {t:g} s (past the end?)", t) for t in times}

    def _shrink(self, image: Image.Image) -> Image.Image:
        small = image.convert("RGB")
        small.thumbnail((self.size, self.size), Image.Resampling.LANCZOS)
        return small

    def _link(self, source: str) -> str:
        """``source`` as a URL path relative to the report's folder."""
        relative = os.path.relpath(os.path.abspath(source), self.base)
        return quote(Path(relative).as_posix())

    def _failed(self, source: str, reason: str, t: float | None = None) -> Thumb:
        where = source if t is None else f"{source} at {t:g} s"
        self.missing[where] = reason
        return Thumb(source, error=reason, t=t)


def data_uri(image: Image.Image, quality: int = JPEG_QUALITY) -> str:
    """``image`` as a self-contained ``data:image/jpeg;base64,...`` URI."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")

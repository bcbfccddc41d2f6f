"""Image decoding that never surprises a model: upright, RGB, first frame, bounded size.

Every command that reads images goes through :func:`load_image`, so a photo is decoded the same
way whether it is embedded, captioned or classified.
"""

from __future__ import annotations

import io
import math
import os
import re
import warnings
from typing import IO, Any

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from mmcli.errors import ItemError

IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".gif",
        ".bmp",
        ".dib",
        ".tif",
        ".tiff",
        ".webp",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".tga",
        ".ico",
        ".jp2",
        ".j2k",
        ".avif",
    }
)
# Enough for a 100-megapixel camera; more is almost always a malformed or hostile header.
DEFAULT_MAX_PIXELS = 178_956_970
BACKGROUND = (255, 255, 255)
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# load_image enforces its own limit with a per-item error; Pillow's warning below that would only add noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _allow_pillow_up_to(max_pixels: int) -> None:
    """Pillow refuses images over twice its global limit inside ``Image.open``, before mmcli can
    judge them; raise that limit (never lower it) so a user's larger ``--max-pixels`` takes effect."""
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and 2 * current < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels // 2 + 1


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """Judge by extension, as directory walks must not open every file they pass."""
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


class ImageTooLarge(ItemError):
    """An image whose header claims more than ``max_pixels``, refused before anything is decoded;
    ``pixels`` is what it claims (``None`` where Pillow's own guard did not say)."""

    def __init__(self, message: str, pixels: int | None) -> None:
        super().__init__(message)
        self.pixels = pixels


_BOMB_SIZE = re.compile(r"\((\d+) pixels\)")


def load_image(
    path: str | os.PathLike[str] | bytes | IO[bytes],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
) -> Image.Image:
    """Decode ``path`` (a file, or an image's bytes or binary file object: a shard member, a Parquet
    cell, a downloaded URL) into an upright 8-bit RGB image.

    EXIF orientation is applied; transparency is composited over white; CMYK, 16-bit and palette
    images become RGB; animations give their first frame. Any failure is an :class:`ItemError`
    with a message a person can act on.

    With ``min_side`` (see :func:`decode_min_side`), a JPEG is decoded at the smallest of 1/2, 1/4
    or 1/8 scale that keeps both sides at least that long: the DCT does the downscaling, which makes
    a 12-megapixel photo several times cheaper to decode for a model that sees 224 pixels.
    """
    _allow_pillow_up_to(max_pixels)
    try:
        if isinstance(path, (bytes, bytearray, memoryview)):
            if len(path) == 0:
                raise ItemError("empty file (0 bytes)")
            path = io.BytesIO(path)
        elif isinstance(path, (str, os.PathLike)):
            if os.path.isdir(path):
                raise ItemError("is a directory, not an image")
            if os.path.getsize(path) == 0:
                raise ItemError("empty file (0 bytes)")
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLarge(
                    f"image is {width}x{height} pixels, over the limit of {max_pixels:,} "
                    "(a decompression bomb?); raise the limit with --max-pixels if it is genuine",
                    width * height,
                )
            image.seek(0)
            if min_side and image.format == "JPEG" and min(width, height) >= 2 * min_side:
                scale = min(width, height) / min_side
                image.draft(None, (math.ceil(width / scale), math.ceil(height / scale)))
            image.load()
            return to_rgb(_upright(image))
    except ItemError:
        raise
    except FileNotFoundError:
        raise ItemError("no such file") from None
    except IsADirectoryError:
        raise ItemError("is a directory, not an image") from None
    except PermissionError:
        raise ItemError("permission denied") from None
    except UnidentifiedImageError:
        raise ItemError("not an image (unrecognised or corrupt format)") from None
    except Image.DecompressionBombError as exc:  # Pillow's own check, in Image.open, for images far over the limit
        size = _BOMB_SIZE.search(str(exc))
        pixels = f"{int(size.group(1)):,} pixels" if size else "too many pixels"
        raise ImageTooLarge(
            f"image has {pixels}, over the limit of {max_pixels:,} (a decompression bomb?); "
            "raise the limit with --max-pixels if it is genuine",
            int(size.group(1)) if size else None,
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason:
            reason = "image file is truncated"
        raise ItemError(f"corrupt image: {reason}") from None


# Resize keys whose values are pixel lengths; any other key (pixel budgets, longest edges) means
# the processor may keep detail a reduced decode would lose, so such processors get no draft.
_SIDE_KEYS = frozenset({"shortest_edge", "height", "width"})


def decode_min_side(image_processor: Any) -> int | None:
    """The shortest side a decoded image needs for ``image_processor`` to give (nearly) the same input.

    Twice the largest side the processor resizes or crops to, so its own antialiased resize still
    does the final reduction; ``None`` where its sizes are not plain lengths (tiling or
    dynamic-resolution processors), meaning: decode at full size. A transformers image processor
    states them as ``size`` and ``crop_size``; a torchvision ``Compose`` (open_clip's, timm's) in its
    steps' ``size``; torchvision weights' presets as ``resize_size`` and ``crop_size``.
    """
    longest = 0
    for step in getattr(image_processor, "transforms", None) or [image_processor]:
        for attribute in ("size", "resize_size", "crop_size"):
            size = getattr(step, attribute, None)
            if size is None:
                continue
            lengths = _side_lengths(size)
            if lengths is None:
                return None
            longest = max(longest, *lengths)
    return 2 * longest if longest else None


def _side_lengths(size: Any) -> list[int] | None:
    """The pixel lengths a processor's size states (an int, a sequence, or a dict of ``_SIDE_KEYS``);
    ``None`` where it states something else."""
    if isinstance(size, int):
        return [size]
    if isinstance(size, (tuple, list)):
        values = list(size)
    else:
        given = {key: value for key, value in dict(size).items() if value is not None}
        if not set(given) <= _SIDE_KEYS:
            return None
        values = list(given.values())
    return values if values and all(isinstance(value, int) for value in values) else None


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation to the pixels.

    Done by hand rather than with ``ImageOps.exif_transpose``, which also rewrites the EXIF block
    and crashes on tags of unexpected types that odd cameras write; only the orientation matters.
    """
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation)
    except Exception:  # unreadable EXIF: keep the pixels as stored
        return image
    method = _ORIENTATION_TRANSPOSE.get(orientation)
    return image.transpose(method) if method is not None else image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB, compositing alpha over white and rescaling deep images."""
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        return _deep_to_rgb(image)
    return image.convert("RGB")


def _deep_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit single-channel images: scale to 8 bits instead of clipping at 255."""
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low or 1.0) * 255.0
    else:
        scaled = values / 257.0  # 65535 -> 255, the full 16-bit range onto 8 bits
    gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L").convert("RGB")

"""Inputs shared by the benchmarks: distinct JPEG photographs of a fixed size, made on the spot."""

from __future__ import annotations

from pathlib import Path

PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket", "cat", "hubble_deep_field", "immunohistochemistry")


def make_images(folder: Path, count: int, size: tuple[int, int] = (640, 480)) -> list[Path]:
    """``count`` JPEGs from scikit-image's sample photographs, each rotated differently so no two
    files are the same image (nothing can be cached between them)."""
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    photos = [Image.fromarray(getattr(data, name)()).convert("RGB").resize(size) for name in PHOTO_NAMES]
    paths = []
    for index in range(count):
        path = folder / f"{index:04d}.jpg"
        photos[index % len(photos)].rotate(index * 7).save(path, quality=90)
        paths.append(path)
    return paths

"""``curves.png``: the training loss by step and the validation CIDEr-D by epoch, drawn with Pillow."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

WIDTH, HEIGHT, MARGIN = 900, 340, 48
LOSS_COLOUR, CIDER_COLOUR, AXIS_COLOUR = (31, 119, 180), (214, 39, 40), (90, 90, 90)


def draw_curves(log: Sequence[dict[str, Any]], path: Path) -> None:
    """Two panels side by side; a run with a single point draws it as a dot."""
    from PIL import Image, ImageDraw

    steps = [(line["step"], line["loss"]) for line in log if "loss" in line]
    epochs = [(line["epoch"], line["cider"]) for line in log if "cider" in line]
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    half = WIDTH // 2
    _panel(draw, (0, 0, half, HEIGHT), steps, "training loss by step", LOSS_COLOUR)
    _panel(draw, (half, 0, WIDTH, HEIGHT), epochs, "validation CIDEr-D by epoch", CIDER_COLOUR)
    image.save(path)


def _panel(draw: Any, box: tuple[int, int, int, int], points: Sequence[tuple[float, float]], title: str,
           colour: tuple[int, int, int]) -> None:  # fmt: skip
    left, top, right, bottom = box[0] + MARGIN, box[1] + MARGIN // 2 + 12, box[2] - MARGIN // 2, box[3] - MARGIN
    draw.text((left, box[1] + 8), title, fill=AXIS_COLOUR)
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=AXIS_COLOUR)
    if not points:
        return
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(0.0, min(ys)), max(ys)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    draw.text((left - MARGIN + 4, top - 6), f"{y1:.3g}", fill=AXIS_COLOUR)
    draw.text((left - MARGIN + 4, bottom - 6), f"{y0:.3g}", fill=AXIS_COLOUR)
    draw.text((left, bottom + 6), f"{x0:g}", fill=AXIS_COLOUR)
    draw.text((right - 30, bottom + 6), f"{x1:g}", fill=AXIS_COLOUR)

    def at(x: float, y: float) -> tuple[float, float]:
        return left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top)

    placed = [at(x, y) for x, y in points]
    if len(placed) > 1:
        draw.line(placed, fill=colour, width=2)
    for x, y in placed[-1:] if len(placed) > 40 else placed:
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)

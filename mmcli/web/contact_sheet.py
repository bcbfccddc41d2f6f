"""A report as one PNG: a grid of thumbnails, each with a few short lines of label drawn under it.

Retrieval results get one row per query (the query first, then its hits); everything else is laid
out left to right in rows of :data:`COLUMNS`. Every cell is ``cell_size(thumb_size)`` pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from mmcli.web.report_model import Report
from mmcli.web.thumbnails import Thumb

COLUMNS = 6
PAD = 6
LABEL_LINES = 3
FONT_SIZE = 13  # pixels: as readable as a page's small print, where Pillow's default is 10
LINE_HEIGHT = 17
# A real typeface where the system has it (DejaVu ships with most Linux systems and with matplotlib),
# else the TrueType face Pillow bundles, at the same size.
FONT_FILES = ("DejaVuSans.ttf", "Arial.ttf", "Helvetica.ttc")
BACKGROUND = (255, 255, 255)
PLACEHOLDER = (214, 214, 214)
TEXT_TILE = (236, 241, 250)
INK = (20, 20, 20)
ERROR_INK = (170, 0, 0)


@dataclass
class Tile:
    thumb: Thumb | None  # None: a text tile (``text`` drawn in the picture's place)
    label: list[str]
    text: str = ""
    error: bool = False


def cell_size(thumb_size: int) -> tuple[int, int]:
    """(width, height) of one cell of the grid: the thumbnail's square, its label lines and padding."""
    return thumb_size + 2 * PAD, thumb_size + 2 * PAD + LABEL_LINES * LINE_HEIGHT


def _fmt(value: object) -> str:
    try:
        return f"{float(value):.3f}"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "?"


def _short(identifier: object) -> str:
    """An id for a label: a path's file name (with any ``#t=`` fragment), other ids as they are."""
    text = str(identifier)
    return os.path.basename(text) or text if os.sep in text or "/" in text else text


def tile_rows(report: Report) -> list[list[Tile]]:
    """The cells of the sheet, row by row."""
    if report.kind == "retrieve":
        rows = []
        for query in report.sections:
            first = Tile(query["thumb"], ["query", _short(query["id"])], text=str(query["query"]))
            hits = [
                Tile(hit["thumb"], [f"#{hit.get('rank')} {_fmt(hit.get('score'))}", _short(hit.get("id"))], hit["text"])
                for hit in query["hits"]
            ]
            rows.append([first, *hits])
        rows += [[Tile(None, ["error", str(e.get("query_id"))], text=str(e.get("error")), error=True)]
                 for e in report.errors]  # fmt: skip
        return rows or [[Tile(None, ["no queries"])]]
    tiles: list[Tile] = []
    if report.kind == "caption":
        for section in report.sections:
            if section["type"] == "error":
                tiles.append(Tile(None, [_short(section.get("id"))], text=str(section["error"]), error=True))
            elif section["type"] == "video":
                for segment in section["segments"]:
                    span = f"{float(segment.get('t', 0)):.2f}-{float(segment.get('end', 0)):.2f} s"
                    tiles.append(Tile(segment["thumb"], [span, str(segment.get("caption"))]))
                if not section["segments"]:
                    tiles.append(Tile(section["thumb"], ["summary", str(section["summary"])]))
            else:
                tiles.append(Tile(section["thumb"], [str(section.get("caption"))]))
    elif report.kind == "classify":
        for section in report.sections:
            if "error" in section and not section["bars"]:
                tiles.append(Tile(None, [_short(section.get("id"))], text=str(section["error"]), error=True))
                continue
            lines = [f"{bar['label']} {_fmt(bar['score'])}" for bar in section["bars"][:LABEL_LINES]]
            tiles.append(Tile(section["thumb"], lines))
    else:
        evaluation: dict[str, Any] = report.evaluation or {}
        for which in ("best", "worst"):
            for rank, item in enumerate(evaluation.get(which, []), start=1):
                label = [f"{which} {rank}: {evaluation['metric']} {_fmt(item['score'])}", _short(item["id"])]
                tiles.append(Tile(item["thumb"], label, text=str(item["id"])))
    if not tiles:
        tiles = [Tile(None, ["nothing to show"])]
    return [tiles[start : start + COLUMNS] for start in range(0, len(tiles), COLUMNS)]


def draw_contact_sheet(report: Report, *, thumb_size: int) -> Image.Image:
    """The sheet of ``report`` as an RGB image of ``columns * cell width`` by ``rows * cell height``."""
    rows = tile_rows(report)
    width, height = cell_size(thumb_size)
    columns = max(len(row) for row in rows)
    sheet = Image.new("RGB", (columns * width, len(rows) * height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = label_font()
    for y, row in enumerate(rows):
        for x, tile in enumerate(row):
            _draw_tile(sheet, draw, font, tile, x * width, y * height, thumb_size)
    return sheet


def label_font() -> Any:
    """The labels' font: the first of :data:`FONT_FILES` Pillow finds, else its own bundled face, at
    :data:`FONT_SIZE` (Pillow without FreeType has only its small bitmap font)."""
    for name in FONT_FILES:
        try:
            return ImageFont.truetype(name, FONT_SIZE)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except (ImportError, OSError, TypeError):  # no FreeType in this Pillow
        return ImageFont.load_default()


def _draw_tile(sheet: Image.Image, draw: Any, font: Any, tile: Tile, left: int, top: int, size: int) -> None:
    box = (left + PAD, top + PAD, left + PAD + size - 1, top + PAD + size - 1)
    thumb = tile.thumb
    if thumb is not None and thumb.image is not None:
        image = thumb.image
        sheet.paste(image, (left + PAD + (size - image.width) // 2, top + PAD + (size - image.height) // 2))
    else:
        missing = thumb is not None
        draw.rectangle(box, fill=PLACEHOLDER if missing else TEXT_TILE, outline=(150, 150, 150))
        text = f"missing: {thumb.error}" if missing else tile.text
        lines = _wrap(draw, font, text, size - 8)[: max(1, (size - 8) // LINE_HEIGHT)]
        for number, line in enumerate(lines):
            ink = ERROR_INK if missing or tile.error else INK
            _text(draw, (box[0] + 4, box[1] + 4 + number * LINE_HEIGHT), line, font, ink)
    for number, line in enumerate(_label_lines(draw, font, tile.label, size)):
        _text(draw, (left + PAD, top + 2 * PAD + size - 2 + number * LINE_HEIGHT), line, font, INK)


def _label_lines(draw: Any, font: Any, label: list[str], width: int) -> list[str]:
    """The label in at most :data:`LABEL_LINES` lines: each part on its own line, the last wrapped."""
    lines: list[str] = []
    for part in label:
        lines += _wrap(draw, font, part, width) if part is label[-1] else [_fit(draw, font, part, width)]
    if len(lines) > LABEL_LINES:
        lines = [*lines[: LABEL_LINES - 1], _fit(draw, font, lines[LABEL_LINES - 1], width, ellipsis=True)]
    return lines


def _wrap(draw: Any, font: Any, text: str, width: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        attempt = f"{current} {word}".strip()
        if _length(draw, font, attempt) <= width or not current:
            current = attempt
        else:
            lines.append(_fit(draw, font, current, width))
            current = word
    if current:
        lines.append(_fit(draw, font, current, width))
    return lines or [""]


def _fit(draw: Any, font: Any, text: str, width: int, *, ellipsis: bool = False) -> str:
    """``text`` cut (with an ellipsis) to fit in ``width`` pixels."""
    if _length(draw, font, text) <= width and not ellipsis:
        return text
    while text and _length(draw, font, text + "…") > width:
        text = text[:-1]
    return text.rstrip() + "…"


def _length(draw: Any, font: Any, text: str) -> float:
    try:
        return draw.textlength(text, font=font)
    except UnicodeEncodeError:  # a bitmap font (no FreeType) covers Latin-1 only
        return draw.textlength(_latin(text), font=font)


def _text(draw: Any, xy: tuple[int, int], text: str, font: Any, ink: tuple[int, int, int]) -> None:
    try:
        draw.text(xy, text, fill=ink, font=font)
    except UnicodeEncodeError:
        draw.text(xy, _latin(text), fill=ink, font=font)


def _latin(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1")

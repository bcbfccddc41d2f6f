"""HTML reports and contact sheets of the result files mmcli writes.

:func:`write_report` reads one result file (JSONL), recognises which command wrote it from its
records' keys (:func:`detect_kind`), and draws it: ``retrieve`` output as each query with its hits,
``caption`` output as images with their captions and videos as timelines of segments, ``classify``
output as images with their top labels as bars, and ``evaluate captions --per-item`` output as a
metric table, a histogram and the best and worst items. The page is rendered from Jinja2 templates
with autoescaping, so text from the records (captions, ids, file names) is never markup; it loads
nothing from elsewhere (pictures are embedded ``data:`` JPEGs unless ``link_images``) and runs no
script, which its Content-Security-Policy also forbids.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmcli.errors import InputError, UsageError, install_hint, option
from mmcli.media.images import DEFAULT_MAX_PIXELS
from mmcli.output.destination import writes
from mmcli.web.report_model import Report
from mmcli.web.thumbnails import DEFAULT_THUMB_SIZE, Thumb, Thumbnails, looks_like_media, media_time

KINDS = ("retrieve", "caption", "classify", "evaluate")
EXPECTED_KEYS = (
    'retrieve output {"query", "hits": [{"rank", "id", "score", "source"}]}, '
    'caption output {"id", "source", "caption"} (videos: {"id", "t", "end", "caption"} and {"id", "summary"}), '
    'classify output {"id", "source", "label", "score", "scores"}, '
    'or evaluate captions --per-item output {"id", METRIC: number, ...}'
)
TOP_LABELS = 5  # label bars per classified image
EXTREMES = 5  # best and worst items of an evaluation
HISTOGRAM_BINS = 10
METRIC_PREFERENCE = ("CIDEr", "CLIPScore", "RefCLIPScore", "METEOR", "ROUGE-L", "SPICE", "BLEU-4")


@dataclass
class ReportResult:
    """What :func:`write_report` made: the kind of results, counts for a summary line, and its files."""

    kind: str
    records: int
    errors: int  # error records among them
    images: int  # distinct pictures shown
    missing: dict[str, str]  # pictures that could not be shown: source -> why
    html: Path | None  # None: not written, or written to stdout
    contact_sheet: Path | None


# -- reading and recognising -------------------------------------------------------------------------------


def read_results(results: str | os.PathLike[str] | Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """The records of ``results`` (a JSONL path, ``-`` for stdin, or records) and a name for messages."""
    from mmcli.jsonl import read_jsonl

    if isinstance(results, (str, os.PathLike)):
        name = "<stdin>" if str(results) == "-" else str(results)
        return [record for _, record in read_jsonl(results, "results file")], name
    return [dict(record) for record in results], "<records>"


def _is_error(record: dict[str, Any]) -> bool:
    return "error" in record and not ({"hits", "caption", "summary", "scores"} & record.keys())


def _is_number(value: object) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def kind_of(record: dict[str, Any]) -> str | None:
    """Which command's output ``record`` is, from its keys; None if none."""
    if isinstance(record.get("hits"), list) and ("query" in record or "query_id" in record):
        return "retrieve"
    if "id" in record and "label" in record and isinstance(record.get("scores"), dict):
        return "classify"
    if "id" in record and (isinstance(record.get("caption"), str) or isinstance(record.get("summary"), str)):
        return "caption"
    metrics = [key for key in record if key != "id"]
    if "id" in record and metrics and all(_is_number(record[key]) for key in metrics):
        return "evaluate"
    return None


def detect_kind(records: Sequence[dict[str, Any]], name: str = "results") -> str:
    """The one kind of result ``records`` are (error records fit any); an input error naming the
    keys expected where a record fits none, or the records mix kinds."""
    if not records:
        raise InputError(f"{name}: no records; expected {EXPECTED_KEYS}")
    kinds: dict[str, int] = {}
    for number, record in enumerate(records, start=1):
        if _is_error(record):
            continue
        kind = kind_of(record)
        if kind is None:
            keys = ", ".join(sorted(record)) or "none"
            raise InputError(f"{name}: record {number} is not mmcli result output (its keys: {keys}); expected "
                             f"{EXPECTED_KEYS}")  # fmt: skip
        kinds.setdefault(kind, number)
    if len(kinds) > 1:
        found = ", ".join(f"{kind} (from record {number})" for kind, number in kinds.items())
        raise InputError(f"{name}: records of different commands' output in one file: {found}")
    if not kinds:  # nothing but error records: a caption or classify run in which every item failed
        return "caption"
    return next(iter(kinds))


# -- building the page's content -----------------------------------------------------------------------------


def _show(thumbs: Thumbnails, source: object) -> Thumb | None:
    """The picture of ``source`` where it names one (None for text)."""
    if not looks_like_media(source):
        return None
    return thumbs.image(str(source))


def _picture(thumbs: Thumbnails, source: object) -> Thumb:
    """The picture a record's ``source`` must be: a placeholder where it names none."""
    if not isinstance(source, str) or not source:
        thumbs.missing["(no source)"] = "the record names no source"
        return Thumb("", error="the record names no source")
    return thumbs.image(source)


def _hit_picture(thumbs: Thumbnails, hit: dict[str, Any]) -> Thumb | None:
    source = hit.get("source")
    t = hit.get("t") if _is_number(hit.get("t")) and hit.get("t") is not None else media_time(hit.get("id"))
    if isinstance(source, str) and t is not None and looks_like_media(source):
        from mmcli.web.thumbnails import is_video_source

        if is_video_source(source):
            return thumbs.frame(source, float(t))
    return _show(thumbs, source)


def _hit(thumbs: Thumbnails, hit: dict[str, Any]) -> dict[str, Any]:
    """A hit with its picture, or its text where it is a text row."""
    thumb = _hit_picture(thumbs, hit)
    return {**hit, "thumb": thumb, "text": "" if thumb is not None else str(hit.get("source") or hit.get("id"))}


def _retrieve(records: list[dict[str, Any]], thumbs: Thumbnails, report: Report) -> None:
    for record in records:
        if "error" in record and "hits" not in record:
            report.errors.append(record)
            continue
        query = record.get("query")
        hits = [_hit(thumbs, hit) for hit in record["hits"] if isinstance(hit, dict)]
        report.sections.append(
            {"id": record.get("query_id"), "query": query, "thumb": _show(thumbs, query), "hits": hits}
        )


def _caption(records: list[dict[str, Any]], thumbs: Thumbnails, report: Report) -> None:
    video: dict[str, Any] | None = None
    for record in records:
        if _is_error(record):
            report.errors.append(record)
            report.sections.append({"type": "error", **record, "thumb": None})
            video = None
            continue
        identifier = str(record.get("id"))
        if "t" in record and "caption" in record:  # a segment of a video
            parent = identifier.split("#t=")[0]
            if video is None or video["id"] != parent or video["summary"] is not None:
                video = {"type": "video", "id": parent, "source": record.get("source"), "segments": [],
                         "summary": None, "model": record.get("model"), "truncated": False}  # fmt: skip
                report.sections.append(video)
            video["segments"].append(dict(record))
        elif "summary" in record:
            if video is None or video["id"] != identifier or video["summary"] is not None:
                video = {"type": "video", "id": identifier, "source": record.get("source"), "segments": [],
                         "summary": None, "model": record.get("model"), "truncated": False}  # fmt: skip
                report.sections.append(video)
            video["summary"] = record["summary"]
            video["truncated"] = bool(record.get("truncated"))
        else:
            video = None
            report.sections.append({"type": "image", **record, "thumb": _picture(thumbs, record.get("source"))})
    for section in report.sections:
        if section["type"] == "video":
            source = section["source"]
            segments = section["segments"]
            if isinstance(source, str) and source:
                frames = thumbs.frames(source, [_seconds(s.get("t")) for s in segments] or [0.0])
                for segment in segments:
                    segment["thumb"] = frames[_seconds(segment.get("t"))]
                section["thumb"] = frames[_seconds(segments[0].get("t"))] if segments else frames[0.0]
            else:
                for segment in segments:
                    segment["thumb"] = _picture(thumbs, source)
                section["thumb"] = _picture(thumbs, source)


def _seconds(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _classify(records: list[dict[str, Any]], thumbs: Thumbnails, report: Report) -> None:
    for record in records:
        if _is_error(record):
            report.errors.append(record)
            report.sections.append({**record, "thumb": None, "bars": [], "error": record["error"]})
            continue
        scores = [(str(label), float(score)) for label, score in record["scores"].items() if _is_number(score)]
        scores.sort(key=lambda pair: -pair[1])
        bars = [{"label": label, "score": score} for label, score in scores[:TOP_LABELS]]
        report.sections.append({**record, "thumb": _picture(thumbs, record.get("source")), "bars": bars})


def _evaluate(records: list[dict[str, Any]], thumbs: Thumbnails, report: Report, metric: str | None) -> None:
    names: list[str] = []
    for record in records:
        if _is_error(record):
            report.errors.append(record)
            continue
        names += [key for key in record if key != "id" and key not in names]
    values = {name: [float(r[name]) for r in records if _is_number(r.get(name)) and r.get(name) is not None
                     and math.isfinite(float(r[name]))] for name in names}  # fmt: skip
    if metric is None:
        metric = next((name for name in METRIC_PREFERENCE if values.get(name)), None)
        metric = metric or next((name for name in names if values[name]), names[0])
    elif metric not in names:
        raise UsageError(f"no metric {metric!r} in these scores; {option('metric')} takes one of {', '.join(names)}")
    table = [
        {
            "name": name,
            "count": len(scores),
            "mean": statistics.fmean(scores) if scores else None,
            "median": statistics.median(scores) if scores else None,
            "min": min(scores) if scores else None,
            "max": max(scores) if scores else None,
        }
        for name, scores in values.items()
    ]
    scored = [r for r in records if not _is_error(r) and _is_number(r.get(metric)) and r.get(metric) is not None
              and math.isfinite(float(r[metric]))]  # fmt: skip
    ranked = sorted(scored, key=lambda r: -float(r[metric]))
    count = min(EXTREMES, len(ranked) // 2 if len(ranked) > 1 else len(ranked))

    def item(record: dict[str, Any]) -> dict[str, Any]:
        identifier = record["id"]
        thumb = None
        if isinstance(identifier, str) and looks_like_media(identifier):
            thumb = thumbs.image(identifier)
        return {"id": identifier, "score": float(record[metric]), "thumb": thumb}

    report.evaluation = {
        "metric": metric,
        "table": table,
        "histogram": histogram([float(r[metric]) for r in scored]),
        "best": [item(r) for r in ranked[:count]],
        "worst": [item(r) for r in reversed(ranked[len(ranked) - count :])] if count else [],
        "scored": len(scored),
    }


def histogram(scores: Sequence[float], bins: int = HISTOGRAM_BINS, width: int = 480, height: int = 160) -> dict:
    """Bars of an inline SVG histogram of ``scores``: ``{"width", "height", "bars": [{x, y, w, h, low,
    high, count}]}``, the bars' geometry in the SVG's own units. Scores that are all one value have no
    spread to draw: no bars, and ``same`` (how many) says so."""
    if not scores:
        return {"width": width, "height": height, "bars": [], "low": None, "high": None, "same": 0}
    low, high = min(scores), max(scores)
    if low == high:
        return {"width": width, "height": height, "bars": [], "low": low, "high": high, "same": len(scores)}
    span = high - low
    counts = [0] * bins
    for score in scores:
        counts[min(bins - 1, int((score - low) / span * bins))] += 1
    tallest = max(counts)
    plot = height - 20  # room for the axis labels below
    bar_width = width / bins
    bars = []
    for index, count in enumerate(counts):
        bar_height = plot * count / tallest if tallest else 0
        bars.append(
            {
                "x": round(index * bar_width + 1, 2),
                "y": round(plot - bar_height, 2),
                "w": round(bar_width - 2, 2),
                "h": round(bar_height, 2),
                "low": low + span * index / bins,
                "high": low + span * (index + 1) / bins,
                "count": count,
            }
        )
    return {"width": width, "height": height, "bars": bars, "low": low, "high": high, "same": 0}


def build_report(
    records: list[dict[str, Any]],
    thumbs: Thumbnails,
    *,
    kind: str | None = None,
    title: str | None = None,
    metric: str | None = None,
    name: str = "results",
) -> Report:
    """The content of the page for ``records`` (of ``kind``, or the kind they are)."""
    kind = kind or detect_kind(records, name)
    if kind not in KINDS:
        raise UsageError(f"unknown kind of results {kind!r}; choose from {', '.join(KINDS)}")
    report = Report(kind, title or f"mmcli {kind}: {name}", len(records), link_images=thumbs.link_images,
                    thumb_size=thumbs.size)  # fmt: skip
    if kind == "retrieve":
        _retrieve(records, thumbs, report)
    elif kind == "caption":
        _caption(records, thumbs, report)
    elif kind == "classify":
        _classify(records, thumbs, report)
    else:
        _evaluate(records, thumbs, report, metric)
    report.missing = dict(thumbs.missing)
    report.images = thumbs.shown
    return report


# -- drawing -------------------------------------------------------------------------------------------------


def _environment() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    environment = Environment(
        loader=PackageLoader("mmcli.web", "templates"),
        autoescape=True,  # every value from the records is text, never markup
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["seconds"] = lambda value: f"{float(value):.2f}"
    environment.filters["score"] = lambda value: "–" if value is None else f"{float(value):.4f}"
    return environment


def _require_jinja() -> None:
    try:
        import jinja2  # noqa: F401
    except ImportError:
        raise UsageError(f"an HTML report needs Jinja2: {install_hint('web')}") from None


def render_html(report: Report) -> str:
    """The report as one HTML page (see the module's docstring for what it may load and run)."""
    _require_jinja()
    return _environment().get_template(f"report_{report.kind}.html.j2").render(report=report)


@writes("output")
def write_report(
    results: str | os.PathLike[str] | Iterable[dict[str, Any]],
    output: str | os.PathLike[str] | None = None,
    *,
    contact_sheet: str | os.PathLike[str] | None = None,
    link_images: bool = False,
    thumb_size: int = DEFAULT_THUMB_SIZE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    metric: str | None = None,
    title: str | None = None,
    overwrite: bool = False,
) -> ReportResult:
    """Draw the result file ``results`` (a JSONL path, ``-`` for stdin, or the records themselves) as an
    HTML page at ``output`` (``-``: stdout) and/or a PNG ``contact_sheet``.

    With neither given, the page goes beside the input as ``RESULTS.html`` (stdin and records: to
    stdout); with only ``contact_sheet``, only the sheet is written. Existing files are refused unless
    ``overwrite``. Relative image paths in the records are relative to the current folder; with
    ``link_images`` the page links to the images (relative to its own folder) instead of embedding them.
    """
    from mmcli.output.atomic import atomic_output
    from mmcli.output.destination import check_writable

    if thumb_size < 16:
        raise UsageError(f"{option('thumb_size')} must be at least 16 pixels, not {thumb_size}")
    from_file = isinstance(results, (str, os.PathLike)) and str(results) != "-"
    if output is None and contact_sheet is None:
        output = Path(results).with_suffix(".html") if from_file else "-"  # type: ignore[arg-type]
    html = None if output is None or str(output) == "-" else Path(output)
    sheet = None if contact_sheet is None else Path(contact_sheet)
    if html is not None and from_file and html.resolve() == Path(results).resolve():  # type: ignore[arg-type]
        raise UsageError(f"the report would replace its own input {results}; give another {option('output')}")
    for path in (html, sheet):
        if path is not None:
            check_writable(path, overwrite=overwrite)
    if output is not None:
        _require_jinja()  # before any work
    base = html.parent if html is not None else Path.cwd()  # a page on stdout links relative to the current folder
    records, name = read_results(results)
    thumbs = Thumbnails(size=thumb_size, link_images=link_images, base=base, max_pixels=max_pixels)
    report = build_report(records, thumbs, metric=metric, title=title, name=name)
    if output is not None:
        page = render_html(report)
        if html is None:
            sys.stdout.write(page)
            sys.stdout.flush()
        else:
            with atomic_output(html) as handle:
                handle.write(page)
    if sheet is not None:
        from mmcli.web.contact_sheet import draw_contact_sheet

        picture = draw_contact_sheet(report, thumb_size=thumb_size)
        with atomic_output(sheet, "wb") as handle:
            picture.save(handle, format="PNG")
    return ReportResult(
        kind=report.kind,
        records=report.records,
        errors=len(report.errors),
        images=report.images,
        missing=report.missing,
        html=html,
        contact_sheet=sheet,
    )

"""``mmcli report``: an HTML page (and a PNG contact sheet) of a result file mmcli wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmcli.cli import options as opt
from mmcli.cli.common import note, reports_errors

EXAMPLES = """\
Examples:

  mmcli retrieve --index photos.npy --query "a red car" -k 8 -o hits.jsonl && mmcli report hits.jsonl

  mmcli caption photos/ clips/ -o captions.jsonl && mmcli report captions.jsonl -o captions.html --link-images

  mmcli classify photos/ --labels cat,dog | mmcli report - -o labels.html --contact-sheet labels.png

  mmcli evaluate captions --pred pred.jsonl --refs refs.jsonl --per-item items.jsonl && mmcli report items.jsonl
"""


@reports_errors
def report(
    results: Annotated[
        str,
        typer.Argument(
            help="A JSONL file written by retrieve, caption, classify or evaluate captions --per-item; - for stdin.",
            show_default=False,
        ),
    ],
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="Write the HTML page here (- for stdout) \\[default: RESULTS.html beside the input; stdout for "
            "stdin; none with only --contact-sheet].",
            show_default=False,
        ),
    ] = None,
    contact_sheet: Annotated[
        Path | None,
        typer.Option(
            help="Also draw the report as one PNG grid of labelled thumbnails.", dir_okay=False, show_default=False
        ),
    ] = None,
    link_images: Annotated[
        bool,
        typer.Option(
            help="Link to the images (relative to the page's folder) instead of embedding them; video frames "
            "are embedded either way."
        ),
    ] = False,
    thumb_size: Annotated[int, typer.Option(min=16, help="Longest side of a thumbnail, in pixels.")] = 192,
    metric: Annotated[
        str | None,
        typer.Option(
            help="For evaluate --per-item scores: the metric the histogram and the best and worst items use "
            "\\[default: CIDEr, or the first there is].",
            show_default=False,
        ),
    ] = None,
    title: Annotated[str | None, typer.Option(help="The page's title.", show_default=False)] = None,
    max_pixels: opt.MaxPixels = 178_956_970,
    overwrite: opt.Overwrite = False,
    quiet: opt.Quiet = False,
) -> None:
    """Draw a result file as a self-contained HTML page: hits, captions, video timelines, labels, scores.

    Image paths in the records are read relative to the current folder, as the commands wrote them.
    """
    from mmcli.web.report import write_report

    done = write_report(
        results,
        output,
        contact_sheet=contact_sheet,
        link_images=link_images,
        thumb_size=thumb_size,
        max_pixels=max_pixels,
        metric=metric,
        title=title,
        overwrite=overwrite,
    )
    wrote = [str(path) for path in (done.html, done.contact_sheet) if path is not None]
    missing = f"; {len(done.missing)} image(s) could not be shown" if done.missing else ""
    errors = f"; {done.errors} error record(s)" if done.errors else ""
    where = f": wrote {', '.join(wrote)}" if wrote else ""
    note(f"{done.kind} report of {done.records} records, {done.images} images{missing}{errors}{where}", quiet=quiet)

"""``mmcli evaluate retrieval``: ranking metrics of a retrieval run, or the image<->text protocol."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from mmcli.cli.common import note, reports_errors
from mmcli.cli.evaluate_common import Format, FormatOption, Quiet, StrictOption, emit, parse_ints, strict_flag
from mmcli.errors import UsageError

EXAMPLES = """\
Examples:

  mmcli retrieve --index photos.npy --queries queries.jsonl -k 10 > run.jsonl
  mmcli evaluate retrieval --results run.jsonl --qrels qrels.jsonl --top-k 1,5,10

  mmcli evaluate retrieval --images images.npy --texts captions.npy --match-field image_id
"""


@reports_errors
def retrieval(
    results: Annotated[
        Path | None, typer.Option(help="mmcli retrieve output (JSONL, one record per query).", show_default=False)
    ] = None,
    qrels: Annotated[
        Path | None,
        typer.Option(help='Relevance judgements: {"query_id", "relevant": \\[ids]} JSONL.', show_default=False),
    ] = None,
    images: Annotated[
        Path | None, typer.Option(help="Cross-modal protocol: the image feature set.", show_default=False)
    ] = None,
    texts: Annotated[
        Path | None, typer.Option(help="Cross-modal protocol: the text feature set.", show_default=False)
    ] = None,
    match_field: Annotated[
        str, typer.Option(help="Field of the text records naming the image (by id) each text describes.")
    ] = "image_id",
    k: Annotated[str, typer.Option("--top-k", "-k", "--k", help="Cut-offs for Recall@K.")] = "1,5,10",
    fmt: FormatOption = Format.auto,
    strict: StrictOption = False,
    quiet: Quiet = False,
) -> None:
    """Recall@K, MRR, median rank, mAP and nDCG@10; or image<->text R@K in one step."""
    ks = parse_ints(k, "--top-k")
    if images is not None or texts is not None:
        if images is None or texts is None or results is not None or qrels is not None:
            raise UsageError("the cross-modal protocol takes --images and --texts (and no --results/--qrels)")
        from mmcli.metrics.files import evaluate_cross_modal_files

        protocol = evaluate_cross_modal_files(images, texts, match_field, ks, on_note=partial(note, quiet=quiet))
        emit(
            f"image<->text retrieval ({protocol.images} images, {protocol.texts} texts)", protocol.metrics, fmt,
            extra={"images": protocol.images, "texts": protocol.texts},
        )  # fmt: skip
        return
    if results is None or qrels is None:
        raise UsageError("give --results RUN.jsonl and --qrels QRELS.jsonl, or --images IMG.npy and --texts TXT.npy")
    from mmcli.metrics.files import evaluate_retrieval_files

    with strict_flag():
        report = evaluate_retrieval_files(results, qrels, ks, strict=strict, on_note=partial(note, quiet=quiet))
    scores = report.scores
    emit(f"retrieval ({scores.queries} queries)", scores.metrics, fmt, extra={"queries": scores.queries})

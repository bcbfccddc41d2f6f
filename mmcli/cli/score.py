"""``mmcli score``: a score per row of a feature set, for ``select`` and ``jq``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mmcli.cli import options as opt
from mmcli.cli.common import counted, note, reports_errors

EXAMPLES = """\
Examples:

  mmcli score photos.npy --texts caption-features.npy > clip-scores.jsonl   # image-text cosine per id

  mmcli score photos-l14.npy --head sac+logos+ava1-l14-linearMSE.pth -o aesthetic.jsonl

  mmcli select photos.npy --join clip-scores.jsonl --where 'score >= 0.3' -o filtered.npy
"""


@reports_errors
def score(
    features: Annotated[
        Path, typer.Argument(help="The feature set: NAME.npy (with its .jsonl) or a sharded DIR/.", show_default=False)
    ],
    texts: Annotated[
        Path | None,
        typer.Option(
            help="A text feature set of the same ids (the rows' captions, embedded by the same model): each "
            "row's score is its cosine to its text row (DataComp's CLIP score).",
            show_default=False,
        ),
    ] = None,
    head: Annotated[
        Path | None,
        typer.Option(
            help="A scoring head: LAION's aesthetic predictor (.pth) or linear layers as .safetensors, applied "
            "to each row.",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
    activation: Annotated[
        str | None,
        typer.Option(
            help="Between the head's layers: none or relu \\[default: the file's metadata, else none, as LAION's MLP].",
            show_default=False,
        ),
    ] = None,
    normalize: Annotated[
        bool, typer.Option(help="L2-normalise rows before the head (LAION's predictor takes normalised rows).")
    ] = True,
    output: opt.RecordsOutput = None,
    overwrite: opt.Overwrite = False,
    quiet: opt.Quiet = False,
) -> None:
    """Score each row of a feature set: one {"id", "score"} record per row.

    The score is the row's cosine to the text row of the same id (--texts: DataComp's CLIP score), or a
    scoring head's output (--head: LAION's aesthetic predictor, linear layers)."""
    from mmcli.scoring import score_set

    result = score_set(
        features, output, texts=texts, head=head, activation=activation, normalize=normalize,
        overwrite=overwrite, stream=sys.stdout if output is None else None,
    )  # fmt: skip
    unpaired = f"; {counted(result.unpaired, 'row')} without a text row of its id" if result.unpaired else ""
    note(f"scored {counted(result.rows, 'row')}{unpaired}", quiet=quiet)

"""``mmcli dedup``: near-duplicate groups in a feature set, and which row of each to keep."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mmcli.cli import options as opt
from mmcli.cli.common import counted, note, reports_errors

EXAMPLES = """\
Examples:

  mmcli dedup photos.npy > dups.jsonl

  mmcli dedup photos.npy --threshold 0.96 --keep largest -o dups.jsonl

  mmcli dedup big-set/ --method semantic --exact -o dups.jsonl

  mmcli dedup photos.npy | jq -c 'select(.keep) | {id}' > keep.jsonl
"""


@reports_errors
def dedup(
    features: Annotated[
        Path, typer.Argument(help="The feature set: NAME.npy (with its .jsonl) or a sharded DIR/.", show_default=False)
    ],
    threshold: Annotated[
        float,
        typer.Option(help="Cosine at or above which two rows are near-duplicates (0.94: clip-retrieval's, for CLIP)."),
    ] = 0.94,
    method: Annotated[
        str,
        typer.Option(
            help="exact (every pair, a block at a time), faiss (each row's nearest rows through an index; "
            "approximate), semantic (k-means clusters, each row in its 3 nearest, then pairs within each; "
            "approximate), or auto: exact below 100,000 rows, else semantic."
        ),
    ] = "auto",
    keep: Annotated[
        str,
        typer.Option(
            help="Which row of a group is kept: first, last, largest (file on disk), or field:NAME[:min|max] "
            "(the record whose NAME is largest, or smallest)."
        ),
    ] = "first",
    exact: Annotated[bool, typer.Option("--exact", help="Also join rows whose files hold the same bytes.")] = False,
    neighbors: Annotated[int, typer.Option(min=2, help="--method faiss: nearest rows looked at for each row.")] = 16,
    clusters: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="--method semantic: k-means clusters \\[default: the square root of the rows].",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="--method semantic: the k-means seed.")] = 0,
    output: opt.RecordsOutput = None,
    overwrite: opt.Overwrite = False,
    quiet: opt.Quiet = False,
) -> None:
    """Find near-duplicate rows of a feature set: one {"id", "group", "keep", "duplicate_of"} record per row.

    Groups are the connected components of the pairs at or above --threshold (a chain of
    near-duplicates is one group); one row of each is kept (--keep). Each dropped row's record also
    gives its cosine to the kept row ("similarity"); a summary goes to stderr."""
    from mmcli.dedup import dedup_set

    result = dedup_set(
        features, output, overwrite=overwrite, stream=sys.stdout if output is None else None, threshold=threshold,
        method=method, keep=keep, exact=exact, neighbors=neighbors, clusters=clusters, seed=seed,
    )  # fmt: skip
    found = result.found
    if found.note:
        note(found.note, quiet=quiet)
    copies = f", {counted(found.exact_copies, 'exact copy')}" if found.exact_copies else ""
    note(
        f"{counted(result.rows, 'row')}: {counted(found.duplicate_groups, 'group')} of near-duplicates "
        f"({counted(found.pairs, 'pair')} at cosine >= {threshold:g}, {found.method}{copies}); "
        f"{found.dropped:,} to drop, {result.rows - found.dropped:,} kept",
        quiet=quiet,
    )

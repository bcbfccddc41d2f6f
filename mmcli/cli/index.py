"""``mmcli index build``: an approximate-search index beside a feature set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from mmcli.cli.common import Command, Group, note, reports_errors

EXAMPLES = """\
Examples:

  mmcli index build photos.npy

  mmcli index build photos.npy --kind hnsw --overwrite
"""

app = typer.Typer(
    cls=Group, help="Approximate-search indexes for large feature sets (needs faiss-cpu).", no_args_is_help=True
)


@app.command("build", cls=Command, epilog=EXAMPLES)
@reports_errors
def build(
    features: Annotated[Path, typer.Argument(help="Feature set (.npy with its .jsonl, or a sharded DIR/).")],
    kind: Annotated[
        Literal["ivf", "hnsw"], typer.Option(help="ivf (fast to build) or hnsw (high recall, slow to build).")
    ] = "ivf",
    nlist: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="IVF lists \\[default: the square root of the rows, with at least 39 rows a list].",
            show_default=False,
        ),
    ] = None,
    m: Annotated[int, typer.Option(min=4, help="HNSW links per node.")] = 32,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing index.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary on stderr.")] = False,
) -> None:
    """Build FEATS.faiss beside FEATS.npy (DIR/set.faiss in a sharded DIR/); later retrieve calls reuse it."""
    from mmcli.ann import index_feature_set

    target, rows = index_feature_set(features, kind=kind, nlist=nlist, m=m, overwrite=overwrite)
    note(f"wrote {target} ({kind}, {rows} rows)", quiet=quiet)

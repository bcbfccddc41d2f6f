"""``mmcli select``: a new feature set of the rows chosen by id, by conditions, or by a score."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmcli.cli import options as opt
from mmcli.cli.common import counted, note, reports_errors

EXAMPLES = """\
Examples:

  mmcli dedup photos.npy -o dups.jsonl && mmcli select photos.npy --join dups.jsonl --where 'keep == true' -o unique.npy

  mmcli select photos.npy --ids keep.jsonl -o kept.npy

  mmcli select photos.npy --join labels.jsonl --where 'label != nsfw' --where 'score >= 0.5' -o safe.npy

  mmcli select photos.npy --join scores.jsonl --fraction 0.3 --by score -o top30.npy
"""


@reports_errors
def select(
    features: Annotated[
        Path, typer.Argument(help="The feature set: NAME.npy (with its .jsonl) or a sharded DIR/.", show_default=False)
    ],
    output: Annotated[
        str,
        typer.Option(
            "--output", "-o", help="The new feature set: NAME.npy, or DIR/ for a sharded set.", show_default=False
        ),
    ],
    ids: Annotated[
        Path | None,
        typer.Option(help='Keep only the rows whose id is in this JSONL file of {"id"} records.', show_default=False),
    ] = None,
    join: Annotated[
        list[Path] | None,
        typer.Option(
            help="JSONL records joined to the rows by id (dedup, classify, score output), whose fields --where "
            "and --by read (repeatable; a later file wins a field).",
            show_default=False,
        ),
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option(
            help="A condition FIELD OP VALUE on the row's record and joined fields, OP one of == != >= <= > <, "
            "VALUE a JSON literal or a word: 'keep == true', 'score >= 0.3', 'label != nsfw' (repeatable; all hold).",
            show_default=False,
        ),
    ] = None,
    fraction: Annotated[
        float | None,
        typer.Option(help="Keep the top fraction (0-1] of the rows by --by, after --where.", show_default=False),
    ] = None,
    by: Annotated[str | None, typer.Option(help="The number --fraction ranks by.", show_default=False)] = None,
    media_shards: Annotated[
        Path | None,
        typer.Option(
            help="Also write the chosen rows' media into this folder as webdataset shards (the file's bytes, the "
            "record as .json, the caption as .txt).",
            show_default=False,
            file_okay=False,
        ),
    ] = None,
    shard_samples: Annotated[int, typer.Option(min=1, help="Samples a media shard holds.")] = 1000,
    shard_rows: Annotated[
        int | None,
        typer.Option(min=1, help="Rows a part of a sharded -o DIR/ holds \\[default: 100000].", show_default=False),
    ] = None,
    overwrite: opt.Overwrite = False,
    quiet: opt.Quiet = False,
) -> None:
    """Write a new feature set of the rows you choose: by id, by conditions, or the top fraction by a score.

    --ids keeps the rows listed in a JSONL file; --where tests their records and the records joined by
    --join; --fraction keeps the best share by --by. The rows keep their order, vectors and records;
    --media-shards also writes their pictures as webdataset shards."""
    from mmcli.selection import select_rows

    result = select_rows(
        features, output, ids_from=ids, join=join or [], where=where or [], fraction=fraction, by=by,
        media_shards=media_shards, shard_samples=shard_samples, shard_rows=shard_rows, overwrite=overwrite,
    )  # fmt: skip
    note(f"wrote {counted(result.rows, 'row')} of {result.total:,} to {result.output}", quiet=quiet)
    if result.shards is not None:
        left = f"; {counted(result.not_files, 'row')} whose source is not a file left out" if result.not_files else ""
        note(f"wrote {counted(len(result.shards), 'media shard')} to {media_shards}{left}", quiet=quiet)

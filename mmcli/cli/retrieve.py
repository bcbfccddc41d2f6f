"""``mmcli retrieve``: search a feature set with text, image or vector queries."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from mmcli.cli import options as opt
from mmcli.cli.common import EXIT_ITEMS_FAILED, note, quiet_libraries, reports_errors
from mmcli.errors import UsageError

EXAMPLES = """\
Examples:

  mmcli retrieve --index photos.npy --query "a red car at night" -k 5

  mmcli retrieve --index photos.npy --query-image examples/photos/chelsea.jpg --exclude-self

  mmcli retrieve --index photos.npy --queries captions.npy -k 1 | jq -r '.hits[0].id'
"""


class AnnMode(str, Enum):
    auto = "auto"
    faiss = "faiss"
    exact = "exact"


ANN_PANEL = "Approximate search"


def _knob(help: str) -> Any:
    return Annotated[int | None, typer.Option(min=1, help=help, show_default=False, rich_help_panel=ANN_PANEL)]


NProbe = _knob("IVF lists to visit (more: better recall, slower).")
Ef = _knob("HNSW search breadth (more: better recall, slower).")


@reports_errors
def retrieve(
    index: Annotated[
        Path,
        typer.Option(
            "--index", "-i", help="Feature set to search (.npy with its .jsonl, or a sharded DIR/).", show_default=False
        ),
    ] = ...,  # type: ignore[assignment]
    query: Annotated[
        list[str] | None, typer.Option("--query", help="A text query (repeatable).", show_default=False)
    ] = None,
    query_image: Annotated[
        list[str] | None, typer.Option(help="An image query (repeatable).", show_default=False)
    ] = None,
    queries: Annotated[
        str | None,
        typer.Option(
            help="Queries from a file: .txt lines, JSONL with text/path/id, a feature set .npy, or - for stdin.",
            show_default=False,
        ),
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Hits per query.")] = 10,
    threshold: Annotated[float | None, typer.Option(help="Drop hits scoring below this.", show_default=False)] = None,
    exclude_self: Annotated[bool, typer.Option(help="Skip the index row whose id is the query's id.")] = False,
    with_metadata: Annotated[bool, typer.Option(help="Copy each hit's index record fields into the hit.")] = False,
    ann: Annotated[
        AnnMode,
        typer.Option(
            help="auto: use FEATS.faiss when it exists and the set is large; faiss: always approximate; exact: never.",
            rich_help_panel=ANN_PANEL,
        ),
    ] = AnnMode.auto,
    save_index: Annotated[
        bool,
        typer.Option(help="With --ann faiss, build FEATS.faiss if missing and keep it.", rich_help_panel=ANN_PANEL),
    ] = False,
    nprobe: NProbe = None,
    ef: Ef = None,
    output: opt.RecordsOutput = None,
    model: opt.QueryModel = None,
    batch_size: opt.QueryBatchSize = 16,
    device: opt.DeviceOption = opt.Device.auto,
    dtype: opt.DTypeOption = opt.DType.auto,
    overwrite: opt.Overwrite = False,
    trust_remote_code: opt.TrustRemoteCode = False,
    quiet: opt.Quiet = False,
) -> None:
    """Search a feature set: one {"query_id", "query", "hits": [...]} record per query."""
    from mmcli.output.destination import Destination, check_writable
    from mmcli.output.feature_set import is_feature_set_path, read_feature_set
    from mmcli.output.records import RecordWriter
    from mmcli.retrieval import hits_for
    from mmcli.search import embed_queries, search_set

    if not (query or query_image or queries):
        raise UsageError("no queries: give --query, --query-image or --queries (- for stdin)")
    if output is not None:
        check_writable(output, overwrite=overwrite)
    feature_set = read_feature_set(index)
    if save_index:  # refused before any query is embedded where the index could not be kept
        from mmcli.ann import index_path

        check_writable(index_path(feature_set.path), overwrite=True)
    if query or query_image or (queries and not is_feature_set_path(queries)):
        quiet_libraries()
    found = embed_queries(
        feature_set,
        texts=query or [],
        images=query_image or [],
        queries=queries,
        model=model,
        batch_size=batch_size,
        device=device.value,
        dtype=dtype.value,
        trust_remote_code=trust_remote_code,
    )
    for failure in found.failures:
        print(f"mmcli: skipping query {failure['query']}: {failure['error']}", file=sys.stderr)
    if found.note:
        note(found.note, quiet=quiet)
    row_of = {record_id: row for row, record_id in enumerate(feature_set.ids)} if exclude_self else {}
    result = search_set(
        feature_set,
        found.vectors,
        top_k,
        ann=ann.value,
        nprobe=nprobe,
        ef=ef,
        save_index=save_index,
        threshold=threshold,
        exclude_rows=[row_of.get(q) for q in found.ids] if exclude_self else None,
    )
    with Destination(output), RecordWriter(output, fmt="jsonl") as writer:
        for query_id, text, rows, scores in zip(found.ids, found.texts, result.rows, result.scores, strict=True):
            hits = hits_for(rows, scores, feature_set.records, with_metadata=with_metadata)
            writer.write({"query_id": query_id, "query": text, "hits": hits})
        for failure in found.failures:
            writer.write(failure)
    plural = "query" if len(found.ids) == 1 else "queries"
    note(f"searched {len(feature_set)} rows for {len(found.ids)} {plural}{_how(result)}", quiet=quiet)
    if found.failures:
        raise typer.Exit(EXIT_ITEMS_FAILED)


def _how(result: Any) -> str:
    """How the search was made, where it was not a plain exact scan."""
    if result.fallback:
        return f", exactly: {result.fallback}"
    if result.backend != "faiss":
        return ""
    if result.index_file is not None:
        return f" through {result.index_file}" + (" (built now)" if result.built else "")
    return " through a faiss index built for this search (not kept: add --save-index, or run mmcli index build)"

"""``mmcli retrieve``: search a feature set with text, image or vector queries."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from mmcli.cli import options as opt
from mmcli.cli.common import EXIT_ITEMS_FAILED, note, quiet_libraries, reports_errors
from mmcli.errors import InputError, UsageError

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


ANN_AUTO_ROWS = 100_000  # below this, exact search is fast enough that approximation buys nothing


@reports_errors
def retrieve(
    index: Annotated[
        Path,
        typer.Option(
            "--index", "-i", help="Feature set to search (.npy with its .jsonl).", show_default=False, dir_okay=False
        ),
    ] = ...,  # type: ignore[assignment]
    query: Annotated[
        list[str] | None, typer.Option("--query", "-q", help="A text query (repeatable).", show_default=False)
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
            rich_help_panel="Approximate search",
        ),
    ] = AnnMode.auto,
    save_index: Annotated[
        bool,
        typer.Option(
            help="With --ann faiss, build FEATS.faiss if missing and keep it.", rich_help_panel="Approximate search"
        ),
    ] = False,
    nprobe: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="IVF lists to visit (more: better recall, slower).",
            show_default=False,
            rich_help_panel="Approximate search",
        ),
    ] = None,
    ef: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="HNSW search breadth (more: better recall, slower).",
            show_default=False,
            rich_help_panel="Approximate search",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write JSONL here instead of stdout.", dir_okay=False)
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Embed queries with this model \\[default: the model named in the index's records].",
            show_default=False,
            rich_help_panel="Model",
        ),
    ] = None,
    batch_size: opt.BatchSize = 16,
    device: opt.DeviceOption = opt.Device.auto,
    dtype: opt.DTypeOption = opt.DType.auto,
    overwrite: opt.Overwrite = False,
    trust_remote_code: opt.TrustRemoteCode = False,
    quiet: opt.Quiet = False,
) -> None:
    """Search a feature set: one {"query_id", "query", "hits": [...]} record per query."""
    from mmcli.io.atomic import check_writable
    from mmcli.io.features import read_feature_set
    from mmcli.io.records import RecordWriter
    from mmcli.retrieval import hits_for, search

    if not (query or query_image or queries):
        raise UsageError("no queries: give --query, --query-image or --queries (- for stdin)")
    if output is not None:
        check_writable(output, overwrite=overwrite)
    feature_set = read_feature_set(index)
    query_ids, query_texts, vectors, failures = _query_vectors(
        feature_set,
        query or [],
        query_image or [],
        queries,
        model=model,
        batch_size=batch_size,
        device=device.value,
        dtype=dtype.value,
        trust_remote_code=trust_remote_code,
    )
    if vectors.shape[0] and vectors.shape[1] != feature_set.vectors.shape[1]:
        raise UsageError(
            f"queries have {vectors.shape[1]} dimensions but {index} has "
            f"{feature_set.vectors.shape[1]}: embed them with the index's model"
        )
    row_of = {record_id: row for row, record_id in enumerate(feature_set.ids)} if exclude_self else {}
    result = search(
        feature_set.vectors,
        vectors,
        top_k,
        threshold=threshold,
        exclude_rows=[row_of.get(q) for q in query_ids] if exclude_self else None,
    )
    with RecordWriter(output, fmt="jsonl") as writer:
        for query_id, text, rows, scores in zip(query_ids, query_texts, result.rows, result.scores, strict=True):
            writer.write(
                {
                    "query_id": query_id,
                    "query": text,
                    "hits": hits_for(rows, scores, feature_set.records, with_metadata=with_metadata),
                }
            )
        for failure in failures:
            writer.write(failure)
    plural = "query" if len(query_ids) == 1 else "queries"
    note(f"searched {len(feature_set)} rows for {len(query_ids)} {plural}", quiet=quiet)
    if failures:
        raise typer.Exit(EXIT_ITEMS_FAILED)


def _ann_index(mode: AnnMode, npy: Path, feature_set: Any, *, save_index: bool, quiet: bool) -> Any:
    """The faiss index to search with, or None for exact search."""
    from mmcli.ann import build_index, index_path, load_index
    from mmcli.ann import save_index as save

    present = index_path(npy).exists()
    if mode is AnnMode.exact or (mode is AnnMode.auto and not (present and len(feature_set) >= ANN_AUTO_ROWS)):
        return None
    if present:
        try:
            return load_index(npy, feature_set.vectors)
        except InputError as exc:
            if mode is AnnMode.faiss:
                raise
            note(f"searching exactly: {exc}", quiet=quiet)  # auto: a stale index is never used
            return None
    note(
        f"building an approximate index over {len(feature_set)} rows"
        + ("" if save_index else " (not kept: add --save-index, or run mmcli index build)"),
        quiet=quiet,
    )
    index = build_index(feature_set.vectors)
    if save_index:
        save(index, npy, feature_set.vectors)
    return index


def _query_vectors(
    feature_set: Any, texts: list[str], images: list[str], queries: str | None, *, model: str | None, **load: Any
) -> tuple[list[str], list[str], Any, list[dict]]:
    """Query ids, query texts (or paths), an (N, D) matrix, and error records for queries that failed."""
    import numpy as np

    from mmcli.io.features import read_feature_set
    from mmcli.io.inputs import InputItem, discover_texts, queries_from_stream

    items: list[InputItem] = list(discover_texts([], texts)) if texts else []
    items += [InputItem(id=path, modality="image", source=path, path=path) for path in images]
    ids: list[str] = []
    sources: list[str] = []
    blocks = []
    if queries and queries.endswith(".npy"):
        given = read_feature_set(queries)
        ids += given.ids
        sources += [str(record.get("source")) for record in given.records]
        blocks.append(np.asarray(given.vectors, dtype=np.float32))
    elif queries == "-":
        items += list(queries_from_stream(sys.stdin, "<stdin>"))
    elif queries:
        try:
            with open(queries, encoding="utf-8") as handle:
                items += list(queries_from_stream(handle, queries))
        except OSError as exc:
            raise InputError(f"{queries}: cannot read ({exc.strerror})") from None
    failures: list[dict] = []
    if items:
        quiet_libraries()
        from mmcli.encoders import load_encoder
        from mmcli.extract import embed_items

        name = model or _index_model(feature_set)
        encoder = load_encoder(
            name, device=load["device"], dtype=load["dtype"], trust_remote_code=load["trust_remote_code"]
        )
        for modality in {item.modality for item in items}:
            if not encoder.supports(modality):
                raise UsageError(
                    f"model {name!r} cannot embed {modality} queries; it embeds {', '.join(sorted(encoder.modalities))}"
                )
        rows = []
        for batch in embed_items(items, encoder, batch_size=load["batch_size"]):
            for outcome in batch:
                if outcome.error:
                    print(f"mmcli: skipping query {outcome.item.source}: {outcome.error}", file=sys.stderr)
                    failures.append({"query_id": outcome.item.id, "query": outcome.item.source, "error": outcome.error})
                else:
                    ids.append(outcome.item.id)
                    sources.append(outcome.item.source)
                    rows.append(outcome.value)
        if rows:
            blocks.append(np.stack(rows))
    width = feature_set.vectors.shape[1]
    vectors = np.concatenate(blocks) if blocks else np.zeros((0, width), np.float32)
    return ids, sources, vectors, failures


def _index_model(feature_set: Any) -> str:
    if feature_set.fused:
        raise UsageError(
            f"{feature_set.path} holds fused rows, which live in no single model's space: text and image "
            "queries cannot be embedded into it; query it with fused rows (--queries FUSED.npy)"
        )
    models = feature_set.models
    if len(models) != 1:
        raise UsageError(
            f"{feature_set.path} was made by {len(models) or 'no'} named models; "
            "say which embeds the queries with --model"
        )
    return models.pop()

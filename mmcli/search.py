"""Searching a feature set: the run behind ``mmcli retrieve``, exact or through faiss.

:func:`search_set` owns the choice between exact search (:func:`mmcli.retrieval.search`) and a faiss
index (:mod:`mmcli.ann`), so every caller gets the same rule: ``ann="auto"`` uses a saved
``FEATS.faiss`` only when it is fresh and the set is large enough for approximation to pay
(:data:`ANN_AUTO_ROWS`), and says why when it searches exactly instead. :func:`embed_queries` turns
text, image and vector queries into one matrix in the set's own vector space.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from mmcli.errors import InputError, UsageError, option
from mmcli.output.feature_set import check_finite, require_rows
from mmcli.output.npy import FeatureSet
from mmcli.retrieval import SearchResult, search

ANN_MODES = ("auto", "faiss", "exact")
ANN_AUTO_ROWS = 100_000  # below this, exact search is fast enough that approximation buys nothing


@dataclass
class SetSearch(SearchResult):
    """A :class:`~mmcli.retrieval.SearchResult` that also says how it was found.

    ``backend`` is ``"exact"`` or ``"faiss"``; ``index_file`` the saved index that answered (``None``
    for exact search, or for an index built for this search alone); ``built`` whether an index was
    built for it, ``saved`` whether that index was kept; ``fallback`` why ``ann="auto"`` searched
    exactly although an index file exists.
    """

    backend: str = "exact"
    index_file: Path | None = None
    built: bool = False
    saved: bool = False
    fallback: str | None = None


def search_set(
    feature_set: FeatureSet,
    queries: np.ndarray,
    k: int,
    *,
    ann: Literal["auto", "faiss", "exact"] = "auto",
    nprobe: int | None = None,
    ef: int | None = None,
    save_index: bool = False,
    threshold: float | None = None,
    exclude_rows: Sequence[int | None] | None = None,
) -> SetSearch:
    """Top-``k`` rows of ``feature_set`` for each query row.

    ``ann``: ``exact`` scans every row; ``faiss`` searches ``FEATS.faiss`` beside the set (built for
    this search if missing, and kept with ``save_index``), refusing one built from another version
    of the ``.npy``; ``auto`` uses a fresh saved index when the set has at least
    :data:`ANN_AUTO_ROWS` rows, else searches exactly. ``nprobe`` (IVF) and ``ef`` (HNSW) trade
    speed for recall. ``exclude_rows[i]`` is a row query ``i`` must not return.
    """
    if ann not in ANN_MODES:
        raise UsageError(f"unknown search mode {ann!r}; choose from {', '.join(ANN_MODES)}")
    require_rows(feature_set)  # (non-finite rows are refused by the search itself, as it reads them)
    if ann != "faiss" and save_index:
        raise UsageError(
            f"{option('save_index')} keeps the index that a faiss search builds: it needs {option('ann', 'faiss')}"
        )
    if ann == "exact" and (nprobe is not None or ef is not None):
        given = option("nprobe") if nprobe is not None else option("ef")
        raise UsageError(f"{given} tunes approximate search; exact search takes no such setting")
    index, result = _faiss_index(feature_set, ann, save_index=save_index)
    if index is None:
        exact = search(feature_set.vectors, queries, k, threshold=threshold, exclude_rows=exclude_rows)
        return SetSearch(exact.rows, exact.scores, fallback=result.fallback)
    from mmcli.ann import ann_search

    # An excluded row may be among the k best: ask for one more and drop it.
    extra = 1 if exclude_rows is not None else 0
    found = ann_search(index, queries, min(k + extra, len(feature_set)), nprobe=nprobe, ef=ef, threshold=threshold)
    result.rows, result.scores = [], []
    for position, (rows, scores) in enumerate(zip(found.rows, found.scores, strict=True)):
        excluded = exclude_rows[position] if exclude_rows is not None else None
        keep = rows != excluded if excluded is not None else np.ones(len(rows), bool)
        result.rows.append(rows[keep][:k])
        result.scores.append(scores[keep][:k])
    return result


def _faiss_index(feature_set: FeatureSet, ann: str, *, save_index: bool) -> tuple[Any, SetSearch]:
    """The faiss index to search with (``None``: search exactly) and the result to fill in."""
    from mmcli.ann import index_path

    saved = index_path(feature_set.path)
    present = saved.exists()
    result = SetSearch([], [])
    if ann == "exact" or (ann == "auto" and not present):
        return None, result
    if ann == "auto" and len(feature_set) < ANN_AUTO_ROWS:
        result.fallback = f"{saved.name} is not used below {ANN_AUTO_ROWS:,} rows (this set has {len(feature_set):,})"
        return None, result
    from mmcli.ann import build_index, load_index
    from mmcli.ann import save_index as save
    from mmcli.output.destination import writing

    if present:
        try:
            index = load_index(feature_set.path, feature_set.vectors)
        except InputError as exc:
            if ann == "faiss":
                raise
            result.fallback = str(exc)  # auto: a stale index is never used
            return None, result
        result.backend, result.index_file = "faiss", saved
        return index, result
    check_finite(feature_set)  # faiss would index NaN rows without a word
    with writing(saved if save_index else None, overwrite=True):  # refused before the build if it cannot be kept
        index = build_index(feature_set.vectors)
        result.backend, result.built = "faiss", True
        if save_index:
            result.index_file, result.saved = save(index, feature_set.path, feature_set.vectors), True
    return index, result


def faiss_index_of(feature_set: FeatureSet) -> tuple[Any, SetSearch]:
    """The faiss index ``search_set(..., ann="faiss")`` searches: ``FEATS.faiss`` where it is fresh, else
    one built in memory; with how it was had (``index_file``, ``built``), for callers that search it
    many times (:mod:`mmcli.dedup`)."""
    require_rows(feature_set)
    return _faiss_index(feature_set, "faiss", save_index=False)


@dataclass
class Queries:
    """Queries in a feature set's vector space: ``ids``, ``texts`` (the query text or image path),
    one row of ``vectors`` each, and an error record per query that could not be embedded."""

    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    vectors: np.ndarray | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None  # texts longer than the model reads, said once


def embed_queries(
    feature_set: FeatureSet,
    *,
    texts: Iterable[str] = (),
    images: Iterable[str] = (),
    query_items: Iterable[Any] = (),
    queries: str | None = None,
    stdin: IO[str] | None = None,
    model: str | None = None,
    encoder: Any = None,
    batch_size: int = 16,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
) -> Queries:
    """Text and image queries embedded with ``model`` (default: the model that made the set), and
    ``queries`` from a file: ``.txt`` lines, JSONL with ``text``/``path``/``id``, a feature set
    ``.npy`` or sharded ``DIR/`` (used as it is), or ``-`` for ``stdin``.

    ``query_items`` are :class:`~mmcli.io.inputs.InputItem` queries made by the caller (an uploaded image's
    bytes as a blob), embedded after the others. A caller that embeds queries again and again (a
    server) passes its loaded ``encoder`` (whose model is then ``model``, for messages), so every call
    embeds exactly as one ``retrieve`` run does, without loading the model each time."""
    from mmcli.io.inputs import discover_texts, queries_from_stream
    from mmcli.items import STDIN, InputItem
    from mmcli.output.feature_set import is_feature_set_path, read_feature_set

    texts, images = list(texts), list(images)
    items: list[InputItem] = list(discover_texts([], texts)) if texts else []
    items += [InputItem(id=path, modality="image", source=path, path=path) for path in images]
    found = Queries()
    blocks = []
    if queries and is_feature_set_path(queries):
        given = read_feature_set(queries)
        same_width = given.vectors.shape[1] == feature_set.vectors.shape[1]  # (else the width is refused below)
        if model is None and same_width and given.models and feature_set.models and given.models != feature_set.models:
            # one width does not make one space: two models' rows are not comparable
            raise UsageError(
                f"{queries} was made by {_models(given.models)} but {feature_set.path} by "
                f"{_models(feature_set.models)}: their rows live in different spaces; embed the queries with "
                f"the index's model, or pass {option('model')} to search with them anyway"
            )
        found.ids += given.ids
        found.texts += [str(record.get("source")) for record in given.records]
        blocks.append(np.asarray(given.vectors, dtype=np.float32))
    elif queries == STDIN:
        import sys

        items += list(queries_from_stream(stdin or sys.stdin, "<stdin>"))
    elif queries:
        try:
            with open(queries, encoding="utf-8", errors="surrogateescape") as handle:
                items += list(queries_from_stream(handle, queries))
        except OSError as exc:
            raise InputError(f"{queries}: cannot read ({exc.strerror})") from None
    items += list(query_items)
    if items:
        from mmcli.encoders import load_encoder
        from mmcli.extract import embed_items

        name = model or (encoder.name if encoder is not None else index_model(feature_set))
        if encoder is None:
            encoder = load_encoder(name, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        for modality in {item.modality for item in items}:
            if not encoder.supports(modality):
                raise UsageError(
                    f"model {name!r} cannot embed {modality} queries; it embeds {', '.join(sorted(encoder.modalities))}"
                )
        rows = []
        cut_before = encoder.texts_cut
        for batch in embed_items(items, encoder, batch_size=batch_size):
            for outcome in batch:
                if outcome.error:
                    record = {"query_id": outcome.item.id, "query": outcome.item.shown_source, "error": outcome.error}
                    found.failures.append(record)
                else:
                    found.ids.append(outcome.item.id)
                    found.texts.append(outcome.item.shown_source)
                    rows.append(outcome.value)
        if rows:
            blocks.append(np.stack(rows))
        if encoder.texts_cut > cut_before:
            found.note = encoder.texts_cut_note(encoder.texts_cut - cut_before)
    width = feature_set.vectors.shape[1]
    found.vectors = np.concatenate(blocks) if blocks else np.zeros((0, width), np.float32)
    if not found.ids and not found.failures:
        raise UsageError(f"no queries: {queries or 'the arguments'} held none")
    if found.vectors.shape[0] and found.vectors.shape[1] != width:
        raise UsageError(
            f"queries have {found.vectors.shape[1]} dimensions but {feature_set.path} has {width}: "
            "embed them with the index's model"
        )
    return found


def _models(models: set[str]) -> str:
    return " and ".join(repr(name) for name in sorted(models))


def index_model(feature_set: FeatureSet) -> str:
    """The one model that made ``feature_set``'s rows, which must embed text and image queries for it."""
    if feature_set.fused:
        raise UsageError(
            f"{feature_set.path} holds fused rows, which live in no single model's space: text and image "
            f"queries cannot be embedded into it; query it with fused rows ({option('queries')} FUSED.npy)"
        )
    models = feature_set.models
    if len(models) != 1:
        raise UsageError(
            f"{feature_set.path} was made by {len(models) or 'no'} named models; "
            f"say which embeds the queries with {option('model')}"
        )
    return models.pop()

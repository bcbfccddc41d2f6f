"""Exact nearest-neighbour search over feature sets, in bounded memory.

The index is read in chunks of rows (from a memory-mapped ``.npy``), each chunk is scored against
all queries by inner product, and a running top-k is merged chunk by chunk: memory is bounded by
the chunk, not the index. Ties are broken by row order, so results are deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_CHUNK_ROWS = 65_536


@dataclass
class SearchResult:
    """Per query, the ``rows`` of the best hits (best first) and their ``scores``."""

    rows: list[np.ndarray]
    scores: list[np.ndarray]


def search(
    index: np.ndarray,
    queries: np.ndarray,
    k: int,
    *,
    exclude_rows: Sequence[int | None] | None = None,
    threshold: float | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> SearchResult:
    """Top-``k`` rows of ``index`` by inner product with each query (cosine, for normalised rows).

    ``exclude_rows[i]`` is a row query ``i`` must not return (the query itself, when it was drawn
    from the index); ``threshold`` drops hits scoring below it. Float16 indexes are scored in float32.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim != 2 or index.ndim != 2 or queries.shape[1] != index.shape[1]:
        raise ValueError(f"queries of shape {queries.shape} cannot search an index of shape {index.shape}")
    count = queries.shape[0]
    best_rows = [np.empty(0, np.int64) for _ in range(count)]
    best_scores = [np.empty(0, np.float32) for _ in range(count)]
    if k <= 0:
        return SearchResult(best_rows, best_scores)
    for start in range(0, index.shape[0], chunk_rows):
        chunk = np.asarray(index[start : start + chunk_rows], dtype=np.float32)
        scores = queries @ chunk.T
        if exclude_rows is not None:
            for query, row in enumerate(exclude_rows):
                if row is not None and start <= row < start + chunk.shape[0]:
                    scores[query, row - start] = -np.inf
        kept = min(k, chunk.shape[0])
        kth = np.partition(scores, chunk.shape[0] - kept, axis=1)[:, chunk.shape[0] - kept]
        for query in range(count):
            candidates = np.flatnonzero(scores[query] >= kth[query])  # every tie at the boundary, in row order
            rows = np.concatenate([best_rows[query], candidates + start])
            values = np.concatenate([best_scores[query], scores[query, candidates]])
            order = np.lexsort((rows, -values))[:k]
            best_rows[query], best_scores[query] = rows[order], values[order]
    for query in range(count):
        keep = np.isfinite(best_scores[query])
        if threshold is not None:
            keep &= best_scores[query] >= threshold
        best_rows[query], best_scores[query] = best_rows[query][keep], best_scores[query][keep]
    return SearchResult(best_rows, best_scores)


def hits_for(
    result_rows: np.ndarray, result_scores: np.ndarray, records: Sequence[dict], *, with_metadata: bool = False
) -> list[dict]:
    """Hit records ``{"rank", "id", "score", "source"}`` (plus the index record's other keys on request)."""
    hits = []
    for rank, (row, score) in enumerate(zip(result_rows.tolist(), result_scores.tolist(), strict=True), start=1):
        record = records[row]
        hit = {"rank": rank, "id": record["id"], "score": round(float(score), 6), "source": record.get("source")}
        if with_metadata:
            hit.update((key, value) for key, value in record.items() if key not in hit)
        hits.append(hit)
    return hits

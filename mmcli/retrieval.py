"""Exact nearest-neighbour search over feature sets, in bounded memory.

The index is read in chunks of rows (from a memory-mapped ``.npy``), each chunk is scored against
all queries by inner product, and a running top-k is merged chunk by chunk: memory is bounded by
the chunk, not the index. Ties are broken by row order, so results are deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
    import torch

    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim != 2 or index.ndim != 2 or queries.shape[1] != index.shape[1]:
        raise ValueError(f"queries of shape {queries.shape} cannot search an index of shape {index.shape}")
    count = queries.shape[0]
    k = min(k, index.shape[0])
    if k <= 0 or count == 0:
        return SearchResult([np.empty(0, np.int64)] * count, [np.empty(0, np.float32)] * count)
    query_tensor = torch.from_numpy(queries)
    best_scores = torch.full((count, k), -torch.inf)
    best_rows = torch.full((count, k), -1, dtype=torch.int64)
    with torch.inference_mode():
        for start in range(0, index.shape[0], chunk_rows):
            chunk = torch.from_numpy(np.ascontiguousarray(index[start : start + chunk_rows], dtype=np.float32))
            scores = query_tensor @ chunk.T
            if exclude_rows is not None:
                for query, row in enumerate(exclude_rows):
                    if row is not None and start <= row < start + chunk.shape[0]:
                        scores[query, row - start] = -torch.inf
            kept = min(k, chunk.shape[0])
            top_scores, top_rows = torch.topk(scores, kept, dim=1)
            # topk picks arbitrarily among scores tied with the k-th; where such a tie reaches past
            # the cut, take the tied rows in row order instead, so results never depend on it.
            tied = (scores >= top_scores[:, -1:]).sum(dim=1) > kept
            for query in torch.nonzero(tied).flatten().tolist():
                candidates = torch.nonzero(scores[query] >= top_scores[query, -1]).flatten()
                order = _rank(scores[query, candidates], candidates)[:kept]
                top_scores[query], top_rows[query] = scores[query, candidates[order]], candidates[order]
            merged_scores = torch.cat([best_scores, top_scores], dim=1)
            merged_rows = torch.cat([best_rows, top_rows + start], dim=1)
            order = _rank(merged_scores, merged_rows)[:, :k]
            best_scores, best_rows = merged_scores.gather(1, order), merged_rows.gather(1, order)
    rows_out, scores_out = [], []
    for query in range(count):
        keep = torch.isfinite(best_scores[query])
        if threshold is not None:
            keep &= best_scores[query] >= threshold
        rows_out.append(best_rows[query][keep].numpy())
        scores_out.append(best_scores[query][keep].numpy())
    return SearchResult(rows_out, scores_out)


def _rank(scores: Any, rows: Any) -> Any:
    """Indices that order candidates best first, equal scores by row (two stable sorts)."""
    import torch

    by_row = torch.argsort(rows, dim=-1, stable=True)
    by_score = torch.argsort(-scores.gather(-1, by_row), dim=-1, stable=True)
    return by_row.gather(-1, by_score)


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

"""Exact nearest-neighbour search over feature sets, in bounded memory.

The index is read in chunks of rows (from a memory-mapped ``.npy``), each chunk is scored against
all queries by inner product, and a running top-k is merged chunk by chunk: memory is bounded by
the chunk, not the index. Ties are broken by row order, so results are deterministic. Many
queries at once go through :class:`Int8Screen`, which scores in float32 only the rows an int8
product cannot rule out, with the same results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmcli.errors import InputError

DEFAULT_CHUNK_ROWS = 4_096  # index rows scored at once: small enough to stay in cache
QUERY_BLOCK = 1_024  # queries scored at once, so the score matrix stays bounded too
HOT_BLOCK = 64  # columns whose best score decides, in one comparison, whether they can enter a top-k
SCREEN_MIN_QUERIES = 128  # fewer queries leave the product bound by memory, where int8 gains nothing
SCREEN_MIN_CHUNKS = 8  # a smaller index does not repay the screen's first, densest chunks


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

    queries = np.array(queries, dtype=np.float32, order="C")  # a writable copy: torch shares its memory
    if queries.ndim != 2 or index.ndim != 2 or queries.shape[1] != index.shape[1]:
        raise ValueError(f"queries of shape {queries.shape} cannot search an index of shape {index.shape}")
    finite = np.isfinite(queries).all(axis=1)
    if not finite.all():
        raise NonFiniteRows("query", int(np.argmin(finite)))
    count = queries.shape[0]
    k = min(k, index.shape[0])
    if k <= 0 or count == 0:
        return SearchResult([np.empty(0, np.int64)] * count, [np.empty(0, np.float32)] * count)
    best_scores, best_rows = [], []
    for first in range(0, count, QUERY_BLOCK):
        block = slice(first, first + QUERY_BLOCK)
        excluded = None if exclude_rows is None else list(exclude_rows[block])
        block_scores, block_rows = _search_block(index, queries[block], k, excluded, chunk_rows)
        best_scores.extend(block_scores)
        best_rows.extend(block_rows)
    rows_out, scores_out = [], []
    for rows, scores in zip(best_rows, best_scores, strict=True):
        keep = torch.isfinite(scores)
        if threshold is not None:
            keep &= scores >= threshold
        rows_out.append(rows[keep].numpy())
        scores_out.append(scores[keep].numpy())
    return SearchResult(rows_out, scores_out)


def _search_block(
    index: np.ndarray, queries: np.ndarray, k: int, exclude_rows: list[int | None] | None, chunk_rows: int
) -> tuple[list[Any], list[Any]]:
    """Running top-k of one block of queries over every chunk of the index."""
    import torch

    query_tensor = torch.from_numpy(np.ascontiguousarray(queries))
    count = query_tensor.shape[0]
    best_scores = torch.full((count, k), -torch.inf)
    best_rows = torch.full((count, k), -1, dtype=torch.int64)
    screen = None
    if count >= SCREEN_MIN_QUERIES and index.shape[0] >= SCREEN_MIN_CHUNKS * chunk_rows:
        screen = Int8Screen.for_queries(query_tensor)
    # One score buffer reused for every chunk: a fresh one per chunk costs page faults worth a
    # fifth of the product itself.
    buffer = torch.empty(count, min(chunk_rows, index.shape[0]))
    with torch.inference_mode():
        for start in range(0, index.shape[0], chunk_rows):
            chunk = _as_tensor(index[start : start + chunk_rows])
            excluded = _excluded_in(exclude_rows, start, chunk.shape[0])
            if screen is not None:
                if screen.fold(chunk, start, best_scores, best_rows, excluded):
                    continue
                screen = None  # a non-finite chunk (reported below), or a torch that quantizes otherwise
            scores = buffer if chunk.shape[0] == buffer.shape[1] else torch.empty(count, chunk.shape[0])
            torch.mm(query_tensor, chunk.T, out=scores)
            for query, column in excluded:
                scores[query, column] = -torch.inf
            # Only queries with a score above their current k-th best can change; a score equal to
            # it loses the tie to the earlier row. Past the first chunks that is a few queries.
            row_best = scores.amax(dim=1)
            # A NaN row would hide the whole chunk from every query, a -inf row itself; the chunk is
            # checked only when a score says so (excluded rows score -inf on purpose).
            if not bool(torch.isfinite(row_best).all() and torch.isfinite(scores.amin(dim=1)).all()):
                _refuse_non_finite(chunk, start)
            kth_best = best_scores[:, -1]
            active = torch.nonzero(row_best > kth_best).flatten()
            if active.numel() == 0:
                continue
            active_scores = scores if active.numel() == count else scores.index_select(0, active)
            columns = _hot_columns(active_scores, kth_best[active])
            if columns is not None:
                active_scores = active_scores.gather(1, columns)
            top_scores, top_rows = _chunk_top(active_scores, k)
            if columns is not None:
                top_rows = columns.gather(1, top_rows)
            _merge(best_scores, best_rows, active, top_scores, top_rows + start)
    return list(best_scores), list(best_rows)


def _merge(best_scores: Any, best_rows: Any, active: Any, top_scores: Any, top_rows: Any) -> None:
    """Fold candidate ``top_rows`` of the ``active`` queries into their running top-k."""
    import torch

    merged_scores = torch.cat([best_scores[active], top_scores], dim=1)
    merged_rows = torch.cat([best_rows[active], top_rows], dim=1)
    order = _rank(merged_scores, merged_rows)[:, : best_scores.shape[1]]
    best_scores[active], best_rows[active] = merged_scores.gather(1, order), merged_rows.gather(1, order)


def _excluded_in(exclude_rows: list[int | None] | None, start: int, size: int) -> list[tuple[int, int]]:
    """The (query, column) pairs of the chunk at ``start`` that their query must not return."""
    if exclude_rows is None:
        return []
    end = start + size
    return [(query, row - start) for query, row in enumerate(exclude_rows) if row is not None and start <= row < end]


class Int8Screen:
    """Exact top-k from int8 scores: the int8 product rules rows out, float32 scores the rest.

    The queries are quantized once (int8, a scale per query) and each chunk of the index is scored
    by torch's dynamic int8 product, which quantizes the chunk itself (one scale per chunk); on a
    CPU without bfloat16 it takes well under the float32 product's time. With q~ and x~ the
    quantized vectors, ``|q.x - q~.x~| <= |q - q~| |x| + s/2 |q~|_1``, s being the chunk's step
    (at most its value range over 127 levels). So a row whose int8 score is below the query's k-th
    best minus that bound cannot enter its top-k; the few rows left are scored in float32 by one
    sampled product (SDDMM), which gives a pair the same value whichever other pairs it computes,
    so equal rows in different chunks still tie and go by row order. The result is the float32
    top-k. The bound is checked against the float32 product on the first chunk; a torch that
    quantizes otherwise turns the screen off before it has decided anything.
    """

    SPARSE = 16  # past 1/16 of the pairs, tighten the cut with the chunk's own k-th best first
    CHECKED_QUERIES = 64  # queries whose float32 scores test the bound on the first chunk

    def __init__(self, queries: Any, packed: Any, quantization_error: Any, abs_sums: Any) -> None:
        self.queries = queries
        self.packed = packed
        self.quantization_error = quantization_error  # |q - q~| per query
        self.abs_sums = abs_sums  # |q~|_1 per query
        self.checked = False

    @classmethod
    def for_queries(cls, queries: Any) -> Int8Screen | None:
        """A screen for these queries, or None where this torch has no int8 product."""
        import warnings

        import torch

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # quantized tensors announce their move to torchao
                scales = (queries.abs().amax(dim=1) / 127).clamp_min(1e-12).double()
                zero_points = torch.zeros(queries.shape[0], dtype=torch.int64)
                quantized = torch.quantize_per_channel(queries, scales, zero_points, 0, torch.qint8)
                packed = torch.ops.quantized.linear_prepack(quantized, None)
                dequantized = quantized.dequantize()
        except (AttributeError, NotImplementedError, RuntimeError):
            return None
        return cls(queries, packed, (queries - dequantized).norm(dim=1), dequantized.abs().sum(dim=1))

    def error_bound(self, chunk: Any, low: Any, high: Any) -> Any:
        """Per query, how far an int8 score of ``chunk`` (values in ``low``..``high``) may lie from
        the float32 one."""
        step = (high.clamp_min(0) - low.clamp_max(0)) / 127
        largest = chunk.norm(dim=1).max()
        rounding = 1e-5 * (self.quantization_error + self.abs_sums) * largest  # float32 sums in both products
        return self.quantization_error * largest + step / 2 * self.abs_sums + rounding

    def fold(self, chunk: Any, start: int, best_scores: Any, best_rows: Any, excluded: list[tuple[int, int]]) -> bool:
        """Fold the chunk into the running top-k; False where the float32 path must score it."""
        import warnings

        import torch

        low, high = chunk.aminmax()
        if not bool(torch.isfinite(low) & torch.isfinite(high)):
            return False  # the float32 path names the offending row
        try:
            approximate = torch.ops.quantized.linear_dynamic(chunk, self.packed, True)  # rows x queries
        except (NotImplementedError, RuntimeError):
            return False
        bound = self.error_bound(chunk, low, high)
        if not self.checked:
            sample = min(self.CHECKED_QUERIES, self.queries.shape[0])
            exact = self.queries[:sample] @ chunk.T
            if not bool(((approximate[:, :sample].T - exact).abs() <= bound[:sample, None]).all()):
                return False
            self.checked = True
        for query, column in excluded:
            approximate[column, query] = -torch.inf
        # A row can enter only above the k-th best so far: its float32 score is at most int8 + bound.
        reach = best_scores[:, -1] - bound
        candidates = approximate >= reach
        k = best_scores.shape[1]
        if int(torch.count_nonzero(candidates)) * self.SPARSE > candidates.numel() and chunk.shape[0] >= k:
            # Also above the chunk's own k-th best, which is at least its k-th int8 score - bound.
            reach = torch.maximum(reach, approximate.topk(k, dim=0).values[-1] - 2 * bound)
            candidates = approximate >= reach
        for query, column in excluded:
            candidates[column, query] = False
        column, query = torch.nonzero(candidates).unbind(1)
        if query.numel() == 0:
            return True
        order = torch.argsort(query, stable=True)  # by query, each query's rows in row order
        query, column = query[order], column[order]
        count = self.queries.shape[0]
        per_query = torch.bincount(query, minlength=count)
        offsets = torch.zeros(count + 1, dtype=torch.int64)
        offsets[1:] = per_query.cumsum(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sparse CSR tensors announce their beta state
            pattern = torch.sparse_csr_tensor(offsets, column, torch.ones(query.numel()), size=(count, chunk.shape[0]))
            exact = torch.sparse.sampled_addmm(pattern, self.queries, chunk.T, beta=0.0).values()
        # Each query's candidates side by side, padded with -inf that no hit survives.
        width, slot = int(per_query.max()), torch.arange(query.numel()) - offsets[query]
        scores = torch.full((count, width), -torch.inf)
        rows = torch.full((count, width), torch.iinfo(torch.int64).max, dtype=torch.int64)
        scores[query, slot], rows[query, slot] = exact, column + start
        active = torch.nonzero(per_query).flatten()
        top_scores, top = _chunk_top(scores[active], k)
        _merge(best_scores, best_rows, active, top_scores, rows[active].gather(1, top))
        return True


class NonFiniteRows(InputError):
    """Rows holding NaN or infinity: they have no meaningful score and would silently vanish."""

    def __init__(self, what: str, row: int) -> None:
        self.row = row
        super().__init__(f"{what} row {row} holds NaN or infinite values; regenerate or drop it")


def _refuse_non_finite(chunk: Any, start: int) -> None:
    import torch

    finite = torch.isfinite(chunk).all(dim=1)
    if not bool(finite.all()):
        raise NonFiniteRows("index", start + int(torch.nonzero(~finite)[0]))


def _hot_columns(scores: Any, kth_best: Any) -> Any | None:
    """Per query, the columns of the blocks of ``HOT_BLOCK`` columns that hold a score above its
    k-th best, in column order, or None when that is not much less than the whole chunk.

    Past the first chunks a query's top-k changes in a block or two per chunk; finding those
    blocks costs one pass of ``amax``, where a top-k over every column cost a fifth of the product.
    """
    import torch

    count, width = scores.shape
    if width % HOT_BLOCK:
        return None
    block_best = scores.view(count, width // HOT_BLOCK, HOT_BLOCK).amax(dim=2)
    most_hot = int((block_best > kth_best[:, None]).sum(dim=1).max())
    if most_hot * HOT_BLOCK * 4 > width:
        return None
    blocks = torch.topk(block_best, most_hot, dim=1).indices.sort(dim=1).values
    columns = blocks[:, :, None] * HOT_BLOCK + torch.arange(HOT_BLOCK)
    return columns.reshape(count, most_hot * HOT_BLOCK)


def _chunk_top(scores: Any, k: int) -> tuple[Any, Any]:
    """Each row's best ``k`` scores and their columns, equal scores in column order."""
    import torch

    kept = min(k, scores.shape[1])
    top_scores, top_rows = torch.topk(scores, min(kept + 1, scores.shape[1]), dim=1)
    # topk picks arbitrarily among scores tied with the k-th; where such a tie reaches past the cut
    # (the next best equals the k-th), take the tied columns in order instead.
    tied = None
    if top_scores.shape[1] > kept:  # a tie at -inf does not matter: such hits are dropped
        tied = (top_scores[:, kept] == top_scores[:, kept - 1]) & torch.isfinite(top_scores[:, kept - 1])
    top_scores, top_rows = top_scores[:, :kept].clone(), top_rows[:, :kept].clone()
    for query in [] if tied is None else torch.nonzero(tied).flatten().tolist():
        candidates = torch.nonzero(scores[query] >= top_scores[query, -1]).flatten()
        order = _rank(scores[query, candidates], candidates)[:kept]
        top_scores[query], top_rows[query] = scores[query, candidates[order]], candidates[order]
    return top_scores, top_rows


def _as_tensor(rows: np.ndarray) -> Any:
    """A float32 tensor over ``rows`` without copying; read-only (memory-mapped) rows are only read."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))


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

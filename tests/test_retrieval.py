"""Exact search equals a brute-force numpy reference, in bounded chunks, with deterministic ties."""

from __future__ import annotations

import numpy as np
import pytest

from mmcli.retrieval import search


def _reference(index, queries, k, exclude=None):
    """Brute force: full score matrix, stable sort by (-score, row)."""
    scores = queries.astype(np.float32) @ np.asarray(index, dtype=np.float32).T
    results = []
    for i, row_scores in enumerate(scores):
        rows = np.arange(len(row_scores))
        if exclude is not None and exclude[i] is not None:
            rows = rows[rows != exclude[i]]
        order = np.lexsort((rows, -row_scores[rows]))[:k]
        results.append((rows[order], row_scores[rows][order]))
    return results


def _normalised(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("chunk_rows", [7, 64, 100_000])
def test_matches_brute_force(dtype, chunk_rows):
    rng = np.random.default_rng(0)
    index = _normalised(rng, 500, 16).astype(dtype)
    queries = _normalised(rng, 12, 16)
    got = search(index, queries, 10, chunk_rows=chunk_rows)
    for (rows, scores), got_rows, got_scores in zip(_reference(index, queries, 10), got.rows, got.scores, strict=True):
        np.testing.assert_array_equal(got_rows, rows)
        np.testing.assert_allclose(got_scores, scores, atol=1e-5)


def test_k_larger_than_the_index_returns_every_row():
    rng = np.random.default_rng(1)
    index, queries = _normalised(rng, 5, 8), _normalised(rng, 2, 8)
    got = search(index, queries, 50, chunk_rows=2)
    assert all(len(rows) == 5 for rows in got.rows)
    assert all(sorted(rows) == list(range(5)) for rows in got.rows)


def test_ties_and_duplicates_break_by_row_order_across_chunks():
    base = np.eye(4, dtype=np.float32)
    index = np.concatenate([base, base, base])  # every vector three times: rows i, i+4, i+8
    got = search(index, base[[2]], 3, chunk_rows=5)
    np.testing.assert_array_equal(got.rows[0], [2, 6, 10])
    np.testing.assert_array_equal(got.scores[0], [1.0, 1.0, 1.0])
    all_equal = np.ones((9, 4), np.float32) / 2
    assert search(all_equal, all_equal[:1], 4, chunk_rows=2).rows[0].tolist() == [0, 1, 2, 3]


def test_exclude_self_and_threshold():
    rng = np.random.default_rng(2)
    index = _normalised(rng, 50, 8)
    queries = index[[3, 17]]
    got = search(index, queries, 5, exclude_rows=[3, 17], chunk_rows=16)
    expected = _reference(index, queries, 5, exclude=[3, 17])
    for (rows, _), got_rows in zip(expected, got.rows, strict=True):
        np.testing.assert_array_equal(got_rows, rows)
    assert 3 not in got.rows[0] and 17 not in got.rows[1]
    high = search(index, queries, 5, threshold=0.99)
    assert [rows.tolist() for rows in high.rows] == [[3], [17]]


def test_dimension_mismatch_is_an_error():
    with pytest.raises(ValueError, match="cannot search"):
        search(np.zeros((3, 4), np.float32), np.zeros((1, 5), np.float32), 2)


@pytest.mark.parametrize("where", ["index", "query"])
def test_non_finite_rows_are_refused_not_skipped(where):
    from mmcli.retrieval import NonFiniteRows

    rng = np.random.default_rng(3)
    index, queries = rng.standard_normal((40, 8)).astype(np.float32), rng.standard_normal((3, 8)).astype(np.float32)
    (index if where == "index" else queries)[2 if where == "query" else 21, 5] = np.nan
    with pytest.raises(NonFiniteRows, match=f"{where} row {2 if where == 'query' else 21}"):
        search(index, queries, 5, chunk_rows=8)


def test_top_k_from_hot_blocks_matches_brute_force(monkeypatch):
    """Past the first chunks only the column blocks holding a score above a query's k-th best are
    ranked; duplicates in different chunks and excluded rows must come out as brute force has them."""
    from mmcli import retrieval

    rng = np.random.default_rng(4)
    centres = _normalised(rng, 2000, 64)
    index = centres[rng.integers(0, 2000, 16384)] + 0.1 * rng.standard_normal((16384, 64)).astype(np.float32)
    index /= np.linalg.norm(index, axis=1, keepdims=True)
    index[12000:12050] = index[100:150]  # the same vectors in another chunk
    queries = index[rng.choice(16384, 40)] + 0.05 * rng.standard_normal((40, 64)).astype(np.float32)
    queries[:10] = index[100:110]
    exclude = [int(row) if i % 2 else None for i, row in enumerate(rng.integers(0, 16384, 40))]
    ranked_from_blocks = []
    original = retrieval._hot_columns

    def spy(scores, kth_best):
        columns = original(scores, kth_best)
        ranked_from_blocks.append(columns is not None)
        return columns

    monkeypatch.setattr(retrieval, "_hot_columns", spy)
    got = search(index, queries, 8, exclude_rows=exclude, chunk_rows=2048)
    assert sum(ranked_from_blocks) >= 3, ranked_from_blocks  # the block route was taken, not only the full top-k
    for (rows, scores), got_rows, got_scores in zip(
        _reference(index, queries, 8, exclude=exclude), got.rows, got.scores, strict=True
    ):
        np.testing.assert_array_equal(got_rows, rows)
        np.testing.assert_allclose(got_scores, scores, atol=1e-5)


def _clustered(rng, rows, dim, centres, spread):
    middles = _normalised(rng, centres, dim)
    index = middles[rng.integers(0, centres, rows)] + spread * rng.standard_normal((rows, dim)).astype(np.float32)
    return index / np.linalg.norm(index, axis=1, keepdims=True)


def _count_folds(monkeypatch):
    from mmcli.retrieval import Int8Screen

    outcomes = []
    original = Int8Screen.fold

    def fold(self, *args):
        outcomes.append(original(self, *args))
        return outcomes[-1]

    monkeypatch.setattr(Int8Screen, "fold", fold)
    return outcomes


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_int8_screen_gives_the_float32_top_k(dtype, monkeypatch):
    """With many queries the int8 product rules rows out and float32 scores the rest: the hits must
    be brute force's exactly, duplicates in different chunks tied by row order, excluded rows absent."""
    rng = np.random.default_rng(5)
    index = _clustered(rng, 6000, 64, 300, 0.1)
    index[4000:4100] = index[100:200]  # the same vectors in another chunk
    index = index.astype(dtype)
    queries = _clustered(rng, 300, 64, 300, 0.1)
    queries[:40] = index[100:140]
    exclude = [int(row) if i % 3 else None for i, row in enumerate(rng.integers(0, 6000, 300))]
    exclude[20:40] = range(120, 140)  # each of these queries is its own best hit, excluded
    folds = _count_folds(monkeypatch)
    got = search(index, queries, 10, exclude_rows=exclude, chunk_rows=512)
    assert len(folds) == 12 and all(folds)  # every chunk went through the screen
    assert got.rows[0][:2].tolist() == [100, 4000]  # a row and its copy: equal scores, row order
    assert all(row not in rows for row, rows in zip(range(120, 140), got.rows[20:40], strict=True))
    for (rows, scores), got_rows, got_scores in zip(
        _reference(index, queries, 10, exclude=exclude), got.rows, got.scores, strict=True
    ):
        np.testing.assert_array_equal(got_rows, rows)
        np.testing.assert_allclose(got_scores, scores, atol=1e-5)


def test_int8_scores_stay_within_the_screen_bound():
    import torch

    from mmcli.retrieval import Int8Screen

    rng = np.random.default_rng(6)
    queries = torch.from_numpy(_clustered(rng, 200, 128, 20, 0.3))
    chunk = torch.from_numpy(3 * _clustered(rng, 1024, 128, 20, 0.3))  # not unit length: the bound scales
    screen = Int8Screen.for_queries(queries)
    approximate = torch.ops.quantized.linear_dynamic(chunk, screen.packed, True).T
    error = (approximate - queries @ chunk.T).abs()
    bound = screen.error_bound(chunk, *chunk.aminmax())[:, None]
    assert bool((error <= bound).all())
    assert float(error.max()) > 0.01 * float(bound.max())  # a bound, not a blanket


def test_int8_screen_turns_itself_off_when_its_bound_fails(monkeypatch):
    import torch

    from mmcli.retrieval import Int8Screen

    rng = np.random.default_rng(7)
    index, queries = _clustered(rng, 4096, 32, 50, 0.2), _clustered(rng, 150, 32, 50, 0.2)
    monkeypatch.setattr(Int8Screen, "error_bound", lambda self, chunk, low, high: torch.zeros(len(self.queries)))
    folds = _count_folds(monkeypatch)
    got = search(index, queries, 5, chunk_rows=256)
    assert folds == [False]  # refused on the first chunk, never asked again
    for (rows, _), got_rows in zip(_reference(index, queries, 5), got.rows, strict=True):
        np.testing.assert_array_equal(got_rows, rows)


def test_int8_screen_leaves_non_finite_rows_to_be_reported():
    from mmcli.retrieval import NonFiniteRows

    rng = np.random.default_rng(8)
    index, queries = _clustered(rng, 4096, 32, 50, 0.2), _clustered(rng, 150, 32, 50, 0.2)
    index[3000, 7] = np.inf
    with pytest.raises(NonFiniteRows, match="index row 3000"):
        search(index, queries, 5, chunk_rows=256)

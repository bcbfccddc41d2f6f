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

"""mmcli.search_set and retrieve --ann: each claim checked by what only the named path produces
(an index file, a recall that approximate search loses, the note of the index used)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mmcli.ann import index_path
from mmcli.errors import InputError, UsageError
from mmcli.output.feature_set import read_feature_set
from mmcli.retrieval import search
from mmcli.search import ANN_AUTO_ROWS, search_set


def _clustered(rng, rows, dim, clusters):
    """Embedding-like data: points around cluster centres on the unit sphere."""
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    points = centres[rng.integers(0, clusters, rows)] + 0.35 * rng.standard_normal((rows, dim)).astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def _write_set(folder, name, vectors):
    npy = folder / f"{name}.npy"
    np.save(npy, vectors)
    with open(folder / f"{name}.jsonl", "w") as sidecar:
        for row in range(len(vectors)):
            sidecar.write(json.dumps({"id": f"r{row}", "modality": "image", "model": "m", "source": f"{row}.jpg"}))
            sidecar.write("\n")
    return npy


def _recall(found, exact, k=10):
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(found, exact, strict=True)]))


@pytest.fixture(scope="module")
def clustered_set(tmp_path_factory):
    """20,000 clustered rows with queries near them: below the size where auto uses an index."""
    rng = np.random.default_rng(0)
    data = _clustered(rng, 20_000, 16, 10)
    queries = data[rng.choice(len(data), 64)] + 0.05 * rng.standard_normal((64, 16)).astype(np.float32)
    return _write_set(tmp_path_factory.mktemp("clustered"), "feats", data), queries


@pytest.fixture(scope="module")
def large_set(tmp_path_factory):
    """ANN_AUTO_ROWS clustered rows: the size from which auto searches a saved index."""
    rng = np.random.default_rng(1)
    data = _clustered(rng, ANN_AUTO_ROWS, 16, 10)
    queries = data[rng.choice(len(data), 32)] + 0.05 * rng.standard_normal((32, 16)).astype(np.float32)
    return _write_set(tmp_path_factory.mktemp("large"), "feats", data), queries


def test_faiss_builds_an_index_whose_nprobe_trades_recall(clustered_set):
    npy, queries = clustered_set
    feature_set = read_feature_set(npy)
    exact = search(feature_set.vectors, queries, 10)
    one_list = search_set(feature_set, queries, 10, ann="faiss", nprobe=1)
    assert one_list.backend == "faiss" and one_list.built and not one_list.saved
    assert not index_path(npy).exists()  # built for this search only
    assert _recall(one_list.rows, exact.rows) < 0.8  # one list of ~141 misses neighbours: faiss answered
    from mmcli.ann import default_nlist

    every_list = search_set(feature_set, queries, 10, ann="faiss", nprobe=default_nlist(len(feature_set)))
    for found, expected, found_scores, expected_scores in zip(
        every_list.rows, exact.rows, every_list.scores, exact.scores, strict=True
    ):
        assert set(found.tolist()) == set(expected.tolist())
        np.testing.assert_allclose(found_scores, expected_scores, atol=1e-5)


def test_save_index_keeps_the_index_and_later_searches_use_it(clustered_set, tmp_path):
    source, queries = clustered_set
    npy = _write_set(tmp_path, "copy", np.load(source))
    feature_set = read_feature_set(npy)
    first = search_set(feature_set, queries, 5, ann="faiss", save_index=True)
    assert first.saved and first.built and first.index_file == index_path(npy) and index_path(npy).exists()
    again = search_set(feature_set, queries, 5, ann="faiss")
    assert again.backend == "faiss" and not again.built and again.index_file == index_path(npy)
    assert [r.tolist() for r in again.rows] == [r.tolist() for r in first.rows]


def test_auto_uses_a_fresh_saved_index_from_the_documented_size_and_falls_back_when_stale(large_set, run_mmcli):
    npy, queries = large_set
    feature_set = read_feature_set(npy)
    exact = search(feature_set.vectors, queries, 10)
    no_index = search_set(feature_set, queries, 10, ann="auto")
    assert no_index.backend == "exact" and no_index.fallback is None

    built = run_mmcli("index", "build", npy, "--nlist", "64", "--overwrite")
    assert built.returncode == 0, built.stderr
    used = search_set(feature_set, queries, 10, ann="auto", nprobe=1)
    assert used.backend == "faiss" and used.index_file == index_path(npy) and not used.built
    assert _recall(used.rows, exact.rows) < 0.95  # one list of 64: only the index loses neighbours

    os.utime(npy, ns=(os.stat(npy).st_atime_ns, os.stat(npy).st_mtime_ns + 1_000_000_000))  # the set changed
    stale = search_set(feature_set, queries, 10, ann="auto")
    assert stale.backend == "exact" and "rebuild it" in stale.fallback
    assert [r.tolist() for r in stale.rows] == [r.tolist() for r in exact.rows]
    with pytest.raises(InputError, match="another version"):
        search_set(feature_set, queries, 10, ann="faiss")


def test_auto_searches_exactly_below_the_documented_size_and_says_why(clustered_set, tmp_path):
    source, queries = clustered_set
    npy = _write_set(tmp_path, "small", np.load(source))
    feature_set = read_feature_set(npy)
    search_set(feature_set, queries, 5, ann="faiss", save_index=True)
    result = search_set(feature_set, queries, 5, ann="auto", nprobe=1)
    assert result.backend == "exact" and f"{ANN_AUTO_ROWS:,}" in result.fallback
    exact = search(feature_set.vectors, queries, 5)
    assert [r.tolist() for r in result.rows] == [r.tolist() for r in exact.rows]


def test_faiss_search_leaves_out_excluded_rows(clustered_set):
    npy, _ = clustered_set
    feature_set = read_feature_set(npy)
    queries = np.asarray(feature_set.vectors[:20])
    result = search_set(feature_set, queries, 3, ann="faiss", exclude_rows=list(range(20)))
    assert all(len(rows) == 3 and row not in rows.tolist() for row, rows in enumerate(result.rows))
    plain = search_set(feature_set, queries, 3, ann="faiss")
    assert sum(row in rows.tolist() for row, rows in enumerate(plain.rows)) >= 18  # each query finds itself


def test_settings_that_would_be_ignored_are_refused(clustered_set, tmp_path):
    npy, queries = clustered_set
    feature_set = read_feature_set(npy)
    with pytest.raises(UsageError, match="nprobe tunes approximate search"):
        search_set(feature_set, queries, 5, ann="exact", nprobe=4)
    with pytest.raises(UsageError, match="save_index"):
        search_set(feature_set, queries, 5, ann="auto", save_index=True)
    with pytest.raises(UsageError, match="ef tunes HNSW indexes, and this one is IVF"):
        search_set(feature_set, queries, 5, ann="faiss", ef=64)


def test_retrieve_cli_ann_paths(clustered_set, tmp_path, run_mmcli):
    source, queries = clustered_set
    npy = _write_set(tmp_path, "feats", np.load(source))
    query_set = _write_set(tmp_path, "queries", queries)
    args = ["retrieve", "--index", npy, "--queries", query_set, "-k", "10"]

    def hits(result):
        assert result.returncode == 0, result.stderr
        return [[hit["id"] for hit in json.loads(line)["hits"]] for line in result.stdout.splitlines()]

    exact = run_mmcli(*args, "--ann", "exact")
    probed = run_mmcli(*args, "--ann", "faiss", "--nprobe", "1", "--save-index")
    assert index_path(npy).exists() and "(built now)" in probed.stderr
    assert _recall(hits(probed), hits(exact)) < 0.8
    reused = run_mmcli(*args, "--ann", "faiss", "--nprobe", "1")
    assert f"through {index_path(npy)}" in reused.stderr and "built now" not in reused.stderr
    assert hits(reused) == hits(probed)
    auto = run_mmcli(*args)  # 20,000 rows: exact, and the note says why the index is not used
    assert hits(auto) == hits(exact) and "exactly: feats.faiss is not used below 100,000 rows" in auto.stderr
    refused = run_mmcli(*args, "--ann", "exact", "--ef", "8")
    assert refused.returncode == 2 and "--ef tunes approximate search" in refused.stderr


def test_dash_q_is_quiet_not_a_query(clustered_set, tmp_path, run_mmcli):
    source, queries = clustered_set
    npy = _write_set(tmp_path, "feats", np.load(source)[:500])
    query_set = _write_set(tmp_path, "queries", queries[:2])
    args = ["retrieve", "--index", npy, "--queries", query_set, "-k", "1"]
    loud, quiet = run_mmcli(*args), run_mmcli(*args, "-q")
    assert loud.returncode == quiet.returncode == 0, quiet.stderr
    assert "searched 500 rows" in loud.stderr and quiet.stderr == "" and quiet.stdout == loud.stdout
    assert "-q" not in run_mmcli("retrieve", "--help").stdout.split("--query ")[1].split("\n")[0]


def test_a_query_file_without_queries_is_refused(clustered_set, tmp_path, run_mmcli):
    source, _ = clustered_set
    npy = _write_set(tmp_path, "feats", np.load(source)[:100])
    empty = _write_set(tmp_path, "none", np.zeros((0, 16), np.float32))
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n")
    for queries in (empty, blank):
        result = run_mmcli("retrieve", "--index", npy, "--queries", queries)
        assert result.returncode == 2 and result.stdout == "", result.stderr
        assert f"no queries: {queries} held none" in result.stderr

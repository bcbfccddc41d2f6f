"""Approximate search through faiss: recall against exact search, index files, staleness."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmcli.ann import ann_search, build_index, index_path, load_index, save_index
from mmcli.errors import InputError
from mmcli.retrieval import search


def _clustered(rng, rows, dim, clusters):
    """Embedding-like data: points around cluster centres on the unit sphere."""
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    points = centres[rng.integers(0, clusters, rows)] + 0.35 * rng.standard_normal((rows, dim)).astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def _recall(approximate, exact, k):
    return np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(approximate, exact, strict=True)])


@pytest.mark.parametrize(("kind", "knobs"), [("ivf", {}), ("ivf", {"nprobe": 32}), ("hnsw", {})])
def test_recall_at_10_against_exact(kind, knobs):
    rng = np.random.default_rng(0)
    data = _clustered(rng, 20_000, 64, 100)
    queries = data[rng.choice(len(data), 200)] + 0.05 * rng.standard_normal((200, 64)).astype(np.float32)
    exact = search(data, queries, 10).rows
    approximate = ann_search(build_index(data, kind=kind), queries, 10, **knobs).rows
    assert _recall(approximate, exact, 10) >= 0.95


def test_probing_every_list_is_exact():
    rng = np.random.default_rng(1)
    data = _clustered(rng, 5_000, 32, 20)
    queries = data[:20]
    index = build_index(data, kind="ivf", nlist=16)
    approximate = ann_search(index, queries, 5, nprobe=16)
    exact = search(data, queries, 5)
    for a, b, sa, sb in zip(approximate.rows, exact.rows, approximate.scores, exact.scores, strict=True):
        np.testing.assert_allclose(sa, sb, atol=1e-5)
        assert set(a) == set(b)


def test_saved_index_is_reused_and_refused_when_stale(tmp_path):
    rng = np.random.default_rng(2)
    npy = tmp_path / "feats.npy"
    data = _clustered(rng, 2_000, 16, 10)
    np.save(npy, data)
    save_index(build_index(data), npy, data)
    assert index_path(npy).exists()
    assert load_index(npy, data).ntotal == 2_000
    np.save(npy, data[:1_500])  # the feature set changed after the index was built
    with pytest.raises(InputError, match="rebuild it"):
        load_index(npy, data[:1_500])


def test_a_saved_index_is_read_once_per_process_and_again_once_rebuilt(tmp_path, monkeypatch):
    """A server answering many searches over one set reads FEATS.faiss once, not per search."""
    import faiss

    rng = np.random.default_rng(3)
    npy = tmp_path / "feats.npy"
    data = _clustered(rng, 2_000, 16, 10)
    np.save(npy, data)
    save_index(build_index(data, kind="ivf"), npy, data)
    reads = []
    read = faiss.read_index
    monkeypatch.setattr(faiss, "read_index", lambda path: reads.append(path) or read(path))
    first = [load_index(npy, data) for _ in range(3)]
    assert len(reads) == 1 and first[0] is first[1] is first[2]
    save_index(build_index(data, kind="hnsw"), npy, data)  # rebuilt, of another kind, while the server runs
    rebuilt = load_index(npy, data)
    assert len(reads) == 2 and hasattr(rebuilt, "hnsw") and not hasattr(first[0], "hnsw")
    assert load_index(npy, data) is rebuilt


def test_index_build_and_retrieve_with_faiss(run_mmcli, tmp_path):
    rng = np.random.default_rng(3)
    data = _clustered(rng, 3_000, 16, 10)
    npy = tmp_path / "feats.npy"
    np.save(npy, data)
    (tmp_path / "feats.jsonl").write_text(
        "".join(
            json.dumps({"id": f"r{i}", "modality": "image", "model": "m", "source": f"{i}.jpg"}) + "\n"
            for i in range(len(data))
        )
    )
    np.save(tmp_path / "queries.npy", data[:5])
    (tmp_path / "queries.jsonl").write_text(
        "".join(
            json.dumps({"id": f"r{i}", "modality": "image", "model": "m", "source": f"{i}.jpg"}) + "\n"
            for i in range(5)
        )
    )

    built = run_mmcli("index", "build", npy, "--nlist", "8")
    assert built.returncode == 0, built.stderr
    assert index_path(npy).exists()
    again = run_mmcli("index", "build", npy)
    assert again.returncode == 2 and "--overwrite" in again.stderr

    args = ["retrieve", "--index", npy, "--queries", tmp_path / "queries.npy", "-k", "3", "--exclude-self"]
    approximate = run_mmcli(*args, "--ann", "faiss", "--nprobe", "8")
    exact = run_mmcli(*args, "--ann", "exact")
    assert approximate.returncode == exact.returncode == 0, approximate.stderr
    hits = [[h["id"] for h in json.loads(line)["hits"]] for line in approximate.stdout.splitlines()]
    assert hits == [[h["id"] for h in json.loads(line)["hits"]] for line in exact.stdout.splitlines()]
    assert all(f"r{i}" not in row and len(row) == 3 for i, row in enumerate(hits))


def test_small_sets_train_without_faiss_noise_and_too_many_lists_are_refused(capfd):
    from mmcli.errors import UsageError

    rows = _clustered(np.random.default_rng(3), 12, 16, 3)
    index = build_index(rows, nlist=4)  # 3 rows a list, far below faiss's 39
    assert index.nlist == 4 and index.ntotal == 12
    assert "WARNING clustering" not in capfd.readouterr().err  # faiss writes it on the C stderr
    hits = ann_search(index, rows[:2], k=1, nprobe=4)
    assert [int(r[0]) for r in hits.rows] == [0, 1]
    with pytest.raises(UsageError, match=r"--nlist 20 asks for more lists than the set's 12 rows"):
        build_index(rows, nlist=20)

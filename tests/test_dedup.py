"""``mmcli dedup``: near-duplicate groups equal to a brute-force ground truth (scikit-learn's radius
neighbours at the cosine threshold, connected components by scipy) on 20,000 clustered rows with
planted near-duplicates; the approximate methods' recall of the planted pairs; the keep policies; a
sharded set equal to its one-file twin; and one-line refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from test_feature_set_refusals import assert_one_line_refusal, write_set

from mmcli.dedup import find_duplicates, records
from mmcli.output.feature_set import read_feature_set

THRESHOLD = 0.94


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
    """20,000 rows of width 64 in 200 clusters (members at cosine ~0.6-0.8 to each other), 1,500 of
    them planted copies of another row at cosine ~0.97 (some chained: a copy of a copy)."""
    rng = np.random.default_rng(7)
    dim, count, planted = 64, 20_000, 1_500
    centres = rng.standard_normal((200, dim))
    originals = centres[rng.integers(0, 200, count - planted)] + 0.9 * rng.standard_normal((count - planted, dim))
    rows = list(originals / np.linalg.norm(originals, axis=1, keepdims=True))
    pairs = []
    for _ in range(planted):
        source = int(rng.integers(0, len(rows)))
        copy = rows[source] + 0.035 * rng.standard_normal(dim)
        rows.append(copy / np.linalg.norm(copy))
        pairs.append((source, len(rows) - 1))
    order = rng.permutation(count)  # planted copies spread through the set
    place = np.empty(count, dtype=np.int64)
    place[order] = np.arange(count)
    matrix = np.asarray(rows, np.float32)[order]
    planted_pairs = {(min(place[a], place[b]), max(place[a], place[b])) for a, b in pairs}
    npy = write_set(tmp_path_factory.mktemp("clustered") / "set.npy", matrix)
    return npy, matrix, planted_pairs


def truth(matrix: np.ndarray, threshold: float) -> tuple[np.ndarray, set[tuple[int, int]]]:
    """Connected components of every pair at cosine >= threshold, by scikit-learn and scipy."""
    from scipy.sparse.csgraph import connected_components
    from sklearn.neighbors import NearestNeighbors

    graph = NearestNeighbors(radius=1.0 - threshold, metric="cosine", algorithm="brute").fit(matrix)
    adjacency = graph.radius_neighbors_graph(matrix, mode="connectivity")
    _, labels = connected_components(adjacency, directed=False)
    upper = adjacency.tocoo()
    pairs = {(int(i), int(j)) for i, j in zip(upper.row, upper.col, strict=True) if i < j}
    return labels, pairs


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labellings put the rows into the same groups (whatever the group numbers)."""
    mapping: dict[int, int] = {}
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        if mapping.setdefault(x, y) != y:
            return False
    return len(set(mapping.values())) == len(mapping)


def recall(found_groups: np.ndarray, pairs: set[tuple[int, int]]) -> float:
    return sum(found_groups[i] == found_groups[j] for i, j in pairs) / len(pairs)


def test_exact_groups_equal_the_brute_force_truth(clustered):
    npy, matrix, planted = clustered
    expected, pairs = truth(matrix, THRESHOLD)
    found = find_duplicates(read_feature_set(npy), threshold=THRESHOLD)
    assert found.method == "exact" and found.note is None
    assert same_partition(found.groups, expected)
    assert found.pairs == len(pairs)
    above = {(i, j) for i, j in planted if float(matrix[i] @ matrix[j]) >= THRESHOLD}
    assert len(above) > 0.95 * len(planted) and recall(found.groups, above) == 1.0
    assert found.duplicate_groups > 1000
    # group numbers follow the rows: each group's number is given at its first row
    first_seen = [int(g) for g in dict.fromkeys(found.groups.tolist())]
    assert first_seen == list(range(len(first_seen)))


@pytest.mark.parametrize("method", ["semantic", "faiss"])
def test_the_approximate_methods_recall_the_planted_pairs(clustered, method):
    npy, matrix, planted = clustered
    found = find_duplicates(read_feature_set(npy), threshold=THRESHOLD, method=method)
    expected, pairs = truth(matrix, THRESHOLD)
    above = {(i, j) for i, j in planted if float(matrix[i] @ matrix[j]) >= THRESHOLD}  # planted and truly near
    planted_recall, pair_recall = recall(found.groups, above), recall(found.groups, pairs)
    print(f"{method}: recall of planted pairs {planted_recall:.4f}, of all true pairs {pair_recall:.4f}")
    assert planted_recall >= 0.97 and pair_recall >= 0.97
    assert "approximate" in found.note
    # never a false pair: every group found is inside a true group
    for group in set(found.groups.tolist()):
        assert len(set(expected[found.groups == group].tolist())) == 1


def test_each_record_names_its_group_what_it_duplicates_and_how_close(clustered):
    npy, matrix, _ = clustered
    feature_set = read_feature_set(npy)
    found = find_duplicates(feature_set, threshold=THRESHOLD)
    lines = list(records(feature_set, found))
    assert len(lines) == len(matrix) and [line["id"] for line in lines] == feature_set.ids
    by_id = {line["id"]: i for i, line in enumerate(lines)}
    for row, line in enumerate(lines):
        assert set(line) == {"id", "group", "keep", "duplicate_of", "similarity"}
        if line["keep"]:
            assert line["duplicate_of"] is None and line["similarity"] is None
        else:
            kept = by_id[line["duplicate_of"]]
            assert lines[kept]["keep"] and lines[kept]["group"] == line["group"] and kept < row  # keep first
            assert line["similarity"] == pytest.approx(float(matrix[row] @ matrix[kept]), abs=1e-6)
    assert sum(line["keep"] for line in lines) == len(set(found.groups.tolist()))


@pytest.fixture
def photo_copies(photos, tmp_path):
    """The photos, an exact copy of one, and a re-encoded, larger copy of another."""
    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    shutil.copy(folder / "chelsea.jpg", folder / "chelsea-copy.jpg")
    Image.open(folder / "coffee.jpg").resize((700, 500)).save(folder / "coffee-large.jpg", quality=97)
    return folder


@pytest.fixture
def photo_sets(run_mmcli, tiny_models, photo_copies, tmp_path):
    one, parts = tmp_path / "one.npy", f"{tmp_path / 'parts'}/"
    for out, extra in ((one, []), (parts, ["--shard-rows", "2"])):
        made = run_mmcli("extract-features", photo_copies, "-o", out, "--model", tiny_models["clip"], *extra)
        assert made.returncode == 0, made.stderr
    return one, tmp_path / "parts"


def _dedup(run_mmcli, *args) -> list[dict]:
    result = run_mmcli("dedup", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_keep_policies_and_a_sharded_set_equal_to_its_one_file_twin(run_mmcli, photo_sets, photo_copies):
    one, parts = photo_sets
    rows = np.asarray(read_feature_set(one).vectors)
    threshold = float(np.sort((rows @ rows.T)[np.triu_indices(len(rows), 1)])[-3])  # the 3 closest pairs and chains
    flags = ["--threshold", f"{threshold:.6f}"]
    first = _dedup(run_mmcli, one, *flags)
    assert _dedup(run_mmcli, f"{parts}/", *flags) == first
    groups: dict[int, list[dict]] = {}
    for line in first:
        groups.setdefault(line["group"], []).append(line)
    multi = [members for members in groups.values() if len(members) > 1]
    assert multi and all(sum(m["keep"] for m in members) == 1 for members in groups.values())
    assert all(members[0]["keep"] for members in multi)  # first

    last = _dedup(run_mmcli, one, *flags, "--keep", "last")
    assert all([line["keep"] for line in last if line["group"] == g][-1] for g in {m[0]["group"] for m in multi})

    largest = _dedup(run_mmcli, one, *flags, "--keep", "largest")
    sources = {record["id"]: record["source"] for record in read_feature_set(one).records}
    for members in multi:
        ids = [m["id"] for m in members]
        biggest = max(ids, key=lambda i: ((photo_copies / sources[i].split("/")[-1]).stat().st_size, -ids.index(i)))
        assert [line["id"] for line in largest if line["id"] in ids and line["keep"]] == [biggest]

    # field:NAME[:min|max] over a number the records carry
    scored = one.with_name("scored.npy")
    shutil.copy(one, scored)
    records_ = [json.loads(line) for line in one.with_suffix(".jsonl").read_text().splitlines()]
    for index, record in enumerate(records_):
        record["score"] = (index * 7) % 5
    scored.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in records_))
    score = {r["id"]: r["score"] for r in records_}
    for direction, pick in (("max", max), ("min", min)):
        chosen = _dedup(run_mmcli, scored, *flags, "--keep", f"field:score:{direction}")
        for members in multi:
            ids = [m["id"] for m in members]
            best = pick(score[i] for i in ids)
            expected = next(i for i in ids if score[i] == best)  # ties: the first row
            assert [line["id"] for line in chosen if line["id"] in ids and line["keep"]] == [expected]


def test_exact_copies_by_their_bytes(run_mmcli, photo_sets, photo_copies):
    one, _ = photo_sets
    result = run_mmcli("dedup", one, "--threshold", "1.0", "--exact")  # no near pair can reach 1.0 but copies
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    dropped = [line for line in lines if not line["keep"]]
    assert [line["id"].split("/")[-1] for line in dropped] == ["chelsea.jpg"] or [
        line["id"].split("/")[-1] for line in dropped
    ] == ["chelsea-copy.jpg"]
    assert dropped[0]["similarity"] == pytest.approx(1.0, abs=1e-6)
    assert "1 exact copy" in result.stderr and "1 to drop" in result.stderr
    # a set without its file manifest: the files are hashed as they are now, to the same groups
    bare = one.with_name("bare.npy")
    shutil.copy(one, bare)
    shutil.copy(one.with_suffix(".jsonl"), bare.with_suffix(".jsonl"))
    assert not bare.with_suffix(".files.jsonl").exists() and one.with_suffix(".files.jsonl").exists()
    again = run_mmcli("dedup", bare, "--threshold", "1.0", "--exact")
    assert again.returncode == 0 and again.stdout == result.stdout, again.stderr


def test_output_file_and_refusals(run_mmcli, photo_sets, tmp_path):
    one, _ = photo_sets
    out = tmp_path / "dups.jsonl"
    written = run_mmcli("dedup", one, "-o", out, "--threshold", "0.5")
    written_lines = out.read_text().splitlines()
    rows = len(read_feature_set(one))
    assert written.returncode == 0 and written.stdout == "" and len(out.read_text().splitlines()) == rows
    assert f"{rows} rows:" in written.stderr
    again = run_mmcli("dedup", one, "-o", out)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    replaced = run_mmcli("dedup", one, "-o", out, "--overwrite", "--threshold", "0.5", "--keep", "last", "--quiet")
    assert replaced.returncode == 0 and replaced.stderr == ""  # --quiet: no summary
    assert [json.loads(line)["keep"] for line in out.read_text().splitlines()] != [
        json.loads(line)["keep"] for line in written_lines
    ]

    before = {p.name for p in tmp_path.iterdir()}
    for args, words in (
        (["--method", "fastest"], "unknown method"),
        (["--keep", "smallest"], "unknown --keep policy"),
        (["--keep", "field:score"], "no record"),
        (["--threshold", "1.5"], "between -1 and 1"),
    ):
        refused = run_mmcli("dedup", one, "-o", tmp_path / "x.jsonl", *args)
        assert words in assert_one_line_refusal(refused, tmp_path, before)
    missing = run_mmcli("dedup", tmp_path / "nope.npy")
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_neighbors_and_clusters_reach_the_approximate_methods(clustered, run_mmcli, monkeypatch):
    from mmcli import ann, dedup

    npy, _, _ = clustered
    asked: list[int] = []
    search = ann.ann_search

    def spy(index, queries, k, **kwargs):
        asked.append(k)
        return search(index, queries, k, **kwargs)

    monkeypatch.setattr(ann, "ann_search", spy)
    assert run_mmcli("dedup", npy, "--method", "faiss", "--neighbors", "3", "-q").returncode == 0
    assert set(asked) == {3}
    made: list[tuple[int, int]] = []
    pairs = dedup.semantic_pairs

    def counted(vectors, threshold, clusters, *, seed=0):
        made.append((clusters, seed))
        return pairs(vectors, threshold, clusters, seed=seed)

    monkeypatch.setattr(dedup, "semantic_pairs", counted)
    one = run_mmcli("dedup", npy, "--method", "semantic", "--clusters", "20", "--seed", "3")
    assert one.returncode == 0 and "20 k-means clusters" in one.stderr, one.stderr
    assert made == [(20, 3)]  # the clusters and the seed k-means starts from

"""Early fusion and row alignment: exact values on hand-made sets, PCA projections, CLI errors."""

from __future__ import annotations

import json
from math import sqrt

import numpy as np
import pytest

from mmcli.errors import InputError, UsageError
from mmcli.fusion.align import align
from mmcli.fusion.early import PcaFitter, Projection, fuse_rows, parse_projection_spec, parse_weights
from mmcli.output.feature_set import check_finite, read_feature_set
from mmcli.output.npy import FeatureSetWriter


def write_set(path, ids, rows, *, model="m", modality="image", extra=None):
    with FeatureSetWriter(path) as writer:
        records = [{"id": i, "modality": modality, "model": model, "source": f"{i}.src", **(extra or {})} for i in ids]
        writer.add(np.asarray(rows, dtype=np.float32), records)
    return path


@pytest.fixture
def pair(tmp_path):
    """A: x=[3,4], y=[0,2], w=[1,1]; B (another order, one id A lacks): y=[1,0], x=[0,-5], z=[1,1]."""
    a = write_set(tmp_path / "a.npy", ["x", "y", "w"], [[3, 4], [0, 2], [1, 1]], model="ma", extra={"split": "test"})
    b = write_set(tmp_path / "b.npy", ["y", "x", "z"], [[1, 0], [0, -5], [1, 1]], model="mb", modality="text")
    return a, b


def fused(pair, method, **options):
    aligned = align([read_feature_set(path) for path in pair])
    return aligned, fuse_rows(aligned.blocks(), method, **options)


# After normalisation: x -> A [0.6, 0.8], B [0, -1];  y -> A [0, 1], B [1, 0].
EXPECTED = {
    "concat": [[0.6 / sqrt(2), 0.8 / sqrt(2), 0, -1 / sqrt(2)], [0, 1 / sqrt(2), 1 / sqrt(2), 0]],
    # mean x = [0.3, -0.1], norm sqrt(0.1); mean y = [0.5, 0.5]
    "mean": [[3 / sqrt(10), -1 / sqrt(10)], [1 / sqrt(2), 1 / sqrt(2)]],
    # max x = [0.6, 0.8] (already unit); max y = [1, 1]
    "max": [[0.6, 0.8], [1 / sqrt(2), 1 / sqrt(2)]],
}


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_early_methods_give_the_hand_computed_rows(pair, method):
    aligned, rows = fused(pair, method)
    assert aligned.ids == ["x", "y"]
    np.testing.assert_allclose(rows, EXPECTED[method], atol=1e-6)


def test_weighted_is_the_weighted_sum_renormalised(pair):
    _, rows = fused(pair, "weighted", weights=[0.7, 0.3])
    x = np.array([0.7 * 0.6, 0.7 * 0.8 - 0.3])  # [0.42, 0.26]
    y = np.array([0.3, 0.7])
    np.testing.assert_allclose(rows, [x / np.linalg.norm(x), y / np.linalg.norm(y)], atol=1e-6)


def test_no_normalize_combines_raw_rows(pair):
    _, concat = fused(pair, "concat", normalize=False)
    _, mean = fused(pair, "mean", normalize=False)
    _, maximum = fused(pair, "max", normalize=False)
    np.testing.assert_allclose(concat, [[3, 4, 0, -5], [0, 2, 1, 0]])
    np.testing.assert_allclose(mean, [[1.5, -0.5], [0.5, 1.0]])
    np.testing.assert_allclose(maximum, [[3, 4], [1, 2]])


def test_alignment_reports_dropped_rows_and_strict_refuses(pair):
    sets = [read_feature_set(path) for path in pair]
    aligned = align(sets)
    assert aligned.dropped == [1, 1]
    assert [rows.tolist() for rows in aligned.rows] == [[0, 1], [1, 0]]
    with pytest.raises(InputError, match="--strict"):
        align(sets, strict=True)
    by_row = align(sets, by="row")
    np.testing.assert_array_equal(by_row.blocks()[1], [[1, 0], [0, -5], [1, 1]])


def test_fused_records_name_every_input(pair):
    aligned, _ = fused(pair, "concat")
    record = aligned.records()[0]
    assert record["id"] == "x" and record["modality"] == "fused"
    assert record["model"] == ["ma", "mb"]
    assert [(entry["id"], entry["source"]) for entry in record["inputs"]] == [("x", "x.src"), ("x", "x.src")]
    assert record["split"] == "test"  # extra keys are carried through


def test_no_overlap_and_duplicate_ids_are_clear_errors(tmp_path, pair):
    other = write_set(tmp_path / "other.npy", ["p", "q"], [[1, 0], [0, 1]])
    with pytest.raises(InputError, match="share no ids"):
        align([read_feature_set(pair[0]), read_feature_set(other)])
    np.save(tmp_path / "dup.npy", np.eye(2, dtype=np.float32))
    (tmp_path / "dup.jsonl").write_text(
        "".join(json.dumps({"id": "x", "modality": "image", "model": "m", "source": "s"}) + "\n" for _ in range(2))
    )
    with pytest.raises(InputError, match="appears on rows 0 and 1"):
        align([read_feature_set(pair[0]), read_feature_set(tmp_path / "dup.npy")])


def test_non_finite_rows_are_refused_with_their_row(tmp_path):
    rows = np.ones((5, 3), np.float32)
    rows[3, 1] = np.nan
    np.save(tmp_path / "bad.npy", rows)
    (tmp_path / "bad.jsonl").write_text(
        "".join(json.dumps({"id": f"r{i}", "modality": "image", "model": "m", "source": "s"}) + "\n" for i in range(5))
    )
    with pytest.raises(InputError, match=r"row 3 \(id 'r3'\)"):
        check_finite(read_feature_set(tmp_path / "bad.npy"), chunk_rows=2)


def test_pca_matches_numpy_svd_and_chunked_fits_agree(tmp_path):
    rng = np.random.default_rng(0)
    blocks = [rng.standard_normal((200, 12)) @ rng.standard_normal((12, 12)), rng.standard_normal((200, 8))]
    blocks = [block.astype(np.float32) for block in blocks]
    whole = PcaFitter([12, 8])
    whole.add(blocks)
    chunked = PcaFitter([12, 8])
    for start in range(0, 200, 33):
        chunked.add([block[start : start + 33] for block in blocks])
    projection, again = whole.fit(4), chunked.fit(4)
    for index, block in enumerate(blocks):
        centred = block - block.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        # Same subspace and same components up to sign: |<ours, svd>| = 1 for each of the top 4.
        overlap = np.abs(np.sum(projection.components[index] * vt[:4], axis=1))
        np.testing.assert_allclose(overlap, 1.0, atol=1e-4)
        np.testing.assert_allclose(again.components[index], projection.components[index], atol=1e-5)
    saved = tmp_path / "pca.safetensors"
    projection.save(saved)
    loaded = Projection.load(saved)
    for got, want in zip(loaded.apply(blocks), projection.apply(blocks), strict=True):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(UsageError, match="widths"):
        loaded.check([12, 9], saved)
    with pytest.raises(UsageError, match="narrowest"):
        whole.fit(9)


def test_option_parsers():
    assert parse_weights("0.7,0.3", 2) == [0.7, 0.3]
    assert parse_projection_spec("pca:16") == 16
    for bad in ("0.7", "a,b", "-1,2", "0,0"):
        with pytest.raises(UsageError):
            parse_weights(bad, 2)
    with pytest.raises(UsageError):
        parse_projection_spec("svd:3")


def test_cli_fuses_and_reuses_a_projection(tmp_path, run_mmcli):
    rng = np.random.default_rng(1)
    ids = [f"item{i}" for i in range(40)]
    a = write_set(tmp_path / "a.npy", ids, rng.standard_normal((40, 10)), model="ma")
    b = write_set(tmp_path / "b.npy", ids[::-1], rng.standard_normal((40, 6)), model="mb")
    out, again = tmp_path / "fused.npy", tmp_path / "again.npy"
    pca = tmp_path / "pca.safetensors"
    done = run_mmcli("fuse", a, b, "-o", out, "--method", "mean", "--project", "pca:4", "--save-projection", pca)
    assert done.returncode == 0, done.stderr
    fused_set = read_feature_set(out)
    assert fused_set.vectors.shape == (40, 4) and fused_set.ids == ids
    np.testing.assert_allclose(np.linalg.norm(fused_set.vectors, axis=1), 1.0, atol=1e-6)
    done = run_mmcli("fuse", a, b, "-o", again, "--method", "mean", "--projection", pca)
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(read_feature_set(again).vectors, fused_set.vectors)
    # The file written equals the library's own computation.
    aligned = align([read_feature_set(a), read_feature_set(b)])
    expected = fuse_rows(aligned.blocks(), "mean", projection=Projection.load(pca))
    np.testing.assert_allclose(fused_set.vectors, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "mean"], "one width"),
        (["--method", "weighted"], "needs --weights"),
        (["--method", "concat", "--weights", "1,2"], "--weights goes with --method weighted"),
        (["--method", "attention"], "--truth"),
        (["--method", "rrf"], "--results"),
        (["--projection", "missing.safetensors"], "does not exist"),
    ],
)
def test_cli_usage_errors(tmp_path, run_mmcli, pair, args, message):
    write_set(tmp_path / "narrow.npy", ["x", "y"], [[1, 0, 0], [0, 1, 0]])
    inputs = [pair[0], tmp_path / "narrow.npy"] if "mean" in args else list(pair)
    done = run_mmcli("fuse", *inputs, "-o", tmp_path / "out.npy", *args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out.npy").exists()


def test_cli_row_count_mismatch_between_npy_and_jsonl(tmp_path, run_mmcli, pair):
    np.save(tmp_path / "short.npy", np.ones((2, 2), np.float32))
    (tmp_path / "short.jsonl").write_text(json.dumps({"id": "x", "modality": "image", "model": "m", "source": "s"}))
    done = run_mmcli("fuse", pair[0], tmp_path / "short.npy", "-o", tmp_path / "out.npy")
    assert done.returncode == 2 and "has 2 rows but" in done.stderr


def test_fuse_sets_is_the_whole_run_in_one_call(tmp_path, pair):
    from mmcli.errors import UsageError
    from mmcli.fusion.run import fuse_sets

    notes, bars = [], []

    class Bar:
        def __init__(self, total, desc):
            bars.append([desc, total, 0])

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, rows):
            bars[-1][2] += rows

    done = fuse_sets(pair, tmp_path / "out.npy", method="mean", on_note=notes.append, progress=Bar)
    assert (done.rows, done.width, done.method) == (2, 2, "mean")
    np.testing.assert_allclose(read_feature_set(done.output).vectors, fused(pair, "mean")[1], atol=1e-6)
    assert notes == [f"1 of 3 rows of {path} have no partner in every input; left out" for path in pair]
    assert bars == [["fusing", 2, 2]]
    with pytest.raises(UsageError) as refused:
        fuse_sets(pair, tmp_path / "again.npy", method="weighted")
    assert "method='weighted' needs weights" in str(refused.value) and "--" not in str(refused.value)

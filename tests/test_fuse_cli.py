"""``mmcli fuse`` end to end: learned heads trained, saved and reapplied; late fusion of result files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmcli.output.feature_set import read_feature_set
from mmcli.output.npy import FeatureSetWriter


def xor_sets(folder, rows=600, seed=0):
    """Two 16-wide sets whose label is the XOR of one hidden bit in each: neither set alone tells it."""
    rng = np.random.default_rng(seed)
    bits_a, bits_b = rng.integers(0, 2, rows), rng.integers(0, 2, rows)
    ids = [f"item{i:04d}" for i in range(rows)]

    def block(bits):
        rows_ = rng.standard_normal((len(bits), 16)) * 0.3
        rows_[:, 0] += np.where(bits == 1, 2.0, -2.0)
        return rows_

    paths = []
    for name, bits, order in (("a", bits_a, slice(None)), ("b", bits_b, slice(None, None, -1))):
        path = folder / f"{name}.npy"
        with FeatureSetWriter(path) as writer:
            records = [{"id": i, "modality": "image", "model": f"m{name}", "source": i} for i in ids]
            writer.add(block(bits)[order], records[order])
        paths.append(path)
    labels = folder / "labels.jsonl"
    labels.write_text(
        "".join(
            json.dumps({"id": i, "label": "odd" if a ^ b else "even"}) + "\n"
            for i, a, b in zip(ids, bits_a, bits_b, strict=True)
        )
    )
    return paths, labels


def predictions(text):
    return {record["id"]: record for record in map(json.loads, text.splitlines())}


@pytest.fixture(scope="module")
def xor(tmp_path_factory):
    return xor_sets(tmp_path_factory.mktemp("xor"))


def test_attention_head_learns_xor_and_reloads_identically(tmp_path, run_mmcli, xor):
    (a, b), labels = xor
    head, fused = tmp_path / "head", tmp_path / "fused.npy"
    trained = run_mmcli(
        "fuse", a, b, "--truth", labels, "--method", "attention", "--save-head", head, "-o", fused,
        "--epochs", "150", "--seed", "3",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "epoch" in trained.stderr and "val" in trained.stderr
    best = float(trained.stderr.split("best validation loss")[1].split("accuracy")[1].split()[0])
    assert best >= 0.95, trained.stderr
    assert (tmp_path / "head.safetensors").is_file() and (tmp_path / "head.json").is_file()
    fused_set = read_feature_set(fused)
    assert fused_set.vectors.shape[0] == 600 and fused_set.records[0]["modality"] == "fused"

    first = run_mmcli("fuse", a, b, "--head", head, "--predict")
    again = run_mmcli("fuse", a, b, "--head", tmp_path / "head.safetensors", "--predict", "-o", tmp_path / "p.jsonl")
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    assert predictions(first.stdout) == predictions((tmp_path / "p.jsonl").read_text())
    truth = {r["id"]: r["label"] for r in map(json.loads, labels.read_text().splitlines())}
    got = predictions(first.stdout)
    accuracy = np.mean([got[i]["label"] == truth[i] for i in truth])
    assert accuracy >= 0.95
    assert set(got["item0000"]) >= {"id", "label", "score"}

    reapplied = run_mmcli("fuse", a, b, "--head", head, "-o", tmp_path / "again.npy")
    assert reapplied.returncode == 0, reapplied.stderr
    np.testing.assert_array_equal(read_feature_set(tmp_path / "again.npy").vectors, fused_set.vectors)


def test_head_on_features_of_the_wrong_width_is_refused(tmp_path, run_mmcli, xor):
    (a, b), labels = xor
    head = tmp_path / "head"
    done = run_mmcli("fuse", a, b, "--truth", labels, "--method", "mlp", "--save-head", head, "--predict",
                     "--epochs", "2", "-q")  # fmt: skip
    assert done.returncode == 0, done.stderr
    with FeatureSetWriter(tmp_path / "narrow.npy") as writer:
        writer.add(np.ones((2, 8), np.float32), [{"id": f"item000{i}", "modality": "image", "model": "m",
                                                  "source": "s"} for i in range(2)])  # fmt: skip
    refused = run_mmcli("fuse", a, tmp_path / "narrow.npy", "--head", head, "--predict")
    assert refused.returncode == 2 and "width" in refused.stderr and "Traceback" not in refused.stderr


def test_labels_for_ids_not_in_the_features_are_refused(tmp_path, run_mmcli, xor):
    (a, b), _ = xor
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"id": "item0000", "label": "x"}) + "\n" + json.dumps({"id": "nope", "label": "y"}))
    done = run_mmcli("fuse", a, b, "--truth", labels, "-o", tmp_path / "out.npy")
    assert done.returncode == 2 and "'nope'" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out.npy").exists()


def test_late_fusion_of_retrieve_output_files(tmp_path, run_mmcli):
    def run_file(name, hits):
        path = tmp_path / name
        record = {"query_id": "q1", "query": "a cat", "hits": [
            {"rank": r, "id": i, "score": s, "source": f"{i}.jpg"} for r, (i, s) in enumerate(hits, 1)]}  # fmt: skip
        path.write_text(json.dumps(record) + "\n")
        return path

    one = run_file("one.jsonl", [("a", 0.9), ("b", 0.8)])
    two = run_file("two.jsonl", [("b", 0.7), ("c", 0.6)])
    done = run_mmcli("fuse", "--results", one, two, "--method", "rrf")
    assert done.returncode == 0, done.stderr
    (record,) = map(json.loads, done.stdout.splitlines())
    # b: 1/62 + 1/61; a: 1/61; c: 1/62
    assert [(h["id"], h["score"]) for h in record["hits"]] == [
        ("b", round(1 / 62 + 1 / 61, 6)),
        ("a", round(1 / 61, 6)),
        ("c", round(1 / 62, 6)),
    ]
    assert record["hits"][0]["source"] == "b.jpg" and record["query"] == "a cat"
    single = run_mmcli("fuse", "--results", one)
    assert single.returncode == 2 and "at least two" in single.stderr


def test_example_fusion_script(tiny_models, warm_env):
    import subprocess

    from conftest import EXAMPLES

    result = subprocess.run(
        ["bash", str(EXAMPLES / "fusion.sh")],
        capture_output=True,
        text=True,
        env={
            **warm_env,
            "IMAGE_MODEL": str(tiny_models["clip"]),
            "VISION_MODEL": str(tiny_models["dinov2"]),
            "HF_HUB_OFFLINE": "1",
        },
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sum("looks most like" in line for line in lines) == 4
    summary = json.loads("\n".join(lines[4:]))
    assert set(summary) == {"accuracy", "macro f1"} and 0 <= summary["accuracy"] <= 1


def test_fused_sets_refuse_text_queries_and_zero_shot_labels(tmp_path, run_mmcli, xor):
    (a, b), _ = xor
    fused = tmp_path / "fused.npy"
    assert run_mmcli("fuse", a, b, "-o", fused, "-q").returncode == 0
    query = run_mmcli("retrieve", "--index", fused, "--query", "a cat")
    labels = run_mmcli("classify", "--features", fused, "--labels", "cat,dog")
    vectors = run_mmcli("retrieve", "--index", fused, "--queries", fused, "-k", "1", "-q")
    for refused in (query, labels):
        assert refused.returncode == 2 and "fused rows" in refused.stderr and "Traceback" not in refused.stderr
    assert vectors.returncode == 0 and json.loads(vectors.stdout.splitlines()[0])["hits"][0]["score"] > 0.999

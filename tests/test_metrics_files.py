"""The library side of ``mmcli evaluate``: one call per run, notes returned, errors without flag names."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmcli import evaluate_caption_files, evaluate_classification_files, evaluate_retrieval_files
from mmcli.errors import IdMismatch, InputError, MissingScores
from mmcli.metrics.captions import evaluate_captions
from mmcli.metrics.files import evaluate_cross_modal_files
from mmcli.output.npy import FeatureSetWriter


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_caption_files_score_what_evaluate_captions_scores(tmp_path):
    pred = write_jsonl(tmp_path / "pred.jsonl", [{"id": "a", "caption": "a dog runs"}, {"id": "b", "error": "x"},
                                                 {"id": "z", "caption": "a cat"}])  # fmt: skip
    refs = write_jsonl(tmp_path / "refs.jsonl", [{"id": "a", "captions": ["A dog running."]},
                                                 {"id": "a", "caption": "A dog runs fast."}])  # fmt: skip
    heard: list[str] = []
    report = evaluate_caption_files(pred, refs, ["bleu", "cider"], on_note=heard.append)
    direct = evaluate_captions({"a": "a dog runs"}, {"a": ["A dog running.", "A dog runs fast."]}, ["bleu", "cider"])
    assert report.metrics == direct.corpus
    assert report.per_item == direct.by_item()
    expected = [f"1 error records in {pred} skipped", f"1 predictions in {pred} have no references (e.g. 'z')"]
    assert heard == report.notes == expected
    with pytest.raises(IdMismatch) as refused:
        evaluate_caption_files(pred, refs, ["bleu"], strict=True)
    assert str(refused.value) == f"1 predictions in {pred} have no references (e.g. 'z')"


def test_retrieval_and_classification_files(tmp_path):
    run = write_jsonl(tmp_path / "run.jsonl", [{"query_id": "q1", "query": "a", "hits": [{"id": "x"}, {"id": "y"}]}])
    qrels = write_jsonl(tmp_path / "qrels.jsonl", [{"query_id": "q1", "relevant": ["y"]},
                                                   {"query_id": "q2", "relevant": ["x"]}])  # fmt: skip
    report = evaluate_retrieval_files(run, qrels, [1, 2])
    assert report.scores.metrics["R@2"] == pytest.approx(0.5)
    assert report.notes == [f"1 judged queries are not in {run}; they score zero"]
    with pytest.raises(IdMismatch, match=r"^1 judged queries"):
        evaluate_retrieval_files(run, qrels, strict=True)

    pred = write_jsonl(tmp_path / "pred.jsonl", [{"id": "1", "label": "cat"}, {"id": "2", "label": "dog"}])
    truth = write_jsonl(tmp_path / "truth.jsonl", [{"id": "1", "label": "cat"}, {"id": "2", "label": "cat"}])
    assert evaluate_classification_files(pred, truth).scores.metrics["accuracy"] == pytest.approx(0.5)
    with pytest.raises(MissingScores) as refused:
        evaluate_classification_files(pred, truth, top_ks=[1])
    assert "--" not in str(refused.value)


def test_cross_modal_files(tmp_path):
    with FeatureSetWriter(tmp_path / "images.npy") as writer:
        writer.add(np.eye(2, dtype=np.float32), [{"id": f"i{n}", "modality": "image", "model": "m", "source": "s"}
                                                 for n in range(2)])  # fmt: skip
    with FeatureSetWriter(tmp_path / "texts.npy") as writer:
        writer.add(np.eye(2, dtype=np.float32), [{"id": f"t{n}", "modality": "text", "model": "m", "source": "s",
                                                  "image_id": f"i{1 - n}"} for n in range(2)])  # fmt: skip
    report = evaluate_cross_modal_files(tmp_path / "images.npy", tmp_path / "texts.npy", ks=[1])
    assert (report.images, report.texts, report.notes) == (2, 2, [])
    assert report.metrics["text->image R@1"] == 0.0
    with pytest.raises(InputError, match="has no 'owner' naming its image"):
        evaluate_cross_modal_files(tmp_path / "images.npy", tmp_path / "texts.npy", "owner")

"""Retrieval and classification metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmcli.metrics.classification import evaluate_classification
from mmcli.metrics.retrieval import cross_modal_recall, evaluate_rankings, protocol_ranks, query_metrics


def test_one_query_by_hand():
    # relevant {b, d, z}: b at rank 2, d at rank 4, z never retrieved.
    scores = query_metrics(["a", "b", "c", "d"], {"b", "d", "z"}, ks=(1, 2, 10))
    assert scores["R@1"] == 0
    assert scores["R@2"] == pytest.approx(1 / 3)
    assert scores["R@10"] == pytest.approx(2 / 3)  # k larger than the list: what is there counts
    assert scores["RR"] == pytest.approx(1 / 2)
    assert scores["rank"] == 2
    assert scores["AP"] == pytest.approx((1 / 2 + 2 / 4) / 3)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert scores["nDCG@10"] == pytest.approx(dcg / ideal)


def test_means_skip_queries_without_relevant_items_and_count_missing_ones():
    rankings = {"q1": ["x", "y"], "q2": ["y", "x"], "q3": ["x"], "extra": ["x"]}
    qrels = {"q1": {"x"}, "q2": {"x"}, "q3": set(), "q4": {"x"}}
    result = evaluate_rankings(rankings, qrels, ks=(1,))
    assert result.queries == 3  # q1, q2 and q4 (missing from the results: scores zero)
    assert result.no_relevant == ["q3"] and result.missing == ["q4"] and result.unjudged == ["extra"]
    assert result.metrics["R@1"] == pytest.approx(1 / 3)
    assert result.metrics["MRR"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    assert result.metrics["MedR"] == 2.0  # ranks 1, 2, never
    assert evaluate_rankings({"q": ["a"]}, {"q": {"b"}, "r": {"b"}}).metrics["MedR"] is None


def test_protocol_ranks_break_ties_by_column():
    similarity = np.array([[0.5, 0.5, 0.9], [0.1, 0.2, 0.2]])
    # row 0: column 1 ties column 0, which comes first -> rank 3 behind 0.9 and column 0.
    assert protocol_ranks(similarity, [[1], [2]]).tolist() == [3, 2]
    assert protocol_ranks(similarity, [[0, 1], [1, 2]]).tolist() == [2, 1]


def test_cross_modal_recall_with_several_captions_per_image():
    images = np.eye(3, dtype=np.float32)
    texts = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 0.2, 0.8], [0, 0, 1], [0.6, 0.4, 0]], dtype=np.float32)
    owner = [0, 0, 1, 2, 1]  # text 2 and 4 describe image 1
    result = cross_modal_recall(images, texts, owner, ks=(1, 2))
    # image->text: image 0 best text is 0 (own) -> rank 1; image 1 scores [0,.1,.2,0,.4]: text 4 first -> 1;
    # image 2 scores [0,0,.8,1,0]: text 3 (own) first -> 1.
    assert result["image->text R@1"] == pytest.approx(1.0)
    # text->image: t0->img0 r1; t1->img0 r1; t2 [0,.2,.8] own img1 -> r2; t3 -> img2 r1; t4 [.6,.4,0] own img1 -> r2.
    assert result["text->image R@1"] == pytest.approx(0.6)
    assert result["text->image R@2"] == pytest.approx(1.0)
    assert result["text->image MedR"] == 1.0


def test_classification_by_hand():
    truth = {"1": "cat", "2": "cat", "3": "dog", "4": "dog", "5": "bird"}
    predicted = {"1": "cat", "2": "dog", "3": "dog", "4": "dog", "5": "cat", "9": "cat"}
    scores = {
        "1": {"cat": 0.8, "dog": 0.2, "bird": 0.0},
        "2": {"dog": 0.5, "cat": 0.5, "bird": 0.0},  # tie: dog listed first wins top-1
        "3": {"dog": 0.9, "cat": 0.1, "bird": 0.0},
        "4": {"dog": 0.6, "bird": 0.3, "cat": 0.1},
        "5": {"cat": 0.5, "dog": 0.3, "bird": 0.2},
    }
    result = evaluate_classification(predicted, truth, scores=scores, top_ks=(1, 2, 5))
    assert result.labels == ["bird", "cat", "dog"]
    assert result.confusion.tolist() == [[0, 1, 0], [0, 1, 1], [0, 0, 2]]
    assert result.metrics["accuracy"] == pytest.approx(3 / 5)
    assert result.metrics["top-1 accuracy"] == pytest.approx(3 / 5)
    assert result.metrics["top-2 accuracy"] == pytest.approx(4 / 5)  # item 5: bird is third
    assert result.metrics["top-5 accuracy"] == pytest.approx(1.0)  # k beyond the labels
    # precision: bird 0 (never predicted), cat 1/2, dog 2/3; recall: bird 0, cat 1/2, dog 1
    cat_f1, dog_f1 = 0.5, 2 * (2 / 3) / (2 / 3 + 1)
    assert result.per_class["dog"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": dog_f1, "support": 2})
    assert result.metrics["macro precision"] == pytest.approx((0 + 1 / 2 + 2 / 3) / 3)
    assert result.metrics["macro f1"] == pytest.approx((0 + cat_f1 + dog_f1) / 3)
    assert result.metrics["weighted recall"] == pytest.approx((1 * 0 + 2 * 0.5 + 2 * 1) / 5)
    assert result.metrics["micro f1"] == pytest.approx(3 / 5)

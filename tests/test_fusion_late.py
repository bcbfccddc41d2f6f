"""Late fusion of result lists equals hand-computed RRF, min-max, max and Borda scores.

Every expected value below is worked out by hand from the small runs in this file; the arithmetic is
written next to it. ``approx(x)`` allows only the rounding of fused scores to 6 decimals.
"""

from __future__ import annotations

import math

import pytest

from mmcli.errors import InputError, UsageError
from mmcli.fusion.late import DEFAULT_RRF_K, LATE_METHODS, LateFusionReport, fuse_results


def approx(value: float) -> object:
    """The fused score as written: rounded to 6 decimals."""
    return pytest.approx(value, abs=5e-7)


def hit(rank, hit_id, score, **extra):
    return {"rank": rank, "id": hit_id, "score": score, "source": f"{hit_id}.jpg", **extra}


# Retrieval runs. q1 is in both runs, q2 only in run 1 (its run-2 record failed), q3 only in run 2.
RUN1 = [
    {"query_id": "q1", "query": "a red car", "hits": [hit(1, "a", 0.9), hit(2, "b", 0.7), hit(3, "c", 0.5)]},
    {"query_id": "q2", "query": "a dog", "hits": [hit(1, "x", 0.8), hit(2, "y", 0.4)]},
]
RUN2 = [
    {
        "query_id": "q1",
        "query": "a red car (run 2)",
        "hits": [hit(1, "c", 0.8), {**hit(2, "a", 0.6), "source": "other/a.jpg"}, hit(3, "e", 0.2, caption="E")],
    },
    {"query_id": "q2", "query": "a dog", "error": "cannot encode"},
    {"query_id": "q3", "query": "a boat", "hits": [hit(1, "z", 0.3)]},
]
# q1 ranks:  a: 1 and 2,  b: 2 and -,  c: 3 and 1,  e: - and 3.
# q1 min-max: run 1 (0.9, 0.7, 0.5) -> a 1, b (0.7-0.5)/0.4 = 1/2, c 0
#             run 2 (0.8, 0.6, 0.2) -> c 1, a (0.6-0.2)/0.6 = 2/3, e 0


def ids(record):
    return [h["id"] for h in record["hits"]]


def scores(record):
    return [h["score"] for h in record["hits"]]


def by_key(records, key="query_id"):
    return {r[key]: r for r in records}


def test_rrf_retrieval_hand_computed():
    fused, report = fuse_results([RUN1, RUN2], "rrf")
    assert report == LateFusionReport(kind="retrieval", queries=3, partial=2, skipped_errors=1)
    assert [r["query_id"] for r in fused] == ["q1", "q2", "q3"]  # run 1's keys, then run 2's new ones
    q1, q2, q3 = fused
    # a: 1/61 + 1/62 = 0.032522;  c: 1/63 + 1/61 = 0.032266;  b: 1/62 = 0.016129;  e: 1/63 = 0.015873
    assert ids(q1) == ["a", "c", "b", "e"]
    assert scores(q1) == [approx(1 / 61 + 1 / 62), approx(1 / 63 + 1 / 61), approx(1 / 62), approx(1 / 63)]
    assert scores(q1) == [0.032522, 0.032266, 0.016129, 0.015873]
    assert [h["rank"] for h in q1["hits"]] == [1, 2, 3, 4]
    # q2 only in run 1: x 1/61, y 1/62;  q3 only in run 2: z 1/61
    assert ids(q2) == ["x", "y"] and scores(q2) == [approx(1 / 61), approx(1 / 62)]
    assert ids(q3) == ["z"] and scores(q3) == [approx(1 / 61)]


def test_retrieval_record_shape_query_source_and_extra_keys_come_from_the_first_run_that_has_them():
    fused, _ = fuse_results([RUN1, RUN2], "rrf")
    q1, _, q3 = fused
    assert list(q1) == ["query_id", "query", "hits"]
    assert q1["query"] == "a red car"  # run 1's text, not run 2's
    assert q3["query"] == "a boat"
    hits = {h["id"]: h for h in q1["hits"]}
    assert hits["a"] == {"rank": 1, "id": "a", "score": 0.032522, "source": "a.jpg"}  # run 1's source
    assert hits["e"] == {"rank": 4, "id": "e", "score": 0.015873, "source": "e.jpg", "caption": "E"}
    assert list(hits["e"])[:4] == ["rank", "id", "score", "source"]


def test_rrf_weights_change_the_order():
    fused, _ = fuse_results([RUN1, RUN2], "rrf", weights=[1, 3])
    q1 = fused[0]
    # c: 1/63 + 3/61 = 0.015873 + 0.049180 = 0.065053;  a: 1/61 + 3/62 = 0.016393 + 0.048387 = 0.064780
    # e: 3/63 = 0.047619;  b: 1/62 = 0.016129
    assert ids(q1) == ["c", "a", "e", "b"]
    assert scores(q1) == [approx(1 / 63 + 3 / 61), approx(1 / 61 + 3 / 62), approx(3 / 63), approx(1 / 62)]
    # q3 exists only in run 2, weight 3: z 3/61
    assert scores(fused[2]) == [approx(3 / 61)]


def test_rrf_k_changes_the_order():
    one = [{"query_id": "q", "query": "q", "hits": [hit(1, "p", 0.9), hit(2, "s", 0.8), hit(3, "q", 0.7)]}]
    two = [{"query_id": "q", "query": "q", "hits": [hit(1, "t", 0.9), hit(2, "u", 0.8), hit(3, "q", 0.7)]}]
    # k = 60: q 1/63 + 1/63 = 2/63 = 0.031746 beats p and t at 1/61 = 0.016393; s and u 1/62
    (fused,), _ = fuse_results([one, two], "rrf")
    assert DEFAULT_RRF_K == 60
    assert ids(fused) == ["q", "p", "t", "s", "u"]
    assert scores(fused) == [approx(2 / 63), approx(1 / 61), approx(1 / 61), approx(1 / 62), approx(1 / 62)]
    # k = 0.5: p and t 1/1.5 = 2/3 beat q 2/3.5 = 4/7 = 0.571429; s and u 1/2.5 = 0.4
    (fused,), _ = fuse_results([one, two], "rrf", rrf_k=0.5)
    assert ids(fused) == ["p", "t", "q", "s", "u"]  # p/t and s/u tie: equal best rank, so first appearance
    assert scores(fused) == [0.666667, 0.666667, 0.571429, 0.4, 0.4]


def test_rrf_ties_go_to_the_better_best_rank_then_to_first_appearance():
    one = [{"query_id": "q", "hits": [hit(1, "a", 0.9), hit(2, "b", 0.8), hit(3, "c", 0.7)]}]
    two = [{"query_id": "q", "hits": [hit(1, "b", 0.9), hit(2, "a", 0.8), hit(3, "d", 0.7)]}]
    # a = b = 1/61 + 1/62 (best rank 1 each: a appears first); c = d = 1/63 (best rank 3 each: c first)
    (fused,), _ = fuse_results([one, two], "rrf")
    assert ids(fused) == ["a", "b", "c", "d"]
    assert scores(fused) == [approx(1 / 61 + 1 / 62)] * 2 + [approx(1 / 63)] * 2

    four = [{"query_id": "q", "hits": [hit(1, "m", 0.9), hit(2, "n", 0.8)]}]
    five = [{"query_id": "q", "hits": [hit(1, "n", 0.9)]}]
    # k = 1, weights 1, 1/2: m = 1/(1+1) = 1/2;  n = 1/(1+2) + (1/2)/(1+1) = 1/3 + 1/4 = 7/12 -> n first
    (fused,), _ = fuse_results([four, five], "rrf", rrf_k=1, weights=[1, 0.5])
    assert ids(fused) == ["n", "m"] and scores(fused) == [approx(7 / 12), 0.5]
    # k = 1, weights 1, 1/3: m = 1/2;  n = 1/3 + (1/3)/2 = 1/2 -> tie, both best rank 1 -> m (seen first)
    (fused,), _ = fuse_results([four, five], "rrf", rrf_k=1, weights=[1, 1 / 3])
    assert ids(fused) == ["m", "n"] and scores(fused) == [0.5, 0.5]

    six = [{"query_id": "q", "hits": [hit(1, "m", 0.9), hit(2, "x", 0.8)]}]
    seven = [{"query_id": "q", "hits": [hit(1, "y", 0.9)]}]
    # k = 1, weights 1, 2/3: m = 1/2;  x = 1/3 (best rank 2);  y = (2/3)/2 = 1/3 (best rank 1)
    # x is seen before y, but y has the better best rank -> m, y, x
    (fused,), _ = fuse_results([six, seven], "rrf", rrf_k=1, weights=[1, 2 / 3])
    assert ids(fused) == ["m", "y", "x"] and scores(fused) == [0.5, 0.333333, 0.333333]


def test_tie_with_unequal_best_ranks_prefers_the_better_rank_over_first_appearance():
    # Borda, n = 3 distinct candidates (a, b, c): rank 1 -> 3 points, rank 2 -> 2, rank 3 -> 1.
    one = [{"query_id": "q", "hits": [hit(1, "a", 0.9), hit(2, "b", 0.8), hit(3, "c", 0.7)]}]
    two = [{"query_id": "q", "hits": [hit(1, "b", 0.9), hit(2, "c", 0.8), hit(3, "a", 0.7)]}]
    # a: 3 + 1 = 4 (best rank 1);  b: 2 + 3 = 5;  c: 1 + 2 = 3
    (fused,), _ = fuse_results([one, two], "borda")
    assert ids(fused) == ["b", "a", "c"] and scores(fused) == [5.0, 4.0, 3.0]
    # weights 1, 1/2: a 3 + 1/2 = 3.5 (best rank 1);  b 2 + 3/2 = 3.5 (best rank 1);  c 1 + 1 = 2
    (fused,), _ = fuse_results([one, two], "borda", weights=[1, 0.5])
    assert ids(fused) == ["a", "b", "c"] and scores(fused) == [3.5, 3.5, 2.0]
    # Only run two's ranks decide best rank for a candidate that run one lacks:
    three = [{"query_id": "q", "hits": [hit(1, "p", 0.9), hit(2, "q", 0.8)]}]
    four = [{"query_id": "q", "hits": [hit(1, "q", 0.9), hit(2, "r", 0.8), hit(3, "p", 0.7)]}]
    # n = 3:  p 3 + 1 = 4 (best 1);  q 2 + 3 = 5;  r 0 + 2 = 2
    # weights 1, 1: q, p, r.  weights 0.5, 1: p 1.5 + 1 = 2.5;  q 1 + 3 = 4;  r 2 -> q, p, r
    # weights 0, 1: p 1 (best rank 1, from run three, which counts although its weight is 0); q 3; r 2
    (fused,), _ = fuse_results([three, four], "borda", weights=[0, 1])
    assert ids(fused) == ["q", "r", "p"] and scores(fused) == [3.0, 2.0, 1.0]
    # weights 0, 1 and a rank-2 tie: five puts s at rank 3 and t at rank 2; six puts s at rank 1
    five = [{"query_id": "q", "hits": [hit(1, "u", 0.9), hit(2, "t", 0.8), hit(3, "s", 0.7)]}]
    six = [{"query_id": "q", "hits": [hit(1, "s", 0.9), hit(2, "u", 0.8), hit(3, "t", 0.7)]}]
    # n = 3, weights 1, 1/2:  u 3 + 2/2 = 4;  t 2 + 1/2 = 2.5 (best rank 2);  s 1 + 3/2 = 2.5 (best rank 1)
    # t appears before s, but s has the better best rank, so s comes first.
    (fused,), _ = fuse_results([five, six], "borda", weights=[1, 0.5])
    assert ids(fused) == ["u", "s", "t"] and scores(fused) == [4.0, 2.5, 2.5]


def test_weighted_retrieval_hand_computed():
    fused, report = fuse_results([RUN1, RUN2], "weighted")
    assert report.partial == 2 and report.skipped_errors == 1
    q1, q2, q3 = fused
    # a: 1 + 2/3 = 5/3 = 1.666667;  c: 0 + 1 = 1;  b: 1/2 + (missing) 0 = 0.5;  e: 0 + 0 = 0
    assert ids(q1) == ["a", "c", "b", "e"]
    assert scores(q1) == [approx(5 / 3), 1.0, 0.5, 0.0]
    # q2 only in run 1: x (0.8-0.4)/0.4 = 1, y 0
    assert ids(q2) == ["x", "y"] and scores(q2) == [1.0, 0.0]
    # q3: a single hit, max == min -> 1.0
    assert scores(q3) == [1.0]


def test_weighted_retrieval_with_weights_and_a_float_noise_tie():
    fused, _ = fuse_results([RUN1, RUN2], "weighted", weights=[1, 3])
    q1 = fused[0]
    # a: 1*1 + 3*(2/3) = 3;  c: 1*0 + 3*1 = 3 -> tie (in floats a is 2.9999999999999996: still a tie);
    # both have best rank 1, a appears first.  b: 1*(1/2) = 0.5;  e: 3*0 = 0
    assert ids(q1) == ["a", "c", "b", "e"]
    assert scores(q1) == [3.0, 3.0, 0.5, 0.0]
    assert scores(fused[2]) == [3.0]  # q3: 3 * 1.0


def test_max_retrieval_hand_computed():
    fused, _ = fuse_results([RUN1, RUN2], "max")
    q1 = fused[0]
    # a: max(1, 2/3) = 1;  c: max(0, 1) = 1 -> tie, best ranks 1 and 1, a first;  b: max(1/2) = 0.5;  e: max(0) = 0
    assert ids(q1) == ["a", "c", "b", "e"] and scores(q1) == [1.0, 1.0, 0.5, 0.0]
    fused, _ = fuse_results([RUN1, RUN2], "max", weights=[1, 3])
    q1 = fused[0]
    # a: max(1*1, 3*2/3) = 2;  c: max(1*0, 3*1) = 3;  b: max(1*1/2) = 0.5;  e: max(3*0) = 0
    assert ids(q1) == ["c", "a", "b", "e"] and scores(q1) == [3.0, approx(2.0), 0.5, 0.0]


def test_borda_retrieval_hand_computed():
    fused, _ = fuse_results([RUN1, RUN2], "borda")
    q1, q2, q3 = fused
    # q1: n = 4 distinct (a, b, c, e): rank 1 -> 4 points, rank 2 -> 3, rank 3 -> 2, absent -> 0
    # a: 4 + 3 = 7;  c: 2 + 4 = 6;  b: 3 + 0 = 3;  e: 0 + 2 = 2
    assert ids(q1) == ["a", "c", "b", "e"] and scores(q1) == [7.0, 6.0, 3.0, 2.0]
    # q2: n = 2 (x, y): x 2, y 1;  q3: n = 1: z 1
    assert scores(q2) == [2.0, 1.0] and scores(q3) == [1.0]
    fused, _ = fuse_results([RUN1, RUN2], "borda", weights=[1, 3])
    # a: 4 + 3*3 = 13;  c: 2 + 3*4 = 14;  b: 3;  e: 3*2 = 6
    assert ids(fused[0]) == ["c", "a", "e", "b"] and scores(fused[0]) == [14.0, 13.0, 6.0, 3.0]


def test_top_k_keeps_the_best_hits():
    fused, _ = fuse_results([RUN1, RUN2], "rrf", top_k=2)
    q1, q2, q3 = fused
    assert ids(q1) == ["a", "c"] and [h["rank"] for h in q1["hits"]] == [1, 2]
    assert ids(q2) == ["x", "y"] and ids(q3) == ["z"]
    # Borda still counts n over all candidates, not the kept ones: a 4 + 3 = 7, c 2 + 4 = 6
    fused, _ = fuse_results([RUN1, RUN2], "borda", top_k=1)
    assert ids(fused[0]) == ["a"] and scores(fused[0]) == [7.0]


def test_query_id_falls_back_to_the_query_text():
    one = [{"query": "a cat", "hits": [hit(1, "a", 0.9)]}]
    two = [{"query": "a cat", "hits": [hit(1, "b", 0.9)]}]
    fused, report = fuse_results([one, two], "rrf")
    assert report.partial == 0 and len(fused) == 1
    # a: 1/61 (best rank 1, first seen), b: 1/61
    assert fused[0]["query_id"] == "a cat" and ids(fused[0]) == ["a", "b"]


def test_rank_methods_do_not_need_hit_scores_but_score_methods_do():
    one = [{"query_id": "q", "hits": [{"id": "a"}, {"id": "b"}]}]
    two = [{"query_id": "q", "hits": [{"id": "b"}]}]
    (fused,), _ = fuse_results([one, two], "rrf")
    # b: 1/62 + 1/61;  a: 1/61
    assert ids(fused) == ["b", "a"] and scores(fused) == [approx(1 / 62 + 1 / 61), approx(1 / 61)]
    assert fused["hits"][0]["source"] is None
    with pytest.raises(InputError, match=r"run 1: record 1, hit 1: score"):
        fuse_results([one, two], "weighted")


# Classification runs: img1 in both; img2 only in run 2; img3 failed in run 1.
CLS1 = [
    {
        "id": "img1",
        "source": "1.jpg",
        "label": "cat",
        "score": 0.6,
        "scores": {"cat": 0.6, "dog": 0.3, "cup": 0.1},
        "model": "m1",
    },
    {"id": "img3", "source": "3.jpg", "error": "cannot decode"},
]
CLS2 = [
    {
        "id": "img1",
        "source": "elsewhere/1.jpg",
        "label": "dog",
        "score": 0.5,
        "scores": {"dog": 0.5, "cat": 0.4, "bird": 0.1},
        "model": "m2",
    },
    {"id": "img2", "source": "2.jpg", "label": "cup", "score": 0.7, "scores": {"cup": 0.7, "cat": 0.3}},
]
# img1 ranks: cat 1 and 2, dog 2 and 1, cup 3 and -, bird - and 3.
# img1 min-max: run 1 (0.6, 0.3, 0.1): cat 1, dog (0.3-0.1)/0.5 = 0.4, cup 0
#               run 2 (0.5, 0.4, 0.1): dog 1, cat (0.4-0.1)/0.4 = 0.75, bird 0


def test_rrf_classification_hand_computed_with_ties():
    fused, report = fuse_results([CLS1, CLS2], "rrf")
    assert report == LateFusionReport(kind="classification", queries=2, partial=1, skipped_errors=1)
    img1, img2 = fused
    # cat = dog = 1/61 + 1/62 (both best rank 1: cat appears first); cup = bird = 1/63 (best rank 3: cup first)
    assert list(img1["scores"]) == ["cat", "dog", "cup", "bird"]
    assert list(img1["scores"].values()) == [approx(1 / 61 + 1 / 62)] * 2 + [approx(1 / 63)] * 2
    assert img1["label"] == "cat" and img1["score"] == 0.032522
    # img2 only in run 2: cup 1/61, cat 1/62
    assert img2 == {
        "id": "img2",
        "source": "2.jpg",
        "label": "cup",
        "score": 0.016393,
        "scores": {"cup": 0.016393, "cat": 0.016129},
    }


def test_classification_record_shape_and_carried_keys():
    fused, _ = fuse_results([CLS1, CLS2], "rrf")
    img1 = fused[0]
    assert list(img1) == ["id", "source", "label", "score", "scores", "model"]
    assert img1["source"] == "1.jpg" and img1["model"] == "m1"  # the first run's


def test_rrf_classification_with_weights():
    fused, _ = fuse_results([CLS1, CLS2], "rrf", weights=[1, 2])
    img1 = fused[0]
    # dog: 1/62 + 2/61 = 0.016129 + 0.032787 = 0.048916;  cat: 1/61 + 2/62 = 0.016393 + 0.032258 = 0.048651
    # bird: 2/63 = 0.031746;  cup: 1/63 = 0.015873
    assert list(img1["scores"]) == ["dog", "cat", "bird", "cup"]
    assert list(img1["scores"].values()) == [
        approx(1 / 62 + 2 / 61),
        approx(1 / 61 + 2 / 62),
        approx(2 / 63),
        approx(1 / 63),
    ]
    assert img1["label"] == "dog" and img1["score"] == img1["scores"]["dog"]


def test_weighted_classification_hand_computed():
    fused, _ = fuse_results([CLS1, CLS2], "weighted")
    img1, img2 = fused
    # cat 1 + 0.75 = 1.75;  dog 0.4 + 1 = 1.4;  cup 0 (best rank 3, first seen);  bird 0 (best rank 3)
    assert img1["scores"] == {"cat": 1.75, "dog": 1.4, "cup": 0.0, "bird": 0.0}
    assert list(img1["scores"]) == ["cat", "dog", "cup", "bird"]
    # img2: cup 1, cat 0
    assert img2["scores"] == {"cup": 1.0, "cat": 0.0}
    fused, _ = fuse_results([CLS1, CLS2], "weighted", weights=[1, 2])
    # cat 1 + 2*0.75 = 2.5;  dog 0.4 + 2*1 = 2.4;  cup 0;  bird 0
    assert fused[0]["scores"] == {"cat": 2.5, "dog": 2.4, "cup": 0.0, "bird": 0.0}
    assert fused[0]["label"] == "cat" and fused[0]["score"] == 2.5
    assert fused[1]["scores"] == {"cup": 2.0, "cat": 0.0}


def test_max_classification_hand_computed():
    fused, _ = fuse_results([CLS1, CLS2], "max")
    # cat max(1, 0.75) = 1;  dog max(0.4, 1) = 1 -> tie, both best rank 1, cat first;  cup 0;  bird 0
    assert list(fused[0]["scores"].items()) == [("cat", 1.0), ("dog", 1.0), ("cup", 0.0), ("bird", 0.0)]
    fused, _ = fuse_results([CLS1, CLS2], "max", weights=[1, 2])
    # cat max(1, 2*0.75) = 1.5;  dog max(0.4, 2*1) = 2
    assert list(fused[0]["scores"].items()) == [("dog", 2.0), ("cat", 1.5), ("cup", 0.0), ("bird", 0.0)]
    assert fused[0]["label"] == "dog"


def test_borda_classification_hand_computed():
    fused, _ = fuse_results([CLS1, CLS2], "borda")
    # img1: n = 4 (cat, dog, cup, bird): cat 4 + 3 = 7, dog 3 + 4 = 7 (tie, cat first), cup 2, bird 2 (cup first)
    assert list(fused[0]["scores"].items()) == [("cat", 7.0), ("dog", 7.0), ("cup", 2.0), ("bird", 2.0)]
    # img2: n = 2: cup 2, cat 1
    assert fused[1]["scores"] == {"cup": 2.0, "cat": 1.0}
    fused, _ = fuse_results([CLS1, CLS2], "borda", weights=[1, 2])
    # cat 4 + 2*3 = 10;  dog 3 + 2*4 = 11;  cup 2;  bird 2*2 = 4
    assert list(fused[0]["scores"].items()) == [("dog", 11.0), ("cat", 10.0), ("bird", 4.0), ("cup", 2.0)]


def test_classification_ranks_come_from_scores_not_from_the_given_order():
    one = [{"id": "i", "source": "i.jpg", "label": "cat", "score": 0.7, "scores": {"dog": 0.2, "cat": 0.7}}]
    two = [{"id": "i", "source": "i.jpg", "label": "dog", "score": 0.9}]  # no scores: {"dog": 0.9}
    (fused,), report = fuse_results([one, two], "rrf")
    # cat rank 1 in run 1: 1/61;  dog rank 2 in run 1 and rank 1 in run 2: 1/62 + 1/61
    assert report.partial == 0
    assert list(fused["scores"]) == ["dog", "cat"]
    assert fused["scores"]["dog"] == approx(1 / 62 + 1 / 61) and fused["scores"]["cat"] == approx(1 / 61)
    # Equal scores keep the given order: a then b get ranks 1 and 2
    three = [{"id": "i", "scores": {"a": 0.5, "b": 0.5}}]
    four = [{"id": "i", "scores": {"b": 0.5, "a": 0.5}}]
    # a: 1/61 + 1/62, b: 1/62 + 1/61 -> tie, best ranks 1 and 1, a first seen
    (fused,), _ = fuse_results([three, four], "borda")
    # n = 2: a 2 + 1 = 3, b 1 + 2 = 3
    assert list(fused["scores"].items()) == [("a", 3.0), ("b", 3.0)]


def test_top_k_classification():
    fused, _ = fuse_results([CLS1, CLS2], "borda", weights=[1, 2], top_k=1)
    # dog 11 (see above), the others dropped
    assert fused[0]["scores"] == {"dog": 11.0} and fused[0]["label"] == "dog" and fused[0]["score"] == 11.0


def test_all_methods_are_deterministic_and_run_order_matters_only_for_ties_and_carried_keys():
    for method in LATE_METHODS:
        first, _ = fuse_results([RUN1, RUN2], method)
        again, _ = fuse_results([RUN1, RUN2], method)
        assert first == again
        swapped, _ = fuse_results([RUN2, RUN1], method)
        assert [r["query_id"] for r in swapped] == ["q1", "q3", "q2"]
        assert sorted(scores(by_key(swapped)["q1"])) == sorted(scores(by_key(first)["q1"]))


# Errors


def test_mixed_kinds_name_the_run_and_the_record():
    with pytest.raises(InputError, match=r"cls\.jsonl: record 2: a classification record.*hits\.jsonl: record 1"):
        fuse_results([RUN1, [CLS1[1], CLS2[0]]], "rrf", names=["hits.jsonl", "cls.jsonl"])
    with pytest.raises(InputError, match=r"run 1: record 2: a classification record"):
        fuse_results([[RUN1[0], CLS2[0]], RUN2], "rrf")


def test_unrecognisable_records_name_the_run_and_the_record():
    with pytest.raises(InputError, match=r"b\.jsonl: record 3: neither a retrieval record"):
        fuse_results([RUN1, [RUN2[0], RUN2[1], {"id": "x", "caption": "hi"}]], "rrf", names=["a.jsonl", "b.jsonl"])
    with pytest.raises(InputError, match=r"run 2: record 1: expected a JSON object"):
        fuse_results([RUN1, [["not", "a", "record"]]], "rrf")


def test_a_query_key_repeated_within_a_run_is_an_input_error():
    with pytest.raises(InputError, match=r"run 2: record 2: query 'q1' appears twice.*record 1"):
        fuse_results([RUN1, [RUN2[0], RUN2[0]]], "rrf")
    with pytest.raises(InputError, match=r"run 1: record 2: query 'img1' appears twice"):
        fuse_results([[CLS1[0], CLS2[0]], CLS2], "borda")
    # the same key in different runs is what fusion is for; an error record does not count as a first one
    fuse_results([[{"id": "img1", "error": "x"}, CLS1[0]], CLS2], "rrf")


def test_records_without_a_query_key_are_input_errors():
    with pytest.raises(InputError, match=r"run 2: record 1: .*'query_id' or 'query'"):
        fuse_results([RUN1, [{"hits": []}]], "rrf")
    with pytest.raises(InputError, match=r"run 1: record 1: .*'id'"):
        fuse_results([[{"scores": {"a": 1.0}}], CLS2], "rrf")


def test_only_error_records_is_an_input_error():
    with pytest.raises(InputError, match="no result records"):
        fuse_results([[CLS1[1]], []], "rrf")


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1.0], "1 weights for 2"),
        ([1.0, 2.0, 3.0], "3 weights for 2"),
        ([1.0, -0.5], "non-negative"),
        ([0.0, 0.0], "not all zero"),
        ([1.0, math.nan], "finite"),
        ([math.inf, 1.0], "finite"),
    ],
)
def test_bad_weights_are_usage_errors(weights, message):
    with pytest.raises(UsageError, match=message):
        fuse_results([RUN1, RUN2], "rrf", weights=weights)


def test_other_usage_errors():
    with pytest.raises(UsageError, match="rrf, weighted, max, borda"):
        fuse_results([RUN1, RUN2], "mean")
    with pytest.raises(UsageError, match="at least two"):
        fuse_results([RUN1], "rrf")
    with pytest.raises(UsageError, match="rrf_k"):
        fuse_results([RUN1, RUN2], "rrf", rrf_k=0)
    with pytest.raises(UsageError, match="rrf_k"):
        fuse_results([RUN1, RUN2], "rrf", rrf_k=-1)
    with pytest.raises(UsageError, match="top_k"):
        fuse_results([RUN1, RUN2], "rrf", top_k=0)
    with pytest.raises(UsageError, match="names"):
        fuse_results([RUN1, RUN2], "rrf", names=["only one"])


def test_inputs_are_not_modified():
    import copy

    before = copy.deepcopy([RUN1, RUN2, CLS1, CLS2])
    fuse_results([RUN1, RUN2], "weighted", top_k=1)
    fuse_results([CLS1, CLS2], "borda", top_k=1)
    assert [RUN1, RUN2, CLS1, CLS2] == before

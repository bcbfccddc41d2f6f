"""``mmcli evaluate`` on the inputs that used to be scored wrong or to stop with a traceback."""

from __future__ import annotations

import json
import random

import pytest

from mmcli.errors import InputError
from mmcli.jsonl import read_jsonl
from mmcli.metrics.captions import evaluate_captions
from mmcli.metrics.classification import evaluate_classification
from mmcli.metrics.files import evaluate_caption_files
from mmcli.metrics.retrieval import query_metrics


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def one_error_line(result, code: int = 2) -> str:
    """The command stopped with ``code`` and one ``mmcli: error:`` line, no traceback; returns it."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmcli: error: "), result.stderr
    return lines[0]


# --- 1: macro averages over the union of true and predicted classes -------------------------------------------


def _sklearn_macro(truth: list[str], predicted: list[str]) -> tuple[float, float, float]:
    """Macro precision, recall and F1 as scikit-learn defines them (labels: the union, zero_division=0)."""
    labels = sorted(set(truth) | set(predicted))
    precisions, recalls, f1s = [], [], []
    for label in labels:
        tp = sum(t == label and p == label for t, p in zip(truth, predicted, strict=True))
        fp = sum(t != label and p == label for t, p in zip(truth, predicted, strict=True))
        fn = sum(t == label and p != label for t, p in zip(truth, predicted, strict=True))
        precisions.append(tp / (tp + fp) if tp + fp else 0.0)
        recalls.append(tp / (tp + fn) if tp + fn else 0.0)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return tuple(sum(values) / len(labels) for values in (precisions, recalls, f1s))  # type: ignore[return-value]


def test_macro_average_counts_classes_predicted_but_never_true():
    result = evaluate_classification({"1": "a", "2": "b"}, {"1": "a", "2": "a"})
    assert result.metrics["macro precision"] == pytest.approx(0.5)  # a: 1, b: 0 (never true)
    assert result.metrics["macro recall"] == pytest.approx(0.25)  # a: 1/2, b: 0
    assert result.metrics["macro f1"] == pytest.approx((2 / 3 + 0) / 2)
    assert result.per_class["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert result.metrics["weighted precision"] == pytest.approx(1.0)  # b has no support


@pytest.mark.parametrize("seed", range(5))
def test_macro_average_matches_scikit_learn(seed):
    rng = random.Random(seed)
    truth = [rng.choice("abc") for _ in range(30)]
    predicted = [rng.choice("abcde") for _ in range(30)]  # d and e are never true
    ids = [str(n) for n in range(30)]
    result = evaluate_classification(dict(zip(ids, predicted, strict=True)), dict(zip(ids, truth, strict=True)))
    try:
        from sklearn.metrics import precision_recall_fscore_support
    except ImportError:
        expected = _sklearn_macro(truth, predicted)
    else:
        expected = precision_recall_fscore_support(truth, predicted, average="macro", zero_division=0)[:3]
    got = tuple(result.metrics[f"macro {name}"] for name in ("precision", "recall", "f1"))
    assert got == pytest.approx(expected)


# --- 2: retrieval: repeated hits, duplicate query ids, query_id without query ---------------------------------


def test_a_repeated_hit_counts_once_at_its_first_rank():
    scores = query_metrics(["x", "x", "y", "x"], {"x"}, ks=(1, 5))
    assert scores["R@1"] == 1.0 and scores["R@5"] == 1.0
    assert scores["AP"] == 1.0 and scores["RR"] == 1.0 and scores["nDCG@10"] == pytest.approx(1.0)
    later = query_metrics(["a", "y", "y", "b"], {"y", "b"}, ks=(2, 4))
    assert later["R@2"] == pytest.approx(0.5) and later["R@4"] == pytest.approx(1.0)
    assert later["AP"] == pytest.approx((1 / 2 + 2 / 4) / 2)  # b keeps its place in the list


def test_repeated_hits_from_the_command(tmp_path, run_mmcli):
    run = write_jsonl(tmp_path / "run.jsonl", [{"query_id": "q", "query": "a", "hits": [{"id": "x"}, {"id": "x"}]}])
    qrels = write_jsonl(tmp_path / "qrels.jsonl", [{"query_id": "q", "relevant": ["x"]}])
    done = run_mmcli("evaluate", "retrieval", "--results", run, "--qrels", qrels, "--top-k", "1,5")
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)["metrics"]
    assert metrics["R@5"] == 1.0 and metrics["mAP"] == 1.0


@pytest.mark.parametrize("which", ["results", "qrels"])
def test_duplicate_query_ids_are_refused(tmp_path, run_mmcli, which):
    hits = [{"id": "x"}]
    runs = [{"query_id": "q1", "query": "a", "hits": hits}, {"query_id": "q2", "query": "b", "hits": hits}]
    judged = [{"query_id": "q1", "relevant": ["x"]}, {"query_id": "q2", "relevant": ["x"]}]
    (runs if which == "results" else judged).append(runs[1] if which == "results" else judged[1])
    run = write_jsonl(tmp_path / "run.jsonl", runs)
    qrels = write_jsonl(tmp_path / "qrels.jsonl", judged)
    line = one_error_line(run_mmcli("evaluate", "retrieval", "--results", run, "--qrels", qrels))
    name = "run.jsonl" if which == "results" else "qrels.jsonl"
    assert f"{name}:3" in line and "'q2'" in line, line


def test_a_result_without_its_query_text_is_scored(tmp_path, run_mmcli):
    run = write_jsonl(tmp_path / "run.jsonl", [{"query_id": "q", "hits": [{"id": "y"}, {"id": "x"}]}])
    qrels = write_jsonl(tmp_path / "qrels.jsonl", [{"query_id": "q", "relevant": ["x"]}])
    done = run_mmcli("evaluate", "retrieval", "--results", run, "--qrels", qrels, "--top-k", "1,2")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["metrics"]["MRR"] == pytest.approx(0.5)


# --- 3: malformed files are one error line naming file and line ------------------------------------------------


def test_non_utf8_jsonl_is_an_input_error_naming_the_line(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"id": "a", "caption": "ok"}\n{"id": "b", "caption": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"latin\.jsonl:2: not valid UTF-8"):
        list(read_jsonl(path))


def test_non_utf8_predictions(tmp_path, run_mmcli):
    pred = tmp_path / "pred.jsonl"
    pred.write_bytes(b'{"id": "a", "caption": "a cat"}\n{"id": "b", "caption": "caf\xe9 au lait"}\n')
    refs = write_jsonl(tmp_path / "refs.jsonl", [{"id": "a", "captions": ["a cat"]}])
    line = one_error_line(run_mmcli("evaluate", "captions", "--pred", pred, "--refs", refs, "--metrics", "bleu"))
    assert "pred.jsonl:2" in line and "UTF-8" in line, line


@pytest.mark.parametrize("score", ["high", None, [0.5]])
def test_a_non_numeric_label_score(tmp_path, run_mmcli, score):
    pred = write_jsonl(tmp_path / "pred.jsonl", [{"id": "1", "label": "cat", "scores": {"cat": 0.9}},
                                                 {"id": "2", "label": "cat", "scores": {"cat": score}}])  # fmt: skip
    truth = write_jsonl(tmp_path / "truth.jsonl", [{"id": "1", "label": "cat"}, {"id": "2", "label": "cat"}])
    line = one_error_line(run_mmcli("evaluate", "classification", "--pred", pred, "--truth", truth))
    assert "pred.jsonl:2" in line and "'cat'" in line, line


@pytest.mark.parametrize("hits", [5, "x", [{"id": "x"}, "y"], [{"id": "x"}, 3], [{"rank": 1}], None])
def test_hits_that_are_not_a_list_of_ids(tmp_path, run_mmcli, hits):
    run = write_jsonl(tmp_path / "run.jsonl", [{"query_id": "q0", "hits": [{"id": "x"}]},
                                               {"query_id": "q1", "query": "a", "hits": hits}])  # fmt: skip
    qrels = write_jsonl(tmp_path / "qrels.jsonl", [{"query_id": "q1", "relevant": ["x"]}])
    line = one_error_line(run_mmcli("evaluate", "retrieval", "--results", run, "--qrels", qrels))
    assert "run.jsonl:2" in line and "hits" in line, line


# --- 4: mmcli caption's video records -------------------------------------------------------------------------


VIDEO_RECORDS = [
    {"id": "a.jpg", "source": "a.jpg", "caption": "a dog runs on the grass", "model": "m"},
    {"id": "v.mp4#t=0.000,2.000", "source": "v.mp4", "t": 0.0, "end": 2.0, "caption": "a man cooks", "model": "m"},
    {"id": "v.mp4#t=2.000,4.000", "source": "v.mp4", "t": 2.0, "end": 4.0, "caption": "a man eats", "model": "m"},
    {"id": "v.mp4", "source": "v.mp4", "summary": "a man cooks; a man eats", "segments": 2, "model": "m"},
    {"id": "w.mp4#t=0.000,3.000", "source": "w.mp4", "t": 0.0, "end": 3.0, "caption": "a cat sleeps.", "model": "m"},
    {"id": "w.mp4", "source": "w.mp4", "summary": "a cat sleeps", "segments": 1, "model": "m"},
]
VIDEO_REFS = [
    {"id": "a.jpg", "captions": ["A dog running on grass."]},
    {"id": "v.mp4", "captions": ["A man cooks and then eats."]},
    {"id": "w.mp4", "captions": ["A cat is sleeping."]},
    {"id": "v.mp4#t=0.000,2.000", "captions": ["A man is cooking."]},
]


def test_videos_are_scored_by_their_summary(tmp_path):
    pred = write_jsonl(tmp_path / "pred.jsonl", VIDEO_RECORDS)
    refs = write_jsonl(tmp_path / "refs.jsonl", VIDEO_REFS)
    heard: list[str] = []
    report = evaluate_caption_files(pred, refs, ["bleu", "cider"], on_note=heard.append)
    assert list(report.per_item) == ["a.jpg", "v.mp4", "w.mp4"]
    scored = {"a.jpg": "a dog runs on the grass", "v.mp4": "a man cooks; a man eats", "w.mp4": "a cat sleeps."}
    references = {r["id"]: r["captions"] for r in VIDEO_REFS[:3]}
    assert report.metrics == evaluate_captions(scored, references, ["bleu", "cider"]).corpus
    assert "scoring 2 videos by their summary" in heard
    assert any(note.startswith("2 video segment records skipped") for note in heard), heard  # w.mp4: scored
    assert sum("summary" in note for note in heard) == 1


def test_video_segments_are_scored_by_their_own_ids(tmp_path, run_mmcli):
    pred = write_jsonl(tmp_path / "pred.jsonl", VIDEO_RECORDS)
    refs = write_jsonl(tmp_path / "refs.jsonl", VIDEO_REFS)
    items = tmp_path / "items.jsonl"
    done = run_mmcli("evaluate", "captions", "--pred", pred, "--refs", refs, "--metrics", "bleu", "--video",
                     "segments", "--per-item", items)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["id"] for line in items.read_text().splitlines()] == ["a.jpg", "v.mp4#t=0.000,2.000"]
    assert "2 video summary records skipped" in done.stderr
    summary = run_mmcli("evaluate", "captions", "--pred", pred, "--refs", refs, "--metrics", "bleu")
    assert summary.returncode == 0, summary.stderr
    assert "scoring 2 videos by their summary" in summary.stderr and "--video segments" in summary.stderr
    bad = run_mmcli("evaluate", "captions", "--pred", pred, "--refs", refs, "--video", "frames")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_a_video_captioned_whole_without_a_summary_is_scored_by_its_segment(tmp_path):
    pred = write_jsonl(tmp_path / "pred.jsonl", [
        {"id": "v.mp4#t=0.000,9.000", "source": "v.mp4", "t": 0.0, "end": 9.0, "caption": "a man cooks", "model": "m"},
    ])  # fmt: skip
    refs = write_jsonl(tmp_path / "refs.jsonl", [{"id": "v.mp4", "captions": ["A man is cooking."]}])
    report = evaluate_caption_files(pred, refs, ["bleu"])
    assert list(report.per_item) == ["v.mp4"]
    assert report.notes == ["scoring 1 videos by their summary"]


# --- 5: null captions and labels ----------------------------------------------------------------------------------


def test_a_null_caption_is_an_error_for_its_record(tmp_path, run_mmcli):
    pred = write_jsonl(tmp_path / "pred.jsonl", [{"id": "a", "caption": "a cat"}, {"id": "b", "caption": None}])
    refs = write_jsonl(tmp_path / "refs.jsonl", [{"id": "a", "captions": ["a cat"]}, {"id": "b", "caption": "x"}])
    line = one_error_line(run_mmcli("evaluate", "captions", "--pred", pred, "--refs", refs, "--metrics", "bleu"))
    assert "pred.jsonl:2" in line and "caption" in line, line
    refs = write_jsonl(tmp_path / "refs.jsonl", [{"id": "a", "captions": ["a cat"]}, {"id": "a", "caption": None}])
    pred = write_jsonl(tmp_path / "pred.jsonl", [{"id": "a", "caption": "a cat"}])
    line = one_error_line(run_mmcli("evaluate", "captions", "--pred", pred, "--refs", refs, "--metrics", "bleu"))
    assert "refs.jsonl:2" in line and "caption" in line, line


@pytest.mark.parametrize("which", ["pred", "truth"])
def test_a_null_label_is_an_error_for_its_record(tmp_path, run_mmcli, which):
    records = [{"id": "1", "label": "cat"}, {"id": "2", "label": "dog"}]
    broken = [records[0], {"id": "2", "label": None}]
    pred = write_jsonl(tmp_path / "pred.jsonl", broken if which == "pred" else records)
    truth = write_jsonl(tmp_path / "truth.jsonl", broken if which == "truth" else records)
    line = one_error_line(run_mmcli("evaluate", "classification", "--pred", pred, "--truth", truth))
    assert f"{which}.jsonl:2" in line and "label" in line, line


@pytest.mark.parametrize("which", ["pred", "truth"])
def test_duplicate_ids_in_classification_files_are_refused(tmp_path, run_mmcli, which):
    good = [{"id": "a", "label": "cat"}, {"id": "b", "label": "dog"}]
    repeated = [*good, {"id": "a", "label": "dog"}]
    pred = write_jsonl(tmp_path / "pred.jsonl", repeated if which == "pred" else good)
    truth = write_jsonl(tmp_path / "truth.jsonl", repeated if which == "truth" else good)
    result = run_mmcli("evaluate", "classification", "--pred", pred, "--truth", truth)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert ":3: a second" in result.stderr and "'a'" in result.stderr

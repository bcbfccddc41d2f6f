"""``mmcli evaluate detection``: the twelve COCO box metrics equal pycocotools' COCOeval run the way its
own examples run it (``COCO(annotations)``, ``loadRes(results)``, evaluate, accumulate, summarize), on
generated cases with empty images, crowd regions, a class without detections and boxes of every size;
the JSONL ground truth gives what the COCO file gives; bad input is one line, exit 2."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from mmcli.metrics.detection import COCO_METRICS

NAMES = ["cat", "dog", "rocket"]


def make_case(seed: int, folder):
    """A COCO annotation file, the matching ground truth as JSONL, and predictions as detect records."""
    rng = np.random.default_rng(seed)
    images, annotations, records, truth_records = [], [], [], []
    for index in range(8):
        file_name = f"img{index}.jpg"
        images.append({"id": index + 10, "file_name": file_name, "width": 640, "height": 480})
        boxes, truth_boxes = [], []
        count = 0 if index == 3 else int(rng.integers(1, 5))  # image 3 has no object
        for _ in range(count):
            size = float(rng.choice([12.0, 60.0, 180.0]))  # small, medium and large objects
            x0, y0 = float(rng.uniform(0, 400)), float(rng.uniform(0, 280))
            label = NAMES[int(rng.integers(0, 3))]
            crowd = bool(rng.random() < 0.15)
            annotations.append({
                "id": len(annotations) + 1, "image_id": index + 10, "category_id": NAMES.index(label) + 1,
                "bbox": [x0, y0, size, size * 0.8], "area": size * size * 0.8, "iscrowd": int(crowd),
            })  # fmt: skip
            truth_boxes.append(
                {"label": label, "box": [x0, y0, x0 + size, y0 + size * 0.8], **({"iscrowd": True} if crowd else {})}
            )
            if rng.random() < 0.8:  # found, a little off
                jitter = rng.normal(0, size * 0.08, 4)
                boxes.append(
                    {
                        "label": label,
                        "score": round(float(rng.uniform(0.3, 1.0)), 4),
                        "box": [x0 + jitter[0], y0 + jitter[1], x0 + size + jitter[2], y0 + size * 0.8 + jitter[3]],
                    }
                )
        for _ in range(int(rng.integers(0, 3))):  # false positives (never of "rocket": a class without detections here)
            x0, y0 = float(rng.uniform(0, 500)), float(rng.uniform(0, 380))
            boxes.append({"label": NAMES[int(rng.integers(0, 2))], "score": round(float(rng.uniform(0, 0.6)), 4),
                          "box": [x0, y0, x0 + 40, y0 + 30]})  # fmt: skip
        boxes = [b for b in boxes if b["label"] != "rocket"]
        records.append({"id": f"photos/{file_name}", "source": f"photos/{file_name}", "width": 640, "height": 480,
                        "boxes": boxes})  # fmt: skip
        truth_records.append({"id": file_name, "width": 640, "height": 480, "boxes": truth_boxes})
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": i + 1, "name": name} for i, name in enumerate(NAMES)]}  # fmt: skip
    (folder / "truth.json").write_text(json.dumps(coco))
    (folder / "truth.jsonl").write_text("".join(json.dumps(r) + "\n" for r in truth_records))
    (folder / "pred.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return coco, records


def cocoeval_reference(coco: dict, records: list[dict], folder) -> list[float]:
    """pycocotools' own usage: COCO(file), loadRes(results), COCOeval(..., "bbox")."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ids = {image["file_name"]: image["id"] for image in coco["images"]}
    category = {c["name"]: c["id"] for c in coco["categories"]}
    results = [
        {"image_id": ids[r["id"].split("/")[-1]], "category_id": category[b["label"]], "score": b["score"],
         "bbox": [b["box"][0], b["box"][1], b["box"][2] - b["box"][0], b["box"][3] - b["box"][1]]}
        for r in records for b in r["boxes"]
    ]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(folder / "truth.json"))
        evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return [float(v) for v in evaluation.stats]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_metrics_equal_cocoeval_on_the_same_detections(run_mmcli, tmp_path, seed):
    coco, records = make_case(seed, tmp_path)
    expected = cocoeval_reference(coco, records, tmp_path)
    for truth in ("truth.json", "truth.jsonl"):
        result = run_mmcli("evaluate", "detection", "--pred", tmp_path / "pred.jsonl", "--truth", tmp_path / truth,
                           "--format", "json")  # fmt: skip
        assert result.returncode == 0, result.stderr
        got = json.loads(result.stdout)
        assert list(got["metrics"]) == list(COCO_METRICS) and got["images"] == 8
        for name, value in zip(COCO_METRICS, expected, strict=True):
            assert got["metrics"][name] == (None if value < 0 else pytest.approx(value, abs=1e-6)), (truth, name)
    assert 0 < got["metrics"]["AP"] < 1 and got["metrics"]["APs"] is not None


def test_notes_and_refusals(run_mmcli, tmp_path):
    make_case(0, tmp_path)
    pred = tmp_path / "pred.jsonl"
    records = [json.loads(line) for line in pred.read_text().splitlines()]
    records.append({"id": "elsewhere/unknown.jpg", "boxes": [{"label": "cat", "score": 0.9, "box": [0, 0, 5, 5]}]})
    records[0]["boxes"].append({"label": "zebra", "score": 0.5, "box": [0, 0, 10, 10]})
    extra = tmp_path / "extra.jsonl"
    extra.write_text("".join(json.dumps(r) + "\n" for r in records))
    noted = run_mmcli("evaluate", "detection", "--pred", extra, "--truth", tmp_path / "truth.json", "--format", "json")
    assert noted.returncode == 0, noted.stderr
    assert "1 predicted images are not in" in noted.stderr and "'zebra'" in noted.stderr
    strict = run_mmcli("evaluate", "detection", "--pred", extra, "--truth", tmp_path / "truth.json", "--strict")
    assert strict.returncode == 2 and "not in" in strict.stderr
    quiet = run_mmcli("evaluate", "detection", "--pred", extra, "--truth", tmp_path / "truth.json", "--format", "json",
                      "--quiet")  # fmt: skip
    assert quiet.returncode == 0 and quiet.stderr == "" and json.loads(quiet.stdout)["notes"]

    records[0]["boxes"][0]["box"] = [50, 50, 10, 10]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in records))
    for args, words in (
        (["--pred", bad, "--truth", tmp_path / "truth.json"], "x1 < x0"),
        (["--pred", pred, "--truth", tmp_path / "missing.json"], "does not exist"),
    ):
        result = run_mmcli("evaluate", "detection", *args)
        assert result.returncode == 2 and words in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1

"""COCO detection metrics of box records, computed by pycocotools' own ``COCOeval`` (the reference every
detection paper reports), after the records are put in COCO's form.

Predictions are records ``{"id", "boxes": [{"label", "score", "box": [x0, y0, x1, y1]}]}`` (one per
image, pixel corners, as ``mmcli detect`` writes them). The ground truth is a COCO annotation file
(``images``, ``annotations``, ``categories``; an image is matched to a record whose ``id`` is its
``file_name``, or ends with ``/file_name``; a category to a box's ``label`` by ``name``; ``iscrowd``
honoured), or records of the prediction's shape in JSONL (boxes without scores; ``"iscrowd": true``
on a box marks a crowd region; ``width`` and ``height`` optional).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmcli.errors import InputError, UsageError, install_hint

# COCOeval's twelve summary numbers, in the order it prints them.
COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass
class DetectionReport:
    """The metrics (None where COCOeval has no answer: no ground truth of that size), the images
    evaluated, and the notes (unmatched images, labels the ground truth lacks)."""

    metrics: dict[str, float | None]
    images: int
    detections: int
    notes: list[str] = field(default_factory=list)


def evaluate_detection_files(
    predictions: str | os.PathLike[str],
    truth: str | os.PathLike[str],
    *,
    strict: bool = False,
    on_note: Callable[[str], None] | None = None,
) -> DetectionReport:
    """COCO box metrics of ``predictions`` (detect records, JSONL) against ``truth`` (a COCO ``.json``
    annotation file, or JSONL records). Every ground-truth image counts, with or without predictions;
    predictions for images the ground truth lacks are left out with a note (an error with ``strict``)."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise UsageError(f"detection metrics need pycocotools: {install_hint('metrics')}") from None
    notes: list[str] = []

    def note(message: str) -> None:
        notes.append(message)
        if on_note is not None:
            on_note(message)

    ground = _ground_truth(Path(truth))
    predicted = _predictions(Path(predictions))
    image_of = _image_matcher(ground["images"])
    categories = {category["name"]: category["id"] for category in ground["categories"]}
    results, unmatched, unknown_labels = [], [], set()
    for identifier, boxes in predicted.items():
        image_id = image_of(identifier)
        if image_id is None:
            unmatched.append(identifier)
            continue
        for box in boxes:
            label = box["label"]
            if label not in categories:
                unknown_labels.add(label)
                continue
            x0, y0, x1, y1 = box["box"]
            results.append({"image_id": image_id, "category_id": categories[label], "score": box["score"],
                            "bbox": [x0, y0, x1 - x0, y1 - y0]})  # fmt: skip
    if unmatched:
        message = f"{len(unmatched)} predicted images are not in {truth} (e.g. {unmatched[0]!r})"
        if strict:
            raise InputError(message)
        note(message + "; left out")
    if unknown_labels:
        note(f"boxes labelled {', '.join(sorted(map(repr, unknown_labels))[:5])} name no category of {truth}; left out")
    missing = len(ground["images"]) - len({image_of(i) for i in predicted} - {None})
    if missing:
        note(f"{missing} images of {truth} have no prediction: their objects count as missed")
    gt = COCO()
    gt.dataset = ground
    detections = COCO()
    detections.dataset = {"images": ground["images"], "categories": ground["categories"],
                          "annotations": [dict(result, id=index + 1, area=result["bbox"][2] * result["bbox"][3],
                                               iscrowd=0) for index, result in enumerate(results)]}  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress and table
        gt.createIndex()
        detections.createIndex()
        evaluation = COCOeval(gt, detections, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = [float(value) for value in evaluation.stats]
    metrics = {name: (None if value < 0 else round(value, 6)) for name, value in zip(COCO_METRICS, stats, strict=True)}
    return DetectionReport(metrics, len(ground["images"]), len(results), notes)


def _predictions(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Each record's boxes, checked, by id; error records are skipped."""
    from mmcli.jsonl import read_jsonl

    found: dict[str, list[dict[str, Any]]] = {}
    for line, record in read_jsonl(path, "predictions"):
        where = f"{path}:{line}"
        if "error" in record:
            continue
        identifier = record.get("id")
        if not isinstance(identifier, str):
            raise InputError(f'{where}: a record without an "id"')
        if identifier in found:
            raise InputError(f"{where}: a second record for id {identifier!r}")
        found[identifier] = [_box(box, where, scored=True) for box in _boxes(record, where)]
    if not found:
        raise InputError(f"{path} holds no detection records")
    return found


def _boxes(record: dict[str, Any], where: str) -> list[Any]:
    boxes = record.get("boxes")
    if not isinstance(boxes, list):
        raise InputError(f'{where}: "boxes" must be a list of {{"label", "score", "box"}} objects')
    return boxes


def _box(box: Any, where: str, *, scored: bool) -> dict[str, Any]:
    if not isinstance(box, dict) or not isinstance(box.get("label"), str):
        raise InputError(f'{where}: a box without a "label"')
    corners = box.get("box")
    if not (isinstance(corners, list) and len(corners) == 4 and all(_number(v) for v in corners)):
        raise InputError(f'{where}: a box\'s "box" must be [x0, y0, x1, y1] in pixels')
    x0, y0, x1, y1 = (float(v) for v in corners)
    if x1 < x0 or y1 < y0:
        raise InputError(f"{where}: box {corners} has x1 < x0 or y1 < y0 (corners are [x0, y0, x1, y1])")
    checked: dict[str, Any] = {"label": box["label"], "box": [x0, y0, x1, y1], "iscrowd": int(bool(box.get("iscrowd")))}
    if scored:
        if not _number(box.get("score")):
            raise InputError(f'{where}: a predicted box without a numeric "score"')
        checked["score"] = float(box["score"])
    return checked


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def _ground_truth(path: Path) -> dict[str, Any]:
    """A COCO annotation dataset, from a COCO ``.json`` file or from JSONL box records."""
    if not path.is_file():
        raise InputError(f"ground truth {path} does not exist")
    if path.suffix == ".json":
        try:
            dataset = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise InputError(f"{path}: not JSON ({exc})") from None
        if not isinstance(dataset, dict) or not all(key in dataset for key in ("images", "annotations", "categories")):
            raise InputError(f'{path}: a COCO annotation file has "images", "annotations" and "categories"')
        return dataset
    from mmcli.jsonl import read_jsonl

    images, annotations, names = [], [], {}
    for line, record in read_jsonl(path, "ground truth"):
        where = f"{path}:{line}"
        identifier = record.get("id")
        if not isinstance(identifier, str):
            raise InputError(f'{where}: a record without an "id"')
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": identifier, "width": record.get("width") or 0,
                       "height": record.get("height") or 0})  # fmt: skip
        for box in _boxes(record, where):
            checked = _box(box, where, scored=False)
            category = names.setdefault(checked["label"], len(names) + 1)
            x0, y0, x1, y1 = checked["box"]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                                "iscrowd": checked["iscrowd"]})  # fmt: skip
    if not images:
        raise InputError(f"{path} holds no ground-truth records")
    categories = [{"id": number, "name": name} for name, number in names.items()]
    return {"images": images, "annotations": annotations, "categories": categories}


def _image_matcher(images: list[dict[str, Any]]) -> Callable[[str], int | None]:
    """A record id -> the ground-truth image it names: its ``file_name`` exactly, or as the id's tail."""
    by_name = {str(image["file_name"]): image["id"] for image in images}

    def image_of(identifier: str) -> int | None:
        if identifier in by_name:
            return by_name[identifier]
        parts = identifier.replace("\\", "/").split("/")
        for start in range(1, len(parts)):
            tail = "/".join(parts[start:])
            if tail in by_name:
                return by_name[tail]
        return None

    return image_of

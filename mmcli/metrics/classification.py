"""Classification metrics: accuracy, top-k accuracy, per-class and averaged precision/recall/F1.

Definitions follow scikit-learn's (``zero_division=0``): the classes are those that are true or
predicted for some item; a class never predicted has precision 0 and one never true has recall 0,
macro averages weigh every class equally (a class predicted but never true included), weighted
averages by support, and micro averages pool every decision (for single-label data micro
precision, recall and F1 all equal accuracy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class ClassificationScores:
    metrics: dict[str, float]
    per_class: dict[str, dict[str, float]]  # label -> precision, recall, f1, support
    labels: list[str]  # confusion matrix order
    confusion: np.ndarray  # rows: true label, columns: predicted label


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def evaluate_classification(
    predicted: Mapping[str, str],
    truth: Mapping[str, str],
    *,
    scores: Mapping[str, Mapping[str, float]] | None = None,
    top_ks: Sequence[int] = (),
) -> ClassificationScores:
    """Metrics over the ids present in both ``predicted`` and ``truth``.

    ``scores[id]`` (label -> score) gives top-k accuracy: the true label is among the k best scores,
    equal scores ordered as the record lists them.
    """
    ids = [identifier for identifier in truth if identifier in predicted]
    labels = sorted({truth[i] for i in ids} | {predicted[i] for i in ids})
    position = {label: index for index, label in enumerate(labels)}
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for identifier in ids:
        confusion[position[truth[identifier]], position[predicted[identifier]]] += 1
    correct = np.diag(confusion)
    support, predicted_count = confusion.sum(axis=1), confusion.sum(axis=0)
    per_class = {}
    for index, label in enumerate(labels):
        precision = _ratio(correct[index], predicted_count[index])
        recall = _ratio(correct[index], support[index])
        per_class[label] = {
            "precision": precision,
            "recall": recall,
            "f1": _ratio(2 * precision * recall, precision + recall),
            "support": int(support[index]),
        }
    total = int(confusion.sum())
    metrics = {"accuracy": _ratio(int(correct.sum()), total)}
    for k in top_ks:
        if scores is not None:
            metrics[f"top-{k} accuracy"] = _ratio(
                sum(truth[i] in _best(scores.get(i, {}), k) for i in ids if i in scores),
                sum(1 for i in ids if i in scores),
            )
    weights = np.array([per_class[label]["support"] for label in labels], dtype=float)
    for name in ("precision", "recall", "f1"):
        values = np.array([per_class[label][name] for label in labels])
        metrics[f"macro {name}"] = float(values.mean()) if len(values) else 0.0
        metrics[f"weighted {name}"] = float((values * weights).sum() / weights.sum()) if weights.sum() else 0.0
    micro_precision = _ratio(int(correct.sum()), int(predicted_count.sum()))
    micro_recall = _ratio(int(correct.sum()), int(support.sum()))
    metrics["micro precision"] = micro_precision
    metrics["micro recall"] = micro_recall
    metrics["micro f1"] = _ratio(2 * micro_precision * micro_recall, micro_precision + micro_recall)
    return ClassificationScores(metrics, per_class, labels, confusion)


def _best(label_scores: Mapping[str, float], k: int) -> list[str]:
    ranked = sorted(label_scores.items(), key=lambda item: -item[1])  # stable: ties keep the record's order
    return [label for label, _ in ranked[:k]]

"""Zero-shot classification with a dual-tower model, as CLIP does it.

Each label is put through prompt templates; the normalised template embeddings are averaged and
re-normalised into one class embedding. Images are scored against classes by cosine similarity
times the model's logit scale, then softmax (CLIP) or, for models trained with a sigmoid loss and a
logit bias (SigLIP), an independent sigmoid per label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mmcli.encoders.base import Encoder
from mmcli.errors import UsageError

DEFAULT_TEMPLATES = ("a photo of a {}.",)


@dataclass(frozen=True)
class Classes:
    labels: list[str]
    embeddings: np.ndarray  # (labels, dim), rows normalised
    logit_scale: float
    logit_bias: float | None  # set for sigmoid-trained models


def class_embeddings(encoder: Encoder, labels: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> Classes:
    """One normalised embedding per label: the mean of its normalised template embeddings."""
    if not labels:
        raise UsageError("no labels: give --labels a,b,c or --labels-file")
    if len(set(labels)) != len(labels):
        raise UsageError("labels must be distinct")
    for template in templates:
        if "{}" not in template:
            raise UsageError(f"template {template!r} has no {{}} where the label goes")
    texts = [template.format(label) for label in labels for template in templates]
    vectors = encoder.encode_texts(texts).reshape(len(labels), len(templates), -1).mean(axis=1)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    scale, bias = logit_scale_and_bias(encoder)
    return Classes(list(labels), vectors.astype(np.float32), scale, bias)


def logit_scale_and_bias(encoder: Encoder) -> tuple[float, float | None]:
    """The learned temperature (exponentiated, as the model applies it) and SigLIP's bias, if any."""
    model = encoder.model
    scale = getattr(model, "logit_scale", None)
    if scale is None:
        raise UsageError(
            f"model {encoder.name!r} has no logit scale; zero-shot classification needs a "
            "contrastive image-text model such as CLIP or SigLIP"
        )
    bias = getattr(model, "logit_bias", None)
    return float(scale.detach().float().exp()), None if bias is None else float(bias.detach().float().reshape(-1)[0])


def probabilities(image_vectors: np.ndarray, classes: Classes) -> np.ndarray:
    """(images, labels) probabilities from L2-normalised image rows."""
    images = np.asarray(image_vectors, dtype=np.float64)
    images = images / np.linalg.norm(images, axis=1, keepdims=True)
    logits = classes.logit_scale * images @ classes.embeddings.astype(np.float64).T
    if classes.logit_bias is not None:
        return 1.0 / (1.0 + np.exp(-(logits + classes.logit_bias)))
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def prediction(probs: np.ndarray, labels: Sequence[str], top: int | None = None) -> dict:
    """``{"label", "score", "scores"}`` for one image; ``scores`` keeps the ``top`` labels, best first."""
    order = np.argsort(-probs, kind="stable")
    kept = order[:top] if top else order
    return {
        "label": labels[order[0]],
        "score": round(float(probs[order[0]]), 6),
        "scores": {labels[i]: round(float(probs[i]), 6) for i in kept},
    }

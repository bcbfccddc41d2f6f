"""Embedding a stream of input items: the engine behind ``mmcli extract-features``.

Images are decoded and preprocessed on worker threads while the model embeds the previous
batch; results come back batch by batch, in input order, so callers can stream them to disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import groupby
from typing import Any

import numpy as np

from mmcli.encoders.base import DEFAULT_BATCH_SIZE, Encoder, batched
from mmcli.errors import ItemError, UnsupportedModel
from mmcli.io.inputs import InputItem
from mmcli.media.images import DEFAULT_MAX_PIXELS, load_image
from mmcli.pipeline import ordered_map


@dataclass
class Embedded:
    """One item's outcome: a vector, or the reason it has none."""

    item: InputItem
    vector: np.ndarray | None = None
    error: str | None = None


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 1)))


def embed_items(
    items: Iterable[InputItem],
    encoder: Encoder,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    normalize: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[list[Embedded]]:
    """Embed images and texts in input order, yielding one list of outcomes per batch.

    A failed item (missing, undecodable, too large) is an outcome with ``error`` set; it never
    stops the rest. Consecutive items of the same modality share batches.
    """
    workers = default_workers() if workers is None else workers

    def prepare(item: InputItem) -> Any:
        if item.error:
            raise ItemError(item.error)
        if item.modality == "text":
            return item.text
        return encoder.preprocess_image(load_image(item.path, max_pixels=max_pixels))

    prepared = ordered_map(prepare, items, workers=workers, ahead=max(2 * batch_size, 2 * workers))
    for batch in batched(prepared, batch_size):
        for modality, group in groupby(batch, key=lambda entry: entry[0].modality):
            yield _embed_group(encoder, modality, list(group), normalize)


def _embed_group(
    encoder: Encoder, modality: str, group: list[tuple[InputItem, Any, BaseException | None]], normalize: bool
) -> list[Embedded]:
    outcomes = [Embedded(item, error=_describe(error)) if error else Embedded(item) for item, _, error in group]
    ready = [(outcome, value) for outcome, (_, value, error) in zip(outcomes, group, strict=False) if error is None]
    if not ready:
        return outcomes
    values = [value for _, value in ready]
    try:
        if modality == "text":
            vectors = encoder.embed_texts(values, normalize=normalize)
        else:
            vectors = encoder.embed_preprocessed(values, normalize=normalize)
    except UnsupportedModel:
        raise
    except Exception as exc:
        for outcome, _ in ready:
            outcome.error = f"model failed on this batch: {_describe(exc)}"
        return outcomes
    for (outcome, _), vector in zip(ready, vectors, strict=False):
        if np.all(np.isfinite(vector)):
            outcome.vector = vector
        else:
            outcome.error = "model produced a non-finite embedding (NaN or inf)"
    return outcomes


def _describe(error: BaseException) -> str:
    if isinstance(error, ItemError):
        return str(error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__

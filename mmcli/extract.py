"""Embedding a stream of input items: the engine behind ``mmcli extract-features``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from mmcli.encoders.base import Encoder
from mmcli.errors import ItemError, UnsupportedModel
from mmcli.io.inputs import InputItem
from mmcli.media.images import DEFAULT_MAX_PIXELS, load_image
from mmcli.pipeline import Outcome, default_workers, map_batches


def embed_items(
    items: Iterable[InputItem],
    encoder: Encoder,
    *,
    batch_size: int | None = None,
    workers: int | None = None,
    normalize: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    exact_decode: bool = False,
) -> Iterator[list[Outcome[InputItem]]]:
    """Embed images and texts in input order, yielding one list of outcomes per batch.

    Each outcome's ``value`` is a float32 vector, or its ``error`` says why there is none (missing,
    undecodable, too large, non-finite output); a failed item never stops the rest. Images are
    decoded and preprocessed on worker threads while the model embeds the previous batch.
    ``batch_size`` defaults to the encoder's choice for its device. Large JPEGs are decoded at reduced scale
    (see :func:`~mmcli.media.images.load_image`) unless ``exact_decode``.
    """

    min_side = None if exact_decode else encoder.decode_min_side

    def prepare(item: InputItem) -> Any:
        if item.error:
            raise ItemError(item.error)
        if item.modality == "text":
            return item.text
        return encoder.preprocess_image(load_image(item.path, max_pixels=max_pixels, min_side=min_side))

    def embed(modality: str, values: list[Any]) -> list[np.ndarray | None]:
        if modality == "text":
            vectors = encoder.embed_texts(values, normalize=normalize)
        else:
            vectors = encoder.embed_preprocessed(values, normalize=normalize)
        return list(vectors)

    for outcomes in map_batches(
        items,
        prepare,
        embed,
        batch_size=batch_size or encoder.default_batch_size,
        workers=default_workers() if workers is None else workers,
        group=lambda item: item.modality,
        fatal=(UnsupportedModel,),
    ):
        for outcome in outcomes:
            if outcome.error is None and not np.all(np.isfinite(outcome.value)):
                outcome.value, outcome.error = None, "model produced a non-finite embedding (NaN or inf)"
        yield outcomes

"""Captioning a stream of input items: the engine behind ``mmcli caption``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from mmcli.captioners.base import Captioner, GenerationOptions
from mmcli.errors import ItemError, UsageError
from mmcli.io.inputs import InputItem
from mmcli.media.images import DEFAULT_MAX_PIXELS, load_image
from mmcli.pipeline import Outcome, default_workers, map_batches


def caption_items(
    items: Iterable[InputItem],
    captioner: Captioner,
    *,
    prompt: str | None = None,
    options: GenerationOptions | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    exact_decode: bool = False,
) -> Iterator[list[Outcome[InputItem]]]:
    """Caption images in input order, one list of outcomes per batch (``value`` is the caption).

    Images are decoded on worker threads while the model generates for the previous batch; an
    image that cannot be decoded gets an ``error`` and the rest of its batch goes on. ``batch_size``
    defaults to the captioner's choice for its device. Large JPEGs are decoded at reduced
    scale (see :func:`~mmcli.media.images.load_image`) unless ``exact_decode``.
    """
    options = options or GenerationOptions()
    if options.seed is not None:
        import torch

        torch.manual_seed(options.seed)

    min_side = None if exact_decode else captioner.decode_min_side

    def prepare(item: InputItem) -> Any:
        if item.error:
            raise ItemError(item.error)
        return load_image(item.path, max_pixels=max_pixels, min_side=min_side)

    def generate(_: Any, images: list[Any]) -> list[str]:
        return captioner.generate(images, prompt, options)

    yield from map_batches(
        items,
        prepare,
        generate,
        batch_size=batch_size or captioner.default_batch_size,
        workers=default_workers() if workers is None else workers,
        fatal=(UsageError,),
    )

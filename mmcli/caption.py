"""Captioning a stream of input items: the engine behind ``mmcli caption``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from mmcli.captioners.base import Captioner, GenerationOptions
from mmcli.errors import ItemError, UsageError
from mmcli.io.inputs import InputItem
from mmcli.media.images import DEFAULT_MAX_PIXELS, load_image
from mmcli.pipeline import Outcome, default_workers, map_batches

DEFAULT_CAPTION_BATCH_SIZE = 8


def caption_items(
    items: Iterable[InputItem],
    captioner: Captioner,
    *,
    prompt: str | None = None,
    options: GenerationOptions | None = None,
    batch_size: int = DEFAULT_CAPTION_BATCH_SIZE,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[list[Outcome[InputItem]]]:
    """Caption images in input order, one list of outcomes per batch (``value`` is the caption).

    Images are decoded on worker threads while the model generates for the previous batch; an
    image that cannot be decoded gets an ``error`` and the rest of its batch goes on.
    """
    options = options or GenerationOptions()
    if options.seed is not None:
        import torch

        torch.manual_seed(options.seed)

    def prepare(item: InputItem) -> Any:
        if item.error:
            raise ItemError(item.error)
        return load_image(item.path, max_pixels=max_pixels)

    def generate(_: Any, images: list[Any]) -> list[str]:
        return captioner.generate(images, prompt, options)

    yield from map_batches(
        items,
        prepare,
        generate,
        batch_size=batch_size,
        workers=default_workers() if workers is None else workers,
        fatal=(UsageError,),
    )

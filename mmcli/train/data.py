"""Image-caption pairs for training, read as every command reads its inputs, and decoded once up front.

A training set is a JSONL file (or ``-``) of ``{"path", "caption"}`` or ``{"path", "captions": [...]}``
records, or webdataset shards and Parquet tables whose samples carry a caption (a shard's ``.txt``
member, a table's ``--text-column``), discovered by :func:`~mmcli.io.inputs.discover_images`. Every
image is decoded once before training starts, by the one safe decoder: an unreadable one is skipped
and counted, so a set with nothing readable is refused before any step, and the decoded pictures
(scaled down to what the model sees) are what every epoch reads, rather than decoding each again.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import IO, Any

from mmcli.errors import ItemError, UsageError, option
from mmcli.io.inputs import JSONL_SUFFIXES, discover_images, unique_ids
from mmcli.io.parquet import Columns
from mmcli.io.remote import is_url
from mmcli.items import STDIN, InputItem
from mmcli.reporting import Reporter

CAPTION_FIELDS = ("caption", "captions", "text")


@dataclass
class Pair:
    """One training or validation example: the decoded picture and every caption it has."""

    id: str
    source: str
    image: Any  # a PIL image, scaled to the model's input size
    captions: list[str]


@dataclass
class PairSet:
    pairs: list[Pair]
    skipped: int  # images missing or unreadable, or records without a caption


def captions_of(item: InputItem) -> list[str]:
    """The captions a record or sample carries (``caption``, a ``captions`` list, or its text)."""
    for name in CAPTION_FIELDS:
        value = item.extra.get(name)
        if isinstance(value, str) and value.strip():
            return [value.strip()]
        if isinstance(value, list):
            found = [v.strip() for v in value if isinstance(v, str) and v.strip()]
            if found:
                return found
    if item.text and item.text.strip():
        return [item.text.strip()]
    return []


def discover_pairs(spec: str, *, columns: Columns | None = None, stdin: IO[str] | None = None) -> Iterator[InputItem]:
    """The items of one ``--train`` / ``--val`` argument, each with its captions in ``extra``.

    A JSONL file lists records whose relative paths are read from the working directory, else from
    the file's own folder (an annotation file beside its images works from anywhere)."""
    if spec == STDIN:
        yield from discover_images([STDIN], stdin=stdin or sys.stdin, columns=columns)
        return
    if spec.lower().endswith(JSONL_SUFFIXES) and not is_url(spec):
        if not os.path.isfile(spec):
            raise UsageError(f"no such file: {spec}")
        folder = os.path.dirname(os.path.abspath(spec))
        with open(spec, encoding="utf-8", errors="surrogateescape") as stream:
            for item in discover_images([STDIN], stdin=stream, columns=columns):
                if item.path and not is_url(item.path) and not os.path.isabs(item.path):
                    beside = os.path.join(folder, item.path)
                    if not os.path.exists(item.path) and os.path.exists(beside):
                        item = replace(item, path=beside)
                yield item
        return
    yield from discover_images([spec], columns=columns)


def load_pairs(
    items: Iterable[InputItem],
    *,
    size: tuple[int, int] | None,
    max_pixels: int,
    reporter: Reporter,
    what: str,
    workers: int | None = None,
) -> PairSet:
    """Decode every item on the pipeline's preparing threads (decoding releases the GIL), keeping those
    with a caption and a readable picture; the others are reported as skipped and counted."""
    from PIL import Image

    from mmcli.media.images import load_image
    from mmcli.pipeline import default_workers, describe_error, prepared_batches

    listed = list(unique_ids(items))

    def decode(item: InputItem) -> Pair:
        captions = captions_of(item)
        if not captions:
            raise ItemError(f"no caption ({', '.join(CAPTION_FIELDS)})")
        if item.error:
            raise ItemError(item.error)
        image = load_image(item.media(), max_pixels=max_pixels)
        if size is not None and image.size != size:
            image = image.resize(size, Image.Resampling.BICUBIC)
        return Pair(item.id, item.source, image, captions)

    pairs: list[Pair] = []
    skipped = 0
    threads = default_workers() if workers is None else workers
    with reporter.progress(len(listed), unit="image", desc=f"reading {what}") as bar:
        for batch in prepared_batches(decode, listed, batch_size=64, workers=threads, ahead=4 * max(threads, 1)):
            for item, pair, error in batch:
                bar.update(1)
                if error is None:
                    pairs.append(pair)
                elif isinstance(error, ItemError):
                    reporter.skipped(item, describe_error(error))
                    skipped += 1
                else:  # not a bad item but a fault: it stops the run, as it did before any step
                    raise error
    return PairSet(pairs, skipped)


def split_pairs(pairs: Sequence[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """A seeded held-out split: ``fraction`` of the pairs (at least one) for validation."""
    import numpy as np

    if not 0 < fraction < 1:
        raise UsageError(f"{option('val_fraction')} is between 0 and 1 (exclusive), not {fraction:g}")
    count = max(1, round(len(pairs) * fraction))
    if count >= len(pairs):
        raise UsageError(
            f"{len(pairs)} readable training pairs are too few to hold out {option('val_fraction', f'{fraction:g}')}; "
            f"give a validation set with {option('val')}"
        )
    order = np.random.default_rng(seed).permutation(len(pairs))
    held = set(order[:count].tolist())
    return [p for i, p in enumerate(pairs) if i not in held], [p for i, p in enumerate(pairs) if i in held]

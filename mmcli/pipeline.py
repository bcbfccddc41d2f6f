"""Batch pipelines: decode and preprocess on threads while the model runs on the previous batch.

Results come back in input order, and a bounded number of items is in flight, so memory stays
flat however long the input stream is.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


_END = object()

# How long a batch read from a stream (stdin) waits for its next item before it ships short: a slow
# producer still gets each result promptly. Files, folders, shards and tables never ship short: their
# batches are exactly ``batch_size`` items (the last one shorter), so the same inputs give the same
# batches, and the same bytes, however loaded the machine is.
STREAM_LINGER = 0.05


@dataclass
class _Raised:
    error: BaseException


def prepared_batches(
    function: Callable[[T], R],
    items: Iterable[T],
    *,
    batch_size: int,
    workers: int,
    ahead: int,
    linger: float | None = None,
    counts: Callable[[T], bool] | None = None,
) -> Iterator[list[tuple[T, R | None, BaseException | None]]]:
    """Batches of ``(item, function(item), error)`` in input order; an exception is returned, not raised.

    A feeder thread walks ``items`` (which may block, e.g. on stdin) and hands each to a pool of
    ``workers`` threads (0: the feeder prepares them itself), keeping at most ``ahead`` in flight.
    A batch is shipped when full (``batch_size`` items for which ``counts`` is true: markers that
    ride along need not take a model's place). With a ``linger`` (streams: :data:`STREAM_LINGER`) a
    batch also ships when no further item arrives within that many seconds, so a slow stream still
    gets its results promptly; without one, batches do not depend on timing. An exception raised by
    ``items`` itself ends the run after the batch before it.
    """
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mmcli-prepare") if workers > 0 else None
    slots: queue.Queue[Any] = queue.Queue(maxsize=max(ahead, batch_size, 1))
    stop = threading.Event()

    def put(entry: Any) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def feed() -> None:
        try:
            for item in items:
                entry = (item, pool.submit(function, item)) if pool else _call(function, item)
                if not put(entry):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer, which raises it
            put(_Raised(exc))

    def following() -> Any:
        return slots.get() if linger is None else slots.get(timeout=linger)

    threading.Thread(target=feed, name="mmcli-feed", daemon=True).start()
    try:
        finished = False
        carried = None  # an entry taken while looking for markers, which starts the next batch
        while not finished:
            entry, carried = (slots.get() if carried is None else carried), None
            batch: list[Any] = []
            size = 0
            while True:
                if entry is _END:
                    finished = True
                    break
                if isinstance(entry, _Raised):
                    if batch:
                        yield [_resolve(e) for e in batch]
                    raise entry.error
                batch.append(entry)
                size += 1 if counts is None else bool(counts(entry[0]))
                if size >= batch_size:
                    if counts is not None:  # the markers that follow ride along: an input ends in its batch
                        while True:
                            try:
                                after = following()
                            except queue.Empty:
                                break
                            if after is _END or isinstance(after, _Raised) or counts(after[0]):
                                carried = after
                                break
                            batch.append(after)
                    break
                try:
                    entry = following()
                except queue.Empty:
                    break
            if batch:
                yield [_resolve(e) for e in batch]
    finally:
        stop.set()
        if pool:
            pool.shutdown(wait=False, cancel_futures=True)


def _call(function: Callable[[T], R], item: T) -> tuple[T, R | None, BaseException | None]:
    try:
        return item, function(item), None
    except Exception as exc:
        return item, None, exc


def _resolve(entry: Any) -> tuple[Any, Any, BaseException | None]:
    item, value = entry[0], entry[1]
    if not isinstance(value, Future):
        return entry
    try:
        return item, value.result(), None
    except Exception as exc:
        return item, None, exc


@dataclass
class Outcome(Generic[T]):
    """One item's result: a ``value``, or the ``error`` that explains why it has none."""

    item: T
    value: Any = None
    error: str | None = None


def describe_error(error: BaseException) -> str:
    """One readable line: domain errors as they are, anything else prefixed with its type."""
    from mmcli.errors import ItemError

    if isinstance(error, ItemError):
        return str(error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def map_batches(
    items: Iterable[T],
    prepare: Callable[[T], Any],
    process: Callable[[Any, list[Any]], Sequence[Any]],
    *,
    batch_size: int,
    workers: int,
    group: Callable[[T], Any] = lambda item: None,
    fatal: tuple[type[BaseException], ...] = (),
    markers: Any = (),
    linger: float | None = None,
) -> Iterator[list[Outcome[T]]]:
    """Prepare items on worker threads, run the model on batches, and yield outcomes in input order.

    ``prepare(item)`` runs in a thread (decode, preprocess); ``process(key, prepared)`` runs the
    items of a batch that share ``group(item)``, wherever they stand in it, and returns one value
    each. Items of the ``markers`` groups (ends of videos and recordings) do not count toward
    ``batch_size``, so a stream of short recordings still fills each call. ``linger`` is for streams
    (see :func:`prepared_batches`). An item whose
    preparation fails gets an error and the batch goes on without it; if ``process`` raises, every
    item of that call gets the error, unless it is one of ``fatal``, which propagates.
    """
    counts = (lambda item: group(item) not in markers) if markers else None
    batches = prepared_batches(prepare, items, batch_size=batch_size, workers=workers, ahead=2 * batch_size,
                               counts=counts, linger=linger)  # fmt: skip
    for batch in batches:
        keys = [group(entry[0]) for entry in batch]
        outcomes: list[Any] = [None] * len(batch)
        for key in dict.fromkeys(keys):  # each group once, in the order it first appears
            places = [i for i, k in enumerate(keys) if k == key]
            for place, outcome in zip(places, _process_group(key, [batch[i] for i in places], process, fatal),
                                      strict=True):  # fmt: skip
                outcomes[place] = outcome
        yield outcomes


def _process_group(
    key: Any,
    entries: list[tuple[T, Any, BaseException | None]],
    process: Callable[[Any, list[Any]], Sequence[Any]],
    fatal: tuple[type[BaseException], ...],
) -> list[Outcome[T]]:
    outcomes = [Outcome(item, error=describe_error(error) if error else None) for item, _, error in entries]
    ready = [(outcome, value) for outcome, (_, value, error) in zip(outcomes, entries, strict=True) if error is None]
    if not ready:
        return outcomes
    try:
        values = process(key, [value for _, value in ready])
    except fatal:
        raise
    except Exception as exc:  # the batch fails, the run goes on
        for outcome, _ in ready:
            outcome.error = f"model failed on this batch: {describe_error(exc)}"
        return outcomes
    for (outcome, _), value in zip(ready, values, strict=True):
        outcome.value = value
    return outcomes


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of ``size`` items (the last may be shorter), lazily."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


class RowBatch(list):
    """A batch's outcomes to write, with ``ends``: the positions in it where an input item's outcomes
    end (so a sharded sink can close a part between items, never inside one)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.ends: list[int] = []

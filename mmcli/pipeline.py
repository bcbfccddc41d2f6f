"""Batch pipelines: decode and preprocess on threads while the model runs on the previous batch.

Results come back in input order, and at most ``ahead`` items are in flight, so memory stays flat
however long the input stream is.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import groupby, islice
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(
    function: Callable[[T], R], items: Iterable[T], *, workers: int, ahead: int
) -> Iterator[tuple[T, R | None, BaseException | None]]:
    """Yield ``(item, result, error)`` in input order; an exception is returned, not raised."""
    if workers <= 0:
        for item in items:
            yield _call(function, item)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mmcli-decode") as pool:
        pending: deque[tuple[T, Future[R]]] = deque()
        try:
            for item in items:
                pending.append((item, pool.submit(function, item)))
                if len(pending) >= max(ahead, 1):
                    yield _result(*pending.popleft())
            while pending:
                yield _result(*pending.popleft())
        finally:
            for _, future in pending:
                future.cancel()


def _call(function: Callable[[T], R], item: T) -> tuple[T, R | None, BaseException | None]:
    try:
        return item, function(item), None
    except Exception as exc:
        return item, None, exc


def _result(item: T, future: Future[R]) -> tuple[T, R | None, BaseException | None]:
    try:
        return item, future.result(), None
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
) -> Iterator[list[Outcome[T]]]:
    """Prepare items on worker threads, run the model on batches, and yield outcomes in input order.

    ``prepare(item)`` runs in a thread (decode, preprocess); ``process(key, prepared)`` runs a batch
    of items that share ``group(item)`` and returns one value each. An item whose preparation
    fails gets an error and the batch goes on without it; if ``process`` raises, every item of
    that batch gets the error, unless it is one of ``fatal``, which propagates.
    """
    prepared = ordered_map(prepare, items, workers=workers, ahead=max(2 * batch_size, 2 * workers))
    for batch in batched(prepared, batch_size):
        for key, entries in groupby(batch, key=lambda entry: group(entry[0])):
            yield _process_group(key, list(entries), process, fatal)


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

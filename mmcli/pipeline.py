"""Ordered parallel map with bounded read-ahead: decode on threads while the model runs.

Results come back in input order, and at most ``ahead`` items are in flight, so memory stays flat
however long the input stream is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

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

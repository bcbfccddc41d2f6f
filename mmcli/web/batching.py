"""Micro-batching: requests that arrive together share one model call.

A server embeds one query per request; a model embeds 32 nearly as fast as one. :class:`MicroBatcher`
runs a single worker thread that takes the first waiting query, waits up to ``linger`` seconds for
more (at most ``max_batch`` in all), and hands them to one ``handle(batch)`` call. With
``max_batch=1`` every query is handled alone, in arrival order (the baseline a benchmark compares
against). The sizes of the batches it made are kept in :attr:`stats`, so batching can be observed.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_MAX_BATCH = 32
DEFAULT_LINGER_S = 0.005
_STOP = object()


class MicroBatcher(Generic[T, R]):
    """Feeds queued work to ``handle`` in batches, on one worker thread (the only one that runs the model).

    ``handle(batch)`` returns one result per item, or raises, which fails every item of that batch.
    """

    def __init__(
        self,
        handle: Callable[[list[T]], Sequence[R]],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        linger: float = DEFAULT_LINGER_S,
        name: str = "mmcli-model",
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.handle = handle
        self.max_batch = max_batch
        self.linger = max(0.0, linger)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._sizes: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> Future[R]:
        """Queue ``item``; the future gives its result, and (as ``future.batch_size``) the size of its batch."""
        future: Future[R] = Future()
        if self._closed:
            raise RuntimeError("the model worker has stopped")
        self._queue.put((item, future))
        return future

    @property
    def stats(self) -> dict[str, Any]:
        """Batches made so far: how many, of how many queries, the largest, and a count per size."""
        with self._lock:
            sizes = dict(sorted(self._sizes.items()))
        return {
            "max_batch": self.max_batch,
            "linger_ms": round(self.linger * 1000, 3),
            "batches": sum(sizes.values()),
            "queries": sum(size * count for size, count in sizes.items()),
            "largest_batch": max(sizes, default=0),
            "batch_sizes": {str(size): count for size, count in sizes.items()},
        }

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the worker after the work already queued; later submissions are refused."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _take(self) -> tuple[list[tuple[T, Future[R]]], bool]:
        """The next batch (blocking for its first item), and whether the batcher was asked to stop."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        deadline = time.monotonic() + self.linger
        while len(batch) < self.max_batch:
            try:
                wait = deadline - time.monotonic()
                entry = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is _STOP:
                return batch, True
            batch.append(entry)
        return batch, False

    def _work(self) -> None:
        stop = False
        while not stop:
            batch, stop = self._take()
            if not batch:
                continue
            live = [(item, future) for item, future in batch if future.set_running_or_notify_cancel()]
            if not live:
                continue
            with self._lock:
                self._sizes[len(live)] += 1
            try:
                results = list(self.handle([item for item, _ in live]))
                if len(results) != len(live):
                    raise RuntimeError(f"batch handler gave {len(results)} results for {len(live)} items")
            except BaseException as exc:  # every waiting request gets the failure, and the worker goes on
                for _, future in live:
                    future.batch_size = len(live)  # type: ignore[attr-defined]
                    future.set_exception(exc)
                continue
            for (_, future), result in zip(live, results, strict=True):
                future.batch_size = len(live)  # type: ignore[attr-defined]
                future.set_result(result)

"""The shared batch pipeline: order, per-item errors, batching, streaming and early stops."""

from __future__ import annotations

import threading
import time

import pytest

from mmcli.errors import InputError, ItemError
from mmcli.pipeline import map_batches, prepared_batches


def _square(x):
    if x == 3:
        raise ItemError("three is unlucky")
    time.sleep(0.001 * (x % 4))  # finish out of order on purpose
    return x * x


@pytest.mark.parametrize("workers", [0, 1, 4])
def test_results_keep_input_order_and_errors_stay_with_their_item(workers):
    batches = list(prepared_batches(_square, range(10), batch_size=4, workers=workers, ahead=8))
    flat = [entry for batch in batches for entry in batch]
    assert [item for item, _, _ in flat] == list(range(10))
    assert [value for _, value, _ in flat] == [x * x if x != 3 else None for x in range(10)]
    assert isinstance(flat[3][2], ItemError)
    assert [len(batch) for batch in batches] == [4, 4, 2]


def test_map_batches_groups_by_key_and_a_failing_batch_fails_only_itself():
    def process(key, values):
        if key == "bad":
            raise RuntimeError("model crashed")
        return [f"{key}:{v}" for v in values]

    items = ["a1", "a2", "bad1", "b1"]
    outcomes = [
        o
        for batch in map_batches(items, lambda s: s[-1], process, batch_size=4, workers=2, group=lambda s: s[:-1])
        for o in batch
    ]
    assert [(o.item, o.value, o.error) for o in outcomes] == [
        ("a1", "a:1", None),
        ("a2", "a:2", None),
        ("bad1", None, "model failed on this batch: RuntimeError: model crashed"),
        ("b1", "b:1", None),
    ]


def test_fatal_errors_propagate():
    def process(key, values):
        raise InputError("stop everything")

    with pytest.raises(InputError):
        list(map_batches([1, 2], lambda x: x, process, batch_size=2, workers=1, fatal=(InputError,)))


def test_an_error_while_reading_inputs_ends_the_run_after_earlier_batches():
    def items():
        yield from range(3)
        raise InputError("<stdin>:4: not valid JSON")

    seen = []
    with pytest.raises(InputError, match="stdin>:4"):
        for batch in prepared_batches(lambda x: x, items(), batch_size=2, workers=1, ahead=4):
            seen.extend(item for item, _, _ in batch)
    assert seen == [0, 1, 2]


def test_a_slow_stream_gets_partial_batches_without_waiting_for_more_input():
    gate = threading.Event()

    def items():
        yield "first"
        gate.wait(timeout=10)  # the stream stalls until the first result has been seen
        yield "second"

    batches = prepared_batches(str.upper, items(), batch_size=8, workers=2, ahead=16, linger=0.05)
    first = next(batches)
    assert [value for _, value, _ in first] == ["FIRST"]
    gate.set()
    assert [value for _, value, _ in next(batches)] == ["SECOND"]


def test_without_a_linger_batches_are_full_however_slowly_items_arrive():
    def items():
        for n in range(7):
            time.sleep(0.12)  # slower than a stream's linger
            yield n

    sizes = [len(batch) for batch in prepared_batches(lambda x: x, items(), batch_size=3, workers=2, ahead=6)]
    assert sizes == [3, 3, 1]


def test_stopping_early_does_not_hang():
    def endless():
        n = 0
        while True:
            yield n
            n += 1

    batches = prepared_batches(lambda x: x, endless(), batch_size=3, workers=2, ahead=6)
    assert [item for item, _, _ in next(batches)] == [0, 1, 2]
    batches.close()

"""Failed items, as every sink treats them: reported as they happen, kept as error records, and
under ``on_error="fail"`` the end of the run."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mmcli.errors import ItemError, option
from mmcli.items import InputItem
from mmcli.pipeline import Outcome
from mmcli.reporting import Reporter


class StoppedAtItem(ItemError):
    """``on_error="fail"``: the run stopped at the first failed item, and what it had done was not kept."""

    def __init__(self, item: InputItem, kept: str) -> None:
        super().__init__(f"stopped at {item.source} ({option('on_error', 'fail')}){kept}")
        self.item = item


def report_failures(
    outcomes: Iterable[Outcome[InputItem]], keep: Any, on_error: str, reporter: Reporter, kept: str
) -> int:
    """Report each failed outcome and hand its error record to ``keep``; stop at the first under
    ``on_error="fail"``. Returns how many failed."""
    failed = 0
    for outcome in outcomes:
        if outcome.error is None:
            continue
        failed += 1
        reporter.skipped(outcome.item, outcome.error)
        keep(outcome.item.error_record(outcome.error))
        if on_error == "fail":
            raise StoppedAtItem(outcome.item, kept)
    return failed

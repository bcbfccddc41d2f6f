"""Where a run's outcomes go, as the engine sees them: a feature set or a record stream behind one
interface (see :class:`~mmcli.engine.Sink`)."""

from __future__ import annotations

from typing import Any

from mmcli.items import InputItem
from mmcli.output.failures import report_failures
from mmcli.output.manifest import FileEntries
from mmcli.output.previous import Previous
from mmcli.pipeline import Outcome
from mmcli.reporting import Reporter


class FeatureSink:
    """A :class:`~mmcli.output.npy.FeatureSetWriter` as a sink: an outcome's value is its row, and its
    item gives the row's record (naming ``model``)."""

    def __init__(self, writer: Any, model: str, *, manifest: bool = True) -> None:
        self.writer, self.model = writer, model
        self.files = FileEntries() if manifest else None
        self.failed_before = len(writer.errors)  # an interrupted run's failures count in this one's summary
        self.counters: dict[str, int] = writer.journal.counters if writer.journal is not None else {}

    def write(self, outcomes: list[Outcome[InputItem]], on_error: str, reporter: Reporter, kept: str) -> int:
        good = [outcome for outcome in outcomes if outcome.error is None]
        if good:
            self.writer.add(
                [o.value for o in good],
                [o.item.record(model=self.model) for o in good],
                files=[self.files.entry(o.item) for o in good] if self.files is not None else None,
            )
        return report_failures(outcomes, self.writer.add_error, on_error, reporter, kept)

    def carry(self, previous: Previous, rows: list[int], records: list[dict], entries: list[dict]) -> None:
        import numpy as np

        self.writer.add(np.asarray(previous.vectors[rows], np.float32), records, files=entries)

    def checkpoint(self, consumed: int, counters: dict[str, int]) -> None:
        self.writer.checkpoint(consumed)

    def __enter__(self) -> FeatureSink:
        self.writer.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.writer.__exit__(*exc)


class RecordSink:
    """A :class:`~mmcli.output.records.RecordWriter` as a sink: an outcome's value is its record; a failed
    item's error record goes in the stream, in its place."""

    def __init__(self, writer: Any, *, manifest: bool) -> None:
        self.writer = writer
        self.files = FileEntries() if manifest else None
        self.counters: dict[str, int] = writer.journal.counters if writer.journal is not None else {}
        self.failed_before = self.counters.get("failed", 0)

    def write(self, outcomes: list[Outcome[InputItem]], on_error: str, reporter: Reporter, kept: str) -> int:
        failed = 0
        for outcome in outcomes:
            if outcome.error is None:
                self.writer.write(outcome.value, file=self.files.entry(outcome.item) if self.files else None)
                continue
            self.writer.flush()  # the records before it reach the reader before the report does
            failed += report_failures([outcome], self.writer.write, on_error, reporter, kept)
        self.writer.flush()
        return failed

    def carry(self, previous: Previous, rows: list[int], records: list[dict], entries: list[dict]) -> None:
        for record, entry in zip(records, entries, strict=True):
            self.writer.write(record, file=entry)

    def checkpoint(self, consumed: int, counters: dict[str, int]) -> None:
        self.writer.checkpoint(consumed, counters)

    def __enter__(self) -> RecordSink:
        self.writer.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.writer.__exit__(*exc)

"""How a run tells its caller what happens, without printing: the library calls a :class:`Reporter`,
and the command line's reporter prints (bars, notes and skipped items on stderr)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Protocol


class Progress(Protocol):
    def update(self, n: int = 1) -> None: ...


class NoProgress:
    def update(self, n: int = 1) -> None:
        pass


class Reporter:
    """What a run tells its caller as it goes. This default tells nothing: a library caller finds the
    failed items in the output and the counts in the result."""

    def note(self, message: str) -> None:
        """A line of news (resuming, a summary)."""

    def skipped(self, item: Any, error: str) -> None:
        """An item failed and the run goes on without it (its error record is in the output)."""

    def loading(self, model: str) -> AbstractContextManager[None]:
        """Wraps the load of ``model`` (often the longest wait of a run): ``with reporter.loading(name):``."""
        return nullcontext()

    def journal(self, folder: Path) -> None:
        """The run keeps its progress in ``folder``, from which the same run resumes if interrupted."""

    @contextmanager
    def progress(self, total: int | None, *, unit: str, desc: str) -> Iterator[Progress]:
        """Counts ``total`` units of work (``None``: unknown) as they are done."""
        yield NoProgress()

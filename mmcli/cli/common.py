"""What every command shares: error reporting, progress on stderr, exit statuses."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from itertools import chain
from typing import Any, TypeVar

import typer

from mmcli.errors import MmcliError, UsageError, options_as_flags

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_ITEMS_FAILED = 1

_JOURNALS: list[Any] = []  # journal folders of this run's resumable outputs, named if it is interrupted


def error_line(message: str) -> None:
    print(f"mmcli: error: {message}", file=sys.stderr, flush=True)


def note(message: str, *, quiet: bool = False) -> None:
    if not quiet:
        print(f"mmcli: {message}", file=sys.stderr, flush=True)


def reports_errors(command: F) -> F:
    """Turn domain errors into one line on stderr and their exit status; no tracebacks."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with options_as_flags():
                return command(*args, **kwargs)
        except MmcliError as exc:
            error_line(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            kept = [folder for folder in _JOURNALS if (folder / "state.json").exists()]
            if kept:
                error_line(f"interrupted; the progress so far is kept in {kept[0]}: run the same command to resume")
            else:
                error_line("interrupted; no output was written")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            # The reader went away (e.g. `| head`): stop quietly, as Unix tools do.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(EXIT_OK) from None

    return wrapper  # type: ignore[return-value]


def require_inputs(inputs: list[str], *, extra: bool = False, hint: str) -> None:
    """Refuse a run with nothing to read, or stdin named twice, before any model is loaded."""
    from mmcli.io.inputs import STDIN

    if not inputs and not extra:
        raise UsageError(f"no inputs: {hint}")
    if inputs.count(STDIN) > 1:
        raise UsageError("- (stdin) can be given only once")


def with_total(items: Iterable[Any], inputs: list[str], *, what: str) -> tuple[Iterator[Any], int | None]:
    """Items and their count for the progress bar; an empty set is a usage error.

    Files and folders are listed up front (paths only, cheap); stdin stays a stream, so a pipeline
    feeding mmcli gets results as it goes, and only its first item is awaited here.
    """
    from mmcli.io.inputs import STDIN

    if STDIN not in inputs:
        listed = list(items)
        if not listed:
            raise UsageError(f"no {what} found in {', '.join(inputs) or 'the arguments'}")
        return iter(listed), len(listed)
    stream = iter(items)
    first = next(stream, None)
    if first is None:
        raise UsageError("no inputs: stdin was empty")
    return chain([first], stream), None


def report_failure(
    outcome: Any, *, keep: Callable[[dict[str, Any]], None], on_error: str, bar: Any = None, when_stopping: str = ""
) -> None:
    """A failed item: one line on stderr, its error record handed to ``keep``, and a stop under
    ``--on-error fail``."""
    item = outcome.item
    message = f"mmcli: skipping {item.source}: {outcome.error}"
    if bar is not None:
        bar.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)
    keep(item.error_record(outcome.error))
    if on_error == "fail":
        from mmcli.errors import ItemError

        raise ItemError(f"stopped at {item.source} (--on-error fail){when_stopping}")


def quiet_libraries() -> None:
    """Hide transformers' own weight-loading bars and config chatter; mmcli reports progress itself."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@contextmanager
def progress(total: int | None, *, quiet: bool, unit: str = "item", desc: str = "") -> Iterator[Any]:
    """A tqdm bar on stderr with items/s; a no-op object when quiet."""
    if quiet:
        yield _NoProgress()
        return
    from tqdm import tqdm

    # disable=None: a bar on a terminal, nothing in logs and CI where stderr is a file or pipe.
    with tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, dynamic_ncols=True, leave=False, disable=None) as bar:
        yield bar


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def write(self, message: str, file: Any = None) -> None:
        print(message, file=sys.stderr, flush=True)


def resumable(
    output: Any, settings: dict[str, Any], items: Iterator[Any], *, restart: bool, quiet: bool, unit: str = "items"
) -> tuple[Any, Iterator[Any], int]:
    """The journal for ``output`` and the items still to do: an interrupted run with the same
    ``settings`` resumes after the items it committed (``--restart`` starts over)."""
    from itertools import islice

    from mmcli.io.journal import Journal, journal_path

    journal = Journal(journal_path(output), settings, restart=restart)
    _JOURNALS.append(journal.folder)
    if journal.consumed:
        note(f"resuming: {journal.consumed} {unit} were done by an earlier run ({journal.folder})", quiet=quiet)
        items = islice(items, journal.consumed, None)
    return journal, items, journal.consumed

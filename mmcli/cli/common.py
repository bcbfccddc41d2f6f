"""What every command shares: error reporting, progress on stderr, exit statuses."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

from mmcli.errors import WRITE_ERRNOS, MmcliError, OutputCompleted, options_as_flags
from mmcli.reporting import NoProgress, Reporter

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_ITEMS_FAILED = 1

_JOURNALS: list[Any] = []  # journal folders of this run's resumable outputs, named if it is interrupted


# Old spellings of renamed flags, each with the name it now has: one name per idea across the commands.
# An option declared with both keeps the old one working but shows only the new one in its help.
RENAMED_FLAGS = {
    "--top": "--top-k",  # classify
    "--k": "--top-k",  # evaluate retrieval
    "--storage": "--output-dtype",  # fuse
    "--labels": "--truth",  # fuse, evaluate classification: true labels, not labels to choose from
    "--batch-size": "--train-batch-size",  # fuse: rows per training step
}


class _ShownFlags:
    """How options show in help: an on/off flag's two spellings without a ``<bool>`` type beside them,
    and a renamed flag under its new name only (its old one, in :data:`RENAMED_FLAGS`, still parses)."""

    params: list[Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            _no_type_shown(param)
            opts = list(getattr(param, "opts", ()))
            old = [name for name in opts if RENAMED_FLAGS.get(name) in opts]
            if old:
                param.opts = [name for name in opts if name not in old]
                param.old_spellings = old

    def get_help_option(self, ctx: Any) -> Any:
        return _no_type_shown(super().get_help_option(ctx))  # type: ignore[misc]

    def make_parser(self, ctx: Any) -> Any:
        parser = super().make_parser(ctx)  # type: ignore[misc]
        for param in self.get_params(ctx):  # type: ignore[attr-defined]
            old = getattr(param, "old_spellings", None)
            if old:
                shown, param.opts = param.opts, old
                try:
                    param.add_to_parser(parser, ctx)
                finally:
                    param.opts = shown
        return parser


class Command(_ShownFlags, TyperCommand):
    """Every mmcli command."""


# The order `mmcli --help` lists the commands in: the docs' (the main job first, then embedding and
# search); typer would list single commands before groups.
COMMAND_ORDER = ("caption", "extract-features", "retrieve", "index", "serve", "transcribe", "classify", "fuse",
                 "dedup", "score", "select", "evaluate", "report", "train", "warm")  # fmt: skip


class Group(_ShownFlags, TyperGroup):
    """mmcli and its command groups."""

    def list_commands(self, ctx: Any) -> list[str]:
        rank = {name: place for place, name in enumerate(COMMAND_ORDER)}
        return sorted(super().list_commands(ctx), key=lambda name: rank.get(name, len(rank)))


def _no_type_shown(param: Any) -> Any:
    if getattr(param, "is_flag", False) and param.metavar is None:
        param.metavar = ""
    return param


def error_line(message: str) -> None:
    print(f"mmcli: error: {message}", file=sys.stderr, flush=True)


def counted(count: int, noun: str) -> str:
    """``1 segment``, ``2 segments``: a count and its noun, for summary lines."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


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
        except OutputCompleted as exc:  # a rerun of a run killed as it finished: done, not an error
            note(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except MmcliError as exc:
            error_line(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            from mmcli.output.previous import kept_progress

            kept = [folder for folder in _JOURNALS if kept_progress(folder)]
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
        except OSError as exc:  # a full or failing disk where no destination named it: one line, not a traceback
            if exc.errno not in WRITE_ERRNOS:
                raise
            error_line(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def quiet_libraries() -> None:
    """Hide transformers' own weight-loading bars and config chatter; mmcli reports progress itself."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@contextmanager
def progress(total: int | None, *, quiet: bool, unit: str = "item", desc: str = "") -> Iterator[Any]:
    """A tqdm bar on stderr with items/s; a no-op object when quiet."""
    if quiet:
        yield NoProgress()
        return
    from tqdm import tqdm

    # disable=None: a bar on a terminal, nothing in logs and CI where stderr is a file or pipe.
    with tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, dynamic_ncols=True, leave=False, disable=None) as bar:
        yield bar


class CommandReporter(Reporter):
    """The command line's :class:`~mmcli.reporting.Reporter`: a bar on stderr (unless ``bars`` is off),
    notes unless ``quiet``, and every skipped item as one line, written through the bar when one shows."""

    def __init__(self, *, quiet: bool, bars: bool | None = None) -> None:
        self.quiet = quiet
        self.bars = not quiet if bars is None else bars
        self._bar: Any = None

    def note(self, message: str) -> None:
        note(message, quiet=self.quiet)

    def skipped(self, item: Any, error: str) -> None:
        message = f"mmcli: skipping {getattr(item, 'shown_source', item.source)}: {error}"
        write = getattr(self._bar, "write", None)  # through a showing bar, so the bar is not torn
        if write is not None:
            write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    @contextmanager
    def loading(self, model: str) -> Iterator[None]:
        """A spinner naming the model while it loads, on a terminal (where the bars show too)."""
        quiet_libraries()
        if not self.bars or not sys.stderr.isatty():
            yield
            return
        from rich.console import Console

        with Console(file=sys.stderr).status(f"loading {model}", spinner="dots"):
            yield

    def journal(self, folder: Any) -> None:
        _JOURNALS.append(folder)

    @contextmanager
    def progress(self, total: int | None, *, unit: str, desc: str) -> Iterator[Any]:
        with progress(total, quiet=not self.bars, unit=unit, desc=desc) as bar:
            self._bar = bar
            try:
                yield bar
            finally:
                self._bar = None

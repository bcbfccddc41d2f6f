"""The ``mmcli`` command: a thin typer layer over the library. Subcommands live one per module."""

from __future__ import annotations

import functools
from typing import Annotated, Any

import typer

from mmcli import __version__
from mmcli.cli.caption import EXAMPLES as CAPTION_EXAMPLES
from mmcli.cli.caption import caption
from mmcli.cli.classify import EXAMPLES as CLASSIFY_EXAMPLES
from mmcli.cli.classify import classify
from mmcli.cli.common import Command, Group
from mmcli.cli.dedup import EXAMPLES as DEDUP_EXAMPLES
from mmcli.cli.dedup import dedup
from mmcli.cli.evaluate import app as evaluate_app
from mmcli.cli.extract_features import EXAMPLES as EXTRACT_EXAMPLES
from mmcli.cli.extract_features import extract_features
from mmcli.cli.fuse import EXAMPLES as FUSE_EXAMPLES
from mmcli.cli.fuse import fuse
from mmcli.cli.index import app as index_app
from mmcli.cli.report import EXAMPLES as REPORT_EXAMPLES
from mmcli.cli.report import report
from mmcli.cli.retrieve import EXAMPLES as RETRIEVE_EXAMPLES
from mmcli.cli.retrieve import retrieve
from mmcli.cli.score import EXAMPLES as SCORE_EXAMPLES
from mmcli.cli.score import score
from mmcli.cli.select import EXAMPLES as SELECT_EXAMPLES
from mmcli.cli.select import select
from mmcli.cli.serve import EXAMPLES as SERVE_EXAMPLES
from mmcli.cli.serve import serve
from mmcli.cli.train import app as train_app
from mmcli.cli.transcribe import EXAMPLES as TRANSCRIBE_EXAMPLES
from mmcli.cli.transcribe import transcribe
from mmcli.cli.warm import app as warm_app

EXAMPLES = """\
Examples:

  mmcli caption examples/photos/chelsea.jpg

  mmcli extract-features examples/photos -o photos.npy

  mmcli retrieve --index photos.npy --query "a cat on a sofa" -k 3

  mmcli transcribe talk.wav -o talk.jsonl

  mmcli COMMAND --help    (each command's options, with examples)
"""

app = typer.Typer(
    cls=Group,
    name="mmcli",
    help="Multimodal models from the shell: embed, caption, transcribe, search and score images, video, audio, text.",
    no_args_is_help=True,
    epilog=EXAMPLES,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mmcli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool | None, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
) -> None:
    """Multimodal models from the shell: embed, caption, transcribe, search and score images, video, audio, text."""


# In the order the docs present them: the main job first, then embedding and search, then the rest.
app.command("caption", cls=Command, epilog=CAPTION_EXAMPLES)(caption)
app.command("extract-features", cls=Command, epilog=EXTRACT_EXAMPLES)(extract_features)
app.command("retrieve", cls=Command, epilog=RETRIEVE_EXAMPLES)(retrieve)
app.add_typer(index_app, name="index")
app.command("serve", cls=Command, epilog=SERVE_EXAMPLES)(serve)
app.command("transcribe", cls=Command, epilog=TRANSCRIBE_EXAMPLES)(transcribe)
app.command("classify", cls=Command, epilog=CLASSIFY_EXAMPLES)(classify)
app.command("fuse", cls=Command, epilog=FUSE_EXAMPLES)(fuse)
app.command("dedup", cls=Command, epilog=DEDUP_EXAMPLES)(dedup)
app.command("score", cls=Command, epilog=SCORE_EXAMPLES)(score)
app.command("select", cls=Command, epilog=SELECT_EXAMPLES)(select)
app.add_typer(evaluate_app, name="evaluate")
app.command("report", cls=Command, epilog=REPORT_EXAMPLES)(report)
app.add_typer(train_app, name="train")
app.add_typer(
    warm_app,
    name="warm",
    short_help="Keep torch and the last models loaded in a background process, so each command starts at once.",
)


@functools.cache
def click_command() -> Any:
    """The click command typer builds from the app by reading every command's signature (70 ms): once per
    process, and in a warm process once for all its commands."""
    return typer.main.get_command(app)


def main() -> None:
    click_command()()

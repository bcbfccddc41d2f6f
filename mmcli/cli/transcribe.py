"""``mmcli transcribe``: recordings and video soundtracks -> timed transcript segments (JSONL)."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from mmcli.cli import options as opt
from mmcli.cli.common import EXIT_ITEMS_FAILED, CommandReporter, counted, note, reports_errors

EXAMPLES = """\
Examples:

  mmcli transcribe interview.mp3 | jq -r .text

  mmcli transcribe talks/ -o transcripts.jsonl --language en

  mmcli transcribe lecture.mp4 --model openai/whisper-large-v3-turbo --device cuda --dtype float16
"""

DEFAULT_TRANSCRIBER = "openai/whisper-small"


class Task(str, Enum):
    transcribe = "transcribe"
    translate = "translate"


@reports_errors
def transcribe(
    inputs: opt.Inputs = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write records to this file instead of stdout.", dir_okay=False),
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            envvar="MMCLI_SPEECH_MODEL",
            help="Speech recognition model (Whisper family): Hugging Face id or local checkpoint folder.",
            rich_help_panel="Model",
        ),
    ] = DEFAULT_TRANSCRIBER,
    language: Annotated[
        str | None,
        typer.Option(help="Spoken language (en, de, ...) \\[default: detected per 30 s window].", show_default=False),
    ] = None,
    task: Annotated[Task, typer.Option(help="transcribe: text in the spoken language; translate: in English.")] = (
        Task.transcribe
    ),
    batch_size: opt.TranscribeBatchSize = None,
    workers: opt.Workers = None,
    device: opt.DeviceOption = opt.Device.auto,
    dtype: opt.DTypeOption = opt.DType.auto,
    quantize: opt.QuantizeOption = None,
    on_error: opt.OnErrorOption = opt.OnError.skip,
    overwrite: opt.Overwrite = False,
    restart: opt.Restart = False,
    start: opt.VideoStart = 0.0,
    end: opt.VideoEnd = None,
    trust_remote_code: opt.TrustRemoteCode = False,
    quiet: opt.Quiet = False,
) -> None:
    """Transcribe speech in audio files and video soundtracks: one {"id", "source", "t", "end", "text"}
    record per segment, with its times in seconds.

    Each recording is cut into the model's 30 s windows, batched across recordings; long files are
    read as they are transcribed, never whole. A silent recording is an error record.

    With -o, progress is kept in OUT.partial/ as the run goes: if it is interrupted (even killed),
    the same command resumes where it stopped and gives exactly the output of an uninterrupted run.
    """
    flags = dict(locals())  # the shared run options go to the library as they are
    from mmcli.speech import transcribe_files

    bars = not quiet and not (output is None and sys.stdout.isatty())
    result = transcribe_files(
        inputs or [],
        output,
        stream=sys.stdout if output is None else None,
        model=model,
        language=language,
        task=task.value,
        **opt.run_flags(flags),
        reporter=CommandReporter(quiet=quiet, bars=bars),
    )
    stats = result.stats
    line = f"transcribed {counted(result.recordings, 'recording')} into {counted(result.segments, 'segment')}"
    if result.without_speech:
        line += f" ({result.without_speech} with no speech)"
    note(line + (f"; {stats.failed} failed" if stats.failed else ""), quiet=quiet)
    if stats.failed:
        raise typer.Exit(EXIT_ITEMS_FAILED)

"""``mmcli caption``: images -> caption records (JSONL, TSV or plain text)."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from mmcli.cli import options as opt
from mmcli.cli.common import EXIT_ITEMS_FAILED, CommandReporter, note, reports_errors

EXAMPLES = """\
Examples:

  mmcli caption photo.jpg --format text

  mmcli caption photos/ > captions.jsonl

  mmcli caption photos/ --prompt "a photography of" -o captions.jsonl

  mmcli caption photos/ --model HuggingFaceTB/SmolVLM-256M-Instruct --detail detailed

  mmcli caption talk.mp4 --speech openai/whisper-small | jq -r '[.t, .caption, .speech] | @tsv'
"""

GENERATION = "Generation"


class OutputFormat(str, Enum):
    jsonl = "jsonl"
    tsv = "tsv"
    text = "text"


class Detail(str, Enum):
    brief = "brief"
    detailed = "detailed"
    more = "more"


def _generation(kind: Any, help: str | None = None, **limits: Any) -> Any:
    """A generation flag, in its help panel."""
    return opt.in_panel(GENERATION, kind, help, **limits)


@reports_errors
def caption(
    inputs: opt.Inputs = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write records to this file instead of stdout.", dir_okay=False),
    ] = None,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="jsonl records, id<TAB>caption, or captions alone.")
    ] = OutputFormat.jsonl,
    model: opt.CaptionerModel = opt.DEFAULT_CAPTIONER,
    image_column: opt.ImageColumn = None,
    text_column: opt.RecordTextColumn = None,
    id_column: opt.IdColumn = None,
    prompt: _generation(
        str | None, "Text prefix (BLIP, GIT), task token (Florence-2) or instruction (chat models)."
    ) = None,
    detail: _generation(Detail, "Caption length, for models with detail levels.") = Detail.brief,
    max_new_tokens: _generation(int, min=1) = 30,
    min_new_tokens: _generation(int | None, min=0) = None,
    num_beams: _generation(int, min=1) = 1,
    repetition_penalty: _generation(float | None, min=0.0) = None,
    temperature: _generation(float, "Sample at this temperature (0: greedy).", min=0.0) = 0.0,
    top_p: _generation(float | None, "Nucleus sampling cut-off.", min=0.0, max=1.0) = None,
    seed: _generation(int | None, "Seed for reproducible sampling.") = None,
    batch_size: opt.CaptionBatchSize = None,
    workers: opt.Workers = None,
    device: opt.DeviceOption = opt.Device.auto,
    dtype: opt.DTypeOption = opt.DType.auto,
    quantize: opt.QuantizeOption = None,
    max_pixels: opt.MaxPixels = 178_956_970,
    exact_decode: opt.ExactDecode = False,
    on_error: opt.OnErrorOption = opt.OnError.skip,
    overwrite: opt.Overwrite = False,
    restart: opt.Restart = False,
    update: Annotated[
        bool,
        typer.Option(
            help="Bring an existing -o JSONL up to date: caption only new or changed files, drop vanished ones."
        ),
    ] = False,
    keep_missing: opt.KeepMissing = False,
    keyframes: opt.CaptionKeyframes = False,
    fps: opt.CaptionVideoFps = None,
    frames: opt.VideoFrames = None,
    scene_threshold: opt.SceneThreshold = 0.3,
    start: opt.VideoStart = 0.0,
    end: opt.VideoEnd = None,
    summary: Annotated[
        bool,
        typer.Option(
            help="After a video's segments, a record joining their distinct captions.", rich_help_panel=opt.VIDEO
        ),
    ] = True,
    speech: Annotated[
        str | None,
        typer.Option(
            metavar="MODEL",
            help="Transcribe each video's soundtrack with this speech model (Whisper: openai/whisper-small, ...): "
            "every video record gets the speech said during it, the summary the whole transcript.",
            show_default=False,
            rich_help_panel=opt.VIDEO,
        ),
    ] = None,
    speech_language: Annotated[
        str | None,
        typer.Option(
            help="With --speech: the spoken language (en, de, ...) \\[default: detected].",
            show_default=False,
            rich_help_panel=opt.VIDEO,
        ),
    ] = None,
    trust_remote_code: opt.TrustRemoteCode = False,
    backend: opt.BackendOption = opt.Backend.local,
    ray_address: opt.RayAddress = None,
    num_workers: opt.NumWorkers = 1,
    gpus_per_worker: opt.GpusPerWorker = 0.0,
    quiet: opt.Quiet = False,
) -> None:
    """Caption images and videos: one {"id", "source", "caption", "model"} record per image.

    A video is captioned scene by scene (--keyframes, the default; or --fps, --frames): one
    {"id", "source", "t", "end", "caption"} record per segment, neighbours that say the same thing
    merged, then a {"id", "source", "summary"} record joining the distinct captions (--no-summary).
    With --speech MODEL, each also gets the "speech" said in it, from the video's soundtrack.

    With -o, progress is kept in OUT.partial/ as the run goes: if it is interrupted (even killed),
    the same command resumes where it stopped and gives exactly the output of an uninterrupted run.
    """
    flags = dict(locals())  # the shared run options go to the library as they are
    from mmcli.caption import caption_files
    from mmcli.captioners import GenerationOptions

    options = GenerationOptions(
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        num_beams=num_beams,
        repetition_penalty=repetition_penalty,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
    )
    # Records on a terminal are progress enough; a bar would tangle with them.
    bars = not quiet and not (output is None and sys.stdout.isatty())
    result = caption_files(
        inputs or [],
        output,
        stream=sys.stdout if output is None else None,
        output_format=output_format.value,
        model=model,
        prompt=prompt,
        detail=detail.value,
        options=options,
        summary=summary,
        speech=speech,
        speech_language=speech_language,
        image_column=image_column,
        text_column=text_column,
        id_column=id_column,
        **opt.run_flags(flags),
        reporter=CommandReporter(quiet=quiet, bars=bars),
    )
    stats = result.stats
    if stats.update:
        line = (
            f"updated {output}: {stats.kept} inputs kept ({stats.moved} recognised by content), "
            f"{stats.processed} captioned, {stats.dropped} dropped"
        )
        if stats.kept_missing:
            line += f", {stats.kept_missing} records of vanished files kept"
    else:
        counts = ((result.images, "image"), (result.videos, "video"))
        done = [f"{count} {noun}{'s' if count != 1 else ''}" for count, noun in counts if count] or ["0 images"]
        line = "captioned " + " and ".join(done)
    note(line + (f"; {stats.failed} failed" if stats.failed else ""), quiet=quiet)
    if stats.failed:
        raise typer.Exit(EXIT_ITEMS_FAILED)

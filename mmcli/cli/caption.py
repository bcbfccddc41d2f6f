"""``mmcli caption``: images -> caption records (JSONL, TSV or plain text)."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from mmcli.cli import options as opt
from mmcli.cli.common import (
    EXIT_ITEMS_FAILED,
    note,
    progress,
    quiet_libraries,
    report_failure,
    reports_errors,
    require_inputs,
    resumable,
    with_total,
)

EXAMPLES = """\
Examples:

  mmcli caption photo.jpg --format text

  mmcli caption photos/ > captions.jsonl

  mmcli caption photos/ --prompt "a photography of" -o captions.jsonl

  mmcli caption photos/ --model HuggingFaceTB/SmolVLM-256M-Instruct --detail detailed
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
    prompt: Annotated[
        str | None,
        typer.Option(
            help="Text prefix (BLIP, GIT), task token (Florence-2) or instruction (chat models).",
            show_default=False,
            rich_help_panel=GENERATION,
        ),
    ] = None,
    detail: Annotated[
        Detail, typer.Option(help="Caption length, for models with detail levels.", rich_help_panel=GENERATION)
    ] = Detail.brief,
    max_new_tokens: Annotated[int, typer.Option(min=1, rich_help_panel=GENERATION)] = 30,
    min_new_tokens: Annotated[int | None, typer.Option(min=0, rich_help_panel=GENERATION)] = None,
    num_beams: Annotated[int, typer.Option(min=1, rich_help_panel=GENERATION)] = 1,
    repetition_penalty: Annotated[float | None, typer.Option(min=0.0, rich_help_panel=GENERATION)] = None,
    temperature: Annotated[
        float, typer.Option(min=0.0, help="Sample at this temperature (0: greedy).", rich_help_panel=GENERATION)
    ] = 0.0,
    top_p: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Nucleus sampling cut-off.", rich_help_panel=GENERATION)
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed for reproducible sampling.", rich_help_panel=GENERATION)
    ] = None,
    batch_size: opt.CaptionBatchSize = None,
    workers: opt.Workers = None,
    device: opt.DeviceOption = opt.Device.auto,
    dtype: opt.DTypeOption = opt.DType.auto,
    quantize: opt.QuantizeOption = None,
    max_pixels: opt.MaxPixels = 178_956_970,
    exact_decode: opt.ExactDecode = False,
    on_error: opt.OnErrorOption = opt.OnError.skip,
    overwrite: opt.Overwrite = False,
    restart: Annotated[
        bool, typer.Option(help="Discard the progress of an interrupted -o run (OUT.partial) instead of resuming it.")
    ] = False,
    trust_remote_code: opt.TrustRemoteCode = False,
    quiet: opt.Quiet = False,
) -> None:
    """Caption images: one {"id", "source", "caption", "model"} record per image.

    With -o, progress is kept in OUT.partial/ as the run goes: if it is interrupted (even killed),
    the same command resumes where it stopped and gives exactly the output of an uninterrupted run.
    """
    from mmcli.io.atomic import check_writable
    from mmcli.io.inputs import STDIN, discover_images

    inputs = inputs or []
    require_inputs(inputs, hint="give image files or folders, or - to read paths from stdin")
    if output is not None:
        check_writable(output, overwrite=overwrite)
    items, total = with_total(discover_images(inputs), inputs, what="images")

    quiet_libraries()
    from mmcli.caption import caption_items
    from mmcli.captioners import GenerationOptions, load_captioner
    from mmcli.io.records import RecordWriter

    captioner = load_captioner(
        model,
        device=device.value,
        dtype=dtype.value,
        quantize=quantize.value if quantize else None,
        trust_remote_code=trust_remote_code,
    )
    batch_size = batch_size or captioner.default_batch_size
    run_prompt = captioner.prompt_for(prompt, detail.value)
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
    show_bar = not quiet and not (output is None and sys.stdout.isatty())
    journal, consumed = None, 0
    if output is not None and STDIN not in inputs:  # stdout and streams cannot be resumed
        settings = {
            "command": "caption",
            "inputs": [str(i) for i in inputs],
            "model": model,
            "prompt": run_prompt,
            "options": vars(options),
            "format": output_format.value,
            "batch_size": batch_size,
            "device": str(captioner.device),
            "dtype": str(captioner.dtype),
            "quantize": captioner.quantized,
            "max_pixels": max_pixels,
            "exact_decode": exact_decode,
        }
        journal, items, consumed = resumable(output, settings, items, restart=restart, quiet=quiet, unit="images")
    earlier = journal.counters if journal else {}
    captioned, failed = earlier.get("captioned", 0), earlier.get("failed", 0)
    with (
        RecordWriter(output, fmt=output_format.value, journal=journal) as writer,
        progress(total, quiet=not show_bar, unit="img", desc="captioning") as bar,
    ):
        bar.update(consumed)
        for batch in caption_items(
            items,
            captioner,
            prompt=run_prompt,
            options=options,
            batch_size=batch_size,
            workers=workers,
            max_pixels=max_pixels,
            exact_decode=exact_decode,
        ):
            for outcome in batch:
                item = outcome.item
                if outcome.error is None:
                    writer.write(item.record(modality=False, source=item.source, caption=outcome.value, model=model))
                    captioned += 1
                    continue
                failed += 1
                writer.flush()
                report_failure(outcome, keep=writer.write, on_error=on_error.value, bar=bar)
            writer.flush()
            bar.update(len(batch))
            consumed += len(batch)
            if consumed % batch_size == 0:  # whole input batches only, so a resumed run batches alike
                writer.checkpoint(consumed, {"captioned": captioned, "failed": failed})

    summary = f"captioned {captioned} image{'s' if captioned != 1 else ''}"
    note(summary + (f"; {failed} failed" if failed else ""), quiet=quiet)
    if failed:
        raise typer.Exit(EXIT_ITEMS_FAILED)

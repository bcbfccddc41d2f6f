"""``mmcli caption``: images -> caption records (JSONL, TSV or plain text)."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NamedTuple

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
from mmcli.errors import UsageError

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
    trust_remote_code: opt.TrustRemoteCode = False,
    quiet: opt.Quiet = False,
) -> None:
    """Caption images and videos: one {"id", "source", "caption", "model"} record per image.

    A video is captioned scene by scene (--keyframes, the default; or --fps, --frames): one
    {"id", "source", "t", "end", "caption"} record per segment, neighbours that say the same thing
    merged, then a {"id", "source", "summary"} record joining the distinct captions (--no-summary).

    With -o, progress is kept in OUT.partial/ as the run goes: if it is interrupted (even killed),
    the same command resumes where it stopped and gives exactly the output of an uninterrupted run.
    """
    from mmcli.io.atomic import check_writable
    from mmcli.io.inputs import STDIN, discover_images

    inputs = inputs or []
    require_inputs(inputs, hint="give image or video files or folders, or - to read paths from stdin")
    if update:
        if output is None or output_format is not OutputFormat.jsonl or STDIN in inputs or not output.exists():
            raise UsageError(
                "--update brings an existing -o JSONL file up to date from image and video files"
                + ("" if output is None or output.exists() else f": {output} does not exist yet")
            )
    elif keep_missing:
        raise UsageError("--keep-missing goes with --update")
    if output is not None:
        check_writable(output, overwrite=overwrite or update)
    sampling = opt.video_sampling(fps, frames, keyframes, scene_threshold, start, end, default="keyframes")
    items, total = with_total(discover_images(inputs, videos=True), inputs, what="images or videos")
    previous = None
    if update:  # what cannot be updated is refused before the model loads
        assert output is not None
        items = list(items)
        previous = _previous_captions(output, items)

    quiet_libraries()
    from mmcli.caption import VideoCaptions, caption_items
    from mmcli.captioners import GenerationOptions, load_captioner
    from mmcli.extract import expand_clips, expand_videos
    from mmcli.io.features import FileEntries
    from mmcli.io.records import RecordWriter

    captioner = load_captioner(model, **opt.model_loading(device, dtype, quantize, trust_remote_code))
    batch_size = batch_size or captioner.default_batch_size
    run_prompt = captioner.prompt_for(prompt, detail.value)
    video_prompt = None
    if captioner.clip_frames:
        what = f"model {model!r} ({captioner.family}) captions each video whole"
        sampling = opt.clip_sampling(what, captioner.clip_frames, fps, frames, keyframes, start, end)
        video_prompt = captioner.video_prompt_for(prompt, detail.value)
    options = GenerationOptions(
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        num_beams=num_beams,
        repetition_penalty=repetition_penalty,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
    )
    # What decides the captions; recorded in the manifest so --update can insist on the same.
    run_settings = {
        "model": model,
        "prompt": run_prompt,
        "options": vars(options),
        "max_pixels": max_pixels,
        "exact_decode": exact_decode,
        "dtype": str(captioner.dtype),
        "quantize": captioner.quantized,
        "video": {**vars(sampling), "summary": summary},
        **({"video_prompt": video_prompt, "clip_frames": captioner.clip_frames} if captioner.clip_frames else {}),
    }
    engine_options = {
        "prompt": run_prompt,
        "video_prompt": video_prompt,
        "options": options,
        "batch_size": batch_size,
        "workers": workers,
        "max_pixels": max_pixels,
        "exact_decode": exact_decode,
    }

    def records_of(todo: Any, videos: VideoCaptions) -> Any:
        """Records to write, a batch at a time, with the batch they come from (videos expanded)."""
        if captioner.clip_frames:
            todo = expand_clips(todo, captioner.clip_frames, sampling, max_pixels=max_pixels)
        else:
            todo = expand_videos(todo, sampling, max_pixels=max_pixels)
        for batch in caption_items(todo, captioner, **engine_options):
            yield videos.records(batch), batch

    if previous is not None:
        assert output is not None

        def just_records(todo: Any) -> Any:
            for records, _ in records_of(todo, VideoCaptions(model, summary=summary)):
                yield records

        _update(output, previous, items, just_records, run_settings, keep_missing, on_error.value, quiet)
        return
    # Records on a terminal are progress enough; a bar would tangle with them.
    show_bar = not quiet and not (output is None and sys.stdout.isatty())
    journal, consumed = None, 0
    if output is not None and STDIN not in inputs:  # stdout and streams cannot be resumed
        settings = {"command": "caption", "inputs": [str(i) for i in inputs], "format": output_format.value}
        settings.update(run_settings, batch_size=batch_size, device=str(captioner.device))
        journal, items, consumed = resumable(output, settings, items, restart=restart, quiet=quiet, unit="images")
    earlier = journal.counters if journal else {}
    failed = earlier.get("failed", 0)
    # A manifest for a later --update: file inputs written to -o only (a stream cannot be compared).
    files = FileEntries() if journal is not None else None
    videos = VideoCaptions(model, summary=summary, images=earlier.get("captioned", 0), videos=earlier.get("videos", 0))
    with (
        RecordWriter(
            output,
            fmt=output_format.value,
            text_fields=("caption", "summary"),
            journal=journal,
            settings=run_settings if journal else None,
        ) as writer,
        progress(total, quiet=not show_bar, unit="input", desc="captioning") as bar,
    ):
        bar.update(consumed)
        for records, batch in records_of(items, videos):
            failed += _write_records(writer, records, files, on_error.value, bar)
            writer.flush()
            bar.update(sum(outcome.item.modality != "frame" for outcome in batch))
            consumed += len(batch)
            # Whole input batches only, so a resumed run batches alike; never inside a video being captioned.
            if consumed % batch_size == 0 and not videos.pending:
                counters = {"captioned": videos.images, "videos": videos.videos, "failed": failed}
                writer.checkpoint(consumed, counters)

    counts = ((videos.images, "image"), (videos.videos, "video"))
    done = [f"{count} {noun}{'s' if count != 1 else ''}" for count, noun in counts if count] or ["0 images"]
    note("captioned " + " and ".join(done) + (f"; {failed} failed" if failed else ""), quiet=quiet)
    if failed:
        raise typer.Exit(EXIT_ITEMS_FAILED)


def _write_records(writer: Any, records: list, files: Any, on_error: str, bar: Any) -> int:
    """Write the records (outcomes) of captioned inputs, each with its manifest entry where ``files``
    keeps a manifest, and report the failed ones; returns how many failed."""
    failed = 0
    for outcome in records:
        if outcome.error is None:
            writer.write(outcome.value, file=files.entry(outcome.item) if files is not None else None)
            continue
        failed += 1
        writer.flush()
        report_failure(outcome, keep=writer.write, on_error=on_error, bar=bar)
    return failed


class _Previous(NamedTuple):
    """The captions ``--update`` starts from: the records (errors aside), their file manifest, the paths
    that failed in them, and whether videos are involved."""

    records: list[dict[str, Any]]
    manifest: list[dict[str, Any]]
    failed: set[str]
    videos: bool


def _previous_captions(output: Path, items: list[Any]) -> _Previous:
    """The records and manifest ``--update`` starts from, refused early where they cannot be updated."""
    from mmcli.io.features import read_manifest
    from mmcli.io.jsonl import read_jsonl

    manifest = read_manifest(output)
    if manifest is None:
        raise UsageError(f"{output} has no file manifest to compare against; rebuild it once with --overwrite")
    records = [record for _, record in read_jsonl(output)]
    captions = [record for record in records if "error" not in record]
    failed = {record.get("source") for record in records if "error" in record}
    videos = any("summary" in record or "t" in record for record in captions)
    return _Previous(captions, manifest, failed, videos or any(item.modality == "video" for item in items))


def _update(
    output: Path,
    previous: _Previous,
    items: list[Any],
    run: Any,
    run_settings: dict[str, Any],
    keep_missing: bool,
    on_error: str,
    quiet: bool,
) -> None:
    """Rewrite ``output`` as a fresh run would, captioning only inputs it does not already describe
    (``run`` captions a list of items, as the fresh run does, and yields the records to write)."""
    from mmcli.incremental import check_same_settings, outcomes_of, plan_update
    from mmcli.io.features import FileEntries
    from mmcli.io.records import RecordWriter

    records, manifest = previous.records, previous.manifest
    check_same_settings(output, run_settings, videos=previous.videos)
    plan = plan_update(items, records, manifest, name=str(output), keep_missing=keep_missing, failed=previous.failed)
    with progress(len(plan.embed), quiet=quiet, unit="input", desc="captioning new") as bar:
        outcomes = outcomes_of(items, plan.embed, run, bar)
    failed = failed_inputs = 0
    files = FileEntries()
    with RecordWriter(output, fmt="jsonl", settings=run_settings) as writer:
        for index, item in enumerate(items):
            if index in plan.reuse:
                for record, entry in zip(*plan.carried(index, item, records, manifest), strict=True):
                    writer.write(record, file=entry)
                continue
            files.remember(plan.hashed.get(index, {}))
            errors = _write_records(writer, outcomes.get(index, []), files, on_error, None)
            failed, failed_inputs = failed + errors, failed_inputs + bool(errors)
        for row in plan.kept_missing:
            writer.write(records[row], file=manifest[row])
    summary = (
        f"updated {output}: {len(plan.reuse)} inputs kept ({plan.moved} recognised by content), "
        f"{len(plan.embed) - failed_inputs} captioned, {plan.dropped} dropped"
    )
    if plan.kept_missing:
        summary += f", {len(plan.kept_missing)} records of vanished files kept"
    note(summary + (f"; {failed} failed" if failed else ""), quiet=quiet)
    if failed:
        raise typer.Exit(EXIT_ITEMS_FAILED)

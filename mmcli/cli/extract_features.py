"""``mmcli extract-features``: images and texts -> a feature set (``.npy`` + ``.jsonl``)."""

from __future__ import annotations

from enum import Enum
from itertools import chain
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
from mmcli.errors import ItemError, UsageError

EXAMPLES = """\
Examples:

  mmcli extract-features photos/ -o photos.npy

  mmcli extract-features --modality text captions.txt -o captions.npy

  find . -name '*.jpg' | mmcli extract-features - -o feats.npy --model google/siglip-base-patch16-224
"""


class VideoPool(str, Enum):
    mean = "mean"
    max = "max"
    none = "none"
    both = "both"


class InputModality(str, Enum):
    image = "image"
    text = "text"


@reports_errors
def extract_features(
    inputs: opt.Inputs = None,
    output: opt.OutputNpy = ...,  # type: ignore[assignment]
    text: Annotated[
        list[str] | None, typer.Option("--text", "-t", help="A text to embed (repeatable).", show_default=False)
    ] = None,
    modality: Annotated[
        InputModality,
        typer.Option(help="What INPUTS hold: images, or texts (.txt, one per line; .jsonl with --field; -)."),
    ] = InputModality.image,
    field: Annotated[str, typer.Option(help="JSONL field holding the text.")] = "text",
    model: opt.EncoderModel = opt.DEFAULT_ENCODER,
    batch_size: opt.BatchSize = None,
    workers: opt.Workers = None,
    device: opt.DeviceOption = opt.Device.auto,
    dtype: opt.DTypeOption = opt.DType.auto,
    quantize: opt.QuantizeOption = None,
    normalize: Annotated[bool, typer.Option(help="L2-normalise each row.")] = True,
    output_dtype: Annotated[
        opt.StorageDType, typer.Option(help="Storage type of the .npy rows.")
    ] = opt.StorageDType.float32,
    max_pixels: opt.MaxPixels = 178_956_970,
    exact_decode: opt.ExactDecode = False,
    on_error: opt.OnErrorOption = opt.OnError.skip,
    overwrite: opt.Overwrite = False,
    restart: opt.Restart = False,
    update: Annotated[
        bool,
        typer.Option(help="Bring an existing OUT up to date: embed only new or changed inputs, drop vanished ones."),
    ] = False,
    keep_missing: opt.KeepMissing = False,
    pool: Annotated[
        VideoPool,
        typer.Option(
            help="Video rows: one per video, the mean or max of its frame rows; none: the frame rows; "
            "both: frame rows then the mean row.",
            rich_help_panel=opt.VIDEO,
        ),
    ] = VideoPool.mean,
    fps: opt.VideoFps = None,
    frames: opt.VideoFrames = None,
    keyframes: opt.VideoKeyframes = False,
    scene_threshold: opt.SceneThreshold = 0.3,
    start: opt.VideoStart = 0.0,
    end: opt.VideoEnd = None,
    trust_remote_code: opt.TrustRemoteCode = False,
    quiet: opt.Quiet = False,
) -> None:
    """Embed images, videos and texts into a feature set: OUT.npy rows with an OUT.jsonl record each.

    Videos (mp4, mov, mkv, webm, avi, ...) are sampled at --fps (or --frames, --keyframes) and give
    one row each, pooled over their frames (--pool), or a row per frame with its time t. A native video
    model (X-CLIP, VideoMAE) instead embeds each video whole, as one clip of the frame count it was
    built for, evenly spaced over --start..--end.

    Progress is kept in OUT.partial/ as the run goes: if it is interrupted (even killed), the
    same command resumes where it stopped and gives exactly the output of an uninterrupted run.
    """
    from mmcli.io.features import FeatureSetWriter, FileEntries, check_output_path, errors_path, sidecar_path
    from mmcli.io.inputs import STDIN, discover_images, discover_texts

    inputs = inputs or []
    texts = text or []
    require_inputs(inputs, extra=bool(texts), hint="give image files or folders, --text, or - to read stdin")
    if update and (STDIN in inputs or not output.exists()):
        raise UsageError(
            "--update brings an existing feature set up to date from files: "
            + ("inputs from stdin cannot be compared" if STDIN in inputs else f"{output} does not exist yet")
        )
    if keep_missing and not update:
        raise UsageError("--keep-missing goes with --update")
    check_output_path(output, overwrite=overwrite or update)

    sampling = opt.video_sampling(fps, frames, keyframes, scene_threshold, start, end)
    if modality is InputModality.text:
        discovered = discover_texts(inputs, texts, field_name=field)
    else:
        discovered = chain(discover_images(inputs, videos=True), discover_texts([], texts))
    items, total = with_total(discovered, inputs, what=f"{modality.value}s")
    previous = None
    if update:  # what cannot be updated is refused before the model loads
        items = list(items)
        previous = _previous_set(output, items, model)
    wants_text = bool(texts) or modality is InputModality.text
    wants_images = modality is InputModality.image and bool(inputs)

    quiet_libraries()
    from mmcli.encoders import load_encoder
    from mmcli.extract import embed_items

    encoder = load_encoder(model, **opt.model_loading(device, dtype, quantize, trust_remote_code))
    batch_size = batch_size or encoder.default_batch_size
    for needed, modality_name in ((wants_images, "image"), (wants_text, "text")):
        if needed and not encoder.supports(modality_name):
            raise UsageError(
                f"model {model!r} embeds {', '.join(sorted(encoder.modalities))} only, not {modality_name}s; "
                "choose a model for that modality with --model"
            )

    # What decides the rows' values; recorded in the manifest so --update can insist on the same.
    run_settings = {
        "model": model,
        "modality": modality.value,
        "field": field,
        "normalize": normalize,
        "output_dtype": output_dtype.value,
        "max_pixels": max_pixels,
        "exact_decode": exact_decode,
        "dtype": str(encoder.dtype),
        "quantize": encoder.quantized,
    }
    embed_options = {
        "batch_size": batch_size,
        "workers": workers,
        "normalize": normalize,
        "max_pixels": max_pixels,
        "exact_decode": exact_decode,
    }
    run_settings["video"] = {"pool": pool.value, **vars(sampling)}
    if encoder.clip_frames:
        kind = getattr(getattr(encoder, "config", None), "model_type", None) or encoder.family
        what = f"model {model!r} ({kind}) embeds each video whole"
        if pool is not VideoPool.mean:
            raise UsageError(
                f"{what}, into one row per video; --pool {pool.value} does not apply "
                "(it pools image models' frame rows)"
            )
        sampling = opt.clip_sampling(what, encoder.clip_frames, fps, frames, keyframes, start, end)
        run_settings["video"] = {"clip_frames": encoder.clip_frames, **vars(sampling)}
    from mmcli.extract import VideoPooler, expand_clips, expand_videos

    def rows_of(todo: Any) -> Any:
        """Rows to write (videos expanded and pooled), a batch at a time, with the input batch they come
        from and whether a video is still open at its end."""
        if encoder.clip_frames:
            todo = expand_clips(todo, encoder.clip_frames, sampling, max_pixels=max_pixels)
        else:
            todo = expand_videos(todo, sampling, max_pixels=max_pixels)
        pooler = VideoPooler(pool.value, normalize=normalize)
        for batch in embed_items(todo, encoder, **embed_options):
            yield pooler.rows(batch), batch, pooler.pending

    if previous is not None:

        def just_rows(todo: Any) -> Any:
            for rows, _, _ in rows_of(todo):
                yield rows

        _update(output, previous, items, just_rows, run_settings, keep_missing, on_error.value, quiet)
        return
    files = FileEntries()
    journal, consumed = None, 0
    if STDIN not in inputs:  # a stream cannot be replayed, so there is nothing to resume from
        settings = {"command": "extract-features", "inputs": [str(i) for i in inputs], "texts": texts}
        settings.update(run_settings, batch_size=batch_size, device=str(encoder.device))
        journal, items, consumed = resumable(output, settings, items, restart=restart, quiet=quiet, unit="items")
    with (
        FeatureSetWriter(output, dtype=output_dtype.value, journal=journal, settings=run_settings) as writer,
        progress(total, quiet=quiet, unit="item", desc="embedding") as bar,
    ):
        bar.update(consumed)
        failed = len(writer.errors)  # an interrupted run's failures count in this summary too
        for rows, batch, pending in rows_of(items):
            failed += _write_rows(writer, rows, files, model, on_error.value, bar, "; nothing was written")
            bar.update(sum(outcome.item.modality != "frame" for outcome in batch))
            consumed += len(batch)
            # Whole input batches only, so a resumed run batches alike; never inside a video being pooled.
            if consumed % batch_size == 0 and not pending:
                writer.checkpoint(consumed)

    if writer.count == 0:
        raise ItemError(f"every input failed ({failed}); nothing was written to {output} (see {errors_path(output)})")
    summary = f"wrote {writer.count} rows x {writer.dim} to {output} + {sidecar_path(output)}"
    if failed:
        summary += f"; {failed} failed, listed in {errors_path(output)}"
    note(summary, quiet=quiet)
    if failed:
        raise typer.Exit(EXIT_ITEMS_FAILED)


def _write_rows(writer: Any, rows: list, files: Any, model: str, on_error: str, bar: Any, when_stopping: str) -> int:
    """Add the embedded ``rows`` (outcomes) to ``writer`` and report the failed ones; returns how many failed."""
    good = [outcome for outcome in rows if outcome.error is None]
    if good:
        writer.add(
            [o.value for o in good],
            [o.item.record(model=model) for o in good],
            files=[files.entry(o.item) for o in good],
        )
    failed = 0
    for outcome in rows:
        if outcome.error is not None:
            failed += 1
            report_failure(outcome, keep=writer.add_error, on_error=on_error, bar=bar, when_stopping=when_stopping)
    return failed


class _Previous(NamedTuple):
    """The feature set ``--update`` starts from: its rows, their file manifest, the paths that failed in
    it, and whether videos are involved (in it or in the inputs)."""

    features: Any
    manifest: list[dict[str, Any]]
    failed: set[str]
    videos: bool


def _previous_set(output: Path, items: list, model: str) -> _Previous:
    """The feature set and manifest ``--update`` starts from, refused early where it cannot be updated."""
    from mmcli.io.features import errors_path, read_feature_set, read_manifest
    from mmcli.io.jsonl import read_jsonl

    old = read_feature_set(output)
    manifest = read_manifest(output)
    if manifest is None:
        raise UsageError(f"{output} has no file manifest to compare against; rebuild it once with --overwrite")
    if old.models != {model}:
        raise UsageError(f"{output} was made with {', '.join(sorted(old.models))}; --update must use the same --model")
    errors = errors_path(output)
    failed = {record.get("source") for _, record in read_jsonl(errors)} if errors.exists() else set()
    videos = any(record.get("modality") in ("video", "frame") for record in old.records)
    return _Previous(old, manifest, failed, videos or any(item.modality == "video" for item in items))


def _update(
    output: Path,
    previous: _Previous,
    items: list,
    run: Any,
    run_settings: dict[str, Any],
    keep_missing: bool,
    on_error: str,
    quiet: bool,
) -> None:
    """Rewrite ``output`` as a fresh run would, embedding only inputs it does not already hold
    (``run`` embeds a list of items, as the fresh run does, and yields the rows to write)."""
    import numpy as np

    from mmcli.incremental import check_same_settings, outcomes_of, plan_update
    from mmcli.io.features import FeatureSetWriter, FileEntries, errors_path

    model = run_settings["model"]
    old, manifest = previous.features, previous.manifest
    check_same_settings(output, run_settings, videos=previous.videos)
    plan = plan_update(
        items, old.records, manifest, name=str(output), keep_missing=keep_missing, failed=previous.failed
    )
    with progress(len(plan.embed), quiet=quiet, unit="item", desc="embedding new") as bar:
        outcomes = outcomes_of(items, plan.embed, run, bar)
    failed = failed_inputs = 0
    files = FileEntries()
    stopping = "; the set was left as it was"
    with FeatureSetWriter(output, dtype=run_settings["output_dtype"], settings=run_settings) as writer:
        for index, item in enumerate(items):
            if index in plan.reuse:
                records, entries = plan.carried(index, item, old.records, manifest)
                writer.add(np.asarray(old.vectors[plan.reuse[index][0]], np.float32), records, files=entries)
                continue
            files.remember(plan.hashed.get(index, {}))
            errors = _write_rows(writer, outcomes.get(index, []), files, model, on_error, None, stopping)
            failed, failed_inputs = failed + errors, failed_inputs + bool(errors)
        if plan.kept_missing:
            rows = plan.kept_missing
            writer.add(
                np.asarray(old.vectors[rows], np.float32),
                [old.records[r] for r in rows],
                files=[manifest[r] for r in rows],
            )
    summary = (
        f"updated {output}: {len(plan.reuse)} inputs kept ({plan.moved} recognised by content), "
        f"{len(plan.embed) - failed_inputs} embedded, {plan.dropped} dropped"
    )
    if plan.kept_missing:
        summary += f", {len(plan.kept_missing)} rows of vanished files kept"
    if failed:
        summary += f"; {failed} failed, listed in {errors_path(output)}"
    note(summary, quiet=quiet)
    if failed:
        raise typer.Exit(EXIT_ITEMS_FAILED)

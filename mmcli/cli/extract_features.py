"""``mmcli extract-features``: images and texts -> a feature set (``.npy`` + ``.jsonl``)."""

from __future__ import annotations

from enum import Enum
from itertools import chain
from pathlib import Path
from typing import Annotated, Any

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
    if previous is not None:
        _update(output, previous, items, encoder, run_settings, keep_missing, embed_options, on_error.value, quiet)
        return
    from mmcli.extract import VideoPooler, expand_clips, expand_videos

    if encoder.clip_frames:
        items = expand_clips(items, encoder.clip_frames, sampling, max_pixels=max_pixels)
    else:
        items = expand_videos(items, sampling, max_pixels=max_pixels)
    pooler = VideoPooler(pool.value, normalize=normalize)
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
        for batch in embed_items(items, encoder, **embed_options):
            rows = pooler.rows(batch)
            good = [outcome for outcome in rows if outcome.error is None]
            if good:
                writer.add(
                    [o.value for o in good],
                    [o.item.record(model=model) for o in good],
                    files=[files.entry(o.item) for o in good],
                )
            for outcome in rows:
                if outcome.error is None:
                    continue
                failed += 1
                report_failure(
                    outcome,
                    keep=writer.add_error,
                    on_error=on_error.value,
                    bar=bar,
                    when_stopping="; nothing was written",
                )
            bar.update(sum(outcome.item.modality != "frame" for outcome in batch))
            consumed += len(batch)
            # Whole input batches only, so a resumed run batches alike; never inside a video being pooled.
            if consumed % batch_size == 0 and not pooler.pending:
                writer.checkpoint(consumed)

    if writer.count == 0:
        raise ItemError(f"every input failed ({failed}); nothing was written to {output} (see {errors_path(output)})")
    summary = f"wrote {writer.count} rows x {writer.dim} to {output} + {sidecar_path(output)}"
    if failed:
        summary += f"; {failed} failed, listed in {errors_path(output)}"
    note(summary, quiet=quiet)
    if failed:
        raise typer.Exit(EXIT_ITEMS_FAILED)


def _previous_set(output: Path, items: list, model: str) -> tuple[Any, list[dict[str, Any]]]:
    """The feature set and manifest ``--update`` starts from, refused early where it cannot be updated."""
    from mmcli.incremental import refuse_videos
    from mmcli.io.features import read_feature_set, read_manifest

    old = read_feature_set(output)
    manifest = read_manifest(output)
    if manifest is None:
        raise UsageError(f"{output} has no file manifest to compare against; rebuild it once with --overwrite")
    if old.models != {model}:
        raise UsageError(f"{output} was made with {', '.join(sorted(old.models))}; --update must use the same --model")
    refuse_videos(output, items, any(record.get("modality") in ("video", "frame") for record in old.records))
    return old, manifest


def _update(
    output: Path,
    previous: tuple[Any, list[dict[str, Any]]],
    items: list,
    encoder: Any,
    run_settings: dict[str, Any],
    keep_missing: bool,
    embed_options: dict[str, Any],
    on_error: str,
    quiet: bool,
) -> None:
    """Rewrite ``output`` as a fresh run would, embedding only inputs it does not already hold."""
    import numpy as np

    from mmcli.extract import embed_items
    from mmcli.incremental import check_same_settings, outcomes_of, plan_update
    from mmcli.io.features import FeatureSetWriter, errors_path, file_entry

    model = run_settings["model"]
    old, manifest = previous
    check_same_settings(output, run_settings)
    plan = plan_update(items, old.records, manifest, name=str(output), keep_missing=keep_missing)
    with progress(len(plan.embed), quiet=quiet, unit="item", desc="embedding new") as bar:
        outcomes = outcomes_of(items, plan.embed, lambda todo: embed_items(todo, encoder, **embed_options), bar)
    failed = 0
    with FeatureSetWriter(output, dtype=run_settings["output_dtype"], settings=run_settings) as writer:
        for start in range(0, len(items), 1024):
            vectors, records, entries = [], [], []
            for index in range(start, min(start + 1024, len(items))):
                item = items[index]
                if index in plan.reuse:
                    row, entry = plan.reuse[index]
                    vectors.append(np.asarray(old.vectors[row], np.float32))
                    entries.append(entry)
                elif outcomes[index].error is None:
                    vectors.append(outcomes[index].value)
                    entries.append(plan.hashed.get(index) or file_entry(item.id, item.path))
                else:
                    failed += 1
                    report_failure(
                        outcomes[index],
                        keep=writer.add_error,
                        on_error=on_error,
                        when_stopping="; the set was left as it was",
                    )
                    continue
                records.append(item.record(model=model))
            if records:
                writer.add(np.stack(vectors), records, files=entries)
        if plan.kept_missing:
            rows = plan.kept_missing
            writer.add(
                np.asarray(old.vectors[rows], np.float32),
                [old.records[r] for r in rows],
                files=[manifest[r] for r in rows],
            )
    summary = (
        f"updated {output}: {len(plan.reuse)} rows kept ({plan.moved} recognised by content), "
        f"{len(plan.embed) - failed} embedded, {plan.dropped} dropped"
    )
    if plan.kept_missing:
        summary += f", {len(plan.kept_missing)} of vanished files kept"
    if failed:
        summary += f"; {failed} failed, listed in {errors_path(output)}"
    note(summary, quiet=quiet)
    if failed:
        raise typer.Exit(EXIT_ITEMS_FAILED)

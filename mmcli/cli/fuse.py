"""``mmcli fuse``: early (feature-level), learned (model-level) and late (result-level) fusion."""

from __future__ import annotations

from functools import partial
from typing import Any

from mmcli.cli import fuse_options as fo
from mmcli.cli import options as opt
from mmcli.cli.common import note, progress, reports_errors
from mmcli.cli.fuse_learned import NO_OUTPUT, fuse_learned
from mmcli.errors import UsageError
from mmcli.fusion import EARLY_METHODS, HEAD_METHODS, LATE_METHODS

EXAMPLES = """\
Examples:

  mmcli fuse images.npy captions.npy -o fused.npy --method concat

  mmcli fuse clip.npy dino.npy -o fused.npy --method mean --project pca:256 --save-projection pca.safetensors

  mmcli fuse images.npy texts.npy --truth labels.jsonl --method attention --save-head head -o fused.npy

  mmcli fuse new_images.npy new_texts.npy --head head --predict > predictions.jsonl

  mmcli fuse --results clip_hits.jsonl siglip_hits.jsonl --method rrf > fused_hits.jsonl
"""


@reports_errors
def fuse(
    inputs: fo.Inputs = None,
    method: fo.MethodOption = None,
    output: fo.Output = None,
    align: fo.AlignOption = fo.Align.id,
    strict: fo.Strict = False,
    weights: fo.Weights = None,
    normalize: fo.Normalize = True,
    project: fo.Project = None,
    save_projection: fo.SaveProjection = None,
    projection: fo.ProjectionOption = None,
    labels: fo.Labels = None,
    head: fo.Head = None,
    save_head: fo.SaveHead = None,
    predict: fo.Predict = False,
    epochs: fo.Epochs = 100,
    lr: fo.Lr = 1e-3,
    hidden: fo.Hidden = 256,
    batch_size: fo.BatchSize = 256,
    val_fraction: fo.ValFraction = 0.2,
    patience: fo.Patience = 10,
    seed: fo.Seed = 0,
    results: fo.Results = False,
    rrf_k: fo.RrfK = 60.0,
    top_k: fo.TopK = None,
    storage: fo.Storage = opt.StorageDType.float32,
    overwrite: opt.Overwrite = False,
    quiet: opt.Quiet = False,
) -> None:
    """Fuse modalities: feature sets into one (early or learned), or result lists into one (late)."""
    from mmcli.fusion import run
    from mmcli.fusion.early import parse_projection_spec, parse_weights

    paths = inputs or []
    chosen = method.value if method else None
    if results:
        chosen = chosen or "rrf"
        if chosen not in LATE_METHODS:
            raise UsageError(
                f"--results combines result lists with {', '.join(LATE_METHODS)}; --method {chosen} is not one"
            )
        if len(paths) < 2:
            raise UsageError("--results needs at least two result lists (retrieve or classify JSONL)")
        weighting = parse_weights(weights, len(paths))
        report = run.fuse_result_files(
            paths, output, method=chosen, weights=weighting, rrf_k=rrf_k, top_k=top_k, overwrite=overwrite
        )
        message = f"fused {report.queries} {report.kind} records from {len(paths)} lists ({chosen})"
        if report.partial:
            message += f"; {report.partial} were missing from some lists"
        if report.skipped_errors:
            message += f"; {report.skipped_errors} error records skipped"
        note(message, quiet=quiet)
        return
    if len(paths) < (1 if head else 2):
        raise UsageError("give at least two feature sets to fuse (or --results with result lists)")
    shared: dict[str, Any] = dict(
        by=align.value, strict=strict, dtype=storage.value, overwrite=overwrite, on_note=partial(note, quiet=quiet)
    )
    if head is not None or labels is not None:
        training = {
            "epochs": epochs,
            "lr": lr,
            "hidden": hidden,
            "batch_size": batch_size,
            "val_fraction": val_fraction,
            "patience": patience,
            "seed": seed,
            "normalize_inputs": normalize,
        }
        fuse_learned(paths, chosen, labels, head, save_head, predict, output, training, shared, quiet=quiet)
        return
    chosen = chosen or "concat"
    if chosen in HEAD_METHODS:
        raise UsageError(f"--method {chosen} trains a head: give --truth LABELS.jsonl (or apply one with --head)")
    if chosen not in EARLY_METHODS:
        raise UsageError(f"--method {chosen} combines result lists: add --results")
    if predict or save_head:
        raise UsageError("--predict and --save-head need a head: --truth to train one, or --head")
    if output is None:
        raise UsageError(NO_OUTPUT)
    fused = run.fuse_sets(
        paths,
        output,
        method=chosen,
        weights=parse_weights(weights, len(paths)),
        normalize=normalize,
        project=parse_projection_spec(project) if project else None,
        save_projection=save_projection,
        projection=projection,
        progress=partial(progress, quiet=quiet, unit="row"),
        **shared,
    )
    note(f"fused {fused.rows} rows of width {fused.width} ({chosen}) into {fused.output}", quiet=quiet)

"""``mmcli fuse``: early (feature-level), learned (model-level) and late (result-level) fusion."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from mmcli.cli import options as opt
from mmcli.cli.common import note, progress, reports_errors
from mmcli.errors import InputError, UsageError

EXAMPLES = """\
Examples:

  mmcli fuse images.npy captions.npy -o fused.npy --method concat

  mmcli fuse clip.npy dino.npy -o fused.npy --method mean --project pca:256 --save-projection pca.safetensors

  mmcli fuse images.npy texts.npy --labels labels.jsonl --method attention --save-head head -o fused.npy

  mmcli fuse new_images.npy new_texts.npy --head head --predict > predictions.jsonl

  mmcli fuse --results clip_hits.jsonl siglip_hits.jsonl --method rrf > fused_hits.jsonl
"""


class Method(str, Enum):
    concat = "concat"
    mean = "mean"
    weighted = "weighted"
    max = "max"
    attention = "attention"
    gated = "gated"
    mlp = "mlp"
    rrf = "rrf"
    borda = "borda"


class Align(str, Enum):
    id = "id"
    row = "row"


LEARNED = ("attention", "gated", "mlp")
LATE = ("rrf", "weighted", "max", "borda")
EARLY = ("concat", "mean", "weighted", "max")
TRAINING = "Learned fusion"
LATE_PANEL = "Late fusion"


@reports_errors
def fuse(
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Feature sets (.npy with .jsonl sidecars), or with --results the retrieve/classify JSONL to combine.",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
    method: Annotated[
        Method | None,
        typer.Option(
            "--method",
            help="Early: concat, mean, weighted, max. Learned: attention, gated, mlp. "
            "Late (--results): rrf, weighted, max, borda. \\[default: concat; rrf with --results; "
            "attention with --labels]",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Fused feature set (.npy, sidecar beside it); with --predict or --results, JSONL \\[default: stdout].",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
    align: Annotated[Align, typer.Option(help="Match rows by id (inner join) or by position.")] = Align.id,
    strict: Annotated[bool, typer.Option(help="Any id not present in every input is an error.")] = False,
    weights: Annotated[
        str | None,
        typer.Option(
            help="Per-input weights for --method weighted (or late fusion), e.g. 0.7,0.3.", show_default=False
        ),
    ] = None,
    normalize: Annotated[bool, typer.Option(help="L2-normalise each input block and the fused rows.")] = True,
    project: Annotated[
        str | None,
        typer.Option(help="Fit a PCA per input to this width first: pca:D.", show_default=False),
    ] = None,
    save_projection: Annotated[
        Path | None, typer.Option(help="Save the fitted PCA here (.safetensors).", show_default=False, dir_okay=False)
    ] = None,
    projection: Annotated[
        Path | None,
        typer.Option(help="Apply a PCA saved by --save-projection instead of fitting one.", show_default=False),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            help='Train a head on {"id", "label"} JSONL records.', show_default=False, rich_help_panel=TRAINING
        ),
    ] = None,
    head: Annotated[
        Path | None,
        typer.Option(help="Apply a head saved by --save-head.", show_default=False, rich_help_panel=TRAINING),
    ] = None,
    save_head: Annotated[
        Path | None,
        typer.Option(
            help="Save the trained head (HEAD.safetensors + HEAD.json).", show_default=False, rich_help_panel=TRAINING
        ),
    ] = None,
    predict: Annotated[
        bool,
        typer.Option(
            help='Write {"id", "label", "score"} predictions instead of fused rows.', rich_help_panel=TRAINING
        ),
    ] = False,
    epochs: Annotated[int, typer.Option(min=1, help="Most training epochs.", rich_help_panel=TRAINING)] = 100,
    lr: Annotated[float, typer.Option(min=0.0, help="AdamW learning rate.", rich_help_panel=TRAINING)] = 1e-3,
    hidden: Annotated[
        int, typer.Option(min=1, help="Width of the head's layers and of its fused rows.", rich_help_panel=TRAINING)
    ] = 256,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per training step.", rich_help_panel=TRAINING)] = 256,
    val_fraction: Annotated[
        float,
        typer.Option(min=0.0, max=0.9, help="Labelled rows held out for validation.", rich_help_panel=TRAINING),
    ] = 0.2,
    patience: Annotated[
        int,
        typer.Option(
            min=1, help="Stop after this many epochs without a better validation loss.", rich_help_panel=TRAINING
        ),
    ] = 10,
    seed: Annotated[
        int, typer.Option(help="Seed for the split, initialisation and shuffling.", rich_help_panel=TRAINING)
    ] = 0,
    results: Annotated[
        bool,
        typer.Option(
            "--results", help="Inputs are retrieve/classify JSONL result lists to combine.", rich_help_panel=LATE_PANEL
        ),
    ] = False,
    rrf_k: Annotated[float, typer.Option(help="RRF constant k (> 0).", rich_help_panel=LATE_PANEL)] = 60.0,
    top_k: Annotated[
        int | None,
        typer.Option(
            "--top-k",
            "-k",
            min=1,
            help="Keep this many fused hits per query \\[default: all].",
            show_default=False,
            rich_help_panel=LATE_PANEL,
        ),
    ] = None,
    storage: Annotated[
        opt.StorageDType, typer.Option("--storage", help="Dtype of the written matrix.")
    ] = opt.StorageDType.float32,
    overwrite: opt.Overwrite = False,
    quiet: opt.Quiet = False,
) -> None:
    """Fuse modalities: feature sets into one (early or learned), or result lists into one (late)."""
    paths = inputs or []
    if results:
        _late(paths, method.value if method else "rrf", weights, rrf_k, top_k, output, overwrite, quiet)
        return
    if len(paths) < (1 if head else 2):
        raise UsageError("give at least two feature sets to fuse (or --results with result lists)")
    chosen = method.value if method else ("attention" if labels else None)
    if head is not None or labels is not None:
        settings = dict(
            epochs=epochs,
            lr=lr,
            hidden=hidden,
            batch_size=batch_size,
            val_fraction=val_fraction,
            patience=patience,
            seed=seed,
            normalize_inputs=normalize,
        )
        _learned(
            paths,
            chosen,
            labels,
            head,
            save_head,
            predict,
            settings,
            align.value,
            strict,
            output,
            storage,
            overwrite,
            quiet,
        )
        return
    chosen = chosen or "concat"
    if chosen in LEARNED:
        raise UsageError(f"--method {chosen} trains a head: give --labels LABELS.jsonl (or apply one with --head)")
    if chosen not in EARLY:
        raise UsageError(f"--method {chosen} combines result lists: add --results")
    if predict or save_head:
        raise UsageError("--predict and --save-head need a head: --labels to train one, or --head")
    _early(
        paths,
        chosen,
        weights,
        normalize,
        project,
        save_projection,
        projection,
        align.value,
        strict,
        output,
        storage,
        overwrite,
        quiet,
    )


def _read_aligned(paths: list[Path], by: str, strict: bool, quiet: bool) -> Any:
    from mmcli.fusion.align import align
    from mmcli.io.features import check_finite, read_feature_set

    sets = [read_feature_set(path) for path in paths]
    for feature_set in sets:
        check_finite(feature_set)
    aligned = align(sets, by=by, strict=strict) if len(sets) > 1 else _single(sets[0])
    for feature_set, count in zip(sets, aligned.dropped, strict=True):
        if count:
            note(
                f"{count} of {len(feature_set)} rows of {feature_set.path} have no partner in every input; left out",
                quiet=quiet,
            )
    return aligned


def _single(feature_set: Any) -> Any:
    import numpy as np

    from mmcli.fusion.align import AlignedSets

    return AlignedSets([feature_set], [np.arange(len(feature_set), dtype=np.int64)], [0])


def _checked_npy(output: Path | None, overwrite: bool) -> Path:
    from mmcli.io.features import check_output_path

    if output is None:
        raise UsageError("give -o OUT.npy for the fused feature set (its .jsonl sidecar goes beside it)")
    return check_output_path(output, overwrite=overwrite)


def _early(
    paths: list[Path],
    method: str,
    weights_text: str | None,
    normalize: bool,
    project: str | None,
    save_projection: Path | None,
    projection_path: Path | None,
    by: str,
    strict: bool,
    output: Path | None,
    storage: opt.StorageDType,
    overwrite: bool,
    quiet: bool,
) -> None:
    from mmcli.fusion.early import (
        PcaFitter,
        Projection,
        fuse_rows,
        parse_projection_spec,
        parse_weights,
        prepare_blocks,
        require_one_width,
    )
    from mmcli.io.atomic import check_writable
    from mmcli.io.features import FeatureSetWriter

    npy = _checked_npy(output, overwrite)
    weights = parse_weights(weights_text, len(paths))
    if weights is not None and method != "weighted":
        raise UsageError("--weights goes with --method weighted")
    if weights is None and method == "weighted":
        raise UsageError("--method weighted needs --weights, one per input (e.g. --weights 0.7,0.3)")
    if project and projection_path:
        raise UsageError("give --project to fit a PCA or --projection to reuse one, not both")
    if save_projection and not project:
        raise UsageError("--save-projection saves the PCA that --project pca:D fits")
    dims = parse_projection_spec(project) if project else None
    if save_projection is not None:
        check_writable(save_projection, overwrite=overwrite)
    aligned = _read_aligned(paths, by, strict, quiet)
    projection = Projection.load(projection_path) if projection_path else None
    if projection is not None:
        projection.check(aligned.widths, projection_path)  # type: ignore[arg-type]
    elif dims is None:
        require_one_width(aligned.widths, method)
    if dims is not None:
        fitter = PcaFitter(aligned.widths)
        with progress(len(aligned), quiet=quiet, unit="row", desc="fitting PCA") as bar:
            for _, blocks in aligned.chunks():
                fitter.add(prepare_blocks(blocks, normalize=normalize))
                bar.update(len(blocks[0]))
        projection = fitter.fit(dims)
        if save_projection is not None:
            projection.save(save_projection)
    with (
        FeatureSetWriter(npy, dtype=storage.value) as writer,
        progress(len(aligned), quiet=quiet, unit="row", desc="fusing") as bar,
    ):
        for start, blocks in aligned.chunks():
            fused = fuse_rows(blocks, method, weights=weights, normalize=normalize, projection=projection)
            writer.add(fused, aligned.records(start, start + len(fused)))
            bar.update(len(fused))
    note(f"fused {writer.count} rows of width {writer.dim} ({method}) into {npy}", quiet=quiet)


def _read_labels(path: Path, known: set[str]) -> dict[str, str]:
    from mmcli.io.jsonl import read_jsonl

    found: dict[str, str] = {}
    for number, record in read_jsonl(path, "labels file"):
        if "id" not in record or "label" not in record:
            raise InputError(f'{path}:{number}: expected {{"id", "label"}}, got keys {sorted(record)}')
        identifier, label = str(record["id"]), str(record["label"])
        if found.get(identifier, label) != label:
            raise InputError(f"{path}:{number}: id {identifier!r} is labelled both {found[identifier]!r} and {label!r}")
        found[identifier] = label
    if not found:
        raise InputError(f"labels file {path} holds no records")
    absent = [identifier for identifier in found if identifier not in known]
    if absent:
        shown = ", ".join(repr(identifier) for identifier in absent[:3])
        raise InputError(
            f"{len(absent)} of {len(found)} ids in {path} are not rows of every input feature set "
            f"(e.g. {shown}); labels must name rows that were fused"
        )
    return found


def _learned(
    paths: list[Path],
    method: str | None,
    labels_path: Path | None,
    head_path: Path | None,
    save_head_path: Path | None,
    predict: bool,
    settings: dict[str, Any],
    by: str,
    strict: bool,
    output: Path | None,
    storage: opt.StorageDType,
    overwrite: bool,
    quiet: bool,
) -> None:
    from mmcli.io.atomic import check_writable
    from mmcli.io.records import RecordWriter

    if labels_path is not None and head_path is not None:
        raise UsageError("give --labels to train a head or --head to apply one, not both")
    if method is not None and method not in LEARNED and labels_path is not None:
        raise UsageError(f"learned fusion methods are {', '.join(LEARNED)}; --method {method} is not one")
    if output is not None and predict:
        if output.suffix == ".npy":
            raise UsageError("--predict writes JSONL records; name the output .jsonl")
        check_writable(output, overwrite=overwrite)
    elif not predict:
        _checked_npy(output, overwrite)
    if save_head_path is not None:
        if head_path is not None:
            raise UsageError("--save-head saves a head trained with --labels")
    from mmcli.fusion.learned import TrainingOptions, check_inputs, head_files, load_head, save_head, train_head

    if save_head_path is not None:
        for path in head_files(save_head_path):
            check_writable(path, overwrite=overwrite)

    aligned = _read_aligned(paths, by, strict, quiet)
    blocks = aligned.blocks()
    if head_path is not None:
        trained = load_head(head_path)
        if method is not None and method != trained.config["method"]:
            raise UsageError(f"{head_path} is an {trained.config['method']} head; drop --method {method}")
        check_inputs(trained, blocks)
    else:
        assert labels_path is not None
        ids = aligned.ids
        labelled = _read_labels(labels_path, set(ids))
        rows = [row for row, identifier in enumerate(ids) if identifier in labelled]
        targets = [labelled[ids[row]] for row in rows]
        options = TrainingOptions(method=method or "attention", **settings)
        trained = train_head([block[rows] for block in blocks], targets, options, on_epoch=_epoch_printer(quiet))
        trained.config["inputs"] = [
            {"set": str(fs.path), "models": sorted(fs.models), "width": width}
            for fs, width in zip(aligned.sets, aligned.widths, strict=True)
        ]
        _summarise(trained, len(rows), quiet)
        if save_head_path is not None:
            written = save_head(trained, save_head_path)
            note(f"saved the head to {', '.join(map(str, written))}", quiet=quiet)
    if predict:
        predicted, scores = trained.predict(blocks)
        records = aligned.records()
        with RecordWriter(output, fmt="jsonl") as writer:
            for record, label, score in zip(records, predicted, scores.tolist(), strict=True):
                writer.write({"id": record["id"], "source": record["source"], "label": label, "score": round(score, 6)})
        return
    from mmcli.fusion.early import l2_normalize
    from mmcli.io.features import FeatureSetWriter

    embedded = trained.embed(blocks)
    if trained.config.get("normalize_inputs", True):  # fused rows are normalised when the inputs were
        embedded = l2_normalize(embedded)
    assert output is not None
    with FeatureSetWriter(output, dtype=storage.value) as writer:
        records = aligned.records()
        for record in records:
            record["model"] = [*record["model"], str(head_path or save_head_path or "fusion head")]
        writer.add(embedded, records)
    note(
        f"wrote {writer.count} fused rows of width {writer.dim} ({trained.config['method']} head) to {output}",
        quiet=quiet,
    )


def _epoch_printer(quiet: bool) -> Any:
    import sys

    def show(log: Any) -> None:
        if quiet:
            return
        line = f"epoch {log.epoch:4d}  train loss {log.train_loss:.4f} acc {log.train_accuracy:.3f}"
        if log.val_loss is not None:
            line += f"  val loss {log.val_loss:.4f} acc {log.val_accuracy:.3f}"
        print(line, file=sys.stderr, flush=True)

    return show


def _summarise(trained: Any, labelled: int, quiet: bool) -> None:
    history = trained.history
    if not history or quiet:
        return
    validated = [log for log in history if log.val_loss is not None]
    if validated:
        best = min(validated, key=lambda log: log.val_loss)
        note(
            f"{trained.config['method']} head on {labelled} labelled rows: best validation loss {best.val_loss:.4f}, "
            f"accuracy {best.val_accuracy:.3f} at epoch {best.epoch} of {len(history)}"
        )
    else:
        last = history[-1]
        note(
            f"{trained.config['method']} head on {labelled} labelled rows: training accuracy "
            f"{last.train_accuracy:.3f} after {len(history)} epochs (no validation split)"
        )


def _late(
    paths: list[Path],
    method: str,
    weights_text: str | None,
    rrf_k: float,
    top_k: int | None,
    output: Path | None,
    overwrite: bool,
    quiet: bool,
) -> None:
    from mmcli.fusion.early import parse_weights
    from mmcli.fusion.late import fuse_results
    from mmcli.io.atomic import check_writable
    from mmcli.io.jsonl import read_jsonl
    from mmcli.io.records import RecordWriter

    if method not in LATE:
        raise UsageError(f"--results combines result lists with {', '.join(LATE)}; --method {method} is not one")
    if len(paths) < 2:
        raise UsageError("--results needs at least two result lists (retrieve or classify JSONL)")
    if output is not None:
        check_writable(output, overwrite=overwrite)
    runs = [[record for _, record in read_jsonl(path, "result list")] for path in paths]
    weights = parse_weights(weights_text, len(paths))
    fused, report = fuse_results(runs, method, weights=weights, rrf_k=rrf_k, top_k=top_k, names=[str(p) for p in paths])
    with RecordWriter(output, fmt="jsonl") as writer:
        for record in fused:
            writer.write(record)
    message = f"fused {report.queries} {report.kind} records from {len(paths)} lists ({method})"
    if report.partial:
        message += f"; {report.partial} were missing from some lists"
    if report.skipped_errors:
        message += f"; {report.skipped_errors} error records skipped"
    note(message, quiet=quiet)

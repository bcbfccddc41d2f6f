"""``mmcli classify``: zero-shot image classification with a dual-tower model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmcli.cli import options as opt
from mmcli.cli.common import EXIT_ITEMS_FAILED, CommandReporter, note, quiet_libraries, reports_errors
from mmcli.errors import InputError, UsageError

EXAMPLES = """\
Examples:

  mmcli classify photos/ --labels cat,dog,rocket

  mmcli classify photos/ --labels-file labels.txt --template "a photo of a {}." --template "a drawing of a {}."

  mmcli classify --features photos.npy --labels cat,dog --top 1 | jq -r '[.id, .label] | @tsv'
"""


@reports_errors
def classify(
    inputs: opt.Inputs = None,
    labels: Annotated[str | None, typer.Option(help="Comma-separated class labels.", show_default=False)] = None,
    labels_file: Annotated[
        Path | None, typer.Option(help="Class labels, one per line.", show_default=False, dir_okay=False)
    ] = None,
    template: Annotated[
        list[str] | None,
        typer.Option(
            help='Prompt template with {} for the label (repeatable; averaged) \\[default: "a photo of a {}."].',
            show_default=False,
        ),
    ] = None,
    features: Annotated[
        Path | None,
        typer.Option(
            help="Classify the rows of this image feature set instead of decoding images.",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
    top: Annotated[
        int | None, typer.Option(min=1, help="Keep only the best K labels in scores.", show_default=False)
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write JSONL here instead of stdout.", dir_okay=False)
    ] = None,
    model: opt.EncoderModel = opt.DEFAULT_ENCODER,
    batch_size: opt.BatchSize = None,
    workers: opt.Workers = None,
    device: opt.DeviceOption = opt.Device.auto,
    dtype: opt.DTypeOption = opt.DType.auto,
    quantize: opt.QuantizeOption = None,
    max_pixels: opt.MaxPixels = 178_956_970,
    exact_decode: opt.ExactDecode = False,
    on_error: opt.OnErrorOption = opt.OnError.skip,
    overwrite: opt.Overwrite = False,
    trust_remote_code: opt.TrustRemoteCode = False,
    quiet: opt.Quiet = False,
) -> None:
    """Zero-shot classify images: one {"id", "source", "label", "score", "scores"} record per image."""
    from mmcli.engine import report_failures, require_inputs, with_total
    from mmcli.io.atomic import check_writable
    from mmcli.io.inputs import discover_images

    inputs = inputs or []
    label_list = _labels(labels, labels_file)
    if features is None:
        require_inputs(inputs, hint="give image files or folders, - for stdin, or --features FEATS.npy")
    elif inputs:
        raise UsageError("give images or --features, not both")
    if output is not None:
        check_writable(output, overwrite=overwrite)
    items = None
    if features is None:
        items, _ = with_total(discover_images(inputs), inputs, what="images")

    quiet_libraries()
    from mmcli.classify import DEFAULT_TEMPLATES, class_embeddings, prediction, probabilities
    from mmcli.encoders import load_encoder
    from mmcli.extract import embed_items
    from mmcli.io.features import read_feature_set
    from mmcli.io.records import RecordWriter

    feature_set = read_feature_set(features) if features is not None else None
    if feature_set is not None and feature_set.fused:
        raise UsageError(
            f"{features} holds fused rows, which live in no single model's space: labels cannot be embedded "
            "into it; train a head on them instead (mmcli fuse --labels ... --predict)"
        )
    if feature_set is not None and model == opt.DEFAULT_ENCODER:
        models = feature_set.models
        model = models.pop() if len(models) == 1 else model
    encoder = load_encoder(model, **opt.model_loading(device, dtype, quantize, trust_remote_code))
    batch_size = batch_size or encoder.default_batch_size
    for needed in ("image", "text"):
        if not encoder.supports(needed):
            raise UsageError(
                f"model {model!r} does not embed {needed}s; zero-shot classification needs a "
                "dual-tower image-text model (CLIP, SigLIP, ...)"
            )
    classes = class_embeddings(encoder, label_list, template or DEFAULT_TEMPLATES)

    failed = 0
    with RecordWriter(output, fmt="jsonl") as writer:
        if feature_set is not None:
            if feature_set.vectors.shape[1] != classes.embeddings.shape[1]:
                raise InputError(
                    f"{features} rows have {feature_set.vectors.shape[1]} dimensions but {model!r} "
                    f"embeds {classes.embeddings.shape[1]}; pass the model that made them with --model"
                )
            probs = probabilities(feature_set.vectors, classes)
            for record, row in zip(feature_set.records, probs, strict=True):
                writer.write(
                    {"id": record["id"], "source": record.get("source"), **prediction(row, classes.labels, top)}
                )
        else:
            for batch in embed_items(
                items, encoder, batch_size=batch_size, workers=workers, max_pixels=max_pixels, exact_decode=exact_decode
            ):
                good = [outcome for outcome in batch if outcome.error is None]
                rows = iter(probabilities([o.value for o in good], classes)) if good else iter(())
                for outcome in batch:
                    if outcome.error is None:
                        scores = prediction(next(rows), classes.labels, top)
                        writer.write(outcome.item.record(modality=False, source=outcome.item.source, **scores))
                    else:
                        failed += 1
                        writer.flush()
                        report_failures([outcome], writer.write, on_error.value, CommandReporter(quiet=False), "")
                writer.flush()
    note(f"classified into {len(classes.labels)} labels" + (f"; {failed} failed" if failed else ""), quiet=quiet)
    if failed:
        raise typer.Exit(EXIT_ITEMS_FAILED)


def _labels(labels: str | None, labels_file: Path | None) -> list[str]:
    found = [label.strip() for label in (labels or "").split(",") if label.strip()]
    if labels_file is not None:
        try:
            found += [line.strip() for line in labels_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        except OSError as exc:
            raise UsageError(f"{labels_file}: cannot read ({exc.strerror})") from None
    if not found:
        raise UsageError("no labels: give --labels a,b,c or --labels-file FILE")
    return found

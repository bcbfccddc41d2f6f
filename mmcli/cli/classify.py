"""``mmcli classify``: zero-shot image classification with a dual-tower model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmcli.cli import options as opt
from mmcli.cli.common import EXIT_ITEMS_FAILED, CommandReporter, note, quiet_libraries, reports_errors
from mmcli.errors import UsageError

EXAMPLES = """\
Examples:

  mmcli classify photos/ --labels cat,dog,rocket

  mmcli classify photos/ --labels-file labels.txt --template "a photo of a {}." --template "a drawing of a {}."

  mmcli classify --features photos.npy --labels cat,dog --top-k 1 | jq -r '[.id, .label] | @tsv'
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
            help="Prompt template with {} for the label (repeatable; averaged) "
            '\\[default: the model\'s own, else "a photo of a {}."; CLAP: "This is a sound of {}."].',
            show_default=False,
        ),
    ] = None,
    features: Annotated[
        Path | None,
        typer.Option(
            help="Classify the rows of this image feature set (.npy, or a sharded DIR/) instead of decoding images.",
            show_default=False,
        ),
    ] = None,
    top: Annotated[
        int | None,
        typer.Option(
            "--top-k", "-k", "--top", min=1, help="Keep only the best K labels in scores.", show_default=False
        ),
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
    """Zero-shot classify images, or recordings with an audio-text model (CLAP): one {"id", "source",
    "label", "score", "scores"} record per input."""
    from mmcli.engine import require_inputs, with_total
    from mmcli.io.inputs import discover_images
    from mmcli.output.destination import check_writable
    from mmcli.output.sinks import RecordSink

    inputs = inputs or []
    label_list = _labels(labels, labels_file)
    if features is None:
        require_inputs(inputs, hint="give image or audio files or folders, - for stdin, or --features FEATS.npy")
    elif inputs:
        raise UsageError("give images or --features, not both")
    if output is not None:
        check_writable(output, overwrite=overwrite)
    items = None
    if features is None:
        from mmcli.encoders import input_modality

        audio = input_modality(model, trust_remote_code=trust_remote_code) == "audio"
        found = discover_images(inputs, audio=audio)
        items, _ = with_total(found, inputs, what="recordings" if audio else "images")

    quiet_libraries()
    from mmcli.classify import classify_features, classify_items, zero_shot
    from mmcli.output.feature_set import read_feature_set
    from mmcli.output.records import RecordWriter

    feature_set = read_feature_set(features) if features is not None else None
    encoder, classes = zero_shot(
        None if model == opt.DEFAULT_ENCODER else model,
        label_list,
        template or None,
        feature_set=feature_set,
        **opt.model_loading(device, dtype, quantize, trust_remote_code),
    )
    failed = 0
    with RecordSink(RecordWriter(output, fmt="jsonl"), manifest=False) as sink:
        if feature_set is not None:
            for record in classify_features(feature_set, classes, top):
                sink.writer.write(record)
        else:
            batches = classify_items(items, encoder, classes, top=top, batch_size=batch_size, workers=workers,
                                     max_pixels=max_pixels, exact_decode=exact_decode)  # fmt: skip
            for batch in batches:
                failed += sink.write(batch, on_error.value, CommandReporter(quiet=quiet, bars=False), "")
    note(f"classified into {len(classes.labels)} labels" + (f"; {failed} failed" if failed else ""), quiet=quiet)
    if failed:
        raise typer.Exit(EXIT_ITEMS_FAILED)


def _labels(labels: str | None, labels_file: Path | None) -> list[str]:
    """--labels a,b,c and the lines of --labels-file, in that order."""
    found = [label.strip() for label in (labels or "").split(",") if label.strip()]
    if labels_file is not None:
        from mmcli.classify import read_label_file

        found += read_label_file(labels_file)
    if not found:
        raise UsageError("no labels: give --labels a,b,c or --labels-file FILE")
    return found

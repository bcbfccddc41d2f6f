"""``mmcli classify``: zero-shot classification with a dual-tower model, or a classifier's own labels."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mmcli.cli import options as opt
from mmcli.cli.common import EXIT_ITEMS_FAILED, CommandReporter, counted, note, quiet_libraries, reports_errors

EXAMPLES = """\
Examples:

  mmcli classify photos/ --labels cat,dog,rocket

  mmcli classify photos/ --labels-file labels.txt --template "a photo of a {}." --template "a drawing of a {}."

  mmcli classify --features photos.npy --labels cat,dog --top-k 1 | jq -r '[.id, .label] | @tsv'

  mmcli classify photos/ --model timm/convnext_tiny.fb_in1k --top-k 5   # a classifier's own labels
"""


@reports_errors
def classify(
    inputs: opt.Inputs = None,
    labels: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated class labels (zero-shot). Leave out with a classification checkpoint "
            "(--model) to classify into its own labels.",
            show_default=False,
        ),
    ] = None,
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
    output: opt.RecordsOutput = None,
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
    restart: opt.Restart = False,
    update: Annotated[
        bool,
        typer.Option(
            help="Bring an existing -o JSONL up to date: classify only new or changed files, drop vanished ones."
        ),
    ] = False,
    keep_missing: opt.KeepMissing = False,
    trust_remote_code: opt.TrustRemoteCode = False,
    quiet: opt.Quiet = False,
) -> None:
    """Classify images, videos or recordings: one {"id", "source", "label", "score", "scores"} record each.

    Zero-shot into --labels with an image-text or audio-text model (CLIP, SigLIP, CLAP), or, without
    --labels, with a classification checkpoint (an ImageNet, Kinetics or AudioSet classifier, a timm or
    torchvision classifier) into its own labels.

    With -o, progress is kept in OUT.partial/ as the run goes: if it is interrupted (even killed),
    the same command resumes where it stopped and gives exactly the output of an uninterrupted run.
    """
    flags = dict(locals())  # the shared run options go to the library as they are
    from mmcli.classify import classify_files

    label_list = _labels(labels, labels_file)
    quiet_libraries()
    # Records on a terminal are progress enough; a bar would tangle with them.
    bars = not quiet and not (output is None and sys.stdout.isatty())
    result = classify_files(
        inputs or [],
        output,
        labels=label_list,
        templates=template or None,
        features=features,
        model=None if model == opt.DEFAULT_ENCODER else model,
        top=top,
        stream=sys.stdout if output is None else None,
        **opt.run_flags(flags),
        reporter=CommandReporter(quiet=quiet, bars=bars),
    )
    stats = result.stats
    if stats.update:
        line = (
            f"updated {output}: {stats.kept} inputs kept ({stats.moved} recognised by content), "
            f"{stats.processed} classified, {stats.dropped} dropped"
        )
        if stats.kept_missing:
            line += f", {stats.kept_missing} records of vanished files kept"
    else:
        line = f"classified {counted(result.classified, 'input')} into {counted(result.labels, 'label')}"
    note(line + (f"; {stats.failed} failed" if stats.failed else ""), quiet=quiet)
    if stats.failed:
        raise typer.Exit(EXIT_ITEMS_FAILED)


def _labels(labels: str | None, labels_file: Path | None) -> list[str]:
    """--labels a,b,c and the lines of --labels-file, in that order; none: a classification
    checkpoint's own."""
    found = [label.strip() for label in (labels or "").split(",") if label.strip()]
    if labels_file is not None:
        from mmcli.classify import read_label_file

        found += read_label_file(labels_file)
    return found

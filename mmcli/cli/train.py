"""``mmcli train caption``: fine-tune a captioner on image-caption pairs."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from mmcli.cli import options as opt
from mmcli.cli.common import Command, CommandReporter, Group, note, reports_errors

EXAMPLES = """\
Examples:

  mmcli train caption --train pairs.jsonl -o my-captioner/

  mmcli train caption --train train.jsonl --val val.jsonl --epochs 10 --patience 3 -o my-captioner/

  mmcli train caption --train 'shards/{000..009}.tar' --freeze-vision --lr 1e-5 -o my-captioner/

  mmcli train caption --train pairs.jsonl --model Salesforce/blip2-opt-2.7b --lora-rank 16 -o my-blip2/

  mmcli caption photos/ --model my-captioner/
"""

app = typer.Typer(cls=Group, help="Fine-tune models on your own data.", no_args_is_help=True)

DATA = "Data"
SCHEDULE = "Optimisation"
CHECKPOINTS = "Checkpoints"


@app.command("caption", cls=Command, epilog=EXAMPLES)
@reports_errors
def caption(
    train: opt.in_panel(
        DATA,
        str,
        "Training pairs: JSONL of {path, caption} or {path, captions: [...]} records (- for stdin; "
        "relative paths from here, else from the file's folder), or webdataset shards / Parquet tables "
        "with captions.",
        show_default=False,
    ),
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            help="Folder the best checkpoint is saved in (with train_log.jsonl and "
            "curves.png); the same command resumes an interrupted run there.",
            show_default=False,
        ),
    ],
    val: opt.in_panel(
        DATA,
        str | None,
        "Validation pairs, as --train \\[default: --val-fraction of --train, held out].",
        show_default=False,
    ) = None,
    val_fraction: opt.in_panel(
        DATA, float, "Share of --train held out for validation when no --val is given (seeded)."
    ) = 0.1,
    model: opt.CaptionerModel = opt.DEFAULT_CAPTIONER,
    image_column: opt.ImageColumn = None,
    text_column: opt.CaptionColumn = None,
    id_column: opt.IdColumn = None,
    epochs: opt.in_panel(SCHEDULE, int, "Passes over the training pairs.", min=1) = 3,
    batch_size: opt.in_panel(SCHEDULE, int, "Pairs per forward pass.", "--batch-size", "-b", min=1) = 16,
    lr: opt.in_panel(SCHEDULE, float, "Peak learning rate (AdamW).", min=0.0) = 5e-5,
    grad_accum: opt.in_panel(SCHEDULE, int, "Batches whose gradients add up to one optimiser step.", min=1) = 1,
    warmup: opt.in_panel(
        SCHEDULE,
        float,
        "Share of the steps spent warming the learning rate up, before its cosine decay.",
        min=0.0,
        max=0.99,
    ) = 0.1,
    weight_decay: opt.in_panel(SCHEDULE, float, "AdamW weight decay (not on biases and norms).", min=0.0) = 0.01,
    freeze_vision: opt.in_panel(
        SCHEDULE, bool, "Train the text decoder only; the vision tower keeps its weights."
    ) = False,
    lora_rank: opt.in_panel(
        SCHEDULE,
        int | None,
        "Train LoRA adapters of this rank on the language model instead of every weight "
        "(needs peft; required for BLIP-2 and chat models).",
        min=1,
        show_default=False,
    ) = None,
    max_length: opt.in_panel(
        SCHEDULE, int, "Tokens per caption, start and end included (longer ones are cut).", min=3
    ) = 40,
    seed: opt.in_panel(SCHEDULE, int, "Seed of the split, the order and the initial state.") = 0,
    patience: opt.in_panel(
        CHECKPOINTS, int, "Stop after this many epochs without a better validation CIDEr-D (0: never).", min=0
    ) = 0,
    max_new_tokens: opt.in_panel(CHECKPOINTS, int, "Length limit of the validation captions.", min=1) = 30,
    save_every: opt.in_panel(
        CHECKPOINTS, int, "Optimiser steps between resumable checkpoints (also at each epoch's end).", min=1
    ) = 200,
    max_pixels: opt.MaxPixels = 178_956_970,
    device: opt.DeviceOption = opt.Device.auto,
    dtype: opt.DTypeOption = opt.DType.auto,
    trust_remote_code: opt.TrustRemoteCode = False,
    overwrite: Annotated[bool, typer.Option(help="Train again into a folder that holds a trained model.")] = False,
    restart: Annotated[
        bool, typer.Option(help="Discard an interrupted run's checkpoint instead of resuming it.")
    ] = False,
    quiet: opt.Quiet = False,
) -> None:
    """Fine-tune a captioner (BLIP, GIT, vision encoder-decoder; BLIP-2 and chat VLMs through LoRA) on pairs.

    Each epoch is scored on the validation pairs (loss, and CIDEr-D of greedy captions); the best
    epoch's weights are saved in OUTPUT with the processor, so `mmcli caption --model OUTPUT` (and
    every other command) loads it like a hub model. Unreadable images are skipped and counted.
    """
    from mmcli.io.parquet import Columns
    from mmcli.train.caption import TrainOptions, train_captioner

    options = TrainOptions(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        grad_accum=grad_accum,
        warmup=warmup,
        weight_decay=weight_decay,
        freeze_vision=freeze_vision,
        lora_rank=lora_rank,
        seed=seed,
        patience=patience,
        val_fraction=val_fraction,
        max_length=max_length,
        max_new_tokens=max_new_tokens,
        save_every=save_every,
        max_pixels=max_pixels,
    )
    reporter = CommandReporter(quiet=quiet)
    result = train_captioner(
        train,
        output,
        model=model,
        val=val,
        columns=Columns(image_column, text_column, id_column),
        options=options,
        device=device.value,
        dtype=dtype.value,
        trust_remote_code=trust_remote_code,
        overwrite=overwrite,
        restart=restart,
        reporter=reporter,
        stdin=sys.stdin,
    )
    skipped = f"; {result.skipped} skipped" if result.skipped else ""
    note(
        f"trained {result.family} on {result.train_pairs} pairs ({result.val_pairs} for validation{skipped}): "
        f"{result.steps} steps, {result.epochs} epochs in {result.seconds:.0f} s; validation CIDEr-D "
        f"{result.untrained_cider:.3f} untrained, {result.best_cider:.3f} best (epoch {result.best_epoch}), "
        f"saved in {result.output}",
        quiet=quiet,
    )

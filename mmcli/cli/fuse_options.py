"""The flags of ``mmcli fuse`` (typer ``Annotated`` aliases), kept apart so the command reads as what it does."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from mmcli.cli import options as opt
from mmcli.fusion import EARLY_METHODS, HEAD_METHODS, LATE_METHODS

TRAINING = "Learned fusion"
LATE_PANEL = "Late fusion"

Method = Enum(
    "Method", {name: name for name in dict.fromkeys((*EARLY_METHODS, *HEAD_METHODS, *LATE_METHODS))}, type=str
)


class Align(str, Enum):
    id = "id"
    row = "row"


Inputs = Annotated[
    list[Path] | None,
    typer.Argument(
        help="Feature sets (.npy with .jsonl sidecars, or sharded DIR/s), or with --results the retrieve/classify "
        "JSONL to combine.",
        show_default=False,
    ),
]
MethodOption = Annotated[
    Method | None,
    typer.Option(
        "--method",
        help="Early: concat, mean, weighted, max. Learned: attention, gated, mlp. "
        "Late (--results): rrf, weighted, max, borda. \\[default: concat; rrf with --results; "
        "attention with --truth]",
        show_default=False,
    ),
]
Output = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        help="Fused feature set (.npy, sidecar beside it); with --predict or --results, JSONL \\[default: stdout].",
        show_default=False,
        dir_okay=False,
    ),
]
AlignOption = Annotated[Align, typer.Option(help="Match rows by id (inner join) or by position.")]
Strict = Annotated[bool, typer.Option(help="Any id not present in every input is an error.")]
Weights = Annotated[
    str | None,
    typer.Option(help="Per-input weights for --method weighted (or late fusion), e.g. 0.7,0.3.", show_default=False),
]
Normalize = Annotated[bool, typer.Option(help="L2-normalise each input block and the fused rows.")]
Project = Annotated[
    str | None, typer.Option(help="Fit a PCA per input to this width first: pca:D.", show_default=False)
]
SaveProjection = Annotated[
    Path | None, typer.Option(help="Save the fitted PCA here (.safetensors).", show_default=False, dir_okay=False)
]
ProjectionOption = Annotated[
    Path | None, typer.Option(help="Apply a PCA saved by --save-projection instead of fitting one.", show_default=False)
]
Labels = Annotated[
    Path | None,
    typer.Option(
        "--truth",
        "--labels",
        help='Train a head on these true labels: {"id", "label"} JSONL records.',
        show_default=False,
        rich_help_panel=TRAINING,
    ),
]
Head = Annotated[
    Path | None, typer.Option(help="Apply a head saved by --save-head.", show_default=False, rich_help_panel=TRAINING)
]
SaveHead = Annotated[
    Path | None,
    typer.Option(
        help="Save the trained head (HEAD.safetensors + HEAD.json).", show_default=False, rich_help_panel=TRAINING
    ),
]
Predict = Annotated[
    bool,
    typer.Option(help='Write {"id", "label", "score"} predictions instead of fused rows.', rich_help_panel=TRAINING),
]
Epochs = Annotated[int, typer.Option(min=1, help="Most training epochs.", rich_help_panel=TRAINING)]
Lr = Annotated[float, typer.Option(min=0.0, help="AdamW learning rate.", rich_help_panel=TRAINING)]
Hidden = Annotated[
    int, typer.Option(min=1, help="Width of the head's layers and of its fused rows.", rich_help_panel=TRAINING)
]
BatchSize = Annotated[
    int,
    typer.Option("--train-batch-size", "--batch-size", min=1, help="Rows per training step.", rich_help_panel=TRAINING),
]
ValFraction = Annotated[
    float, typer.Option(min=0.0, max=0.9, help="Labelled rows held out for validation.", rich_help_panel=TRAINING)
]
Patience = Annotated[
    int,
    typer.Option(min=1, help="Stop after this many epochs without a better validation loss.", rich_help_panel=TRAINING),
]
Seed = Annotated[int, typer.Option(help="Seed for the split, initialisation and shuffling.", rich_help_panel=TRAINING)]
Results = Annotated[
    bool,
    typer.Option(
        "--results", help="Inputs are retrieve/classify JSONL result lists to combine.", rich_help_panel=LATE_PANEL
    ),
]
RrfK = Annotated[float, typer.Option(help="RRF constant k (> 0).", rich_help_panel=LATE_PANEL)]
TopK = Annotated[
    int | None,
    typer.Option(
        "--top-k",
        "-k",
        min=1,
        help="Keep this many fused hits per query \\[default: all].",
        show_default=False,
        rich_help_panel=LATE_PANEL,
    ),
]
Storage = Annotated[opt.StorageDType, typer.Option("--output-dtype", "--storage", help="Dtype of the written matrix.")]

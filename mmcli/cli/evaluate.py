"""``mmcli evaluate``: caption, retrieval, classification and detection metrics from the files mmcli writes."""

from __future__ import annotations

import typer

from mmcli.cli.common import Command, Group
from mmcli.cli.evaluate_captions import EXAMPLES as CAPTION_EXAMPLES
from mmcli.cli.evaluate_captions import captions
from mmcli.cli.evaluate_classification import EXAMPLES as CLASSIFICATION_EXAMPLES
from mmcli.cli.evaluate_classification import classification
from mmcli.cli.evaluate_detection import EXAMPLES as DETECTION_EXAMPLES
from mmcli.cli.evaluate_detection import detection
from mmcli.cli.evaluate_retrieval import EXAMPLES as RETRIEVAL_EXAMPLES
from mmcli.cli.evaluate_retrieval import retrieval

app = typer.Typer(
    cls=Group,
    help="Score captions (BLEU, ROUGE-L, CIDEr-D, METEOR, CLIPScore), retrieval runs, classifications and detections.",
    no_args_is_help=True,
)
app.command("captions", cls=Command, epilog=CAPTION_EXAMPLES)(captions)
app.command("retrieval", cls=Command, epilog=RETRIEVAL_EXAMPLES)(retrieval)
app.command("classification", cls=Command, epilog=CLASSIFICATION_EXAMPLES)(classification)
app.command("detection", cls=Command, epilog=DETECTION_EXAMPLES)(detection)

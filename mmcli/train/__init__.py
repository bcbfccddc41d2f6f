"""Training: fine-tune captioners on image-caption pairs (``mmcli train caption``)."""

from __future__ import annotations

from mmcli.train.caption import TrainOptions, TrainResult, read_log, train_captioner

__all__ = ["TrainOptions", "TrainResult", "read_log", "train_captioner"]

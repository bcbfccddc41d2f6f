"""The speech recognition families' registry, declared without their code (see
:mod:`mmcli.encoders.families`): deciding that a checkpoint is Whisper imports no torch."""

from __future__ import annotations

from typing import Any

from mmcli.registry import Registry

TRANSCRIBERS = Registry("speech recognition")


def _is_whisper(config: Any) -> bool:
    return getattr(config, "num_mel_bins", None) is not None and getattr(config, "decoder_layers", None) is not None


TRANSCRIBERS.declare(
    "whisper",
    description="Whisper-family speech recognition (transcripts with timestamps)",
    model_types=("whisper",),
    accepts=_is_whisper,
    reads="audio",
    loader="mmcli.speech:load_whisper",
)

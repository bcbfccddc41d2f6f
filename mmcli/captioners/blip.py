"""BLIP (``BlipForConditionalGeneration``): unconditional, or continuing a text prefix."""

from __future__ import annotations

from typing import Any

from mmcli.captioners.base import Captioner
from mmcli.speedups import fuse_vision_attention


class BlipCaptioner(Captioner):
    family = "blip"


def load_blip(
    name: str, path: str, config: Any, *, device: str, dtype: Any, trust_remote_code: bool = False
) -> BlipCaptioner:
    captioner = BlipCaptioner.from_checkpoint(
        name, path, "BlipForConditionalGeneration", device=device, dtype=dtype, trust_remote_code=trust_remote_code
    )
    fuse_vision_attention(captioner.model)
    return captioner

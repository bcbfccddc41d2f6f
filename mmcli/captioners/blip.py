"""BLIP (``BlipForConditionalGeneration``): unconditional, or continuing a text prefix."""

from __future__ import annotations

from typing import Any

from mmcli.captioners.base import Captioner
from mmcli.captioners.registry import register_captioner
from mmcli.loading import from_pretrained
from mmcli.speedups import fuse_vision_attention


class BlipCaptioner(Captioner):
    family = "blip"


@register_captioner("blip", description="BLIP image captioning (optional text prefix)", model_types=("blip",))
def load_blip(
    name: str, path: str, config: Any, *, device: str, dtype: Any, trust_remote_code: bool = False
) -> BlipCaptioner:
    model = from_pretrained(
        "BlipForConditionalGeneration", name, path, dtype=dtype, trust_remote_code=trust_remote_code, allow_missing=()
    )
    processor = from_pretrained(
        "AutoProcessor", name, path, what="processor of model", trust_remote_code=trust_remote_code
    )
    captioner = BlipCaptioner(name, model, processor, device=device, dtype=dtype)
    fuse_vision_attention(captioner.model)
    return captioner

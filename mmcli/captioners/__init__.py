"""Captioning model families behind one :class:`Captioner` interface.

>>> captioner = load_captioner("Salesforce/blip-image-captioning-base")   # doctest: +SKIP
>>> captioner.generate([image])                                           # doctest: +SKIP
['a woman sitting on the beach with her dog']
"""

from __future__ import annotations

from typing import Any

# Families register on import, in this order (the order shape-based guesses are tried in).
from mmcli.captioners import blip, blip2, chat, florence2, git, vision_encoder_decoder  # noqa: F401
from mmcli.captioners.base import Captioner, GenerationOptions, clean_caption
from mmcli.captioners.registry import CAPTIONERS

DEFAULT_CAPTIONER = "Salesforce/blip-image-captioning-base"

__all__ = [
    "DEFAULT_CAPTIONER",
    "Captioner",
    "GenerationOptions",
    "clean_caption",
    "list_captioner_families",
    "load_captioner",
]


def load_captioner(
    name_or_path: str = DEFAULT_CAPTIONER,
    *,
    device: str = "auto",
    dtype: str = "auto",
    quantize: str | None = None,
    trust_remote_code: bool = False,
    **options: Any,
) -> Captioner:
    """Load a hub id or local checkpoint folder as a :class:`Captioner`, its family chosen from its config."""
    return CAPTIONERS.load(
        name_or_path, device=device, dtype=dtype, quantize=quantize, trust_remote_code=trust_remote_code, **options
    )


def list_captioner_families() -> list[dict[str, Any]]:
    """The registered families with the model types each claims."""
    return CAPTIONERS.describe()

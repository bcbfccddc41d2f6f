"""Captioning model families behind one :class:`Captioner` interface.

>>> captioner = load_captioner("Salesforce/blip-image-captioning-base")   # doctest: +SKIP
>>> captioner.generate([image])                                           # doctest: +SKIP
['a woman sitting on the beach with her dog']
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmcli.captioners.families import CAPTIONERS  # the families, declared; their code is imported on use

if TYPE_CHECKING:
    from mmcli.captioners.base import Captioner, GenerationOptions, clean_caption

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


def __getattr__(name: str) -> Any:
    """The torch side of the package (``Captioner``, ``GenerationOptions``, ``clean_caption``), imported
    when first asked for."""
    if name == "GenerationOptions":
        from mmcli.captioners.options import GenerationOptions

        return GenerationOptions
    if name in ("Captioner", "clean_caption"):
        from mmcli.captioners import base

        return getattr(base, name)
    raise AttributeError(f"module 'mmcli.captioners' has no attribute {name!r}")

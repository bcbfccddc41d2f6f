"""The core encoder package: one call turns a model name into an :class:`Encoder`.

>>> encoder = load_encoder("openai/clip-vit-base-patch32")          # doctest: +SKIP
>>> encoder.encode_texts(["a photo of a cat"]).shape                 # doctest: +SKIP
(1, 512)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmcli.encoders.families import ENCODERS  # the families, declared; their code is imported on use
from mmcli.registry import Traits

if TYPE_CHECKING:
    from mmcli.encoders.base import Encoder, batched

DEFAULT_MODEL = "openai/clip-vit-base-patch32"

__all__ = ["DEFAULT_MODEL", "Encoder", "batched", "input_modality", "list_encoder_families", "load_encoder"]


def load_encoder(
    name_or_path: str = DEFAULT_MODEL,
    *,
    device: str = "auto",
    dtype: str = "auto",
    quantize: str | None = None,
    trust_remote_code: bool = False,
    **options: Any,
) -> Encoder:
    """Load a hub id or local checkpoint folder as an :class:`Encoder`.

    The family is chosen from the checkpoint's config (``model_type``), never from its name; the
    checkpoint's own processor prepares inputs, so embeddings match the model's reference usage.
    """
    return ENCODERS.load(
        name_or_path, device=device, dtype=dtype, quantize=quantize, trust_remote_code=trust_remote_code, **options
    )


def model_traits(name_or_path: str, *, trust_remote_code: bool = False) -> Traits:
    """What the model reads files as and whether it takes videos whole, from its config only, so inputs
    and flags are checked before the weights load (the default model reads images, as frames)."""
    if name_or_path == DEFAULT_MODEL:
        return Traits()
    return ENCODERS.traits(name_or_path, trust_remote_code=trust_remote_code)


def input_modality(name_or_path: str, *, trust_remote_code: bool = False) -> str:
    """What files given to the model are read as, ``image`` or ``audio`` (CLAP), from its config only."""
    return model_traits(name_or_path, trust_remote_code=trust_remote_code).reads


def list_encoder_families() -> list[dict[str, Any]]:
    """The registered families with the model types each claims."""
    return ENCODERS.describe()


def __getattr__(name: str) -> Any:
    """``Encoder`` and ``batched`` come from the torch side of the package, imported when first asked for."""
    if name in ("Encoder", "batched"):
        from mmcli.encoders import base

        return getattr(base, name)
    raise AttributeError(f"module 'mmcli.encoders' has no attribute {name!r}")

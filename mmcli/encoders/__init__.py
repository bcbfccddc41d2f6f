"""The core encoder package: one call turns a model name into an :class:`Encoder`.

>>> encoder = load_encoder("openai/clip-vit-base-patch32")          # doctest: +SKIP
>>> encoder.encode_texts(["a photo of a cat"]).shape                 # doctest: +SKIP
(1, 512)
"""

from __future__ import annotations

import os
from typing import Any

from mmcli.encoders import dual_tower, text, vision  # noqa: F401  (families register on import)
from mmcli.encoders.base import Encoder, batched
from mmcli.encoders.registry import families, family_for
from mmcli.loading import load_config, resolve_device, resolve_dtype

DEFAULT_MODEL = "openai/clip-vit-base-patch32"

__all__ = ["DEFAULT_MODEL", "Encoder", "batched", "list_encoder_families", "load_encoder"]


def load_encoder(
    name_or_path: str = DEFAULT_MODEL,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    **options: Any,
) -> Encoder:
    """Load a hub id or local checkpoint folder as an :class:`Encoder`.

    The family is chosen from the checkpoint's config (``model_type``), never from its name; the
    checkpoint's own processor prepares inputs, so embeddings match the model's reference usage.
    """
    config = load_config(name_or_path, trust_remote_code=trust_remote_code)
    family = family_for(config, name_or_path)
    resolved_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, resolved_device)
    return family.load(
        name_or_path,
        os.path.expanduser(name_or_path),
        config,
        device=resolved_device,
        dtype=torch_dtype,
        trust_remote_code=trust_remote_code,
        **options,
    )


def list_encoder_families() -> list[dict[str, Any]]:
    """The registered families with the model types each claims (for ``mmcli models``)."""
    return [{"family": f.name, "description": f.description, "model_types": sorted(f.model_types)} for f in families()]

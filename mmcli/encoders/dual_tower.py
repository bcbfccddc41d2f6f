"""Dual-tower image-text models (CLIP, SigLIP, SigLIP 2, MetaCLIP 2, ...): one shared space."""

from __future__ import annotations

from typing import Any

import torch

from mmcli.encoders.base import Encoder, accepted_kwargs, features_tensor, text_max_length
from mmcli.speedups import fold_quick_gelu, fuse_vision_attention

# SigLIP towers were trained on texts padded to a fixed length; their reference usage pads so.
PAD_TO_MAX_LENGTH = frozenset({"siglip", "siglip2"})


class DualTowerEncoder(Encoder):
    family = "dual-tower"
    modalities = frozenset({"image", "text"})
    required_methods = ("get_image_features", "get_text_features")
    model_kind = "a dual-tower image-text model"

    def __init__(self, name: str, model: Any, processor: Any, config: Any, **kwargs: Any) -> None:
        super().__init__(name, model, processor, **kwargs)
        fold_quick_gelu(model)
        fuse_vision_attention(model)
        self.config = config
        text_config = getattr(config, "text_config", config)
        self.max_length = text_max_length(text_config, processor.tokenizer)
        self.padding: str | bool = "max_length" if config.model_type in PAD_TO_MAX_LENGTH else True

    def preprocess_image(self, image: Any) -> dict[str, torch.Tensor]:
        # The processor, not its image processor: processors such as SigLIP 2's add call defaults.
        return dict(self.processor(images=[image], return_tensors="pt"))

    def _image_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        get = self.model.get_image_features
        return features_tensor(get(**accepted_kwargs(get, inputs)))

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        tokens = self.processor(
            text=texts, padding=self.padding, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        get = self.model.get_text_features
        return features_tensor(get(**accepted_kwargs(get, self.to_device(dict(tokens)))))

    def _config_dim(self) -> int | None:
        dim = getattr(self.config, "projection_dim", None)
        if isinstance(dim, int) and hasattr(self.model, "text_projection"):
            return dim
        return None


def load_dual_tower(
    name: str, path: str, config: Any, *, device: str, dtype: Any, trust_remote_code: bool = False
) -> DualTowerEncoder:
    return DualTowerEncoder.from_checkpoint(
        name,
        path,
        "AutoModel",
        config=config,
        allow_missing=("pooler",),
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )

"""Image-only backbones through AutoModel (ViT, DINOv2, ConvNeXt, Swin, ResNet, ...)."""

from __future__ import annotations

from typing import Any

import torch

from mmcli.encoders.base import Encoder, config_labels, load_classifier
from mmcli.loading import from_pretrained

POOLING = ("auto", "cls", "mean", "pooler")


class VisionEncoder(Encoder):
    """Embeds an image as the backbone's pooled output or CLS token.

    ``auto`` takes ``pooler_output`` when it is parameter-free or a norm (DINOv2, ConvNeXt, Swin,
    ResNet), and the final CLS token when the pooler is a dense layer (ViT, DeiT): such poolers
    are often missing from checkpoints and would be randomly initialised.
    """

    family = "vision"
    modalities = frozenset({"image"})

    def __init__(
        self, name: str, model: Any, image_processor: Any, config: Any, *, pooling: str = "auto", **kwargs: Any
    ) -> None:
        if pooling not in POOLING:
            raise ValueError(f"pooling must be one of {POOLING}")
        super().__init__(name, model, image_processor, **kwargs)
        self.config = config
        if pooling == "auto":
            pooler = getattr(model, "pooler", None)
            dense = pooler is not None and any(isinstance(m, torch.nn.Linear) for m in pooler.modules())
            pooling = "cls" if dense else "pooler"
        self.pooling = pooling

    @classmethod
    def load_processor(cls, name: str, path: str, *, trust_remote_code: bool) -> Any:
        """Backbone checkpoints ship an image processor, not a full ``AutoProcessor``."""
        return from_pretrained(
            "AutoImageProcessor", name, path, what="image processor of model", trust_remote_code=trust_remote_code
        )

    def preprocess_image(self, image: Any) -> dict[str, torch.Tensor]:
        return dict(self.processor(images=[image], return_tensors="pt"))

    def _image_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        output = self.model(pixel_values=inputs["pixel_values"])
        hidden = output.last_hidden_state
        if self.pooling == "pooler" and getattr(output, "pooler_output", None) is not None:
            return output.pooler_output.flatten(1)
        if hidden.dim() == 3:
            return hidden[:, 0] if self.pooling != "mean" else hidden.mean(dim=1)
        return hidden.mean(dim=(2, 3))  # convolutional feature map without a pooler

    def _config_dim(self) -> int | None:
        sizes = getattr(self.config, "hidden_sizes", None)
        if sizes and self.pooling == "pooler":
            return int(sizes[-1])
        size = getattr(self.config, "hidden_size", None)
        return int(size) if isinstance(size, int) and not sizes else None


class ImageClassifierEncoder(VisionEncoder):
    """A ``*ForImageClassification`` checkpoint with its classifier: each image's row is its logits."""

    def __init__(self, name: str, model: Any, image_processor: Any, config: Any, **kwargs: Any) -> None:
        super().__init__(name, model, image_processor, config, pooling="cls", **kwargs)
        self.labels, self.multi_label = config_labels(config)

    def _image_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(pixel_values=inputs["pixel_values"]).logits

    def _config_dim(self) -> int | None:
        return len(self.labels or ())


def load_vision(
    name: str,
    path: str,
    config: Any,
    *,
    device: str,
    dtype: Any,
    trust_remote_code: bool = False,
    pooling: str = "auto",
    head: bool = False,
) -> VisionEncoder:
    if head:
        return load_classifier(ImageClassifierEncoder, name, path, config, "ForImageClassification", device=device,
                               dtype=dtype, trust_remote_code=trust_remote_code)  # fmt: skip
    return VisionEncoder.from_checkpoint(
        name,
        path,
        "AutoModel",
        config=config,
        pooling=pooling,
        allow_missing=("pooler",),
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )

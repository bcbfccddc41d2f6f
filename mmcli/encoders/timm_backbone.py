"""timm image backbones: a model named as timm's hub layout has it (``timm/NAME``, or any repository or
local folder whose ``config.json`` names an ``architecture``), prepared by the transforms its
pretrained config resolves to (``timm.data.resolve_data_config`` then ``create_transform``).

The rows are the pooled features (the model made with ``num_classes=0``), as ``model(x)`` gives
them; see :mod:`mmcli.checkpoints` for how such a checkpoint is told from a transformers one.
"""

from __future__ import annotations

from typing import Any

import torch

from mmcli.checkpoints import LibraryConfig
from mmcli.encoders.base import Encoder
from mmcli.errors import ModelNotFound, UnsupportedModel, install_hint
from mmcli.loading import hub_call, quiet_root_logger
from mmcli.media.images import transforms_min_side


class TimmEncoder(Encoder):
    family = "timm"
    modalities = frozenset({"image"})

    def __init__(self, name: str, model: Any, transform: Any, **kwargs: Any) -> None:
        super().__init__(name, model, None, **kwargs)
        self.processor = transform  # a torchvision Compose: PIL image -> (C, H, W) tensor
        self.decode_min_side = transforms_min_side(transform)

    def preprocess_image(self, image: Any) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.processor(image).unsqueeze(0)}

    def _image_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(inputs["pixel_values"])

    def _config_dim(self) -> int | None:
        features = getattr(self.model, "num_features", None)
        return int(features) if isinstance(features, int) else None


def timm_model(name: str, config: LibraryConfig, **options: Any) -> tuple[Any, Any]:
    """``(model, evaluation transform)`` of a timm checkpoint, weights required (timm would start
    from random weights without them)."""
    try:
        import timm
        import timm.data
    except ImportError:
        raise ModelNotFound(f"timm models need timm: {install_hint('timm')}") from None

    def create() -> Any:
        try:
            with quiet_root_logger():
                return timm.create_model(config.source, pretrained=True, **options)
        except RuntimeError as exc:
            raise OSError(str(exc)) from exc

    model = hub_call(name, create)
    data_config = timm.data.resolve_data_config({}, model=model)
    return model, timm.data.create_transform(**data_config, is_training=False)


class TimmClassifierEncoder(TimmEncoder):
    """A timm classifier with its head: each image's row is its logits over ``labels``."""

    def __init__(self, name: str, model: Any, transform: Any, labels: list[str], **kwargs: Any) -> None:
        super().__init__(name, model, transform, **kwargs)
        self.labels = labels

    def _config_dim(self) -> int | None:
        return len(self.labels or ())


def timm_labels(model: Any, config: LibraryConfig) -> list[str]:
    """The class names the checkpoint ships (``label_names`` in its config or pretrained config), else
    ImageNet's where timm recognises its classes as an ImageNet subset, else the class indices."""
    classes = int(getattr(model, "num_classes", 0) or 0)
    for source in (config.settings, config.settings.get("pretrained_cfg") or {}, getattr(model, "pretrained_cfg", {})):
        names = source.get("label_names") if isinstance(source, dict) else None
        if isinstance(names, list) and len(names) == classes:
            return [str(name) for name in names]
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(model)
    if subset:
        info = ImageNetInfo(subset)
        return [info.index_to_description(index) for index in range(classes)]
    return [str(index) for index in range(classes)]


def load_timm(
    name: str,
    path: str,
    config: LibraryConfig,
    *,
    device: str,
    dtype: Any,
    trust_remote_code: bool = False,
    head: bool = False,
) -> TimmEncoder:
    if head:
        model, transform = timm_model(name, config)
        if not getattr(model, "num_classes", 0):
            raise UnsupportedModel(
                f"model {name!r} is a timm backbone without a classifier; give labels to classify into "
                "(zero-shot, with an image-text model)"
            )
        labels = timm_labels(model, config)
        return TimmClassifierEncoder(name, model.to(dtype=dtype), transform, labels, device=device, dtype=dtype)
    model, transform = timm_model(name, config, num_classes=0)
    return TimmEncoder(name, model.to(dtype=dtype), transform, device=device, dtype=dtype)

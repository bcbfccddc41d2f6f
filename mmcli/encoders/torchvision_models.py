"""torchvision models, named ``torchvision:NAME[:WEIGHTS]``: image classifiers' backbones (ResNet,
ConvNeXt, EfficientNet, ViT, Swin, ...) and video models (R3D, MC3, R(2+1)D, S3D, MViT, Swin3D).

The weights come from torch's own cache (``TORCH_HOME``, downloaded there once), and each input is
prepared by the weights' own ``transforms()``, as torchvision's documentation uses them. The rows are
the features the classifier reads (the model with its final classification layer removed), or with
``head`` the logits over the weights' categories.

A video model takes a video as consecutive clips of the length and frame rate its weights were
evaluated at (``clip_len`` and ``frame_rate`` in the weights' docs: 16 frames at 15 fps for the
Kinetics 3D ResNets); each clip is a row (with ``t`` and ``end``), pooled per video as image models'
frames are (see :func:`~mmcli.media.clips.expand_clip_series`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mmcli.checkpoints import LibraryConfig, torch_cache_file
from mmcli.encoders.base import TransformEncoder
from mmcli.errors import ModelNotFound, UnsupportedModel
from mmcli.media.clips import fill_clip


class TorchvisionEncoder(TransformEncoder):
    family = "torchvision"


class TorchvisionVideoEncoder(TorchvisionEncoder):
    """A video model: clips of ``clip_frames`` frames at ``clip_rate`` frames per second, each as the
    weights' transforms make it, (C, T, H, W); a still image is a clip of that image repeated."""

    modalities = frozenset({"video", "image"})

    def __init__(self, name: str, model: Any, transform: Any, clip_frames: int, clip_rate: float, **kwargs: Any):
        super().__init__(name, model, transform, **kwargs)
        self.clip_frames, self.clip_rate = clip_frames, clip_rate

    @property
    def default_batch_size(self) -> int:
        return max(1, super().default_batch_size // self.clip_frames)

    def preprocess_video(self, frames: Sequence[Any]) -> dict[str, torch.Tensor]:
        from torchvision.transforms.functional import pil_to_tensor

        clip = torch.stack([pil_to_tensor(frame.convert("RGB")) for frame in fill_clip(frames, self.clip_frames)])
        return {"pixel_values": self.processor(clip).unsqueeze(0)}

    def preprocess_image(self, image: Any) -> dict[str, torch.Tensor]:
        return self.preprocess_video([image])

    def _video_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(inputs["pixel_values"]).flatten(1)

    def _image_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._video_features(inputs)


def without_classifier(model: torch.nn.Module, classes: int) -> torch.nn.Module:
    """``model`` with its final classification layer (the last Linear or convolution, giving one output
    per category) replaced by the identity, so it outputs the features that layer reads."""
    layers = [(name, module) for name, module in model.named_modules()
              if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Conv3d))]  # fmt: skip
    name, last = layers[-1]
    outputs = last.out_features if isinstance(last, torch.nn.Linear) else last.out_channels
    if outputs != classes:
        raise UnsupportedModel(f"cannot tell {type(model).__name__}'s classification layer: its last layer "
                               f"{name} gives {outputs} outputs for {classes} categories")  # fmt: skip
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, torch.nn.Identity())
    return model


def load_torchvision(
    name: str,
    path: str,
    config: LibraryConfig,
    *,
    device: str,
    dtype: Any,
    trust_remote_code: bool = False,
    head: bool = False,
) -> TorchvisionEncoder:
    import torchvision.models as models

    weights = models.get_model_weights(config.source)[config.settings["weights"]]
    try:
        model = models.get_model(config.source, weights=weights, progress=False)
    except OSError as exc:  # not in the cache, and no network to download it
        cached = torch_cache_file(weights.url)
        raise ModelNotFound(
            f"the weights {weights.name} of torchvision's {config.source} are not in torch's cache ({cached}) "
            f"and cannot be downloaded ({exc}); download them once with network, or set TORCH_HOME to a "
            "cache that has them"
        ) from None
    categories = list(config.settings.get("categories") or [])
    if not head:
        model = without_classifier(model, len(categories))
    labels = categories if head else None
    model = model.eval().to(dtype=dtype)
    if config.settings.get("video"):
        return TorchvisionVideoEncoder(
            name, model, weights.transforms(), int(config.settings["clip_len"]), float(config.settings["frame_rate"]),
            labels=labels, device=device, dtype=dtype,
        )  # fmt: skip
    return TorchvisionEncoder(name, model, weights.transforms(), labels=labels, device=device, dtype=dtype)

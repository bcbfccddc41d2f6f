"""Tiny, randomly initialised checkpoints of models other libraries load (open_clip, timm), saved by
those libraries' own hub savers, so the layout is the one their hub repositories have."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from tiny_models import IMAGE_SIZE, tiny

# A ViT-B/32-shaped open_clip model at toy width: two layers a tower, 32-pixel images in 8-pixel
# patches, open_clip's own BPE tokenizer at a short context.
OPEN_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TIMM_ARCHITECTURE = "vit_tiny_patch16_224"
TIMM_ARGS = {"img_size": IMAGE_SIZE, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
TIMM_LABELS = ["tabby cat", "rocket", "astronaut", "coffee mug", "teapot"]


@tiny("open_clip")
def build_open_clip(folder: Path) -> Path:
    """As ``open_clip.push_to_hf_hub`` saves a model: ``open_clip_config.json`` and the weights."""
    import open_clip

    torch.manual_seed(31)
    model = open_clip.CLIP(**OPEN_CLIP_CONFIG).eval()
    with torch.no_grad():
        model.logit_scale.fill_(2.0)
    model.visual.image_mean, model.visual.image_std = (0.48, 0.45, 0.40), (0.26, 0.26, 0.27)
    folder.mkdir(parents=True)
    hub = importlib.import_module("open_clip.push_to_hf_hub")
    hub.save_for_hf(model, _BuiltInTokenizer(), OPEN_CLIP_CONFIG, folder, safe_serialization=True)
    return folder


class _BuiltInTokenizer:
    """The model reads open_clip's built-in BPE tokenizer (no ``hf_tokenizer_name``): no files to save."""

    def save_pretrained(self, folder: Path) -> None:
        pass


@tiny("timm")
def build_timm(folder: Path) -> Path:
    """As ``timm.models.push_to_hf_hub`` saves a model: ``config.json`` naming the architecture, its
    arguments, pretrained config and label names, and the weights (with a five-class head)."""
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(32)
    model = timm.create_model(TIMM_ARCHITECTURE, pretrained=False, num_classes=len(TIMM_LABELS), **TIMM_ARGS).eval()
    with torch.no_grad():
        model.head.weight.mul_(20)  # probabilities that are not all alike
    save_for_hf(model, str(folder), model_config={"label_names": TIMM_LABELS}, model_args=TIMM_ARGS,
                safe_serialization=True)  # fmt: skip
    return folder


TORCHVISION_MODELS = ("resnet18", "mc3_18")  # an image CNN and a Kinetics 3D CNN (16-frame clips at 15 fps)


@tiny("torchvision")
def build_torchvision(folder: Path) -> Path:
    """A ``TORCH_HOME`` whose hub cache holds randomly initialised weights of real torchvision models,
    under the file names torchvision downloads their default weights as."""
    import os

    import torchvision.models as models

    checkpoints = folder / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for seed, name in enumerate(TORCHVISION_MODELS):
        weights = models.get_model_weights(name).DEFAULT
        torch.manual_seed(40 + seed)
        model = models.get_model(name, weights=None, num_classes=len(weights.meta["categories"])).eval()
        torch.save(model.state_dict(), checkpoints / os.path.basename(weights.url))
    return folder

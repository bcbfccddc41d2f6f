"""mmcli: multimodal models from the shell.

The library is importable on its own; heavy dependencies (torch, transformers) load only when a
name that needs them is first used, so ``import mmcli`` and ``mmcli --help`` stay fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_encoder": "mmcli.encoders",
    "Encoder": "mmcli.encoders",
    "list_encoder_families": "mmcli.encoders",
    "load_captioner": "mmcli.captioners",
    "Captioner": "mmcli.captioners",
    "GenerationOptions": "mmcli.captioners",
    "caption_items": "mmcli.caption",
    "read_feature_set": "mmcli.io.features",
    "FeatureSet": "mmcli.io.features",
    "FeatureSetWriter": "mmcli.io.features",
    "load_image": "mmcli.media.images",
    "discover_images": "mmcli.io.inputs",
    "discover_texts": "mmcli.io.inputs",
    "embed_items": "mmcli.extract",
    "search": "mmcli.retrieval",
    "index_feature_set": "mmcli.ann",
    "zero_shot": "mmcli.classify",
    "classify_items": "mmcli.classify",
    "classify_features": "mmcli.classify",
    "align": "mmcli.fusion.align",
    "fuse_rows": "mmcli.fusion.early",
    "train_head": "mmcli.fusion.learned",
    "load_head": "mmcli.fusion.learned",
    "fuse_results": "mmcli.fusion.late",
    "fuse_sets": "mmcli.fusion.run",
    "train_fusion": "mmcli.fusion.run",
    "apply_fusion_head": "mmcli.fusion.run",
    "fuse_result_files": "mmcli.fusion.run",
    "evaluate_captions": "mmcli.metrics.captions",
    "evaluate_rankings": "mmcli.metrics.retrieval",
    "evaluate_classification": "mmcli.metrics.classification",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mmcli' has no attribute {name!r}")
    return getattr(import_module(module), name)

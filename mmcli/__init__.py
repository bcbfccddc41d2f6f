"""mmcli: multimodal models from the shell.

The library is importable on its own; heavy dependencies (torch, transformers) load only when a
name that needs them is first used, so ``import mmcli`` and ``mmcli --help`` stay fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "extract_features": "mmcli.extract",
    "ExtractResult": "mmcli.extract",
    "caption_files": "mmcli.caption",
    "CaptionResult": "mmcli.caption",
    "search_set": "mmcli.search",
    "SetSearch": "mmcli.search",
    "embed_queries": "mmcli.search",
    "hits_for": "mmcli.retrieval",
    "Reporter": "mmcli.reporting",
    "RunStats": "mmcli.engine",
    "InputItem": "mmcli.items",
    "SamplingOptions": "mmcli.media.video",
    "TrainingOptions": "mmcli.fusion.learned",
    "list_captioner_families": "mmcli.captioners",
    "load_encoder": "mmcli.encoders",
    "Encoder": "mmcli.encoders",
    "list_encoder_families": "mmcli.encoders",
    "load_captioner": "mmcli.captioners",
    "Captioner": "mmcli.captioners",
    "GenerationOptions": "mmcli.captioners",
    "caption_items": "mmcli.caption",
    "read_feature_set": "mmcli.output.feature_set",
    "FeatureSet": "mmcli.output.npy",
    "FeatureSetWriter": "mmcli.output.npy",
    "load_image": "mmcli.media.images",
    "discover_images": "mmcli.io.inputs",
    "discover_texts": "mmcli.io.inputs",
    "embed_items": "mmcli.extract",
    "search": "mmcli.retrieval",
    "index_feature_set": "mmcli.ann",
    "zero_shot": "mmcli.classify",
    "classify_files": "mmcli.classify",
    "ClassifyResult": "mmcli.classify",
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
    "evaluate_caption_files": "mmcli.metrics.files",
    "evaluate_retrieval_files": "mmcli.metrics.files",
    "evaluate_cross_modal_files": "mmcli.metrics.files",
    "evaluate_classification_files": "mmcli.metrics.files",
    "write_report": "mmcli.web.report",
    "ReportResult": "mmcli.web.report",
    "train_captioner": "mmcli.train.caption",
    "TrainOptions": "mmcli.train.caption",
    "TrainResult": "mmcli.train.caption",
    "transcribe_files": "mmcli.speech",
    "TranscribeResult": "mmcli.speech",
    "load_transcriber": "mmcli.speech",
    "Transcriber": "mmcli.speech",
    "decode_audio": "mmcli.media.audio",
    "embed_rows": "mmcli.extract",
}

__all__ = [
    "CaptionResult",
    "Captioner",
    "ClassifyResult",
    "Encoder",
    "ExtractResult",
    "FeatureSet",
    "FeatureSetWriter",
    "GenerationOptions",
    "InputItem",
    "ReportResult",
    "Reporter",
    "RunStats",
    "SamplingOptions",
    "SetSearch",
    "TrainOptions",
    "TrainResult",
    "TrainingOptions",
    "TranscribeResult",
    "Transcriber",
    "__version__",
    "align",
    "caption_files",
    "caption_items",
    "classify_files",
    "decode_audio",
    "discover_images",
    "discover_texts",
    "embed_items",
    "embed_queries",
    "embed_rows",
    "evaluate_caption_files",
    "evaluate_captions",
    "evaluate_classification",
    "evaluate_classification_files",
    "evaluate_cross_modal_files",
    "evaluate_rankings",
    "evaluate_retrieval_files",
    "extract_features",
    "fuse_results",
    "fuse_rows",
    "hits_for",
    "list_captioner_families",
    "list_encoder_families",
    "load_captioner",
    "load_encoder",
    "load_head",
    "load_image",
    "load_transcriber",
    "read_feature_set",
    "search",
    "search_set",
    "train_captioner",
    "train_head",
    "transcribe_files",
    "write_report",
]


if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from mmcli.caption import CaptionResult, caption_files, caption_items
    from mmcli.captioners import Captioner, GenerationOptions, list_captioner_families, load_captioner
    from mmcli.encoders import Encoder, list_encoder_families, load_encoder
    from mmcli.engine import RunStats
    from mmcli.extract import ExtractResult, embed_items, embed_rows, extract_features
    from mmcli.fusion.align import align
    from mmcli.fusion.early import fuse_rows
    from mmcli.fusion.late import fuse_results
    from mmcli.fusion.learned import TrainingOptions, load_head, train_head
    from mmcli.io.inputs import discover_images, discover_texts
    from mmcli.items import InputItem
    from mmcli.media.audio import decode_audio
    from mmcli.media.images import load_image
    from mmcli.media.video import SamplingOptions
    from mmcli.metrics.captions import evaluate_captions
    from mmcli.metrics.classification import evaluate_classification
    from mmcli.metrics.files import (
        evaluate_caption_files,
        evaluate_classification_files,
        evaluate_cross_modal_files,
        evaluate_retrieval_files,
    )
    from mmcli.metrics.retrieval import evaluate_rankings
    from mmcli.output.feature_set import read_feature_set
    from mmcli.output.npy import FeatureSet, FeatureSetWriter
    from mmcli.reporting import Reporter
    from mmcli.retrieval import hits_for, search
    from mmcli.search import SetSearch, embed_queries, search_set
    from mmcli.speech import Transcriber, TranscribeResult, load_transcriber, transcribe_files
    from mmcli.train.caption import TrainOptions, TrainResult, train_captioner
    from mmcli.web.report import ReportResult, write_report


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mmcli' has no attribute {name!r}")
    return getattr(import_module(module), name)

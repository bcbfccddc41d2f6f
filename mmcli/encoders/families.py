"""The encoder families, declared without their code: the model types each claims, how it judges a
config of a type nobody claimed, what its models read, and where its loader is. Deciding on a family
(and refusing flags or inputs it cannot take) imports no torch; the loader is imported on use.
Declared in the order shape-based guesses are tried in."""

from __future__ import annotations

from typing import Any

from mmcli.encoders.registry import ENCODERS


def _has_audio_tower(config: Any) -> bool:
    return getattr(config, "audio_config", None) is not None and getattr(config, "text_config", None) is not None


def _has_two_towers(config: Any) -> bool:
    return getattr(config, "text_config", None) is not None and getattr(config, "vision_config", None) is not None


def _is_text_only(config: Any) -> bool:
    return (
        getattr(config, "vocab_size", None) is not None
        and getattr(config, "vision_config", None) is None
        and not getattr(config, "is_encoder_decoder", False)
    )


def xclip_frames(config: Any) -> int:
    return int(config.vision_config.num_frames)


def videomae_frames(config: Any) -> int:
    return int(config.num_frames)


def _is_video_text(config: Any) -> bool:
    vision = getattr(config, "vision_config", None)
    return getattr(config, "text_config", None) is not None and hasattr(vision, "mit_hidden_size")


def _is_tubelet_video(config: Any) -> bool:
    return getattr(config, "text_config", None) is None and all(
        isinstance(getattr(config, key, None), int) for key in ("num_frames", "tubelet_size")
    )


def _is_vision_only(config: Any) -> bool:
    return (
        getattr(config, "num_channels", None) is not None
        and getattr(config, "vocab_size", None) is None
        and getattr(config, "text_config", None) is None
    )


ENCODERS.declare(
    "clap",
    description="audio-text models with get_audio_features / get_text_features",
    model_types=("clap",),
    accepts=_has_audio_tower,
    reads="audio",
    loader="mmcli.encoders.audio:load_clap",
)


ENCODERS.declare(
    "audio",
    description="audio spectrogram transformers (AST): recordings, and AudioSet classifiers' labels",
    model_types=("audio-spectrogram-transformer",),
    reads="audio",
    loader="mmcli.encoders.audio:load_audio_spectrogram",
    heads=True,
)


ENCODERS.declare(
    "dual-tower",
    description="image-text models with get_image_features / get_text_features",
    model_types=("clip", "siglip", "siglip2", "metaclip_2", "altclip", "chinese_clip", "align", "blip"),
    accepts=_has_two_towers,
    loader="mmcli.encoders.dual_tower:load_dual_tower",
)


ENCODERS.declare(
    "text",
    description="sentence encoders (BERT-like) with sentence-transformers pooling",
    model_types=(
        "bert",
        "roberta",
        "xlm-roberta",
        "mpnet",
        "distilbert",
        "electra",
        "albert",
        "camembert",
        "deberta",
        "deberta-v2",
        "modernbert",
        "nomic_bert",
        "xlm",
        "ernie",
    ),
    accepts=_is_text_only,
    loader="mmcli.encoders.text:load_text",
)


ENCODERS.declare(
    "video-text",
    description="video-text models (X-CLIP): whole clips and texts in one space",
    model_types=("xclip",),
    accepts=_is_video_text,
    clip_frames=xclip_frames,
    loader="mmcli.encoders.video:load_xclip",
)


ENCODERS.declare(
    "video",
    description="video backbones (VideoMAE): clips pooled over their tokens",
    model_types=("videomae",),
    accepts=_is_tubelet_video,
    clip_frames=videomae_frames,
    loader="mmcli.encoders.video:load_videomae",
    heads=True,
)


ENCODERS.declare(
    "open_clip",
    description="open_clip models (open_clip:ARCH/TAG, hf-hub:org/repo, folders with open_clip_config.json)",
    model_types=("open_clip",),
    loader="mmcli.encoders.openclip:load_open_clip",
)


ENCODERS.declare(
    "timm",
    description="timm image backbones (timm/NAME; folders whose config.json names an architecture)",
    model_types=("timm",),
    loader="mmcli.encoders.timm_backbone:load_timm",
    heads=True,
)


def torchvision_clip_frames(config: Any) -> int | None:
    return config.settings.get("clip_len") if config.settings.get("video") else None


def torchvision_clip_rate(config: Any) -> float | None:
    return config.settings.get("frame_rate") if config.settings.get("video") else None


ENCODERS.declare(
    "torchvision",
    description="torchvision models (torchvision:NAME[:WEIGHTS]): image CNNs and ViTs, and video models "
    "(3D CNNs, MViT, Swin3D) on clips at their weights' rate",
    model_types=("torchvision",),
    loader="mmcli.encoders.torchvision_models:load_torchvision",
    clip_frames=torchvision_clip_frames,
    clip_rate=torchvision_clip_rate,
    heads=True,
)


ENCODERS.declare(
    "vision",
    description="image-only backbones (pooled output or CLS token)",
    model_types=(
        "vit",
        "deit",
        "beit",
        "dinov2",
        "dinov2_with_registers",
        "dinov3_vit",
        "dinov3_convnext",
        "convnext",
        "convnextv2",
        "swin",
        "swinv2",
        "resnet",
        "regnet",
        "efficientnet",
        "mobilevit",
        "mobilevitv2",
        "levit",
        "data2vec-vision",
        "ijepa",
        "hiera",
        "vit_msn",
        "pvt",
        "pvt_v2",
        "focalnet",
        "siglip_vision_model",
        "clip_vision_model",
    ),
    accepts=_is_vision_only,
    loader="mmcli.encoders.vision:load_vision",
    heads=True,
)

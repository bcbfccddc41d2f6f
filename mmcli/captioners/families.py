"""The captioner families, declared without their code (see :mod:`mmcli.encoders.families`): model
types, shape-based guesses and a loader imported on use. Declared in the order guesses are tried in."""

from __future__ import annotations

from typing import Any

from mmcli.captioners.registry import CAPTIONERS

CHAT_MODEL_TYPES = (
    "smolvlm",
    "idefics2",
    "idefics3",
    "qwen2_vl",
    "qwen2_5_vl",
    "qwen3_vl",
    "qwen3_vl_moe",
    "llava",
    "llava_next",
    "llava_onevision",
    "gemma3",
    "gemma3n",
    "mllama",
    "mistral3",
    "internvl",
    "aya_vision",
    "lfm2_vl",
    "glm4v",
)


# Image-text-to-text architectures that are not chat-templated: captioners prompted with a plain
# text prefix (or none), OCR and document models with their own task prompts, and non-text outputs.
NOT_CHAT_MODEL_TYPES = frozenset(
    {
        "blip",
        "blip-2",
        "git",
        "instructblip",
        "instructblipvideo",
        "paligemma",
        "pix2struct",
        "vision-encoder-decoder",
        "kosmos-2",
        "kosmos-2.5",
        "florence2",
        "udop",
        "fuyu",
        "idefics",
        "evolla",
        "pi0",
        "pp_formulanet",
        "diffusion_gemma",
    }
)


def accepts_chat(config: Any) -> bool:
    """Any other image-text-to-text architecture transformers knows, or remote code registered as one."""
    model_type = getattr(config, "model_type", "") or ""
    if model_type in NOT_CHAT_MODEL_TYPES:
        return False
    if any(model_type in family.model_types for family in CAPTIONERS.families() if family.name != "chat"):
        return False
    auto_map = getattr(config, "auto_map", None) or {}
    if "AutoModelForImageTextToText" in auto_map:
        return True
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
    except ImportError:  # pragma: no cover - transformers without the mapping
        return False
    return model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


CAPTIONERS.declare(
    "blip",
    description="BLIP image captioning (optional text prefix)",
    model_types=("blip",),
    loader="mmcli.captioners.blip:load_blip",
)


CAPTIONERS.declare(
    "blip2",
    description="BLIP-2 image captioning and visual questions (optional prompt)",
    model_types=("blip-2",),
    loader="mmcli.captioners.blip2:load_blip2",
)


CAPTIONERS.declare(
    "chat",
    description="Chat vision-language models (SmolVLM, Idefics, Qwen-VL, LLaVA, Gemma 3, ...) prompted "
    "through their chat template (--prompt is the instruction)",
    model_types=CHAT_MODEL_TYPES,
    accepts=accepts_chat,
    loader="mmcli.captioners.chat:load_chat",
)


CAPTIONERS.declare(
    "florence2",
    description="Florence-2 captions: <CAPTION>, <DETAILED_CAPTION>, <MORE_DETAILED_CAPTION> (task prompts)",
    model_types=("florence2",),
    loader="mmcli.captioners.florence2:load_florence2",
)


CAPTIONERS.declare(
    "git",
    description="GIT image captioning and visual questions (optional prompt); the VATEX / MSR-VTT checkpoints "
    "caption whole clips",
    model_types=("git",),
    loader="mmcli.captioners.git:load_git",
)


CAPTIONERS.declare(
    "vision-encoder-decoder",
    description="Vision encoder-decoder captioning, e.g. ViT + GPT-2 (no prompt)",
    model_types=("vision-encoder-decoder",),
    loader="mmcli.captioners.vision_encoder_decoder:load_vision_encoder_decoder",
)

"""Chat vision-language models (``AutoModelForImageTextToText``): SmolVLM, Idefics, Qwen2-VL, LLaVA, Gemma 3, ...

They are instructed rather than prompted with a caption prefix: the prompt is the user's turn of a
conversation, ``[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]``,
rendered by the processor's chat template with the assistant's turn opened. A batch is one rendered
text per image, tokenized with left padding (the models are decoder-only: new tokens follow each
row's last real token), and the answer is the tokens after the input, decoded without special tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from mmcli.captioners.base import Captioner
from mmcli.captioners.registry import CAPTIONERS, register_captioner
from mmcli.errors import UnsupportedModel
from mmcli.loading import from_pretrained

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


class ChatCaptioner(Captioner):
    """The prompt is an instruction in the user's turn; the caption is the assistant's answer."""

    family = "chat"
    echoes_prompt = False
    fixed_input_size = False  # tiling (Idefics3, SmolVLM) and dynamic resolution (Qwen2-VL) want every pixel
    default_prompt = "Describe this image in one sentence."
    detail_prompts: ClassVar[dict[str, str] | None] = {
        "detailed": "Describe this image in detail.",
        "more": (
            "Describe this image in great detail, including the setting, the people, animals and objects "
            "in it, their colors and positions, what is happening, and any visible text."
        ),
    }

    def __init__(self, name: str, model: Any, processor: Any, *, device: str, dtype: Any) -> None:
        super().__init__(name, model, processor, device=device, dtype=dtype)
        tokenizer = self.tokenizer
        # Decoder-only generation continues each row after its last token, so padding goes on the left.
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        self._nested_images = True

    def chat_text(self, prompt: str | None) -> str:
        """The rendered conversation for one image: the user's turn, then the assistant's opened."""
        content: list[dict[str, str]] = [{"type": "image"}]
        if prompt:
            content.append({"type": "text", "text": prompt})
        messages = [{"role": "user", "content": content}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def prepare(self, images: Sequence[Any], prompt: str | None) -> dict[str, Any]:
        text = self.chat_text(prompt)
        # Explicit, so neither the tokenizer's saved padding side nor a processor default can put it on the right.
        kwargs: dict[str, Any] = {"padding": True, "padding_side": "left", "return_tensors": "pt"}
        # A template that writes the BOS token itself (Idefics3, Gemma 3) must not get a second one from
        # the tokenizer; the processor's own apply_chat_template(tokenize=True) makes the same choice.
        bos = getattr(self.tokenizer, "bos_token", None)
        if bos and text.startswith(bos):
            kwargs["add_special_tokens"] = False
        texts = [text] * len(images)
        if self._nested_images:
            # One list of images per text is what Idefics, SmolVLM and Mllama processors expect.
            try:
                return self.processor(text=texts, images=[[image] for image in images], **kwargs)
            except (TypeError, ValueError) as nested_error:
                # A processor that takes only a flat list (one image per text, in order) refuses nesting.
                try:
                    inputs = self.processor(text=texts, images=list(images), **kwargs)
                except (TypeError, ValueError):
                    raise nested_error from None
                self._nested_images = False
                return inputs
        return self.processor(text=texts, images=list(images), **kwargs)


def _ensure_chat_template(name: str, processor: Any) -> None:
    if getattr(processor, "chat_template", None):
        return
    template = getattr(getattr(processor, "tokenizer", None), "chat_template", None)
    if template and hasattr(processor, "apply_chat_template"):
        processor.chat_template = template
        return
    raise UnsupportedModel(
        f"model {name!r} is an image-text-to-text model without a chat template, so mmcli cannot prompt it as a "
        "chat model; it may be a base (not instruction-tuned) checkpoint"
    )


@register_captioner(
    "chat",
    description="Chat vision-language models (SmolVLM, Idefics, Qwen-VL, LLaVA, Gemma 3, ...) prompted "
    "through their chat template (--prompt is the instruction)",
    model_types=CHAT_MODEL_TYPES,
    accepts=accepts_chat,
)
def load_chat(
    name: str, path: str, config: Any, *, device: str, dtype: Any, trust_remote_code: bool = False
) -> ChatCaptioner:
    try:
        processor = from_pretrained(
            "AutoProcessor", name, path, what="processor of model", trust_remote_code=trust_remote_code
        )
        _ensure_chat_template(name, processor)
        model = from_pretrained(
            "AutoModelForImageTextToText",
            name,
            path,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            allow_missing=(),
        )
    except ImportError as exc:
        # SmolVLM's processor needs num2words, some vision towers timm: say so instead of a traceback.
        raise UnsupportedModel(f"model {name!r} needs a Python package that is not installed: {exc}") from None
    return ChatCaptioner(name, model, processor, device=device, dtype=dtype)

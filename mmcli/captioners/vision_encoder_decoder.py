"""Vision encoder-decoder captioners (``VisionEncoderDecoderModel``): an image encoder such as ViT
feeding a text decoder such as GPT-2 through cross-attention, e.g. ``nlpconnect/vit-gpt2-image-captioning``.

These checkpoints usually ship an image processor and a tokenizer but no processor config, so
``AutoProcessor`` gives only one of them; the loader then loads both on their own. Their reference
usage: ``image_processor(images).pixel_values`` -> ``model.generate(pixel_values)`` ->
``tokenizer.batch_decode(skip_special_tokens=True)``, stripped. They caption unconditionally.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mmcli.captioners.base import Captioner
from mmcli.errors import UsageError
from mmcli.loading import from_pretrained, load_processor


@dataclass(frozen=True)
class ImageTextProcessors:
    """An image processor and a tokenizer loaded separately, laid out as a processor holds them."""

    image_processor: Any
    tokenizer: Any


class VisionEncoderDecoderCaptioner(Captioner):
    family = "vision-encoder-decoder"

    @classmethod
    def load_processor(cls, name: str, path: str, *, trust_remote_code: bool) -> Any:
        """The checkpoint's processor when it has one with both parts (TrOCR), else image processor + tokenizer."""
        try:
            processor = load_processor(name, path, trust_remote_code=trust_remote_code)
        except Exception:  # no usable processor config: the parts below load on their own or say what is missing
            processor = None
        if hasattr(processor, "image_processor") and hasattr(processor, "tokenizer"):
            return processor
        image_processor = from_pretrained(
            "AutoImageProcessor", name, path, what="image processor of model", trust_remote_code=trust_remote_code
        )
        tokenizer = from_pretrained(
            "AutoTokenizer", name, path, what="tokenizer of model", trust_remote_code=trust_remote_code
        )
        return ImageTextProcessors(image_processor=image_processor, tokenizer=tokenizer)

    def prompt_for(self, prompt: str | None = None, detail: str | None = None) -> str | None:
        """No prompt: refused up front, so a run stops before reading any image."""
        self._refuse_prompt(prompt)
        return super().prompt_for(prompt, detail)

    def _refuse_prompt(self, prompt: str | None) -> None:
        if prompt:
            raise UsageError(
                f"{self.name} is a vision encoder-decoder captioner, which writes a caption from the image "
                "alone; it takes no --prompt"
            )

    def prepare(self, images: Sequence[Any], prompt: str | None) -> dict[str, Any]:
        self._refuse_prompt(prompt)
        return {"pixel_values": self.processor.image_processor(list(images), return_tensors="pt")["pixel_values"]}


def load_vision_encoder_decoder(
    name: str, path: str, config: Any, *, device: str, dtype: Any, trust_remote_code: bool = False
) -> VisionEncoderDecoderCaptioner:
    return VisionEncoderDecoderCaptioner.from_checkpoint(
        name, path, "VisionEncoderDecoderModel", device=device, dtype=dtype, trust_remote_code=trust_remote_code
    )

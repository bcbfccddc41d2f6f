"""How each trainable captioning family is taught: its model class, its batches and its vision tower.

Every family builds its text the way its ``generate`` will read it: the start token ``generate``
begins from, the caption's tokens, then the token ``generate`` stops at; padding is masked out of
the attention and of the loss (``-100``), so the loss covers the caption tokens only. A checkpoint
whose tokenizer starts sequences with another token (BLIP's tokenizer begins with ``[CLS]`` where
its ``generate`` begins with ``[DEC]``) would otherwise learn from one start token and be asked to
continue from another, and write empty captions. The loss is the model's own (BLIP's carries its
label smoothing), so a step equals the family's reference fine-tuning step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from mmcli.errors import UsageError

IGNORE = -100  # label of a position the loss skips


@dataclass
class CaptionTokens:
    """A batch of token sequences, padded on the right, with the loss mask applied to ``labels``."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor


class TrainableFamily:
    """One family's training recipe; subclasses set the class attributes and :meth:`batch`."""

    name: ClassVar[str] = ""
    model_class: ClassVar[str] = ""
    #: Attribute paths of the vision tower, frozen by ``--freeze-vision``.
    vision_modules: ClassVar[tuple[str, ...]] = ()
    #: Whether a full fine-tune is offered, or only LoRA adapters (``--lora-rank``).
    full: ClassVar[bool] = True
    #: Module names LoRA adapts (the language model's attention projections).
    lora_targets: ClassVar[tuple[str, ...]] = ("query", "value")
    #: A regular expression over module paths for peft instead, where the names alone would catch more.
    lora_pattern: ClassVar[str | None] = None
    #: The family's captioner (``module:Class``), which loads its processor and writes its captions.
    captioner_path: ClassVar[str] = ""

    def __init__(self, model: Any, processor: Any) -> None:
        self.model, self.processor = model, processor
        self._captioner: Any = None

    @classmethod
    def captioner_class(cls) -> Any:
        import importlib

        module, _, name = cls.captioner_path.partition(":")
        return getattr(importlib.import_module(module), name)

    @classmethod
    def load_processor(cls, name: str, path: str, *, trust_remote_code: bool = False) -> Any:
        return cls.captioner_class().load_processor(name, path, trust_remote_code=trust_remote_code)

    def captioner(self) -> Any:
        """The family's captioner around the model being trained (a LoRA model's base, its adapters active),
        built once on first use, after any adapters are in place: it writes the validation captions as
        ``mmcli caption`` would and renders a chat model's prompts. The model's train or eval mode stays."""
        if self._captioner is None:
            model = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            training, device = model.training, str(next(model.parameters()).device)
            self._captioner = self.captioner_class()("training", model, self.processor, device=device,
                                                     dtype=torch.float32)  # fmt: skip
            model.train(training)
        return self._captioner

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    def start_and_end(self) -> tuple[int | None, int]:
        """The ids ``generate`` starts from (``None``: the model supplies it) and stops at."""
        config = self.model.generation_config
        return config.bos_token_id, _one(config.eos_token_id)

    def caption_ids(self, caption: str, max_length: int) -> list[int]:
        """The caption's own tokens (no special ones), cut to fit ``max_length`` with start and end."""
        return list(self.tokenizer(caption, add_special_tokens=False)["input_ids"])[: max(1, max_length - 2)]

    def tokens(self, captions: Sequence[str], max_length: int) -> CaptionTokens:
        start, end = self.start_and_end()
        rows = [([start] if start is not None else []) + self.caption_ids(c, max_length) + [end] for c in captions]
        return pad_rows(rows, self.pad_id(), label_from=1 if start is not None else 0)

    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else _one(self.model.generation_config.eos_token_id))

    def pixel_values(self, images: Sequence[Any]) -> torch.Tensor:
        image_processor = getattr(self.processor, "image_processor", self.processor)
        return image_processor(images=list(images), return_tensors="pt")["pixel_values"]

    def batch(self, images: Sequence[Any], captions: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        """Model inputs with ``labels``, for ``model(**batch).loss``."""
        tokens = self.tokens(captions, max_length)
        return {"pixel_values": self.pixel_values(images), "input_ids": tokens.input_ids,
                "attention_mask": tokens.attention_mask, "labels": tokens.labels}  # fmt: skip

    def vision(self) -> list[torch.nn.Module]:
        found = []
        for path in self.vision_modules:
            module: Any = self.model
            for part in path.split("."):
                module = getattr(module, part, None)
            if module is not None:
                found.append(module)
        return found


def pad_rows(rows: Sequence[Sequence[int]], pad: int, *, label_from: int = 0) -> CaptionTokens:
    """Right-padded ids, their attention mask, and labels that skip padding and the first
    ``label_from`` tokens (a start token the model is given, never asked to predict)."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[index, : len(row)] = 1
    labels = ids.masked_fill(mask == 0, IGNORE)
    labels[:, :label_from] = IGNORE
    return CaptionTokens(ids, mask, labels)


def _one(value: Any) -> int:
    """The first of an id or a list of ids (generation configs allow several end tokens)."""
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if value is None:
        raise UsageError("the checkpoint's generation config names no end token (eos_token_id), so a trained "
                         "caption could never end")  # fmt: skip
    return int(value)


class BlipFamily(TrainableFamily):
    """``BlipForConditionalGeneration``: ``generate`` starts from ``bos_token_id`` ([DEC]) and stops at [SEP]."""

    name = "blip"
    model_class = "BlipForConditionalGeneration"
    captioner_path = "mmcli.captioners.blip:BlipCaptioner"
    vision_modules = ("vision_model",)

    def start_and_end(self) -> tuple[int | None, int]:
        text = self.model.config.text_config
        return text.bos_token_id, int(text.sep_token_id)

    def pad_id(self) -> int:
        return int(self.model.config.text_config.pad_token_id)


class GitFamily(TrainableFamily):
    """``GitForCausalLM``: the image's patch tokens, then [CLS] (its ``bos``), the caption and [SEP]."""

    name = "git"
    model_class = "GitForCausalLM"
    captioner_path = "mmcli.captioners.git:GitCaptioner"
    vision_modules = ("git.image_encoder",)

    def pixel_values(self, images: Sequence[Any]) -> torch.Tensor:
        pixel_values = super().pixel_values(images)
        return pixel_values.reshape(-1, *pixel_values.shape[-3:])  # (a video checkpoint's processor adds frames)


class VisionEncoderDecoderFamily(TrainableFamily):
    """``VisionEncoderDecoderModel``: the model shifts ``labels`` right behind ``decoder_start_token_id``
    itself, so the labels are the caption and its end token, and the decoder is given no ``input_ids``."""

    name = "vision-encoder-decoder"
    model_class = "VisionEncoderDecoderModel"
    captioner_path = "mmcli.captioners.vision_encoder_decoder:VisionEncoderDecoderCaptioner"
    vision_modules = ("encoder",)
    lora_targets = ("query", "value", "c_attn", "q_proj", "v_proj")

    def start_and_end(self) -> tuple[int | None, int]:
        config = self.model.generation_config
        end = config.eos_token_id if config.eos_token_id is not None else self.model.config.decoder.eos_token_id
        return None, _one(end)

    def pad_id(self) -> int:
        pad = self.model.config.pad_token_id
        return int(pad) if pad is not None else super().pad_id()

    def batch(self, images: Sequence[Any], captions: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        tokens = self.tokens(captions, max_length)
        return {"pixel_values": self.pixel_values(images), "labels": tokens.labels,
                "decoder_attention_mask": tokens.attention_mask}  # fmt: skip


class Blip2Family(TrainableFamily):
    """``Blip2ForConditionalGeneration`` (through LoRA on its language model): the processor's image
    placeholders and the start token ``generate`` is given, then the caption and the end token."""

    name = "blip2"
    model_class = "Blip2ForConditionalGeneration"
    captioner_path = "mmcli.captioners.blip2:Blip2Captioner"
    vision_modules = ("vision_model",)
    full = False
    lora_targets = ("q_proj", "v_proj")

    def __init__(self, model: Any, processor: Any) -> None:
        from mmcli.captioners.blip2 import _complete_legacy_layout

        super().__init__(model, processor)
        _complete_legacy_layout(model, processor)  # (what checkpoints saved before transformers 4.47 lack)

    def batch(self, images: Sequence[Any], captions: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        # the image placeholders and BOS, as generate is given them for an unprompted caption
        prompt = self.processor(images=list(images), text=[""] * len(images), return_tensors="pt")
        prefix = prompt["input_ids"][0].tolist()
        _, end = self.start_and_end()
        rows = [prefix + self.caption_ids(c, max_length) + [end] for c in captions]
        tokens = pad_rows(rows, self.pad_id(), label_from=len(prefix))
        return {"pixel_values": prompt["pixel_values"], "input_ids": tokens.input_ids,
                "attention_mask": tokens.attention_mask, "labels": tokens.labels}  # fmt: skip


class ChatFamily(TrainableFamily):
    """Chat vision-language models (``AutoModelForImageTextToText``; through LoRA on the language model):
    the conversation ``mmcli caption`` writes (the user's turn with the image and the instruction, the
    assistant's turn opened), then the caption as the assistant's answer and the end token ``generate``
    stops at. Only the answer is in the loss."""

    name = "chat"
    model_class = "AutoModelForImageTextToText"
    captioner_path = "mmcli.captioners.chat:ChatCaptioner"
    full = False
    # The language model's attention projections; the vision tower's carry the same names.
    lora_targets = ("q_proj", "v_proj")
    lora_pattern = r"^(?!.*(vision|visual|image_encoder)).*\.(q_proj|v_proj)$"

    @classmethod
    def load_processor(cls, name: str, path: str, *, trust_remote_code: bool = False) -> Any:
        from mmcli.captioners.chat import _ensure_chat_template

        processor = super().load_processor(name, path, trust_remote_code=trust_remote_code)
        _ensure_chat_template(name, processor)
        return processor

    def batch(self, images: Sequence[Any], captions: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        prompter = self.captioner()
        prompt = prompter.prepare(list(images), prompter.default_prompt)  # left-padded, as generate is given it
        mask = prompt.pop("attention_mask")
        ids = prompt.pop("input_ids")
        _, end = self.start_and_end()
        prefixes = [row[row_mask.bool()].tolist() for row, row_mask in zip(ids, mask, strict=True)]
        rows = [prefix + self.caption_ids(c, max_length) + [end] for prefix, c in zip(prefixes, captions, strict=True)]
        tokens = pad_rows(rows, self.pad_id())
        for index, prefix in enumerate(prefixes):
            tokens.labels[index, : len(prefix)] = IGNORE
        for key, value in list(prompt.items()):  # per-token extras (Qwen2-VL's mm_token_type_ids): text after
            if torch.is_tensor(value) and value.shape == ids.shape:
                laid = torch.zeros(tokens.input_ids.shape, dtype=value.dtype)
                for index, row_mask in enumerate(mask.bool()):
                    laid[index, : len(prefixes[index])] = value[index][row_mask]
                prompt[key] = laid
        return {**prompt, "input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask,
                "labels": tokens.labels}  # fmt: skip


FAMILIES: dict[str, type[TrainableFamily]] = {
    family.name: family for family in (BlipFamily, GitFamily, VisionEncoderDecoderFamily, Blip2Family, ChatFamily)
}


def trainable_family(captioner_family: str, name: str) -> type[TrainableFamily]:
    """The training recipe of a captioner family, or a clear refusal naming those that have one."""
    if captioner_family not in FAMILIES:
        raise UsageError(
            f"model {name!r} is a {captioner_family} captioner, which mmcli cannot train; trainable families: "
            f"{', '.join(FAMILIES)} (blip2 and chat models through LoRA adapters, --lora-rank)"
        )
    return FAMILIES[captioner_family]

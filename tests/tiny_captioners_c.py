"""Tiny, randomly initialised chat vision-language checkpoints (LLaVA, Idefics3, Qwen2-VL), saved like hub models.

Each is a real architecture loaded by ``AutoModelForImageTextToText`` with a processor that carries a
chat template, laid out as the hub checkpoints are: LLaVA (CLIP tower, projector, Llama decoder),
Idefics3 (SigLIP-style tower with pixel shuffle, image splitting into a grid of crops plus a global
view, Llama decoder; the layout SmolVLM shares) and Qwen2-VL (native-resolution patches merged 2x2,
multimodal rotary positions). A wider initialisation than the architectures' defaults makes a random
model's captions depend on the image. They register in ``tiny_models``' registry; ``python
tests/tiny_models.py /tmp/mmcli-tiny`` writes them with the others.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tiny_models import IMAGE_SIZE, MEAN, STD, tiny

INIT = 0.2
HIDDEN = 32

# LLaVA-1.5's processor template (images first, then text; "USER: ... ASSISTANT:").
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# Idefics3's template: it starts with the BOS token that its tokenizer also adds.
IDEFICS3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}"
    "{% if line['type'] == 'text' %}{{ line['text'] }}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# Qwen2-VL's template, without its default system message (a video, like an image, is one placeholder
# between vision markers, which the processor expands to the clip's tokens).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _byte_level_vocab(specials: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary of printable ASCII, bare and with GPT-2's leading-space marker ``Ġ``.

    A space always merges into the character after it, so captions decode to readable text; ``Ġ``
    and ``Ċ`` (a lone space, a newline) keep chat templates free of unknown tokens.
    """
    chars = [chr(code) for code in range(33, 127)]
    vocab = {token: i for i, token in enumerate(specials)}
    for piece in chars + ["Ġ" + char for char in chars] + ["Ġ", "Ċ"]:
        vocab.setdefault(piece, len(vocab))
    return vocab, [("Ġ", char) for char in chars]


def _text_config(vocab_size: int, **ids: int) -> dict:
    return dict(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=HIDDEN * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=INIT,
        **ids,
    )


def _vision_config(**extra: object) -> dict:
    return dict(
        hidden_size=HIDDEN,
        intermediate_size=HIDDEN * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=8,
        initializer_range=INIT,
        **extra,
    )


@tiny("llava")
def build_llava(folder: Path) -> Path:
    """LLaVA-1.5: a CLIP vision tower (penultimate layer, CLS dropped), an MLP projector and a Llama decoder.

    The processor expands each ``<image>`` into one token per patch: (32 / 8) ** 2 = 16.
    """
    from transformers import (
        CLIPImageProcessor,
        GPT2Tokenizer,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    vocab, merges = _byte_level_vocab(["<unk>", "<s>", "</s>", "<pad>", "<image>"])
    tokenizer = GPT2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        add_bos_token=True,
        extra_special_tokens={"image_token": "<image>"},
    )
    image_token_index = tokenizer.convert_tokens_to_ids("<image>")
    text = _text_config(len(tokenizer), bos_token_id=1, eos_token_id=2, pad_token_id=3)
    config = LlavaConfig(
        vision_config={**_vision_config(), "model_type": "clip_vision_model", "projection_dim": HIDDEN},
        text_config={**text, "model_type": "llama"},
        image_token_index=image_token_index,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        image_seq_length=(IMAGE_SIZE // 8) ** 2,
    )
    torch.manual_seed(11)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = 3
    model.save_pretrained(folder)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=MEAN,
        image_std=STD,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    processor.save_pretrained(folder)
    return folder


@tiny("idefics3")
def build_idefics3(folder: Path) -> Path:
    """Idefics3 (SmolVLM's layout): images split into a grid of 32-pixel crops plus a global view.

    Each crop becomes (32 / 8) ** 2 / 2 ** 2 = 4 ``<image>`` tokens after the pixel shuffle; a photo
    resized to a longest edge of 64 is split 2 x 2 (or 2 x 1), and the processor writes the
    ``<row_i_col_j>`` and ``<global-img>`` markers around the crops.
    """
    from transformers import (
        GPT2Tokenizer,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )

    markers = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
    markers += [f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)]
    vocab, merges = _byte_level_vocab(["<|begin_of_text|>", "<|end_of_text|>", "<pad>", *markers])
    tokenizer = GPT2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token="<|end_of_text|>",
        bos_token="<|begin_of_text|>",
        eos_token="<end_of_utterance>",
        pad_token="<pad>",
        add_bos_token=True,
        extra_special_tokens={
            "fake_image_token": "<fake_token_around_image>",
            "image_token": "<image>",
            "end_of_utterance_token": "<end_of_utterance>",
            "global_image_token": "<global-img>",
        },
    )
    tokenizer.add_tokens(markers[3:], special_tokens=True)
    bos_id = tokenizer.convert_tokens_to_ids("<|begin_of_text|>")
    eos_id = tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    pad_id = tokenizer.convert_tokens_to_ids("<pad>")
    text = _text_config(len(tokenizer), bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id)
    config = Idefics3Config(
        vision_config=_vision_config(),
        text_config={**text, "model_type": "llama"},
        scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=pad_id,
    )
    torch.manual_seed(12)
    model = Idefics3ForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = pad_id
    model.generation_config.eos_token_id = eos_id
    model.save_pretrained(folder)
    image_processor = Idefics3ImageProcessor(
        size={"longest_edge": 3 * IMAGE_SIZE},
        max_image_size={"longest_edge": IMAGE_SIZE},
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=(IMAGE_SIZE // 8) ** 2 // 4,
        chat_template=IDEFICS3_CHAT_TEMPLATE,
    )
    processor.save_pretrained(folder)
    return folder


@tiny("qwen2_vl")
def build_qwen2_vl(folder: Path) -> Path:
    """Qwen2-VL: photos keep their aspect ratio, resized to at most 48 x 48 pixels (``max_pixels``).

    They become 8-pixel patches, merged 2 x 2 into one ``<|image_pad|>`` token each (4 to 9 per photo),
    so a batch of photos of different shapes is padded; positions are multimodal rotary (``mrope``).
    """
    from transformers import (
        Qwen2Tokenizer,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]
    specials += ["<|image_pad|>", "<|video_pad|>"]
    vocab, merges = _byte_level_vocab(specials)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.add_tokens(specials[1:], special_tokens=True)
    token = tokenizer.convert_tokens_to_ids
    text = _text_config(
        len(tokenizer), bos_token_id=token("<|endoftext|>"), eos_token_id=token("<|im_end|>"), pad_token_id=0
    )
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]}
    vision = dict(
        depth=2,
        embed_dim=HIDDEN,
        hidden_size=HIDDEN,
        num_heads=4,
        mlp_ratio=2,
        patch_size=8,
        spatial_merge_size=2,
        temporal_patch_size=2,
        in_chans=3,
        initializer_range=INIT,
    )
    config = Qwen2VLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=token("<|image_pad|>"),
        video_token_id=token("<|video_pad|>"),
        vision_start_token_id=token("<|vision_start|>"),
        vision_end_token_id=token("<|vision_end|>"),
    )
    torch.manual_seed(13)
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = token("<|im_end|>")
    model.save_pretrained(folder)
    pixels = dict(patch_size=8, merge_size=2, temporal_patch_size=2, min_pixels=16 * 16, max_pixels=48 * 48)
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(image_mean=MEAN, image_std=STD, **pixels),
        video_processor=Qwen2VLVideoProcessor(image_mean=MEAN, image_std=STD, **pixels),
        tokenizer=tokenizer,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )
    processor.save_pretrained(folder)
    return folder

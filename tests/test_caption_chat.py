"""The chat family: tiny LLaVA, Idefics3 and Qwen2-VL checkpoints against their reference usage, and batching."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from mmcli.captioners import GenerationOptions, load_captioner
from mmcli.captioners.chat import ChatCaptioner
from mmcli.captioners.families import accepts_chat
from mmcli.captioners.registry import CAPTIONERS

OPTIONS = GenerationOptions(max_new_tokens=12, min_new_tokens=8)
REFERENCE_KWARGS = {"max_new_tokens": 12, "min_new_tokens": 8, "do_sample": False, "num_beams": 1}
CUSTOM_PROMPT = "What is in this picture?"
# Idefics3 splits photos of different shapes into different grids of crops, and Qwen2-VL gives them
# different numbers of patches, so their batches are left-padded; LLaVA's image token count is fixed.
PADDED = {"idefics3", "qwen2_vl"}
CHAT_MODELS = ("idefics3", "llava", "qwen2_vl")  # tiny checkpoints, by their names in tiny_models


@pytest.fixture(scope="module", params=CHAT_MODELS)
def checkpoint(request, tiny_models) -> tuple[str, Path]:
    return request.param, tiny_models[request.param]


@pytest.fixture(scope="module")
def captioner(checkpoint) -> ChatCaptioner:
    return load_captioner(str(checkpoint[1]), device="cpu")


def _messages(prompt: str, image: Image.Image | None = None) -> list[dict]:
    picture = {"type": "image"} if image is None else {"type": "image", "image": image}
    return [{"role": "user", "content": [picture, {"type": "text", "text": prompt}]}]


def _reference_chat(path: Path, images: list[Image.Image], prompt: str) -> list[str]:
    """The model cards' usage: chat template -> processor (left padding) -> generate -> new tokens decoded."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    text = processor.apply_chat_template(_messages(prompt), add_generation_prompt=True)
    # A template that writes BOS itself gets none from the tokenizer, as apply_chat_template(tokenize=True) does.
    add_special_tokens = not text.startswith(processor.tokenizer.bos_token or "\0")
    inputs = processor(
        text=[text] * len(images),
        images=[[image] for image in images],
        padding=True,
        add_special_tokens=add_special_tokens,
        return_tensors="pt",
    )
    with torch.inference_mode():
        output = model.generate(**inputs, **REFERENCE_KWARGS)
    decoded = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    # mmcli collapses whitespace runs (a newline mid-answer) into one space.
    return [" ".join(text.split()) for text in decoded]


def test_chat_checkpoints_load_as_the_chat_family(checkpoint, captioner):
    assert captioner.family == "chat"
    assert load_captioner(str(checkpoint[1]), device="cpu").family == "chat"
    assert captioner.tokenizer.padding_side == "left"


@pytest.mark.parametrize("prompt", [None, CUSTOM_PROMPT])
def test_chat_matches_reference_usage(checkpoint, captioner, images, prompt):
    captions = captioner.generate(images, prompt, OPTIONS)
    assert captions == _reference_chat(checkpoint[1], images, prompt or ChatCaptioner.default_prompt)
    assert all(captions) and len(set(captions)) > 1, "captions should depend on the image"


def test_chat_batches_match_one_image_at_a_time(checkpoint, captioner, images):
    inputs = captioner.prepare(images, captioner.default_prompt)
    mask = inputs["attention_mask"]
    if checkpoint[0] in PADDED:
        # Rows differ in length, and the padding is on the left: every row ends with a real token.
        assert not bool(mask.all()) and bool(mask[:, -1].all()) and not bool(mask[:, 0].all())
    batched = captioner.generate(images, None, OPTIONS)
    assert batched == [captioner.generate([image], None, OPTIONS)[0] for image in images]


def test_chat_inputs_match_the_processors_own_chat_tokenization(captioner, images):
    """One rendered text per image, no doubled BOS: what apply_chat_template(tokenize=True) builds."""
    processor = captioner.processor
    expected = processor.apply_chat_template(
        [_messages(CUSTOM_PROMPT, image) for image in images],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": True},
    )
    inputs = captioner.prepare(images, CUSTOM_PROMPT)
    assert sorted(inputs.keys()) == sorted(expected.keys())
    for key, value in expected.items():
        assert torch.equal(inputs[key], value), key
    bos = captioner.tokenizer.bos_token_id
    if bos is not None:
        first = inputs["input_ids"][inputs["attention_mask"].bool()].view(-1)
        assert not any(first[i] == bos == first[i + 1] for i in range(len(first) - 1)), "doubled BOS"


def test_chat_prompts_for_detail_levels(captioner):
    assert captioner.prompt_for() == "Describe this image in one sentence."
    assert captioner.prompt_for(detail="detailed") == ChatCaptioner.detail_prompts["detailed"]
    assert captioner.prompt_for(detail="more") == ChatCaptioner.detail_prompts["more"]
    assert captioner.prompt_for(CUSTOM_PROMPT, detail="more") == CUSTOM_PROMPT
    text = captioner.chat_text(CUSTOM_PROMPT)
    assert CUSTOM_PROMPT in text and text.index(CUSTOM_PROMPT) > 0


def test_chat_claims_other_image_text_to_text_architectures():
    from transformers import AutoConfig

    # Not in the family's list, but an image-text-to-text architecture transformers knows.
    assert CAPTIONERS.family_for(AutoConfig.for_model("cohere2_vision")).name == "chat"
    assert CAPTIONERS.family_for(AutoConfig.for_model("smolvlm")).name == "chat"
    # Prefix-prompted captioners and non-generative configs are left to other families.
    assert not accepts_chat(AutoConfig.for_model("paligemma"))
    assert not accepts_chat(AutoConfig.for_model("git"))
    assert not accepts_chat(AutoConfig.for_model("clip"))

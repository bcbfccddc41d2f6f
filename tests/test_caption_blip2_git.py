"""BLIP-2 and GIT captioning families against their reference usage in transformers."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from mmcli.captioners import GenerationOptions, load_captioner

OPTIONS = GenerationOptions(max_new_tokens=12, min_new_tokens=8)
REFERENCE_KWARGS = {"max_new_tokens": 12, "min_new_tokens": 8, "do_sample": False, "num_beams": 1}


@pytest.fixture(scope="module")
def blip2_path(tiny_models):
    return tiny_models["blip2"]


@pytest.fixture(scope="module")
def git_path(tiny_models):
    return tiny_models["git"]


def _strip_prompt(decoded, prompt):
    """The model cards' last step: the output echoes the prompt, which is cut off."""
    if not prompt:
        return [text.strip() for text in decoded]
    assert all(text.startswith(prompt) for text in decoded), decoded
    return [text[len(prompt) :].strip() for text in decoded]


def _reference_blip2(path, images, prompt=None):
    """processor(images, text) -> generate -> batch_decode(skip_special_tokens) -> prompt removed."""
    from transformers import AutoProcessor, Blip2ForConditionalGeneration

    processor = AutoProcessor.from_pretrained(path)
    model = Blip2ForConditionalGeneration.from_pretrained(path).eval()
    texts = None if prompt is None else [prompt] * len(images)
    with torch.inference_mode():
        output = model.generate(**processor(images=images, text=texts, return_tensors="pt"), **REFERENCE_KWARGS)
    return _strip_prompt(processor.batch_decode(output, skip_special_tokens=True), prompt)


def _reference_git(path, images, prompt=None):
    """GIT's docstring usage: pixel values alone, or with [CLS] + the prompt's tokens (no [SEP])."""
    from transformers import AutoProcessor, GitForCausalLM

    processor = AutoProcessor.from_pretrained(path)
    model = GitForCausalLM.from_pretrained(path).eval()
    inputs = {"pixel_values": processor(images=images, return_tensors="pt").pixel_values}
    if prompt:
        input_ids = [processor.tokenizer.cls_token_id, *processor(text=prompt, add_special_tokens=False).input_ids]
        inputs["input_ids"] = torch.tensor([input_ids] * len(images))
    with torch.inference_mode():
        output = model.generate(**inputs, **REFERENCE_KWARGS)
    return _strip_prompt(processor.batch_decode(output, skip_special_tokens=True), prompt)


def _check_captions(captioner, images, prompt, reference):
    batched = captioner.generate(images, prompt, OPTIONS)
    assert batched == reference
    assert batched == [captioner.generate([image], prompt, OPTIONS)[0] for image in images]
    assert len(batched) == len(images)
    assert all(batched) and len(set(batched)) > 1, "captions should depend on the image"
    if prompt:
        assert not any(caption.lower().startswith(prompt.lower()) for caption in batched)


@pytest.mark.parametrize("prompt", [None, "Question: what is shown? Answer:"])
def test_blip2_matches_reference_usage_and_batching(blip2_path, images, prompt):
    captioner = load_captioner(str(blip2_path), device="cpu")
    assert captioner.family == "blip2"
    assert captioner.prompt_for(None) is None
    _check_captions(captioner, images, prompt, _reference_blip2(blip2_path, images, prompt))


@pytest.mark.parametrize("prompt", [None, "a photo of", "what is in the picture?"])
def test_git_matches_reference_usage_and_batching(git_path, images, prompt):
    captioner = load_captioner(str(git_path), device="cpu")
    assert captioner.family == "git"
    assert captioner.prompt_for(None) is None
    _check_captions(captioner, images, prompt, _reference_git(git_path, images, prompt))


def test_git_prompt_is_cls_then_prompt_tokens_without_sep(git_path, images):
    captioner = load_captioner(str(git_path), device="cpu")
    tokenizer = captioner.tokenizer
    inputs = captioner.prepare(images[:2], "a photo of")
    expected = [tokenizer.cls_token_id, *tokenizer("a photo of", add_special_tokens=False).input_ids]
    assert inputs["input_ids"].tolist() == [expected, expected]
    assert tokenizer.sep_token_id not in expected
    assert set(inputs) == {"pixel_values", "input_ids"}
    assert set(captioner.prepare(images[:2], None)) == {"pixel_values"}


def test_git_decodes_a_word_continued_across_the_prompt_as_the_reference_does(git_path):
    """A first new token ``##t`` after the prompt "a photo of a ca" joins "cat" in the reference text."""
    captioner = load_captioner(str(git_path), device="cpu")
    tokenizer = captioner.tokenizer
    prompt = "a photo of a ca"
    prompt_ids = [tokenizer.cls_token_id, *tokenizer(prompt, add_special_tokens=False).input_ids]
    new_ids = [*tokenizer.convert_tokens_to_ids(["##t", "o", "n"]), tokenizer.sep_token_id]
    generated = torch.tensor([prompt_ids + new_ids])
    reference = _strip_prompt(tokenizer.batch_decode(generated, skip_special_tokens=True), prompt)
    assert reference == ["t o n"]
    assert captioner.decode(generated, {"input_ids": torch.tensor([prompt_ids])}, prompt) == reference


def test_blip2_checkpoint_in_the_legacy_layout_still_sees_the_image(blip2_path, images, tmp_path):
    """Checkpoints saved before transformers 4.47 name neither the query count in the processor nor
    the image token in the config; the family fills both in and captions as the current layout does."""
    legacy = tmp_path / "legacy-blip2"
    shutil.copytree(blip2_path, legacy)
    for name, key in (("processor_config.json", "num_query_tokens"), ("config.json", "image_token_index")):
        settings = json.loads((legacy / name).read_text())
        settings.pop(key)
        (legacy / name).write_text(json.dumps(settings))
    captioner = load_captioner(str(legacy), device="cpu")
    assert captioner.family == "blip2"
    current = load_captioner(str(blip2_path), device="cpu")
    for prompt in (None, "Question: what is shown? Answer:"):
        assert captioner.generate(images, prompt, OPTIONS) == current.generate(images, prompt, OPTIONS)

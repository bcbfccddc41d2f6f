"""Vision encoder-decoder (ViT + GPT-2) and Florence-2 captioning families against their reference usage."""

from __future__ import annotations

import pytest
import torch

from mmcli.captioners import GenerationOptions, load_captioner
from mmcli.errors import UsageError

OPTIONS = GenerationOptions(max_new_tokens=12, min_new_tokens=8)
REFERENCE_KWARGS = {"max_new_tokens": 12, "min_new_tokens": 8, "do_sample": False, "num_beams": 1}


@pytest.fixture(scope="module")
def ved_path(tiny_models):
    return tiny_models["vision-encoder-decoder"]


@pytest.fixture(scope="module")
def florence2_path(tiny_models):
    return tiny_models["florence2"]


@pytest.fixture(scope="module")
def ved(ved_path):
    return load_captioner(str(ved_path), device="cpu")


@pytest.fixture(scope="module")
def florence2(florence2_path):
    return load_captioner(str(florence2_path), device="cpu")


def _reference_vision_encoder_decoder(path, images):
    """nlpconnect/vit-gpt2-image-captioning's model card: image processor and tokenizer loaded on their own,
    pixel values -> generate -> batch_decode(skip_special_tokens) -> strip."""
    from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel

    image_processor = AutoImageProcessor.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = VisionEncoderDecoderModel.from_pretrained(path).eval()
    pixel_values = image_processor(images=images, return_tensors="pt").pixel_values
    with torch.inference_mode():
        output_ids = model.generate(pixel_values, **REFERENCE_KWARGS)
    return [text.strip() for text in tokenizer.batch_decode(output_ids, skip_special_tokens=True)]


def _reference_florence2(path, images, task):
    """Florence2ForConditionalGeneration's docstring: processor(text=task, images) -> generate(**inputs)
    -> batch_decode(skip_special_tokens) (the task went to the encoder: nothing to cut) -> strip."""
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    processor = AutoProcessor.from_pretrained(path)
    model = Florence2ForConditionalGeneration.from_pretrained(path).eval()
    inputs = processor(text=[task] * len(images), images=images, return_tensors="pt")
    with torch.inference_mode():
        generated_ids = model.generate(**inputs, **REFERENCE_KWARGS)
    return [text.strip() for text in processor.batch_decode(generated_ids, skip_special_tokens=True)]


def _check_captions(captioner, images, prompt, reference):
    batched = captioner.generate(images, prompt, OPTIONS)
    assert batched == reference
    assert batched == [captioner.generate([image], prompt, OPTIONS)[0] for image in images]
    assert len(batched) == len(images)
    assert all(batched) and len(set(batched)) > 1, "captions should depend on the image"


def test_vision_encoder_decoder_matches_reference_usage_and_batching(ved, ved_path, images):
    assert ved.family == "vision-encoder-decoder"
    assert ved.prompt_for(None) is None
    _check_captions(ved, images, None, _reference_vision_encoder_decoder(ved_path, images))


def test_vision_encoder_decoder_loads_image_processor_and_tokenizer_without_processor_config(ved, ved_path):
    """Like nlpconnect/vit-gpt2-image-captioning, the folder has a preprocessor and a tokenizer only."""
    from transformers import GPT2Tokenizer, ViTImageProcessor

    assert not (ved_path / "processor_config.json").exists()
    assert isinstance(ved.processor.image_processor, ViTImageProcessor)
    assert isinstance(ved.tokenizer, GPT2Tokenizer)
    assert ved.model.generation_config.decoder_start_token_id == ved.tokenizer.eos_token_id


def test_vision_encoder_decoder_refuses_a_prompt_and_detail_levels(ved, images):
    with pytest.raises(UsageError, match="no --prompt"):
        ved.prompt_for("a photo of")
    with pytest.raises(UsageError, match="no --prompt"):
        ved.generate(images[:1], "a photo of", OPTIONS)
    with pytest.raises(UsageError, match="--detail"):
        ved.prompt_for(None, "detailed")


@pytest.mark.parametrize("detail", ["brief", "detailed", "more"])
def test_florence2_matches_reference_usage_and_batching(florence2, florence2_path, images, detail):
    assert florence2.family == "florence2"
    task = florence2.prompt_for(detail=detail)
    assert task == {"brief": "<CAPTION>", "detailed": "<DETAILED_CAPTION>", "more": "<MORE_DETAILED_CAPTION>"}[detail]
    _check_captions(florence2, images, task, _reference_florence2(florence2_path, images, task))


def test_florence2_default_prompt_is_the_caption_task(florence2, images):
    assert florence2.prompt_for(None) == "<CAPTION>"
    assert florence2.generate(images[:2], None, OPTIONS) == florence2.generate(images[:2], "<CAPTION>", OPTIONS)
    inputs = florence2.prepare(images[:2], None)
    assert set(inputs) == {"input_ids", "attention_mask", "pixel_values"}
    image_tokens = (inputs["input_ids"] == florence2.model.config.image_token_id).sum(dim=1)
    assert image_tokens.tolist() == [florence2.processor.num_image_tokens] * 2


def test_florence2_task_prompts_differ(florence2, images):
    """The task token reaches the encoder: a different task is a different input, and caption."""
    brief = florence2.prepare(images[:1], "<CAPTION>")["input_ids"]
    detailed = florence2.prepare(images[:1], "<DETAILED_CAPTION>")["input_ids"]
    assert brief.shape != detailed.shape or not torch.equal(brief, detailed)
    assert florence2.generate(images, "<CAPTION>", OPTIONS) != florence2.generate(images, "<DETAILED_CAPTION>", OPTIONS)


def test_florence2_accepts_other_text_tasks_and_refuses_location_tasks(florence2):
    assert florence2.prompt_for("<OCR>") == "<OCR>"
    with pytest.raises(UsageError, match="not a caption"):
        florence2.prompt_for("<OD>")
    with pytest.raises(UsageError, match="not a caption"):
        florence2.prompt_for("<CAPTION_TO_PHRASE_GROUNDING> a cat")
    with pytest.raises(UsageError, match="whole prompt"):
        florence2.prompt_for("<CAPTION> of a cat")

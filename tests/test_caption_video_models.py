"""Video-native captioners: tiny GIT (VATEX layout) and Qwen2-VL checkpoints caption whole clips as
their reference usage does, batches match one clip at a time, and image captioners refuse clips."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from test_caption_blip2_git import _strip_prompt

from mmcli.captioners import GenerationOptions, load_captioner
from mmcli.captioners.chat import DEFAULT_CHAT_VIDEO_FRAMES, ChatCaptioner
from mmcli.errors import UsageError

OPTIONS = GenerationOptions(max_new_tokens=12, min_new_tokens=8)
REFERENCE_KWARGS = {"max_new_tokens": 12, "min_new_tokens": 8, "do_sample": False, "num_beams": 1}
GIT_FRAMES = 4
CHAT_PROMPT = "What happens in this video?"


# -- clips: frames made directly as PIL images, no video file ------------------------------------


def _pan(photo: Image.Image, frames: int, size: tuple[int, int]) -> list[Image.Image]:
    """A camera panning across a photo, left to right: half-width crops, resized to ``size``."""
    width, height = photo.size
    crop = width // 2
    starts = np.linspace(0, width - crop, frames).astype(int)
    return [photo.crop((int(x), 0, int(x) + crop, height)).resize(size) for x in starts]


def _moving_square(frames: int, size: tuple[int, int], background: str, colour: str) -> list[Image.Image]:
    """A square crossing a plain background, one step per frame."""
    width, height = size
    side = min(size) // 3
    clip = []
    for i in range(frames):
        frame = Image.new("RGB", size, background)
        x = round(i * (width - side) / max(frames - 1, 1))
        ImageDraw.Draw(frame).rectangle((x, (height - side) // 2, x + side, (height + side) // 2), fill=colour)
        clip.append(frame)
    return clip


def _clips(images: list[Image.Image], frames: int) -> list[list[Image.Image]]:
    """Clips of different content and frame sizes (so dynamic-resolution models pad a batch)."""
    return [
        _pan(images[0], frames, (48, 40)),
        _moving_square(frames, (32, 32), "navy", "orange"),
        _pan(images[1], frames, (40, 56)),
    ]


# -- GIT video (microsoft/git-base-vatex layout) -------------------------------------------------


@pytest.fixture(scope="module")
def git_video_path(tiny_models) -> Path:
    return tiny_models["git_video"]


@pytest.fixture(scope="module")
def git_video(git_video_path):
    return load_captioner(str(git_video_path), device="cpu")


def _reference_git_video(path: Path, clips: list[list[Image.Image]], prompt: str | None) -> list[str]:
    """GIT's documented video captioning: ``processor(images=list(frames)).pixel_values`` (the VATEX
    checkpoints' VideoMAE processor makes it (1, frames, C, H, W)), clips stacked on the batch axis,
    [CLS] + the prompt's tokens for a prompt, generate, batch_decode(skip_special_tokens), prompt cut."""
    from transformers import AutoProcessor, GitForCausalLM

    processor = AutoProcessor.from_pretrained(path)
    model = GitForCausalLM.from_pretrained(path).eval()
    pixel_values = torch.cat([processor(images=list(clip), return_tensors="pt").pixel_values for clip in clips])
    assert pixel_values.shape[:2] == (len(clips), model.config.num_image_with_embedding)
    inputs = {"pixel_values": pixel_values}
    if prompt:
        input_ids = [processor.tokenizer.cls_token_id, *processor(text=prompt, add_special_tokens=False).input_ids]
        inputs["input_ids"] = torch.tensor([input_ids] * len(clips))
    with torch.inference_mode():
        output = model.generate(**inputs, **REFERENCE_KWARGS)
    return _strip_prompt(processor.batch_decode(output, skip_special_tokens=True), prompt)


def test_git_video_checkpoint_takes_clips_of_its_temporal_embeddings(git_video):
    assert git_video.family == "git"
    assert git_video.clip_frames == GIT_FRAMES == git_video.model.config.num_image_with_embedding
    assert git_video.video_prompt_for(None) is None


@pytest.mark.parametrize("prompt", [None, "a video of"])
def test_git_video_matches_reference_usage_and_batching(git_video, git_video_path, images, prompt):
    clips = _clips(images, GIT_FRAMES)
    batched = git_video.generate_videos(clips, prompt, OPTIONS)
    assert batched == _reference_git_video(git_video_path, clips, prompt)
    assert batched == [git_video.generate_videos([clip], prompt, OPTIONS)[0] for clip in clips]
    assert all(batched) and len(set(batched)) == len(clips), "captions should depend on the clip"
    if prompt:
        assert not any(caption.lower().startswith(prompt) for caption in batched)


def test_git_video_inputs_are_one_row_of_frames_per_clip_in_time_order(git_video, images):
    clips = _clips(images, GIT_FRAMES)[:2]
    inputs = git_video.prepare_videos(clips, "a video of")
    assert inputs["pixel_values"].shape == (2, GIT_FRAMES, 3, 32, 32)
    single = git_video.processor(images=clips[1][2], return_tensors="pt").pixel_values.reshape(3, 32, 32)
    assert torch.equal(inputs["pixel_values"][1, 2], single)
    tokenizer = git_video.tokenizer
    expected = [tokenizer.cls_token_id, *tokenizer("a video of", add_special_tokens=False).input_ids]
    assert inputs["input_ids"].tolist() == [expected, expected]
    # Each frame carries its temporal embedding, so the order of the frames reaches the model.
    forward, backward = git_video.generate_videos([clips[0], clips[0][::-1]], None, OPTIONS)
    assert forward != backward


def test_git_video_checkpoint_still_captions_images_one_each(git_video, images):
    """Its VideoMAE processor would make a batch of photos one clip; each photo stays its own row."""
    inputs = git_video.prepare(images, None)
    assert inputs["pixel_values"].shape == (len(images), 3, 32, 32)
    captions = git_video.generate(images, None, OPTIONS)
    assert len(captions) == len(images) and all(captions)


def test_git_video_refuses_clips_of_another_length(git_video, images):
    clip = _clips(images, GIT_FRAMES)[0]
    with pytest.raises(UsageError, match=f"exactly {GIT_FRAMES} frames, not 3, 5"):
        git_video.generate_videos([clip[:3], clip + clip[:1]], None, OPTIONS)
    assert git_video.generate_videos([], None, OPTIONS) == []


# -- Qwen2-VL --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen_path(tiny_models) -> Path:
    return tiny_models["qwen2_vl"]


@pytest.fixture(scope="module")
def qwen(qwen_path) -> ChatCaptioner:
    return load_captioner(str(qwen_path), device="cpu")


def _video_messages(prompt: str, clip: list[Image.Image] | None = None) -> list[dict]:
    video = {"type": "video"} if clip is None else {"type": "video", "video": clip}
    return [{"role": "user", "content": [video, {"type": "text", "text": prompt}]}]


def _reference_qwen_video(path: Path, clips: list[list[Image.Image]], prompt: str) -> list[str]:
    """The model card's video usage: chat template with a video entry -> processor(text, videos) with
    left padding -> generate -> the new tokens decoded."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    text = processor.apply_chat_template(_video_messages(prompt), add_generation_prompt=True)
    inputs = processor(
        text=[text] * len(clips), videos=[list(clip) for clip in clips], padding=True, return_tensors="pt"
    )
    with torch.inference_mode():
        output = model.generate(**inputs, **REFERENCE_KWARGS)
    decoded = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return [" ".join(text.split()) for text in decoded]


def test_qwen2_vl_takes_clips_of_whole_temporal_patches(qwen):
    assert qwen.family == "chat"
    assert qwen.clip_frames == DEFAULT_CHAT_VIDEO_FRAMES
    assert qwen.clip_frames % qwen.processor.video_processor.temporal_patch_size == 0
    assert qwen.video_prompt_for(None) == "Describe this video in one sentence."
    assert qwen.video_prompt_for(None, "detailed") == "Describe this video in detail."
    assert qwen.video_prompt_for(CHAT_PROMPT, "more") == CHAT_PROMPT
    assert qwen.prompt_for(None) == "Describe this image in one sentence."


@pytest.mark.parametrize("prompt", [None, CHAT_PROMPT])
def test_qwen2_vl_video_matches_reference_usage(qwen, qwen_path, images, prompt):
    clips = _clips(images, qwen.clip_frames)
    captions = qwen.generate_videos(clips, prompt, OPTIONS)
    assert captions == _reference_qwen_video(qwen_path, clips, prompt or ChatCaptioner.default_video_prompt)
    assert all(captions) and len(set(captions)) == len(clips), "captions should depend on the clip"


def test_qwen2_vl_video_batches_match_one_clip_at_a_time(qwen, images):
    clips = _clips(images, qwen.clip_frames)
    inputs = qwen.prepare_videos(clips, CHAT_PROMPT)
    mask = inputs["attention_mask"]
    # Clips of different frame sizes have different numbers of video tokens: padded on the left.
    assert not bool(mask.all()) and bool(mask[:, -1].all()) and not bool(mask[:, 0].all())
    assert "pixel_values" not in inputs and inputs["video_grid_thw"][:, 0].tolist() == [qwen.clip_frames // 2] * 3
    batched = qwen.generate_videos(clips, CHAT_PROMPT, OPTIONS)
    assert batched == [qwen.generate_videos([clip], CHAT_PROMPT, OPTIONS)[0] for clip in clips]


def test_qwen2_vl_video_inputs_match_the_processors_own_chat_tokenization(qwen, images):
    """One rendered text per clip with the video placeholder expanded, every frame kept as given."""
    clips = _clips(images, qwen.clip_frames)[:2]
    expected = qwen.processor.apply_chat_template(
        [_video_messages(CHAT_PROMPT, clip) for clip in clips],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": True, "do_sample_frames": False},
    )
    inputs = qwen.prepare_videos(clips, CHAT_PROMPT)
    assert sorted(inputs.keys()) == sorted(expected.keys())
    for key, value in expected.items():
        assert torch.equal(inputs[key], value), key


def test_chat_model_whose_template_has_no_video_branch_captions_frame_by_frame(qwen_path, tmp_path, images):
    """A template that drops ``{"type": "video"}`` would show the model no clip at all."""
    folder = tmp_path / "no-video-template"
    shutil.copytree(qwen_path, folder)
    template = folder / "chat_template.jinja"
    if template.exists():
        text = template.read_text()
        template.write_text(
            text.replace("{% elif content['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>", "")
        )
    else:
        config = json.loads((folder / "processor_config.json").read_text())
        config["chat_template"] = config["chat_template"].replace(
            "{% elif content['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>", ""
        )
        (folder / "processor_config.json").write_text(json.dumps(config))
    captioner = load_captioner(str(folder), device="cpu")
    assert "<|video_pad|>" not in captioner.chat_text(None, "video")
    assert captioner.clip_frames is None
    with pytest.raises(UsageError, match="does not take video input"):
        captioner.generate_videos([_clips(images, 8)[0]])
    assert captioner.generate(images[:1], None, OPTIONS)[0]


# -- image captioners --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["blip", "git"], ids=["blip", "git-image"])
def test_image_captioners_refuse_clips_with_a_clear_error(name, tiny_models, images):
    captioner = load_captioner(str(tiny_models[name]), device="cpu")
    assert captioner.clip_frames is None
    with pytest.raises(UsageError, match=r"does not take video input; caption its videos frame by frame"):
        captioner.generate_videos([_clips(images, 4)[0]], None, OPTIONS)
    with pytest.raises(UsageError, match="does not take video input"):
        captioner.prepare_videos([_clips(images, 4)[0]], None)

"""Chat vision-language models (``AutoModelForImageTextToText``): SmolVLM, Idefics, Qwen2-VL, LLaVA, Gemma 3, ...

They are instructed rather than prompted with a caption prefix: the prompt is the user's turn of a
conversation, ``[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]``,
rendered by the processor's chat template with the assistant's turn opened. A batch is one rendered
text per image, tokenized with left padding (the models are decoder-only: new tokens follow each
row's last real token), and the answer is the tokens after the input, decoded without special tokens.

Video: for the architectures in :data:`VIDEO_CHAT_MODEL_TYPES` a clip is captioned whole. The user's
turn holds ``{"type": "video"}`` instead of the image, and the processor gets ``videos=[frames of each
clip]`` (already-decoded PIL frames; nothing is read from a file, so neither ``av`` nor ``decord`` is
needed) with ``do_sample_frames=False``, so the video processor keeps exactly the frames given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from mmcli.captioners.base import Captioner
from mmcli.errors import UnsupportedModel
from mmcli.loading import from_pretrained, load_processor

# Chat architectures whose video path takes frames mmcli has already sampled, with nothing else about
# them: Qwen2-VL places frames by their index alone (its temporal rotary position counts pairs of
# frames). Others are left to frame-by-frame captioning because their processors need what a list of
# frames does not carry: Qwen2.5-VL and Qwen3-VL derive positions or timestamps from the video's fps
# (missing, they assume 24 fps: a clip of 8 frames would look a third of a second long), and SmolVLM2
# writes frame timestamps into the prompt (and its processor needs the num2words package).
VIDEO_CHAT_MODEL_TYPES = frozenset({"qwen2_vl"})
# Frames per clip where the checkpoint's video processor names no ``num_frames``: enough to show
# what happens in a shot, few enough to caption on a CPU (for Qwen2-VL at its default resolution, 8
# frames are 4 temporal patches of 128 to 768 tokens each), and even, as those 2-frame patches need.
DEFAULT_CHAT_VIDEO_FRAMES = 8


def chat_clip_frames(processor: Any) -> int:
    """Frames per clip for a chat model's video processor: its configured ``num_frames`` or
    :data:`DEFAULT_CHAT_VIDEO_FRAMES`, rounded up to whole temporal patches (``temporal_patch_size``
    frames each, 2 for Qwen2-VL), which the processor would otherwise fill by repeating the last frame."""
    video_processor = processor.video_processor
    frames = getattr(video_processor, "num_frames", None)
    frames = frames if isinstance(frames, int) and frames > 0 else DEFAULT_CHAT_VIDEO_FRAMES
    step = getattr(video_processor, "temporal_patch_size", None)
    step = step if isinstance(step, int) and step > 0 else 1
    return -(-frames // step) * step


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
    default_video_prompt = "Describe this video in one sentence."
    video_detail_prompts: ClassVar[dict[str, str] | None] = {
        "detailed": "Describe this video in detail.",
        "more": (
            "Describe this video in great detail, including the setting, the people, animals and objects "
            "in it, what they do and how the scene changes over time, and any visible text."
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
        if self._takes_video():
            self.clip_frames = chat_clip_frames(processor)

    def _takes_video(self) -> bool:
        """Whether clips go to the model whole: a listed architecture whose processor has a video
        processor and whose chat template writes the video placeholder (a template without a video
        branch would silently drop the clip from the prompt)."""
        if getattr(self.model.config, "model_type", None) not in VIDEO_CHAT_MODEL_TYPES:
            return False
        if getattr(self.processor, "video_processor", None) is None:
            return False
        try:
            text = self.chat_text(None, "video")
        except Exception:  # a template that refuses an unknown content type
            return False
        token = getattr(self.processor, "video_token", None)
        return bool(token) and token in text

    def chat_text(self, prompt: str | None, media: str = "image") -> str:
        """The rendered conversation for one image (or ``media="video"``: one clip): the user's turn,
        then the assistant's opened."""
        content: list[dict[str, str]] = [{"type": media}]
        if prompt:
            content.append({"type": "text", "text": prompt})
        messages = [{"role": "user", "content": content}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _text_kwargs(self, text: str) -> dict[str, Any]:
        # Explicit, so neither the tokenizer's saved padding side nor a processor default can put it on the right.
        kwargs: dict[str, Any] = {"padding": True, "padding_side": "left", "return_tensors": "pt"}
        # A template that writes the BOS token itself (Idefics3, Gemma 3) must not get a second one from
        # the tokenizer; the processor's own apply_chat_template(tokenize=True) makes the same choice.
        bos = getattr(self.tokenizer, "bos_token", None)
        if bos and text.startswith(bos):
            kwargs["add_special_tokens"] = False
        return kwargs

    def prepare_videos(self, clips: Sequence[Sequence[Any]], prompt: str | None) -> dict[str, Any]:
        """One rendered text per clip with a video placeholder, and the clips as lists of frames.
        ``do_sample_frames=False``: the frames are already the ones to show (some checkpoints' video
        processors sample by default, and from a list of frames they would refuse or resample)."""
        if self.clip_frames is None:
            return super().prepare_videos(clips, prompt)
        text = self.chat_text(prompt, "video")
        videos = [list(clip) for clip in clips]
        return self.processor(
            text=[text] * len(videos), videos=videos, do_sample_frames=False, **self._text_kwargs(text)
        )

    def prepare(self, images: Sequence[Any], prompt: str | None) -> dict[str, Any]:
        text = self.chat_text(prompt)
        kwargs = self._text_kwargs(text)
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


def load_chat(
    name: str, path: str, config: Any, *, device: str, dtype: Any, trust_remote_code: bool = False
) -> ChatCaptioner:
    try:
        processor = load_processor(name, path, trust_remote_code=trust_remote_code)
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

"""The Captioner interface: ``generate(images, prompt)`` for every captioning family, and
``generate_videos(clips, prompt)`` for those whose models take a whole clip at once.

Families say how to build model inputs from images (or clips) and a prompt (their processor's
reference usage) and, where needed, how to decode; device, dtype, generation settings,
``inference_mode`` and caption cleaning live here once, shared by images and videos.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from mmcli.errors import UsageError
from mmcli.loading import from_pretrained, load_processor, move_to
from mmcli.media.images import decode_min_side

if TYPE_CHECKING:
    from PIL import Image

DETAIL_LEVELS = ("brief", "detailed", "more")
# Past about 8 images, batched generation on two CPU cores gains little and delays the first results.
CPU_CAPTION_BATCH_SIZE = 8
GPU_CAPTION_BATCH_SIZE = 32


@dataclass(frozen=True)
class GenerationOptions:
    """Decoding settings; the defaults are greedy decoding of up to 30 new tokens."""

    max_new_tokens: int = 30
    min_new_tokens: int | None = None
    num_beams: int = 1
    repetition_penalty: float | None = None
    temperature: float = 0.0
    top_p: float | None = None
    seed: int | None = None

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``model.generate``. Every setting a flag controls is passed explicitly,
        so a checkpoint's generation_config (some turn sampling on) cannot override it; settings no
        flag covers (e.g. ``no_repeat_ngram_size``) still come from the checkpoint, as in reference usage."""
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams}
        if self.min_new_tokens is not None:
            kwargs["min_new_tokens"] = self.min_new_tokens
        if self.repetition_penalty is not None:
            kwargs["repetition_penalty"] = self.repetition_penalty
        if self.temperature > 0:
            kwargs.update(do_sample=True, temperature=self.temperature)
            if self.top_p is not None:
                kwargs["top_p"] = self.top_p
        else:
            kwargs["do_sample"] = False
        return kwargs


class Captioner:
    """Writes captions for batches of PIL images (and, for video-native models, of clips).

    Attributes:
        name: the model name or folder as given (recorded in each record's ``model``).
        family: the registered family that handles the checkpoint.
        default_prompt: the prompt used when none is given (``None``: unconditional captioning).
        detail_prompts: prompts for ``--detail`` levels, for families that have them.
        echoes_prompt: whether output may repeat the prompt, to be cut by :func:`clean_caption`.
        clip_frames: frames per clip for models that caption a whole clip natively (``None``: an
            image captioner, whose videos are captioned frame by frame).
    """

    family: ClassVar[str] = ""
    default_prompt: ClassVar[str | None] = None
    detail_prompts: ClassVar[dict[str, str] | None] = None
    #: Whether the decoded output may repeat the prompt (a text prefix), which cleaning then removes;
    #: an instruction (chat models) is never echoed, and an answer may well start with its words.
    echoes_prompt: ClassVar[bool] = True
    #: Whether the processor resizes every image to one fixed size, so JPEGs may be decoded at
    #: reduced scale (see ``decode_min_side``); tiling and dynamic-resolution processors do not.
    fixed_input_size: ClassVar[bool] = True
    #: Prompts for clips, where a family words them differently from its image prompts (``None``:
    #: the image ones); see :meth:`video_prompt_for`.
    default_video_prompt: ClassVar[str | None] = None
    video_detail_prompts: ClassVar[dict[str, str] | None] = None
    quantized: str | None = None
    #: Frames per video for models that caption a whole clip natively; None: an image captioner
    #: (videos are captioned frame by frame). Set per instance from the checkpoint.
    clip_frames: int | None = None

    def __init__(self, name: str, model: Any, processor: Any, *, device: str, dtype: torch.dtype) -> None:
        self.name = name
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = device
        self.dtype = dtype
        image_processor = getattr(processor, "image_processor", None)
        self.decode_min_side = decode_min_side(image_processor) if self.fixed_input_size else None

    @property
    def default_batch_size(self) -> int:
        """Images per ``generate`` call when the user gives none: small on CPUs, larger on GPUs."""
        return GPU_CAPTION_BATCH_SIZE if self.device.startswith("cuda") else CPU_CAPTION_BATCH_SIZE

    @classmethod
    def from_checkpoint(
        cls, name: str, path: str, model_class: str, *, device: str, dtype: torch.dtype, trust_remote_code: bool
    ) -> Captioner:
        """The usual layout: ``model_class`` weights (none may be missing) and an ``AutoProcessor``."""
        model = from_pretrained(
            model_class, name, path, dtype=dtype, trust_remote_code=trust_remote_code, allow_missing=()
        )
        processor = load_processor(name, path, trust_remote_code=trust_remote_code)
        return cls(name, model, processor, device=device, dtype=dtype)

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    def prompt_for(self, prompt: str | None = None, detail: str | None = None) -> str | None:
        """The prompt a run uses: an explicit one, else the ``detail`` level's, else the default."""
        if prompt is not None:
            return prompt
        if detail and detail != "brief":
            if not self.detail_prompts or detail not in self.detail_prompts:
                raise UsageError(
                    f"--detail {detail} is not available for {self.family} models; "
                    "they write one short caption (use --prompt to steer them)"
                )
            return self.detail_prompts[detail]
        return self.default_prompt

    def video_prompt_for(self, prompt: str | None = None, detail: str | None = None) -> str | None:
        """The prompt a run over clips uses: as :meth:`prompt_for`, but from the family's video
        wording where it has one (a chat model asked to "describe this image" about a clip is
        told something untrue about its input)."""
        if prompt is not None:
            return prompt
        if detail and detail != "brief" and self.video_detail_prompts and detail in self.video_detail_prompts:
            return self.video_detail_prompts[detail]
        if (not detail or detail == "brief") and self.default_video_prompt is not None:
            return self.default_video_prompt
        return self.prompt_for(None, detail)

    # -- what families implement -------------------------------------------------------------
    def prepare(self, images: Sequence[Any], prompt: str | None) -> dict[str, Any]:
        """Model inputs for a batch, as the family's reference usage builds them."""
        if prompt:
            return self.processor(images=list(images), text=[prompt] * len(images), return_tensors="pt")
        return self.processor(images=list(images), return_tensors="pt")

    def prepare_videos(self, clips: Sequence[Sequence[Any]], prompt: str | None) -> dict[str, Any]:
        """Model inputs for a batch of clips (each ``clip_frames`` frames, in time order), as the
        family's reference usage for video builds them; only video-native families implement it."""
        raise UsageError(self._no_video_message())

    def decode(self, generated: torch.Tensor, inputs: dict[str, Any], prompt: str | None) -> list[str]:
        """Text of the new tokens. A decoder-only model's output starts with its input ids: the whole
        sequence is decoded and the decoded input cut off, as reference usage does, because decoding
        the new ids alone differs where the first one continues the prompt's last word (a WordPiece
        ``##`` piece, or a multi-byte character split across the cut)."""
        decode = self.tokenizer.batch_decode
        input_ids = inputs.get("input_ids")
        is_decoder_only = not getattr(self.model.config, "is_encoder_decoder", False)
        length = 0 if input_ids is None or not is_decoder_only else input_ids.shape[1]
        if not length or generated.shape[1] < length or not torch.equal(generated[:, :length], input_ids):
            return decode(generated, skip_special_tokens=True)
        texts = decode(generated, skip_special_tokens=True)
        prefixes = decode(input_ids, skip_special_tokens=True)
        new_only = decode(generated[:, length:], skip_special_tokens=True)
        return [
            text[len(prefix) :] if text.startswith(prefix) else fallback
            for text, prefix, fallback in zip(texts, prefixes, new_only, strict=True)
        ]

    # -- shared machinery --------------------------------------------------------------------
    def generate(
        self, images: Sequence[Any], prompt: str | None = None, options: GenerationOptions | None = None
    ) -> list[str]:
        """One cleaned caption per image, in order."""
        prompt = self.default_prompt if prompt is None else prompt
        return self._run(self.prepare(images, prompt), prompt, options)

    def generate_videos(
        self,
        clips: Sequence[Sequence[Image.Image]],
        prompt: str | None = None,
        options: GenerationOptions | None = None,
    ) -> list[str]:
        """One cleaned caption per clip (each clip is exactly ``clip_frames`` frames, in time order).

        Raises :class:`UsageError` for an image captioner (``clip_frames is None``), and for a clip
        of another length: the model was trained on clips of that many frames (GIT has one temporal
        embedding per frame), so sampling them is the caller's job, not something to guess here.
        """
        if self.clip_frames is None:
            raise UsageError(self._no_video_message())
        clips = [list(clip) for clip in clips]
        if not clips:
            return []
        wrong = sorted({len(clip) for clip in clips} - {self.clip_frames})
        if wrong:
            raise UsageError(
                f"model {self.name!r} captions clips of exactly {self.clip_frames} frames, "
                f"not {', '.join(map(str, wrong))}"
            )
        prompt = self.video_prompt_for(None) if prompt is None else prompt
        return self._run(self.prepare_videos(clips, prompt), prompt, options)

    def _run(self, inputs: dict[str, Any], prompt: str | None, options: GenerationOptions | None) -> list[str]:
        """Generate from prepared inputs and return the cleaned captions: the part images and clips share."""
        options = options or GenerationOptions()
        inputs = move_to(inputs, self.device, self.dtype)
        with torch.inference_mode():
            generated = self.model.generate(**inputs, **options.generate_kwargs())
        sequences = generated.sequences if hasattr(generated, "sequences") else generated
        echoed = prompt if self.echoes_prompt else None
        return [clean_caption(text, echoed) for text in self.decode(sequences, inputs, prompt)]

    def _no_video_message(self) -> str:
        return (
            f"model {self.name!r} ({self.family} family) does not take video input; "
            "caption its videos frame by frame instead"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device!r}, dtype={self.dtype})"


_SPACES = re.compile(r"\s+")


def clean_caption(text: str, prompt: str | None = None) -> str:
    """Collapse whitespace and drop an echoed prompt (BLIP and GIT repeat their prefix)."""
    text = _SPACES.sub(" ", text).strip()
    if prompt:
        echoed = _SPACES.sub(" ", prompt).strip()
        if echoed and text.lower().startswith(echoed.lower()):
            text = text[len(echoed) :].strip()
    return text

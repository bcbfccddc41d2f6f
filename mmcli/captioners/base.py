"""The Captioner interface: ``generate(images, prompt)`` for every captioning family, and
``generate_videos(clips, prompt)`` for those whose models take a whole clip at once.

Families say how to build model inputs from images (or clips) and a prompt (their processor's
reference usage) and, where needed, how to decode; generation settings, ``inference_mode`` and
caption cleaning live here once, shared by images and videos (device, dtype and loading in
:class:`~mmcli.models.LoadedModel`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from mmcli.captioners.options import GenerationOptions
from mmcli.errors import UsageError
from mmcli.models import LoadedModel

if TYPE_CHECKING:
    from PIL import Image


class Captioner(LoadedModel):
    """Writes captions for batches of PIL images (and, for video-native models, of clips).

    Attributes (beyond :class:`~mmcli.models.LoadedModel`'s):
        default_prompt: the prompt used when none is given (``None``: unconditional captioning).
        detail_prompts: prompts for ``--detail`` levels, for families that have them.
        echoes_prompt: whether output may repeat the prompt, to be cut by :func:`clean_caption`.
        clip_frames: frames per clip for models that caption a whole clip natively (``None``: an
            image captioner, whose videos are captioned frame by frame); set per instance from the
            checkpoint.
    """

    # Past about 8 images, batched generation on two CPU cores gains little and delays the first results.
    cpu_batch_size = 8
    gpu_batch_size = 32
    default_prompt: ClassVar[str | None] = None
    detail_prompts: ClassVar[dict[str, str] | None] = None
    #: Whether the decoded output may repeat the prompt (a text prefix), which cleaning then removes;
    #: an instruction (chat models) is never echoed, and an answer may well start with its words.
    echoes_prompt: ClassVar[bool] = True
    #: Prompts for clips, where a family words them differently from its image prompts (``None``:
    #: the image ones); see :meth:`video_prompt_for`.
    default_video_prompt: ClassVar[str | None] = None
    video_detail_prompts: ClassVar[dict[str, str] | None] = None

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
        inputs = self.to_device(inputs)
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


_SPACES = re.compile(r"\s+")


def clean_caption(text: str, prompt: str | None = None) -> str:
    """Collapse whitespace and drop an echoed prompt (BLIP and GIT repeat their prefix)."""
    text = _SPACES.sub(" ", text).strip()
    if prompt:
        echoed = _SPACES.sub(" ", prompt).strip()
        if echoed and text.lower().startswith(echoed.lower()):
            text = text[len(echoed) :].strip()
    return text

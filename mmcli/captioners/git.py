"""GIT (``GitForCausalLM``): unconditional captions, or continuing a prompt (a question for the
VQA checkpoints, or a caption prefix), of images or, for the video checkpoints, of clips.

GIT's documented conditional usage tokenizes the prompt without special tokens and puts only
``[CLS]`` in front: the ``[SEP]`` a BERT tokenizer would append marks the end of a caption, so the
model would have nothing left to write.

The video checkpoints (``microsoft/git-base-vatex``, ``git-large-vatex``, ``*-msrvtt-qa``) have
``config.num_image_with_embedding`` frames, one learned temporal embedding each: a clip is that many
frames, encoded one by one, each tagged with its position, and their patch tokens concatenated in
front of the text. The documented usage is ``processor(images=list(frames)).pixel_values`` (their
``VideoMAEImageProcessor`` makes it ``(1, frames, C, H, W)``) -> ``model.generate(pixel_values)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mmcli.captioners.base import Captioner


def git_clip_frames(config: Any) -> int | None:
    """Frames per clip of a GIT video checkpoint (its temporal embeddings); ``None`` for image ones."""
    frames = getattr(config, "num_image_with_embedding", None)
    return frames if isinstance(frames, int) and frames > 1 else None


class GitCaptioner(Captioner):
    family = "git"

    def __init__(self, name: str, model: Any, processor: Any, *, device: str, dtype: torch.dtype) -> None:
        super().__init__(name, model, processor, device=device, dtype=dtype)
        self.clip_frames = git_clip_frames(model.config)

    def _pixel_values(self, images: list[Any]) -> torch.Tensor:
        """One ``(C, H, W)`` row per image, whichever processor the checkpoint has: the video
        checkpoints' ``VideoMAEImageProcessor`` takes a flat list of images as one video's frames
        and adds a frame axis, which would make a batch of photos one clip."""
        pixel_values = self.processor(images=images, return_tensors="pt")["pixel_values"]
        return pixel_values.reshape(-1, *pixel_values.shape[-3:])

    def _prompt_ids(self, prompt: str | None, rows: int) -> dict[str, Any]:
        if not prompt:
            return {}
        ids = self.processor(text=prompt, add_special_tokens=False)["input_ids"]
        start = self.tokenizer.cls_token_id
        if start is None:
            start = self.model.config.bos_token_id
        return {"input_ids": torch.tensor([[start, *ids]] * rows, dtype=torch.long)}

    def prepare(self, images: Sequence[Any], prompt: str | None) -> dict[str, Any]:
        return {"pixel_values": self._pixel_values(list(images)), **self._prompt_ids(prompt, len(images))}

    def prepare_videos(self, clips: Sequence[Sequence[Any]], prompt: str | None) -> dict[str, Any]:
        """``pixel_values`` of shape ``(clips, frames, C, H, W)``, the model's video input: every frame
        preprocessed as the documented usage does, then grouped back into its clip, in time order."""
        if self.clip_frames is None:  # an image checkpoint: no temporal embeddings to place frames with
            return super().prepare_videos(clips, prompt)
        pixel_values = self._pixel_values([frame for clip in clips for frame in clip])
        pixel_values = pixel_values.reshape(len(clips), -1, *pixel_values.shape[1:])
        return {"pixel_values": pixel_values, **self._prompt_ids(prompt, len(clips))}


def load_git(
    name: str, path: str, config: Any, *, device: str, dtype: Any, trust_remote_code: bool = False
) -> GitCaptioner:
    return GitCaptioner.from_checkpoint(
        name, path, "GitForCausalLM", device=device, dtype=dtype, trust_remote_code=trust_remote_code
    )

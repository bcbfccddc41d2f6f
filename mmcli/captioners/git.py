"""GIT (``GitForCausalLM``): unconditional captions, or continuing a prompt (a question for the
VQA checkpoints, or a caption prefix).

GIT's documented conditional usage tokenizes the prompt without special tokens and puts only
``[CLS]`` in front: the ``[SEP]`` a BERT tokenizer would append marks the end of a caption, so the
model would have nothing left to write.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mmcli.captioners.base import Captioner
from mmcli.captioners.registry import register_captioner


class GitCaptioner(Captioner):
    family = "git"

    def prepare(self, images: Sequence[Any], prompt: str | None) -> dict[str, Any]:
        inputs = {"pixel_values": self.processor(images=list(images), return_tensors="pt")["pixel_values"]}
        if prompt:
            ids = self.processor(text=prompt, add_special_tokens=False)["input_ids"]
            start = self.tokenizer.cls_token_id
            if start is None:
                start = self.model.config.bos_token_id
            inputs["input_ids"] = torch.tensor([[start, *ids]] * len(images), dtype=torch.long)
        return inputs


@register_captioner(
    "git", description="GIT image captioning and visual questions (optional prompt)", model_types=("git",)
)
def load_git(
    name: str, path: str, config: Any, *, device: str, dtype: Any, trust_remote_code: bool = False
) -> GitCaptioner:
    captioner = GitCaptioner.from_checkpoint(
        name, path, "GitForCausalLM", device=device, dtype=dtype, trust_remote_code=trust_remote_code
    )
    return captioner

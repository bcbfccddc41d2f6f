"""Florence-2 (``Florence2ForConditionalGeneration``, native in transformers 5): a DaViT image encoder
whose tokens, with a task prompt's, feed a BART encoder-decoder.

Florence-2 is steered by task tokens: ``<CAPTION>``, ``<DETAILED_CAPTION>`` and
``<MORE_DETAILED_CAPTION>`` write captions of growing length (the default and the ``--detail``
levels); ``--prompt`` may name another text task (``<OCR>``) or give free text for fine-tuned
checkpoints. Tasks that answer with boxes or polygons are refused: a caption keeps only text.

Reference usage (the model's docstring): ``processor(text=task, images=image)`` ->
``model.generate(**inputs)`` -> ``processor.batch_decode(skip_special_tokens=True)``. The
processor's ``post_process_generation`` does the same for caption tasks (it drops ``<s>`` and
``</s>`` from a decoding that keeps special tokens), but would leave ``<pad>`` in batched outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from mmcli.captioners.base import Captioner
from mmcli.errors import UnsupportedModel, UsageError

CAPTION_TASKS = ("<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>")


class Florence2Captioner(Captioner):
    family = "florence2"
    echoes_prompt = False  # a task token is answered, never repeated
    default_prompt: ClassVar[str | None] = "<CAPTION>"
    detail_prompts: ClassVar[dict[str, str] | None] = {
        "detailed": "<DETAILED_CAPTION>",
        "more": "<MORE_DETAILED_CAPTION>",
    }

    def check_prompt(self, prompt: str) -> None:
        """Refuse task tokens whose answers are not text, and a bare task token with other text."""
        answer_types: dict[str, str] = getattr(self.processor, "tasks_answer_post_processing_type", {})
        bare_tasks = getattr(self.processor, "task_prompts_without_inputs", {})
        for task, answer_type in answer_types.items():
            if task not in prompt:
                continue
            if answer_type != "pure_text":
                raise UsageError(
                    f"{task} is a Florence-2 task that answers with {answer_type.replace('_', ' ')}, not a caption; "
                    f"use {', '.join(CAPTION_TASKS)} or another text task such as <OCR>"
                )
            if task in bare_tasks and prompt != task:  # the processor's own rule, which raises a ValueError
                raise UsageError(f"the Florence-2 task {task} must be the whole prompt, without other text")

    def prompt_for(self, prompt: str | None = None, detail: str | None = None) -> str | None:
        """The prompt a run uses, checked up front so that a bad one stops the run before any image is read."""
        resolved = super().prompt_for(prompt, detail)
        self.check_prompt(resolved or self.default_prompt)
        return resolved

    def prepare(self, images: Sequence[Any], prompt: str | None) -> dict[str, Any]:
        prompt = prompt or self.default_prompt
        self.check_prompt(prompt)
        return self.processor(text=[prompt] * len(images), images=list(images), return_tensors="pt")


def load_florence2(
    name: str, path: str, config: Any, *, device: str, dtype: Any, trust_remote_code: bool = False
) -> Florence2Captioner:
    if getattr(config, "auto_map", None):
        raise UnsupportedModel(
            f"{name!r} is a Florence-2 checkpoint in the original remote-code layout, which the Florence-2 of "
            "transformers 5 does not load; use a converted one such as florence-community/Florence-2-base"
        )
    return Florence2Captioner.from_checkpoint(
        name,
        path,
        "Florence2ForConditionalGeneration",
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )

"""How captions are decoded, as settings a run records and checks before any model loads (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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

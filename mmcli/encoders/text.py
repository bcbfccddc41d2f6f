"""Sentence encoders (BERT-like AutoModel) pooled the way sentence-transformers pools them."""

from __future__ import annotations

import json
from typing import Any

import torch

from mmcli.encoders.base import Encoder, accepted_kwargs, text_max_length
from mmcli.loading import from_pretrained

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len", "lasttoken")  # sentence-transformers concat order


class TextEncoder(Encoder):
    """Token embeddings pooled per the checkpoint's ``1_Pooling/config.json`` (mean by default)."""

    family = "text"
    modalities = frozenset({"text"})

    def __init__(
        self,
        name: str,
        model: Any,
        tokenizer: Any,
        config: Any,
        *,
        pooling: tuple[str, ...] = ("mean",),
        max_length: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, model, **kwargs)
        self.tokenizer = tokenizer
        self.config = config
        self.pooling = pooling
        self.max_length = max_length or text_max_length(config, tokenizer)

    @classmethod
    def load_processor(cls, name: str, path: str, *, trust_remote_code: bool) -> Any:
        """Sentence encoders ship a tokenizer, not a processor."""
        return from_pretrained(
            "AutoTokenizer", name, path, what="tokenizer of model", trust_remote_code=trust_remote_code
        )

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        inputs = self.to_device(dict(tokens))
        hidden = self.model(**accepted_kwargs(self.model.forward, inputs)).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = [_pool(mode, hidden, mask) for mode in self.pooling]
        return torch.cat(pooled, dim=-1)

    def _config_dim(self) -> int | None:
        size = getattr(self.config, "hidden_size", None)
        return int(size) * len(self.pooling) if isinstance(size, int) else None


def _pool(mode: str, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).amax(dim=1)
    if mode == "lasttoken":
        last = mask.squeeze(-1).sum(dim=1).long() - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    summed = (hidden * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return summed / (counts.sqrt() if mode == "mean_sqrt_len" else counts)


def read_sentence_transformers_config(path: str) -> tuple[tuple[str, ...], int | None]:
    """Pooling modes and max sequence length from a sentence-transformers layout, if present."""
    from transformers.utils import cached_file

    def read(filename: str) -> dict[str, Any]:
        try:
            resolved = cached_file(
                path,
                filename,
                _raise_exceptions_for_missing_entries=False,
                _raise_exceptions_for_connection_errors=False,
            )
        except OSError:
            return {}
        if not resolved:
            return {}
        with open(resolved, encoding="utf-8") as handle:
            return json.load(handle)

    pooling_config = read("1_Pooling/config.json")
    modes = tuple(
        mode
        for mode in POOLING_MODES
        if pooling_config.get(f"pooling_mode_{mode}_tokens")
        or pooling_config.get(f"pooling_mode_{mode}_token")
        or pooling_config.get(f"pooling_mode_{mode}")
    )
    max_length = read("sentence_bert_config.json").get("max_seq_length")
    return modes or ("mean",), max_length if isinstance(max_length, int) else None


def load_text(
    name: str, path: str, config: Any, *, device: str, dtype: Any, trust_remote_code: bool = False
) -> TextEncoder:
    pooling, max_length = read_sentence_transformers_config(path)
    return TextEncoder.from_checkpoint(
        name,
        path,
        "AutoModel",
        config=config,
        pooling=pooling,
        max_length=max_length,
        allow_missing=("pooler",),
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )

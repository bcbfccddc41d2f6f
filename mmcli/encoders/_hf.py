"""Loading pieces shared by the Hugging Face families."""

from __future__ import annotations

from typing import Any

from mmcli.loading import hub_call


def load_auto_model(name: str, path: str, *, dtype: Any, trust_remote_code: bool, **kwargs: Any) -> Any:
    from transformers import AutoModel

    return hub_call(
        name,
        lambda: AutoModel.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code, **kwargs),
    )


def load_processor(name: str, path: str, *, trust_remote_code: bool, kind: str = "processor") -> Any:
    """``AutoProcessor`` / ``AutoImageProcessor`` / ``AutoTokenizer`` by ``kind``."""
    import transformers

    cls = {
        "processor": transformers.AutoProcessor,
        "image": transformers.AutoImageProcessor,
        "tokenizer": transformers.AutoTokenizer,
    }[kind]
    return hub_call(
        name, lambda: cls.from_pretrained(path, trust_remote_code=trust_remote_code), what=f"{kind} of model"
    )


def text_max_length(config: Any, tokenizer: Any) -> int:
    """Longest input the text tower takes: its position table, or the tokenizer's own limit."""
    candidates = [getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    usable = [int(c) for c in candidates if isinstance(c, int) and 0 < c < 1_000_000]
    return min(usable) if usable else 512

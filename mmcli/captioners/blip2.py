"""BLIP-2 (``Blip2ForConditionalGeneration``): unconditional, or continuing a prompt such as
``"Question: what is shown? Answer:"``.

The base class's ``prepare`` and ``decode`` are BLIP-2's reference usage as they stand: the processor
puts ``num_query_tokens`` image placeholders before the (BOS-prefixed) text, and a decoder-only
language model's output starts with those input ids, which ``decode`` slices off; without a prompt
the model builds the placeholders and BOS itself, and they decode to nothing (special tokens).
"""

from __future__ import annotations

from typing import Any

from mmcli.captioners.base import Captioner


class Blip2Captioner(Captioner):
    family = "blip2"


def _complete_legacy_layout(model: Any, processor: Any) -> None:
    """Fill in what checkpoints saved before transformers 4.47 lack and transformers 5 requires.

    Such a config has no ``image_token_index``, so transformers 5 fails to generate with or without a
    prompt; and a processor without ``num_query_tokens`` adds no image placeholders, so the image
    would be silently ignored. Both values are implied by the checkpoint: the config's query count,
    and the id of the ``<image>`` token the processor adds to the tokenizer.
    """
    config = model.config
    if getattr(processor, "num_query_tokens", None) is None:
        processor.num_query_tokens = config.num_query_tokens
    if getattr(config, "image_token_index", None) is None:
        token = processor.image_token
        token_id = processor.tokenizer.convert_tokens_to_ids(getattr(token, "content", token))
        if token_id is not None and token_id < model.get_input_embeddings().num_embeddings:
            config.image_token_index = token_id


def load_blip2(
    name: str, path: str, config: Any, *, device: str, dtype: Any, trust_remote_code: bool = False
) -> Blip2Captioner:
    captioner = Blip2Captioner.from_checkpoint(
        name, path, "Blip2ForConditionalGeneration", device=device, dtype=dtype, trust_remote_code=trust_remote_code
    )
    _complete_legacy_layout(captioner.model, captioner.processor)
    return captioner

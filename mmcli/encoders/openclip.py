"""open_clip models: image and text towers in one space, prepared by open_clip's own transforms and
tokenizer, so rows equal ``model.encode_image(preprocess(image))`` and ``model.encode_text(tokenizer(texts))``.

A model is named as open_clip names it: ``hf-hub:org/repo`` (or ``org/repo``) for a hub repository
shipping an ``open_clip_config.json``, a local folder holding one (open_clip's ``local-dir:``), or
``open_clip:ARCH/TAG`` for the weights open_clip lists (``open_clip.list_pretrained()``), which it
fetches into the Hugging Face cache. See :mod:`mmcli.checkpoints` for how such a checkpoint is told
from a transformers one.
"""

from __future__ import annotations

from typing import Any

import torch

from mmcli.checkpoints import LibraryConfig, open_clip_module
from mmcli.encoders.base import PREFIX_CHARS_PER_TOKEN, TransformEncoder, _between_words
from mmcli.loading import hub_call, quiet_root_logger


class OpenClipEncoder(TransformEncoder):
    family = "open_clip"
    modalities = frozenset({"image", "text"})

    def __init__(self, name: str, model: Any, preprocess: Any, tokenizer: Any, **kwargs: Any) -> None:
        super().__init__(name, model, preprocess, **kwargs)
        self.tokenizer = tokenizer
        self.context_length = int(getattr(tokenizer, "context_length", 77))

    @property
    def text_tokenizer(self) -> Any:
        return None  # open_clip's tokenizers cut texts to the context length themselves

    def _image_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.encode_image(inputs["pixel_values"])

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        # Tokenised from a bounded prefix: the tokenizer keeps the first context_length tokens of
        # whatever it is given, and a prefix of this many characters holds more than those.
        limit = self.context_length * PREFIX_CHARS_PER_TOKEN
        bounded = [text if len(text) <= limit else _between_words(text[:limit]) for text in texts]
        return self.model.encode_text(self.tokenizer(bounded).to(self.device))

    def _config_dim(self) -> int | None:
        projection = getattr(self.model, "text_projection", None)
        if isinstance(projection, torch.Tensor) and projection.dim() == 2:
            return int(projection.shape[1])
        return None


def load_open_clip(
    name: str, path: str, config: LibraryConfig, *, device: str, dtype: Any, trust_remote_code: bool = False
) -> OpenClipEncoder:
    """The model, its evaluation transforms and its tokenizer, as ``open_clip.create_model_and_transforms``
    and ``open_clip.get_tokenizer`` give them; a checkpoint whose weights cannot be had is refused
    (open_clip itself would go on with random weights)."""
    open_clip = open_clip_module()

    def create() -> tuple[Any, Any, Any]:
        try:
            with quiet_root_logger():  # open_clip logs a failed weights download as a warning, then raises
                return open_clip.create_model_and_transforms(
                    config.source, pretrained=config.pretrained, require_pretrained=True, weights_only=True
                )
        except RuntimeError as exc:  # said as a missing model is
            missing = "Required pretrained weights" in str(exc)
            raise OSError("no weights file (open_clip_model.safetensors, open_clip_pytorch_model.bin)" if missing
                          else str(exc)) from exc  # fmt: skip

    model, _, preprocess = hub_call(name, create)
    tokenizer = hub_call(name, lambda: open_clip.get_tokenizer(config.source), what="tokenizer of model")
    model = model.to(dtype=dtype)
    return OpenClipEncoder(name, model, preprocess, tokenizer, device=device, dtype=dtype)

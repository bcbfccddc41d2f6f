"""Audio models: audio-text models (CLAP), recordings and texts in one space, so a sentence finds
sounds; and audio spectrogram transformers (AST), whose AudioSet classifiers ``classify`` runs.

Each window of a recording goes through the checkpoint's own ``ClapProcessor`` and
``get_audio_features``, as its reference usage does; texts through the text tower. Windows never
exceed the feature extractor's ``max_length_s``: CLAP crops longer input at random (``rand_trunc``)
or fuses random chunks of it (``fusion``), and an embedding must not depend on a dice roll.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mmcli.encoders.base import (
    Encoder,
    accepted_kwargs,
    config_labels,
    features_tensor,
    require_architecture,
    text_max_length,
)
from mmcli.loading import from_pretrained


class ClapEncoder(Encoder):
    family = "clap"
    modalities = frozenset({"audio", "text"})
    required_methods = ("get_audio_features", "get_text_features")
    model_kind = "an audio-text model"
    # A 10 s window is a 1,000-frame mel spectrogram through a Swin transformer: CPUs gain nothing past 8.
    cpu_batch_size = 8
    gpu_batch_size = 64
    #: CLAP's zero-shot prompt (LAION-CLAP's evaluation).
    classify_templates = ("This is a sound of {}.",)

    def __init__(self, name: str, model: Any, processor: Any, config: Any, **kwargs: Any) -> None:
        super().__init__(name, model, processor, **kwargs)
        self.config = config
        features = processor.feature_extractor
        self.audio_rate = int(features.sampling_rate)
        self.audio_window = float(features.max_length_s)
        self.max_length = text_max_length(getattr(config, "text_config", config), processor.tokenizer)

    def preprocess_audio(self, samples: np.ndarray) -> dict[str, torch.Tensor]:
        return dict(self.processor(audio=[samples], sampling_rate=self.audio_rate, return_tensors="pt"))

    def _audio_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        get = self.model.get_audio_features
        return features_tensor(get(**accepted_kwargs(get, inputs)))

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        tokens = self.processor(text=texts, padding=True, truncation=True, max_length=self.max_length,
                                return_tensors="pt")  # fmt: skip
        get = self.model.get_text_features
        return features_tensor(get(**accepted_kwargs(get, self.to_device(dict(tokens)))))

    def _config_dim(self) -> int | None:
        dim = getattr(self.config, "projection_dim", None)
        return dim if isinstance(dim, int) else None


def load_clap(
    name: str, path: str, config: Any, *, device: str, dtype: Any, trust_remote_code: bool = False
) -> ClapEncoder:
    return ClapEncoder.from_checkpoint(
        name, path, "AutoModel", config=config, device=device, dtype=dtype, trust_remote_code=trust_remote_code
    )


class AudioSpectrogramEncoder(Encoder):
    """An Audio Spectrogram Transformer: each window (the feature extractor's ``max_length`` frames of
    10 ms, 10.24 s for AudioSet checkpoints) as the model's pooled output (the mean of its CLS and
    distillation tokens), or with ``head`` (an ``ASTForAudioClassification`` checkpoint) its logits.
    A recording longer than a window is cut into windows whose rows are pooled, as for CLAP."""

    family = "audio"
    modalities = frozenset({"audio"})
    cpu_batch_size = 8
    gpu_batch_size = 64

    def __init__(self, name: str, model: Any, processor: Any, config: Any, *, head: bool = False, **kwargs: Any):
        super().__init__(name, model, processor, **kwargs)
        self.config = config
        self.head = head
        self.audio_rate = int(processor.sampling_rate)
        self.audio_window = int(processor.max_length) * 0.01  # frames of a 10 ms shift
        if head:
            self.labels, self.multi_label = config_labels(config)

    def preprocess_audio(self, samples: np.ndarray) -> dict[str, torch.Tensor]:
        return dict(self.processor(samples, sampling_rate=self.audio_rate, return_tensors="pt"))

    def _audio_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        output = self.model(input_values=inputs["input_values"])
        return output.logits if self.head else output.pooler_output

    def _config_dim(self) -> int | None:
        return len(self.labels or ()) if self.head else int(self.config.hidden_size)


def load_audio_spectrogram(
    name: str, path: str, config: Any, *, device: str, dtype: Any, trust_remote_code: bool = False, head: bool = False
) -> AudioSpectrogramEncoder:
    if head:
        require_architecture(config, name, "ForAudioClassification")
    auto = "AutoModelForAudioClassification" if head else "AutoModel"
    model = from_pretrained(auto, name, path, dtype=dtype, trust_remote_code=trust_remote_code,
                            allow_missing=() if head else ("pooler",))  # fmt: skip
    processor = from_pretrained("AutoFeatureExtractor", name, path, what="feature extractor of model",
                                trust_remote_code=trust_remote_code)  # fmt: skip
    return AudioSpectrogramEncoder(name, model, processor, config, head=head, device=device, dtype=dtype)

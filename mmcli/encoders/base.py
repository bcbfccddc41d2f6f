"""The Encoder interface: families implement per-batch forward passes, the base does the rest.

Batching over any iterable, ``inference_mode`` and normalisation live here once (device, dtype and
loading in :class:`~mmcli.models.LoadedModel`), so a new family is a processor plus one or two
``_*_features`` methods.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from mmcli.errors import UnsupportedModel
from mmcli.models import LoadedModel
from mmcli.pipeline import batched
from mmcli.registry import NO_CLASSIFIER

T = TypeVar("T")
E = TypeVar("E", bound="Encoder")


class Encoder(LoadedModel):
    """Embeds images and/or texts into one vector space.

    Attributes (beyond :class:`~mmcli.models.LoadedModel`'s):
        modalities: what this model can embed, e.g. ``frozenset({"image", "text"})``.
        clip_frames: frames per clip of a native video model (X-CLIP, VideoMAE), which embeds a whole
            clip at once; ``None`` for image models, which see videos as sampled frames to pool.
        audio_rate, audio_window: for an audio model (CLAP), the sampling rate it takes (Hz) and the
            longest input it takes at once (seconds); longer recordings are cut into windows and pooled.
    """

    modalities: ClassVar[frozenset[str]] = frozenset()
    # Two CPU cores run eager ViTs no faster beyond about 16 images a call; a GPU needs larger batches to fill.
    cpu_batch_size = 16
    gpu_batch_size = 64
    audio_rate: int | None = None
    audio_window: float | None = None
    _dim: int | None = None
    _compiled: tuple[int, Any] | None = None  # (batch size, compiled image tower), see compile_images
    compile_error: str | None = None  # why the compiled tower was given up, if it was
    max_length: int | None = None  # the most tokens the text tower reads
    texts_cut = 0  # texts embedded so far that were longer than the text tower reads
    # A classification checkpoint loaded with its classifier (``head=True``): its rows are logits over
    # these labels, scored by a sigmoid each where it was trained multi-label, else by softmax.
    labels: list[str] | None = None
    multi_label: bool = False

    # -- what families implement -------------------------------------------------------------
    def preprocess_image(self, image: Any) -> dict[str, torch.Tensor]:
        """One image -> model inputs with a leading batch dimension of 1 (thread-safe)."""
        raise self._unsupported("image")

    def _image_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        raise self._unsupported("image")

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        raise self._unsupported("text")

    def preprocess_video(self, frames: Sequence[Any]) -> dict[str, torch.Tensor]:
        """One clip (up to ``clip_frames`` images, see :func:`fill_clip`) -> inputs with batch dimension 1
        (thread-safe)."""
        raise self._unsupported("video")

    def _video_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        raise self._unsupported("video")

    def preprocess_audio(self, samples: np.ndarray) -> dict[str, torch.Tensor]:
        """One window of mono float32 samples at :attr:`audio_rate` -> inputs with batch dimension 1
        (thread-safe)."""
        raise self._unsupported("audio")

    def _audio_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        raise self._unsupported("audio")

    def _config_dim(self) -> int | None:
        return None

    # -- shared machinery --------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Width of the embeddings, from the config when it says, else from one probe input."""
        if self._dim is None:
            self._dim = self._config_dim()
        if self._dim is None:
            if "text" in self.modalities:
                self._dim = self.embed_texts(["a"]).shape[1]
            else:
                from PIL import Image

                probe = Image.new("RGB", (64, 64))
                self._dim = self.embed_preprocessed([self.preprocess_image(probe)]).shape[1]
        return self._dim

    def supports(self, modality: str) -> bool:
        return modality in self.modalities

    def require(self, modality: str) -> None:
        if modality not in self.modalities:
            raise self._unsupported(modality)

    def compile_images(self, batch_size: int) -> None:
        """Compile the image tower with ``torch.compile`` for batches of ``batch_size`` (static shapes,
        so one compile serves the run): inductor fuses the elementwise work around the matrix products
        (the quick-GELU, attention reshapes, layer norms: about 15 % of a ViT-B/32's time on a CPU), after
        a compile of tens of seconds. Batches of other sizes (a run's last) stay eager, as a new shape
        would compile again."""
        import logging

        self.require("image")
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime" on CPUs
        self._compiled = (batch_size, torch.compile(self._image_features, dynamic=False))

    def embed_preprocessed(self, inputs: Sequence[dict[str, torch.Tensor]], *, normalize: bool = True) -> np.ndarray:
        """Embed a batch of :meth:`preprocess_image` outputs; float32 rows, one per input."""
        self.require("image")
        with torch.inference_mode():
            batch = self.to_device(collate(inputs))
            if self._compiled is not None and len(inputs) == self._compiled[0]:
                try:
                    return self._finish(self._compiled[1](batch), normalize)
                except Exception as exc:  # no C++ toolchain, an operation inductor cannot lower: run eager
                    self._compiled, self.compile_error = None, f"{type(exc).__name__}: {exc}".splitlines()[0]
            return self._finish(self._image_features(batch), normalize)

    def embed_texts(self, texts: Sequence[str], *, normalize: bool = True) -> np.ndarray:
        """Embed one batch of texts; float32 rows, one per text. A text longer than the model reads is
        handed to the tokenizer as a bounded prefix (see :func:`model_prefix`), counted in
        :attr:`texts_cut`."""
        self.require("text")
        texts = list(texts)
        tokenizer = self.text_tokenizer
        if tokenizer is not None and self.max_length:
            read = [model_prefix(text, tokenizer, self.max_length) for text in texts]
            texts = [text for text, _ in read]
            self.texts_cut += sum(cut for _, cut in read)
        with torch.inference_mode():
            return self._finish(self._text_features(texts), normalize)

    def texts_cut_note(self, count: int) -> str:
        """The one line a run prints when ``count`` texts were longer than the model reads."""
        return (
            f"{count:,} text{'s were' if count != 1 else ' was'} longer than {self.name} reads "
            f"({self.max_length} tokens); {'each' if count != 1 else 'its'} row embeds the first {self.max_length}"
        )

    @property
    def text_tokenizer(self) -> Any:
        """The tokenizer of the text tower (``None`` for a model without one)."""
        return getattr(self, "tokenizer", None) or getattr(self.processor, "tokenizer", None)

    def embed_videos(self, inputs: Sequence[dict[str, torch.Tensor]], *, normalize: bool = True) -> np.ndarray:
        """Embed a batch of :meth:`preprocess_video` outputs; float32 rows, one per clip."""
        self.require("video")
        with torch.inference_mode():
            batch = self.to_device(collate(inputs))
            return self._finish(self._video_features(batch), normalize)

    def embed_audio(self, inputs: Sequence[dict[str, torch.Tensor]], *, normalize: bool = True) -> np.ndarray:
        """Embed a batch of :meth:`preprocess_audio` outputs; float32 rows, one per window."""
        self.require("audio")
        with torch.inference_mode():
            batch = self.to_device(collate(inputs))
            return self._finish(self._audio_features(batch), normalize)

    def encode_images(
        self, images: Iterable[Any], *, batch_size: int = cpu_batch_size, normalize: bool = True
    ) -> np.ndarray:
        """Embed any iterable of PIL images, in batches; returns an (N, dim) float32 matrix."""
        self.require("image")
        chunks = [
            self.embed_preprocessed([self.preprocess_image(image) for image in batch], normalize=normalize)
            for batch in batched(images, batch_size)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    def encode_texts(
        self, texts: Iterable[str], *, batch_size: int = cpu_batch_size, normalize: bool = True
    ) -> np.ndarray:
        """Embed any iterable of strings, in batches; returns an (N, dim) float32 matrix."""
        self.require("text")
        chunks = [self.embed_texts(batch, normalize=normalize) for batch in batched(texts, batch_size)]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    def encode_videos(
        self, videos: Iterable[Sequence[Any]], *, batch_size: int = cpu_batch_size, normalize: bool = True
    ) -> np.ndarray:
        """Embed any iterable of clips (each a list of PIL frames), in batches; an (N, dim) float32 matrix."""
        self.require("video")
        chunks = [
            self.embed_videos([self.preprocess_video(frames) for frames in batch], normalize=normalize)
            for batch in batched(videos, batch_size)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    def encode_audio(
        self, clips: Iterable[np.ndarray], *, batch_size: int = cpu_batch_size, normalize: bool = True
    ) -> np.ndarray:
        """Embed any iterable of sample arrays (mono, at :attr:`audio_rate`, each no longer than
        :attr:`audio_window`), in batches; an (N, dim) float32 matrix."""
        self.require("audio")
        chunks = [
            self.embed_audio([self.preprocess_audio(samples) for samples in batch], normalize=normalize)
            for batch in batched(clips, batch_size)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    def _finish(self, features: torch.Tensor, normalize: bool) -> np.ndarray:
        features = features.float()
        if normalize:
            features = F.normalize(features, dim=-1)
        return features.cpu().numpy()

    def _unsupported(self, modality: str) -> UnsupportedModel:
        return UnsupportedModel(
            f"model {self.name!r} ({self.family}) cannot embed {modality}s; "
            f"it embeds: {', '.join(sorted(self.modalities))}"
        )


class TransformEncoder(Encoder):
    """An image model prepared by a torchvision-style transform (open_clip's, timm's, torchvision
    weights' ``transforms()``: PIL image -> (C, H, W) tensor), whose rows are what the model returns for
    the batch: features, or with ``labels`` (a classifier with its head) logits over them."""

    modalities = frozenset({"image"})

    def __init__(self, name: str, model: Any, transform: Any, *, labels: list[str] | None = None, **kwargs: Any):
        super().__init__(name, model, transform, **kwargs)
        self.labels = labels

    def preprocess_image(self, image: Any) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.processor(image).unsqueeze(0)}

    def _image_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(inputs["pixel_values"]).flatten(1)

    def _config_dim(self) -> int | None:
        return len(self.labels) if self.labels else None


# A text is tokenised from a prefix of at most this many characters per token the model reads (then
# 8 and 64 times more where that prefix held fewer tokens: long runs of spaces, words the vocabulary
# lacks), never from the whole: a 50 MB text cost 238 s and 10.9 GB of tokenising for 77 tokens.
PREFIX_CHARS_PER_TOKEN = 16
PREFIX_WIDENINGS = 3


def model_prefix(text: str, tokenizer: Any, max_length: int) -> tuple[str, bool]:
    """``(what of text the tokenizer needs, whether the model reads less than all of it)``.

    The prefix ends between words, so it tokenises to the whole text's first tokens; once it holds
    more than the model reads, the tokenizer's own truncation gives exactly what the whole text would
    have given. Texts too short to exceed ``max_length`` tokens are not tokenised here at all."""
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    if 4 * len(text) <= budget:  # at most four tokens a character (one per UTF-8 byte)
        return text, False
    limit = budget * PREFIX_CHARS_PER_TOKEN
    for _ in range(PREFIX_WIDENINGS):
        cut = text if len(text) <= limit else _between_words(text[:limit])
        tokens = len(tokenizer(cut, add_special_tokens=False, truncation=False, verbose=False)["input_ids"])
        if tokens > budget:
            return cut, True
        if cut is text:
            return text, False
        limit *= 8
    return cut, True


def _between_words(prefix: str) -> str:
    """``prefix`` up to its last whitespace (the whole of it where it has none)."""
    end = max(prefix.rfind(space) for space in (" ", "\n", "\t", "\r", "\u3000"))
    return prefix[:end] if end > 0 else prefix


def text_max_length(config: Any, tokenizer: Any) -> int:
    """Longest input the text tower takes: its position table, or the tokenizer's own limit."""
    candidates = [getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    usable = [int(c) for c in candidates if isinstance(c, int) and 0 < c < 1_000_000]
    return min(usable) if usable else 512


def config_labels(config: Any) -> tuple[list[str], bool]:
    """A transformers classification checkpoint's labels in id order, and whether it was trained
    multi-label (``problem_type``)."""
    id2label = {int(key): str(value) for key, value in (getattr(config, "id2label", None) or {}).items()}
    labels = [id2label.get(index, f"LABEL_{index}") for index in range(int(config.num_labels))]
    return labels, getattr(config, "problem_type", None) == "multi_label_classification"


def load_classifier(
    cls: type[E], name: str, path: str, config: Any, suffix: str, *, device: str, dtype: Any, trust_remote_code: bool
) -> E:
    """A ``*{suffix}`` checkpoint (``ForImageClassification``, ``ForVideoClassification``) loaded with its
    classifier through ``AutoModel{suffix}``, every weight present; any other checkpoint is refused."""
    require_architecture(config, name, suffix)
    return cls.from_checkpoint(name, path, f"AutoModel{suffix}", config=config, device=device, dtype=dtype,
                               trust_remote_code=trust_remote_code)  # fmt: skip


def require_architecture(config: Any, name: str, suffix: str) -> None:
    """Refuse a checkpoint not saved as a ``*{suffix}`` model (its classifier would be random)."""
    saved = getattr(config, "architectures", None) or []
    if not any(architecture.endswith(suffix) for architecture in saved):
        raise UnsupportedModel(
            f"model {name!r} was saved as {', '.join(saved) or 'a model without a classifier'}, not as a "
            f"*{suffix} checkpoint: {NO_CLASSIFIER}"
        )


def collate(inputs: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack per-item processor outputs (each with batch dimension 1) into one batch."""
    keys = inputs[0].keys()
    return {key: torch.cat([item[key] for item in inputs]) for key in keys}


def features_tensor(output: Any) -> torch.Tensor:
    """``get_*_features`` returns a tensor in transformers 4 and a ModelOutput in 5: accept both."""
    if isinstance(output, torch.Tensor):
        return output
    for key in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(output, key, None) if not isinstance(output, dict) else output.get(key)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find embeddings in model output of type {type(output).__name__}")


def accepted_kwargs(function: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """Drop processor outputs a forward method does not take (e.g. token_type_ids)."""
    import inspect

    parameters = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        named = {name for name, p in parameters.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
        # **kwargs in transformers 5 forwards only attention options; keep the named inputs.
        return {k: v for k, v in inputs.items() if k in named}
    return {k: v for k, v in inputs.items() if k in parameters}

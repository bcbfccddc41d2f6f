"""Native video encoders: models that embed a whole clip of ``clip_frames`` frames at once.

Image models see a video as sampled frames whose embeddings are pooled (see :mod:`mmcli.extract`);
these models see the clip itself, with attention across time. Both families also embed a still image,
as a clip of that image repeated ``clip_frames`` times, so photos and videos share one index.

- ``video-text`` (X-CLIP): a video tower and a text tower in one space, so text -> video search works.
- ``video`` (VideoMAE): a video backbone; a clip's embedding is its pooled token output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mmcli.encoders.base import (
    Encoder,
    accepted_kwargs,
    config_labels,
    features_tensor,
    load_classifier,
    text_max_length,
)
from mmcli.encoders.families import videomae_frames, xclip_frames
from mmcli.loading import from_pretrained
from mmcli.media.clips import fill_clip


def _as_clips(pixel_values: torch.Tensor) -> torch.Tensor:
    """Pixel values as (clips, frames, C, H, W): a plain image processor stacks frames as a batch."""
    return pixel_values.unsqueeze(0) if pixel_values.dim() == 4 else pixel_values


class _ClipEncoder(Encoder):
    """Shared by both families: clips through the checkpoint's processor, images as still clips."""

    def __init__(self, name: str, model: Any, processor: Any, config: Any, clip_frames: int, **kwargs: Any) -> None:
        super().__init__(name, model, processor, **kwargs)
        self.config = config
        self.clip_frames = clip_frames

    @property
    def default_batch_size(self) -> int:
        """Clips per model call: a clip costs about ``clip_frames`` images, so the image batch over that."""
        return max(1, super().default_batch_size // self.clip_frames)

    def _pixels(self, frames: list[Any]) -> torch.Tensor:
        raise NotImplementedError

    def preprocess_video(self, frames: Sequence[Any]) -> dict[str, torch.Tensor]:
        """One clip -> ``{"pixel_values": (1, clip_frames, C, H, W)}``; fewer frames than ``clip_frames``
        are filled by repeating the last (:func:`~mmcli.media.clips.fill_clip`)."""
        return {"pixel_values": self._pixels(fill_clip(frames, self.clip_frames))}

    def preprocess_image(self, image: Any) -> dict[str, torch.Tensor]:
        """A still clip: the image preprocessed once and repeated ``clip_frames`` times, which equals
        preprocessing ``clip_frames`` copies of it (the processor is deterministic)."""
        pixels = self._pixels([image])
        return {"pixel_values": pixels.expand(-1, self.clip_frames, -1, -1, -1).contiguous()}

    def _image_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._video_features(inputs)


class XClipEncoder(_ClipEncoder):
    """X-CLIP: ``get_video_features`` (per-frame CLIP vision tower, projected, then the multi-frame
    integration transformer, mean over frames) and ``get_text_features`` (the projected text tower).

    X-CLIP's own score also conditions each text on the video: its prompt generator adds a
    video-specific term to the text embedding before the cosine. That term needs the (text, video)
    pair, so it cannot live in an index of independent rows; the plain cosine between these two
    embeddings is the retrieval approximation (it ranks as CLIP-style retrieval does). Images are
    still clips: the image repeated ``clip_frames`` (``vision_config.num_frames``) times.
    """

    family = "video-text"
    modalities = frozenset({"video", "text", "image"})
    required_methods = ("get_video_features", "get_text_features")
    model_kind = "a video-text model"

    def __init__(self, name: str, model: Any, processor: Any, config: Any, **kwargs: Any) -> None:
        super().__init__(name, model, processor, config, xclip_frames(config), **kwargs)
        self.max_length = text_max_length(config.text_config, processor.tokenizer)

    def _pixels(self, frames: list[Any]) -> torch.Tensor:
        # XCLIPProcessor sends videos through its image processor (VideoMAE's), one clip per list.
        return _as_clips(self.processor(videos=[frames], return_tensors="pt")["pixel_values"])

    def _video_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return features_tensor(self.model.get_video_features(pixel_values=inputs["pixel_values"]))

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        tokens = self.processor(
            text=texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        get = self.model.get_text_features
        return features_tensor(get(**accepted_kwargs(get, self.to_device(dict(tokens)))))

    def _config_dim(self) -> int | None:
        dim = getattr(self.config, "projection_dim", None)
        return int(dim) if isinstance(dim, int) else None


class VideoMAEEncoder(_ClipEncoder):
    """VideoMAE: a clip of ``config.num_frames`` frames, cut into tubelets, through the encoder.

    The embedding is the mean of ``last_hidden_state`` over all tokens, then ``fc_norm`` when the
    checkpoint has a trained one, which is exactly what ``VideoMAEForVideoClassification`` feeds its
    classifier (checkpoints fine-tuned with ``use_mean_pooling``, e.g. on Kinetics). A base
    (self-supervised) checkpoint has no ``fc_norm``: its embedding is the plain token mean, taken after
    the encoder's final layer norm where the config has one (``use_mean_pooling=False``). Images are
    still clips: the image repeated ``clip_frames`` times.
    """

    family = "video"
    modalities = frozenset({"video", "image"})

    def __init__(self, name: str, model: Any, processor: Any, config: Any, *, fc_norm: Any = None, **kwargs: Any):
        super().__init__(name, model, processor, config, videomae_frames(config), **kwargs)
        self.fc_norm = fc_norm.to(self.device).eval() if fc_norm is not None else None

    def _pixels(self, frames: list[Any]) -> torch.Tensor:
        # Positional: the checkpoint may ship VideoMAE's image processor or its video processor.
        return _as_clips(self.processor([frames], return_tensors="pt")["pixel_values"])

    def _video_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        pooled = self.model(pixel_values=inputs["pixel_values"]).last_hidden_state.mean(dim=1)
        return self.fc_norm(pooled) if self.fc_norm is not None else pooled

    def _config_dim(self) -> int | None:
        size = getattr(self.config, "hidden_size", None)
        return int(size) if isinstance(size, int) else None


class VideoClassifierEncoder(VideoMAEEncoder):
    """A ``*ForVideoClassification`` checkpoint (VideoMAE fine-tuned on Kinetics, ...) with its
    classifier: each clip's row is its logits, as the model's own forward gives them."""

    def __init__(self, name: str, model: Any, processor: Any, config: Any, **kwargs: Any) -> None:
        super().__init__(name, model, processor, config, **kwargs)
        self.labels, self.multi_label = config_labels(config)

    def _video_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(pixel_values=inputs["pixel_values"]).logits

    def _config_dim(self) -> int | None:
        return len(self.labels or ())


def load_xclip(
    name: str, path: str, config: Any, *, device: str, dtype: Any, trust_remote_code: bool = False
) -> XClipEncoder:
    return XClipEncoder.from_checkpoint(
        name, path, "AutoModel", config=config, device=device, dtype=dtype, trust_remote_code=trust_remote_code
    )


def load_videomae(
    name: str, path: str, config: Any, *, device: str, dtype: Any, trust_remote_code: bool = False, head: bool = False
) -> VideoMAEEncoder:
    """The backbone as ``AutoModel`` loads it; from a video-classification checkpoint with mean pooling,
    through ``AutoModelForVideoClassification`` instead, whose ``videomae`` is that same backbone, to
    keep the trained ``fc_norm`` that ``AutoModel`` would drop. Every weight used must be in the
    checkpoint (a model with random weights is refused)."""
    if head:
        return load_classifier(VideoClassifierEncoder, name, path, config, "ForVideoClassification", device=device,
                               dtype=dtype, trust_remote_code=trust_remote_code)  # fmt: skip
    fine_tuned = getattr(config, "use_mean_pooling", False) and any(
        arch.endswith("ForVideoClassification") for arch in getattr(config, "architectures", None) or ()
    )
    auto = "AutoModelForVideoClassification" if fine_tuned else "AutoModel"
    loaded = from_pretrained(auto, name, path, dtype=dtype, trust_remote_code=trust_remote_code, allow_missing=())
    model = getattr(loaded, "videomae", loaded) if fine_tuned else loaded
    fc_norm = getattr(loaded, "fc_norm", None) if fine_tuned else None
    processor = VideoMAEEncoder.load_processor(name, path, trust_remote_code=trust_remote_code)
    return VideoMAEEncoder(name, model, processor, config, fc_norm=fc_norm, device=device, dtype=dtype)

"""Every registered encoder, captioner and speech recognition family has a tiny checkpoint, is chosen
from that checkpoint's config, loads, and gives real outputs: a sweep over the registries, as timm
tests its whole model list.

A family registered without a tiny checkpoint here fails ``test_every_family_has_a_tiny_checkpoint`` by
name: add a builder to ``tiny_models.py`` (or a ``tiny_captioners_*.py``) and an entry below.
"""

from __future__ import annotations

import numpy as np
import pytest
from audio_media import speech_like
from PIL import Image
from tiny_libraries import TORCHVISION_MODELS

from mmcli.captioners import GenerationOptions, load_captioner
from mmcli.captioners.registry import CAPTIONERS
from mmcli.encoders import load_encoder
from mmcli.encoders.registry import ENCODERS
from mmcli.speech import TRANSCRIBERS, load_transcriber

# Family name -> the tiny checkpoints (names in tiny_models) whose configs must choose it.
ENCODER_CHECKPOINTS = {
    "dual-tower": ("clip",),
    "vision": ("vit",),
    "text": ("bert",),
    "video-text": ("xclip",),
    "video": ("videomae",),
    "clap": ("clap",),
    "open_clip": ("open_clip",),
    "timm": ("timm",),
    "audio": ("ast_classifier",),
    "torchvision": ("torchvision",),  # a TORCH_HOME holding an image CNN's and a 3D CNN's weights
}
TRANSCRIBER_CHECKPOINTS = {"whisper": ("whisper",)}
# Where a family captions both images and, for some checkpoints, whole clips, one of each.
CAPTIONER_CHECKPOINTS = {
    "blip": ("blip",),
    "blip2": ("blip2",),
    "git": ("git", "git_video"),
    "vision-encoder-decoder": ("vision-encoder-decoder",),
    "florence2": ("florence2",),
    "chat": ("llava", "qwen2_vl"),
}
REGISTRIES = {
    "encoder": (ENCODERS, ENCODER_CHECKPOINTS),
    "captioner": (CAPTIONERS, CAPTIONER_CHECKPOINTS),
    "transcriber": (TRANSCRIBERS, TRANSCRIBER_CHECKPOINTS),
}
LOADERS = {"encoder": load_encoder, "captioner": load_captioner, "transcriber": load_transcriber}
SWEEP = [
    pytest.param(kind, family, name, id=f"{kind}-{name}")
    for kind, (_, table) in REGISTRIES.items()
    for family, names in table.items()
    for name in names
]
OPTIONS = GenerationOptions(max_new_tokens=8, min_new_tokens=8)


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_every_family_has_a_tiny_checkpoint(kind, tiny_models):
    registry, table = REGISTRIES[kind]
    registered = {family.name for family in registry.families()}
    missing = sorted(registered - set(table))
    assert not missing, f"{kind} families without a tiny checkpoint in tests/test_families.py: {', '.join(missing)}"
    stale = sorted(set(table) - registered)
    assert not stale, f"no {kind} family is registered as {', '.join(stale)}"
    unknown = sorted(name for names in table.values() for name in names if name not in tiny_models)
    assert not unknown, f"no tiny builder named {', '.join(unknown)} in tiny_models' registry"


def _clip(photo: Image.Image, frames: int) -> list[Image.Image]:
    """A camera panning across a photo: same-size frames, in time order."""
    side = min(photo.size) // 2
    starts = np.linspace(0, photo.width - side, frames).astype(int)
    return [photo.crop((int(x), 0, int(x) + side, side)).resize((48, 48)) for x in starts]


def _load_choosing(kind: str, path: str):
    """Load ``path`` as the registry of ``kind`` does, and the names of the families its config chose."""
    registry, _ = REGISTRIES[kind]
    chosen: list[str] = []
    decide = registry.family_for

    def spy(*args, **kwargs):
        family = decide(*args, **kwargs)
        chosen.append(family.name)
        return family

    load = LOADERS[kind]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "family_for", spy)
        loaded = load(path, device="cpu", dtype="float32")
    return loaded, chosen


@pytest.mark.parametrize(("kind", "family", "name"), SWEEP)
def test_family_loads_from_its_config_and_runs(kind, family, name, tiny_models, images, monkeypatch):
    models = [str(tiny_models[name])]
    if name == "torchvision":  # models of torchvision's list, their weights in torch's cache
        monkeypatch.setenv("TORCH_HOME", models[0])
        models = [f"torchvision:{model}" for model in TORCHVISION_MODELS]
    for model in models:
        loaded, chosen = _load_choosing(kind, model)
        assert chosen == [family], f"tiny {name} chose {chosen}, not {family!r}"
        if kind == "encoder":
            _check_encoder(loaded, images[0])
        elif kind == "captioner":
            _check_captioner(loaded, images[0])
        else:
            _check_transcriber(loaded)


def _check_encoder(encoder, photo: Image.Image) -> None:
    assert encoder.modalities, "an encoder that embeds nothing"
    matrices = {}
    for modality in sorted(encoder.modalities):
        if modality == "image":
            matrices[modality] = encoder.encode_images([photo])
        elif modality == "text":
            matrices[modality] = encoder.encode_texts(["a photo of a cat"])
        elif modality == "video":
            assert encoder.clip_frames, "a video encoder without a clip length"
            matrices[modality] = encoder.encode_videos([_clip(photo, encoder.clip_frames)])
        elif modality == "audio":
            assert encoder.audio_rate and encoder.audio_window, "an audio encoder without a rate and window"
            matrices[modality] = encoder.encode_audio([speech_like(encoder.audio_window, encoder.audio_rate)])
        else:
            pytest.fail(f"no input made for modality {modality!r}")
    dims = {matrix.shape[1] for matrix in matrices.values()}
    assert len(dims) == 1 and dims.pop() > 0, {m: x.shape for m, x in matrices.items()}  # one space
    for modality, matrix in matrices.items():
        assert matrix.shape[0] == 1 and matrix.dtype == np.float32, (modality, matrix.shape, matrix.dtype)
        assert np.isfinite(matrix).all(), modality
        np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5, err_msg=modality)


def _check_transcriber(transcriber) -> None:
    samples = speech_like(5.0, transcriber.audio_rate)
    (segments,) = transcriber.transcribe([transcriber.preprocess_audio(samples)], [5.0])
    assert segments and all(0 <= s.t <= s.end <= 5.0 and s.text for s in segments), segments


def _check_captioner(captioner, photo: Image.Image) -> None:
    if captioner.clip_frames is None:
        captions = captioner.generate([photo], None, OPTIONS)
    else:
        captions = captioner.generate_videos([_clip(photo, captioner.clip_frames)], None, OPTIONS)
    assert len(captions) == 1 and isinstance(captions[0], str), captions
    assert captions[0].strip(), "an empty caption"


@pytest.mark.parametrize(
    ("command", "model", "pointed_to"),
    [
        ("extract-features", "blip", "mmcli caption --model"),  # saved for captioning: weights missing
        ("extract-features", "git", "mmcli caption --model"),  # a type no encoder family claims
        ("extract-features", "whisper", "mmcli transcribe --model"),
        ("caption", "clip", "mmcli extract-features --model"),
    ],
)
def test_a_model_given_to_the_wrong_command_is_pointed_at_the_right_one(
    run_mmcli, tiny_models, photos, tmp_path, command, model, pointed_to
):
    args = [command, photos / "chelsea.jpg", "--model", tiny_models[model]]
    result = run_mmcli(*args, *(["-o", tmp_path / "x.npy"] if command == "extract-features" else []))
    assert result.returncode == 2, result.stderr
    assert f"`{pointed_to} {tiny_models[model]}`" in result.stderr

"""CLIPScore and RefCLIPScore (Hessel et al., 2021), through the core encoder package.

CLIP-S(c, v) = w * max(cos(c, v), 0) with w = 2.5; RefCLIP-S is the harmonic mean of CLIP-S and
max(max_r cos(c, r), 0) over the references r. As in the paper's code, every caption (candidate and
reference) is embedded with the prefix "A photo depicts ".
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmcli.errors import InputError, UsageError

CLIPSCORE_WEIGHT = 2.5
CAPTION_PREFIX = "A photo depicts "


@dataclass
class ClipScores:
    corpus: dict[str, float]
    per_item: dict[str, dict[str, float]]


def clip_score_values(
    candidates: np.ndarray, images: np.ndarray, references: Sequence[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-item CLIP-S (and RefCLIP-S when reference embeddings are given) from normalised rows."""
    clip = CLIPSCORE_WEIGHT * np.clip(np.sum(candidates * images, axis=1), 0, None)
    if references is None:
        return clip, None
    best = np.array([max(float(np.max(refs @ cand)), 0.0) for cand, refs in zip(candidates, references, strict=True)])
    total = clip + best
    harmonic = np.divide(2 * clip * best, total, out=np.zeros_like(total), where=total > 0)
    return clip, harmonic


def clip_scores(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    images: str | os.PathLike[str],
    *,
    model: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
) -> ClipScores:
    """CLIPScore and RefCLIPScore for each prediction whose image is found in ``images``.

    ``images`` is an image feature set (rows matched by id) or a folder (files matched by the
    prediction id as a path, relative path, file name, or file name without extension). ``device``
    and ``dtype`` are :func:`~mmcli.encoders.load_encoder`'s.
    """
    from mmcli.encoders import DEFAULT_MODEL, load_encoder

    path = Path(images)
    ids = list(predictions)
    if path.suffix == ".npy" or (path / "index.json").exists():  # a set, or a sharded set (a folder)
        image_rows, chosen_model = _from_feature_set(path, ids, model)
        encoder = load_encoder(chosen_model or DEFAULT_MODEL, device=device, dtype=dtype)
    else:
        encoder = load_encoder(model or DEFAULT_MODEL, device=device, dtype=dtype)
        if not encoder.supports("image"):
            raise UsageError(f"model {encoder.name!r} does not embed images; CLIPScore needs an image-text model")
        image_rows = _from_folder(path, ids, encoder)
    if not encoder.supports("text"):
        raise UsageError(f"model {encoder.name!r} does not embed texts; CLIPScore needs an image-text model")
    scored = [identifier for identifier in ids if identifier in image_rows]
    if not scored:
        raise InputError(f"no prediction id matches an image in {images}")
    candidates = encoder.encode_texts([CAPTION_PREFIX + predictions[i] for i in scored])
    refs = [encoder.encode_texts([CAPTION_PREFIX + text for text in references[i]]) for i in scored]
    vectors = np.stack([image_rows[i] for i in scored])
    if vectors.shape[1] != candidates.shape[1]:
        raise InputError(
            f"image rows in {images} have width {vectors.shape[1]} but {encoder.name} embeds texts at "
            f"{candidates.shape[1]}; give the --model that made them"
        )
    clip, ref_clip = clip_score_values(candidates, vectors, refs)
    assert ref_clip is not None
    per_item = {
        identifier: {"CLIPScore": float(c), "RefCLIPScore": float(r)}
        for identifier, c, r in zip(scored, clip, ref_clip, strict=True)
    }
    return ClipScores({"CLIPScore": float(clip.mean()), "RefCLIPScore": float(ref_clip.mean())}, per_item)


def _from_feature_set(path: Path, ids: Sequence[str], model: str | None) -> tuple[dict[str, np.ndarray], str | None]:
    from mmcli.output.feature_set import read_feature_set

    feature_set = read_feature_set(path)
    wanted = set(ids)
    rows = {
        record["id"]: np.asarray(feature_set.vectors[row], np.float32)
        for row, record in enumerate(feature_set.records)
        if record["id"] in wanted
    }
    rows = {identifier: vector / max(float(np.linalg.norm(vector)), 1e-12) for identifier, vector in rows.items()}
    models = feature_set.models
    return rows, model or (models.pop() if len(models) == 1 else None)


def _from_folder(folder: Path, ids: Sequence[str], encoder: object) -> dict[str, np.ndarray]:
    from mmcli.io.inputs import walk_images
    from mmcli.media.images import load_image

    if not folder.is_dir():
        raise UsageError(f"--images {folder} is neither a feature set (.npy) nor a folder")
    by_key: dict[str, str] = {}
    for found in walk_images(str(folder)):
        relative = os.path.relpath(found, folder)
        for key in (found, relative, Path(found).name, Path(found).stem):
            by_key.setdefault(key, found)
    matched = {identifier: by_key[identifier] for identifier in ids if identifier in by_key}
    if not matched:
        return {}
    vectors = encoder.encode_images(load_image(path) for path in matched.values())  # type: ignore[attr-defined]
    return dict(zip(matched, vectors, strict=True))

"""Per-row scores of a feature set: the run behind ``mmcli score``.

- **Pair scores**: the cosine between each image row and the text row of the same id in another set
  (DataComp's CLIP score, for filtering image-text pairs: ``select --where 'score >= 0.3'`` or
  ``--fraction 0.3 --by score``).
- **Head scores**: a small scoring model applied to each row, such as LAION's aesthetic predictor
  (an MLP over normalised CLIP ViT-L/14 image rows, its ``.pth`` state dict), or any stack of linear
  layers saved as safetensors. The weights are read as tensors only (``weights_only``), never as
  pickled code.

Scores are ``{"id", "score"}`` records, which ``jq`` and ``mmcli select --join`` read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from mmcli.errors import InputError, UsageError
from mmcli.fusion.early import l2_normalize
from mmcli.output.npy import FeatureSet

ACTIVATIONS = ("none", "relu")


def pair_scores(images: FeatureSet, texts: FeatureSet) -> tuple[list[dict[str, Any]], int]:
    """``{"id", "score"}`` for each row of ``images`` whose id has a row in ``texts`` (the cosine of the
    two), in ``images``' order; and how many image rows had no text row."""
    if images.vectors.shape[1] != texts.vectors.shape[1]:
        raise InputError(
            f"{images.path} rows have {images.vectors.shape[1]} columns and {texts.path} rows "
            f"{texts.vectors.shape[1]}: they are not in one space (embed both with one image-text model)"
        )
    text_row = {identifier: row for row, identifier in enumerate(texts.ids)}
    scores, missing = [], 0
    ids = images.ids
    for start in range(0, len(ids), 8_192):
        block = [(row, text_row.get(ids[row])) for row in range(start, min(start + 8_192, len(ids)))]
        paired = [(row, other) for row, other in block if other is not None]
        missing += len(block) - len(paired)
        if not paired:
            continue
        a = l2_normalize(np.asarray(images.vectors[[row for row, _ in paired]], dtype=np.float64))
        b = l2_normalize(np.asarray(texts.vectors[[other for _, other in paired]], dtype=np.float64))
        for (row, _), value in zip(paired, (a * b).sum(axis=1), strict=True):
            scores.append({"id": ids[row], "score": round(float(value), 6)})
    if not scores:
        raise InputError(f"no id of {images.path} has a row in {texts.path}; pair scores need rows of the same ids")
    return scores, missing


@dataclass
class Head:
    """A stack of linear layers (``weights[i]``: (out, in)), with ``activation`` between them."""

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    activation: str = "none"
    source: str = ""
    names: list[str] = field(default_factory=list)

    @property
    def width(self) -> int:
        return int(self.weights[0].shape[1])

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        values = np.asarray(rows, dtype=np.float64)
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            values = values @ weight.T.astype(np.float64) + bias.astype(np.float64)
            if index < len(self.weights) - 1 and self.activation == "relu":
                values = np.maximum(values, 0.0)
        return values


def load_head(path: str | os.PathLike[str], activation: str | None = None) -> Head:
    """A scoring head from ``.safetensors`` (its metadata may say ``{"activation": "relu"}``) or a
    ``.pth``/``.pt`` state dict (LAION's aesthetic predictor: ``layers.0``, ``layers.2``, ... linear
    layers with dropout between and no activation), read with ``weights_only=True``."""
    source = Path(path)
    _refuse_fusion_head(source)
    if not source.is_file():
        raise InputError(f"head {source} does not exist")
    metadata: dict[str, str] = {}
    if source.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(source), framework="numpy") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    elif source.suffix in (".pth", ".pt", ".bin"):
        import torch

        try:
            loaded = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickled code, or not a state dict
            raise InputError(f"head {source} is not a state dict of tensors: {str(exc).splitlines()[0]}") from None
        loaded = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else loaded
        if not isinstance(loaded, dict):
            raise InputError(f"head {source} holds a {type(loaded).__name__}, not a state dict of tensors")
        tensors = {key: value.detach().float().numpy() for key, value in loaded.items() if hasattr(value, "numpy")}
    else:
        raise UsageError(f"head {source}: give a .safetensors file or a .pth state dict")
    chosen = activation or metadata.get("activation", "none")
    if chosen not in ACTIVATIONS:
        raise UsageError(f"unknown activation {chosen!r}; choose from {', '.join(ACTIVATIONS)}")
    layers = sorted((key[: -len(".weight")] if key != "weight" else "" for key, value in tensors.items()
                     if key.endswith("weight") and np.ndim(value) == 2), key=_layer_order)  # fmt: skip
    if not layers:
        raise InputError(f"head {source} has no linear layer (no 2-D *.weight tensor)")
    weights, biases = [], []
    for layer in layers:
        weight = np.asarray(tensors[f"{layer}.weight" if layer else "weight"], dtype=np.float32)
        bias = tensors.get(f"{layer}.bias" if layer else "bias")
        bias = np.zeros(weight.shape[0], np.float32) if bias is None else np.asarray(bias, np.float32)
        if weights and weight.shape[1] != weights[-1].shape[0]:
            raise InputError(f"head {source}: layer {layer or 'weight'} takes {weight.shape[1]} inputs after "
                             f"{weights[-1].shape[0]} outputs; not a stack of linear layers")  # fmt: skip
        weights.append(weight)
        biases.append(bias)
    if weights[-1].shape[0] != 1:
        raise InputError(f"head {source} gives {weights[-1].shape[0]} outputs; a score head gives one")
    return Head(weights, biases, chosen, str(source), layers)


def _refuse_fusion_head(source: Path) -> None:
    """A head ``mmcli fuse --save-head`` wrote scores several feature sets at once, through ``fuse``."""
    import json

    from mmcli.fusion.learned import HEAD_FORMAT, head_files

    config_path = head_files(source)[1]
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(config, dict) and config.get("format") == HEAD_FORMAT:
        sets = len(config.get("input_dims") or [])
        raise UsageError(
            f"{source} is a head of mmcli fuse, over {sets} feature sets: score with it through "
            f'`mmcli fuse SET1.npy SET2.npy --head {source} --predict`, whose {{"id", "label", "score"}} '
            "records select --join reads"
        )


def _layer_order(name: str) -> tuple[Any, ...]:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"[.]", name))


def head_scores(feature_set: FeatureSet, head: Head, *, normalize: bool = True) -> Iterator[dict[str, Any]]:
    """``{"id", "score"}`` for each row: ``head`` applied to the row (L2-normalised first, as LAION's
    aesthetic predictor takes CLIP rows, unless ``normalize`` is off)."""
    width = feature_set.vectors.shape[1]
    if width != head.width:
        raise InputError(
            f"head {head.source} takes rows of {head.width} columns and {feature_set.path} has {width}: "
            "score the rows of the model the head was trained on"
        )
    ids = feature_set.ids
    for start in range(0, len(ids), 8_192):
        rows = np.asarray(feature_set.vectors[start : start + 8_192], dtype=np.float64)
        if normalize:
            rows = l2_normalize(rows)
        for offset, value in enumerate(head(rows)[:, 0]):
            yield {"id": ids[start + offset], "score": round(float(value), 6)}


@dataclass
class ScoreResult:
    """What :func:`score_set` wrote: ``rows`` scores to ``output`` (``None``: the stream); ``unpaired``:
    image rows without a text row (pair scores)."""

    output: Path | None
    rows: int
    unpaired: int = 0


def score_set(
    features: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    texts: str | os.PathLike[str] | None = None,
    head: str | os.PathLike[str] | None = None,
    activation: str | None = None,
    normalize: bool = True,
    overwrite: bool = False,
    stream: IO[str] | None = None,
) -> ScoreResult:
    """Score each row of ``features``: against its text row in ``texts`` (cosine), or by ``head``; the
    records go to ``output`` (JSONL, atomically) or ``stream`` (stdout by default)."""
    from mmcli.output.destination import writing
    from mmcli.output.feature_set import check_rows, read_feature_set
    from mmcli.output.records import RecordWriter

    if (texts is None) == (head is None):
        raise UsageError("give --texts TEXTS.npy (pair scores) or --head FILE (a scoring head), one of them")
    target = Path(output) if output is not None else None
    with writing(target, overwrite=overwrite):
        feature_set = read_feature_set(features)
        check_rows(feature_set)
        unpaired = 0
        if texts is not None:
            text_set = read_feature_set(texts)
            check_rows(text_set)
            scored, unpaired = pair_scores(feature_set, text_set)
        else:
            scored = list(head_scores(feature_set, load_head(head, activation), normalize=normalize))  # type: ignore[arg-type]
        with RecordWriter(target, stream=stream, fmt="jsonl") as writer:
            for record in scored:
                writer.write(record)
    return ScoreResult(target, len(scored), unpaired)

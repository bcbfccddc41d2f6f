"""Early (feature-level) fusion: combine aligned rows of several feature sets into one vector.

Each block is L2-normalised first so that no modality dominates by scale, optionally projected by
a per-block PCA (to bring blocks of different widths to one width), combined, and re-normalised.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmcli.errors import InputError, UsageError
from mmcli.fusion import EARLY_METHODS

PROJECTION_FORMAT = "mmcli-projection"


def l2_normalize(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero instead of becoming NaN."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


def parse_weights(text: str | None, count: int) -> list[float] | None:
    """``"0.7,0.3"`` -> ``[0.7, 0.3]``, one finite, non-negative weight per input."""
    if text is None:
        return None
    try:
        weights = [float(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--weights must be numbers separated by commas, got {text!r}") from None
    if len(weights) != count:
        raise UsageError(f"--weights gives {len(weights)} weights for {count} inputs; give one per input")
    if not all(np.isfinite(weights)) or min(weights) < 0 or not any(weights):
        raise UsageError(f"--weights must be finite, non-negative and not all zero, got {text!r}")
    return weights


def parse_projection_spec(text: str) -> int:
    """``"pca:256"`` -> 256."""
    kind, _, size = text.partition(":")
    if kind != "pca" or not size.isdigit() or int(size) < 1:
        raise UsageError(f"--project takes pca:D with a positive width D (e.g. pca:256), got {text!r}")
    return int(size)


@dataclass
class Projection:
    """A PCA per input block: ``(x - means[i]) @ components[i].T``."""

    means: list[np.ndarray]
    components: list[np.ndarray]

    @property
    def input_dims(self) -> list[int]:
        return [component.shape[1] for component in self.components]

    @property
    def output_dim(self) -> int:
        return self.components[0].shape[0]

    def apply(self, blocks: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [
            ((block - mean) @ component.T).astype(np.float32)
            for block, mean, component in zip(blocks, self.means, self.components, strict=True)
        ]

    def check(self, widths: Sequence[int], path: str | os.PathLike[str]) -> None:
        if list(widths) != self.input_dims:
            raise UsageError(
                f"projection {path} was fitted on inputs of widths {self.input_dims}, "
                f"but these inputs have widths {list(widths)}; give the same kinds of feature sets in the same order"
            )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Weights as safetensors with the layout in its metadata: no pickle, readable anywhere."""
        from safetensors.numpy import save

        from mmcli.output.atomic import atomic_output

        tensors = {}
        for index, (mean, component) in enumerate(zip(self.means, self.components, strict=True)):
            tensors[f"block{index}.mean"] = np.ascontiguousarray(mean, dtype=np.float32)
            tensors[f"block{index}.components"] = np.ascontiguousarray(component, dtype=np.float32)
        metadata = {"format": PROJECTION_FORMAT, "blocks": json.dumps(len(self.means))}
        with atomic_output(Path(path), "wb") as handle:
            handle.write(save(tensors, metadata=metadata))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Projection:
        from safetensors import SafetensorError, safe_open

        if not Path(path).is_file():
            raise InputError(f"projection {path} does not exist")
        try:
            with safe_open(str(path), framework="numpy") as handle:
                metadata = handle.metadata() or {}
                if metadata.get("format") != PROJECTION_FORMAT:
                    raise InputError(f"{path} is not a projection saved by mmcli fuse --save-projection")
                count = int(metadata["blocks"])
                means = [handle.get_tensor(f"block{index}.mean") for index in range(count)]
                components = [handle.get_tensor(f"block{index}.components") for index in range(count)]
        except (SafetensorError, OSError, KeyError, ValueError) as exc:
            raise InputError(f"{path}: cannot read the projection ({exc})") from None
        return cls(means, components)


class PcaFitter:
    """Accumulates per-block means and covariances over chunks, then keeps the top components.

    Sums are kept in float64, so a fit over many chunks matches a fit over all rows at once.
    """

    def __init__(self, widths: Sequence[int]) -> None:
        self.count = 0
        self.sums = [np.zeros(width) for width in widths]
        self.products = [np.zeros((width, width)) for width in widths]

    def add(self, blocks: Sequence[np.ndarray]) -> None:
        self.count += blocks[0].shape[0]
        for index, block in enumerate(blocks):
            rows = block.astype(np.float64)
            self.sums[index] += rows.sum(axis=0)
            self.products[index] += rows.T @ rows

    def fit(self, dims: int) -> Projection:
        widths = [len(total) for total in self.sums]
        if dims > min(widths):
            raise UsageError(f"--project pca:{dims} is wider than the narrowest input ({min(widths)} columns)")
        if dims > self.count - 1:
            raise UsageError(f"--project pca:{dims} needs more than {dims} rows to fit; there are {self.count}")
        means, components = [], []
        for total, product in zip(self.sums, self.products, strict=True):
            mean = total / self.count
            covariance = (product - self.count * np.outer(mean, mean)) / (self.count - 1)
            values, vectors = np.linalg.eigh(covariance)
            top = vectors[:, np.argsort(values)[::-1][:dims]].T
            # Fix each component's sign (largest entry positive) so refits give the same projection.
            signs = np.sign(top[np.arange(dims), np.abs(top).argmax(axis=1)])
            top *= np.where(signs == 0, 1.0, signs)[:, None]
            means.append(mean.astype(np.float32))
            components.append(top.astype(np.float32))
        return Projection(means, components)


def prepare_blocks(
    blocks: Sequence[np.ndarray], *, normalize: bool = True, projection: Projection | None = None
) -> list[np.ndarray]:
    """Blocks as fusion combines them: normalised, projected, and normalised again after projection."""
    prepared = [l2_normalize(block) if normalize else np.asarray(block, dtype=np.float32) for block in blocks]
    if projection is not None:
        prepared = projection.apply(prepared)
        if normalize:
            prepared = [l2_normalize(block) for block in prepared]
    return prepared


def require_one_width(widths: Sequence[int], method: str) -> None:
    """Elementwise methods need blocks of one width; say how to get there."""
    distinct = sorted(set(widths))
    if method != "concat" and len(distinct) > 1:
        raise UsageError(
            f"--method {method} needs inputs of one width, got widths {', '.join(map(str, distinct))}; "
            f"use --method concat, or bring them to one width with --project pca:{distinct[0]}"
        )


def combine(blocks: Sequence[np.ndarray], method: str, *, weights: Sequence[float] | None = None) -> np.ndarray:
    """``concat`` side by side; ``mean``, ``weighted`` (sum of w_i x_i) and ``max`` elementwise."""
    if method not in EARLY_METHODS:
        raise UsageError(f"unknown early fusion method {method!r}; choose from {', '.join(EARLY_METHODS)}")
    if method == "concat":
        return np.concatenate(blocks, axis=1)
    require_one_width([block.shape[1] for block in blocks], method)
    stacked = np.stack(blocks)
    if method == "mean":
        return stacked.mean(axis=0)
    if method == "max":
        return stacked.max(axis=0)
    if weights is None:
        raise UsageError("--method weighted needs --weights, one per input (e.g. --weights 0.7,0.3)")
    return np.tensordot(np.asarray(weights, dtype=np.float32), stacked, axes=1)


def fuse_rows(
    blocks: Sequence[np.ndarray],
    method: str,
    *,
    weights: Sequence[float] | None = None,
    normalize: bool = True,
    projection: Projection | None = None,
) -> np.ndarray:
    """Fused rows for one chunk of aligned blocks (float32)."""
    fused = combine(prepare_blocks(blocks, normalize=normalize, projection=projection), method, weights=weights)
    return (l2_normalize(fused) if normalize else fused).astype(np.float32)

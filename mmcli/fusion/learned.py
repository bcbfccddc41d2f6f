"""Learned (model-level) fusion: a small torch head trained on row-aligned feature blocks and class labels.

Each modality gets its own projection to a common width (Linear, GELU, LayerNorm); the projections
are combined by attention over modalities, by per-modality gates, or by concatenation, and a
penultimate layer feeds a classifier. The penultimate activations are the fused embedding
(``embed``); the classifier gives labels (``predict``). A head is saved as ``NAME.safetensors``
(weights) + ``NAME.json`` (config), so it can be reapplied to new rows of the same kinds of feature sets.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmcli.errors import InputError, UsageError
from mmcli.fusion import HEAD_METHODS

HEAD_FORMAT = "mmcli-fusion-head"
HEAD_VERSION = 1


@dataclass
class TrainingOptions:
    """How to train a head; the defaults suit a few thousand labelled rows of CLIP-sized features."""

    method: str = "attention"
    hidden: int = 256  # width of the per-modality projections and of the penultimate layer
    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 256
    val_fraction: float = 0.2  # stratified held-out split; 0 = no validation and no early stopping
    patience: int = 10  # epochs without a better validation loss before stopping; 0 = never stop early
    dropout: float = 0.1
    seed: int = 0
    normalize_inputs: bool = True  # the head L2-normalises each block itself, so applying a saved head is identical


@dataclass
class EpochLog:
    """One line of training progress (train figures are averaged over the epoch's batches, with dropout on)."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None


def best_epoch(history: Sequence[EpochLog]) -> EpochLog | None:
    """The epoch whose weights training keeps (the lowest validation loss); None without a validation split."""
    validated = [log for log in history if log.val_loss is not None]
    return min(validated, key=lambda log: log.val_loss or 0.0) if validated else None


class FusionHead(nn.Module):
    """Projections per modality, a combiner, a penultimate layer and a classifier, built from a JSON-able config."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        method = config["method"]
        if method not in HEAD_METHODS:
            raise UsageError(f"unknown learned fusion method {method!r}; choose from {', '.join(HEAD_METHODS)}")
        dims = [int(dim) for dim in config["input_dims"]]
        hidden = int(config["hidden"])
        dropout = float(config["dropout"])
        classes = len(config["labels"])
        self.method = method
        self.normalize_inputs = bool(config.get("normalize_inputs", True))
        # LayerNorm after the activation puts every modality on one scale before they are mixed; without it,
        # attention pooling tends to settle on one modality per row and cannot learn cross-modal rules (XOR).
        self.projections = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Dropout(dropout)) for dim in dims
        )
        if method == "attention":
            self.score_hidden = nn.Linear(hidden, hidden)  # U, shared by all modalities
            self.score = nn.Linear(hidden, 1, bias=False)  # w
            # Start from uniform attention (a plain mean), so every modality is heard before the head learns whom
            # to trust; random scores let early training lock onto one modality per row (stuck at 3/4 on XOR).
            nn.init.zeros_(self.score.weight)
            fused = hidden
        elif method == "gated":
            self.gates = nn.Linear(len(dims) * hidden, len(dims) * hidden)
            fused = hidden
        else:
            fused = len(dims) * hidden
        self.penultimate = nn.Sequential(nn.Linear(fused, hidden), nn.GELU())
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, classes)

    def embed(self, blocks: Sequence[torch.Tensor]) -> torch.Tensor:
        """Penultimate activations: the fused representation the classifier reads."""
        if self.normalize_inputs:
            blocks = [F.normalize(block, dim=1) for block in blocks]
        projected = [projection(block) for projection, block in zip(self.projections, blocks, strict=True)]
        if self.method == "mlp":
            fused = torch.cat(projected, dim=1)
        else:
            stacked = torch.stack(projected, dim=1)  # (B, M, hidden)
            if self.method == "attention":
                weights = torch.softmax(self.score(torch.tanh(self.score_hidden(stacked))).squeeze(-1), dim=1)
                fused = (weights.unsqueeze(-1) * stacked).sum(dim=1)
            else:
                gates = torch.sigmoid(self.gates(torch.cat(projected, dim=1))).view_as(stacked)
                fused = (gates * stacked).sum(dim=1)
        return self.penultimate(fused)

    def forward(self, blocks: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.dropout(self.embed(blocks)))


@dataclass
class TrainedHead:
    """A head with the config that rebuilds it and, when just trained, its per-epoch history."""

    model: FusionHead
    config: dict[str, Any]
    history: list[EpochLog] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return list(self.config["labels"])

    def embed(self, blocks: Sequence[np.ndarray], batch_size: int = 4096) -> np.ndarray:
        """(N, hidden) float32 penultimate activations, not normalised (the caller decides)."""
        return self._run(blocks, batch_size, self.model.embed, int(self.config["hidden"]))

    def probabilities(self, blocks: Sequence[np.ndarray], batch_size: int = 4096) -> np.ndarray:
        """(N, classes) float32 softmax probabilities, columns in ``config["labels"]`` order."""
        classes = len(self.config["labels"])
        return self._run(blocks, batch_size, lambda tensors: torch.softmax(self.model(tensors), dim=1), classes)

    def predict(self, blocks: Sequence[np.ndarray], batch_size: int = 4096) -> tuple[list[str], np.ndarray]:
        """The most probable label per row and its probability."""
        probabilities = self.probabilities(blocks, batch_size)
        best = probabilities.argmax(axis=1)
        labels = self.labels
        return [labels[index] for index in best], probabilities[np.arange(len(best)), best]

    def _run(
        self,
        blocks: Sequence[np.ndarray],
        batch_size: int,
        compute: Callable[[list[torch.Tensor]], torch.Tensor],
        width: int,
    ) -> np.ndarray:
        check_inputs(self, blocks)
        arrays = _checked_blocks(blocks)
        if batch_size < 1:
            raise UsageError(f"batch size must be at least 1, got {batch_size}")
        rows = arrays[0].shape[0]
        self.model.eval()
        outputs = []
        with torch.inference_mode():
            for start in range(0, rows, batch_size):
                tensors = [torch.from_numpy(array[start : start + batch_size]) for array in arrays]
                outputs.append(compute(tensors).float().numpy())
        if not outputs:
            return np.zeros((0, width), dtype=np.float32)
        return np.concatenate(outputs).astype(np.float32, copy=False)


def head_config(
    method: str,
    input_dims: Sequence[int],
    labels: Sequence[str],
    *,
    hidden: int,
    dropout: float,
    normalize_inputs: bool,
) -> dict[str, Any]:
    """The JSON-able description ``FusionHead`` is built from and ``save_head`` writes beside the weights."""
    return {
        "format": HEAD_FORMAT,
        "version": HEAD_VERSION,
        "method": method,
        "input_dims": [int(dim) for dim in input_dims],
        "hidden": int(hidden),
        "dropout": float(dropout),
        "labels": [str(label) for label in labels],
        "normalize_inputs": bool(normalize_inputs),
    }


def check_inputs(head: TrainedHead, blocks: Sequence[np.ndarray]) -> None:
    """Refuse blocks a head was not trained on, before any compute, with the widths it expects."""
    expected = [int(dim) for dim in head.config["input_dims"]]
    if len(blocks) != len(expected):
        raise UsageError(
            f"this head was trained on {len(expected)} feature set(s) of widths {expected}, "
            f"but {len(blocks)} were given; give the same kinds of feature sets in the same order"
        )
    widths = [int(np.shape(block)[1]) if np.ndim(block) == 2 else -1 for block in blocks]
    if widths != expected:
        shown = [width if width >= 0 else "not 2-D" for width in widths]
        raise UsageError(
            f"this head was trained on feature sets of widths {expected}, but these have widths {shown}; "
            "give feature sets from the same models in the same order"
        )


def train_head(
    blocks: Sequence[np.ndarray],
    labels: Sequence[str],
    options: TrainingOptions,
    *,
    on_epoch: Callable[[EpochLog], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> TrainedHead:
    """Train a head with AdamW and cross-entropy; seeded throughout, so one seed gives one set of weights.
    ``on_note`` hears how the validation rows were drawn when the per-label split cannot apply."""
    _check_options(options)
    arrays = _checked_blocks(blocks)
    rows = arrays[0].shape[0]
    if len(labels) != rows:
        raise InputError(f"there are {len(labels)} labels for {rows} rows; give exactly one label per row")
    names = [str(label) for label in labels]
    classes = sorted(set(names))
    if len(classes) < 2:
        found = f"only the label {classes[0]!r}" if classes else "no labels"
        raise InputError(f"training a head needs at least 2 distinct labels, but the rows have {found}")
    index = {name: position for position, name in enumerate(classes)}
    targets = np.array([index[name] for name in names], dtype=np.int64)
    train_rows, val_rows = _split(targets, options.val_fraction, options.seed, on_note)

    config = head_config(
        options.method,
        [array.shape[1] for array in arrays],
        classes,
        hidden=options.hidden,
        dropout=options.dropout,
        normalize_inputs=options.normalize_inputs,
    )
    tensors = [torch.from_numpy(array) for array in arrays]
    target_tensor = torch.from_numpy(targets)
    history: list[EpochLog] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        model = FusionHead(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
        shuffler = torch.Generator().manual_seed(options.seed)
        train_index = torch.from_numpy(train_rows)
        best_loss, best_state, waited = math.inf, None, 0
        for epoch in range(1, options.epochs + 1):
            model.train()
            loss_sum, correct = 0.0, 0
            order = train_index[torch.randperm(len(train_index), generator=shuffler)]
            for start in range(0, len(order), options.batch_size):
                batch = order[start : start + options.batch_size]
                logits = model([tensor[batch] for tensor in tensors])
                loss = F.cross_entropy(logits, target_tensor[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.item() * len(batch)
                correct += int((logits.argmax(dim=1) == target_tensor[batch]).sum())
            log = EpochLog(epoch, loss_sum / len(order), correct / len(order), None, None)
            if len(val_rows):
                log.val_loss, log.val_accuracy = _evaluate(model, tensors, target_tensor, val_rows, options.batch_size)
            history.append(log)
            if on_epoch is not None:
                on_epoch(log)
            if log.val_loss is None:
                continue
            if log.val_loss < best_loss:
                best_loss, waited = log.val_loss, 0
                best_state = {name: value.detach().clone() for name, value in model.state_dict().items()}
            else:
                waited += 1
                if options.patience and waited >= options.patience:
                    break
        if best_state is not None:
            model.load_state_dict(best_state)
    model.eval()
    return TrainedHead(model=model, config=config, history=history)


def head_files(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``head``, ``head.safetensors`` or ``head.json`` -> (``head.safetensors``, ``head.json``)."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return stem.parent / f"{stem.name}.safetensors", stem.parent / f"{stem.name}.json"


def save_head(head: TrainedHead, path: str | os.PathLike[str]) -> list[Path]:
    """Weights as safetensors and the config as JSON beside them, each written atomically; no pickle."""
    from safetensors.torch import save

    from mmcli.output.atomic import atomic_output

    weights_path, config_path = head_files(path)
    try:
        text = json.dumps(head.config, indent=2, ensure_ascii=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise UsageError(f"the head's config cannot be written as JSON ({exc}); keep config values plain") from None
    tensors = {name: value.detach().cpu().contiguous() for name, value in head.model.state_dict().items()}
    with atomic_output(weights_path, "wb") as handle:
        handle.write(save(tensors, metadata={"format": HEAD_FORMAT}))
    with atomic_output(config_path) as handle:
        handle.write(text)
    return [weights_path, config_path]


def load_head(path: str | os.PathLike[str]) -> TrainedHead:
    """Rebuild a saved head exactly (strict weight loading, safetensors only), ready for predict/embed."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights_path, config_path = head_files(path)
    for wanted in (config_path, weights_path):
        if not wanted.is_file():
            raise InputError(f"fusion head file {wanted} does not exist; a head is NAME.safetensors plus NAME.json")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{config_path}: cannot read the head's config as JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != HEAD_FORMAT:
        found = config.get("format") if isinstance(config, dict) else None
        raise InputError(
            f"{config_path} is not an mmcli fusion head (its format is {found!r}, not {HEAD_FORMAT!r}); "
            "give a head saved by mmcli fuse --save-head"
        )
    if config.get("version") != HEAD_VERSION:
        raise InputError(
            f"{config_path} is a fusion head of version {config.get('version')!r}; "
            f"this mmcli reads version {HEAD_VERSION}"
        )
    _check_config(config, config_path)
    model = FusionHead(config)
    try:
        state = load_file(str(weights_path))
        model.load_state_dict(state, strict=True)
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"{weights_path}: the weights do not match the head in {config_path.name} ({reason})"
        ) from None
    model.eval()
    return TrainedHead(model=model, config=config, history=[])


def _check_config(config: dict[str, Any], path: Path) -> None:
    """A hand-edited or truncated config fails here, with the key named, not deep inside torch."""
    problems = []
    if config.get("method") not in HEAD_METHODS:
        problems.append(f"method must be one of {', '.join(HEAD_METHODS)}")
    dims = config.get("input_dims")
    if not isinstance(dims, list) or not dims or not all(isinstance(d, int) and d > 0 for d in dims):
        problems.append("input_dims must be a non-empty list of positive widths")
    if not isinstance(config.get("hidden"), int) or config["hidden"] < 1:
        problems.append("hidden must be a positive integer")
    if not isinstance(config.get("dropout"), (int, float)):
        problems.append("dropout must be a number")
    labels = config.get("labels")
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(label, str) for label in labels):
        problems.append("labels must be a list of at least 2 class names")
    if problems:
        raise InputError(f"{path}: invalid fusion head config: {'; '.join(problems)}")


def _check_options(options: TrainingOptions) -> None:
    if options.method not in HEAD_METHODS:
        raise UsageError(f"unknown learned fusion method {options.method!r}; choose from {', '.join(HEAD_METHODS)}")
    for name in ("hidden", "epochs", "batch_size"):
        if getattr(options, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(options, name)}")
    if not 0 <= options.val_fraction < 1:
        raise UsageError(f"--val-fraction must be at least 0 and below 1, got {options.val_fraction}")
    if options.patience < 0:
        raise UsageError(f"--patience must be 0 (never stop early) or more, got {options.patience}")
    if not 0 <= options.dropout < 1:
        raise UsageError(f"dropout must be at least 0 and below 1, got {options.dropout}")
    if not (options.lr > 0 and math.isfinite(options.lr)):
        raise UsageError(f"--lr must be a positive number, got {options.lr}")
    if not (options.weight_decay >= 0 and math.isfinite(options.weight_decay)):
        raise UsageError(f"weight decay must be 0 or more, got {options.weight_decay}")


def _checked_blocks(blocks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Float32, C-contiguous 2-D blocks with one row count and only finite values."""
    if not blocks:
        raise UsageError("give at least one feature block")
    arrays = []
    for number, block in enumerate(blocks, start=1):
        array = np.ascontiguousarray(block, dtype=np.float32)
        if array.ndim != 2:
            raise InputError(f"feature block {number} must be a 2-D matrix (rows x features), got shape {array.shape}")
        arrays.append(array)
    counts = [array.shape[0] for array in arrays]
    if len(set(counts)) > 1:
        raise InputError(f"feature blocks must have one row per item in each, but their row counts are {counts}")
    for number, array in enumerate(arrays, start=1):
        finite = np.isfinite(array).all(axis=1)
        if not finite.all():
            row = int(np.argmin(finite))
            raise InputError(
                f"feature block {number} has a NaN or infinite value in row {row}; "
                "re-extract or drop the rows that are not finite"
            )
    return arrays


def _split(
    targets: np.ndarray, fraction: float, seed: int, on_note: Callable[[str], None] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation row indices (each sorted), drawn per label so each label keeps its share.
    A set too small for that (each label's share rounds to none, or to all its rows) is split over all
    rows instead, so a few labelled examples still train with a validation row or more."""
    rows = len(targets)
    if fraction == 0:
        return np.arange(rows), np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    val = []
    for label in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == label))
        val.append(members[: math.floor(fraction * len(members) + 0.5)])
    val_rows = np.sort(np.concatenate(val))
    train_rows = np.setdiff1d(np.arange(rows), val_rows)
    if len(val_rows) and len(train_rows):
        return train_rows, val_rows
    if rows < 2:
        raise UsageError(
            f"a validation fraction of {fraction} needs at least 2 labelled rows, one to train on and one to "
            f"validate, but there is {rows}; label more rows, or pass --val-fraction 0 to train without validation"
        )
    count = min(rows - 1, max(1, math.floor(fraction * rows + 0.5)))
    val_rows = np.sort(rng.permutation(rows)[:count])
    if on_note is not None:
        on_note(
            f"{rows} labelled rows are too few to hold out {fraction:g} of each label; validating on "
            f"{count} row{'s' if count != 1 else ''} drawn from all labels (label more rows per label to stratify)"
        )
    return np.setdiff1d(np.arange(rows), val_rows), val_rows


def _evaluate(
    model: FusionHead, tensors: list[torch.Tensor], targets: torch.Tensor, rows: np.ndarray, batch_size: int
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on the given rows, without dropout or autograd."""
    model.eval()
    index = torch.from_numpy(rows)
    loss_sum, correct = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(index), batch_size):
            batch = index[start : start + batch_size]
            logits = model([tensor[batch] for tensor in tensors])
            loss_sum += float(F.cross_entropy(logits, targets[batch], reduction="sum"))
            correct += int((logits.argmax(dim=1) == targets[batch]).sum())
    return loss_sum / len(index), correct / len(index)

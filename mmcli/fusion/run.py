"""Whole fusion runs, one call each, from files to files (what ``mmcli fuse`` does).

:func:`fuse_sets` (early fusion), :func:`train_fusion` and :func:`apply_fusion_head` (learned) read
feature sets, align their rows by id and write a fused feature set, or JSONL predictions;
:func:`fuse_result_files` combines result lists (late). Every output is checked before any work,
so a bad path fails fast. Nothing here prints: notices go to ``on_note``, progress bars come from
``progress``, training epochs go to ``on_epoch``, and what a run did comes back in its report.
Torch is imported only by the learned runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmcli.errors import InputError, UsageError, option
from mmcli.fusion import EARLY_METHODS
from mmcli.fusion.align import AlignedSets, align
from mmcli.fusion.early import PcaFitter, Projection, fuse_rows, l2_normalize, prepare_blocks, require_one_width
from mmcli.fusion.late import DEFAULT_RRF_K, LateFusionReport, fuse_results
from mmcli.jsonl import read_jsonl
from mmcli.output.destination import check_output_path, check_writable, writes
from mmcli.output.feature_set import check_rows, read_feature_set
from mmcli.output.npy import FeatureSetWriter
from mmcli.output.records import RecordWriter

if TYPE_CHECKING:
    from mmcli.fusion.learned import EpochLog, TrainedHead, TrainingOptions

PathLike = str | os.PathLike[str]
Note = Callable[[str], None]
# Called as progress(total=rows, desc=...): a context manager whose update(rows) is called per chunk
# (tqdm fits as it is).
Progress = Callable[..., AbstractContextManager[Any]]


@dataclass
class FusedSet:
    """What an early fusion wrote: ``rows`` fused rows of ``width`` columns."""

    output: Path
    rows: int
    width: int
    method: str


@dataclass
class LearnedFusion:
    """What a learned run did: the head it trained or loaded and what it wrote (``width`` is None for
    predictions, ``output`` None when they went to standard output)."""

    head: TrainedHead
    output: Path | None
    rows: int
    width: int | None
    labelled: int = 0  # labelled rows a trained head learned from
    saved: list[Path] = field(default_factory=list)  # the head's files, when it was saved


def read_aligned(
    inputs: Sequence[PathLike], *, by: str = "id", strict: bool = False, on_note: Note | None = None
) -> AlignedSets:
    """Feature sets read, checked for rows (at least one, all finite) and aligned (one set is taken
    whole); rows without a partner in every set are left out, with a notice."""
    if not inputs:
        raise UsageError("give at least one feature set")
    sets = [read_feature_set(path) for path in inputs]
    for feature_set in sets:
        check_rows(feature_set)
    if len(sets) == 1:
        return AlignedSets(sets, [np.arange(len(sets[0]), dtype=np.int64)], [0])
    aligned = align(sets, by=by, strict=strict)
    for feature_set, count in zip(sets, aligned.dropped, strict=True):
        if count and on_note is not None:
            on_note(
                f"{count} of {len(feature_set)} rows of {feature_set.path} have no partner in every input; left out"
            )
    return aligned


@writes("output")
def fuse_sets(
    inputs: Sequence[PathLike],
    output: PathLike,
    *,
    method: str = "concat",
    weights: Sequence[float] | None = None,
    normalize: bool = True,
    project: int | None = None,
    save_projection: PathLike | None = None,
    projection: PathLike | None = None,
    by: str = "id",
    strict: bool = False,
    dtype: str = "float32",
    overwrite: bool = False,
    on_note: Note | None = None,
    progress: Progress | None = None,
) -> FusedSet:
    """Early fusion of feature sets into ``output`` (``.npy`` + sidecar), read and written in chunks.

    ``weights`` (one per input) go with ``method="weighted"``; ``project`` fits a PCA of that width per
    input first (saved to ``save_projection`` if given), ``projection`` applies a saved one instead.
    ``by`` aligns rows by ``"id"`` or ``"row"``; ``strict`` refuses ids missing from any input.
    """
    if method not in EARLY_METHODS:
        raise UsageError(f"unknown early fusion method {method!r}; choose from {', '.join(EARLY_METHODS)}")
    npy = check_output_path(Path(output), overwrite=overwrite)
    if weights is not None and method != "weighted":
        raise UsageError(f"{option('weights')} goes with {option('method', 'weighted')}")
    if weights is None and method == "weighted":
        raise UsageError(
            f"{option('method', 'weighted')} needs {option('weights')}, one per input "
            f"(e.g. {option('weights', '0.7,0.3')})"
        )
    if weights is not None and len(weights) != len(inputs):
        raise UsageError(f"{len(weights)} weights for {len(inputs)} inputs; give one weight per input")
    if project is not None and projection is not None:
        raise UsageError(f"give {option('project')} to fit a PCA or {option('projection')} to reuse one, not both")
    if save_projection is not None and project is None:
        raise UsageError(f"{option('save_projection')} saves the PCA that {option('project', 'pca:D')} fits")
    if save_projection is not None:
        check_writable(Path(save_projection), overwrite=overwrite)
    aligned = read_aligned(inputs, by=by, strict=strict, on_note=on_note)
    bars = progress or _no_progress
    fitted = Projection.load(projection) if projection is not None else None
    if fitted is not None:
        fitted.check(aligned.widths, projection)  # type: ignore[arg-type]
    elif project is None:
        require_one_width(aligned.widths, method)
    if project is not None:
        fitter = PcaFitter(aligned.widths)
        with bars(total=len(aligned), desc="fitting PCA") as bar:
            for _, blocks in aligned.chunks():
                fitter.add(prepare_blocks(blocks, normalize=normalize))
                bar.update(len(blocks[0]))
        fitted = fitter.fit(project)
        if save_projection is not None:
            fitted.save(save_projection)
    with FeatureSetWriter(npy, dtype=dtype) as writer, bars(total=len(aligned), desc="fusing") as bar:
        for start, blocks in aligned.chunks():
            fused = fuse_rows(blocks, method, weights=weights, normalize=normalize, projection=fitted)
            writer.add(fused, aligned.records(start, start + len(fused)))
            bar.update(len(fused))
    return FusedSet(npy, writer.count, writer.dim, method)


@writes("output")
def train_fusion(
    inputs: Sequence[PathLike],
    labels: PathLike,
    *,
    output: PathLike | None = None,
    predict: bool = False,
    save_head: PathLike | None = None,
    options: TrainingOptions | None = None,
    by: str = "id",
    strict: bool = False,
    dtype: str = "float32",
    overwrite: bool = False,
    on_note: Note | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> LearnedFusion:
    """Train a fusion head on the rows named in ``labels`` (``{"id", "label"}`` JSONL), save it to
    ``save_head`` if given, and write every aligned row's fused embedding to ``output`` (``.npy``),
    or with ``predict`` its predicted label as JSONL (to standard output when ``output`` is None)."""
    from mmcli.fusion.learned import TrainingOptions, head_files, train_head
    from mmcli.fusion.learned import save_head as write_head

    destination = _learned_output(output, predict, overwrite)
    if save_head is not None:
        for path in head_files(save_head):
            check_writable(path, overwrite=overwrite)
    aligned = read_aligned(inputs, by=by, strict=strict, on_note=on_note)
    blocks = aligned.blocks()
    ids = aligned.ids
    labelled = _read_labels(Path(labels), set(ids))
    rows = [row for row, identifier in enumerate(ids) if identifier in labelled]
    targets = [labelled[ids[row]] for row in rows]
    trained = train_head(
        [block[rows] for block in blocks], targets, options or TrainingOptions(), on_epoch=on_epoch, on_note=on_note
    )
    trained.config["inputs"] = [
        {"set": str(fs.path), "models": sorted(fs.models), "width": width}
        for fs, width in zip(aligned.sets, aligned.widths, strict=True)
    ]
    saved = write_head(trained, save_head) if save_head is not None else []
    written, width = _write_learned(
        trained, aligned, blocks, destination, predict, dtype, str(save_head or "fusion head")
    )
    return LearnedFusion(trained, destination, written, width, labelled=len(rows), saved=saved)


@writes("output")
def apply_fusion_head(
    inputs: Sequence[PathLike],
    head: PathLike,
    *,
    output: PathLike | None = None,
    predict: bool = False,
    method: str | None = None,
    by: str = "id",
    strict: bool = False,
    dtype: str = "float32",
    overwrite: bool = False,
    on_note: Note | None = None,
) -> LearnedFusion:
    """Apply a head saved by :func:`train_fusion` to new rows of the same kinds of feature sets, in the
    same order; ``method``, if given, is the kind of head expected. Outputs as for :func:`train_fusion`."""
    from mmcli.fusion.learned import check_inputs, load_head

    destination = _learned_output(output, predict, overwrite)
    aligned = read_aligned(inputs, by=by, strict=strict, on_note=on_note)
    blocks = aligned.blocks()
    trained = load_head(head)
    kind = trained.config["method"]
    if method is not None and method != kind:
        raise UsageError(f"{head} is an {kind} head; drop {option('method', method)}")
    check_inputs(trained, blocks)
    written, width = _write_learned(trained, aligned, blocks, destination, predict, dtype, str(head))
    return LearnedFusion(trained, destination, written, width)


@writes("output")
def fuse_result_files(
    inputs: Sequence[PathLike],
    output: PathLike | None = None,
    *,
    method: str = "rrf",
    weights: Sequence[float] | None = None,
    rrf_k: float = DEFAULT_RRF_K,
    top_k: int | None = None,
    overwrite: bool = False,
) -> LateFusionReport:
    """Late fusion of ``mmcli retrieve`` or ``mmcli classify`` JSONL files into one list of the same
    kind, written to ``output`` (standard output when None); see :func:`~mmcli.fusion.late.fuse_results`."""
    destination = None if output is None else check_writable(Path(output), overwrite=overwrite)
    runs = [[record for _, record in read_jsonl(path, "result list")] for path in inputs]
    names = [str(path) for path in inputs]
    fused, report = fuse_results(runs, method, weights=weights, rrf_k=rrf_k, top_k=top_k, names=names)
    with RecordWriter(destination, fmt="jsonl") as writer:
        for record in fused:
            writer.write(record)
    return report


def _no_progress(**_: Any) -> AbstractContextManager[Any]:
    return nullcontext(_NoBar())


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass


def _learned_output(output: PathLike | None, predict: bool, overwrite: bool) -> Path | None:
    """Checked before any work: predictions go to JSONL (or standard output), fused rows to ``.npy``."""
    if predict:
        if output is None:
            return None
        if Path(output).suffix == ".npy":
            raise UsageError(f"{option('predict')} writes JSONL records; name the output .jsonl")
        return check_writable(Path(output), overwrite=overwrite)
    if output is None:
        raise UsageError("fused rows need an output feature set (.npy); only predictions go to standard output")
    return check_output_path(Path(output), overwrite=overwrite)


def _write_learned(
    trained: TrainedHead,
    aligned: AlignedSets,
    blocks: list[np.ndarray],
    output: Path | None,
    predict: bool,
    dtype: str,
    head_name: str,
) -> tuple[int, int | None]:
    """Predictions as JSONL, or the fused rows as a feature set whose records add the head to each
    row's models; returns the rows written and their width (None for predictions)."""
    if predict:
        predicted, scores = trained.predict(blocks)
        with RecordWriter(output, fmt="jsonl") as records:
            for record, label, score in zip(aligned.records(), predicted, scores.tolist(), strict=True):
                records.write(
                    {"id": record["id"], "source": record["source"], "label": label, "score": round(score, 6)}
                )
        return records.count, None
    embedded = trained.embed(blocks)
    if trained.config.get("normalize_inputs", True):  # fused rows are normalised when the inputs were
        embedded = l2_normalize(embedded)
    assert output is not None
    with FeatureSetWriter(output, dtype=dtype) as writer:
        rows = aligned.records()
        for record in rows:
            record["model"] = [*record["model"], head_name]
        writer.add(embedded, rows)
    return writer.count, writer.dim


def _read_labels(path: Path, known: set[str]) -> dict[str, str]:
    """``{"id", "label"}`` records, each id labelled once and a row of every input."""
    found: dict[str, str] = {}
    for number, record in read_jsonl(path, "labels file"):
        if "id" not in record or "label" not in record:
            raise InputError(f'{path}:{number}: expected {{"id", "label"}}, got keys {sorted(record)}')
        identifier, label = str(record["id"]), str(record["label"])
        if found.get(identifier, label) != label:
            raise InputError(f"{path}:{number}: id {identifier!r} is labelled both {found[identifier]!r} and {label!r}")
        found[identifier] = label
    if not found:
        raise InputError(f"labels file {path} holds no records")
    absent = [identifier for identifier in found if identifier not in known]
    if absent:
        shown = ", ".join(repr(identifier) for identifier in absent[:3])
        raise InputError(
            f"{len(absent)} of {len(found)} ids in {path} are not rows of every input feature set "
            f"(e.g. {shown}); labels must name rows that were fused"
        )
    return found

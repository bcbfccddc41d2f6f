"""Near-duplicate groups in a feature set: the run behind ``mmcli dedup``.

Two rows are near-duplicates when their cosine is at least ``threshold``; groups are the connected
components of that relation (clip-retrieval's rule: a chain of near-duplicates is one group), and
files whose bytes are equal can be joined too (``exact``). One member of each group is kept, by a
``keep`` policy, and every row gets a record saying so.

The pairs are found by one of three methods:

- ``exact``: every pair, the rows read a block at a time (memory-mapped sets and sharded sets stay on
  disk) and scored block against block, so memory is bounded by two blocks' scores;
- ``faiss``: each row's ``neighbors`` nearest rows through a faiss index (:func:`~mmcli.search.search_set`
  with ``ann="faiss"``), kept where above the threshold: approximate (a pair the index misses, or a
  row with more near-duplicates than ``neighbors``, is not found directly, though a chain may still
  join it);
- ``semantic``: SemDeDup's (NeMo Curator's) way, k-means clusters of the rows, then every pair within
  each cluster, block against block; each row joins its three nearest clusters, so a pair near a
  boundary still meets in one: approximate where a pair shares none of them.

``auto`` is exact below :data:`~mmcli.search.ANN_AUTO_ROWS` rows and semantic above: on this
project's 2-core CPU, 100,000 x 512 rows with 1,000 planted copies took 6.4 s semantic and 23.5 s
through faiss (an IVF search of every row at 0.24 ms a row), both finding every planted pair
(benchmarks/dedup.py has the figures at a million rows).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from mmcli.errors import InputError, UsageError, option
from mmcli.fusion.early import l2_normalize
from mmcli.output.npy import FeatureSet

METHODS = ("auto", "exact", "faiss", "semantic")
KEEP_POLICIES = ("first", "last", "largest")
# Cosine at or above which two rows are near-duplicates by default: clip-retrieval's deduplication
# threshold for CLIP ViT-B/32 rows, where re-encodes, resizes and small crops of one picture score
# 0.95-0.99 and distinct photos of one scene mostly below 0.93 (docs/commands/dedup.md).
DEFAULT_THRESHOLD = 0.94
DEFAULT_NEIGHBORS = 16
SEMANTIC_SPREAD = 3  # the clusters each row joins in the semantic method (2 missed 3 of 1,000 planted pairs)
BLOCK_ROWS = 4_096


@dataclass
class Dedup:
    """What :func:`find_duplicates` found: per row, its ``group`` (the group's number, in order of
    first row), whether it is kept, the kept row it duplicates and their cosine (``None`` for a kept
    row; 1.0 for an exact copy); with the ``method`` used, and a ``note`` where it is approximate."""

    groups: np.ndarray
    kept: np.ndarray
    duplicate_of: np.ndarray  # the kept row of the group (the row itself where kept)
    similarity: list[float | None]
    method: str
    pairs: int  # near-duplicate pairs found (exact copies apart)
    note: str | None = None
    exact_copies: int = 0
    sizes: dict[int, int] = field(default_factory=dict)

    @property
    def dropped(self) -> int:
        return int((~self.kept).sum())

    @property
    def duplicate_groups(self) -> int:
        """Groups of two rows or more."""
        return sum(1 for size in self.sizes.values() if size > 1)


def find_duplicates(
    feature_set: FeatureSet,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    method: str = "auto",
    keep: str = "first",
    exact: bool = False,
    neighbors: int = DEFAULT_NEIGHBORS,
    clusters: int | None = None,
    seed: int = 0,
) -> Dedup:
    """Group the rows of ``feature_set`` into near-duplicates and choose one of each group to keep.

    ``keep``: ``first`` or ``last`` row of a group, ``largest`` file (by size on disk), or
    ``field:NAME[:min|max]``, the row whose record's NAME is largest (``max``, the default) or smallest.
    ``exact`` also joins rows whose files have equal bytes (by content hash). ``neighbors`` (faiss) and ``clusters``
    (semantic; default about the square root of the rows) tune the approximate methods."""
    from mmcli.output.feature_set import check_rows

    check_rows(feature_set)
    rows = len(feature_set)
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if not -1.0 <= threshold <= 1.0:
        raise UsageError(f"{option('threshold')} is a cosine, between -1 and 1, not {threshold}")
    if neighbors < 2:
        raise UsageError(f"{option('neighbors')} must be at least 2, not {neighbors}")
    chooser = _keep_policy(keep, feature_set)
    if method == "auto":
        from mmcli.search import ANN_AUTO_ROWS

        method = "exact" if rows < ANN_AUTO_ROWS else "semantic"
    components = _Components(rows)
    note = None
    if method == "exact":
        pairs = _join(components, exact_pairs(feature_set.vectors, threshold))
    elif method == "faiss":
        pairs, note = _faiss_pairs(feature_set, components, threshold, neighbors)
    else:
        count = clusters or max(1, round(float(np.sqrt(rows))))
        pairs = _join(components, semantic_pairs(feature_set.vectors, threshold, count, seed=seed))
        note = (f"approximate: {count:,} k-means clusters, each row in its {SEMANTIC_SPREAD} nearest, pairs within "
                "each cluster only")  # fmt: skip
    copies = _join_exact_copies(components, feature_set) if exact else 0
    groups = components.labels()
    members = _members(groups)
    kept_rows = {group: chooser(rows_of) for group, rows_of in members.items()}
    duplicate_of = np.array([kept_rows[group] for group in groups], dtype=np.int64)
    kept = duplicate_of == np.arange(rows)
    similarity = _similarities(feature_set, duplicate_of, kept)
    sizes = {group: len(rows_of) for group, rows_of in members.items()}
    return Dedup(groups, kept, duplicate_of, similarity, method, pairs, note, copies, sizes)


def records(feature_set: FeatureSet, found: Dedup) -> Iterator[dict[str, Any]]:
    """``{"id", "group", "keep", "duplicate_of", "similarity"}`` for each row, in row order."""
    ids = feature_set.ids
    for row, identifier in enumerate(ids):
        kept = bool(found.kept[row])
        yield {
            "id": identifier,
            "group": int(found.groups[row]),
            "keep": kept,
            "duplicate_of": None if kept else ids[int(found.duplicate_of[row])],
            "similarity": found.similarity[row],
        }


def exact_pairs(
    vectors: Any, threshold: float, block_rows: int = BLOCK_ROWS
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every pair ``i < j`` whose inner product is at least ``threshold``, as arrays of rows, a block of
    ``block_rows`` rows against each block at or after it."""
    import torch

    count = vectors.shape[0]
    for start in range(0, count, block_rows):
        left = _normalised(vectors[start : start + block_rows])
        for other in range(start, count, block_rows):
            right = left if other == start else _normalised(vectors[other : other + block_rows])
            scores = torch.mm(torch.from_numpy(left), torch.from_numpy(right).T).numpy()
            if other == start:
                scores = np.triu(scores, k=1) + np.tril(np.full_like(scores, -2.0))  # i < j only
            i, j = np.nonzero(scores >= threshold)
            if len(i):
                yield i + start, j + other


def semantic_pairs(
    vectors: Any, threshold: float, clusters: int, *, seed: int = 0, spread: int = SEMANTIC_SPREAD
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Pairs above ``threshold`` within each of ``clusters`` spherical k-means clusters (faiss), each row
    a member of its ``spread`` nearest clusters, so a pair near a boundary between two clusters still
    meets in one; each pair is given once."""
    from mmcli.ann import faiss_module

    faiss = faiss_module()
    count, dim = vectors.shape
    clusters = min(clusters, count)
    spread = min(spread, clusters)
    if count > clusters * 64:
        sample = _normalised(vectors[np.sort(np.random.default_rng(seed).choice(count, clusters * 64, replace=False))])
    else:
        sample = _normalised(vectors[:])
    kmeans = faiss.Kmeans(dim, clusters, niter=20, seed=seed, spherical=True, verbose=False)
    kmeans.train(np.ascontiguousarray(sample, dtype=np.float32))
    assignment = np.empty((count, spread), dtype=np.int64)
    for start in range(0, count, BLOCK_ROWS):
        _, nearest = kmeans.index.search(_normalised(vectors[start : start + BLOCK_ROWS]), spread)
        assignment[start : start + BLOCK_ROWS] = nearest
    rows = np.repeat(np.arange(count), spread)
    labels = assignment.reshape(-1)
    order = np.lexsort((rows, labels))  # by cluster, then row
    rows, labels = rows[order], labels[order]
    bounds = np.flatnonzero(np.diff(labels)) + 1
    found: list[np.ndarray] = []
    for members in np.split(rows, bounds):
        if len(members) < 2:
            continue
        for i, j in exact_pairs(_normalised(vectors[members]), threshold):
            found.append(members[i] * count + members[j])
    if found:
        unique = np.unique(np.concatenate(found))  # a pair that met in two clusters, once
        yield unique // count, unique % count


def _faiss_pairs(feature_set: FeatureSet, components: _Components, threshold: float, neighbors: int) -> tuple[int, str]:
    """Each row's ``neighbors`` nearest rows through one faiss index (the saved ``FEATS.faiss`` where it
    is fresh, else built once), a block of rows at a time; pairs above the threshold joined."""
    from mmcli.ann import ann_search, default_nprobe
    from mmcli.search import faiss_index_of

    index, how = faiss_index_of(feature_set)
    count, pairs = len(feature_set), 0
    k = min(neighbors, count)
    for start in range(0, count, BLOCK_ROWS):
        found = ann_search(index, _normalised(feature_set.vectors[start : start + BLOCK_ROWS]), k, threshold=threshold)
        for offset, rows in enumerate(found.rows):
            row = start + offset
            for other in rows.tolist():
                if other != row:
                    pairs += other > row  # each pair counted once, from its first row
                    components.union(row, other)
    source = how.index_file.name if how.index_file else "an IVF index built for this run"
    nprobe = f", nprobe {default_nprobe(index.nlist)}" if hasattr(index, "nlist") else ""
    note = f"approximate: each row's {k} nearest rows through faiss ({source}{nprobe}); pairs it misses are not found"
    return pairs, note


def _join(components: _Components, pairs: Iterator[tuple[np.ndarray, np.ndarray]]) -> int:
    """Join each pair's rows; how many pairs there were."""
    found = 0
    for left, right in pairs:
        found += len(left)
        for i, j in zip(left.tolist(), right.tolist(), strict=True):
            components.union(i, j)
    return found


def _join_exact_copies(components: _Components, feature_set: FeatureSet) -> int:
    """Join rows whose files hold equal bytes: the content hash the set's file manifest recorded for
    each row (``NAME.files.jsonl``), else the same hash of the file its ``source`` names now."""
    from mmcli.output.feature_set import read_output_manifest
    from mmcli.output.manifest import file_entry

    recorded = {entry["id"]: entry.get("blake2b") for entry in read_output_manifest(feature_set.path) or ()}
    first: dict[str, int] = {}
    copies = 0
    for row, record in enumerate(feature_set.records):
        source = record.get("source")
        if not isinstance(source, str) or record.get("modality") not in (None, "image", "video", "audio"):
            continue
        digest = recorded.get(record["id"])
        if digest is None:
            try:
                digest = file_entry(record["id"], source)["blake2b"]
            except OSError:
                continue
        if digest in first:
            copies += 1
            components.union(first[digest], row)
        else:
            first[digest] = row
    return copies


def _keep_policy(keep: str, feature_set: FeatureSet) -> Any:
    """The function that picks the kept row of a group (its rows, ascending)."""
    if keep == "first":
        return lambda members: members[0]
    if keep == "last":
        return lambda members: members[-1]
    if keep == "largest":
        sizes = [_file_size(record.get("source")) for record in feature_set.records]
        return lambda members: max(members, key=lambda row: (sizes[row], -row))
    if keep.startswith("field:"):
        name, _, direction = keep[len("field:") :].partition(":")
        direction = direction or "max"
        if not name or direction not in ("min", "max"):
            raise UsageError(f"{option('keep', keep)}: write field:NAME, field:NAME:max or field:NAME:min")
        values = [record.get(name) for record in feature_set.records]
        if not any(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
            raise InputError(f"{option('keep', keep)}: no record of {feature_set.path} has a number in {name!r}")
        sign = 1 if direction == "max" else -1

        def by_field(members: list[int]) -> int:
            numbered = [row for row in members if isinstance(values[row], (int, float))]
            if not numbered:
                return members[0]
            return max(numbered, key=lambda row: (sign * values[row], -row))

        return by_field
    raise UsageError(
        f"unknown {option('keep')} policy {keep!r}; choose from {', '.join(KEEP_POLICIES)} or field:NAME[:min|max]"
    )


def _file_size(source: Any) -> int:
    try:
        return os.path.getsize(source) if isinstance(source, str) else -1
    except OSError:
        return -1


def _similarities(feature_set: FeatureSet, duplicate_of: np.ndarray, kept: np.ndarray) -> list[float | None]:
    """Each dropped row's cosine to the row kept in its place."""
    similarity: list[float | None] = [None] * len(kept)
    for row in np.flatnonzero(~kept).tolist():
        a = np.asarray(feature_set.vectors[row], np.float64)
        b = np.asarray(feature_set.vectors[int(duplicate_of[row])], np.float64)
        similarity[row] = round(float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)), 6)
    return similarity


def _normalised(rows: Any) -> np.ndarray:
    """Unit rows as float32 in one block of memory, as torch's and faiss's products take them."""
    return np.ascontiguousarray(l2_normalize(np.asarray(rows, dtype=np.float32)))


def _members(groups: np.ndarray) -> dict[int, list[int]]:
    members: dict[int, list[int]] = {}
    for row, group in enumerate(groups.tolist()):
        members.setdefault(group, []).append(row)
    return members


class _Components:
    """Union-find over rows, with the smallest row of each component as its root."""

    def __init__(self, count: int) -> None:
        self.parent = np.arange(count, dtype=np.int64)

    def find(self, row: int) -> int:
        parent = self.parent
        root = row
        while parent[root] != root:
            root = int(parent[root])
        while parent[row] != root:
            parent[row], row = root, int(parent[row])
        return root

    def union(self, a: int, b: int) -> int:
        """Join the components of ``a`` and ``b``; 1 where they were apart, else 0."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return 0
        self.parent[max(ra, rb)] = min(ra, rb)
        return 1

    def labels(self) -> np.ndarray:
        """Group numbers 0, 1, ... in order of each group's first row (its root)."""
        roots = np.array([self.find(row) for row in range(len(self.parent))], dtype=np.int64)
        _, numbers = np.unique(roots, return_inverse=True)  # roots are first rows: sorted = first-row order
        return numbers.astype(np.int64)


@dataclass
class DedupResult:
    """What :func:`dedup_set` wrote: the records to ``output`` (``None``: the stream) and what it found."""

    output: Path | None
    rows: int
    found: Dedup


def dedup_set(
    features: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    overwrite: bool = False,
    stream: IO[str] | None = None,
    **options: Any,
) -> DedupResult:
    """Find the near-duplicates of the feature set ``features`` (a ``.npy`` or a sharded ``DIR/``) and
    write a record per row (:func:`records`) to ``output`` (JSONL, atomically) or ``stream`` (stdout
    by default). ``options`` are :func:`find_duplicates`'."""
    from mmcli.output.destination import writing
    from mmcli.output.feature_set import read_feature_set
    from mmcli.output.records import RecordWriter

    target = Path(output) if output is not None else None
    with writing(target, overwrite=overwrite):  # refused before any work if it cannot be written
        feature_set = read_feature_set(features)
        found = find_duplicates(feature_set, **options)
        with RecordWriter(target, stream=stream, fmt="jsonl") as writer:
            for record in records(feature_set, found):
                writer.write(record)
    return DedupResult(target, len(feature_set), found)

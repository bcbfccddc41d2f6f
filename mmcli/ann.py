"""Approximate search through faiss, for feature sets too large to scan on every query.

``FEATS.faiss`` is built once beside ``FEATS.npy`` (inner product, IVF or HNSW) with a small
``FEATS.faiss.json`` recording which ``.npy`` it was built from, so a stale index is refused
rather than silently answering for rows that changed.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from mmcli.errors import InputError, OutputExists, UsageError, install_hint, option
from mmcli.output.atomic import publish, settle, temporary_sibling
from mmcli.output.destination import writing
from mmcli.output.feature_set import check_rows, read_feature_set
from mmcli.retrieval import SearchResult

KINDS = ("ivf", "hnsw")
TRAINING_ROWS_PER_LIST = 39  # the fewest rows a list trains on without faiss's warning
ADD_CHUNK = 65_536
DEFAULT_EF = 128  # HNSW search breadth (faiss's own default, 16, gives poor recall)


def faiss_module() -> Any:
    try:
        import faiss
    except ImportError:
        raise UsageError(f"approximate search needs faiss: {install_hint('ann')}") from None
    return faiss


SHARDED_INDEX = "set.faiss"  # a sharded set's index lives in its folder, beside the parts


def index_path(npy: Path) -> Path:
    return npy / SHARDED_INDEX if npy.is_dir() else npy.with_suffix(".faiss")


def _meta_path(npy: Path) -> Path:
    return npy / f"{SHARDED_INDEX}.json" if npy.is_dir() else npy.with_suffix(".faiss.json")


def _fingerprint(npy: Path, vectors: np.ndarray) -> dict[str, Any]:
    from mmcli.output.sharded import index_path as set_index

    stat = os.stat(set_index(npy) if npy.is_dir() else npy)  # a sharded set's index.json changes with any part
    return {
        "rows": int(vectors.shape[0]),
        "dim": int(vectors.shape[1]),
        "npy_bytes": stat.st_size,
        "npy_mtime_ns": stat.st_mtime_ns,
    }


def default_nlist(rows: int) -> int:
    """About sqrt(N) lists (at least 39 training rows each, as faiss asks): k-means training stays
    cheap on a CPU, and one list in 16 still covers only ~6% of the rows per query."""
    return max(1, min(int(math.sqrt(rows)), rows // TRAINING_ROWS_PER_LIST))


def default_nprobe(nlist: int) -> int:
    """One list in 64, and at least 8 (faiss's own default, 1, gives poor recall): on 1M clustered rows this
    gave recall@10 1.0 at 7x the speed of exact search (benchmarks/search_speed.py)."""
    return min(nlist, max(8, nlist // 64))


def build_index(vectors: np.ndarray, *, kind: str = "ivf", nlist: int | None = None, m: int = 32, seed: int = 0) -> Any:
    """An inner-product index over ``vectors`` (memory-mapped rows are added in chunks)."""
    faiss = faiss_module()
    rows, dim = vectors.shape
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
    elif kind == "ivf":
        nlist = nlist or default_nlist(rows)
        if nlist > rows:
            raise UsageError(
                f"--nlist {nlist} asks for more lists than the set's {rows} rows; give at most {rows} "
                f"(the default, about sqrt(rows), is {default_nlist(rows)} here)"
            )
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        # faiss prints "WARNING clustering N points to K centroids" on stderr below 39 rows a list;
        # small sets train fine and the default nlist keeps 39, so the line would only be noise.
        index.cp.min_points_per_centroid = 1
        sample = np.random.default_rng(seed).choice(rows, size=min(rows, max(64 * nlist, 50_000)), replace=False)
        index.train(np.ascontiguousarray(vectors[np.sort(sample)], dtype=np.float32))
    else:
        raise UsageError(f"unknown index kind {kind!r}; choose from {', '.join(KINDS)}")
    for start in range(0, rows, ADD_CHUNK):
        index.add(np.ascontiguousarray(vectors[start : start + ADD_CHUNK], dtype=np.float32))
    return index


def save_index(index: Any, npy: Path, vectors: np.ndarray) -> Path:
    """Write ``FEATS.faiss`` and its fingerprint, together (see :func:`~mmcli.output.atomic.publish`)."""
    faiss = faiss_module()
    target = index_path(npy)
    index_temporary, meta_temporary = temporary_sibling(target), temporary_sibling(_meta_path(npy))
    try:
        faiss.write_index(index, str(index_temporary))
        meta_temporary.write_text(json.dumps(_fingerprint(npy, vectors)), encoding="utf-8")
        publish(target, [(index_temporary, target), (meta_temporary, _meta_path(npy))])
    finally:
        index_temporary.unlink(missing_ok=True)
        meta_temporary.unlink(missing_ok=True)
    return target


def index_feature_set(
    npy: Path, *, kind: str = "ivf", nlist: int | None = None, m: int = 32, overwrite: bool = False
) -> tuple[Path, int]:
    """Build ``FEATS.faiss`` beside a feature set, for later searches to reuse; returns its path and
    the number of rows indexed."""
    feature_set = read_feature_set(npy)
    check_rows(feature_set)  # faiss would index NaN rows without a word, and fail on an empty set
    target = index_path(npy)
    if target.exists() and not overwrite:
        raise OutputExists(f"{target} already exists; pass --overwrite to rebuild it")
    with writing(target, overwrite=True):
        save_index(build_index(feature_set.vectors, kind=kind, nlist=nlist, m=m), npy, feature_set.vectors)
    return target, len(feature_set)


def load_index(npy: Path, vectors: np.ndarray) -> Any:
    """``FEATS.faiss``, refused if it was built from a different ``FEATS.npy``; read once per process
    while the file stays the same (see :data:`KEEP_LOADED`)."""
    faiss = faiss_module()
    settle(index_path(npy))
    try:
        saved = json.loads(_meta_path(npy).read_text())
    except (OSError, ValueError):
        raise InputError(
            f"{index_path(npy)} has no readable {_meta_path(npy).name}; rebuild it with "
            f"mmcli index build {npy} --overwrite"
        ) from None
    if saved != _fingerprint(npy, vectors):
        raise InputError(
            f"{index_path(npy)} was built from another version of {npy}; rebuild it with "
            f"mmcli index build {npy} --overwrite"
        )
    target = str(index_path(npy))
    stat = os.stat(target)
    stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns, json.dumps(saved, sort_keys=True))
    with _LOADED_LOCK:
        held = _LOADED.get(target)
        if held is not None and held[0] == stamp:
            _LOADED.move_to_end(target)
            return held[1]
    index = faiss.read_index(target)
    with _LOADED_LOCK:
        _LOADED[target] = (stamp, index)
        while len(_LOADED) > KEEP_LOADED:
            _LOADED.popitem(last=False)
    return index


# Indexes read in this process, by file, with the stamp they were read at: a server searching one set
# reads FEATS.faiss once (0.3-1.2 s at a million rows), and again only when it is rebuilt.
KEEP_LOADED = 2
_LOADED: OrderedDict[str, tuple[tuple[Any, ...], Any]] = OrderedDict()
_LOADED_LOCK = threading.Lock()


def ann_search(
    index: Any,
    queries: np.ndarray,
    k: int,
    *,
    nprobe: int | None = None,
    ef: int | None = None,
    threshold: float | None = None,
) -> SearchResult:
    """Top-``k`` by approximate inner product; ``nprobe`` (IVF) and ``ef`` (HNSW) trade speed for recall,
    and each is refused for the other kind of index rather than ignored."""
    kind = "HNSW" if hasattr(index, "hnsw") else "IVF" if hasattr(index, "nprobe") else type(index).__name__
    for name, value, applies in (("nprobe", nprobe, "IVF"), ("ef", ef, "HNSW")):
        if value is not None and kind != applies:
            raise UsageError(f"{option(name)} tunes {applies} indexes, and this one is {kind}")
    if hasattr(index, "nprobe"):
        index.nprobe = nprobe or default_nprobe(index.nlist)
    if hasattr(index, "hnsw"):
        index.hnsw.efSearch = max(ef or DEFAULT_EF, k)
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    keep = rows >= 0
    if threshold is not None:
        keep &= scores >= threshold
    return SearchResult(
        [r[m].astype(np.int64) for r, m in zip(rows, keep, strict=True)],
        [s[m] for s, m in zip(scores, keep, strict=True)],
    )

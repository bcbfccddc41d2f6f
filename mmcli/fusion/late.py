"""Late (decision-level) fusion: combine several ranked result lists into one.

The inputs are what ``mmcli retrieve`` (``{"query_id", "query", "hits": [...]}``) or ``mmcli classify``
(``{"id", "source", "label", "score", "scores"}``) wrote, one list ("run") per model or modality. Each
query's candidates (hit ids, or labels) are rescored from their ranks (``rrf``, ``borda``) or from their
min-max normalised scores (``weighted``, ``max``), and written back in the same shape as the inputs.
Pure Python: no numpy or torch, so ``mmcli fuse --results`` starts fast.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from mmcli.errors import InputError, UsageError
from mmcli.fusion import LATE_METHODS

DEFAULT_RRF_K = 60

RETRIEVAL = "retrieval"
CLASSIFICATION = "classification"
_SCORE_METHODS = ("weighted", "max")
_TIE_DECIMALS = 9  # fused scores equal to this many decimals are ties (float noise, not a real difference)
_OUTPUT_DECIMALS = 6


@dataclass
class LateFusionReport:
    """What a late fusion did, for the one-line summary on stderr."""

    kind: str  # "retrieval" | "classification"
    queries: int  # fused output records
    partial: int  # queries missing from at least one run
    skipped_errors: int  # error records skipped


@dataclass
class _Entry:
    """One run's answer for one query: its record and its candidates, best first."""

    record: dict[str, Any]
    candidates: list[Hashable]  # in the order given (order of appearance)
    rank: dict[Hashable, int]  # 1-based
    score: dict[Hashable, float | None]
    hit: dict[Hashable, dict[str, Any]]  # retrieval: the hit record, for source and extra keys


def fuse_results(
    runs: Sequence[Sequence[dict]],
    method: str,
    *,
    weights: Sequence[float] | None = None,
    rrf_k: float = DEFAULT_RRF_K,
    top_k: int | None = None,
    names: Sequence[str] | None = None,
) -> tuple[list[dict], LateFusionReport]:
    """Fuse result lists of one kind into one list of the same kind, one record per query.

    ``runs`` are parsed JSONL records of ``mmcli retrieve`` or ``mmcli classify``; ``names`` (e.g. the
    file paths) only label errors. Records with an ``"error"`` key are failed items and are skipped.
    Fused scores are rounded to 6 decimals; ties go to the better best rank, then to first appearance.
    """
    _check_arguments(runs, method, weights, rrf_k, top_k, names)
    labels = [str(name) for name in names] if names is not None else [f"run {i}" for i in range(1, len(runs) + 1)]
    run_weights = [float(w) for w in weights] if weights is not None else [1.0] * len(runs)

    kind: str | None = None
    kind_where = ""
    skipped = 0
    order: dict[Hashable, None] = {}  # query keys in order of first appearance
    parsed: list[dict[Hashable, _Entry]] = []
    for label, run in zip(labels, runs, strict=True):
        entries: dict[Hashable, _Entry] = {}
        first_seen: dict[Hashable, int] = {}
        for number, record in enumerate(run, start=1):
            where = f"{label}: record {number}"
            if not isinstance(record, dict):
                raise InputError(f"{where}: expected a JSON object, got {type(record).__name__}")
            if "error" in record:
                skipped += 1
                continue
            record_kind = _kind_of(record, where)
            if kind is None:
                kind, kind_where = record_kind, where
            elif record_kind != kind:
                raise InputError(
                    f"{where}: a {record_kind} record, but {kind_where} is a {kind} record; "
                    "fuse lists of one kind (all retrieve output or all classify output)"
                )
            key = _query_key(record, record_kind, where)
            if key in entries:
                raise InputError(
                    f"{where}: query {key!r} appears twice in this list (first at record {first_seen[key]})"
                )
            first_seen[key] = number
            entries[key] = _entry(record, record_kind, where, needs_scores=method in _SCORE_METHODS)
            order.setdefault(key, None)
        parsed.append(entries)

    if kind is None:
        raise InputError(
            "no result records to fuse: the lists are empty or hold only error records "
            "(give the JSONL that mmcli retrieve or mmcli classify wrote)"
        )

    fused: list[dict] = []
    partial = 0
    for key in order:
        present = [(run_weights[i], entries[key]) for i, entries in enumerate(parsed) if key in entries]
        if len(present) < len(runs):
            partial += 1
        ranked = _fuse_query(present, method, rrf_k)
        if top_k is not None:
            ranked = ranked[:top_k]
        fused.append(_retrieval_record(key, present, ranked) if kind == RETRIEVAL else _class_record(present, ranked))
    return fused, LateFusionReport(kind=kind, queries=len(fused), partial=partial, skipped_errors=skipped)


def _check_arguments(
    runs: Sequence[Sequence[dict]],
    method: str,
    weights: Sequence[float] | None,
    rrf_k: float,
    top_k: int | None,
    names: Sequence[str] | None,
) -> None:
    """Usage errors before any record is read, so a bad flag is reported as a bad flag."""
    if method not in LATE_METHODS:
        raise UsageError(f"unknown late fusion method {method!r}; choose one of {', '.join(LATE_METHODS)}")
    if len(runs) < 2:
        raise UsageError(f"late fusion needs at least two result lists, got {len(runs)}")
    if names is not None and len(names) != len(runs):
        raise UsageError(f"{len(names)} names for {len(runs)} result lists; give one name per list")
    if weights is not None:
        if len(weights) != len(runs):
            raise UsageError(f"{len(weights)} weights for {len(runs)} result lists; give one weight per list")
        if not all(_is_number(w) and math.isfinite(w) and w >= 0 for w in weights) or not any(weights):
            raise UsageError(f"weights must be finite, non-negative and not all zero, got {list(weights)}")
    if not _is_number(rrf_k) or not math.isfinite(rrf_k) or rrf_k <= 0:
        raise UsageError(f"rrf_k must be a positive number, got {rrf_k!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise UsageError(f"top_k must be a positive integer, got {top_k!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind_of(record: dict[str, Any], where: str) -> str:
    """``hits`` marks a retrieval record; ``scores`` (or a bare ``label`` and ``score``) a classification one."""
    if "hits" in record:
        return RETRIEVAL
    if "scores" in record or ("label" in record and "score" in record):
        return CLASSIFICATION
    raise InputError(
        f"{where}: neither a retrieval record (with 'hits') nor a classification record (with 'scores'); "
        f"got keys {sorted(record)}"
    )


def _query_key(record: dict[str, Any], kind: str, where: str) -> Hashable:
    """Retrieval: ``query_id`` (else ``query``); classification: ``id``."""
    fields = ("query_id", "query") if kind == RETRIEVAL else ("id",)
    for field in fields:
        value = record.get(field)
        if value is not None:
            if isinstance(value, list | dict):
                raise InputError(f"{where}: {field} must be a string or a number, got {type(value).__name__}")
            return value
    raise InputError(
        f"{where}: a {kind} record needs {' or '.join(repr(f) for f in fields)} to match queries across lists"
    )


def _score(value: object, where: str) -> float:
    if not _is_number(value) or not math.isfinite(value):
        raise InputError(f"{where}: score must be a finite number, got {value!r}")
    return float(value)


def _entry(record: dict[str, Any], kind: str, where: str, *, needs_scores: bool) -> _Entry:
    """Candidates with their 1-based rank and score: hits in the order given, labels by score (stable)."""
    if kind == RETRIEVAL:
        hits = record["hits"]
        if not isinstance(hits, list):
            raise InputError(f"{where}: 'hits' must be a list, got {type(hits).__name__}")
        candidates: list[Hashable] = []
        scores: dict[Hashable, float | None] = {}
        hit_of: dict[Hashable, dict[str, Any]] = {}
        for position, hit in enumerate(hits, start=1):
            at = f"{where}, hit {position}"
            if not isinstance(hit, dict) or hit.get("id") is None or isinstance(hit.get("id"), list | dict):
                raise InputError(f"{at}: a hit must be an object with a string 'id'")
            hit_id = hit["id"]
            if hit_id in hit_of:
                raise InputError(f"{at}: hit {hit_id!r} appears twice in this query's hits")
            if "score" in hit or needs_scores:
                scores[hit_id] = _score(hit.get("score"), at)
            else:
                scores[hit_id] = None  # rank-only methods do not need it
            candidates.append(hit_id)
            hit_of[hit_id] = hit
        ranks = {hit_id: position for position, hit_id in enumerate(candidates, start=1)}
        return _Entry(record, candidates, ranks, scores, hit_of)

    given = record.get("scores")
    if given is None:
        given = {record["label"]: record["score"]}
    if not isinstance(given, dict) or not given:
        raise InputError(f"{where}: 'scores' must be a non-empty object of label: probability")
    scores = {label: _score(value, f"{where}, label {label!r}") for label, value in given.items()}
    candidates = list(scores)
    by_score = sorted(candidates, key=lambda label: -scores[label])  # stable: ties keep the given order
    ranks = {label: position for position, label in enumerate(by_score, start=1)}
    return _Entry(record, candidates, ranks, scores, {})


def _normalised(entry: _Entry) -> dict[Hashable, float]:
    """Min-max normalised scores of one run for one query; all equal -> all 1.0."""
    values = [s for s in entry.score.values() if s is not None]
    if not values:
        return {}
    low, high = min(values), max(values)
    if high == low:
        return {c: 1.0 for c in entry.candidates}
    return {c: (entry.score[c] - low) / (high - low) for c in entry.candidates}


def _fuse_query(present: list[tuple[float, _Entry]], method: str, rrf_k: float) -> list[tuple[Hashable, float]]:
    """``(candidate, fused score)`` best first for one query, from the runs that have it."""
    appearance: dict[Hashable, None] = {}
    best_rank: dict[Hashable, int] = {}
    for _, entry in present:
        for candidate in entry.candidates:
            appearance.setdefault(candidate, None)
            rank = entry.rank[candidate]
            best_rank[candidate] = min(rank, best_rank.get(candidate, rank))

    terms: dict[Hashable, list[float]] = {c: [] for c in appearance}
    if method == "rrf":
        for weight, entry in present:
            for c in entry.candidates:
                terms[c].append(weight / (rrf_k + entry.rank[c]))
    elif method == "borda":
        n = len(appearance)
        for weight, entry in present:
            for c in entry.candidates:
                terms[c].append(weight * (n - entry.rank[c] + 1))
    else:  # weighted, max
        for weight, entry in present:
            for c, value in _normalised(entry).items():
                terms[c].append(weight * value)
    combine = max if method == "max" else math.fsum  # fsum: exact, so the order of the runs does not matter
    fused = {c: float(combine(terms[c])) for c in appearance}

    position = {c: i for i, c in enumerate(appearance)}
    ranked = sorted(appearance, key=lambda c: (-round(fused[c], _TIE_DECIMALS), best_rank[c], position[c]))
    return [(c, fused[c]) for c in ranked]


def _retrieval_record(key: Hashable, present: list[tuple[float, _Entry]], ranked: list[tuple[Hashable, float]]) -> dict:
    """``{"query_id", "query", "hits"}``; query, extra keys and each hit's source from the first run that has them."""
    first = present[0][1].record
    record: dict[str, Any] = {"query_id": key, "query": first.get("query")}
    record.update((k, v) for k, v in first.items() if k not in ("query_id", "query", "hits"))
    hits = []
    for rank, (candidate, score) in enumerate(ranked, start=1):
        original = next(entry.hit[candidate] for _, entry in present if candidate in entry.hit)
        hit = {"rank": rank, "id": candidate, "score": round(score, _OUTPUT_DECIMALS), "source": original.get("source")}
        hit.update((k, v) for k, v in original.items() if k not in hit)
        hits.append(hit)
    record["hits"] = hits
    return record


def _class_record(present: list[tuple[float, _Entry]], ranked: list[tuple[Hashable, float]]) -> dict:
    """``{"id", "source", "label", "score", "scores"}`` with the fused scores, best first."""
    first = present[0][1].record
    source = next((entry.record["source"] for _, entry in present if entry.record.get("source") is not None), None)
    best_label, best_score = ranked[0]
    record: dict[str, Any] = {
        "id": first["id"],
        "source": source,
        "label": best_label,
        "score": round(best_score, _OUTPUT_DECIMALS),
        "scores": {label: round(score, _OUTPUT_DECIMALS) for label, score in ranked},
    }
    record.update((k, v) for k, v in first.items() if k not in record)
    return record

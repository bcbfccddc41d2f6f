"""Retrieval metrics: from ranked lists and relevance judgements, and the cross-modal protocol.

Ranked lists are taken in the order given (``mmcli retrieve`` already breaks score ties by row
order). A query whose judgement lists no relevant item has no defined recall or precision, so it
is left out of the means and counted; a judged query missing from the results scores zero, as
``trec_eval -c`` counts it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

DEFAULT_KS = (1, 5, 10)
NDCG_DEPTH = 10


@dataclass
class RetrievalScores:
    """Means over the judged queries, and what was left out."""

    metrics: dict[str, float | None]
    per_query: dict[str, dict[str, float | None]] = field(default_factory=dict)
    queries: int = 0
    no_relevant: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unjudged: list[str] = field(default_factory=list)


def query_metrics(ranked: Sequence[str], relevant: set[str], ks: Sequence[int] = DEFAULT_KS) -> dict[str, float | None]:
    """Recall@K, reciprocal rank, first relevant rank, average precision and nDCG@10 for one query.

    An item listed more than once counts once, at its first (best) rank; the other items keep
    their places in the list.
    """
    seen: set[str] = set()
    hits = []
    for position, item in enumerate(ranked, start=1):
        if item in relevant and item not in seen:
            hits.append(position)
        seen.add(item)
    scores: dict[str, float | None] = {}
    for k in ks:
        scores[f"R@{k}"] = sum(1 for position in hits if position <= k) / len(relevant)
    scores["RR"] = 1.0 / hits[0] if hits else 0.0
    scores["rank"] = float(hits[0]) if hits else None
    scores["AP"] = sum(found / position for found, position in enumerate(hits, start=1)) / len(relevant)
    gains = sum(1.0 / math.log2(position + 1) for position in hits if position <= NDCG_DEPTH)
    ideal = sum(1.0 / math.log2(position + 1) for position in range(1, min(len(relevant), NDCG_DEPTH) + 1))
    scores[f"nDCG@{NDCG_DEPTH}"] = gains / ideal
    return scores


def evaluate_rankings(
    rankings: Mapping[str, Sequence[str]], qrels: Mapping[str, set[str]], ks: Sequence[int] = DEFAULT_KS
) -> RetrievalScores:
    """Mean metrics over the judged queries: ``rankings`` maps query id -> ranked item ids."""
    per_query: dict[str, dict[str, float | None]] = {}
    no_relevant = [query for query, relevant in qrels.items() if not relevant]
    missing = [query for query, relevant in qrels.items() if relevant and query not in rankings]
    unjudged = [query for query in rankings if query not in qrels]
    for query, relevant in qrels.items():
        if relevant:
            per_query[query] = query_metrics(rankings.get(query, []), set(relevant), ks)
    metrics: dict[str, float | None] = {}
    if per_query:
        names = [name for name in next(iter(per_query.values())) if name != "rank"]
        for name in names:
            metrics["MRR" if name == "RR" else "mAP" if name == "AP" else name] = float(
                np.mean([scores[name] for scores in per_query.values()])
            )
        metrics["MedR"] = median_rank([scores["rank"] for scores in per_query.values()])
    return RetrievalScores(metrics, per_query, len(per_query), no_relevant, missing, unjudged)


def median_rank(ranks: Sequence[float | None]) -> float | None:
    """Median of first-relevant ranks; a query whose relevant items were never retrieved ranks
    last (infinitely), and a median that lands there is ``None``."""
    median = statistics.median([math.inf if rank is None else rank for rank in ranks])
    return None if math.isinf(median) else float(median)


def protocol_ranks(similarity: np.ndarray, relevant_columns: Sequence[Sequence[int]]) -> np.ndarray:
    """For each row, the 1-based rank of its best-placed relevant column among all columns.

    Equal scores are ordered by column, as ``mmcli retrieve`` orders tied rows.
    """
    ranks = np.empty(similarity.shape[0], dtype=np.int64)
    columns = np.arange(similarity.shape[1])
    for row, relevant in enumerate(relevant_columns):
        scores = similarity[row]
        best = similarity.shape[1] + 1
        for column in relevant:
            value = scores[column]
            ahead = np.count_nonzero(scores > value) + np.count_nonzero((scores == value) & (columns < column))
            best = min(best, int(ahead) + 1)
        ranks[row] = best
    return ranks


def cross_modal_recall(
    images: np.ndarray,
    texts: np.ndarray,
    text_image: Sequence[int],
    ks: Sequence[int] = DEFAULT_KS,
    *,
    block: int = 1024,
) -> dict[str, float]:
    """Image->text and text->image R@K as CLIP_benchmark and LAVIS compute them, as fractions (they
    print percentages) on the scale of every other score of ``evaluate``.

    ``text_image[j]`` is the image row that text ``j`` describes (several texts per image). An image
    query counts as found at K if any of its texts is in the top K; a text query if its image is.
    """
    text_image = np.asarray(text_image)
    captions_of: list[list[int]] = [[] for _ in range(images.shape[0])]
    for text, image in enumerate(text_image.tolist()):
        captions_of[image].append(text)
    image_ranks, text_ranks = [], []
    for start in range(0, images.shape[0], block):
        similarity = np.asarray(images[start : start + block], np.float32) @ np.asarray(texts, np.float32).T
        image_ranks.append(protocol_ranks(similarity, captions_of[start : start + block]))
    for start in range(0, texts.shape[0], block):
        similarity = np.asarray(texts[start : start + block], np.float32) @ np.asarray(images, np.float32).T
        text_ranks.append(protocol_ranks(similarity, [[image] for image in text_image[start : start + block]]))
    i2t, t2i = np.concatenate(image_ranks), np.concatenate(text_ranks)
    result: dict[str, float] = {}
    for name, ranks in (("image->text", i2t), ("text->image", t2i)):
        for k in ks:
            result[f"{name} R@{k}"] = float(np.mean(ranks <= k))
        result[f"{name} MedR"] = float(np.median(ranks))
    return result

"""BLEU-1..4, ROUGE-L and CIDEr-D with the COCO caption toolkit's exact arithmetic.

Scores must match ``pycocoevalcap`` to the last bit, so the floating-point operations below happen
in the same order as there (including its epsilons, its numpy means and logs, and its quirks such
as CIDEr's "length" counting bigrams). Inputs are tokenised strings (see
:mod:`mmcli.metrics.ptb_tokenizer`). METEOR and SPICE are Java programs: :mod:`mmcli.metrics.java`
runs them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

__all__ = ["bleu_scores", "cider_scores", "rouge_scores"]

_BLEU_TINY = 1e-15  # keeps a zero n-gram match count from giving log(0)
_BLEU_SMALL = 1e-9  # keeps an empty hypothesis from dividing by zero
_ROUGE_BETA = 1.2
_CIDER_N = 4
_CIDER_SIGMA = 6.0


def _ngram_counts(sentence: str, n: int = 4) -> dict[tuple[str, ...], int]:
    """Counts of all 1..n-grams, in the toolkit's insertion order (by length, then position)."""
    words = sentence.split()
    counts: dict[tuple[str, ...], int] = {}
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            gram = tuple(words[i : i + k])
            counts[gram] = counts.get(gram, 0) + 1
    return counts


def _check_pairs(hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> list[str]:
    ids = list(references)
    if set(ids) != set(hypotheses):
        raise ValueError("hypotheses and references must have the same ids")
    for key in ids:
        if not references[key]:
            raise ValueError(f"no references for id {key!r}")
    return ids


def bleu_scores(
    hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]], n: int = 4
) -> tuple[list[float], dict[str, list[float]]]:
    """BLEU-1..n as pycocoevalcap's ``Bleu(n)``: corpus scores with the "closest" reference length,
    and the per-image scores it reports alongside (each with its own brevity penalty).

    Returns ``([BLEU-1, ..., BLEU-n], {id: [BLEU-1, ..., BLEU-n]})``.
    """
    ids = _check_pairs(hypotheses, references)
    total_guess = [0] * n
    total_correct = [0] * n
    total_test = 0
    total_ref = 0
    per_item: dict[str, list[float]] = {}
    for key in ids:
        max_counts: dict[tuple[str, ...], int] = {}
        ref_lens = []
        for ref in references[key]:
            ref_lens.append(len(ref.split()))
            for gram, count in _ngram_counts(ref, n).items():
                max_counts[gram] = max(max_counts.get(gram, 0), count)
        hyp = hypotheses[key]
        test_len = len(hyp.split())
        ref_len = min((abs(length - test_len), length) for length in ref_lens)[1]
        guess = [max(0, test_len - k + 1) for k in range(1, n + 1)]
        correct = [0] * n
        for gram, count in _ngram_counts(hyp, n).items():
            correct[len(gram) - 1] += min(max_counts.get(gram, 0), count)
        total_test += test_len
        total_ref += ref_len
        for k in range(n):
            total_guess[k] += guess[k]
            total_correct[k] += correct[k]
        per_item[key] = _bleu_from_counts(correct, guess, test_len, ref_len, n)
    return _bleu_from_counts(total_correct, total_guess, total_test, total_ref, n), per_item


def _bleu_from_counts(correct: Sequence[int], guess: Sequence[int], test_len: int, ref_len: int, n: int) -> list[float]:
    scores = []
    product = 1.0
    for k in range(n):
        product *= (float(correct[k]) + _BLEU_TINY) / (float(guess[k]) + _BLEU_SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_len + _BLEU_TINY) / (ref_len + _BLEU_SMALL)
    if ratio < 1:
        penalty = math.exp(1 - 1 / ratio)
        scores = [s * penalty for s in scores]
    return scores


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, 1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_scores(
    hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> tuple[float, dict[str, float]]:
    """ROUGE-L as pycocoevalcap's ``Rouge()``: per image, the F-measure (beta 1.2) of the best LCS
    precision and best LCS recall over the references; the corpus score is their mean."""
    import numpy as np

    ids = _check_pairs(hypotheses, references)
    beta2 = _ROUGE_BETA**2
    per_item: dict[str, float] = {}
    for key in ids:
        cand = hypotheses[key].split(" ")  # the toolkit splits on single spaces, not whitespace
        precisions = []
        recalls = []
        for ref in references[key]:
            ref_tokens = ref.split(" ")
            lcs = _lcs_length(ref_tokens, cand)
            precisions.append(lcs / float(len(cand)))
            recalls.append(lcs / float(len(ref_tokens)))
        p, r = max(precisions), max(recalls)
        per_item[key] = ((1 + beta2) * p * r) / float(r + beta2 * p) if p != 0 and r != 0 else 0.0
    corpus = float(np.mean(np.array([per_item[k] for k in ids]))) if ids else float("nan")
    return corpus, per_item


def cider_scores(
    hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> tuple[float, dict[str, float]]:
    """CIDEr-D as pycocoevalcap's ``Cider()``: tf-idf n-gram vectors (n = 1..4) with document
    frequencies from the evaluated references, clipped candidate weights, a Gaussian length
    penalty (sigma 6), averaged over n-gram orders and references, times 10."""
    import numpy as np

    ids = _check_pairs(hypotheses, references)
    ref_counts = {key: [_ngram_counts(r, _CIDER_N) for r in references[key]] for key in ids}
    doc_freq: Counter[tuple[str, ...]] = Counter()
    for key in ids:
        doc_freq.update({gram for counts in ref_counts[key] for gram in counts})
    log_n_images = np.log(float(len(ids))) if ids else 0.0
    penalty_denominator = 2 * _CIDER_SIGMA**2

    def vectorise(counts: Mapping[tuple[str, ...], int]) -> tuple[list[dict], list, int]:
        vec: list[dict[tuple[str, ...], float]] = [{} for _ in range(_CIDER_N)]
        norm: list = [0.0] * _CIDER_N
        length = 0
        for gram, tf in counts.items():
            idf = np.log(max(1.0, float(doc_freq.get(gram, 0))))
            k = len(gram) - 1
            weight = float(tf) * (log_n_images - idf)
            vec[k][gram] = weight
            norm[k] += pow(weight, 2)
            if k == 1:  # the toolkit's "length" counts bigrams, not words
                length += tf
        return vec, [np.sqrt(x) for x in norm], length

    per_item: dict[str, float] = {}
    for key in ids:
        vec, norm, length = vectorise(_ngram_counts(hypotheses[key], _CIDER_N))
        total = np.array([0.0] * _CIDER_N)
        for counts in ref_counts[key]:
            vec_ref, norm_ref, length_ref = vectorise(counts)
            delta = float(length - length_ref)
            val = np.array([0.0] * _CIDER_N)
            for k in range(_CIDER_N):
                for gram, weight in vec[k].items():
                    ref_weight = vec_ref[k].get(gram, 0.0)
                    val[k] += min(weight, ref_weight) * ref_weight
                if norm[k] != 0 and norm_ref[k] != 0:
                    val[k] /= norm[k] * norm_ref[k]
                val[k] *= math.e ** (-(delta**2) / penalty_denominator)
            total += val
        score = np.mean(total)
        score /= len(ref_counts[key])
        score *= 10.0
        per_item[key] = float(score)
    corpus = float(np.mean(np.array([per_item[k] for k in ids]))) if ids else float("nan")
    return corpus, per_item

"""Caption metrics that give the same numbers as the COCO caption toolkit, without Java.

The COCO toolkit (``pycocoevalcap``) first tokenises every caption with Stanford CoreNLP's Java
``PTBTokenizer`` and drops a fixed list of punctuation tokens; BLEU, ROUGE-L and CIDEr-D are then
computed in Python on the space-separated tokens. Published numbers depend on every detail of that
pipeline, so mmcli re-implements it in three parts, put together here by :func:`evaluate_captions`:

* :mod:`mmcli.metrics.ptb_tokenizer`: the Java tokenizer's output, reproduced in pure Python;
* :mod:`mmcli.metrics.coco_scorers`: BLEU-1..4, ROUGE-L and CIDEr-D with the toolkit's exact arithmetic;
* :mod:`mmcli.metrics.java`: METEOR and SPICE, which are Java programs with large resources, run
  through ``pycocoevalcap`` only when Java is present.

Unavailable metrics are ``None`` with a note, never a silent zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mmcli.errors import install_hint
from mmcli.metrics.coco_scorers import bleu_scores, cider_scores, rouge_scores
from mmcli.metrics.java import find_java, have_pycocoevalcap, run_meteor, run_spice, spice_models_present
from mmcli.metrics.ptb_tokenizer import PUNCTUATION_TOKENS, ptb_tokenize, tokenize_corpus

__all__ = [
    "ALL_METRICS",
    "PUNCTUATION_TOKENS",
    "CaptionScores",
    "bleu_scores",
    "cider_scores",
    "evaluate_captions",
    "find_java",
    "ptb_tokenize",
    "rouge_scores",
    "tokenize_corpus",
]

#: Metric groups accepted by :func:`evaluate_captions`.
ALL_METRICS = ("bleu", "rouge", "cider", "meteor", "spice")
#: Computed here, in Python, wherever mmcli runs.
NATIVE_METRICS = ("bleu", "rouge", "cider")


def runnable_metrics() -> tuple[str, ...]:
    """The metrics this machine can compute: BLEU, ROUGE-L and CIDEr always; METEOR where Java and
    pycocoevalcap are installed (the ``metrics`` extra); SPICE where its CoreNLP models are there too.
    The default of every caption evaluation, so a default run never writes a null it could not avoid."""
    if find_java() is None or not have_pycocoevalcap():
        return NATIVE_METRICS
    return (*NATIVE_METRICS, "meteor", *(("spice",) if spice_models_present() else ()))


_JAVA_NOTE = f"needs Java and pycocoevalcap: {install_hint('metrics')}"
_SPICE_MODELS_NOTE = (
    "SPICE needs the Stanford CoreNLP 3.6.0 models, which pycocoevalcap downloads on first use; run "
    "`python -c 'from pycocoevalcap.spice.spice import Spice; Spice()'` once with network access"
)

_METRIC_KEYS = {
    "bleu": ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"),
    "rouge": ("ROUGE-L",),
    "cider": ("CIDEr",),
    "meteor": ("METEOR",),
    "spice": ("SPICE",),
}


@dataclass
class CaptionScores:
    """Corpus and per-item caption metrics.

    ``corpus[name]`` is the corpus score, or ``None`` when the metric could not be computed (the
    reason is in ``notes``). ``per_item[name][id]`` holds per-item scores as the toolkit reports
    them (empty for an unavailable metric). Names: BLEU-1..BLEU-4, ROUGE-L, CIDEr, METEOR, SPICE.
    """

    corpus: dict[str, float | None] = field(default_factory=dict)
    per_item: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def by_item(self) -> dict[str, dict[str, float]]:
        """Per-item scores regrouped as ``{id: {metric: score}}`` (handy for one record per item)."""
        out: dict[str, dict[str, float]] = {}
        for name, values in self.per_item.items():
            for key, value in values.items():
                out.setdefault(key, {})[name] = value
        return out


def evaluate_captions(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    metrics: Sequence[str] | None = None,
    *,
    tokenized: bool = False,
) -> CaptionScores:
    """Score generated captions against references with the COCO caption metrics.

    Only ids present in both mappings (with at least one reference) are scored, in the order of
    ``references``; reporting any mismatch is the caller's job. Captions are PTB-tokenised as
    pycocoevalcap does unless ``tokenized`` is true. BLEU, ROUGE-L and CIDEr are computed here;
    METEOR and SPICE run pycocoevalcap's Java scorers on the same tokenised text when Java and
    pycocoevalcap are available, and are otherwise ``None`` with a note. ``metrics`` defaults to
    :func:`runnable_metrics`.
    """
    asked = runnable_metrics() if metrics is None else metrics
    chosen = list(dict.fromkeys(m.lower() for m in asked))  # requested order, without repeats
    unknown = [m for m in chosen if m not in _METRIC_KEYS]
    if unknown:
        raise ValueError(f"unknown caption metric(s) {', '.join(unknown)}; choose from {', '.join(_METRIC_KEYS)}")
    result = CaptionScores()

    def unavailable(name: str, why: str | None) -> None:
        for key in _METRIC_KEYS[name]:
            result.corpus[key] = None
            result.per_item[key] = {}
        if why:
            result.notes.append(why)

    ids = [key for key in references if key in predictions and references[key]]
    empty = sum(1 for key in references if key in predictions and not references[key])
    if empty:
        result.notes.append(f"{empty} item(s) without references were not scored")
    if not ids:
        for name in chosen:
            unavailable(name, None)
        result.notes.append("no item has both a prediction and references: nothing was scored")
        return result

    refs = {key: list(references[key]) for key in ids}
    preds = {key: [predictions[key]] for key in ids}
    if not tokenized:  # two tokenizer calls, as pycocoevalcap's COCOEvalCap makes
        refs = tokenize_corpus(refs)
        preds = tokenize_corpus(preds)
    hyps = {key: preds[key][0] for key in ids}

    for name in chosen:
        if name == "bleu":
            corpus, per = bleu_scores(hyps, refs)
            for k, key in enumerate(_METRIC_KEYS["bleu"]):
                result.corpus[key] = corpus[k]
                result.per_item[key] = {i: per[i][k] for i in ids}
        elif name == "rouge":
            result.corpus["ROUGE-L"], result.per_item["ROUGE-L"] = rouge_scores(hyps, refs)
        elif name == "cider":
            result.corpus["CIDEr"], result.per_item["CIDEr"] = cider_scores(hyps, refs)
        else:
            label = _METRIC_KEYS[name][0]
            java = find_java()
            if java is None or not have_pycocoevalcap():
                unavailable(name, f"{label} {_JAVA_NOTE}")
            elif name == "spice" and not spice_models_present():
                unavailable(name, _SPICE_MODELS_NOTE)
            else:
                try:
                    if name == "meteor":
                        score, scores = run_meteor(java, refs, preds)
                        per_item = dict(zip(ids, scores, strict=True))
                    else:
                        score, per_item = run_spice(java, refs, preds)
                except Exception as err:  # a broken Java setup must cost one metric, not the evaluation
                    unavailable(name, f"{label} could not be computed: {err}")
                    continue
                result.corpus[label] = score
                result.per_item[label] = per_item
    return result

"""Metrics from the files mmcli writes: each ``mmcli evaluate`` run is one call here.

Each function reads predictions and their references (JSONL records, or feature sets for the
cross-modal protocol), lines up their ids, scores the overlap with the metrics of this package and
says what it left out. What it has to say is collected in the result's ``notes`` and handed to
``on_note`` as it comes up, so a caller can show a mismatch before a long scoring run, and still
sees the notes that came before an error. With ``strict``, ids that do not line up are an
:class:`~mmcli.errors.IdMismatch` instead of a note.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmcli.errors import IdMismatch, InputError, MissingScores, UsageError, option
from mmcli.metrics.captions import CaptionScores, evaluate_captions
from mmcli.metrics.classification import ClassificationScores, evaluate_classification
from mmcli.metrics.retrieval import DEFAULT_KS, RetrievalScores, cross_modal_recall, evaluate_rankings

PathLike = str | os.PathLike[str]

#: How ``mmcli caption``'s video records are scored: each video by its summary, or each segment by its own id.
VIDEO_MODES = ("summary", "segments")


@dataclass
class CaptionReport:
    """Caption metrics of the predictions that have references."""

    metrics: dict[str, float | None]  # corpus scores; CLIPScore and RefCLIPScore when images were given
    per_item: dict[str, dict[str, float]]  # id -> metric -> score, for every scored prediction
    captions: CaptionScores  # the COCO metrics as evaluate_captions gave them, with their own notes
    notes: list[str] = field(default_factory=list)


@dataclass
class RetrievalReport:
    scores: RetrievalScores
    notes: list[str] = field(default_factory=list)


@dataclass
class CrossModalReport:
    """Image->text and text->image R@K and MedR over the images that have texts."""

    metrics: dict[str, float]
    images: int
    texts: int
    notes: list[str] = field(default_factory=list)


@dataclass
class ClassificationReport:
    scores: ClassificationScores
    notes: list[str] = field(default_factory=list)


class _Notes:
    """Notes kept in order and passed on as they come."""

    def __init__(self, on_note: Callable[[str], None] | None) -> None:
        self.kept: list[str] = []
        self.on_note = on_note

    def __call__(self, message: str) -> None:
        self.kept.append(message)
        if self.on_note is not None:
            self.on_note(message)


def _records(path: PathLike, what: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, record)`` for each record of a JSONL file, ``where`` being ``file:line`` for errors."""
    from mmcli.jsonl import read_jsonl

    for number, record in read_jsonl(path, f"{what} file"):
        yield f"{path}:{number}", record


def _field(record: dict[str, Any], key: str, where: str) -> Any:
    if key not in record:
        raise InputError(f"{where}: record has no {key!r} (keys: {', '.join(sorted(record)) or 'none'})")
    return record[key]


def _json_kind(value: Any) -> str:
    """What a JSON value is, as a message says it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return {dict: "an object", list: "a list", str: "text"}.get(type(value), "a number")


def _is_text(value: Any) -> bool:
    """Whether a JSON value can stand for an id, a label or a caption: text or a number."""
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _text(record: dict[str, Any], key: str, where: str) -> str:
    """``record[key]`` as text; null, lists and objects are refused rather than scored as ``"None"``."""
    value = _field(record, key, where)
    if not _is_text(value):
        raise InputError(f"{where}: {key!r} is {_json_kind(value)}, not text")
    return str(value)


def _check_ids(
    expected: set[str], given: set[str], *, missing_what: str, unknown_what: str, strict: bool, note: _Notes
) -> None:
    """Ids expected but not given, and given but unknown: a note each, or an error when strict."""
    for ids, what in ((sorted(expected - given), missing_what), (sorted(given - expected), unknown_what)):
        if ids:
            message = f"{len(ids)} {what} (e.g. {', '.join(map(repr, ids[:3]))})"
            if strict:
                raise IdMismatch(message)
            note(message)


@dataclass
class CaptionPredictions:
    """The captions to score, by id, and what was passed over to get them."""

    captions: dict[str, str]
    errors: int = 0  # error records
    videos: int = 0  # videos scored by their summary (or their one segment)
    skipped_segments: int = 0  # segment records left out for their video's summary
    skipped_summaries: int = 0  # summary records left out for their segments


def _is_segment(record: dict[str, Any]) -> bool:
    """A video segment record of ``mmcli caption``: ``{"id": "VIDEO#t=START,END", "t", "end", "caption"}``."""
    return "#t=" in str(record.get("id", "")) and "t" in record and "end" in record and "caption" in record


def read_caption_predictions(path: PathLike, video: str = "summary") -> CaptionPredictions:
    """The captions of ``mmcli caption`` output: ``{"id", "caption"}`` records for images, and for
    videos segment records and a ``{"id", "summary", "segments"}`` record.

    With ``video="summary"`` a video is scored under its own id by its summary, or by its segment's
    caption when it has a single one (a video captioned whole, with or without a summary), and
    its segment records are left out; with ``video="segments"`` each segment is scored under its
    own id (``VIDEO#t=START,END``) and the summaries are left out. Captions keep the file's order.
    """
    if video not in VIDEO_MODES:
        raise UsageError(f"{option('video', video)}: choose from {', '.join(VIDEO_MODES)}")
    result = CaptionPredictions({})
    order: dict[str, None] = {}  # ids in the file's order; a video's at its first record
    captions: dict[str, str] = {}  # images, segments scored by their own ids, and video summaries
    segments: dict[str, list[str]] = {}  # video id -> the captions of its segment records
    summaries: dict[str, Any] = {}  # video id -> the number of segments its summary record gives
    for where, record in _records(path, "predictions"):
        if "error" in record:
            result.errors += 1
            continue
        identifier = _text(record, "id", where)
        if "caption" not in record and "summary" in record:
            if video == "segments":
                result.skipped_summaries += 1
                continue
            text = _text(record, "summary", where)
            summaries[identifier] = record.get("segments")
        elif video == "summary" and _is_segment(record):
            owner = identifier.rpartition("#t=")[0]
            segments.setdefault(owner, []).append(_text(record, "caption", where))
            order.setdefault(owner, None)
            continue
        else:
            text = _text(record, "caption", where)
        if identifier in captions:
            raise InputError(f"{where}: a second prediction for id {identifier!r}")
        captions[identifier] = text
        order.setdefault(identifier, None)
    whole = 0
    for owner, texts in segments.items():
        # A video captioned whole is scored by its segment's caption rather than the summary made of it.
        if len(texts) == 1 and summaries.get(owner) in (None, 1) and (owner in summaries or owner not in captions):
            captions[owner] = texts[0]
            whole += owner not in summaries
        else:
            result.skipped_segments += len(texts)
    result.captions = {identifier: captions[identifier] for identifier in order if identifier in captions}
    result.videos = len(summaries) + whole
    return result


def read_caption_references(path: PathLike) -> dict[str, list[str]]:
    """``{id: [caption, ...]}`` from ``{"id", "captions": [...]}`` records, or several ``{"id", "caption"}``."""
    references: dict[str, list[str]] = {}
    for where, record in _records(path, "references"):
        identifier = _text(record, "id", where)
        if "captions" in record:
            given = record["captions"]
            if not isinstance(given, list) or not all(isinstance(text, str) for text in given):
                raise InputError(f"{where}: 'captions' must be a list of strings")
            references.setdefault(identifier, []).extend(given)
        else:
            references.setdefault(identifier, []).append(_text(record, "caption", where))
    if not references:
        raise InputError(f"references file {path} holds no records")
    return references


def evaluate_caption_files(
    predictions: PathLike,
    references: PathLike,
    metrics: Sequence[str] | None = None,
    *,
    images: PathLike | None = None,
    model: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    strict: bool = False,
    video: str = "summary",
    on_note: Callable[[str], None] | None = None,
) -> CaptionReport:
    """The COCO caption ``metrics`` (see :func:`~mmcli.metrics.captions.evaluate_captions`) of the
    predictions that have references, in the predictions' order.

    With ``images`` (an image feature set or a folder of the images), CLIPScore and RefCLIPScore are
    added, embedded with ``model`` on ``device`` / ``dtype`` (see
    :func:`~mmcli.metrics.clipscore.clip_scores`). ``video`` says how video records are scored (see
    :func:`read_caption_predictions`).
    """
    note = _Notes(on_note)
    read = read_caption_predictions(predictions, video)
    predicted = read.captions
    referenced = read_caption_references(references)
    if read.errors:
        note(f"{read.errors} error records in {predictions} skipped")
    if read.videos:
        note(f"scoring {read.videos} videos by their summary")
    if read.skipped_segments:
        note(
            f"{read.skipped_segments} video segment records skipped "
            f"({option('video', 'segments')} scores them by their own ids)"
        )
    if read.skipped_summaries:
        note(f"{read.skipped_summaries} video summary records skipped ({option('video', 'summary')} scores them)")
    _check_ids(
        set(referenced), set(predicted), missing_what=f"ids in {references} have no prediction",
        unknown_what=f"predictions in {predictions} have no references", strict=strict, note=note,
    )  # fmt: skip
    scored = {identifier: caption for identifier, caption in predicted.items() if identifier in referenced}
    if not scored:
        raise InputError(f"no prediction in {predictions} has references in {references}: are the ids the same?")
    their_references = {identifier: referenced[identifier] for identifier in scored}
    result = evaluate_captions(scored, their_references, metrics)
    corpus = dict(result.corpus)
    per_item: dict[str, dict[str, float]] = {identifier: {} for identifier in scored}
    for identifier, values in result.by_item().items():
        per_item[identifier].update(values)
    if images is not None:
        from mmcli.metrics.clipscore import clip_scores

        clip = clip_scores(scored, their_references, images, model=model, device=device, dtype=dtype)
        corpus.update(clip.corpus)
        for identifier, values in clip.per_item.items():
            per_item[identifier].update(values)
    for message in result.notes:
        note(message)
    return CaptionReport(corpus, per_item, result, note.kept)


def evaluate_retrieval_files(
    results: PathLike,
    qrels: PathLike,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    strict: bool = False,
    on_note: Callable[[str], None] | None = None,
) -> RetrievalReport:
    """Recall@K, MRR, median rank, mAP and nDCG@10 of a retrieval run (mmcli retrieve output)
    against relevance judgements (``{"query_id", "relevant": [ids]}`` records)."""
    note = _Notes(on_note)
    rankings: dict[str, list[str]] = {}
    repeating = 0
    for where, record in _records(results, "results"):
        if "error" in record:
            continue
        query = _text(record, "query" if "query_id" not in record and "query" in record else "query_id", where)
        if query in rankings:
            raise InputError(f"{where}: a second result list for query {query!r}")
        rankings[query] = _hit_ids(_field(record, "hits", where), where)
        repeating += len(set(rankings[query])) < len(rankings[query])
    judgements: dict[str, set[str]] = {}
    for where, record in _records(qrels, "qrels"):
        query = _text(record, "query_id", where)
        relevant = _field(record, "relevant", where)
        if not isinstance(relevant, list) or not all(map(_is_text, relevant)):
            raise InputError(f"{where}: 'relevant' must be a list of ids")
        if query in judgements:
            raise InputError(f"{where}: a second judgement for query {query!r} (list all its relevant ids in one)")
        judgements[query] = set(map(str, relevant))
    if repeating:
        note(f"{repeating} queries in {results} list a hit more than once; it counts once, at its first rank")
    scores = evaluate_rankings(rankings, judgements, ks)
    if scores.missing and strict:
        raise IdMismatch(f"{len(scores.missing)} judged queries are not in {results}")
    if scores.missing:
        note(f"{len(scores.missing)} judged queries are not in {results}; they score zero")
    if scores.unjudged:
        note(f"{len(scores.unjudged)} queries in {results} have no judgements; left out")
    if scores.no_relevant:
        note(f"{len(scores.no_relevant)} judged queries list no relevant item; left out of the means")
    if not scores.queries:
        raise InputError(f"no query in {qrels} has a relevant item to score")
    return RetrievalReport(scores, note.kept)


def _hit_ids(hits: Any, where: str) -> list[str]:
    """The ids of a result record's ``hits``, in order."""
    if not isinstance(hits, list):
        raise InputError(f"{where}: 'hits' is {_json_kind(hits)}, not a list of {{\"id\", ...}} objects")
    for number, hit in enumerate(hits, start=1):
        if not isinstance(hit, dict) or not _is_text(hit.get("id")):
            what = _json_kind(hit) if not isinstance(hit, dict) else "an object without an id"
            raise InputError(f"{where}: 'hits' item {number} is {what}, not an {{\"id\", ...}} object")
    return [str(hit["id"]) for hit in hits]


def evaluate_cross_modal_files(
    images: PathLike,
    texts: PathLike,
    match_field: str = "image_id",
    ks: Sequence[int] = DEFAULT_KS,
    *,
    on_note: Callable[[str], None] | None = None,
) -> CrossModalReport:
    """Image<->text R@K (see :func:`~mmcli.metrics.retrieval.cross_modal_recall`) of an image and a
    text feature set, each text naming by ``match_field`` the id of the image it describes."""
    from mmcli.output.feature_set import check_finite, read_feature_set

    note = _Notes(on_note)
    image_set, text_set = read_feature_set(images), read_feature_set(texts)
    for feature_set in (image_set, text_set):
        check_finite(feature_set)
    if image_set.vectors.shape[1] != text_set.vectors.shape[1]:
        raise InputError(
            f"{images} has width {image_set.vectors.shape[1]} but {texts} has {text_set.vectors.shape[1]}: "
            "embed both with one dual-tower model"
        )
    row_of = {identifier: row for row, identifier in enumerate(image_set.ids)}
    owners, kept = [], []
    for row, record in enumerate(text_set.records):
        if match_field not in record:
            raise InputError(f"{text_set.path}: record {row + 1} has no {match_field!r} naming its image")
        owner = row_of.get(str(record[match_field]))
        if owner is not None:
            owners.append(owner)
            kept.append(row)
    if not kept:
        raise InputError(f"no text in {texts} names (by {match_field!r}) an image id of {images}")
    if len(kept) < len(text_set):
        note(f"{len(text_set) - len(kept)} texts name images not in {images}; left out")
    described = set(owners)
    if len(described) < len(image_set):
        note(f"{len(image_set) - len(described)} images have no text; left out of image->text")
    image_rows = sorted(described)
    position = {row: index for index, row in enumerate(image_rows)}
    text_vectors = text_set.vectors[kept] if len(kept) < len(text_set) else text_set.vectors
    metrics = cross_modal_recall(image_set.vectors[image_rows], text_vectors, [position[o] for o in owners], ks)
    return CrossModalReport(metrics, len(image_rows), len(kept), note.kept)


def evaluate_classification_files(
    predictions: PathLike,
    labels: PathLike,
    top_ks: Sequence[int] = (),
    *,
    strict: bool = False,
    on_note: Callable[[str], None] | None = None,
) -> ClassificationReport:
    """Classification metrics (see :func:`~mmcli.metrics.classification.evaluate_classification`) of
    ``{"id", "label"}`` predictions (mmcli classify output) against ``{"id", "label"}`` truth.

    ``top_ks`` needs the per-label ``"scores"`` mmcli classify writes; without any, it is a
    :class:`~mmcli.errors.MissingScores`.
    """
    note = _Notes(on_note)
    predicted: dict[str, str] = {}
    scores: dict[str, dict[str, float]] = {}
    for where, record in _records(predictions, "predictions"):
        if "error" in record:
            continue
        identifier = _text(record, "id", where)
        if identifier in predicted:
            raise InputError(f"{where}: a second prediction for id {identifier!r}")
        predicted[identifier] = _text(record, "label", where)
        if isinstance(record.get("scores"), dict):
            scores[identifier] = _label_scores(record["scores"], where)
    truth: dict[str, str] = {}
    for where, record in _records(labels, "labels"):
        identifier = _text(record, "id", where)
        if identifier in truth:
            raise InputError(f"{where}: a second true label for id {identifier!r}")
        truth[identifier] = _text(record, "label", where)
    _check_ids(
        set(truth), set(predicted), missing_what=f"ids in {labels} have no prediction",
        unknown_what=f"predictions in {predictions} have no true label", strict=strict, note=note,
    )  # fmt: skip
    if not set(truth) & set(predicted):
        raise InputError(f"no prediction in {predictions} has a label in {labels}: are the ids the same?")
    if top_ks and not scores:
        raise MissingScores(f"top-k accuracy needs per-label scores in {predictions} (mmcli classify writes them)")
    result = evaluate_classification(predicted, truth, scores=scores or None, top_ks=top_ks)
    return ClassificationReport(result, note.kept)


def _label_scores(given: dict[str, Any], where: str) -> dict[str, float]:
    """A prediction's ``scores`` (label -> score) as numbers."""
    scores = {}
    for label, value in given.items():
        try:
            if isinstance(value, bool):
                raise TypeError
            scores[str(label)] = float(value)
        except (TypeError, ValueError):
            raise InputError(f"{where}: the score of {label!r} is {_json_kind(value)}, not a number") from None
    return scores

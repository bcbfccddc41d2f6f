"""Zero-shot classification with a dual-tower model, as CLIP does it.

Each label is put through prompt templates; the normalised template embeddings are averaged and
re-normalised into one class embedding. Images are scored against classes by cosine similarity
times the model's logit scale, then softmax (CLIP) or, for models trained with a sigmoid loss and a
logit bias (SigLIP), an independent sigmoid per label.

:func:`zero_shot` loads the model and embeds the labels; :func:`classify_items` (images) and
:func:`classify_features` (rows of a feature set) then give one prediction record per input.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmcli.errors import InputError, UsageError, option
from mmcli.items import InputItem
from mmcli.media.images import DEFAULT_MAX_PIXELS
from mmcli.output.feature_set import check_rows
from mmcli.output.npy import FeatureSet
from mmcli.pipeline import Outcome

if TYPE_CHECKING:
    from mmcli.encoders.base import Encoder

DEFAULT_TEMPLATES = ("a photo of a {}.",)


@dataclass(frozen=True)
class Classes:
    """What inputs are classified into: zero-shot, the labels' class ``embeddings`` (normalised rows)
    with the model's temperature (and SigLIP's bias); or, with ``embeddings`` None, a classification
    checkpoint's own labels, whose rows are its classifier's logits (``multi_label``: a sigmoid each)."""

    labels: list[str]
    embeddings: np.ndarray | None  # (labels, dim), rows normalised; None: the rows are logits
    logit_scale: float = 1.0
    logit_bias: float | None = None  # set for sigmoid-trained models
    multi_label: bool = False

    @property
    def zero_shot(self) -> bool:
        return self.embeddings is not None


def class_embeddings(encoder: Encoder, labels: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> Classes:
    """One normalised embedding per label: the mean of its normalised template embeddings."""
    if not labels:
        raise UsageError("no labels to classify into")
    if len(set(labels)) != len(labels):
        raise UsageError("labels must be distinct")
    for template in templates:
        if "{}" not in template:
            raise UsageError(f"template {template!r} has no {{}} where the label goes")
    texts = [template.format(label) for label in labels for template in templates]
    vectors = encoder.encode_texts(texts).reshape(len(labels), len(templates), -1).mean(axis=1)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    scale, bias = logit_scale_and_bias(encoder)
    return Classes(list(labels), vectors.astype(np.float32), scale, bias)


def logit_scale_and_bias(encoder: Encoder) -> tuple[float, float | None]:
    """The learned temperature (exponentiated, as the model applies it) and SigLIP's bias, if any.
    CLAP learns one per direction: the audio-to-text one (``logit_scale_a``) scores recordings."""
    model = encoder.model
    scale = getattr(model, "logit_scale", None)
    if scale is None:
        scale = getattr(model, "logit_scale_a", None)
    if scale is None:
        raise UsageError(
            f"model {encoder.name!r} has no logit scale; zero-shot classification needs a "
            "contrastive image-text or audio-text model such as CLIP, SigLIP or CLAP"
        )
    bias = getattr(model, "logit_bias", None)
    return float(scale.detach().float().exp()), None if bias is None else float(bias.detach().float().reshape(-1)[0])


def probabilities(image_vectors: np.ndarray, classes: Classes) -> np.ndarray:
    """(inputs, labels) probabilities from L2-normalised rows (zero-shot), or from a classifier's logits."""
    rows = np.asarray(image_vectors, dtype=np.float64)
    if not classes.zero_shot:
        logits = rows.copy()
        if classes.multi_label:
            return 1.0 / (1.0 + np.exp(-logits))
    else:
        rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        logits = classes.logit_scale * rows @ classes.embeddings.astype(np.float64).T
        if classes.logit_bias is not None:
            return 1.0 / (1.0 + np.exp(-(logits + classes.logit_bias)))
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def prediction(probs: np.ndarray, labels: Sequence[str], top: int | None = None) -> dict:
    """``{"label", "score", "scores"}`` for one image; ``scores`` keeps the ``top`` labels, best first."""
    order = np.argsort(-probs, kind="stable")
    kept = order[:top] if top else order
    return {
        "label": labels[order[0]],
        "score": round(float(probs[order[0]]), 6),
        "scores": {labels[i]: round(float(probs[i]), 6) for i in kept},
    }


def read_label_file(path: str | os.PathLike[str]) -> list[str]:
    """Class labels, one per line; blank lines are skipped."""
    from mmcli.jsonl import text_lines

    try:
        text = Path(path).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    return [line.strip() for _, line in text_lines(text.splitlines(), str(path)) if line.strip()]


def zero_shot(
    model: str | None,
    labels: Sequence[str],
    templates: Sequence[str] | None = None,
    *,
    feature_set: FeatureSet | None = None,
    **loading: Any,
) -> tuple[Encoder, Classes]:
    """The encoder and its class embeddings, for a dual-tower model (``loading`` goes to ``load_encoder``).
    ``templates`` default to the model's own zero-shot prompt (CLAP's "This is a sound of {}."), else
    :data:`DEFAULT_TEMPLATES`.

    For the rows of ``feature_set``, ``model=None`` means the one model that made them (if they name
    one), and rows that are not in the model's space are refused.
    """
    from mmcli.encoders import DEFAULT_MODEL, load_encoder

    if feature_set is not None:
        check_rows(feature_set)  # before the model loads
    if feature_set is not None and feature_set.fused:
        raise UsageError(
            f"{feature_set.path} holds fused rows, which live in no single model's space: labels cannot be embedded "
            "into it; train a head on them instead (mmcli fuse --labels ... --predict)"
        )
    if model is None:
        models = feature_set.models if feature_set is not None else set()
        model = models.pop() if len(models) == 1 else DEFAULT_MODEL
    encoder = load_encoder(model, **loading)
    if not encoder.supports("text") or not (encoder.supports("image") or encoder.supports("audio")):
        raise UsageError(
            f"model {model!r} embeds {', '.join(sorted(encoder.modalities))}; zero-shot classification needs a "
            "dual-tower image-text or audio-text model (CLIP, SigLIP, CLAP, ...)"
        )
    if templates is None:
        templates = getattr(encoder, "classify_templates", DEFAULT_TEMPLATES)
    classes = class_embeddings(encoder, labels, templates)
    if feature_set is not None and feature_set.vectors.shape[1] != classes.embeddings.shape[1]:
        width, dim = feature_set.vectors.shape[1], classes.embeddings.shape[1]
        raise InputError(
            f"{feature_set.path} rows have {width} dimensions but {model!r} embeds {dim}; "
            f"pass the model that made them with {option('model')}"
        )
    return encoder, classes


def trained_classifier(model: str, **loading: Any) -> tuple[Encoder, Classes]:
    """A classification checkpoint (``*ForImageClassification``, ``*ForVideoClassification``, a timm
    classifier) loaded with its classifier, and its own labels (``loading`` goes to ``load_encoder``)."""
    from mmcli.encoders import load_encoder

    encoder = load_encoder(model, head=True, **loading)
    return encoder, Classes(list(encoder.labels or ()), None, multi_label=encoder.multi_label)


def classify_features(feature_set: FeatureSet, classes: Classes, top: int | None = None) -> Iterator[dict]:
    """``{"id", "source", "label", "score", "scores"}`` for each row of an image feature set; a set with
    no rows or a non-finite row is refused here, before the first record (a NaN score is not JSON)."""
    check_rows(feature_set)

    def predictions(chunk_rows: int = 8_192) -> Iterator[dict]:
        # a chunk at a time: the scores of a large (memory-mapped or sharded) set never sit in memory at once
        for start in range(0, len(feature_set), chunk_rows):
            rows = probabilities(feature_set.vectors[start : start + chunk_rows], classes)
            records = feature_set.records[start : start + chunk_rows]
            for record, row in zip(records, rows, strict=True):
                yield {"id": record["id"], "source": record.get("source"), **prediction(row, classes.labels, top)}

    return predictions()


def classify_items(
    items: Iterable[InputItem],
    encoder: Encoder,
    classes: Classes,
    *,
    top: int | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    exact_decode: bool = False,
    linger: float | None = None,
) -> Iterator[list[Outcome[InputItem]]]:
    """Classify images (or recordings, for an audio model: the mean of their windows) in input order,
    one list of outcomes per batch: each ``value`` is the item's prediction record, or its ``error``
    says why there is none (see :func:`~mmcli.extract.embed_items`)."""
    from mmcli.extract import embed_rows

    for batch in embed_rows(
        items,
        encoder,
        normalize=classes.zero_shot,  # a classifier's logits are scored as they are
        batch_size=batch_size,
        workers=workers,
        max_pixels=max_pixels,
        exact_decode=exact_decode,
        linger=linger,
    ):
        good = [outcome for outcome in batch if outcome.error is None]
        rows = iter(probabilities([outcome.value for outcome in good], classes)) if good else iter(())
        yield [
            outcome
            if outcome.error is not None
            else Outcome(outcome.item, _record(outcome.item, prediction(next(rows), classes.labels, top)))
            for outcome in batch
        ]


def _record(item: InputItem, scores: dict) -> dict[str, Any]:
    return item.record(modality=False, source=item.source, **scores)


@dataclass
class ClassifyResult:
    """What :func:`classify_files` wrote: to ``output`` (``None``: the stream), how many inputs were
    ``classified`` into how many ``labels``, and the run's :class:`~mmcli.engine.RunStats`."""

    output: Path | None
    classified: int
    labels: int
    stats: Any


class _ClassifyJob:
    """Classification as an engine job: a batch of inputs in, one prediction record (or error) each."""

    def __init__(self, encoder: Encoder, classes: Classes, top: int | None, options: dict[str, Any], unit: str) -> None:
        self.encoder, self.classes, self.top, self.options, self.unit = encoder, classes, top, options, unit
        self._classified = 0

    def batches(
        self, items: Iterable[InputItem], counters: dict[str, int] | None = None
    ) -> Iterator[tuple[list[Outcome[InputItem]], list[Outcome[InputItem]]]]:
        self._classified = (counters or {}).get("classified", 0)
        for batch in classify_items(items, self.encoder, self.classes, top=self.top, **self.options):
            self._classified += sum(outcome.error is None for outcome in batch)
            yield batch, batch

    @property
    def pending(self) -> bool:
        return False

    def counters(self) -> dict[str, int]:
        return {"classified": self._classified}


def classify_files(
    inputs: Sequence[str] = (),
    output: str | os.PathLike[str] | None = None,
    *,
    labels: Sequence[str],
    templates: Sequence[str] | None = None,
    features: str | os.PathLike[str] | None = None,
    model: str | None = None,
    top: int | None = None,
    stream: Any = None,
    reporter: Any = None,
    **run_options: Any,
) -> ClassifyResult:
    """Zero-shot classify images, or recordings with an audio-text model (CLAP), into JSONL records in
    ``output`` (or ``stream``, default stdout); or, with ``features``, the rows of a feature set.

    With ``output``, progress is journalled beside it: a killed run resumes where it stopped
    (``restart`` discards it), and ``update`` rewrites an existing output classifying only new or
    changed files. ``model`` None is the default encoder, or for ``features`` the model that made the
    rows. ``run_options`` are the settings every run takes (:class:`~mmcli.engine.RunOptions`).
    """
    from mmcli.encoders import DEFAULT_MODEL, input_modality
    from mmcli.engine import Reporter, RunOptions, RunStats, require_inputs, run_into, stream_linger, with_total
    from mmcli.io.inputs import discover_images, unique_ids
    from mmcli.items import STDIN
    from mmcli.output.destination import RecordFile
    from mmcli.output.feature_set import read_feature_set

    reporter = reporter or Reporter()
    run = RunOptions.of(run_options)
    output = Path(output) if output is not None else None
    inputs = [str(i) for i in inputs]
    labels = list(labels)
    if not labels and (features is not None or model is None):
        raise UsageError(
            "no labels: give --labels a,b,c or --labels-file FILE"
            + ("" if features is not None else ", or --model a classification checkpoint, which has labels of its own")
        )
    if features is None:
        require_inputs(inputs, hint="give image or audio files or folders, - for stdin, or --features FEATS.npy")
    elif inputs:
        raise UsageError("give images or --features, not both")
    if run.update:
        if output is None or features is not None or STDIN in inputs or not output.exists():
            raise UsageError(
                f"{option('update')} brings an existing -o JSONL file up to date from image and audio files"
                + ("" if output is None or output.exists() else f": {output} does not exist yet")
            )
    elif run.keep_missing:
        raise UsageError(f"{option('keep_missing')} goes with {option('update')}")
    with RecordFile(output, stream=stream).check(overwrite=run.overwrite, update=run.update) as destination:
        if features is not None:
            feature_set = read_feature_set(features)
            _, classes = zero_shot(model, labels, templates, feature_set=feature_set, **run.loading)
            with destination.open({}, iter(()), reporter=reporter, unit="rows")[0] as sink:
                count = 0
                for record in classify_features(feature_set, classes, top):
                    sink.writer.write(record)
                    count += 1
            return ClassifyResult(output, count, len(classes.labels), RunStats())
        audio = input_modality(model or DEFAULT_MODEL, trust_remote_code=run.trust_remote_code) == "audio"
        unit = "recordings" if audio else "images"
        items, total = with_total(discover_images(inputs, audio=audio, videos=not audio), inputs, what=unit)
        items = unique_ids(items)
        listed: list[InputItem] = []
        previous = None
        if run.update:  # what cannot be updated is refused before the model loads
            listed = list(items)
            previous = destination.previous(listed)
        with reporter.loading(model or DEFAULT_MODEL):
            if labels:
                encoder, classes = zero_shot(model, labels, templates, **run.loading)
            else:
                encoder, classes = trained_classifier(str(model), **run.loading)
        batch_size = run.batch_size or encoder.default_batch_size
        # What decides the records; recorded in the manifest so an update can insist on the same.
        settings = {"model": model or DEFAULT_MODEL, "labels": classes.labels, "templates": list(templates or []),
                    "top_k": top, "max_pixels": run.max_pixels, "exact_decode": run.exact_decode,
                    "dtype": str(encoder.dtype), "quantize": encoder.quantized}  # fmt: skip
        options = {"batch_size": batch_size, "workers": run.workers, "max_pixels": run.max_pixels,
                   "exact_decode": run.exact_decode, "linger": stream_linger(inputs)}  # fmt: skip
        stats = run_into(
            destination, _ClassifyJob(encoder, classes, top, options, unit), listed if previous is not None else items,
            settings=settings, identity=None if STDIN in inputs else {"command": "classify", "inputs": inputs},
            previous=previous, total=total, batch_size=batch_size, device=str(encoder.device), run=run,
            reporter=reporter, desc="classifying", unit=unit,
        )  # fmt: skip
    return ClassifyResult(output, stats.counters.get("classified", 0), len(classes.labels), stats)

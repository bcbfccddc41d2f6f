"""``mmcli evaluate``: caption, retrieval and classification metrics from the files mmcli writes."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from mmcli.cli import options as opt
from mmcli.cli.common import note, reports_errors
from mmcli.errors import InputError, UsageError

app = typer.Typer(
    help="Score captions (BLEU, ROUGE-L, CIDEr-D, METEOR, CLIPScore), retrieval runs and classifications.",
    no_args_is_help=True,
)

CAPTION_EXAMPLES = """\
Examples:

  mmcli caption photos/ > pred.jsonl && mmcli evaluate captions --pred pred.jsonl --refs refs.jsonl

  mmcli evaluate captions --pred pred.jsonl --refs refs.jsonl --metrics bleu,cider --per-item scores.jsonl

  mmcli evaluate captions --pred pred.jsonl --refs refs.jsonl --clipscore --images photos.npy
"""
RETRIEVAL_EXAMPLES = """\
Examples:

  mmcli retrieve --index photos.npy --queries queries.jsonl -k 10 > run.jsonl
  mmcli evaluate retrieval --results run.jsonl --qrels qrels.jsonl --k 1,5,10

  mmcli evaluate retrieval --images images.npy --texts captions.npy --match-field image_id
"""
CLASSIFICATION_EXAMPLES = """\
Examples:

  mmcli classify photos/ --labels cat,dog > pred.jsonl
  mmcli evaluate classification --pred pred.jsonl --labels truth.jsonl --top-k 1,2 --confusion confusion.csv
"""


class Format(str, Enum):
    auto = "auto"
    table = "table"
    json = "json"


FormatOption = Annotated[Format, typer.Option("--format", help="auto: a table on a terminal, JSON otherwise.")]
StrictOption = Annotated[bool, typer.Option(help="Missing or unknown ids are errors, not notes.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No notes on stderr.")]


def _records(path: Path, what: str) -> Iterator[tuple[int, dict[str, Any]]]:
    from mmcli.io.jsonl import read_jsonl

    return read_jsonl(path, f"{what} file")


def _field(record: dict[str, Any], key: str, where: str) -> Any:
    if key not in record:
        raise InputError(f"{where}: record has no {key!r} (keys: {', '.join(sorted(record)) or 'none'})")
    return record[key]


def _ints(text: str, option: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"{option} takes positive integers separated by commas, got {text!r}") from None
    if min(values) < 1:
        raise UsageError(f"{option} takes positive integers, got {text!r}")
    return values


def _report_ids(
    expected: set[str], given: set[str], *, missing_what: str, unknown_what: str, strict: bool, quiet: bool
) -> None:
    """Ids expected but not given, and given but unknown: a note each, or an error under --strict."""
    for ids, what in ((sorted(expected - given), missing_what), (sorted(given - expected), unknown_what)):
        if ids:
            message = f"{len(ids)} {what} (e.g. {', '.join(map(repr, ids[:3]))})"
            if strict:
                raise InputError(f"--strict: {message}")
            note(message, quiet=quiet)


def _emit(title: str, metrics: dict[str, Any], fmt: Format, *, extra: dict[str, Any] | None = None) -> None:
    """Metrics as a rich table on a terminal (or ``--format table``), as one JSON object otherwise."""
    from mmcli.io.jsonl import dumps

    chosen = fmt if fmt is not Format.auto else (Format.table if sys.stdout.isatty() else Format.json)
    if chosen is Format.json:
        print(dumps({"metrics": metrics, **(extra or {})}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, "unavailable" if value is None else f"{value:.4f}")
    Console().print(table)


@app.command("captions", epilog=CAPTION_EXAMPLES)
@reports_errors
def captions(
    pred: Annotated[Path, typer.Option(help='Predictions: {"id", "caption"} JSONL (mmcli caption output).')] = ...,  # type: ignore[assignment]
    refs: Annotated[
        Path, typer.Option(help='References: {"id", "captions": [...]} or several {"id", "caption"} lines per id.')
    ] = ...,  # type: ignore[assignment]
    metrics: Annotated[
        str, typer.Option(help="Comma-separated: bleu, rouge, cider, meteor, spice.")
    ] = "bleu,rouge,cider,meteor,spice",
    per_item: Annotated[
        Path | None, typer.Option(help="Write each prediction's own scores here (JSONL).", show_default=False)
    ] = None,
    clipscore: Annotated[
        bool, typer.Option(help="Add CLIPScore and RefCLIPScore (Hessel et al., 2021); needs --images.")
    ] = False,
    images: Annotated[
        Path | None,
        typer.Option(
            help="For --clipscore: an image feature set (.npy) or a folder of the images.", show_default=False
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="For --clipscore: the CLIP model \\[default: the feature set's, or CLIP ViT-B/32].",
            show_default=False,
        ),
    ] = None,
    device: opt.DeviceOption = opt.Device.auto,
    dtype: opt.DTypeOption = opt.DType.auto,
    fmt: FormatOption = Format.auto,
    strict: StrictOption = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --per-item file.")] = False,
    quiet: Quiet = False,
) -> None:
    """Caption metrics identical to the COCO caption toolkit (pycocoevalcap), computed without Java."""
    from mmcli.io.atomic import atomic_output, check_writable
    from mmcli.io.jsonl import dumps
    from mmcli.metrics.captions import ALL_METRICS, evaluate_captions

    chosen = [name.strip().lower() for name in metrics.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in ALL_METRICS]
    if unknown or not chosen:
        raise UsageError(f"unknown metric {', '.join(unknown) or metrics!r}; choose from {', '.join(ALL_METRICS)}")
    if clipscore and images is None:
        raise UsageError("--clipscore needs --images: an image feature set (.npy) or the folder of the images")
    if per_item is not None:
        check_writable(per_item, overwrite=overwrite)
    predictions, skipped = _predictions(pred)
    references = _references(refs)
    if skipped:
        note(f"{skipped} error records in {pred} skipped", quiet=quiet)
    _report_ids(
        set(references), set(predictions), missing_what=f"ids in {refs} have no prediction",
        unknown_what=f"predictions in {pred} have no references", strict=strict, quiet=quiet,
    )  # fmt: skip
    scored = {identifier: caption for identifier, caption in predictions.items() if identifier in references}
    if not scored:
        raise InputError(f"no prediction in {pred} has references in {refs}: are the ids the same?")
    result = evaluate_captions(scored, {i: references[i] for i in scored}, chosen)
    corpus = dict(result.corpus)
    per_item_scores: dict[str, dict[str, float]] = {identifier: {} for identifier in scored}
    for metric, values in result.per_item.items():
        for identifier, value in values.items():
            per_item_scores[identifier][metric] = value
    if clipscore:
        from mmcli.cli.common import quiet_libraries
        from mmcli.metrics.clipscore import clip_scores

        assert images is not None
        quiet_libraries()
        clip = clip_scores(
            scored, {i: references[i] for i in scored}, images, model=model, device=device.value, dtype=dtype.value,
            quiet=quiet,
        )  # fmt: skip
        corpus.update(clip.corpus)
        for identifier, values in clip.per_item.items():
            per_item_scores.setdefault(identifier, {}).update(values)
    for message in result.notes:
        note(message, quiet=quiet)
    if per_item is not None:
        with atomic_output(per_item) as handle:
            for identifier in scored:
                handle.write(dumps({"id": identifier, **per_item_scores.get(identifier, {})}) + "\n")
    _emit(f"captions ({len(scored)} predictions)", corpus, fmt, extra={"count": len(scored), "notes": result.notes})


def _predictions(path: Path) -> tuple[dict[str, str], int]:
    predictions: dict[str, str] = {}
    skipped = 0
    for number, record in _records(path, "predictions"):
        where = f"{path}:{number}"
        if "error" in record:
            skipped += 1
            continue
        identifier = str(_field(record, "id", where))
        if identifier in predictions:
            raise InputError(f"{where}: a second prediction for id {identifier!r}")
        predictions[identifier] = str(_field(record, "caption", where))
    return predictions, skipped


def _references(path: Path) -> dict[str, list[str]]:
    references: dict[str, list[str]] = {}
    for number, record in _records(path, "references"):
        where = f"{path}:{number}"
        identifier = str(_field(record, "id", where))
        if "captions" in record:
            given = record["captions"]
            if not isinstance(given, list) or not all(isinstance(text, str) for text in given):
                raise InputError(f"{where}: 'captions' must be a list of strings")
            references.setdefault(identifier, []).extend(given)
        else:
            references.setdefault(identifier, []).append(str(_field(record, "caption", where)))
    if not references:
        raise InputError(f"references file {path} holds no records")
    return references


@app.command("retrieval", epilog=RETRIEVAL_EXAMPLES)
@reports_errors
def retrieval(
    results: Annotated[
        Path | None, typer.Option(help="mmcli retrieve output (JSONL, one record per query).", show_default=False)
    ] = None,
    qrels: Annotated[
        Path | None,
        typer.Option(help='Relevance judgements: {"query_id", "relevant": [ids]} JSONL.', show_default=False),
    ] = None,
    images: Annotated[
        Path | None, typer.Option(help="Cross-modal protocol: the image feature set.", show_default=False)
    ] = None,
    texts: Annotated[
        Path | None, typer.Option(help="Cross-modal protocol: the text feature set.", show_default=False)
    ] = None,
    match_field: Annotated[
        str, typer.Option(help="Field of the text records naming the image (by id) each text describes.")
    ] = "image_id",
    k: Annotated[str, typer.Option("--k", help="Cut-offs for Recall@K.")] = "1,5,10",
    fmt: FormatOption = Format.auto,
    strict: StrictOption = False,
    quiet: Quiet = False,
) -> None:
    """Recall@K, MRR, median rank, mAP and nDCG@10; or image<->text R@K in one step."""
    ks = _ints(k, "--k")
    if images is not None or texts is not None:
        if images is None or texts is None or results is not None or qrels is not None:
            raise UsageError("the cross-modal protocol takes --images and --texts (and no --results/--qrels)")
        _protocol(images, texts, match_field, ks, fmt, quiet)
        return
    if results is None or qrels is None:
        raise UsageError("give --results RUN.jsonl and --qrels QRELS.jsonl, or --images IMG.npy and --texts TXT.npy")
    from mmcli.metrics.retrieval import evaluate_rankings

    rankings: dict[str, list[str]] = {}
    for number, record in _records(results, "results"):
        where = f"{results}:{number}"
        if "error" in record:
            continue
        query = str(record.get("query_id", _field(record, "query", where)))
        hits = _field(record, "hits", where)
        rankings[query] = [str(_field(hit, "id", where)) for hit in hits]
    judgements: dict[str, set[str]] = {}
    for number, record in _records(qrels, "qrels"):
        where = f"{qrels}:{number}"
        relevant = _field(record, "relevant", where)
        if not isinstance(relevant, list):
            raise InputError(f"{where}: 'relevant' must be a list of ids")
        judgements.setdefault(str(_field(record, "query_id", where)), set()).update(map(str, relevant))
    scores = evaluate_rankings(rankings, judgements, ks)
    if scores.missing and strict:
        raise InputError(f"--strict: {len(scores.missing)} judged queries are not in {results}")
    if scores.missing:
        note(f"{len(scores.missing)} judged queries are not in {results}; they score zero", quiet=quiet)
    if scores.unjudged:
        note(f"{len(scores.unjudged)} queries in {results} have no judgements; left out", quiet=quiet)
    if scores.no_relevant:
        note(f"{len(scores.no_relevant)} judged queries list no relevant item; left out of the means", quiet=quiet)
    if not scores.queries:
        raise InputError(f"no query in {qrels} has a relevant item to score")
    _emit(f"retrieval ({scores.queries} queries)", scores.metrics, fmt, extra={"queries": scores.queries})


def _protocol(images: Path, texts: Path, match_field: str, ks: list[int], fmt: Format, quiet: bool) -> None:
    from mmcli.io.features import check_finite, read_feature_set
    from mmcli.metrics.retrieval import cross_modal_recall

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
        note(f"{len(text_set) - len(kept)} texts name images not in {images}; left out", quiet=quiet)
    described = set(owners)
    if len(described) < len(image_set):
        note(f"{len(image_set) - len(described)} images have no text; left out of image->text", quiet=quiet)
    image_rows = sorted(described)
    position = {row: index for index, row in enumerate(image_rows)}
    text_vectors = text_set.vectors[kept] if len(kept) < len(text_set) else text_set.vectors
    result = cross_modal_recall(image_set.vectors[image_rows], text_vectors, [position[o] for o in owners], ks)
    _emit(
        f"image<->text retrieval ({len(image_rows)} images, {len(kept)} texts)", result, fmt,
        extra={"images": len(image_rows), "texts": len(kept)},
    )  # fmt: skip


@app.command("classification", epilog=CLASSIFICATION_EXAMPLES)
@reports_errors
def classification(
    pred: Annotated[
        Path, typer.Option(help='Predictions: {"id", "label"} JSONL, with "scores" for top-k (mmcli classify).')
    ] = ...,  # type: ignore[assignment]
    labels: Annotated[Path, typer.Option(help='Truth: {"id", "label"} JSONL.')] = ...,  # type: ignore[assignment]
    top_k: Annotated[
        str | None, typer.Option(help="Top-k accuracies to report, e.g. 1,5 (needs scores).", show_default=False)
    ] = None,
    confusion: Annotated[
        Path | None, typer.Option(help="Write the confusion matrix here (CSV).", show_default=False)
    ] = None,
    fmt: FormatOption = Format.auto,
    strict: StrictOption = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --confusion file.")] = False,
    quiet: Quiet = False,
) -> None:
    """Accuracy, top-k accuracy, macro/micro/weighted precision, recall and F1, per class."""
    from mmcli.io.atomic import atomic_output, check_writable
    from mmcli.metrics.classification import evaluate_classification

    ks = _ints(top_k, "--top-k") if top_k else []
    if confusion is not None:
        check_writable(confusion, overwrite=overwrite)
    predicted: dict[str, str] = {}
    scores: dict[str, dict[str, float]] = {}
    for number, record in _records(pred, "predictions"):
        where = f"{pred}:{number}"
        if "error" in record:
            continue
        identifier = str(_field(record, "id", where))
        predicted[identifier] = str(_field(record, "label", where))
        if isinstance(record.get("scores"), dict):
            scores[identifier] = {str(label): float(value) for label, value in record["scores"].items()}
    truth: dict[str, str] = {}
    for number, record in _records(labels, "labels"):
        where = f"{labels}:{number}"
        truth[str(_field(record, "id", where))] = str(_field(record, "label", where))
    _report_ids(
        set(truth), set(predicted), missing_what=f"ids in {labels} have no prediction",
        unknown_what=f"predictions in {pred} have no true label", strict=strict, quiet=quiet,
    )  # fmt: skip
    if not set(truth) & set(predicted):
        raise InputError(f"no prediction in {pred} has a label in {labels}: are the ids the same?")
    if ks and not scores:
        raise UsageError(f"--top-k needs per-label scores in {pred} (mmcli classify writes them)")
    result = evaluate_classification(predicted, truth, scores=scores or None, top_ks=ks)
    if confusion is not None:
        with atomic_output(confusion) as handle:
            handle.write(",".join(["true \\ predicted", *map(_csv, result.labels)]) + "\n")
            for label, row in zip(result.labels, result.confusion.tolist(), strict=True):
                handle.write(",".join([_csv(label), *map(str, row)]) + "\n")
    count = int(result.confusion.sum())
    _emit(f"classification ({count} items)", result.metrics, fmt, extra={"count": count, "per_class": result.per_class})
    if fmt is not Format.json and (fmt is Format.table or sys.stdout.isatty()):
        _per_class_table(result.per_class)


def _csv(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def _per_class_table(per_class: dict[str, dict[str, float]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="per class")
    for column in ("label", "precision", "recall", "f1", "support"):
        table.add_column(column, justify="left" if column == "label" else "right")
    for label, values in per_class.items():
        table.add_row(label, *(f"{values[name]:.4f}" for name in ("precision", "recall", "f1")), str(values["support"]))
    Console().print(table)

"""Embedding: :func:`extract_features` (the run behind ``mmcli extract-features``) and the batch
pipeline under it, :func:`embed_items`.

Videos enter the stream as their sampled frames (see :mod:`mmcli.media.clips`) and
:class:`Pooler` turns the frames' embeddings into frame rows and/or one pooled row per video.
For a native video encoder (``encoder.clip_frames`` set: X-CLIP, VideoMAE) each video enters instead
as one :class:`~mmcli.media.clips.ClipItem` of that many frames, embedded whole into one video row.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmcli.encoders import DEFAULT_MODEL, model_traits
from mmcli.errors import ItemError, UnsupportedModel, UsageError, option
from mmcli.items import PART_MODALITIES, InputItem
from mmcli.media.audio import (
    AUDIO_END,
    AudioEnd,
    AudioWindow,
    Windowing,
    audio_windowing,
    expand_audio,
    silence_error,
)
from mmcli.media.clips import VIDEO_END, ClipItem, FrameItem, expand_clip_series, expand_clips, expand_videos
from mmcli.media.images import DEFAULT_MAX_PIXELS, load_image
from mmcli.pipeline import Outcome, RowBatch, default_workers, map_batches

if TYPE_CHECKING:
    from mmcli.encoders.base import Encoder
    from mmcli.engine import Reporter, RunStats


POOLING = ("mean", "max", "none", "both")
COMPILING = ("auto", "on", "off")
# The images a run must hold before --compile auto compiles the image tower. On a 2-core CPU the
# compile costs 17-30 s; the compiled ViT-B/32 tower runs 11-25 % faster alone, but only 2 % faster
# end to end, where decoding shares the cores (benchmarks/extract_throughput.py), so it pays only
# on long runs.
COMPILE_MIN_IMAGES = 20_000


class Pooler:
    """Turns a stream of outcomes with video frames or audio windows into the rows to write.

    ``pool``: ``mean`` or ``max`` gives one row per video (``modality: video``) or recording
    (``modality: audio``), pooled over its frame or window rows (then re-normalised when rows are
    normalised); ``none`` gives the frame or window rows; ``both`` gives them followed by the pooled
    row. A recording silent throughout (see :func:`~mmcli.media.audio.silence_error`) is an error and
    gives no row: its window rows are held until one has sound. Images and texts pass through.
    """

    def __init__(self, pool: str = "mean", *, normalize: bool = True) -> None:
        if pool not in POOLING:
            raise UsageError(f"unknown pooling {pool!r}; choose from {', '.join(POOLING)}")
        self.pool = pool
        self.normalize = normalize
        self._parts: list[np.ndarray] = []
        self._quiet: list[Outcome[InputItem]] = []  # a recording's window rows while none has sound
        self._heard = False

    @property
    def pending(self) -> bool:
        """Whether an input's parts are held, waiting for its end (no checkpoint may fall here)."""
        return bool(self._parts or self._quiet)

    def rows(self, outcomes: Iterable[Outcome[InputItem]]) -> list[Outcome[InputItem]]:
        result: list[Outcome[InputItem]] = []
        for outcome in outcomes:
            item = outcome.item
            if item.modality in PART_MODALITIES:
                if outcome.error is None:
                    self._parts.append(outcome.value)
                if outcome.error is None and self.pool in ("none", "both") and isinstance(item, AudioWindow):
                    self._heard = self._heard or silence_error(item.peak) is None
                    self._quiet.append(outcome)
                    if self._heard:
                        result.extend(self._quiet)
                        self._quiet = []
                elif outcome.error is not None or self.pool in ("none", "both"):
                    result.append(outcome)
            elif item.modality in (VIDEO_END, AUDIO_END):
                parts, self._parts, self._quiet, self._heard = self._parts, [], [], False
                pooled = _pooled_item(item, self.pool)
                silent = silence_error(item.peak) if isinstance(item, AudioEnd) else None
                if silent:
                    result.append(replace(outcome, item=pooled, error=silent))
                elif self.pool == "none":
                    continue
                elif not parts:
                    what = "frame" if item.modality == VIDEO_END else "window"
                    result.append(replace(outcome, item=pooled, error=f"no {what} could be embedded"))
                else:
                    result.append(Outcome(pooled, self._pooled(parts)))
            else:
                if self.pending:  # the parts' input failed part-way (an error, no end marker): none of its rows pool
                    self._parts, self._quiet, self._heard = [], [], False
                result.append(outcome)
        return result

    def _pooled(self, parts: list[np.ndarray]) -> np.ndarray:
        stacked = np.stack(parts)
        pooled = stacked.max(axis=0) if self.pool == "max" else stacked.mean(axis=0)
        if self.normalize:
            pooled = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
        return pooled.astype(np.float32)


def _pooled_item(marker: InputItem, pool: str) -> InputItem:
    extra = {**marker.extra, **({"pool": "mean" if pool == "both" else pool} if pool != "none" else {})}
    return replace(marker, modality="video" if marker.modality == VIDEO_END else "audio", extra=extra)


def _batch_group(item: InputItem) -> str:
    """Items embedded by one model call share a group: texts, clips, audio windows, images (video
    frames included); end markers ride along as a group of their own."""
    if isinstance(item, ClipItem):
        return "video"
    if isinstance(item, AudioWindow):
        return "audio"
    if item.modality in (VIDEO_END, AUDIO_END):
        return "end"
    return "text" if item.modality == "text" else "image"


def expand_media(
    items: Iterable[InputItem],
    encoder: Encoder,
    sampling: Any = None,
    windowing: Windowing | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[InputItem]:
    """Items as the encoder takes them: videos as sampled frames (or one clip for a native video
    model), recordings (``modality: audio``) as windows at the model's rate; each followed by its end
    marker, for :class:`Pooler`."""
    if encoder.clip_frames and encoder.clip_rate:
        items = expand_clip_series(items, encoder.clip_frames, encoder.clip_rate, sampling, max_pixels=max_pixels)
    elif encoder.clip_frames:
        items = expand_clips(items, encoder.clip_frames, sampling, max_pixels=max_pixels)
    else:
        items = expand_videos(items, sampling, max_pixels=max_pixels)
    if encoder.audio_rate:
        items = expand_audio(items, encoder.audio_rate, windowing or Windowing(encoder.audio_window or 10.0))
    return items


def embed_items(
    items: Iterable[InputItem],
    encoder: Encoder,
    *,
    batch_size: int | None = None,
    workers: int | None = None,
    normalize: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    exact_decode: bool = False,
    linger: float | None = None,
) -> Iterator[list[Outcome[InputItem]]]:
    """Embed images, texts and clips in input order, yielding one list of outcomes per batch.

    Each outcome's ``value`` is a float32 vector, or its ``error`` says why there is none (missing,
    undecodable, too large, non-finite output); a failed item never stops the rest. Images are
    decoded and preprocessed on worker threads while the model embeds the previous batch.
    ``batch_size`` defaults to the encoder's choice for its device. Large JPEGs are decoded at reduced scale
    (see :func:`~mmcli.media.images.load_image`) unless ``exact_decode``. Batches are exactly
    ``batch_size`` items unless a ``linger`` lets a slow stream ship them short (see
    :func:`~mmcli.pipeline.prepared_batches`).
    """

    min_side = None if exact_decode else encoder.decode_min_side

    def prepare(item: InputItem) -> Any:
        if item.error:
            raise ItemError(item.error)
        if item.modality == "text":
            return item.text
        if item.modality in (VIDEO_END, AUDIO_END):
            return None
        if isinstance(item, FrameItem):
            return encoder.preprocess_image(item.image)
        if isinstance(item, AudioWindow):
            samples, item.samples = item.samples, None  # released once preprocessed
            return encoder.preprocess_audio(samples)
        if isinstance(item, ClipItem):
            frames, item.frames = item.frames, []
            return encoder.preprocess_video(frames)
        return encoder.preprocess_image(load_image(item.media(), max_pixels=max_pixels, min_side=min_side))

    def embed(modality: str, values: list[Any]) -> list[np.ndarray | None]:
        if modality == "end":
            return [None] * len(values)
        if modality == "text":
            vectors = encoder.embed_texts(values, normalize=normalize)
        elif modality == "video":
            vectors = encoder.embed_videos(values, normalize=normalize)
        elif modality == "audio":
            vectors = encoder.embed_audio(values, normalize=normalize)
        else:
            vectors = encoder.embed_preprocessed(values, normalize=normalize)
        return list(vectors)

    for outcomes in map_batches(
        items,
        prepare,
        embed,
        batch_size=batch_size or encoder.default_batch_size,
        workers=default_workers() if workers is None else workers,
        group=_batch_group,
        markers=("end",),
        fatal=(UnsupportedModel,),
        linger=linger,
    ):
        for outcome in outcomes:
            if outcome.error is None and outcome.value is not None and not np.all(np.isfinite(outcome.value)):
                outcome.value, outcome.error = None, "model produced a non-finite embedding (NaN or inf)"
        yield outcomes


@dataclass
class ExtractResult:
    """What :func:`extract_features` wrote: ``rows`` of width ``dim`` to ``output`` (its sidecar and
    manifest beside it), and the run's :class:`~mmcli.engine.RunStats` (``failed`` items are listed in
    ``errors``, ``OUT.errors.jsonl``)."""

    output: Path
    rows: int
    dim: int | None
    stats: RunStats
    errors: Path


class _EmbedJob:
    """Embedding as a :class:`~mmcli.engine.Job`: videos expanded to frames (pooled into video rows) or
    to clips for a native video model, recordings to windows (pooled into audio rows)."""

    unit = "item"

    def __init__(
        self, encoder: Encoder, sampling: Any, pool: str, options: dict[str, Any], windowing: Windowing | None = None
    ) -> None:
        self.encoder, self.sampling, self.pool, self.options = encoder, sampling, pool, options
        self.windowing = windowing
        self._pooler = Pooler(pool, normalize=options["normalize"])

    def batches(self, items: Iterable[InputItem], counters: dict[str, int] | None = None) -> Iterator[Any]:
        items = expand_media(items, self.encoder, self.sampling, self.windowing, max_pixels=self.options["max_pixels"])
        self._pooler = Pooler(self.pool, normalize=self.options["normalize"])
        for batch in embed_items(items, self.encoder, **self.options):
            rows = RowBatch()
            for outcome in batch:  # an input's parts, then its end marker; anything else is an item of its own
                rows.extend(self._pooler.rows([outcome]))
                if outcome.item.modality not in PART_MODALITIES:
                    rows.ends.append(len(rows))
            yield rows, batch

    @property
    def pending(self) -> bool:
        return self._pooler.pending

    def counters(self) -> dict[str, int]:
        return {}


def embed_rows(
    items: Iterable[InputItem],
    encoder: Encoder,
    *,
    sampling: Any = None,
    windowing: Windowing | None = None,
    pool: str = "mean",
    batch_size: int | None = None,
    workers: int | None = None,
    normalize: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    exact_decode: bool = False,
    linger: float | None = None,
) -> Iterator[list[Outcome[InputItem]]]:
    """The rows :func:`embed_items` gives once videos and recordings are expanded into frames and
    windows and pooled by ``pool`` (see :class:`Pooler`): one list of outcomes per batch, in input order."""
    options = {"batch_size": batch_size, "workers": workers, "normalize": normalize,
               "max_pixels": max_pixels, "exact_decode": exact_decode, "linger": linger}  # fmt: skip
    for rows, _ in _EmbedJob(encoder, sampling, pool, options, windowing).batches(items):
        yield list(rows)


def _load_embed_job(
    model: str,
    loading: dict[str, Any],
    sampling: Any,
    pool: str,
    options: dict[str, Any],
    windowing: Windowing | None = None,
) -> Any:
    """The embedding job with its model loaded: what each worker of a distributed run builds."""
    from mmcli.encoders import load_encoder

    return _EmbedJob(load_encoder(model, **loading), sampling, pool, options, windowing)


def extract_features(
    inputs: Sequence[str] = (),
    output: str | os.PathLike[str] = "features.npy",
    *,
    texts: Sequence[str] = (),
    modality: str | None = None,
    field: str = "text",
    model: str = DEFAULT_MODEL,
    normalize: bool = True,
    output_dtype: str = "float32",
    pool: str = "mean",
    window: float | None = None,
    hop: float | None = None,
    compile: str = "auto",
    image_column: str | None = None,
    text_column: str | None = None,
    id_column: str | None = None,
    shard_rows: int | None = None,
    reporter: Reporter | None = None,
    **options: Any,
) -> ExtractResult:
    """Embed images, videos (files and folders; ``-`` reads paths or JSONL records from stdin) and
    ``texts`` into the feature set ``output`` (``NAME.npy`` + ``NAME.jsonl``).

    ``modality="text"`` reads ``inputs`` as texts instead (``.txt`` lines, JSONL ``field``);
    ``modality="audio"`` as recordings (audio files, and videos for their soundtracks), cut into
    ``window``-second windows every ``hop`` seconds (default: the model's window, end to end) and
    pooled by ``pool``. Not given, it is what the model reads: recordings for an audio model (CLAP),
    else images. Progress is
    journalled beside ``output``: a killed run resumes where it stopped (``restart`` discards it);
    ``update`` rewrites an existing set embedding only new or changed files. Videos are sampled by
    ``fps`` (default one frame a second), ``frames`` or ``keyframes`` over ``start``..``end`` and
    pooled by ``pool``; a native video model embeds each whole. ``.tar`` inputs are webdataset shards,
    ``.parquet`` inputs tables whose ``image_column`` (or with ``modality="text"``, ``text_column``)
    holds the inputs, ``id_column`` their ids; URLs are read through fsspec (see
    :mod:`mmcli.io`). Failed items are listed in
    ``OUT.errors.jsonl``; ``on_error="fail"`` stops at the first instead. ``options`` are the
    settings every run takes (:class:`~mmcli.engine.RunOptions`: ``device``, ``batch_size``, ...).

    An ``output`` ending in ``/`` (or naming an existing folder) is written as a sharded set
    (:mod:`mmcli.output.sharded`): parts of ``shard_rows`` rows or a little more (default 100,000; a
    resumed or updated set keeps its own), each closed at an input item's end; a killed run
    resumes after its last finished part.
    """
    from mmcli.encoders import load_encoder
    from mmcli.engine import Reporter, RunOptions, require_inputs, run_into, stream_linger, with_total
    from mmcli.io.inputs import discover_images, discover_texts, unique_ids
    from mmcli.io.parquet import Columns
    from mmcli.items import STDIN
    from mmcli.output.destination import ShardedFolder, feature_destination

    reporter = reporter or Reporter()
    run = RunOptions.of(options)
    destination = feature_destination(output, model=model, dtype=output_dtype, shard_rows=shard_rows)
    sharded = isinstance(destination, ShardedFolder)
    output = Path(output)
    if shard_rows is not None and (not sharded or shard_rows < 1):
        raise UsageError(
            f"{option('shard_rows')} must be at least 1" if sharded else
            f"{option('shard_rows')} sizes the parts of a sharded set: give {option('output')} a folder, DIR/"
        )  # fmt: skip
    inputs, texts = [str(i) for i in inputs], list(texts)
    if modality not in (None, "image", "text", "audio"):
        raise UsageError(f"unknown input modality {modality!r}; choose image, text or audio")
    if pool not in POOLING:
        raise UsageError(f"unknown pooling {pool!r}; choose from {', '.join(POOLING)}")
    if compile not in COMPILING:
        raise UsageError(f"unknown {option('compile')} {compile!r}; choose from {', '.join(COMPILING)}")
    for name, seconds in (("window", window), ("hop", hop)):
        if seconds is not None and not seconds > 0:
            raise UsageError(f"{option(name)} must be a positive number of seconds")
    require_inputs(
        inputs,
        extra=bool(texts),
        hint=f"give image, audio or video files or folders, {option('text')}, or - to read stdin",
    )
    traits = None  # the model's config, read once before the weights where the run needs it
    if modality is None:
        traits = model_traits(model, trust_remote_code=run.trust_remote_code) if inputs else None
        modality = traits.reads if traits else "image"
    if modality != "audio" and (window is not None or hop is not None):
        given = option("window") if window is not None else option("hop")
        raise UsageError(
            f"{given} cuts recordings into windows; it goes with an audio model or {option('modality', 'audio')}"
        )
    if run.update and (STDIN in inputs or not destination.exists()):
        raise UsageError(
            f"{option('update')} brings an existing feature set up to date from files: "
            + ("inputs from stdin cannot be compared" if STDIN in inputs else f"{output} does not exist yet")
        )
    if run.keep_missing and not run.update:
        raise UsageError(f"{option('keep_missing')} goes with {option('update')}")
    with destination.check(overwrite=run.overwrite, update=run.update):
        run.check_backend(inputs)

        sampling = run.video_sampling()
        columns = Columns(image_column, text_column, id_column)
        if modality == "text":
            discovered = discover_texts(inputs, texts, field_name=field, columns=columns, on_note=reporter.note)
        elif modality == "audio":
            discovered = chain(discover_images(inputs, audio=True), discover_texts([], texts))
        else:
            discovered = chain(discover_images(inputs, videos=True, columns=columns), discover_texts([], texts))
        items, total = with_total(discovered, inputs, what="recordings" if modality == "audio" else f"{modality}s")
        items = unique_ids(items)
        previous, listed = None, []
        if run.update:  # what cannot be updated is refused before the model loads
            listed = list(items)
            previous = destination.previous(listed)

        clip, clip_rate = None, None
        if modality == "image" and inputs:  # (the config was read above unless --modality was given)
            known = traits or model_traits(model, trust_remote_code=run.trust_remote_code)
            clip, clip_rate = known.clip, known.clip_rate
        if clip is not None and clip_rate:  # a series of clips at the rate the weights were trained at
            given = [flag for flag, value in (("fps", run.fps), ("frames", run.frames), ("keyframes", run.keyframes))
                     if value not in (None, False)]  # fmt: skip
            if given:
                raise UsageError(
                    f"model {model!r} ({clip[1]}) takes videos as consecutive clips of {clip[0]} frames at "
                    f"{clip_rate:g} frames per second, as its weights were trained; {option(given[0])} does not "
                    f"apply (choose the span with {option('start')} and {option('end')})"
                )
            sampling = replace(sampling, fps=clip_rate)
        elif clip is not None:  # sampling flags that cannot apply to a model of whole clips, refused before it loads
            frames, kind = clip
            what = f"model {model!r} ({kind}) embeds each video whole"
            if pool != "mean":
                raise UsageError(
                    f"{what}, into one row per video; {option('pool', pool)} does not apply "
                    "(it pools image models' frame rows)"
                )
            sampling = run.clip_sampling(frames, what)

        with reporter.loading(model):
            encoder = load_encoder(model, **run.loading)
        batch_size = run.batch_size or encoder.default_batch_size
        for needed, modality_name in (
            (modality in ("image", "audio") and bool(inputs), modality),
            (bool(texts) or modality == "text", "text"),
        ):
            if needed and not encoder.supports(modality_name):
                raise UsageError(
                    f"model {model!r} embeds {', '.join(sorted(encoder.modalities))} only, not "
                    f"{'audio' if modality_name == 'audio' else modality_name + 's'}; "
                    f"choose a model for that modality with {option('model')}"
                )
        # What decides the rows' values; recorded in the manifest so an update can insist on the same.
        settings: dict[str, Any] = {
            "model": model,
            "modality": modality,
            "field": field,
            "normalize": normalize,
            "output_dtype": output_dtype,
            "max_pixels": run.max_pixels,
            "exact_decode": run.exact_decode,
            "dtype": str(encoder.dtype),
            "quantize": encoder.quantized,
            "video": {"pool": pool, **vars(sampling)},
        }
        windowing = None
        if modality == "audio":
            assert encoder.audio_window and encoder.audio_rate
            windowing = audio_windowing(
                encoder.audio_window, window, hop, start=sampling.start, end=sampling.end, model=f"model {model!r}"
            )
            settings["audio"] = {"pool": pool, "rate": encoder.audio_rate, **vars(windowing)}
        if clip is not None and clip_rate:
            settings["video"] = {"pool": pool, "clip_frames": clip[0], "clip_rate": clip_rate, **vars(sampling)}
        elif clip is not None:
            settings["video"] = {"clip_frames": clip[0], **vars(sampling)}
        if _compiles(compile, encoder, modality, total, run):
            reporter.note(
                f"compiling the image tower with torch.compile for batches of {batch_size} (a one-off cost of "
                f"tens of seconds; {option('compile', 'off')} skips it)"
            )
            encoder.compile_images(batch_size)
        embedding = {"batch_size": batch_size, "workers": run.workers, "normalize": normalize,
                     "max_pixels": run.max_pixels, "exact_decode": run.exact_decode,
                     "linger": stream_linger(inputs)}  # fmt: skip
        job = run.distribute(
            _EmbedJob(encoder, sampling, pool, embedding, windowing),
            partial(_load_embed_job, model, run.loading, sampling, pool, embedding, windowing),
            batch_size=batch_size,
            min_side=encoder.decode_min_side,
            reporter=reporter,
        )
        identity = {"command": "extract-features", "inputs": inputs, "texts": texts, **columns.recorded()}
        stats = run_into(
            destination, job, listed if previous is not None else items, settings=settings,
            identity=None if STDIN in inputs else identity, previous=previous, total=total, batch_size=batch_size,
            device=str(encoder.device), run=run, reporter=reporter, desc="embedding", unit="items",
        )  # fmt: skip
        if destination.rows == 0 and (previous is None or sharded):
            raise ItemError(
                f"every input failed ({stats.failed}); nothing was written to {destination.shown} "
                f"(see {destination.errors})"
            )
    return _compile_noted(
        encoder, reporter, ExtractResult(output, destination.rows, destination.dim, stats, destination.errors)
    )


def _compiles(compile: str, encoder: Encoder, modality: str, total: int | None, run: Any) -> bool:
    """Whether to compile the image tower: when asked, or (``auto``) for a local CPU run of images
    large enough to repay the compile; never for a quantized model or one that takes whole clips."""
    if compile == "off" or modality != "image" or not encoder.supports("image"):
        return False
    if compile == "on":
        return True
    return (
        run.backend == "local" and str(encoder.device) == "cpu" and not encoder.quantized
        and not encoder.clip_frames and total is not None and total >= COMPILE_MIN_IMAGES
    )  # fmt: skip


def _compile_noted(encoder: Encoder, reporter: Reporter, result: ExtractResult) -> ExtractResult:
    if encoder.compile_error:
        reporter.note(f"torch.compile failed ({encoder.compile_error}); the rows were embedded without it")
    if encoder.texts_cut:
        reporter.note(encoder.texts_cut_note(encoder.texts_cut))
    return result

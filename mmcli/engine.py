"""The one run engine behind the model commands: fresh runs, resumed runs and ``--update``.

A run is a :class:`Job` (the model work: input items in, outcomes to write out, a batch at a time)
writing into a :class:`Sink` (a feature set, or a record stream: one interface). The engine walks
the inputs, keeps the journal that lets a killed run resume (:func:`run_fresh`), or rewrites an
existing output processing only what changed (:func:`run_update`), and tells a :class:`Reporter`
what happens; it never prints.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Protocol

from mmcli.errors import UsageError, option
from mmcli.incremental import outcomes_of, plan_update
from mmcli.items import PART_MODALITIES, STDIN, InputItem
from mmcli.media.images import DEFAULT_MAX_PIXELS
from mmcli.output.manifest import FileEntries
from mmcli.output.previous import Previous, check_same_settings
from mmcli.pipeline import Outcome
from mmcli.reporting import Reporter


class Job(Protocol):
    """The model work of a run. ``batches`` turns input items into, per batch, the outcomes to write
    (rows or records, videos expanded and assembled) and the batch of pipeline outcomes they come from;
    ``pending`` says whether a video is open at the end of the last batch (no checkpoint may fall there);
    ``counters`` are tallies the run keeps across a resume."""

    unit: str

    def batches(
        self, items: Iterable[InputItem], counters: dict[str, int] | None = None
    ) -> Iterator[tuple[list[Outcome[InputItem]], list[Outcome[InputItem]]]]: ...

    @property
    def pending(self) -> bool: ...

    def counters(self) -> dict[str, int]: ...


class Sink(Protocol):
    """Where a run's outcomes go: a feature set or a record stream, written as one (see :mod:`mmcli.output`).

    ``write`` adds outcomes (good ones as rows or records, each with its manifest entry from ``files``;
    failed ones reported and kept as error records) and returns how many failed; ``carry`` adds rows
    or records of an earlier output unchanged; ``checkpoint`` makes everything durable for a resume."""

    files: FileEntries | None
    failed_before: int
    counters: dict[str, int]

    def write(self, outcomes: list[Outcome[InputItem]], on_error: str, reporter: Reporter, kept: str) -> int: ...

    def carry(self, previous: Previous, rows: list[int], records: list[dict], entries: list[dict]) -> None: ...

    def checkpoint(self, consumed: int, counters: dict[str, int]) -> None: ...

    def __enter__(self) -> Sink: ...

    def __exit__(self, *exc: Any) -> None: ...


def require_inputs(inputs: list[str], *, extra: bool = False, hint: str) -> None:
    """Refuse a run with nothing to read, or stdin named twice, before any model is loaded."""
    if not inputs and not extra:
        raise UsageError(f"no inputs: {hint}")
    if inputs.count(STDIN) > 1:
        raise UsageError("- (stdin) can be given only once")


def stream_linger(inputs: list[str]) -> float | None:
    """How long a batch waits for a late item: only a stream (stdin) ships short batches, so the
    batches of files, folders, shards and tables, and the bytes they give, do not depend on timing."""
    from mmcli.pipeline import STREAM_LINGER

    return STREAM_LINGER if STDIN in inputs else None


def with_total(items: Iterable[Any], inputs: list[str], *, what: str) -> tuple[Iterator[Any], int | None]:
    """Items and their count for the progress bar; an empty set is a usage error.

    Files and folders are listed up front (paths only, cheap); stdin stays a stream, so a pipeline
    feeding mmcli gets results as it goes, and only its first item is awaited here.
    """
    if STDIN not in inputs:
        listed = list(items)
        if not listed:
            raise UsageError(f"no {what} found in {', '.join(inputs) or 'the arguments'}{_what_is_there(inputs)}")
        if all(getattr(item, "error", None) for item in listed):  # every one missing: no model to load for them
            shown = "; ".join(f"{item.source}: {item.error}" for item in listed[:3])
            more = f"; and {len(listed) - 3} more" if len(listed) > 3 else ""
            raise UsageError(f"none of the inputs can be read: {shown}{more}")
        return iter(listed), len(listed)
    stream = iter(items)
    first = next(stream, None)
    if first is None:
        raise UsageError("no inputs: stdin was empty")
    return chain([first], stream), None


TEXT_SUFFIXES = frozenset({".txt", ".jsonl", ".json", ".csv", ".tsv"})


def _what_is_there(inputs: list[str], *, look_at: int = 10_000) -> str:
    """What the named folders hold instead, so the refusal says what to do: "(it is empty)", or the
    kinds of file found, with the way to read texts where they are texts."""
    suffixes: dict[str, int] = {}
    for name in inputs:
        if not Path(name).is_dir():
            continue
        for seen, path in enumerate(Path(name).rglob("*")):
            if seen >= look_at:
                break
            if path.is_file():
                suffixes[path.suffix.lower() or "(no suffix)"] = (
                    suffixes.get(path.suffix.lower() or "(no suffix)", 0) + 1
                )
    if not suffixes:
        return " (no files there)" if any(Path(name).is_dir() for name in inputs) else ""
    common = ", ".join(f"{count} {suffix}" for suffix, count in sorted(suffixes.items(), key=lambda kv: -kv[1])[:4])
    hint = (
        "; to embed the lines of text files, use extract-features --modality text"
        if TEXT_SUFFIXES & set(suffixes)
        else ""
    )
    return f" (found {common}){hint}"


# Where a run's model work can go beyond this process, each backend named by the module that holds it:
# a client of the engine (mmcli.scale), imported only when a run asks for it, so nothing here depends on it.
BACKENDS: dict[str, str | None] = {"local": None, "ray": "mmcli.scale.ray_backend"}


def backend(name: str) -> Any:
    """The module of a backend other than ``local`` (see :data:`BACKENDS`), imported now."""
    import importlib

    return importlib.import_module(BACKENDS[name])  # type: ignore[arg-type]


@dataclass(frozen=True)
class RunOptions:
    """The settings every model run takes (``extract_features``, ``caption_files``): loading the model,
    decoding inputs, failed items, the output, and sampling videos. Each is the flag of that name."""

    batch_size: int | None = None
    workers: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    quantize: str | None = None
    trust_remote_code: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    exact_decode: bool = False
    on_error: str = "skip"
    overwrite: bool = False
    restart: bool = False
    update: bool = False
    keep_missing: bool = False
    fps: float | None = None
    frames: int | None = None
    keyframes: bool = False
    scene_threshold: float = 0.3
    start: float = 0.0
    end: float | None = None
    backend: str = "local"
    ray_address: str | None = None
    num_workers: int = 1
    gpus_per_worker: float = 0.0

    @classmethod
    def of(cls, options: dict[str, Any]) -> RunOptions:
        """The options from a run's keyword arguments, refusing any it does not know."""
        unknown = sorted(set(options) - set(RUN_OPTIONS))
        if unknown:
            raise UsageError(f"unknown run option {unknown[0]!r}; the options are {', '.join(RUN_OPTIONS)}")
        if options.get("on_error", "skip") not in ("skip", "fail"):
            raise UsageError(f"{option('on_error')} is skip or fail, not {options['on_error']!r}")
        run = cls(**options)
        if run.backend not in BACKENDS:
            raise UsageError(f"unknown {option('backend')} {run.backend!r}; choose from {', '.join(BACKENDS)}")
        if run.num_workers < 1 or run.gpus_per_worker < 0:
            raise UsageError(f"{option('num_workers')} is at least 1 and {option('gpus_per_worker')} at least 0")
        if run.backend == "local":
            given = [name for name, default in (("ray_address", None), ("num_workers", 1), ("gpus_per_worker", 0.0))
                     if options.get(name, default) != default]  # fmt: skip
            if given:
                raise UsageError(f"{option(given[0])} goes with {option('backend', 'ray')}")
        return run

    def check_backend(self, inputs: list[str]) -> None:
        """Refuse, before any model loads, a backend that cannot run these inputs."""
        if self.backend != "ray":
            return
        if STDIN in inputs:
            raise UsageError(
                f"{option('backend', 'ray')} reads files, folders and shards; stdin is a stream, which "
                "the local backend processes as it arrives"
            )
        ray = backend(self.backend)
        ray.check_ray_available(ray.RayCluster(self.ray_address, self.num_workers, self.gpus_per_worker))

    def distribute(self, job: Job, make_job: Any, *, batch_size: int, min_side: int | None, reporter: Reporter) -> Job:
        """``job``, or with the ray backend the same job run by Ray: ``make_job`` (picklable) builds it in each
        worker, loading the model there; ``min_side`` is the job's own reduced-decode setting."""
        if self.backend == "local":
            return job
        ray = backend(self.backend)
        cluster = ray.RayCluster(self.ray_address, self.num_workers, self.gpus_per_worker)
        return ray.RayJob(job.unit, make_job, cluster, batch_size=batch_size, max_pixels=self.max_pixels,
                      min_side=None if self.exact_decode else min_side, reporter=reporter)  # fmt: skip

    @property
    def loading(self) -> dict[str, Any]:
        """The keyword arguments of ``load_encoder`` / ``load_captioner``."""
        return {"device": self.device, "dtype": self.dtype, "quantize": self.quantize,
                "trust_remote_code": self.trust_remote_code}  # fmt: skip

    def video_sampling(self, default: str = "fps") -> Any:
        from mmcli.media.video import video_sampling

        return video_sampling(self.fps, self.frames, self.keyframes, self.scene_threshold, self.start, self.end,
                              default=default)  # fmt: skip

    def clip_sampling(self, clip_frames: int, what: str) -> Any:
        """The sampling of a model that takes each video whole (see :func:`~mmcli.media.clips.clip_sampling`)."""
        from mmcli.media.clips import clip_sampling

        return clip_sampling(clip_frames, fps=self.fps, frames=self.frames, keyframes=self.keyframes,
                             start=self.start, end=self.end, what=what)  # fmt: skip


RUN_OPTIONS = tuple(RunOptions.__dataclass_fields__)


@dataclass
class RunStats:
    """What a run did: ``failed`` items (an interrupted run's included); for ``--update`` runs, the
    inputs ``kept`` (``moved``: recognised by content), ``processed``, ``dropped``, and the rows of
    vanished files kept (``kept_missing``)."""

    failed: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    update: bool = False
    kept: int = 0
    moved: int = 0
    processed: int = 0
    dropped: int = 0
    kept_missing: int = 0


def run_fresh(
    job: Job,
    items: Iterable[InputItem],
    sink: Sink,
    *,
    consumed: int = 0,
    batch_size: int,
    total: int | None,
    on_error: str,
    reporter: Reporter,
    desc: str,
    kept: str = "",
) -> RunStats:
    """Run every item through ``job`` into ``sink``, committing whole input batches to the journal
    (so a resumed run batches alike), never inside a video being assembled. The journal counts input
    items (a video is one, however many frames it gave), which is what a resumed run skips; ``consumed``
    of them were done by an interrupted run."""
    committed = consumed
    with sink, reporter.progress(total, unit=job.unit, desc=desc) as bar:
        bar.update(consumed)
        failed = sink.failed_before
        for outcomes, batch in job.batches(items, sink.counters):
            failed += sink.write(outcomes, on_error, reporter, kept)
            # Input items, not pipeline items: a video's frames count as the one video (its end marker).
            done = sum(outcome.item.modality not in PART_MODALITIES for outcome in batch)
            bar.update(done)
            consumed += done
            if consumed // batch_size > committed // batch_size and not job.pending:
                sink.checkpoint(consumed, {**job.counters(), "failed": failed})
                committed = consumed
    return RunStats(failed=failed, counters=job.counters())


def run_update(
    job: Job,
    items: list[InputItem],
    previous: Previous,
    sink: Sink,
    *,
    settings: dict[str, Any],
    keep_missing: bool,
    on_error: str,
    reporter: Reporter,
    desc: str,
    kept: str = "",
) -> RunStats:
    """Rewrite ``previous.output`` as a fresh run would, processing only the inputs it does not
    already hold: new and changed files through ``job`` (first, in memory), the rest carried over."""
    check_same_settings(previous.output, settings, videos=previous.videos)
    plan = plan_update(
        items,
        previous.records,
        previous.manifest,
        name=str(previous.output),
        keep_missing=keep_missing,
        failed=previous.failed,
    )
    with reporter.progress(len(plan.embed), unit=job.unit, desc=desc) as bar:
        outcomes = outcomes_of(items, plan.embed, lambda todo: (rows for rows, _ in job.batches(todo)), bar)
    stats = RunStats(update=True, kept=len(plan.reuse), moved=plan.moved, dropped=plan.dropped)
    failed_inputs = 0
    with sink:
        assert sink.files is not None
        for index, item in enumerate(items):
            if index in plan.reuse:
                records, entries = plan.carried(index, item, previous.records, previous.manifest)
                sink.carry(previous, plan.reuse[index][0], records, entries)
                continue
            sink.files.remember(plan.hashed.get(index, {}))
            errors = sink.write(outcomes.get(index, []), on_error, reporter, kept)
            stats.failed += errors
            failed_inputs += bool(errors)
        if plan.kept_missing:
            rows = plan.kept_missing
            sink.carry(previous, rows, [previous.records[r] for r in rows], [previous.manifest[r] for r in rows])
    stats.processed = len(plan.embed) - failed_inputs
    stats.kept_missing = len(plan.kept_missing)
    stats.counters = job.counters()
    return stats


def run_into(
    destination: Any,
    job: Job,
    items: Iterable[InputItem],
    *,
    settings: dict[str, Any],
    identity: dict[str, Any] | None,
    previous: Previous | None,
    total: int | None,
    batch_size: int,
    device: str,
    run: RunOptions,
    reporter: Reporter,
    desc: str,
    unit: str,
) -> RunStats:
    """A run into a :class:`~mmcli.output.destination.Destination` (checked and locked already): an
    ``--update`` of ``previous`` (``items`` then listed), or a fresh run that resumes the journal of an
    interrupted one with the same settings: the command and its inputs (``identity``; None for a
    stream, which cannot be replayed), ``settings``, ``batch_size`` (a resumed run batches alike) and
    ``device``."""
    journalled = None
    if identity is not None:
        journalled = {**identity, **settings, "batch_size": batch_size, "device": device}
    sink, consumed, items = destination.open(
        settings, iter(items) if previous is None else items, previous=previous, journalled=journalled,
        restart=run.restart, reporter=reporter, unit=unit,
    )  # fmt: skip
    kept = destination.stopped_note(update=previous is not None)
    if previous is not None:
        return run_update(
            job, list(items), previous, sink, settings=settings, keep_missing=run.keep_missing, on_error=run.on_error,
            reporter=reporter, desc=f"{desc} new", kept=kept,
        )  # fmt: skip
    return run_fresh(
        job, items, sink, consumed=consumed, batch_size=batch_size, total=total, on_error=run.on_error,
        reporter=reporter, desc=desc, kept=kept,
    )  # fmt: skip

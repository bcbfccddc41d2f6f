"""``--backend ray``: the same jobs, run by Ray Data over a local or remote Ray cluster.

Ray Data reads and decodes still images in CPU tasks, then hands each batch of input items to an
actor pool (``num_workers`` actors, ``gpus_per_worker`` GPUs each). Every actor builds the command's
own :class:`~mmcli.engine.Job` once, loading the model through the same ``load_encoder`` /
``load_captioner`` as a local run, and runs the batch through it exactly as the local backend would:
videos are sampled and decoded inside the actor, streamed frame by frame, as their frames are not
bounded in number. Results come back to the driver in input order (``preserve_order``), where the one
engine writes them, keeps the journal and reports, so outputs, resume and error records are the local
backend's. An actor that dies is restarted and its batch retried by Ray.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from mmcli.errors import MmcliError, UsageError, install_hint, option
from mmcli.items import PART_MODALITIES, InputItem
from mmcli.pipeline import Outcome
from mmcli.reporting import Reporter

# What the decode tasks ask of the cluster: a fraction of a CPU, so they can run beside actors that
# hold the rest (an actor pool holding every CPU would starve them).
DECODE_CPUS = 0.5
# The least share of a CPU an actor is given, which bounds how many a cluster hosts.
MIN_ACTOR_CPUS = 0.25
# How long the actor pool may take to start (each actor loads the model) before the run gives up, in
# seconds: MMCLI_RAY_START_TIMEOUT, for a cluster that adds nodes on demand or downloads a large model.
DEFAULT_ACTOR_START_TIMEOUT_S = 600


def actor_start_timeout() -> float:
    """The seconds the actor pool may take to start (``MMCLI_RAY_START_TIMEOUT``)."""
    value = os.environ.get("MMCLI_RAY_START_TIMEOUT", "")
    try:
        return float(value) if value else DEFAULT_ACTOR_START_TIMEOUT_S
    except ValueError:
        raise UsageError(f"MMCLI_RAY_START_TIMEOUT is a number of seconds, not {value!r}") from None


@dataclass(frozen=True)
class RayCluster:
    """Where the work runs: ``address`` None starts a local Ray for the run (stopped after it), ``"auto"``
    joins the cluster running on this machine, anything else is an address Ray understands."""

    address: str | None = None
    num_workers: int = 1
    gpus_per_worker: float = 0.0


def check_ray_available(cluster: RayCluster) -> None:
    """Refuse ``--backend ray`` early, before any model loads, when Ray Data is not installed."""
    _prepare_environment(cluster)
    try:
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError(f"{option('backend', 'ray')} needs Ray Data: {install_hint('ray')}") from None


def _prepare_environment(cluster: RayCluster) -> None:
    """Ray's settings for this run, read from the environment (some when Ray is imported, so this comes first)."""
    # Ray's own log lines (its C++ core's included) would drown the run's progress; failures still raise.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    host = (cluster.address or "127.0.0.1").split("://")[-1].rsplit(":", 1)[0]
    if host in ("localhost", "::1", "[::1]") or host.startswith("127."):
        # A Ray started for this run serves this machine alone, so its servers listen on 127.0.0.1 only; a
        # driver joins a cluster on the loopback interface only if it takes that address as its own too.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if cluster.address is not None:
        # A wrong address fails within about half a minute instead of retrying for ten.
        for setting, value in (("RAY_gcs_server_port_wait_time_s", 2), ("RAY_py_gcs_connect_timeout_s", 5),
                               ("RAY_gcs_rpc_server_connect_timeout_s", 5)):  # fmt: skip
            os.environ.setdefault(setting, str(value))


def connect(cluster: RayCluster) -> bool:
    """Connect to (or start) Ray; returns whether this call started it, so the caller stops it after."""
    _prepare_environment(cluster)
    import ray

    if ray.is_initialized():
        return False
    if cluster.address is not None:
        refused = _nothing_answers(cluster.address)
        if refused:
            raise UsageError(
                f"cannot start or reach a Ray cluster at {cluster.address!r} ({option('ray_address')}): "
                f"nothing answers there ({refused}); is the cluster up (ray start --head) and the address its GCS's?"
            )
        _send_token_if_the_cluster_wants_one()
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False, "configure_logging": True}
    with _native_stderr_held() as held:
        try:
            if cluster.address is None:
                ray.init(address="local", include_dashboard=False, **quiet)
            else:
                ray.init(address=cluster.address, **quiet)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = f"at {cluster.address!r} ({option('ray_address')})" if cluster.address else "on this machine"
            raise UsageError(f"cannot start or reach a Ray cluster {where}: {exc}{held()}") from None
    return True


def _nothing_answers(address: str, *, timeout: float = 5.0) -> str | None:
    """Why no connection can be made to ``address`` (``HOST:PORT``, ``ray://HOST:PORT``), found in
    seconds where Ray itself retries for half a minute; ``None`` when something accepts it, or when
    the address is not a host and port (``auto``)."""
    host, colon, port = address.split("://")[-1].rpartition(":")
    if not colon or not port.isdigit():
        return None
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return None
    except TimeoutError:
        return f"no answer in {timeout:g} s"
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()


def _send_token_if_the_cluster_wants_one() -> None:
    """A cluster made by ``ray start`` asks for the token it saved on this machine (``~/.ray/auth_token``);
    Ray's driver sends it on its own only when joining by ``auto``, so joining by address uses Ray's own
    rule for it (a token found and no ``RAY_AUTH_MODE`` set: token authentication)."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # another Ray version: its own rules apply
        return
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    finally:
        logger.setLevel(level)


@contextmanager
def _native_stderr_held() -> Iterator[Callable[[], str]]:
    """Hold what native code writes to file descriptor 2 while Ray starts (its core logs a line of its own
    settings there), giving it back on request, for an error message."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)

        def text() -> str:
            held.seek(0)
            lines = held.read().decode("utf-8", "replace").strip().splitlines()[-4:]
            return "".join(f"\n  {line}" for line in lines)

        try:
            yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def actor_resources(cluster: RayCluster) -> dict[str, float]:
    """CPUs and GPUs per actor: an equal share of the cluster's CPUs, leaving room for the decode tasks."""
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    most = int((cpus - DECODE_CPUS) // MIN_ACTOR_CPUS)
    if cluster.num_workers > most:  # Ray would wait for CPUs that never come free
        raise UsageError(
            f"{option('num_workers', cluster.num_workers)} but the Ray cluster's {cpus:g} CPUs host at most "
            f"{max(most, 0)} workers ({MIN_ACTOR_CPUS:g} CPU each) beside the decode tasks ({DECODE_CPUS:g} CPU)"
        )
    share = max((cpus - DECODE_CPUS) / cluster.num_workers, MIN_ACTOR_CPUS)
    resources = {"num_cpus": min(share, max(1.0, cpus // cluster.num_workers))}
    if cluster.gpus_per_worker:
        gpus = float(ray.cluster_resources().get("GPU", 0.0))
        if gpus < cluster.gpus_per_worker:
            raise UsageError(
                f"{option('gpus_per_worker', f'{cluster.gpus_per_worker:g}')} but the Ray cluster has {gpus:g} GPUs"
            )
        resources["num_gpus"] = cluster.gpus_per_worker
    return resources


def decode_images(batch: dict[str, Any], *, max_pixels: int, min_side: int | None) -> dict[str, Any]:
    """A Ray Data task: each still image of the batch decoded (by the one safe decoder) into its item,
    so actors get pixels; a failure becomes the item's error, reported as a local run would."""
    from mmcli.errors import ItemError
    from mmcli.media.clips import FrameItem
    from mmcli.media.images import load_image

    decoded = []
    for blob in batch["item"]:
        item = pickle.loads(blob)
        if item.modality == "image" and not item.error:
            try:
                image = load_image(item.media(), max_pixels=max_pixels, min_side=min_side)
                item = FrameItem(**vars(item), image=image)
            except ItemError as exc:
                item = replace(item, error=str(exc))
        decoded.append(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))
    return {"item": decoded}


class ModelWorker:
    """A Ray Data actor: builds the job once (the model loads here), then runs batches of items through it."""

    def __init__(self, make_job: Callable[[], Any], threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.job = make_job()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from mmcli.pipeline import RowBatch

        items = [pickle.loads(blob) for blob in batch["item"]]
        outcomes = RowBatch()  # where each input item's outcomes end, for a sharded set's part boundaries
        inputs: list[Outcome[InputItem]] = []
        for rows, pipeline in self.job.batches(iter(items)):
            offset = len(outcomes)
            outcomes.extend(_light(outcome) for outcome in rows)
            outcomes.ends.extend(offset + end for end in getattr(rows, "ends", ()))
            inputs.extend(_light(outcome) for outcome in pipeline if outcome.item.modality not in PART_MODALITIES)
        if not outcomes.ends:  # a job that does not mark item ends (captions) leaves the list plain
            outcomes = list(outcomes)
        result = (outcomes, inputs, self.job.counters(), f"{socket.gethostname()}:{os.getpid()}")
        return {"result": [pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)]}


def _light(outcome: Outcome[InputItem]) -> Outcome[InputItem]:
    """The outcome without the pixels or samples its item carried, which the driver does not need back."""
    if getattr(outcome.item, "image", None) is not None:
        return replace(outcome, item=replace(outcome.item, image=None))
    if getattr(outcome.item, "samples", None) is not None:
        return replace(outcome, item=replace(outcome.item, samples=None))
    return outcome


class RayJob:
    """A :class:`~mmcli.engine.Job` whose batches Ray computes: ``make_job`` (picklable, run in each actor)
    builds the local job the actors run; ``max_pixels`` and ``min_side`` are the decode settings of the
    local job's own decoder. Each yielded batch holds the outcomes of ``batch_size`` consecutive inputs."""

    def __init__(
        self,
        unit: str,
        make_job: Callable[[], Any],
        cluster: RayCluster,
        *,
        batch_size: int,
        max_pixels: int,
        min_side: int | None,
        reporter: Reporter,
    ) -> None:
        self.unit, self.make_job, self.cluster, self.batch_size = unit, make_job, cluster, batch_size
        self.max_pixels, self.min_side, self.reporter = max_pixels, min_side, reporter
        self._counters: dict[str, int] = {}

    @property
    def pending(self) -> bool:
        return False  # an actor returns whole videos: nothing is ever held open between batches

    def counters(self) -> dict[str, int]:
        return dict(self._counters)

    def batches(self, items: Iterable[InputItem], counters: dict[str, int] | None = None) -> Iterator[Any]:
        import ray.data

        listed = [pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL) for item in items]
        base = {key: value for key, value in (counters or {}).items() if key != "failed"}
        self._counters = dict(base)
        if not listed:
            return
        address = self.cluster.address
        self.reporter.note(  # Ray is silent for its first tens of seconds: say what the run waits for
            f"ray: connecting to the cluster at {address}..." if address else "ray: starting a Ray on this machine..."
        )
        started = connect(self.cluster)
        try:
            logging.getLogger("ray.data").setLevel(logging.ERROR)
            # (an error raised to the run is reported once, by the run, not also as Ray's stack trace)
            logging.getLogger("ray.data.exceptions").setLevel(logging.CRITICAL)
            context = ray.data.DataContext.get_current()
            context.execution_options.preserve_order = True  # rows come back in input order
            context.enable_progress_bars = False  # the run's own bar reports progress
            context.print_on_execution_start = False
            # Batches wait for the whole pool: an actor that starts first would otherwise take them all.
            context.wait_for_min_actors_s = actor_start_timeout()
            resources = actor_resources(self.cluster)
            threads = max(1, int((os.cpu_count() or 1) // self.cluster.num_workers))
            if self.cluster.address is not None:  # on a cluster the actor's share is what it may use
                threads = max(1, int(resources["num_cpus"]))
            blocks = max(1, -(-len(listed) // self.batch_size))
            dataset = (
                ray.data.from_items([{"item": blob} for blob in listed], override_num_blocks=blocks)
                .map_batches(
                    decode_images,
                    batch_size=self.batch_size,
                    num_cpus=DECODE_CPUS,
                    fn_kwargs={"max_pixels": self.max_pixels, "min_side": self.min_side},
                )
                .map_batches(
                    ModelWorker,
                    batch_size=self.batch_size,
                    fn_constructor_kwargs={"make_job": self.make_job, "threads": threads},
                    compute=ray.data.ActorPoolStrategy(size=self.cluster.num_workers),
                    **resources,  # (Ray Data restarts a dead actor and retries its batch by default)
                )
            )
            self.reporter.note(
                f"ray: starting {_count(self.cluster.num_workers, 'worker')}, each loading the model; the first "
                f"batch waits until all are up (at most {actor_start_timeout():g} s, MMCLI_RAY_START_TIMEOUT)"
            )
            workers: set[str] = set()
            batches = 0
            with warnings.catch_warnings():  # Ray's advice on small inputs ("received 1 input") is not the user's
                warnings.filterwarnings("ignore", category=UserWarning, module=r"ray\.")
                for batch in _pool_started(dataset.iter_batches(batch_size=None, batch_format="numpy",
                                                                prefetch_batches=1), self.cluster):  # fmt: skip
                    for blob in batch["result"]:
                        outcomes, inputs, delta, worker = pickle.loads(blob)
                        for key, value in delta.items():
                            self._counters[key] = self._counters.get(key, 0) + value
                        workers.add(worker)
                        batches += 1
                        yield outcomes, inputs
            hosts = len({worker.rsplit(":", 1)[0] for worker in workers})
            local = started and self.cluster.address is None
            where = "a Ray started for this run" if local else f"the cluster at {ray.get_runtime_context().gcs_address}"
            self.reporter.note(
                f"ray: {_count(len(listed), 'input')} in {_count(batches, 'batch')} on "
                f"{_count(len(workers), 'worker')} ({_count(hosts, 'node')}) of {where}"
            )
        finally:
            if started:
                ray.shutdown()


def _pool_started(dataset_batches: Iterable[Any], cluster: RayCluster) -> Iterator[Any]:
    """The batches, or a clear error when the actor pool did not start in time (its first batch waits for it)."""
    import ray.exceptions

    batches = iter(dataset_batches)
    try:
        yield next(batches)
    except StopIteration:
        return
    except ray.exceptions.GetTimeoutError:
        raise MmcliError(
            f"the Ray cluster did not start {_count(cluster.num_workers, 'worker')} within "
            f"{actor_start_timeout():g} s (MMCLI_RAY_START_TIMEOUT): its CPUs or GPUs are held by other work, "
            "or a worker fails while it loads the model"
        ) from None
    except ray.exceptions.ActorDiedError as exc:
        # (Ray Data cancels the whole pool when one of its actors cannot start; its message says why)
        lines = str(exc).strip().splitlines()
        reason = lines[-1] if lines else type(exc).__name__
        raise MmcliError(f"the Ray cluster's {_count(cluster.num_workers, 'worker')} did not start: {reason}") from None
    yield from batches


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 'es' if noun.endswith('ch') else 's'}"

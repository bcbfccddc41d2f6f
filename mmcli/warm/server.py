"""The warm process: one per user, torch and transformers imported once, recently used models kept.

It listens on a Unix socket in a folder only its user may enter (mode 0700) and serves only its own
uid (``SO_PEERCRED``), never a TCP port. Each command runs in a child forked for it, so commands are
isolated from each other and from this process, and share its imported modules and kept models
copy-on-write. The child takes the client's standard streams (passed as descriptors), working
directory, environment, umask and argv, becomes what a fresh ``mmcli`` process would be (signal
dispositions, torch's threads and random state, Python's random state), runs the command and exits
as it would. This process reports the child's end to the client: its exit status, or the signal that
ended it. A client that goes away (even by ``kill -9``) takes its command with it: the command's
process group is killed, which leaves what killing a cold run leaves.

What a command imported and loaded is repeated here once no command runs, so the next command finds
it (see :mod:`mmcli.keep`). This process itself never runs a model, and keeps torch at one thread
while it loads one: a thread pool started before a fork does not survive it.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import os
import random
import selectors
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mmcli import keep
from mmcli.warm import protocol

IDLE_SECONDS = 900.0
MAX_MODELS = 3
# Imported before the first command: what nearly every command needs. Modules a command imports
# beyond these (a model family's modeling code) are imported here after it, for the next one.
PRELOAD = (
    "numpy",
    "PIL.Image",
    "torch",
    "transformers",
    "transformers.modeling_utils",
    "transformers.generation",
    "transformers.models.auto.configuration_auto",
    "transformers.models.auto.processing_auto",
    "safetensors.torch",
    "tqdm",
    "mmcli.cli",
    "mmcli.engine",
    "mmcli.extract",
    "mmcli.caption",
    "mmcli.classify",
    "mmcli.speech",
    "mmcli.search",
    "mmcli.retrieval",
    "mmcli.encoders.base",
    "mmcli.captioners.base",
    "mmcli.media.images",
    "mmcli.media.video",
    "mmcli.output.destination",
    "mmcli.io.inputs",
)
# Packages whose modules a command imported are imported here too; others (Ray, servers, anything
# that may start threads at import) stay the command's own.
LEARNED_PACKAGES = frozenset(
    {"mmcli", "torch", "torchvision", "transformers", "tokenizers", "safetensors", "huggingface_hub", "PIL", "numpy"}
)
NOT_LEARNED = ("mmcli.scale", "mmcli.web", "torch.distributed.elastic", "torch.utils.data._utils")
SIGNALS_RESET = (
    signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD, signal.SIGWINCH, signal.SIGUSR1, signal.SIGUSR2,
    signal.SIGTSTP,
)  # fmt: skip


@dataclass
class Limits:
    """When the warm process leaves (``idle`` seconds with no command) and how much it keeps."""

    idle: float = IDLE_SECONDS
    max_models: int = MAX_MODELS
    max_memory: int = 0  # bytes of resident memory; 0: half of the machine's


@dataclass
class _Command:
    connection: socket.socket
    report: int  # read end of the pipe the child writes its report to
    argv: list[str]
    started: float = field(default_factory=time.monotonic)


class WarmServer:
    """Serve commands on ``path`` until stopped or idle; ``run_command`` runs ``sys.argv`` as the
    ``mmcli`` program does (exits through SystemExit); ``prepare`` does once, before the first command,
    what each command would otherwise do first (building the command line's parser)."""

    def __init__(
        self,
        run_command: Callable[[], Any],
        path: str,
        limits: Limits,
        log: Callable[[str], None],
        prepare: Callable[[], Any] | None = None,
    ) -> None:
        self.run_command = run_command
        self.prepare = prepare
        self.path = path
        self.limits = limits
        if not limits.max_memory:
            limits.max_memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
        self.log = log
        self.fingerprint = protocol.fingerprint()
        self.commands: dict[int, _Command] = {}
        self.pending: list[dict[str, Any]] = []
        self.started = time.time()
        self.last_active = time.monotonic()
        self.served = 0
        self.refused = 0
        self.stopping = False
        self.fresh: dict[str, Any] = {}
        self.listener: socket.socket | None = None
        self.wake: tuple[int, int] = (-1, -1)
        self.inode = 0
        self.selector = selectors.DefaultSelector()

    # -- start and stop -------------------------------------------------------------------------------

    def serve(self) -> None:
        protocol.private_folder(self.path)
        self._preload()
        keep.activate(storing=True)
        wake_read, wake_write = self.wake = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self._bind()
        self.selector.register(wake_read, selectors.EVENT_READ, "wake")
        self.log(f"warm process {os.getpid()} listening on {self.path}")
        self.last_active = time.monotonic()  # idle from now, not from before the imports
        try:
            self._loop(wake_read)
        finally:
            self._unbind()
            for pid in list(self.commands):
                self._end(pid, signal.SIGKILL)
            self.log(f"warm process {os.getpid()} stopped")

    def _stop(self, signum: int, _frame: Any) -> None:
        self.log(f"stopping on signal {signal.Signals(signum).name}")
        self.stopping = True

    def _bind(self) -> None:
        with contextlib.suppress(protocol.WarmUnavailable):
            with protocol.connect(self.path, 2.0):
                raise protocol.WarmUnavailable(f"a warm process is already listening on {self.path}")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        staging = f"{self.path}.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
        listener.bind(staging)
        os.chmod(staging, 0o600)
        listener.listen(64)
        os.replace(staging, self.path)  # replaces a stale socket in one step
        self.inode = os.stat(self.path).st_ino
        self.listener = listener
        self.selector.register(listener, selectors.EVENT_READ, "listen")

    def _unbind(self) -> None:
        if self.listener is None:
            return
        self.selector.unregister(self.listener)
        self.listener.close()
        self.listener = None
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self.inode:  # not a successor's socket
                os.unlink(self.path)

    def _preload(self) -> None:
        started = time.monotonic()
        for name in PRELOAD:
            self._import(name)
        if self.prepare is not None:
            with _quiet():
                self.prepare()
        import torch

        self.fresh["threads"] = torch.get_num_threads()
        self.fresh["rng"] = torch.get_rng_state()
        torch.set_num_threads(1)
        from huggingface_hub import constants

        from mmcli import loading

        self.fresh["hub_offline"] = constants.HF_HUB_OFFLINE
        self.fresh["hub_unreachable"] = loading._hub_unreachable
        from transformers.utils import logging

        self.fresh["transformers_logging"] = (logging.get_verbosity(), logging.is_progress_bar_enabled())
        self.log(f"imported {len(sys.modules)} modules in {time.monotonic() - started:.1f} s")

    def _import(self, name: str) -> None:
        try:
            with _quiet():
                importlib.import_module(name)
        except Exception as exc:  # a module that fails here fails in the command, not here
            self.log(f"could not import {name}: {exc}")

    # -- the loop -------------------------------------------------------------------------------------

    def _loop(self, wake_read: int) -> None:
        while not (self.stopping and not self.commands):
            if self.pending and not self.commands:
                self._learn()
                continue
            timeout = None
            if not self.commands:
                timeout = self.limits.idle - (time.monotonic() - self.last_active)
                if timeout <= 0:
                    self.log(f"idle for {self.limits.idle:g} s: leaving")
                    return
            events = self.selector.select(timeout)
            self._reap()
            accept = False
            for key, _ in events:
                if key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        while os.read(wake_read, 4096):
                            pass
                elif key.data == "listen":
                    accept = True
                else:
                    self._hangup(key.data)
            if self.stopping:
                self._unbind()
            elif accept and self.listener is not None:
                self._accept()

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            connection, _ = self.listener.accept()
        except BlockingIOError:
            return
        self.last_active = time.monotonic()
        connection.settimeout(10.0)
        fds: list[int] = []
        try:
            if protocol.peer_uid(connection) != os.getuid():
                self.refused += 1
                self.log(f"refused a client of uid {protocol.peer_uid(connection)}")
                protocol.send(connection, {"ok": False, "why": "uid"})
                connection.close()
                return
            message, fds = protocol.receive(connection, max_fds=3)
            if message is None:
                connection.close()
                return
            op = message.get("op")
            if op == "status":
                protocol.send(connection, self.status(message.get("fingerprint")))
            elif op == "stop":
                self.log("stopping: asked to")
                self.stopping = True
                protocol.send(connection, {"ok": True, "pid": os.getpid()})
            elif op == "run" and message.get("fingerprint") != self.fingerprint:
                protocol.send(connection, {"ok": False, "why": "fingerprint"})
            elif op == "run" and len(fds) == 3 and not self.stopping:
                self._run(connection, message, fds)
                return
            else:
                protocol.send(connection, {"ok": False, "why": "request"})
            connection.close()
        except (OSError, ValueError) as exc:
            self.log(f"a client went away: {exc}")
            connection.close()
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _run(self, connection: socket.socket, message: dict[str, Any], fds: list[int]) -> None:
        report_read, report_write = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the command
            try:
                os.close(report_read)
                self._become_command(message, fds, report_write)
            finally:
                os._exit(70)  # not reached: the command ends the child
        os.close(report_write)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        self.served += 1
        self.commands[pid] = _Command(connection, report_read, list(message.get("argv", ())))
        try:
            protocol.send(connection, {"ok": True, "pid": pid})
        except OSError:
            self._end(pid, signal.SIGKILL)
            return
        connection.setblocking(False)
        self.selector.register(connection, selectors.EVENT_READ, pid)

    def _hangup(self, pid: int) -> None:
        """The client's side of a command became readable: it only ever closes, so the client is gone."""
        command = self.commands.get(pid)
        if command is None:
            return
        try:
            data = command.connection.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.log(f"the client of process {pid} went away: stopping it")
            self._end(pid, signal.SIGKILL)

    def _end(self, pid: int, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signum)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        self._forget(pid)

    def _reap(self) -> None:
        while self.commands:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            command = self.commands.get(pid)
            if command is None:
                continue
            if os.WIFSIGNALED(status):
                ending: dict[str, int] = {"signal": os.WTERMSIG(status)}
            else:
                ending = {"exit": os.WEXITSTATUS(status)}
            with contextlib.suppress(OSError):
                command.connection.setblocking(True)
                protocol.send(command.connection, ending)
            report = _read_all(command.report)
            if report:
                with contextlib.suppress(ValueError):
                    self.pending.append(json.loads(report))
            self.log(
                f"ran {' '.join(command.argv[1:3])} (process {pid}) in {time.monotonic() - command.started:.2f} s: "
                + ", ".join(f"{k} {v}" for k, v in ending.items())
            )
            self._forget(pid)

    def _forget(self, pid: int) -> None:
        command = self.commands.pop(pid, None)
        if command is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(command.connection)
        command.connection.close()
        with contextlib.suppress(OSError):
            os.close(command.report)
        self.last_active = time.monotonic()

    # -- what commands taught this process ----------------------------------------------------------

    def _learn(self) -> None:
        reports, self.pending = self.pending, []
        modules = sorted({name for report in reports for name in report.get("modules", ())})
        for name in modules:
            if name not in sys.modules:
                self._import(name)
        for report in reports:
            for key in report.get("used", ()):
                keep.touch(key)
            for load in report.get("loads", ()):
                self._keep(load)
        self._trim()

    def _keep(self, load: dict[str, Any]) -> None:
        from mmcli.registry import COMMANDS

        started = time.monotonic()
        try:
            module, attribute, _, _ = COMMANDS[load["kind"]]
            registry = getattr(importlib.import_module(module), attribute)
            os.chdir(load["cwd"])  # a relative name means what it meant to the command
            with _quiet():
                registry.load(load["name"], **load["options"])
        except Exception as exc:  # not kept; the next command loads it itself
            self.log(f"could not keep {load.get('name')}: {exc}")
            return
        finally:
            os.chdir("/")
        self.log(f"keeping {load['kind']} {load['name']} (loaded in {time.monotonic() - started:.2f} s)")

    def _trim(self) -> None:
        while len(keep.kept()) > max(self.limits.max_models, 0) or (
            keep.kept() and _resident_bytes() > self.limits.max_memory
        ):
            key = keep.drop_oldest()
            gc.collect()
            _release_free_memory()
            self.log(f"dropped {json.loads(key)[1] if key else '?'}")

    # -- a command's child ----------------------------------------------------------------------------

    def _become_command(self, message: dict[str, Any], fds: list[int], report: int) -> None:
        os.setpgid(0, 0)
        _die_with_parent()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for signum in SIGNALS_RESET:
            signal.signal(signum, signal.SIG_DFL)
        self.selector.close()
        if self.listener is not None:
            self.listener.close()
        for command in self.commands.values():
            command.connection.close()
            os.close(command.report)
        for fd in self.wake:
            os.close(fd)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        environment = {str(k): str(v) for k, v in message.get("env", {}).items()}
        os.environ.clear()
        os.environ.update(environment)
        time.tzset()
        _reopen_standard_streams(environment)
        os.umask(int(message.get("umask", 0o022)))
        status = 1
        try:
            os.chdir(message["cwd"])
            sys.argv = [str(arg) for arg in message["argv"]]
            self._fresh_process_state()
            keep.activate(storing=False)
            before = set(sys.modules)
            status = _run_as_program(self.run_command)
            _write_report(report, {**keep.report(), "modules": _learnable(set(sys.modules) - before)})
        except BaseException:  # the child must end here, whatever happened
            traceback.print_exc()
        os._exit(_flushed(status))

    def _fresh_process_state(self) -> None:
        import torch
        from huggingface_hub import constants
        from transformers.utils import logging

        from mmcli import loading

        torch.set_num_threads(self.fresh["threads"])
        torch.set_rng_state(self.fresh["rng"])
        random.seed()
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        constants.HF_HUB_OFFLINE = self.fresh["hub_offline"]
        loading._hub_unreachable = self.fresh["hub_unreachable"]
        loading.forget_configs()
        verbosity, bars = self.fresh["transformers_logging"]
        logging.set_verbosity(verbosity)
        (logging.enable_progress_bar if bars else logging.disable_progress_bar)()

    def status(self, fingerprint: str | None = None) -> dict[str, Any]:
        """What ``mmcli warm status`` shows."""
        models = []
        for key, _ in keep.kept():
            kind, name, options, _files = json.loads(key)
            models.append({"kind": kind, "name": name, "device": options.get("device"), "dtype": options.get("dtype")})
        return {
            "ok": True,
            "pid": os.getpid(),
            "socket": self.path,
            "started": self.started,
            "uptime": time.time() - self.started,
            "idle_limit": self.limits.idle,
            "idle_left": None if self.commands else self.limits.idle - (time.monotonic() - self.last_active),
            "commands_run": self.served,
            "commands_running": len(self.commands),
            "refused": self.refused,
            "models": list(reversed(models)),  # most recently used first
            "max_models": self.limits.max_models,
            "resident_bytes": _resident_bytes(),
            "max_memory": self.limits.max_memory,
            "same_environment": fingerprint == self.fingerprint,
        }


def _run_as_program(run_command: Callable[[], Any]) -> int:
    """Run the command as the interpreter runs a program: SystemExit's code as the status, an
    unhandled exception's traceback and status 1, an unhandled Ctrl-C ending the process by SIGINT."""
    try:
        run_command()
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code & 0xFF
        print(code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        traceback.print_exc()
        _flushed(0)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:  # as the interpreter would report it
        traceback.print_exc()
        return 1
    return 0


def _flushed(status: int) -> int:
    """Exit handlers run and streams flushed, as at the interpreter's exit (a stdout whose reader went
    away makes the status 120, as it does there)."""
    import atexit

    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:
            if stream is sys.stdout and status == 0:
                status = 120
    return status


def _reopen_standard_streams(environment: dict[str, str]) -> None:
    """New ``sys.stdin``/``stdout``/``stderr`` over descriptors 0-2, buffered as Python buffers them for
    a new process (line-buffered on a terminal, stderr always; unbuffered under PYTHONUNBUFFERED)."""
    import io

    unbuffered = bool(environment.get("PYTHONUNBUFFERED"))
    streams = []
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        old = getattr(sys, f"__{name}__", None) or getattr(sys, name)
        encoding = getattr(old, "encoding", None) or "utf-8"
        errors = getattr(old, "errors", None) or ("backslashreplace" if fd == 2 else "strict")
        raw = io.FileIO(fd, "rb" if fd == 0 else "wb", closefd=False)
        if fd == 0:
            stream = io.TextIOWrapper(io.BufferedReader(raw), encoding=encoding, errors=errors)
        else:
            buffered = io.BufferedWriter(raw)
            stream = io.TextIOWrapper(
                buffered,
                encoding=encoding,
                errors=errors,
                line_buffering=fd == 2 or os.isatty(fd),
                write_through=unbuffered,
            )
        streams.append(stream)
    sys.stdin, sys.stdout, sys.stderr = streams
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = streams  # type: ignore[misc]


def _learnable(modules: set[str]) -> list[str]:
    return sorted(
        name
        for name in modules
        if name.partition(".")[0] in LEARNED_PACKAGES
        and not name.startswith(NOT_LEARNED)
        and getattr(sys.modules.get(name), "__name__", None) == name  # not an alias of another module
    )


def _write_report(fd: int, report: dict[str, Any]) -> None:
    data = json.dumps(report).encode()
    with contextlib.suppress(OSError):
        while data:
            data = data[os.write(fd, data) :]


def _read_all(fd: int) -> bytes:
    chunks = []
    with contextlib.suppress(OSError):
        os.set_blocking(fd, False)
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    return b"".join(chunks)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Load or import without leaving a trace a command would see: no warning shown (and so none
    marked as shown), transformers' logging as it was, its warn-once memory cleared."""
    import warnings

    logging = sys.modules.get("transformers.utils.logging")
    saved = (logging.get_verbosity(), logging.is_progress_bar_enabled()) if logging else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if logging:
            logging.set_verbosity_error()
            logging.disable_progress_bar()
        try:
            yield
        finally:
            logging = sys.modules.get("transformers.utils.logging")
            if logging and saved:
                logging.set_verbosity(saved[0])
                (logging.enable_progress_bar if saved[1] else logging.disable_progress_bar)()
            if logging:
                for once in ("warning_once", "info_once"):
                    with contextlib.suppress(AttributeError):
                        getattr(logging, once).cache_clear()


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _release_free_memory() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _die_with_parent() -> None:
    """The command is killed if the warm process dies, rather than running on unreported."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        os._exit(1)

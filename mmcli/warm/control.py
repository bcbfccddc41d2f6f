"""Starting, asking after and stopping the user's warm process (``mmcli warm start|status|stop``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from mmcli.errors import MmcliError
from mmcli.warm import protocol
from mmcli.warm.server import Limits, WarmServer

START_TIMEOUT = 300.0  # seconds for a new warm process to import its libraries and answer
STOP_TIMEOUT = 60.0
LOG_NAME = "warm.log"


class WarmError(MmcliError):
    exit_code = 1


def log_path() -> str:
    return os.path.join(os.path.dirname(protocol.socket_path()), LOG_NAME)


def status() -> dict[str, Any] | None:
    """The running warm process's own account of itself, or None where none answers."""
    try:
        answer = protocol.request("status")
    except (protocol.WarmUnavailable, OSError, ValueError):
        return None
    return answer if answer.get("ok") else None


def start(limits: Limits) -> tuple[dict[str, Any], bool]:
    """Start a warm process in the background and wait until it answers: (its status, whether it is
    new). One already serving this environment is kept; one of another version or environment is
    stopped first."""
    if not protocol.supported():
        raise WarmError("warm runs need Linux (Unix sockets that pass descriptors and name the peer's uid)")
    try:
        protocol.private_folder(protocol.socket_path())
    except protocol.WarmUnavailable as exc:
        raise WarmError(str(exc)) from None
    running = status()
    if running is not None and running.get("same_environment"):
        return running, False
    if running is not None:
        stop()
    arguments = ["--idle", f"{limits.idle:g}", "--max-models", str(limits.max_models)]
    if limits.max_memory:
        arguments += ["--max-memory", f"{limits.max_memory / 2**30:g}"]
    with open(log_path(), "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", "from mmcli.cli import main; main()", "warm", "start", "--foreground", *arguments],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd="/",
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise WarmError(f"the warm process ended at start (status {process.returncode}); see {log_path()}")
        answer = status()
        if answer is not None and answer.get("pid") == process.pid:
            return answer, True
        time.sleep(0.1)
    process.kill()
    raise WarmError(f"the warm process did not answer within {START_TIMEOUT:g} s; see {log_path()}")


def stop() -> int | None:
    """Stop the warm process (after the commands it runs end); its pid, or None if none was running."""
    try:
        answer = protocol.request("stop")
    except (protocol.WarmUnavailable, OSError, ValueError):
        return None
    pid = int(answer["pid"])
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    return pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (its parent has not collected it yet) has stopped serving
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def serve(run_command: Callable[[], Any], limits: Limits, prepare: Callable[[], Any] | None = None) -> None:
    """Be the warm process, in this process, until stopped or idle."""
    if not protocol.supported():
        raise WarmError("warm runs need Linux (Unix sockets that pass descriptors and name the peer's uid)")
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]  # `python -c` put the working directory first; commands import as the executable does
    os.chdir("/")

    def log(message: str) -> None:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", file=sys.stderr, flush=True)

    try:
        WarmServer(run_command, protocol.socket_path(), limits, log, prepare).serve()
    except protocol.WarmUnavailable as exc:
        raise WarmError(str(exc)) from None

"""The ``mmcli`` executable's side of a warm run: hand the command, its working directory, environment
and standard streams to the user's warm process, relay signals to it, and exit as it did.

Anything short of a warm process that accepts the command (none running, a stale socket, another
version or environment, an unsafe folder) returns None, and the caller runs the command itself.
Standard library only: this runs before anything heavy is imported.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from mmcli.warm import protocol

# Signals the shell or the terminal sends the command: passed on to the command's process group.
RELAYED = (
    signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGWINCH, signal.SIGUSR1, signal.SIGUSR2
)  # fmt: skip


def run(argv: list[str]) -> int | None:
    """The command's exit status after the warm process ran it, or None to run it here."""
    if not protocol.supported() or protocol.switch() == "off" or not _streams_open():
        return None
    if os.isatty(0) and "-" in argv[1:]:
        return None  # a command reading the terminal must be in its foreground process group: run it here
    path = protocol.socket_path()
    try:
        sock = protocol.connect(path)
    except protocol.WarmUnavailable:
        if protocol.switch() == "auto":
            start_in_background()
        return None
    with sock:
        try:
            protocol.send(
                sock,
                {
                    "op": "run",
                    "fingerprint": protocol.fingerprint(),
                    "argv": argv,
                    "cwd": os.getcwd(),
                    "env": dict(os.environ),
                    "umask": _umask(),
                },
                fds=[0, 1, 2],
            )
            answer, _ = protocol.receive(sock)
        except (OSError, ValueError):
            return None
        if not answer or not answer.get("ok"):
            if answer and answer.get("why") == "fingerprint" and protocol.switch() == "auto":
                start_in_background()  # replaces the warm process of another version or environment
            return None  # run cold, silently
        return _wait(sock, int(answer["pid"]))


def _wait(sock: Any, pid: int) -> int:
    """Relay signals to the command until the warm process reports how it ended; end the same way."""

    def relay(signum: int, _frame: Any) -> None:
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            pass

    def suspend(signum: int, _frame: Any) -> None:  # Ctrl-Z: stop the command, then stop here
        relay(signal.SIGTSTP, None)
        os.kill(os.getpid(), signal.SIGSTOP)
        relay(signal.SIGCONT, None)

    for signum in RELAYED:
        signal.signal(signum, relay)
    signal.signal(signal.SIGTSTP, suspend)
    try:
        answer, _ = protocol.receive(sock)
    except (OSError, ValueError):
        answer = None
    if answer is None:
        print(
            f"mmcli: error: the warm process stopped before the command (process {pid}) finished; run it again",
            file=sys.stderr,
        )
        return 1
    if "signal" in answer:
        signum = int(answer["signal"])
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # ended by a signal, as the command was
    return int(answer.get("exit", 1))


def _streams_open() -> bool:
    try:
        for fd in (0, 1, 2):
            os.fstat(fd)
    except OSError:
        return False
    return True


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def start_in_background() -> None:
    """``mmcli warm start`` detached from this process, for the next command (``MMCLI_WARM=auto``)."""
    import subprocess

    try:
        subprocess.Popen(
            [sys.executable, "-c", "from mmcli.cli import main; main()", "warm", "start", "--quiet"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
    except OSError:
        pass

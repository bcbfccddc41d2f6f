"""Domain exceptions. The core raises these; only the CLI turns them into a line and an exit status."""

from __future__ import annotations


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


class ArgumentError(UsageError):
    """A library call's argument that is missing or does not go with another.

    ``problem`` names which (with ``details`` for the message), so a front end can say it in its
    own terms: the CLI names its flags where the library names the problem.
    """

    def __init__(self, message: str, *, problem: str, **details: object) -> None:
        super().__init__(message)
        self.problem = problem
        self.details = details

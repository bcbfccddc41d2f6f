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


class IdMismatch(InputError):
    """Ids of one file with no partner in the other, refused because strict matching was asked for."""


class MissingScores(UsageError):
    """Top-k accuracy was asked of predictions that carry no per-label scores."""

"""The library names a problem with an argument; the CLI says it in terms of its own flags."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from mmcli.errors import ArgumentError, UsageError

F = TypeVar("F", bound=Callable[..., Any])


def in_flag_terms(wordings: Mapping[str, str]) -> Callable[[F], F]:
    """Reword each :class:`~mmcli.errors.ArgumentError` whose ``problem`` is in ``wordings`` (a message
    formatted with the error's details); other errors pass unchanged. Goes under ``reports_errors``."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return command(*args, **kwargs)
            except ArgumentError as exc:
                if exc.problem not in wordings:
                    raise
                raise UsageError(wordings[exc.problem].format(**exc.details)) from None

        return wrapper  # type: ignore[return-value]

    return decorate

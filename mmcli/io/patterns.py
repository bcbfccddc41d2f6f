"""Brace patterns (``data-{000..099}.tar``), expanded as webdataset expands them: by ``braceexpand``."""

from __future__ import annotations


def expand_braces(pattern: str) -> list[str]:
    """Expand shell-style braces: ``a{1,2}`` -> ``a1 a2``; ``data-{000..002}.tar`` -> ``data-000.tar
    data-001.tar data-002.tar`` (zero-padded; an optional step ``{0..10..5}``; nesting). Braces that
    hold neither a comma nor a range, or that do not balance, stay as they are."""
    from braceexpand import UnbalancedBracesError, braceexpand

    try:
        return list(braceexpand(pattern))
    except UnbalancedBracesError:
        return [pattern]


def has_braces(pattern: str) -> bool:
    return expand_braces(pattern) != [pattern]

"""Which family handles a checkpoint, decided from its config's ``model_type``.

Families register the model types they know; for a type nobody claimed, each family's
``accepts(config)`` judges the config's shape (two towers, a vision config, a text vocabulary),
so new architectures of a known kind work without a release of mmcli.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mmcli.errors import UnsupportedModel


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    model_types: frozenset[str]
    load: Callable[..., Any]
    accepts: Callable[[Any], bool]


_FAMILIES: dict[str, Family] = {}


def register_family(
    name: str,
    *,
    description: str,
    model_types: tuple[str, ...] | frozenset[str],
    accepts: Callable[[Any], bool] = lambda config: False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator for a family's loader: ``load(name, config, device=, dtype=, trust_remote_code=)``."""

    def decorate(load: Callable[..., Any]) -> Callable[..., Any]:
        _FAMILIES[name] = Family(name, description, frozenset(model_types), load, accepts)
        return load

    return decorate


def families() -> list[Family]:
    return list(_FAMILIES.values())


def family_for(config: Any, name: str = "") -> Family:
    """The family for a config: an exact ``model_type`` claim first, then shape-based guesses."""
    model_type = getattr(config, "model_type", "") or ""
    for family in _FAMILIES.values():
        if model_type in family.model_types:
            return family
    for family in _FAMILIES.values():
        if family.accepts(config):
            return family
    known = ", ".join(f"{f.name} ({', '.join(sorted(f.model_types))})" for f in _FAMILIES.values())
    raise UnsupportedModel(
        f"model {name or '?'!r} has model_type {model_type!r}, which no encoder family handles. Supported: {known}"
    )

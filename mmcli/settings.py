"""Comparing the settings of two runs: what a resume, an ``--update`` or a sharded set insists on,
named flag by flag where they differ."""

from __future__ import annotations

import json
from typing import Any

from mmcli.errors import option


def flat_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Nested settings as ``video.pool``-style keys, so a refusal names just the one that differs."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update((f"{key}.{inner}", item) for inner, item in flat_settings(value).items())
        else:
            flat[key] = value
    return flat


# Settings a refusal names as they are, not as a flag (they are no flag, or not one by that name).
NOT_FLAGS = frozenset({"command", "inputs", "texts", "device", "settings"})


def describe_differences(stored: dict[str, Any], now: dict[str, Any], *, first_only: bool = False) -> str:
    """``--batch-size was 32, now 8`` for each setting (nested ones as ``video.pool``) that differs
    between a stored run and this one, compared as JSON, as stored settings were written."""
    was, wanted = flat_settings(stored or {}), flat_settings(json.loads(json.dumps(now)))
    keys = [key for key in {**was, **wanted} if was.get(key) != wanted.get(key)]
    shown = [
        f"{key if '.' in key or key in NOT_FLAGS else option(key)} was {was.get(key)!r}, now {wanted.get(key)!r}"
        for key in (keys[:1] if first_only else keys)
    ]
    return "; ".join(shown)

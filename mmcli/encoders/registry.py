"""The encoder families' registry (see :mod:`mmcli.registry`)."""

from __future__ import annotations

from mmcli.registry import Family, Registry

ENCODERS = Registry("encoder")
register_family = ENCODERS.register
family_for = ENCODERS.family_for
families = ENCODERS.families

__all__ = ["ENCODERS", "Family", "families", "family_for", "register_family"]

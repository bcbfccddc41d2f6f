"""The captioner families' registry (see :mod:`mmcli.registry`)."""

from __future__ import annotations

from mmcli.registry import Registry

CAPTIONERS = Registry("captioner")
register_captioner = CAPTIONERS.register

"""The captioner families' registry (see :mod:`mmcli.registry`); families register with ``@CAPTIONERS.register``."""

from __future__ import annotations

from mmcli.registry import Registry

CAPTIONERS = Registry("captioner")

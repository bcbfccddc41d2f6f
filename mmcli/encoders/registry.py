"""The encoder families' registry (see :mod:`mmcli.registry`); families register with ``@ENCODERS.register``."""

from __future__ import annotations

from mmcli.registry import Registry

ENCODERS = Registry("encoder")

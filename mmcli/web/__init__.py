"""Web front ends over mmcli's outputs: ``mmcli serve`` (a local search app) and ``mmcli report`` (pages of results)."""

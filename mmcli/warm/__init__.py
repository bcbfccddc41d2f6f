"""Warm runs: a per-user background process that keeps torch, transformers and recently used models
loaded, and runs each command the ``mmcli`` executable hands it in a forked child (see
:mod:`mmcli.warm.server`; the executable's side is :mod:`mmcli.warm.client`)."""

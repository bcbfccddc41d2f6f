"""Models a warm process keeps loaded between commands.

Every model loads through :meth:`mmcli.registry.Registry.load`, which asks :func:`kept_or_loaded`. In a
process that runs one command (the usual case) nothing is kept and this costs nothing. A warm
process's command (a forked child) finds the models its parent holds, shared copy-on-write, and notes
each load it made, which the parent then repeats and keeps for the next command, least recently used
first out. A kept model is keyed by the request (family kind, name, device, dtype, options) and by the
checkpoint's files (names, sizes, modification times), so a checkpoint saved again is loaded again.
Models on a GPU are not kept: CUDA does not survive a fork.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_active = False  # this process is a warm process or one of its commands
_storing = False  # ... the warm process itself, which keeps what it loads
_kept: OrderedDict[str, Any] = OrderedDict()
_loads: list[dict[str, Any]] = []  # requests this command loaded (not kept), for its parent to keep
_used: list[str] = []  # keys of kept models this command used


def activate(*, storing: bool) -> None:
    """Look models up in (and, ``storing``, add them to) this process's kept models from now on."""
    global _active, _storing
    _active, _storing = True, storing
    _loads.clear()
    _used.clear()


def kept_or_loaded(kind: str, name: str, options: dict[str, Any], load: Callable[[], T]) -> T:
    """The kept model for this request if there is one, else ``load()`` (kept where this is the warm
    process, noted for it where this is one of its commands)."""
    if not _active:
        return load()
    key = request_key(kind, name, options)
    if key is None:
        return load()
    if key in _kept:
        _kept.move_to_end(key)
        _used.append(key)
        return _kept[key]
    loaded = load()
    if _storing:
        _kept[key] = loaded
    else:
        _loads.append({"kind": kind, "name": name, "options": options, "cwd": os.getcwd()})
    return loaded


def request_key(kind: str, name: str, options: dict[str, Any]) -> str | None:
    """The key a model is kept under, or None for one that is not kept (on a GPU, a pinned revision,
    options that are not plain values, a checkpoint not found on disk)."""
    if options.get("device") != "cpu" or "revision" in options:
        return None
    files = checkpoint_files(name)
    if files is None:
        return None
    try:
        return json.dumps([kind, name, options, files], sort_keys=True)
    except (TypeError, ValueError):
        return None


def checkpoint_files(name: str) -> list[Any] | None:
    """The checkpoint's folder and its files' names, sizes and modification times: a local folder, or
    the snapshot of a hub id that the Hugging Face cache's ``refs/main`` names (``hf-hub:`` ids too);
    for ``torchvision:NAME[:WEIGHTS]``, the weights file in torch's cache."""
    if name.startswith("torchvision:"):
        return _torch_cache_file(name)
    name = name.removeprefix("hf-hub:")
    folder = os.path.expanduser(name)
    if not os.path.isdir(folder):
        from huggingface_hub import constants

        repo = os.path.join(constants.HF_HUB_CACHE, "models--" + name.replace("/", "--"))
        try:
            with open(os.path.join(repo, "refs", "main"), encoding="utf-8") as ref:
                folder = os.path.join(repo, "snapshots", ref.read().strip())
        except OSError:
            return None
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        stamps = []
        for entry in entries:
            info = entry.stat()  # through the hub cache's links to its blobs
            stamps.append([entry.name, info.st_size, info.st_mtime_ns])
    except OSError:
        return None
    return [os.path.realpath(folder), stamps]


def _torch_cache_file(name: str) -> list[Any] | None:
    from mmcli.checkpoints import torch_cache_file

    try:
        import torchvision.models as models

        model, _, weights = name.removeprefix("torchvision:").partition(":")
        path = torch_cache_file(models.get_model_weights(model)[weights or "DEFAULT"].url)
        info = os.stat(path)
    except (ImportError, ValueError, KeyError, OSError):
        return None
    return [os.path.realpath(path), [[os.path.basename(path), info.st_size, info.st_mtime_ns]]]


def report() -> dict[str, Any]:
    """What this command loaded and which kept models it used, for its warm parent."""
    return {"loads": list(_loads), "used": list(_used)}


def touch(key: str) -> None:
    if key in _kept:
        _kept.move_to_end(key)


def kept() -> list[tuple[str, Any]]:
    """The kept models, least recently used first: (key, model)."""
    return list(_kept.items())


def drop_oldest() -> str | None:
    """Forget the least recently used kept model; its key, or None if none is kept."""
    if not _kept:
        return None
    key, _ = _kept.popitem(last=False)
    return key

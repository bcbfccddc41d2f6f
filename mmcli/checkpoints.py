"""What kind of checkpoint a model name points at, from what the checkpoint ships.

Most checkpoints are transformers ones (a ``config.json`` with a ``model_type``), read with
``AutoConfig``. The others are told apart by their files, never by how their name is spelt:

- **open_clip**: an ``open_clip_config.json`` (and no transformers config), in a hub repository
  (``hf-hub:org/repo`` as open_clip writes it, or ``org/repo``) or a local folder; or a name of
  open_clip's own list, ``open_clip:ARCH/TAG`` as clip-retrieval spells it (``open_clip.list_pretrained()``).
- **timm**: a ``config.json`` that names an ``architecture`` (timm's hub layout, e.g. ``timm/NAME``),
  in a hub repository or a local folder.
- **torchvision**: ``torchvision:NAME[:WEIGHTS]``, a model of torchvision's list with its weights
  (``DEFAULT`` when not named), which torch keeps in its own cache (``TORCH_HOME``).

Such a checkpoint's config is a :class:`LibraryConfig`, whose ``model_type`` (``open_clip``,
``timm``) is the one the registries' families claim, so the family is chosen as for any other.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from mmcli.errors import ModelNotFound

OPEN_CLIP = "open_clip"
TIMM = "timm"
TORCHVISION = "torchvision"
TORCHVISION_PREFIX = "torchvision:"  # torchvision:NAME[:WEIGHTS]
OPEN_CLIP_PREFIX = "open_clip:"  # open_clip:ARCH/TAG, a model of open_clip's list
HUB_PREFIX = "hf-hub:"  # hf-hub:org/repo, as open_clip and timm name hub repositories
OPEN_CLIP_CONFIG = "open_clip_config.json"


@dataclass
class LibraryConfig:
    """The config of a checkpoint that another library loads.

    ``model_type``: the library (:data:`OPEN_CLIP`, :data:`TIMM`); ``source``: the name that library
    is given (``hf-hub:org/repo``, ``local-dir:/path``, or an architecture of its own list);
    ``pretrained``: the weights tag, for a name of open_clip's list; ``settings``: the JSON the
    checkpoint ships (``open_clip_config.json``, timm's ``config.json``), or the list's entry."""

    model_type: str
    source: str
    pretrained: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)


def checkpoint_config(name: str, *, trust_remote_code: bool = False) -> Any:
    """The config that decides ``name``'s family: its :class:`LibraryConfig` where another library
    loads it, else its transformers config; read once per command, as
    :func:`~mmcli.loading.load_config` keeps configs."""
    from mmcli.loading import load_config

    return load_config(name, trust_remote_code=trust_remote_code, read=_read_checkpoint_config)


def _read_checkpoint_config(name: str, trust_remote_code: bool) -> Any:
    from mmcli.loading import looks_like_path, read_config

    if looks_like_path(name) and not os.path.exists(os.path.expanduser(name)):
        return read_config(name, trust_remote_code)  # says the folder does not exist
    return library_config(name) or read_config(name, trust_remote_code)


def library_config(name: str) -> LibraryConfig | None:
    """The :class:`LibraryConfig` of ``name`` when another library loads it, else ``None`` (a
    transformers checkpoint, or nothing readable: ``AutoConfig`` then says what is wrong)."""
    if name.startswith(OPEN_CLIP_PREFIX):
        return _open_clip_listed(name[len(OPEN_CLIP_PREFIX) :])
    if name.startswith(TORCHVISION_PREFIX):
        return _torchvision_listed(name[len(TORCHVISION_PREFIX) :])
    repo = name[len(HUB_PREFIX) :] if name.startswith(HUB_PREFIX) else name
    local = os.path.expanduser(repo)
    if name.startswith(HUB_PREFIX) or not os.path.isdir(local):
        source, read = f"{HUB_PREFIX}{repo}", lambda filename: _hub_json(repo, filename)
        if not name.startswith(HUB_PREFIX) and repo.count("/") != 1:
            return None  # not a hub id: transformers' own error names what is missing
    else:
        source, read = f"local-dir:{os.path.abspath(local)}", lambda filename: _folder_json(local, filename)
    if name.startswith(HUB_PREFIX):  # open_clip's and timm's own name for a hub repository
        shipped = read(OPEN_CLIP_CONFIG)
        if shipped is not None:
            return LibraryConfig(OPEN_CLIP, source, settings=shipped)
        config = read("config.json")
        if _names_timm_architecture(config):
            return LibraryConfig(TIMM, source, settings=config)
        if config is None and _hub_offline():
            from mmcli.loading import _explain_missing

            raise ModelNotFound(_explain_missing(name, OSError("offline: not in the cache"), "model"))
        raise ModelNotFound(
            f"{name!r} ships neither an {OPEN_CLIP_CONFIG} (open_clip) nor a config.json naming an "
            "architecture (timm); give a transformers checkpoint without the hf-hub: prefix"
        )
    config = read("config.json")
    if _names_timm_architecture(config):
        return LibraryConfig(TIMM, source, settings=config)
    if config is None or "model_type" not in config:
        shipped = read(OPEN_CLIP_CONFIG)
        if shipped is not None:
            return LibraryConfig(OPEN_CLIP, source, settings=shipped)
    return None  # a transformers checkpoint (a repository with both configs is loaded as one)


def _names_timm_architecture(config: dict[str, Any] | None) -> bool:
    return config is not None and "model_type" not in config and isinstance(config.get("architecture"), str)


def open_clip_module() -> Any:
    """``open_clip``, or the line that says how to install it."""
    from mmcli.errors import install_hint

    try:
        import open_clip
    except ImportError:
        raise ModelNotFound(f"open_clip models need open_clip: {install_hint('openclip')}") from None
    return open_clip


def torch_cache_file(url: str) -> str:
    """Where torch keeps the weights it downloads from ``url`` (``$TORCH_HOME/hub/checkpoints/``)."""
    import torch

    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def _open_clip_listed(spec: str) -> LibraryConfig:
    """``ARCH/TAG`` of open_clip's list (``open_clip.list_pretrained()``); refused with the near names."""
    arch, _, tag = spec.partition("/")
    open_clip = open_clip_module()
    if not arch or not tag:
        raise ModelNotFound(
            f"{OPEN_CLIP_PREFIX}{spec!r} names no weights: write open_clip:ARCH/TAG, e.g. "
            "open_clip:ViT-B-32/laion2b_s34b_b79k (open_clip.list_pretrained() lists them)"
        )
    listed = open_clip.list_pretrained()
    if (arch, tag) not in listed:
        tags = [known for known_arch, known in listed if known_arch == arch]
        hint = f"its tags: {', '.join(tags)}" if tags else "open_clip.list_pretrained() lists the models"
        raise ModelNotFound(f"open_clip has no pretrained weights {tag!r} for {arch!r}; {hint}")
    settings = dict(open_clip.get_pretrained_cfg(arch, tag))
    return LibraryConfig(OPEN_CLIP, arch, pretrained=tag, settings=settings)


def _torchvision_listed(spec: str) -> LibraryConfig:
    """``NAME[:WEIGHTS]`` of torchvision's models: the weights' URL, categories and transforms, and
    for a video model the clip length and frame rate its weights were evaluated at (their docs say)."""
    import re

    import torchvision.models as models

    name, _, weights_name = spec.partition(":")
    if name not in models.list_models():
        import difflib

        near = difflib.get_close_matches(name, models.list_models(), n=5)
        raise ModelNotFound(
            f"torchvision has no model {name!r}"
            + (f"; near names: {', '.join(near)}" if near else "")
            + " (torchvision.models.list_models() lists them)"
        )
    enum = models.get_model_weights(name)
    available = [member.name for member in enum]
    try:
        weights = enum[weights_name or "DEFAULT"]
    except KeyError:
        raise ModelNotFound(
            f"torchvision's {name} has no weights {weights_name!r}; its weights: {', '.join(available)}"
        ) from None
    settings: dict[str, Any] = {
        "weights": weights.name, "url": weights.url, "categories": list(weights.meta.get("categories") or []),
        "video": name in models.list_models(module=models.video),
    }  # fmt: skip
    docs = str(weights.meta.get("_docs", ""))
    if settings["video"]:
        clip_len, frame_rate = re.search(r"clip_len=(\d+)", docs), re.search(r"frame_rate=([\d.]+)", docs)
        settings["clip_len"] = int(clip_len[1]) if clip_len else 16
        settings["frame_rate"] = float(frame_rate[1]) if frame_rate else 15.0
    return LibraryConfig(TORCHVISION, name, pretrained=weights.name, settings=settings)


def _folder_json(folder: str, filename: str) -> dict[str, Any] | None:
    path = os.path.join(folder, filename)
    if not os.path.isfile(path):
        return None
    return _parsed(path)


def _hub_json(repo: str, filename: str) -> dict[str, Any] | None:
    """``filename`` of hub repository ``repo``, from the cache, else downloaded; ``None`` where the
    repository has no such file or it cannot be had (then ``AutoConfig`` explains)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    from mmcli.loading import offline_unless_hub_answers

    try:
        cached = try_to_load_from_cache(repo, filename)
    except HFValidationError:
        return None
    if isinstance(cached, str):
        return _parsed(cached)
    offline_unless_hub_answers()
    try:
        return _parsed(hf_hub_download(repo, filename))
    except Exception:  # missing file, unknown or gated repository, no network: not this library's checkpoint
        return None


def _hub_offline() -> bool:
    from huggingface_hub import constants

    from mmcli import loading

    return bool(constants.HF_HUB_OFFLINE or loading._offline_by_environment() or loading._hub_unreachable)


def _parsed(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None

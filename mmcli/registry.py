"""Registries that decide which model family handles a checkpoint, from its config's ``model_type``.

Families are declared (:meth:`Registry.declare`) with the model types they know and a
``"module:attr"`` loader imported only when one of their models loads, so the decision and its
refusals import no torch. For a type nobody claimed, each family's ``accepts(config)`` judges the
config's shape (two towers, a vision config, a text vocabulary), so new architectures of a known
kind work without a release of mmcli. Encoders, captioners and transcribers each keep one registry.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mmcli import keep
from mmcli.checkpoints import checkpoint_config
from mmcli.errors import UnsupportedModel
from mmcli.loading import check_quantize, quantize_linear_layers, resolve_device, resolve_dtype


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    model_types: frozenset[str]
    load: Callable[..., Any]
    accepts: Callable[[Any], bool]
    reads: str = "image"  # what a command reads files as for this family's models when not told
    clip_frames: Callable[[Any], int] | None = None  # frames of the one clip a model takes a video as, by config
    heads: bool = False  # whether its loader takes head=True: a classification checkpoint with its classifier
    clip_rate: Callable[[Any], float | None] | None = None  # frames per second of its clips, for models that
    # take a video as a series of clips (torchvision's 3D CNNs) rather than whole


@dataclass(frozen=True)
class Traits:
    """A model's traits known from its config alone, so inputs and flags are checked before the weights
    load: what files given to it are read as (``reads``, see :meth:`Registry.register`), and for a model
    that takes videos as clips, ``clip``: (frames of a clip, model type), None for other models; and
    ``clip_rate``: the frames per second of a model that takes a video as a series of clips at that
    rate (None: each video whole, as one clip)."""

    reads: str = "image"
    clip: tuple[int, str] | None = None
    clip_rate: float | None = None


# Why a checkpoint cannot classify into labels of its own, and what to do instead.
NO_CLASSIFIER = (
    "it has no classifier of its own. Give labels to classify into (zero-shot, with an image-text or audio-text model)"
)


# Each registry's module and the command its models serve, for pointing a model given to the wrong
# command at the right one.
COMMANDS = {
    "encoder": ("mmcli.encoders.families", "ENCODERS", "extract-features", "an embedding model"),
    "captioner": ("mmcli.captioners.families", "CAPTIONERS", "caption", "a captioning model"),
    "speech recognition": ("mmcli.transcribers", "TRANSCRIBERS", "transcribe", "a speech recognition model"),
}


def other_command_hint(kind: str, config: Any, name: str) -> str:
    """ " It is a captioner model: use `mmcli caption --model NAME`." where another registry claims the
    config's ``model_type`` (claims only, never shape guesses), else ``""``."""
    import importlib

    model_type = getattr(config, "model_type", "") or ""
    for other, (module, attribute, command, what) in COMMANDS.items():
        if other == kind:
            continue
        registry = getattr(importlib.import_module(module), attribute)
        if any(model_type in family.model_types for family in registry.families()):
            return f" It is {what}: use `mmcli {command} --model {name}`."
    return ""


def _never(config: Any) -> bool:
    return False


class _LazyLoader:
    """A family's loader named as ``"module:function"``, imported on the first call."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import importlib

        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)(*args, **kwargs)


class Registry:
    """Model families of one kind (``encoder``, ``captioner``), looked up by config."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._families: dict[str, Family] = {}

    def register(
        self,
        name: str,
        *,
        description: str,
        model_types: tuple[str, ...] | frozenset[str],
        accepts: Callable[[Any], bool] = _never,
        reads: str = "image",
        clip_frames: Callable[[Any], int] | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator for a loader: ``load(name, path, config, *, device, dtype, trust_remote_code, **options)``.
        ``reads``: what the files given to one of the family's models are (``image``, ``audio``), where
        the command is not told. ``clip_frames(config)``: for models that take each video whole, as one
        clip, its number of frames, so sampling flags that cannot apply are refused before the weights load."""

        def decorate(load: Callable[..., Any]) -> Callable[..., Any]:
            self._families[name] = Family(name, description, frozenset(model_types), load, accepts, reads, clip_frames)
            return load

        return decorate

    def declare(
        self,
        name: str,
        *,
        description: str,
        model_types: tuple[str, ...] | frozenset[str],
        loader: str,
        accepts: Callable[[Any], bool] = _never,
        reads: str = "image",
        clip_frames: Callable[[Any], int | None] | None = None,
        heads: bool = False,
        clip_rate: Callable[[Any], float | None] | None = None,
    ) -> None:
        """A family whose loader (``"module:function"``, see :meth:`register`) is imported when one of its
        models loads; everything else about it is known without importing it. ``heads``: its loader
        takes ``head=True`` and then loads a classification checkpoint with its classifier, whose rows
        are the classifier's logits over ``labels``."""
        self._families[name] = Family(
            name, description, frozenset(model_types), _LazyLoader(loader), accepts, reads, clip_frames, heads,
            clip_rate,
        )  # fmt: skip

    def families(self) -> list[Family]:
        return list(self._families.values())

    def family_for(self, config: Any, name: str = "") -> Family:
        """The family for a config: an exact ``model_type`` claim first, then shape-based guesses."""
        model_type = getattr(config, "model_type", "") or ""
        for family in self._families.values():
            if model_type in family.model_types:
                return family
        for family in self._families.values():
            if family.accepts(config):
                return family
        known = "; ".join(f"{f.name} ({', '.join(sorted(f.model_types))})" for f in self._families.values())
        hint = other_command_hint(self.kind, config, name or "?")
        raise UnsupportedModel(
            f"model {name or '?'!r} has model_type {model_type!r}, which no {self.kind} family handles."
            + (hint or f" Supported: {known}")
        )

    def traits(self, name_or_path: str, *, trust_remote_code: bool = False) -> Traits:
        """What a command must know of this model before its weights load, from one read of its config."""
        config = checkpoint_config(name_or_path, trust_remote_code=trust_remote_code)
        family = self.family_for(config, name_or_path)
        clip, frames = None, family.clip_frames(config) if family.clip_frames is not None else None
        if frames:
            clip = frames, getattr(config, "model_type", None) or family.name
        rate = family.clip_rate(config) if family.clip_rate is not None and frames else None
        return Traits(family.reads, clip, rate)

    def load(
        self,
        name_or_path: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        quantize: str | None = None,
        trust_remote_code: bool = False,
        **options: Any,
    ) -> Any:
        """Resolve config, family, device and dtype, then let the family load the checkpoint (or take
        the one a warm process keeps, see :mod:`mmcli.keep`).

        ``quantize="int8"`` (CPU only) loads float32 weights and makes every Linear layer int8.
        """
        resolved_device = resolve_device(device)
        check_quantize(quantize, resolved_device, dtype)
        request = {"device": resolved_device, "dtype": dtype, "quantize": quantize}
        return keep.kept_or_loaded(
            self.kind,
            name_or_path,
            {**request, "trust_remote_code": trust_remote_code, **options},
            lambda: self._load(name_or_path, resolved_device, dtype, quantize, trust_remote_code, options),
        )

    def _load(
        self,
        name_or_path: str,
        resolved_device: str,
        dtype: str,
        quantize: str | None,
        trust_remote_code: bool,
        options: dict[str, Any],
    ) -> Any:
        config = checkpoint_config(name_or_path, trust_remote_code=trust_remote_code)
        family = self.family_for(config, name_or_path)
        if options.get("head") and not family.heads:
            raise UnsupportedModel(
                f"model {name_or_path!r} ({family.name}) is not a classification checkpoint: {NO_CLASSIFIER}"
            )
        if not options.get("head", True):
            options = {key: value for key, value in options.items() if key != "head"}
        try:
            loaded = family.load(
                name_or_path,
                os.path.expanduser(name_or_path),
                config,
                device=resolved_device,
                dtype=resolve_dtype("float32" if quantize else dtype, resolved_device, config),
                trust_remote_code=trust_remote_code,
                **options,
            )
        except UnsupportedModel as exc:  # a checkpoint saved for another task: name the command for it
            hint = other_command_hint(self.kind, config, name_or_path)
            if not hint:
                raise
            raise UnsupportedModel(f"{exc}.{hint}") from None
        if quantize:
            quantize_linear_layers(loaded.model)
            loaded.quantized = quantize
        return loaded

    def describe(self) -> list[dict[str, Any]]:
        """The registered families with the model types each claims."""
        return [
            {"family": f.name, "description": f.description, "model_types": sorted(f.model_types)}
            for f in self._families.values()
        ]

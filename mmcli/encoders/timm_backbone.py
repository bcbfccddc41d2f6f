"""timm image backbones: a model named as timm's hub layout has it (``timm/NAME``, or any repository or
local folder whose ``config.json`` names an ``architecture``), prepared by the transforms its
pretrained config resolves to (``timm.data.resolve_data_config`` then ``create_transform``).

The rows are the pooled features (the model made with ``num_classes=0``), as ``model(x)`` gives
them; see :mod:`mmcli.checkpoints` for how such a checkpoint is told from a transformers one.
"""

from __future__ import annotations

from typing import Any

from mmcli.checkpoints import LibraryConfig
from mmcli.encoders.base import TransformEncoder
from mmcli.errors import ModelNotFound, UnsupportedModel, install_hint
from mmcli.loading import hub_call, quiet_root_logger
from mmcli.registry import NO_CLASSIFIER


class TimmEncoder(TransformEncoder):
    family = "timm"

    def _config_dim(self) -> int | None:
        features = getattr(self.model, "num_features", None)
        return super()._config_dim() or (int(features) if isinstance(features, int) else None)


def timm_model(name: str, config: LibraryConfig, **options: Any) -> tuple[Any, Any]:
    """``(model, evaluation transform)`` of a timm checkpoint, weights required (timm would start
    from random weights without them)."""
    try:
        import timm
        import timm.data
    except ImportError:
        raise ModelNotFound(f"timm models need timm: {install_hint('timm')}") from None

    def create() -> Any:
        try:
            with quiet_root_logger():
                return timm.create_model(config.source, pretrained=True, **options)
        except RuntimeError as exc:
            raise OSError(str(exc)) from exc

    model = hub_call(name, create)
    data_config = timm.data.resolve_data_config({}, model=model)
    return model, timm.data.create_transform(**data_config, is_training=False)


def timm_labels(model: Any, config: LibraryConfig) -> list[str]:
    """The class names the checkpoint ships (``label_names`` in its config or pretrained config), else
    ImageNet's where timm recognises its classes as an ImageNet subset, else the class indices."""
    classes = int(getattr(model, "num_classes", 0) or 0)
    for source in (config.settings, config.settings.get("pretrained_cfg") or {}, getattr(model, "pretrained_cfg", {})):
        names = source.get("label_names") if isinstance(source, dict) else None
        if isinstance(names, list) and len(names) == classes:
            return [str(name) for name in names]
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(model)
    if subset:
        info = ImageNetInfo(subset)
        return [info.index_to_description(index) for index in range(classes)]
    return [str(index) for index in range(classes)]


def load_timm(
    name: str,
    path: str,
    config: LibraryConfig,
    *,
    device: str,
    dtype: Any,
    trust_remote_code: bool = False,
    head: bool = False,
) -> TimmEncoder:
    if head:
        model, transform = timm_model(name, config)
        if not getattr(model, "num_classes", 0):
            raise UnsupportedModel(f"model {name!r} is a timm backbone: {NO_CLASSIFIER}")
        labels = timm_labels(model, config)
        return TimmEncoder(name, model.to(dtype=dtype), transform, labels=labels, device=device, dtype=dtype)
    model, transform = timm_model(name, config, num_classes=0)
    return TimmEncoder(name, model.to(dtype=dtype), transform, device=device, dtype=dtype)

"""What every loaded model shares, encoder or captioner: placement, batch sizes, decoding hints, loading.

:class:`~mmcli.encoders.base.Encoder` and :class:`~mmcli.captioners.base.Captioner` add what they
do with the model; the registry (:mod:`mmcli.registry`) picks the family and quantizes afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

from mmcli import loading
from mmcli.errors import UnsupportedModel
from mmcli.media.images import decode_min_side

M = TypeVar("M", bound="LoadedModel")


class LoadedModel:
    """A checkpoint loaded for inference: on its device, in eval mode, with what prepares its inputs.

    Attributes:
        name: the model name or folder as the user gave it (recorded in each output's ``model``).
        family: the registered family that handles the checkpoint.
        model: the ``torch.nn.Module``, moved to ``device`` and in eval mode.
        processor: what turns inputs into model inputs (a processor, an image processor, ...), or ``None``.
        device: the resolved device (``"cpu"``, ``"cuda"``, ...).
        dtype: the torch dtype of the weights and of floating inputs.
        quantized: ``"int8"`` when the Linear layers were quantized, else ``None``.
        decode_min_side: the shortest side images need before preprocessing (``None``: full size);
            JPEGs are decoded at reduced scale down to it.
        clip_frames: frames per clip of a model that takes a whole clip at once (``None``: an image
            model, which sees videos frame by frame).
        clip_rate: for a model that takes a video as a series of such clips (torchvision's 3D CNNs),
            their frames per second (``None``: each video is one clip).
    """

    family: ClassVar[str] = ""
    #: Items per model call when the user gives none, on a CPU and on a GPU; each kind sets its own.
    cpu_batch_size: ClassVar[int] = 1
    gpu_batch_size: ClassVar[int] = 1
    #: Whether the processor resizes every image to one fixed size, so JPEGs may be decoded at
    #: reduced scale (see ``decode_min_side``); tiling and dynamic-resolution processors do not.
    fixed_input_size: ClassVar[bool] = True
    #: Calls the loaded model must have for this family, checked by :meth:`from_checkpoint`, and what
    #: the model is said not to be when one is missing (e.g. "a video-text model").
    required_methods: ClassVar[tuple[str, ...]] = ()
    model_kind: ClassVar[str] = ""
    quantized: str | None = None
    decode_min_side: int | None = None
    clip_frames: int | None = None
    clip_rate: float | None = None

    def __init__(self, name: str, model: Any, processor: Any = None, *, device: str, dtype: Any) -> None:
        self.name = name
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = device
        self.dtype = dtype
        if processor is not None and self.fixed_input_size:
            self.decode_min_side = decode_min_side(getattr(processor, "image_processor", processor))

    @classmethod
    def from_checkpoint(
        cls: type[M],
        name: str,
        path: str,
        model_class: str,
        *,
        device: str,
        dtype: Any,
        trust_remote_code: bool,
        allow_missing: tuple[str, ...] = (),
        **options: Any,
    ) -> M:
        """The usual layout: ``model_class`` weights (none missing but ``allow_missing``), checked for
        :attr:`required_methods`, and the processor from :meth:`load_processor`; ``options`` go to the
        constructor."""
        model = loading.from_pretrained(
            model_class, name, path, dtype=dtype, trust_remote_code=trust_remote_code, allow_missing=allow_missing
        )
        require_methods(model, name, cls.required_methods, cls.model_kind)
        processor = cls.load_processor(name, path, trust_remote_code=trust_remote_code)
        return cls(name, model, processor, device=device, dtype=dtype, **options)

    @classmethod
    def load_processor(cls, name: str, path: str, *, trust_remote_code: bool) -> Any:
        """The checkpoint's ``AutoProcessor``; families whose checkpoints ship other parts override it."""
        return loading.load_processor(name, path, trust_remote_code=trust_remote_code)

    @property
    def default_batch_size(self) -> int:
        """Items per model call when the user gives none: small on CPUs, larger on GPUs."""
        return self.gpu_batch_size if self.device.startswith("cuda") else self.cpu_batch_size

    def to_device(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Processor outputs on the model's device, floating ones in its dtype."""
        return loading.move_to(inputs, self.device, self.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device!r}, dtype={self.dtype})"


def require_methods(model: Any, name: str, methods: Sequence[str], kind: str) -> None:
    """Refuse a loaded model that lacks one of its family's calls, naming what it is not."""
    for method in methods:
        if not hasattr(model, method):
            raise UnsupportedModel(f"model {name!r} ({type(model).__name__}) has no {method}(); it is not {kind}")

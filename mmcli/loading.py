"""Resolving model names, devices and dtypes; turning hub failures into actionable errors.

Shared by every model family (encoders now, captioners later) so they all load checkpoints the
same way: Hugging Face id or local ``save_pretrained`` folder, through ``from_pretrained``.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from mmcli.errors import ModelNotFound, UnsupportedModel, UsageError, option

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "float16", "bfloat16")

T = TypeVar("T")


def resolve_device(device: str = "auto") -> str:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; an explicit device must exist."""
    import torch

    if device not in DEVICES and not device.startswith("cuda:"):
        raise UsageError(f"unknown device {device!r}; choose from {', '.join(DEVICES)}")
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but no CUDA GPU is available; use --device cpu")
    if device == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps was asked for, but Apple MPS is not available; use --device cpu")
    return device


def resolve_dtype(dtype: str, device: str, config: Any = None) -> Any:
    """The torch dtype for ``dtype`` on ``device``.

    ``auto`` picks the fastest numerics that keep embeddings within cosine 0.9999 of float32:
    on a CPU, bfloat16 where the CPU multiplies it natively (AVX-512 BF16, AMX, Arm BF16), else
    float32 (emulated bfloat16 is many times slower, and float16 matrix products on a CPU fall back
    to a slow kernel); on a GPU, float16, or bfloat16 for checkpoints released in bfloat16 (their
    activations may overflow float16) where the GPU supports it.
    """
    import torch

    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        if _released_in_bfloat16(config) and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16
    if device == "mps":
        return torch.float16
    return torch.bfloat16 if native_bf16_cpu() else torch.float32


def _released_in_bfloat16(config: Any) -> bool:
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return str(stored).replace("torch.", "") == "bfloat16"


@functools.cache
def native_bf16_cpu() -> bool:
    """Whether this CPU has bfloat16 matrix instructions, from the kernel's CPU flags (Linux).

    Elsewhere the answer is no, which keeps ``auto`` at float32: slower at worst, never wrong.
    """
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return bool(set(line.partition(":")[2].split()) & _BF16_CPU_FLAGS)
    except OSError:
        pass
    return False


CPUINFO = "/proc/cpuinfo"
_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
QUANTIZATIONS = ("int8",)


def check_quantize(quantize: str | None, device: str, dtype: str) -> None:
    """``--quantize`` is a CPU option on float32 weights; say so before any model is loaded."""
    if quantize is None:
        return
    if quantize not in QUANTIZATIONS:
        raise UsageError(f"unknown quantization {quantize!r}; choose from {', '.join(QUANTIZATIONS)}")
    if device != "cpu":
        raise UsageError(f"--quantize {quantize} runs on the CPU only; on a GPU use --dtype float16 or bfloat16")
    if dtype not in ("auto", "float32"):
        raise UsageError(f"--quantize {quantize} quantizes float32 weights; leave --dtype at auto or float32")


def quantize_linear_layers(model: Any) -> Any:
    """Dynamic int8 quantization of every ``nn.Linear`` (weights int8, activations quantized per
    batch): the one CPU route to roughly 1.5x float32 speed without bfloat16 hardware, at a cosine of
    about 0.9995 to float32 embeddings, which is why it is an explicit choice, never ``auto``."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao announces its future move to torchao on every call
        try:
            from torch.ao.quantization import quantize_dynamic
        except ImportError:  # pragma: no cover - depends on the torch release
            raise UsageError("this torch release has no dynamic quantization (torch.ao.quantization)") from None
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else is meant as a local folder."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name or os.path.isdir(name)


def hub_call(name: str, load: Callable[[], T], *, what: str = "model") -> T:
    """Run a ``from_pretrained`` call, translating its failures into :class:`ModelNotFound`."""
    try:
        return load()
    except OSError as exc:
        raise ModelNotFound(_explain_missing(name, exc, what)) from None
    except ValueError as exc:
        text = str(exc)
        if "trust_remote_code" in text:
            raise ModelNotFound(
                f"{what} {name!r} runs its own code from the hub; rerun with --trust-remote-code "
                "if you trust its authors"
            ) from None
        if "Unrecognized model" in text:
            raise ModelNotFound(
                f"{name!r} is not a Hugging Face checkpoint: its config.json is missing or has no model_type"
            ) from None
        if "does not recognize this architecture" in text:
            raise UnsupportedModel(
                f"{what} {name!r} has an architecture this transformers {_transformers_version()} does not know; "
                "upgrade it (pip install -U transformers) or pass --trust-remote-code if the model ships its code"
            ) from None
        raise


def from_pretrained(
    cls: Any, name: str, path: str, *, what: str = "model", allow_missing: tuple[str, ...] | None = None, **kwargs: Any
) -> Any:
    """``cls.from_pretrained(path, **kwargs)``; ``cls`` may be a transformers class name such as ``"AutoModel"``.

    With ``allow_missing`` (substrings of parameter names that may be absent, such as an unused
    pooler), a checkpoint lacking any other weight is refused: transformers would initialise those
    weights at random and the outputs would be silently meaningless, which happens when a checkpoint
    trained for one task is loaded for another.
    """
    if isinstance(cls, str):
        import transformers

        cls = getattr(transformers, cls)
    if allow_missing is None:
        return hub_call(name, lambda: cls.from_pretrained(path, **kwargs), what=what)
    model, info = hub_call(name, lambda: cls.from_pretrained(path, output_loading_info=True, **kwargs), what=what)
    missing = [key for key in info.get("missing_keys", ()) if not any(part in key for part in allow_missing)]
    if missing:
        saved_as = ", ".join(getattr(model.config, "architectures", None) or ["an unknown architecture"])
        raise UnsupportedModel(
            f"{what} {name!r} lacks {len(missing)} weights that {type(model).__name__} needs (e.g. {missing[0]}); "
            f"it was saved as {saved_as}, for another task. Choose a checkpoint made for this command"
        )
    return model


@contextlib.contextmanager
def quiet_root_logger() -> Iterator[None]:
    """Silence warnings logged on the root logger meanwhile (open_clip and timm log there); what goes
    wrong is raised, and said once, by mmcli."""
    import logging

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def load_processor(name: str, path: str, *, trust_remote_code: bool = False) -> Any:
    """The checkpoint's ``AutoProcessor``; a missing one is reported as the model's processor."""
    return from_pretrained("AutoProcessor", name, path, what="processor of model", trust_remote_code=trust_remote_code)


def move_to(inputs: Any, device: str, dtype: Any) -> dict[str, Any]:
    """Move a processor's tensors to ``device``; floating ones take the model's ``dtype``.

    On a GPU, tensors travel through pinned memory without blocking, and are cast there, so the
    copy overlaps the host's next work and the narrower dtype is made on the faster side.
    """
    import torch

    to_gpu = device.startswith("cuda")
    moved = {}
    for key, value in dict(inputs).items():
        if isinstance(value, torch.Tensor):
            target = dtype if value.is_floating_point() else None
            if to_gpu and value.device.type == "cpu":
                value = value.pin_memory().to(device, non_blocking=True)
            value = value.to(device, dtype=target)
        moved[key] = value
    return moved


_configs: dict[tuple[Any, ...], Any] = {}  # read once per command: traits first, then the load


def load_config(name: str, *, trust_remote_code: bool = False, read: Callable[[str, bool], Any] | None = None) -> Any:
    """The model's config (which decides the family), with errors that say what to do; read once per
    process (a copy each time, so a loader that changes its config changes no other caller's).
    ``read(name, trust_remote_code)`` reads it (default :func:`read_config`, transformers'
    ``AutoConfig``); each reader's results are kept apart."""
    import copy

    read = read or read_config
    key = (read, os.getcwd(), name, trust_remote_code, _stamp(os.path.join(os.path.expanduser(name), "config.json")))
    if key not in _configs:
        _configs[key] = read(name, trust_remote_code)
    return copy.deepcopy(_configs[key])


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


def forget_configs() -> None:
    """Read configs afresh from now on (a warm process's command is a new process)."""
    _configs.clear()


def read_config(name: str, trust_remote_code: bool) -> Any:
    """A transformers config through ``AutoConfig``, a missing folder or an unreachable hub said plainly."""
    if looks_like_path(name):
        if not os.path.exists(os.path.expanduser(name)):
            raise ModelNotFound(f"model folder {name!r} does not exist")
    else:
        offline_unless_hub_answers()
    from transformers import AutoConfig

    path = os.path.expanduser(name)
    return hub_call(name, lambda: AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code))


HUB_PROBE_TIMEOUT = 2.0  # seconds; a hub that does not accept a connection by then is taken as unreachable
_hub_unreachable: str | None = None  # the endpoint found unreachable, once it was


def offline_unless_hub_answers() -> None:
    """Switch huggingface_hub to offline mode for this process if its endpoint (or the proxy to it)
    does not accept a TCP connection within :data:`HUB_PROBE_TIMEOUT`.

    Without this, a machine with no network spends about 30 s in the hub client's retries before
    the cache is consulted; offline, a cached model loads at once and a missing one fails at once.
    The probe is made once per process, and never when ``HF_HUB_OFFLINE`` is already set.
    """
    global _hub_unreachable
    from huggingface_hub import constants

    if _hub_unreachable is not None or _offline_by_environment() or constants.HF_HUB_OFFLINE:
        return
    if not _accepts_connection(constants.ENDPOINT, HUB_PROBE_TIMEOUT):
        _hub_unreachable = constants.ENDPOINT
        constants.HF_HUB_OFFLINE = True  # read at every call by huggingface_hub and transformers


def _accepts_connection(url: str, timeout: float) -> bool:
    """Whether ``url``'s host (or the proxy for it) accepts a TCP connection within ``timeout`` seconds,
    name resolution included (it runs in a thread, since the resolver itself takes no timeout)."""
    import socket
    import threading
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    if host is None:
        return True  # not a URL we can judge: leave it to the hub client
    proxy = urllib.request.getproxies().get(parts.scheme) or urllib.request.getproxies().get("all")
    if proxy and not urllib.request.proxy_bypass(host):
        proxied = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if proxied.hostname is None:
            return True
        host, port = proxied.hostname, proxied.port or 80
    answered = threading.Event()

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                answered.set()
        except OSError:
            pass

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout)
    return answered.is_set()


def _offline_by_environment() -> bool:
    return any(
        os.environ.get(variable, "").lower() in ("1", "true", "yes", "on")
        for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def _explain_missing(name: str, exc: Exception, what: str) -> str:
    text = str(exc)
    if os.path.isdir(os.path.expanduser(name)):
        return f"{what} folder {name!r} is not a usable checkpoint: {text.splitlines()[0]}"
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if "offline" in text.lower() or "couldn't connect" in text.lower() or offline or _hub_unreachable:
        why = " (HF_HUB_OFFLINE is set)" if offline else ""
        if _hub_unreachable and not offline:
            why = f" ({_hub_unreachable} did not answer)"
        return (
            f"{what} {name!r} is not in the Hugging Face cache and the hub cannot be reached{why}. "
            f"Download it once with network (`hf download {name}`), point HF_HOME at a cache that has it, "
            f"or pass a local folder ({option('model', 'PATH')})"
        )
    if "not a valid model identifier" in text or "Repository Not Found" in text or "404" in text:
        return (
            f"no {what} named {name!r} on the Hugging Face hub; check the spelling "
            "(or log in with `hf auth login` for a private or gated model)"
        )
    return f"cannot load {what} {name!r}: {text.splitlines()[0] if text else type(exc).__name__}"

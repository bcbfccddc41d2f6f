"""Model families are declared, and their code imported only when one of their models loads: the
refusals that need no model import no torch, and deciding on a family imports no family's code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import atexit, sys
atexit.register(lambda: print("MODULES", *sorted(m for m in sys.modules if m == "torch" or m.startswith(
    ("mmcli.encoders.", "mmcli.captioners.")) and not m.endswith((".families", ".registry", ".options"))),
    file=sys.stderr))
sys.argv = ["mmcli", *sys.argv[1:]]
from mmcli.cli import main
main()
"""


def run_probe(*args: object) -> tuple[int, str, list[str]]:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True,
                          env=environment, timeout=120)  # fmt: skip
    modules = next(line for line in done.stderr.splitlines() if line.startswith("MODULES")).split()[1:]
    return done.returncode, done.stderr, modules


@pytest.mark.parametrize(
    "args",
    [
        ["caption", "nosuch.jpg"],
        ["extract-features", "nosuch.jpg", "-o", "nofolder/set.npy"],
        ["classify", "nosuch.jpg", "--labels", "a,b", "-o", "nofolder/labels.jsonl"],
        ["transcribe", "nosuch.wav", "-o", "nofolder/talk.jsonl"],
        ["extract-features", "photo.jpg", "--window", "2"],
    ],
    ids=["caption missing input", "extract unwritable", "classify unwritable", "transcribe unwritable", "bad flag"],
)
def test_refusals_that_need_no_model_import_no_torch(args, tmp_path):
    code, stderr, modules = run_probe(*args)
    assert code == 2 and "error" in stderr.lower(), stderr
    assert modules == [], modules  # neither torch nor any family's code


def test_deciding_a_family_imports_no_familys_code(tiny_models):
    code = (
        "import sys\n"
        "from mmcli.encoders import model_traits\n"
        "from mmcli.captioners import CAPTIONERS\n"
        "from mmcli.loading import load_config\n"
        f"traits = model_traits({str(tiny_models['clap'])!r})\n"
        f"family = CAPTIONERS.family_for(load_config({str(tiny_models['blip'])!r}))\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('mmcli.encoders.', 'mmcli.captioners.'))"
        " and not m.endswith(('.families', '.registry', '.options')))\n"
        "print(traits.reads, family.name, loaded)\n"
    )
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["audio", "blip", "[]"], done.stdout


def test_a_declared_family_loads_through_its_named_loader(tiny_models):
    from mmcli.captioners import load_captioner
    from mmcli.encoders import load_encoder

    assert type(load_encoder(str(tiny_models["clap"]), device="cpu")).__module__ == "mmcli.encoders.audio"
    assert type(load_captioner(str(tiny_models["blip"]), device="cpu")).__module__ == "mmcli.captioners.blip"


def test_a_model_command_reads_its_config_once(run_mmcli, tiny_models, photos, tmp_path, monkeypatch):
    """extract-features asks the config what the model reads (before any input is decoded) and loads the
    model from it: one read of config.json for both."""
    from mmcli import loading

    reads = []
    from mmcli import checkpoints

    read = loading.read_config
    monkeypatch.setattr(loading, "read_config", lambda *args: reads.append(args) or read(*args))
    looked = []  # whether another library loads it (open_clip, timm) is asked once too
    library = checkpoints.library_config
    monkeypatch.setattr(checkpoints, "library_config", lambda name: looked.append(name) or library(name))
    model = str(tiny_models["clip"])
    result = run_mmcli("extract-features", photos, "--model", model, "-o", tmp_path / "set.npy", "-q")
    assert result.returncode == 0, result.stderr
    assert reads == [(model, False)] and looked == [model]

"""Nothing an input names is run or expanded: paths from JSONL are opened as given, and a checkpoint's
own code runs only with --trust-remote-code."""

from __future__ import annotations

import json
import shutil

import numpy as np


def test_paths_from_jsonl_are_opened_as_given(run_mmcli, tiny_models, photos, tmp_path):
    work = tmp_path / "work"
    home = tmp_path / "home"
    work.mkdir()
    home.mkdir()
    photo = sorted(photos.glob("*.jpg"))[0]
    shutil.copy(photo, work / "$HOME.jpg")  # a file really named so
    shutil.copy(photo, home / "inside-home.jpg")  # what ~ or $HOME expansion would reach
    names = ["$HOME.jpg", "~/inside-home.jpg", "$HOME/inside-home.jpg", "$(touch ran).jpg", "`touch ran`.jpg"]
    lines = "".join(json.dumps({"path": name}) + "\n" for name in names)
    out = work / "set.npy"
    result = run_mmcli(
        "extract-features",
        "-",
        "-o",
        out,
        "--model",
        tiny_models["clip"],
        input=lines,
        cwd=work,
        env={"HOME": str(home)},
    )
    assert result.returncode == 1, result.stderr
    rows = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    assert [row["source"] for row in rows] == ["$HOME.jpg"]
    errors = {
        e["source"]: e["error"] for e in map(json.loads, out.with_suffix(".errors.jsonl").read_text().splitlines())
    }
    assert sorted(errors) == sorted(names[1:]) and all("no such file" in e for e in errors.values()), errors
    assert not (work / "ran").exists() and not (tmp_path / "ran").exists()
    assert np.load(out, allow_pickle=False).shape[0] == 1


REMOTE_CONFIG = """
import pathlib
pathlib.Path({marker!r}).write_text("yes")  # transformers imports a copy of this file, from its own cache
from transformers import PretrainedConfig
class ShippedConfig(PretrainedConfig):
    model_type = "shipped-with-code"
"""


def test_a_checkpoint_with_its_own_code_is_refused_without_trust_remote_code(run_mmcli_process, photos, tmp_path):
    checkpoint = tmp_path / "shipped"
    checkpoint.mkdir()
    config = {"model_type": "shipped-with-code", "auto_map": {"AutoConfig": "configuration_shipped.ShippedConfig"}}
    (checkpoint / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "code-ran"
    (checkpoint / "configuration_shipped.py").write_text(REMOTE_CONFIG.format(marker=str(marker)))
    photo = sorted(photos.glob("*.jpg"))[0]

    # Fresh processes: transformers reads HF_MODULES_CACHE when it is imported, and the trusted run imports
    # the checkpoint's code, which must not stay in the test session's interpreter.
    cache = {"HF_MODULES_CACHE": str(tmp_path / "modules")}  # where transformers copies a checkpoint's code
    refused = run_mmcli_process("extract-features", photo, "-o", tmp_path / "a.npy", "--model", checkpoint, env=cache)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert "--trust-remote-code" in refused.stderr
    assert not marker.exists(), "the checkpoint's code ran without --trust-remote-code"

    # With the flag, its code is what decides the config (and this toy model is then no known family).
    trusted = run_mmcli_process(
        "extract-features", photo, "-o", tmp_path / "b.npy", "--model", checkpoint, "--trust-remote-code"
    )
    assert marker.exists()
    assert trusted.returncode == 2 and "Traceback" not in trusted.stderr, trusted.stderr
    assert not (tmp_path / "b.npy").exists()

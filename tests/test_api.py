"""The runs as library calls: what a Python user imports from mmcli gets what the command line gets."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import contextmanager, nullcontext

import numpy as np
import pytest

import mmcli
from mmcli.output.failures import StoppedAtItem
from mmcli.output.feature_set import read_feature_set
from mmcli.reporting import Reporter


class Recorder(Reporter):
    """Keeps what a run reports, to check that the library tells its caller without printing."""

    def __init__(self):
        self.notes, self.skipped_items, self.loaded, self.progressed = [], [], [], []

    def note(self, message):
        self.notes.append(message)

    def skipped(self, item, error):
        self.skipped_items.append((item.source, error))

    def loading(self, model):
        self.loaded.append(model)
        return nullcontext()

    @contextmanager
    def progress(self, total, *, unit, desc):
        recorder = self

        class Counter:
            def update(self, n=1):
                recorder.progressed.append((desc, total, n))

        yield Counter()


def test_the_public_api_is_listed_resolves_and_imports_nothing_heavy():
    code = (
        "import sys, mmcli; print('extract_features' in dir(mmcli), 'search_set' in dir(mmcli), 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "True", "False"]
    for name in mmcli.__all__:
        assert getattr(mmcli, name) is not None, name
    with pytest.raises(AttributeError):
        mmcli.no_such_name  # noqa: B018


def test_extract_features_call_equals_the_command_and_reports_without_printing(
    tiny_models, photos, tmp_path, run_mmcli, capsys
):
    (photos_copy := tmp_path / "photos").mkdir()
    for photo in sorted(photos.iterdir()):
        (photos_copy / photo.name).write_bytes(photo.read_bytes())
    (photos_copy / "broken.jpg").write_bytes(b"not a jpeg")
    recorder = Recorder()
    result = mmcli.extract_features(
        [str(photos_copy)], tmp_path / "api.npy", model=str(tiny_models["clip"]), exact_decode=True, reporter=recorder
    )  # exact_decode: as the suite runs the command (MMCLI_EXACT_DECODE)
    printed = capsys.readouterr()  # mmcli printed nothing (transformers may draw its own weight-loading bar)
    assert printed.out == "" and "mmcli" not in printed.err and "broken.jpg" not in printed.err
    assert (result.rows, result.stats.failed) == (4, 1)
    assert recorder.loaded == [str(tiny_models["clip"])]
    assert [source for source, _ in recorder.skipped_items] == [str(photos_copy / "broken.jpg")]
    assert sum(n for desc, total, n in recorder.progressed if desc == "embedding") == 5
    assert json.loads(result.errors.read_text())["source"] == str(photos_copy / "broken.jpg")

    cli = run_mmcli("extract-features", photos_copy, "-o", tmp_path / "cli.npy", "--model", tiny_models["clip"])
    assert cli.returncode == 1, cli.stderr
    api, command = read_feature_set(tmp_path / "api.npy"), read_feature_set(tmp_path / "cli.npy")
    assert api.records == command.records
    np.testing.assert_array_equal(np.asarray(api.vectors), np.asarray(command.vectors))

    with pytest.raises(StoppedAtItem, match=r"on_error='fail'"):  # a Python caller is told the parameter
        mmcli.extract_features([str(photos_copy)], tmp_path / "stop.npy", model=str(tiny_models["clip"]),
                               on_error="fail")  # fmt: skip
    assert not (tmp_path / "stop.npy").exists()


def test_caption_files_returns_records_without_an_output(tiny_models, photos):
    recorder = Recorder()
    result = mmcli.caption_files([str(photos)], model=str(tiny_models["blip"]), reporter=recorder)
    assert result.output is None and result.images == 4 and result.stats.failed == 0
    assert [record["id"] for record in result.records] == sorted(str(p) for p in photos.iterdir())
    assert all(isinstance(record["caption"], str) and record["caption"] for record in result.records)
    again = mmcli.caption_files([str(photos)], model=str(tiny_models["blip"]))
    assert again.records == result.records  # greedy decoding: the same captions

"""Interrupted runs resume: kill -9 partway, rerun the same command, get the uninterrupted output.

The interrupted runs are the installed executable in a subprocess (a signal ends a process), and so are
the runs whose output is compared with theirs byte for byte (a process of its own, with torch's default
threads, as the killed run had); reruns checked otherwise are in-process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from PIL import Image


def extract(mmcli_exe, album, out, model, *extra):
    return [mmcli_exe, "extract-features", str(album), "-o", str(out), "--model", str(model), "-b", "8", "-q", *extra]


def committed(state_file):
    try:
        return json.loads(state_file.read_text())["consumed"]
    except (OSError, ValueError):
        return 0


def started_and_partway(command, state_file, at_least, env=None, **popen):
    """``command`` started, once its journal has committed ``at_least`` items (it must still be running)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"} if env is None else env
    process = subprocess.Popen(command, env=env, **popen)
    deadline = time.monotonic() + 120
    while committed(state_file) < at_least and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be interrupted"
    return process


def kill_partway(command, state_file, at_least, env=None):
    process = started_and_partway(command, state_file, at_least, env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)  # fmt: skip
    process.send_signal(signal.SIGKILL)
    process.wait()
    return committed(state_file)


def interrupt_partway(command, state_file, at_least, env=None) -> str:
    """Ctrl-C to ``command`` once it committed ``at_least`` items; its stderr, checked to name the kept
    progress in one message and end with status 130."""
    process = started_and_partway(command, state_file, at_least, env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)  # fmt: skip
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert f"progress so far is kept in {state_file.parent}: run the same command to resume" in stderr, stderr
    assert "Traceback" not in stderr
    return stderr


def test_extract_features_killed_and_rerun_equals_an_uninterrupted_run(mmcli_exe, run_mmcli_process, tiny_models,
                                                                        album, tmp_path):  # fmt: skip
    model = tiny_models["clip"]
    whole = run_mmcli_process(*extract(mmcli_exe, album, tmp_path / "whole.npy", model)[1:])
    assert whole.returncode == 1, whole.stderr  # the corrupt file

    out = tmp_path / "resumed.npy"
    done_before = kill_partway(extract(mmcli_exe, album, out, model), tmp_path / "resumed.partial" / "state.json", 40)
    assert 40 <= done_before < 301
    assert not out.exists() and not (tmp_path / "resumed.jsonl").exists()  # no output that looks finished

    rerun = run_mmcli_process(*extract(mmcli_exe, album, out, model)[1:-1])
    assert rerun.returncode == 1, rerun.stderr
    assert f"resuming: {done_before} items" in rerun.stderr
    np.testing.assert_array_equal(np.load(out), np.load(tmp_path / "whole.npy"))
    assert (tmp_path / "resumed.jsonl").read_text() == (tmp_path / "whole.jsonl").read_text()
    assert (tmp_path / "resumed.errors.jsonl").read_text() == (tmp_path / "whole.errors.jsonl").read_text()
    assert not (tmp_path / "resumed.partial").exists()


def test_other_settings_are_refused_and_restart_starts_over(mmcli_exe, run_mmcli, tiny_models, album, tmp_path):
    model = tiny_models["clip"]
    out = tmp_path / "out.npy"
    kill_partway(extract(mmcli_exe, album, out, model), tmp_path / "out.partial" / "state.json", 16)
    other = run_mmcli(*extract(mmcli_exe, album, out, model)[1:], "--no-normalize")
    assert other.returncode == 2 and "--restart" in other.stderr and not out.exists()
    restarted = run_mmcli(*extract(mmcli_exe, album, out, model)[1:-1], "--restart")
    assert restarted.returncode == 1 and "resuming" not in restarted.stderr
    assert np.load(out).shape[0] == 300


def test_caption_killed_and_rerun_equals_an_uninterrupted_run(mmcli_exe, run_mmcli_process, tiny_models, album,
                                                              tmp_path):  # fmt: skip
    def command(out):
        return [mmcli_exe, "caption", str(album), "-o", str(out), "--model", str(tiny_models["blip"]), "-b", "8",
                "--min-new-tokens", "4", "--max-new-tokens", "4", "-q"]  # fmt: skip

    whole = run_mmcli_process(*command(tmp_path / "whole.jsonl")[1:])
    assert whole.returncode == 1, whole.stderr
    out = tmp_path / "resumed.jsonl"
    done_before = kill_partway(command(out), tmp_path / "resumed.partial" / "state.json", 40)
    assert not out.exists()
    rerun = run_mmcli_process(*command(out)[1:-1])
    assert rerun.returncode == 1, rerun.stderr  # the corrupt file counts, before or after the kill
    assert f"resuming: {done_before} images" in rerun.stderr and "300 images; 1 failed" in rerun.stderr
    assert out.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    assert (tmp_path / "resumed.files.jsonl").read_bytes() == (tmp_path / "whole.files.jsonl").read_bytes()
    assert not (tmp_path / "resumed.partial").exists()


def test_ctrl_c_says_the_progress_is_kept_and_a_rerun_finishes(mmcli_exe, run_mmcli, tiny_models, album, tmp_path):
    model = tiny_models["clip"]
    out = tmp_path / "out.npy"
    command = extract(mmcli_exe, album, out, model)[:-1]  # not quiet: the message is what is tested
    interrupt_partway(command, tmp_path / "out.partial" / "state.json", 16)
    assert not out.exists()
    rerun = run_mmcli(*command[1:])
    assert rerun.returncode == 1 and "resuming: " in rerun.stderr, rerun.stderr
    assert np.load(out).shape[0] == 300


class _InterruptingReporter:
    """A reporter whose progress bar raises KeyboardInterrupt at its ``at``-th update, as Ctrl-C would."""

    def __init__(self, at):
        from mmcli.reporting import Reporter

        self.at, self.base = at, Reporter()

    def __getattr__(self, name):
        return getattr(self.base, name)

    def progress(self, total, *, unit, desc):
        from contextlib import contextmanager

        at = self.at

        class Bar:
            updates = 0

            def update(self, n=1):
                Bar.updates += 1
                if Bar.updates == at:
                    raise KeyboardInterrupt

        @contextmanager
        def bar():
            yield Bar()

        return bar()


def test_a_resumed_run_with_a_video_skips_only_the_inputs_it_finished(tiny_models, tmp_path):
    """The journal counts input items: a video of four sampled frames is one input, so a rerun after a
    checkpoint past the video skips exactly the inputs done (counting frames would skip later images)."""
    from test_video_extract import scenes
    from test_video_media import write_video

    from mmcli import extract_features
    from mmcli.output.feature_set import read_feature_set

    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ["a0", "a1", "a2", "c0", "c1", "c2", "c3", "c4", "c5"]:
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / f"{name}.jpg")
    write_video(folder / "b.mp4", scenes, fps=10, duration=4.0)
    options = {"model": str(tiny_models["clip"]), "batch_size": 2, "workers": 0}
    whole = read_feature_set(extract_features([folder], tmp_path / "whole.npy", **options).output)
    out = tmp_path / "out.npy"
    with pytest.raises(KeyboardInterrupt):
        extract_features([folder], out, reporter=_InterruptingReporter(8), **options)
    consumed = committed(tmp_path / "out.partial" / "state.json")
    assert 4 <= consumed < 10  # past the video (the fourth input), short of the end
    resumed = read_feature_set(extract_features([folder], out, **options).output)
    assert resumed.ids == whole.ids and len(whole) == 10
    np.testing.assert_allclose(resumed.vectors, whole.vectors, atol=1e-6)


def test_a_run_stopped_before_its_first_commit_leaves_no_journal(tiny_models, album, tmp_path):
    """Nothing committed is nothing to resume: the journal goes with the run, rather than left beside the
    output for a rerun to 'resume' from nothing. One stopped later keeps its committed progress."""
    from mmcli import extract_features

    options = {"model": str(tiny_models["clip"]), "batch_size": 4, "workers": 0}
    with pytest.raises(KeyboardInterrupt):
        extract_features([album], tmp_path / "early.npy", reporter=_InterruptingReporter(1), **options)
    assert not (tmp_path / "early.partial").exists() and not (tmp_path / "early.npy").exists()
    with pytest.raises(KeyboardInterrupt):
        extract_features([album], tmp_path / "late.npy", reporter=_InterruptingReporter(6), **options)
    assert committed(tmp_path / "late.partial" / "state.json") >= 4


def test_a_resume_with_other_settings_names_each_setting_that_differs(tmp_path):
    from mmcli.errors import UsageError, options_as_flags
    from mmcli.output.journal import Journal

    settings = {"model": "clip", "batch_size": 32, "video": {"pool": "mean", "fps": 1.0}}
    journal = Journal(tmp_path / "out.partial", settings)
    journal.commit(consumed=1, rows=1, dim=4)
    journal.close()
    changed = {"model": "clip", "batch_size": 8, "video": {"pool": "max", "fps": 1.0}}
    with options_as_flags(), pytest.raises(UsageError) as refused:
        Journal(tmp_path / "out.partial", changed)
    assert "(--batch-size was 32, now 8; video.pool was 'mean', now 'max')" in str(refused.value)
    assert "--restart" in str(refused.value)
    Journal(tmp_path / "out.partial", settings).close()  # the same settings resume

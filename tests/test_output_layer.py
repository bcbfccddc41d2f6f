"""The output layer: one run per output at a time (a lock, refused at once), write failures as one line,
and classify as a resumable, updatable run like the others.

Concurrent and killed runs are the installed executable in subprocesses (a lock is a process's, and a
signal ends one); the outputs they leave are compared byte for byte with a lone run's, made the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmcli.output.destination import lock_path


@pytest.fixture(scope="module")
def album(tmp_path_factory):
    """120 small generated photos: enough batches that a run is still going after its first commit."""
    folder = tmp_path_factory.mktemp("album")
    rng = np.random.default_rng(1)
    for index in range(120):
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(folder / f"img{index:03d}.jpg")
    return folder


def command(kind, mmcli_exe, tiny_models, album, out):
    model = tiny_models["blip"] if kind == "caption" else tiny_models["clip"]
    verb = {"caption": "caption", "classify": "classify"}.get(kind, "extract-features")
    extra = {"caption": ["--max-new-tokens", "3"], "classify": ["--labels", "cat,dog,rocket"],
             "sharded": ["--shard-rows", "16"]}.get(kind, [])  # fmt: skip
    return [mmcli_exe, verb, str(album), "-o", str(out), "--model", str(model), "-b", "4", *extra, "-q"]


OUTPUTS = {"features": "set.npy", "sharded": "set/", "caption": "caps.jsonl", "classify": "labels.jsonl"}


def target(folder: Path, kind: str) -> str:
    """Where ``kind`` is written in ``folder``: a sharded set's name keeps its ``/``."""
    name = OUTPUTS[kind]
    return f"{folder / name.rstrip('/')}/" if name.endswith("/") else str(folder / name)


def progress(out: str | Path) -> int:
    """Input items the run writing ``out`` has committed: its journal's, or its finished parts'."""
    if str(out).endswith("/"):
        out = Path(out)
        try:
            parts = json.loads((out / "index.json").read_text())["parts"]
            return int(parts[-1]["consumed"]) if parts else 0
        except (OSError, ValueError, KeyError):
            return 0
    out = Path(out)
    try:
        return json.loads((out.with_name(out.stem + ".partial") / "state.json").read_text())["consumed"]
    except (OSError, ValueError):
        return 0


def environment():
    return {**os.environ, "HF_HUB_OFFLINE": "1"}


def start(args):
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment())


def wait_for_commit(process, out, at_least=1):
    deadline = time.monotonic() + 180
    while progress(out) < at_least and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before its first commit was seen"


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_refused_as_busy(result_code, stderr, out):
    assert result_code == 2, stderr
    assert "being written by another mmcli run" in stderr and str(out).rstrip("/") in stderr, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr


@pytest.mark.parametrize("kind", ["features", "sharded", "caption"])
def test_a_second_run_to_the_same_output_is_refused_at_once_and_the_first_is_untouched(
    kind, mmcli_exe, run_mmcli_process, tiny_models, album, tmp_path
):
    (tmp_path / "lone").mkdir()
    (tmp_path / "busy").mkdir()
    lone = run_mmcli_process(*command(kind, mmcli_exe, tiny_models, album, target(tmp_path / "lone", kind))[1:])
    assert lone.returncode == 0, lone.stderr
    out = target(tmp_path / "busy", kind)
    first = start(command(kind, mmcli_exe, tiny_models, album, out))
    wait_for_commit(first, out)  # after the first's first commit, as an overlapping cron job would be
    first.send_signal(signal.SIGSTOP)  # held mid-run, however fast this machine is, while the second one tries
    try:
        second = run_mmcli_process(*command(kind, mmcli_exe, tiny_models, album, out)[1:])
    finally:
        first.send_signal(signal.SIGCONT)
    assert_refused_as_busy(second.returncode, second.stderr, out)
    assert f"process {first.pid}" in second.stderr, second.stderr
    first.communicate(timeout=300)
    assert first.returncode == 0
    assert files_of(tmp_path / "busy") == files_of(tmp_path / "lone")  # identical, no temporary or lock left


def test_two_runs_started_a_moment_apart_leave_one_output_as_a_lone_run_would(
    mmcli_exe, run_mmcli_process, tiny_models, album, tmp_path
):
    (tmp_path / "lone").mkdir()
    (tmp_path / "race").mkdir()
    lone = run_mmcli_process(*command("features", mmcli_exe, tiny_models, album, tmp_path / "lone" / "set.npy")[1:])
    assert lone.returncode == 0, lone.stderr
    args = command("features", mmcli_exe, tiny_models, album, tmp_path / "race" / "set.npy")
    first = start(args)
    time.sleep(0.3)
    second = start(args)
    results = [(p.returncode, err) for p in (first, second) for _, err in [p.communicate(timeout=300)]]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results  # whichever took the lock first wrote; the other stopped at once
    refused = next(err for code, err in results if code == 2)
    # Refused while the other holds the lock, or (where the other finished first) as an existing output.
    assert "being written by another mmcli run" in refused or "already exists" in refused, refused
    assert "Traceback" not in refused and len(refused.strip().splitlines()) == 1, refused
    assert files_of(tmp_path / "race") == files_of(tmp_path / "lone")


def test_a_killed_run_leaves_no_lock_that_blocks_its_rerun(mmcli_exe, run_mmcli_process, tiny_models, album,
                                                          tmp_path):  # fmt: skip
    out = tmp_path / "set.npy"
    args = command("features", mmcli_exe, tiny_models, album, out)
    process = start(args)
    wait_for_commit(process, out)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert lock_path(out).exists()  # the file stays; its lock died with the process
    rerun = run_mmcli_process(*args[1:-1])
    assert rerun.returncode == 0 and "resuming:" in rerun.stderr, rerun.stderr
    assert not lock_path(out).exists()


# -- write failures -----------------------------------------------------------------------------------------

needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="mounting a small file system needs root"
)


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of its own, mounted by the test (root only) and unmounted after."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@needs_root
@pytest.mark.parametrize("kind", ["features", "sharded", "caption", "classify"])
def test_a_full_disk_is_one_line_and_the_rerun_after_freeing_space_resumes_identically(
    kind, mmcli_exe, run_mmcli_process, tiny_models, album, small_disk, tmp_path
):
    lone = run_mmcli_process(*command(kind, mmcli_exe, tiny_models, album, target(tmp_path, kind))[1:])
    assert lone.returncode == 0, lone.stderr
    out = target(small_disk, kind)
    args = command(kind, mmcli_exe, tiny_models, album, out)
    process = start(args)
    wait_for_commit(process, out, at_least=8)
    filler = small_disk / "filler"  # the disk fills up while the run goes on
    with open(filler, "wb", buffering=0) as handle, pytest.raises(OSError):  # unbuffered: nothing left to flush
        while True:
            handle.write(b"\0" * 65536)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 2, stderr
    assert "No space left on device" in stderr and out.rstrip("/") in stderr, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert "run the same command again to resume" in stderr, stderr
    filler.unlink()
    rerun = run_mmcli_process(*args[1:])
    assert rerun.returncode == 0, rerun.stderr
    made = small_disk / OUTPUTS[kind].rstrip("/") if kind == "sharded" else small_disk
    want = tmp_path / OUTPUTS[kind].rstrip("/") if kind == "sharded" else None
    if kind == "sharded":
        assert files_of(made) == files_of(want)
    else:
        names = sorted(p.name for p in small_disk.iterdir())
        assert names == sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(Path(OUTPUTS[kind]).stem)
                               and p.is_file()), names  # fmt: skip
        for name in names:
            assert (small_disk / name).read_bytes() == (tmp_path / name).read_bytes(), name


def fill(disk: Path) -> None:
    """Leave no byte free on ``disk``: big blocks, then small ones for what a big one could not take."""
    with open(disk / "filler", "wb", buffering=0) as handle:
        for block in (65536, 512, 1):
            try:
                while True:
                    handle.write(b"\0" * block)
            except OSError:
                pass


@needs_root
def test_a_full_disk_is_one_line_naming_the_output_in_every_writing_command(
    run_mmcli, tiny_models, photos, small_disk, result_files, tmp_path
):
    from audio_media import speech_like, write_wav
    from shapes_corpus import build_word_blip, write_corpus

    clip = str(tiny_models["clip"])
    assert run_mmcli("extract-features", photos, "-o", tmp_path / "set.npy", "-m", clip, "-q").returncode == 0
    shutil.copytree(tmp_path, tmp_path / "copy")
    on_disk = run_mmcli("extract-features", photos, "-o", small_disk / "indexed.npy", "-m", clip, "-q")
    assert on_disk.returncode == 0, on_disk.stderr
    speech = write_wav(tmp_path / "talk.wav", speech_like(3.0, 16000), 16000)
    pairs = write_corpus(tmp_path / "shapes", 16, seed=1)
    word_blip = build_word_blip(tmp_path / "word-blip")
    predictions, references = tmp_path / "pred.jsonl", tmp_path / "refs.jsonl"
    predictions.write_text('{"id": "a", "caption": "a cat on a mat"}\n')
    references.write_text('{"id": "a", "captions": ["a cat sits on a mat", "a cat"]}\n')
    disk = small_disk
    commands = {
        "extract-features": (["extract-features", photos, "-o", disk / "f.npy", "-m", clip], disk / "f.npy"),
        "extract-features DIR/": (["extract-features", photos, "-o", f"{disk}/parts/", "-m", clip], disk / "parts"),
        "caption": (["caption", photos, "-o", disk / "c.jsonl", "-m", tiny_models["blip"], "--max-new-tokens", "2"],
                    disk / "c.jsonl"),
        "transcribe": (["transcribe", speech, "-o", disk / "t.jsonl", "-m", tiny_models["whisper"]], disk / "t.jsonl"),
        "classify": (["classify", photos, "--labels", "a,b", "-o", disk / "l.jsonl", "-m", clip], disk / "l.jsonl"),
        "fuse": (["fuse", tmp_path / "set.npy", tmp_path / "copy" / "set.npy", "-o", disk / "fused.npy"],
                 disk / "fused.npy"),
        "retrieve": (["retrieve", "--index", tmp_path / "set.npy", "--queries", tmp_path / "set.npy",
                      "-o", disk / "hits.jsonl"], disk / "hits.jsonl"),
        "index build": (["index", "build", disk / "indexed.npy"], disk / "indexed.faiss"),
        "report": (["report", result_files / "captions.jsonl", "-o", disk / "report.html"], disk / "report.html"),
        "evaluate": (["evaluate", "captions", "--pred", predictions, "--refs", references, "--metrics", "bleu",
                      "--per-item", disk / "items.jsonl"], disk / "items.jsonl"),
        "train caption": (["train", "caption", "--train", pairs, "--model", word_blip, "-o", disk / "trained",
                           "--epochs", "1", "-b", "8"], disk / "trained"),
    }  # fmt: skip
    fill(disk)
    for name, (args, output) in commands.items():
        result = run_mmcli(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (name, result.stderr)
        assert "Traceback" not in result.stderr and len(lines) == 1, (name, result.stderr)
        assert "No space left on device" in lines[0] and str(output) in lines[0], (name, lines[0])


@pytest.fixture
def read_only_folder(small_disk):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    return small_disk


@needs_root
def test_a_read_only_destination_is_refused_before_any_work_by_every_writing_command(
    run_mmcli, tiny_models, photos, read_only_folder, result_files, tmp_path
):
    ro = read_only_folder
    clip = str(tiny_models["clip"])
    made = run_mmcli("extract-features", photos, "-o", tmp_path / "set.npy", "-m", clip, "-q")
    assert made.returncode == 0, made.stderr
    shutil.copytree(tmp_path, tmp_path / "copy")
    commands = {
        "extract-features": ["extract-features", photos, "-o", ro / "f.npy", "-m", clip],
        "extract-features DIR/": ["extract-features", photos, "-o", f"{ro}/parts/", "-m", clip],
        "caption": ["caption", photos, "-o", ro / "c.jsonl", "-m", tiny_models["blip"]],
        "transcribe": ["transcribe", photos, "-o", ro / "t.jsonl", "-m", tiny_models["whisper"]],
        "classify": ["classify", photos, "--labels", "a,b", "-o", ro / "l.jsonl", "-m", clip],
        "fuse": ["fuse", tmp_path / "set.npy", tmp_path / "copy" / "set.npy", "-o", ro / "fused.npy"],
        "retrieve": [
            "retrieve",
            "--index",
            tmp_path / "set.npy",
            "--queries",
            tmp_path / "set.npy",
            "-o",
            ro / "hits.jsonl",
        ],
        "report": ["report", result_files / "captions.jsonl", "-o", ro / "report.html"],
        "train caption": ["train", "caption", "--model", tiny_models["blip"], "--train", photos, "-o", ro / "trained"],
    }
    for name, args in commands.items():
        result = run_mmcli(*args)
        assert result.returncode == 2, (name, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert "Traceback" not in result.stderr and len(lines) == 1, (name, result.stderr)
        assert str(ro) in lines[0] and ("not writable" in lines[0] or "Read-only" in lines[0]), (name, lines[0])


@needs_root
def test_index_build_and_save_index_refuse_a_read_only_folder(run_mmcli, tiny_models, photos, small_disk):
    made = run_mmcli("extract-features", photos, "-o", small_disk / "set.npy", "-m", tiny_models["clip"], "-q")
    assert made.returncode == 0, made.stderr
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    for args in (["index", "build", small_disk / "set.npy"],
                 ["retrieve", "--index", small_disk / "set.npy", "--queries", small_disk / "set.npy", "--ann", "faiss",
                  "--save-index"]):  # fmt: skip
        result = run_mmcli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr and "not writable" in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)


# -- classify as a run ---------------------------------------------------------------------------------------


def test_classify_killed_and_rerun_equals_an_uninterrupted_run(mmcli_exe, run_mmcli_process, tiny_models, album,
                                                              tmp_path):  # fmt: skip
    whole = run_mmcli_process(*command("classify", mmcli_exe, tiny_models, album, tmp_path / "whole.jsonl")[1:])
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "resumed.jsonl"
    args = command("classify", mmcli_exe, tiny_models, album, out)
    process = start(args)
    wait_for_commit(process, out, at_least=8)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists()
    rerun = run_mmcli_process(*args[1:-1])
    assert rerun.returncode == 0 and "resuming:" in rerun.stderr, rerun.stderr
    assert out.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    assert (tmp_path / "resumed.files.jsonl").read_bytes() == (tmp_path / "whole.files.jsonl").read_bytes()


def test_classify_restart_discards_an_interrupted_runs_progress(run_mmcli, tiny_models, photos, tmp_path):
    out = tmp_path / "labels.jsonl"
    args = ["classify", photos, "--labels", "cat,dog", "-o", out, "-m", tiny_models["clip"], "-b", "2"]
    journal = tmp_path / "labels.partial"
    from mmcli.output.journal import Journal

    Journal(journal, {"command": "classify", "other": "settings"}).commit(consumed=1, rows=1, dim=None)
    refused = run_mmcli(*args)
    assert refused.returncode == 2 and "unfinished run with other settings" in refused.stderr, refused.stderr
    restarted = run_mmcli(*args, "--restart")
    assert restarted.returncode == 0, restarted.stderr
    assert "resuming" not in restarted.stderr and not journal.exists()
    assert len(out.read_text().splitlines()) == len(list(photos.iterdir()))


def test_classify_update_equals_a_fresh_run_and_classifies_only_what_changed(run_mmcli, tiny_models, photos,
                                                                             tmp_path):  # fmt: skip
    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    names = sorted(p.name for p in folder.iterdir())
    # One image a batch: a score's last digit can differ between batch compositions, and an update batches
    # only what it classifies.
    base = ["--labels", "cat,dog,rocket", "-m", tiny_models["clip"], "-b", "1"]
    out = tmp_path / "labels.jsonl"
    assert run_mmcli("classify", folder, "-o", out, *base).returncode == 0
    (folder / names[0]).unlink()  # vanished
    shutil.copy(folder / names[1], folder / "copy.png")  # new, recognised by content
    Image.fromarray(np.full((30, 30, 3), 200, np.uint8)).save(folder / names[2])  # changed
    kept = tmp_path / "kept.jsonl"
    shutil.copy(out, kept)
    shutil.copy(tmp_path / "labels.files.jsonl", tmp_path / "kept.files.jsonl")
    updated = run_mmcli("classify", folder, "-o", out, "--update", *base)
    assert updated.returncode == 0, updated.stderr
    assert "recognised by content" in updated.stderr and "1 dropped" in updated.stderr, updated.stderr
    fresh = run_mmcli("classify", folder, "-o", tmp_path / "fresh.jsonl", *base)
    assert fresh.returncode == 0, fresh.stderr
    assert out.read_text() == (tmp_path / "fresh.jsonl").read_text()
    missing = run_mmcli("classify", folder, "-o", kept, "--update", "--keep-missing", *base)
    assert missing.returncode == 0, missing.stderr
    records = [json.loads(line) for line in kept.read_text().splitlines()]
    assert records[-1]["id"] == str(photos / names[0]).replace(str(photos), str(folder))  # the vanished file's
    assert [r["id"] for r in records[:-1]] == [json.loads(line)["id"] for line in out.read_text().splitlines()]


def test_a_refused_run_touches_nothing_of_the_run_that_holds_the_output(run_mmcli, tiny_models, photos, tmp_path):
    from mmcli.output.atomic import temporary_sibling
    from mmcli.output.destination import OutputLock

    out = tmp_path / "set.npy"
    holder = OutputLock(out, str(out))
    holder.acquire()  # the run writing set.npy, midway: its temporaries are beside the output
    try:
        rows = temporary_sibling(out, ".rows")
        rows.write_bytes(b"rows written so far")
        refused = run_mmcli("extract-features", photos, "-o", out, "-m", tiny_models["clip"])
        assert refused.returncode == 2 and "being written by another mmcli run" in refused.stderr, refused.stderr
        assert f"process {os.getpid()}" in refused.stderr
        assert rows.read_bytes() == b"rows written so far"  # not swept as a dead run's leftovers
    finally:
        holder.release()
    assert not lock_path(out).exists()
    done = run_mmcli("extract-features", photos, "-o", out, "-m", tiny_models["clip"], "-q")
    assert done.returncode == 0, done.stderr
    assert not rows.exists()  # once no run holds it, a leftover temporary is swept


@pytest.mark.parametrize("command", ["fuse", "report"])
def test_writers_beyond_the_model_runs_are_refused_while_another_run_holds_their_output(
    command, run_mmcli, tiny_models, photos, result_files, tmp_path
):
    from mmcli.output.destination import OutputLock

    made = run_mmcli("extract-features", photos, "-o", tmp_path / "set.npy", "-m", tiny_models["clip"], "-q")
    assert made.returncode == 0, made.stderr
    shutil.copytree(tmp_path, tmp_path / "copy")
    out = tmp_path / ("fused.npy" if command == "fuse" else "report.html")
    args = {"fuse": ["fuse", tmp_path / "set.npy", tmp_path / "copy" / "set.npy", "-o", out],
            "report": ["report", result_files / "captions.jsonl", "-o", out]}[command]  # fmt: skip
    holder = OutputLock(out, str(out))
    holder.acquire()
    try:
        refused = run_mmcli(*args)
    finally:
        holder.release()
    assert refused.returncode == 2 and "being written by another mmcli run" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not out.exists()
    done = run_mmcli(*args)
    assert done.returncode == 0 and out.exists() and not lock_path(out).exists(), done.stderr

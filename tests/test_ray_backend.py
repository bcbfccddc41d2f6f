"""``--backend ray``: the same outputs as the local backend, computed by Ray Data on a real local cluster.

The cluster is started once for the module with ``ray start --head`` on 127.0.0.1 and stopped at the
end; runs join it with ``--ray-address``. What only the Ray path produces is observed: the note naming
the batches and the worker processes that computed them, and the actor processes themselves.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_video_extract import scenes
from test_video_media import write_video

from mmcli.output.feature_set import read_feature_set

WORKERS_NOTE = re.compile(r"ray: (\d+) inputs? in (\d+) batch(?:es)? on (\d+) workers? \(1 node\) of (.*)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A real one-node Ray cluster on 127.0.0.1 (2 CPUs), its address; stopped after the module."""
    beside = Path(sys.executable).with_name("ray")  # the environment's own, whether or not it is on PATH
    ray = str(beside) if beside.exists() else shutil.which("ray")
    assert ray, "the ray command is not installed: pip install -e '.[test]'"
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    # (a single-machine cluster: Ray's servers then listen on 127.0.0.1 only)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    # (a small object store: tiny models' batches need little, and a CI machine's memory is shared)
    start = [ray, "start", "--head", "--port", str(port), "--num-cpus", "2", "--object-store-memory", str(200 << 20),
             "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(temp)]  # fmt: skip
    started = subprocess.run(start, capture_output=True, text=True, env=env, timeout=120)
    assert started.returncode == 0, started.stderr + started.stdout
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, photos):
    """Photos, generated images, a video and a corrupt file: every kind of input item and an error."""
    folder = tmp_path_factory.mktemp("mixed")
    for path in sorted(photos.glob("*.jpg")):
        shutil.copy(path, folder / path.name)
    rng = np.random.default_rng(0)
    for index in range(10):
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(folder / f"gen{index:02d}.png")
    write_video(folder / "clip.mp4", scenes, fps=10, duration=4.0)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def ray_flags(address, workers=2):
    return ["--backend", "ray", "--ray-address", address, "--num-workers", str(workers)]


def workers_note(stderr, cluster=None):
    """(inputs, batches, workers) of the note a Ray run ends with, which names the cluster it ran on."""
    found = WORKERS_NOTE.search(stderr)
    assert found, stderr
    # Before Ray's silent start-up, the run said what it waits for.
    waiting = re.search(r"ray: (starting a Ray on this machine|connecting to the cluster at \S+)\.\.\.\n"
                        r"(?:.*\n)*?mmcli: ray: starting \d+ workers?, each loading the model", stderr)  # fmt: skip
    assert waiting and waiting.end() < found.start(), stderr
    assert waiting.group(1) == ("starting a Ray on this machine" if cluster is None else waiting.group(1)), stderr
    assert found.group(4) == (f"the cluster at {cluster}" if cluster else "a Ray started for this run"), stderr
    return tuple(int(group) for group in found.groups()[:3])


def assert_same_set(left, right):
    a, b = read_feature_set(left), read_feature_set(right)
    assert a.records == b.records and len(a) > 0
    np.testing.assert_allclose(np.asarray(a.vectors), np.asarray(b.vectors), atol=1e-5, rtol=0)


def test_extract_features_on_ray_equals_local_on_images_a_video_and_a_failure(run_mmcli, tiny_models, mixed,
                                                                             ray_cluster, tmp_path):  # fmt: skip
    common = ["extract-features", mixed, "--model", tiny_models["clip"], "-b", "3"]
    local = run_mmcli(*common, "-o", tmp_path / "local.npy")
    remote = run_mmcli(*common, "-o", tmp_path / "ray.npy", *ray_flags(ray_cluster))
    assert local.returncode == remote.returncode == 1, remote.stderr  # the corrupt file, as an error record
    assert_same_set(tmp_path / "local.npy", tmp_path / "ray.npy")
    assert (tmp_path / "ray.errors.jsonl").read_text() == (tmp_path / "local.errors.jsonl").read_text()
    records = read_feature_set(tmp_path / "ray.npy").records
    assert {"image", "video"} == {record["modality"] for record in records}
    inputs, batches, workers = workers_note(remote.stderr, ray_cluster)
    assert (inputs, batches) == (16, 6) and workers in (1, 2)  # 16 inputs in batches of 3; which actor computes
    # a batch is Ray's choice (an idle one, while the decode tasks are the slower stage)
    assert "ray:" not in local.stderr


def test_texts_and_frame_rows_on_ray_equal_local(run_mmcli, tiny_models, mixed, ray_cluster, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("a dog on the grass\na red rocket\n\na cup of coffee\nan astronaut\na cat\n")
    for name, extra in (("local", []), ("ray", ray_flags(ray_cluster, workers=1))):
        run = run_mmcli("extract-features", "--modality", "text", texts, "-o", tmp_path / f"{name}-t.npy",
                        "--model", tiny_models["clip"], "-b", "2", *extra)  # fmt: skip
        assert run.returncode == 0, run.stderr
        run = run_mmcli("extract-features", mixed / "clip.mp4", "--pool", "both", "-o", tmp_path / f"{name}-v.npy",
                        "--model", tiny_models["clip"], *extra)  # fmt: skip
        assert run.returncode == 0, run.stderr
    assert_same_set(tmp_path / "local-t.npy", tmp_path / "ray-t.npy")
    assert_same_set(tmp_path / "local-v.npy", tmp_path / "ray-v.npy")
    assert [r["modality"] for r in read_feature_set(tmp_path / "ray-v.npy").records] == ["frame"] * 4 + ["video"]
    assert workers_note(run.stderr, ray_cluster)[2] == 1


def test_caption_on_ray_equals_local(run_mmcli, tiny_models, mixed, ray_cluster, tmp_path):
    common = ["caption", mixed, "--model", tiny_models["blip"], "-b", "4", "--max-new-tokens", "6"]
    local = run_mmcli(*common, "-o", tmp_path / "local.jsonl")
    remote = run_mmcli(*common, "-o", tmp_path / "ray.jsonl", *ray_flags(ray_cluster))
    assert local.returncode == remote.returncode == 1, remote.stderr
    assert (tmp_path / "ray.jsonl").read_text() == (tmp_path / "local.jsonl").read_text()
    records = [json.loads(line) for line in (tmp_path / "ray.jsonl").read_text().splitlines()]
    assert any("summary" in r for r in records) and any("error" in r for r in records)
    assert remote.stderr.count("captioned 14 images and 1 video") == 1, remote.stderr
    inputs, batches, workers = workers_note(remote.stderr, ray_cluster)
    assert (inputs, batches) == (16, 4) and workers in (1, 2)


def _actor_processes():
    """Process ids of Ray actors running the model (Ray titles them after the actor class)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"MapBatches(ModelWorker)" in command:
                found.append(int(entry.name))
    return found


def _committed(state):
    try:
        return json.loads(state.read_text())["consumed"]
    except (OSError, ValueError, KeyError):
        return 0


@pytest.fixture(scope="module")
def album(tmp_path_factory):
    folder = tmp_path_factory.mktemp("album")
    rng = np.random.default_rng(1)
    for index in range(160):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / f"img{index:03d}.jpg")
    return folder


def test_num_workers_is_the_actor_pool_and_it_is_up_before_the_first_batch(mmcli_exe, tiny_models, album,
                                                                            ray_cluster, tmp_path):  # fmt: skip
    """Two model actors run while batches are computed: the pool Ray Data starts for ``--num-workers 2``
    is waited for whole before any batch goes to it."""
    out = tmp_path / "ray.npy"
    command = [mmcli_exe, "extract-features", str(album), "--model", tiny_models["clip"], "-b", "2", "-o", str(out),
               *ray_flags(ray_cluster)]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 180
    seen = []  # the actor processes found once the first batch is committed, then until the end
    while process.poll() is None and time.monotonic() < deadline:
        if _committed(tmp_path / "ray.partial" / "state.json") >= 2:
            seen.append(len(_actor_processes()))
        time.sleep(0.05)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert seen and min(seen) == max(seen) == 2, seen
    assert workers_note(stderr, ray_cluster)[:2] == (160, 80)


def test_more_workers_than_the_cluster_hosts_are_refused(run_mmcli, tiny_models, photos, ray_cluster, tmp_path):
    run = run_mmcli("extract-features", photos, "-o", tmp_path / "o.npy", "--model", tiny_models["clip"],
                    *ray_flags(ray_cluster, workers=7))  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "--num-workers 7 but the Ray cluster's 2 CPUs host at most 6 workers" in run.stderr, run.stderr
    assert not (tmp_path / "o.npy").exists() and not (tmp_path / "o.partial").exists()


def test_a_pool_that_does_not_start_in_time_is_a_clear_error(run_mmcli, tiny_models, photos, ray_cluster, tmp_path,
                                                             monkeypatch):  # fmt: skip
    monkeypatch.setenv("MMCLI_RAY_START_TIMEOUT", "0.2")  # no actor imports torch and loads a model that fast
    run = run_mmcli("extract-features", photos, "-o", tmp_path / "o.npy", "--model", tiny_models["clip"],
                    *ray_flags(ray_cluster))  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "the Ray cluster did not start 2 workers within 0.2 s (MMCLI_RAY_START_TIMEOUT)" in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "o.npy").exists()


def test_a_killed_worker_is_replaced_and_the_output_is_complete(mmcli_exe, run_mmcli, tiny_models,
                                                                  album, ray_cluster, tmp_path):  # fmt: skip
    common = ["extract-features", album, "--model", tiny_models["clip"], "-b", "2"]
    assert run_mmcli(*common, "-o", tmp_path / "local.npy", "-q").returncode == 0
    out = tmp_path / "ray.npy"
    command = [mmcli_exe, *map(str, common), "-o", str(out), *ray_flags(ray_cluster)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 180
    killed = None
    while killed is None and process.poll() is None and time.monotonic() < deadline:
        actors = _actor_processes()
        if actors and _committed(tmp_path / "ray.partial" / "state.json") >= 4:
            killed = actors[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    _, stderr = process.communicate(timeout=300)
    assert killed is not None, "the run finished before a worker could be killed: " + stderr
    assert killed not in _actor_processes()
    assert process.returncode == 0, stderr
    assert_same_set(tmp_path / "local.npy", out)
    assert len(read_feature_set(out)) == 160


@pytest.mark.parametrize("sharded", [False, True], ids=["journal", "parts"])
def test_a_killed_driver_resumes_on_ray_with_the_uninterrupted_output(mmcli_exe, run_mmcli, tiny_models, album,
                                                                      ray_cluster, tmp_path, sharded):  # fmt: skip
    """kill -9 of the driver mid-run; the same command resumes (after the journal's committed batches, or
    after the finished parts of a sharded set) and gives the uninterrupted local run's rows."""
    common = ["extract-features", album, "--model", tiny_models["clip"], "-b", "2", *ray_flags(ray_cluster)]
    out = f"{tmp_path / 'out'}/" if sharded else str(tmp_path / "out.npy")
    if sharded:
        common += ["--shard-rows", "8"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([mmcli_exe, *map(str, common), "-o", out], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=env)  # fmt: skip

    def done():
        if not sharded:
            return _committed(tmp_path / "out.partial" / "state.json")
        try:
            return json.loads((tmp_path / "out" / "index.json").read_text())["parts"][-1]["consumed"]
        except (OSError, ValueError, KeyError, IndexError):
            return 0

    deadline = time.monotonic() + 180
    while done() < 20 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = done()
    assert 20 <= finished < 160
    rerun = run_mmcli(*common, "-o", out)
    assert rerun.returncode == 0, rerun.stderr
    if sharded:
        assert f"resuming: {finished // 8} finished parts ({finished} items)" in rerun.stderr, rerun.stderr
    else:
        assert f"resuming: {finished} items were done by an earlier run" in rerun.stderr, rerun.stderr
    assert workers_note(rerun.stderr, ray_cluster)[0] == 160 - finished  # only the rest went to the cluster
    assert run_mmcli("extract-features", album, "--model", tiny_models["clip"], "-b", "2", "-o",
                     tmp_path / "local.npy", "-q").returncode == 0  # fmt: skip
    assert_same_set(tmp_path / "local.npy", out)


def test_webdataset_shards_on_ray_equal_local(run_mmcli, tiny_models, photos, ray_cluster, tmp_path):
    """Shard members are read by the decode tasks from their offsets, as the local decoder reads them."""
    import tarfile

    shard = tmp_path / "data-000000.tar"
    with tarfile.open(shard, "w") as tar:
        for path in sorted(photos.glob("*.jpg")):
            tar.add(path, arcname=f"{path.stem}.jpg")
            caption = tmp_path / f"{path.stem}.txt"
            caption.write_text(f"a photo of {path.stem}")
            tar.add(caption, arcname=f"{path.stem}.txt")
    for name, extra in (("local", []), ("ray", ray_flags(ray_cluster))):
        run = run_mmcli("extract-features", shard, "-o", tmp_path / f"{name}.npy", "--model", tiny_models["clip"],
                        "-b", "2", *extra)  # fmt: skip
        assert run.returncode == 0, run.stderr
    assert_same_set(tmp_path / "local.npy", tmp_path / "ray.npy")
    records = read_feature_set(tmp_path / "ray.npy").records
    assert [r["source"] for r in records] == [f"{shard}#{p.stem}" for p in sorted(photos.glob("*.jpg"))]
    assert records[0]["text"].startswith("a photo of")
    assert workers_note(run.stderr, ray_cluster)[:2] == (4, 2)  # 4 inputs, 2 batches


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--num-workers", "2"], "--num-workers goes with --backend ray"),
        (["--ray-address", "auto"], "--ray-address goes with --backend ray"),
        (["--gpus-per-worker", "1"], "--gpus-per-worker goes with --backend ray"),
        (["--backend", "ray", "-"], "stdin is a stream"),
    ],
)
def test_ray_settings_are_refused_where_they_cannot_apply(run_mmcli, tiny_models, photos, tmp_path, flags, message):
    run = run_mmcli("extract-features", photos, "-o", tmp_path / "o.npy", "--model", tiny_models["clip"], *flags,
                    input="")  # fmt: skip
    assert run.returncode == 2 and message in run.stderr, run.stderr
    assert "Loading" not in run.stderr and not (tmp_path / "o.npy").exists()


@pytest.mark.parametrize(
    ("command", "model", "out"), [("extract-features", "clip", "o.npy"), ("caption", "blip", "c.jsonl")]
)
def test_a_cluster_without_gpus_refuses_gpus_per_worker(run_mmcli, tiny_models, photos, ray_cluster, tmp_path,
                                                        command, model, out):  # fmt: skip
    run = run_mmcli(command, photos, "-o", tmp_path / out, "--model", tiny_models[model],
                    *ray_flags(ray_cluster), "--gpus-per-worker", "1")  # fmt: skip
    assert run.returncode == 2 and "--gpus-per-worker 1 but the Ray cluster has 0 GPUs" in run.stderr, run.stderr


def test_an_unreachable_cluster_is_a_clear_error(run_mmcli, tiny_models, photos, tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    run = run_mmcli("caption", photos, "-o", tmp_path / "c.jsonl", "--model", tiny_models["blip"],
                    "--backend", "ray", "--ray-address", address)  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert f"cannot start or reach a Ray cluster at {address!r} (--ray-address)" in run.stderr
    assert "nothing answers there (connection refused)" in run.stderr  # probed, not half a minute of Ray's retries
    assert "Traceback" not in run.stderr


# Last in the module: a Ray of its own in this process, started and stopped while the cluster above runs.
def test_without_an_address_a_ray_is_started_for_the_run(run_mmcli, tiny_models, photos, tmp_path):
    run = run_mmcli("extract-features", photos, "-o", tmp_path / "out.npy", "--model", tiny_models["clip"],
                    "--backend", "ray")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert workers_note(run.stderr) == (4, 1, 1)
    import ray

    assert not ray.is_initialized()  # the Ray started for the run is stopped with it

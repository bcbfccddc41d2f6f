"""Warm runs: a command run through the warm process is indistinguishable from one run on its own (stdout,
stderr, exit status and every file written), signals and kill -9 behave as they do without it, and what
it refuses (another uid, another version or environment, a stale socket) runs cold instead.

Every warm run here is checked to have reached the warm process (its count of commands run), so a
client that silently ran cold cannot pass for a warm one.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import traceback
from pathlib import Path

import pytest
from audio_media import speech_like, write_wav
from conftest import EXAMPLES, PHOTO_NAMES, REPO
from test_readme import all_blocks
from test_resume import interrupt_partway, kill_partway

from mmcli.warm import protocol

NOBODY = 65534


class Warm:
    """A warm process started with ``mmcli warm start`` on its own socket, for this module's tests."""

    def __init__(self, exe: str, folder: Path, env: dict[str, str], *start_args: str) -> None:
        self.exe, self.folder = exe, folder
        self.socket = folder / "warm.sock"
        self.env = {**env, "MMCLI_WARM": "on", "MMCLI_WARM_SOCKET": str(self.socket)}
        started = self.mmcli("warm", "start", *start_args)
        assert started.returncode == 0, started.stderr + self.log()
        assert re.fullmatch(r"mmcli: warm process \d+ started \(.*warm\.sock\)\n", started.stderr), started.stderr

    def mmcli(self, *args: object, cwd: Path | None = None, input: str | None = None, env: dict | None = None):
        return subprocess.run(
            [self.exe, *map(str, args)],
            cwd=cwd,
            input=input,
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=300,
        )

    def status(self) -> dict:
        result = self.mmcli("warm", "status", "--json")
        assert result.returncode == 0, result.stdout + result.stderr + self.log()
        return json.loads(result.stdout)

    def commands_run(self) -> int:
        return self.status()["commands_run"]

    def log(self) -> str:
        path = self.folder / "warm.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        self.mmcli("warm", "stop")


def private_folder(tmp_path_factory, name: str) -> Path:
    folder = tmp_path_factory.mktemp(name)
    folder.chmod(0o700)
    return folder


@pytest.fixture(scope="module")
def warm(mmcli_exe, tmp_path_factory):
    process = Warm(mmcli_exe, private_folder(tmp_path_factory, "warm"), {**os.environ, "HF_HUB_OFFLINE": "1"})
    yield process
    process.stop()


@pytest.fixture(scope="module")
def scene(tmp_path_factory, photos):
    """The README's reader's folder: the repository's examples/, an unreadable photo, a recording and
    training pairs, with fixed modification times (the files list records them)."""
    folder = tmp_path_factory.mktemp("scene")
    shutil.copytree(EXAMPLES, folder / "examples")
    (folder / "broken").mkdir()
    shutil.copy(photos / "rocket.jpg", folder / "broken" / "rocket.jpg")
    (folder / "broken" / "cut.jpg").write_bytes((photos / "coffee.jpg").read_bytes()[:300])
    write_wav(folder / "speech.wav", speech_like(3.0, 16000), 16000)
    pairs = [{"path": f"examples/photos/{name}.jpg", "caption": f"a photo of a {name}"} for name in PHOTO_NAMES]
    (folder / "pairs.jsonl").write_text("".join(json.dumps(pair) + "\n" for pair in pairs))
    same_times(folder)
    return folder


def same_times(folder: Path) -> None:
    """One modification time for every file under ``folder``: outputs that record their inputs' times
    (the files list, an index's record of its feature set) then depend on contents alone."""
    for path in folder.rglob("*"):
        os.utime(path, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))


CHAINS = {  # command lines (and stdin), each chain in an order in which a command reads what an earlier one wrote
    "captions": [
        ("caption examples/photos --model {blip} --max-new-tokens 4 -o captions.jsonl", None),
        ("caption - --model {blip} --max-new-tokens 4", "examples/photos/chelsea.jpg\nexamples/photos/rocket.jpg\n"),
        ("caption broken --model {blip} --max-new-tokens 4", None),  # one unreadable file: status 1
        ("caption missing.jpg --model {blip}", None),  # refused before the model loads: status 2
        ("caption examples/photos --no-such-flag", None),  # a usage error
        ("evaluate captions --pred captions.jsonl --refs examples/references.jsonl --metrics bleu,rouge,cider", None),
        ("report captions.jsonl -o captions.html", None),
    ],
    "features": [
        ("extract-features examples/photos --model {clip} -o photos.npy", None),
        ("extract-features --modality text examples/captions.txt --model {clip} -o texts.npy", None),
        (
            "extract-features --modality text examples/references.jsonl --field captions --model {clip} -o refs.npy",
            None,
        ),
        ("classify examples/photos --labels 'cat,rocket,cup of coffee' --model {clip}", None),
        ("classify --features photos.npy --labels astronaut,cat,'cup of coffee',rocket -o labels.jsonl", None),
        ("retrieve --index photos.npy --query 'a cat' -k 2", None),
        ("retrieve --index photos.npy --queries examples/captions.txt -k 3 -o hits.jsonl", None),
        ("extract-features examples/photos --model {dinov2} -o dino.npy", None),
        ("fuse photos.npy dino.npy -o fused.npy", None),
        ("dedup photos.npy --threshold 0.5 --keep last -o dups.jsonl", None),
        ("score photos.npy --texts photos.npy -o scores.jsonl", None),  # (each row against itself)
        ("select photos.npy --join dups.jsonl --where 'keep == true' -o kept.npy", None),
        ("index build photos.npy", None),
        ("evaluate detection --pred examples/detections.jsonl --truth examples/boxes.jsonl", None),
        ("evaluate retrieval --results hits.jsonl --qrels examples/qrels.jsonl --top-k 1,5", None),
        (
            "evaluate classification --pred labels.jsonl --truth examples/labels.jsonl --top-k 1,5 --confusion c.csv",
            None,
        ),
    ],
    "speech, training and help": [
        ("--help", None),
        ("--version", None),
        ("caption --help", None),
        ("transcribe speech.wav --model {whisper} -o speech.jsonl", None),
        ("train caption --train pairs.jsonl --model {blip} --epochs 1 -b 2 --max-new-tokens 3 -o trained", None),
    ],
}


def steps(models, chain: str | None = None) -> list[tuple[list[str], str | None]]:
    """The command lines of one chain (or of all) as argv lists, with their stdin."""
    names = {name: str(models[name]) for name in ("clip", "blip", "whisper", "dinov2")}
    chosen = [CHAINS[chain]] if chain else CHAINS.values()
    return [(shlex.split(line.format(**names)), stdin) for lines in chosen for line, stdin in lines]


@pytest.mark.parametrize("chain", list(CHAINS))
def test_each_command_through_the_warm_process_equals_its_cold_run(chain, warm, scene, tiny_models, tmp_path):
    cold_folder, warm_folder = tmp_path / "cold", tmp_path / "warm"
    shutil.copytree(scene, cold_folder)
    shutil.copytree(scene, warm_folder)
    differences = []
    for argv, stdin in steps(tiny_models, chain):
        before = warm.commands_run()
        cold = warm.mmcli(*argv, cwd=cold_folder, input=stdin, env={"MMCLI_WARM": "off"})
        hot = warm.mmcli(*argv, cwd=warm_folder, input=stdin)
        assert warm.commands_run() == before + 1, f"{argv}: did not run in the warm process\n{warm.log()[-2000:]}"
        for what in ("returncode", "stdout", "stderr"):
            if untimed(str(getattr(cold, what))) != untimed(str(getattr(hot, what))):
                differences.append(
                    f"mmcli {' '.join(argv)}: {what}\n  cold: {getattr(cold, what)!r}\n  warm: {getattr(hot, what)!r}"
                )
        assert "Traceback" not in cold.stderr, cold.stderr
        assert cold.returncode in (0, 1, 2)
        if "-o" in argv:
            assert (cold_folder / argv[argv.index("-o") + 1]).exists(), argv  # the run wrote its output
        same_times(cold_folder)
        same_times(warm_folder)
    assert differences == []
    cold_files = sorted(p.relative_to(cold_folder) for p in cold_folder.rglob("*") if p.is_file())
    warm_files = sorted(p.relative_to(warm_folder) for p in warm_folder.rglob("*") if p.is_file())
    assert cold_files == warm_files
    for relative in cold_files:
        assert untimed_file(cold_folder / relative) == untimed_file(warm_folder / relative), relative
        assert (cold_folder / relative).stat().st_mode == (warm_folder / relative).stat().st_mode, relative


# Measurements, which differ between any two runs: a training log's throughput and its summary's time.
TIMINGS = (
    (re.compile(r'"samples_per_s": [0-9.]+'), '"samples_per_s": _'),
    (re.compile(r"epochs in [0-9]+ s"), "epochs in _ s"),
)


def untimed(text: str) -> str:
    for pattern, replacement in TIMINGS:
        text = pattern.sub(replacement, text)
    return text


def untimed_file(path: Path) -> bytes:
    data = path.read_bytes()
    try:
        return untimed(data.decode()).encode()
    except UnicodeDecodeError:
        return data


GROUPS = ("index", "evaluate", "train", "warm")


def command_of(words: list[str]) -> str:
    """``caption``, ``evaluate captions``, ``--help``: the command a command line runs."""
    return " ".join(words[:2]) if words[0] in GROUPS else words[0]


def test_the_steps_cover_every_command_the_docs_run(tiny_models):
    shown = set()
    for _, _, code, reason in all_blocks():  # the README's and every docs page's
        if reason is None:
            for match in re.finditer(r"(?:^|[|;&(]\s*)mmcli ([a-z-]+(?: [a-z-]+)?)", code, re.MULTILINE):
                shown.add(command_of(match[1].split()))
    covered = {command_of(argv) for argv, _ in steps(tiny_models)} | {"warm start", "warm status", "warm stop"}
    assert len(shown) >= 10 and shown <= covered, shown - covered


def test_models_stay_loaded_and_the_least_recently_used_goes_first(
    mmcli_exe, tmp_path_factory, tiny_models, photos, tmp_path
):
    process = Warm(
        mmcli_exe, private_folder(tmp_path_factory, "lru"), {**os.environ, "HF_HUB_OFFLINE": "1"}, "--max-models", "1"
    )
    try:
        image = photos / "chelsea.jpg"
        blip = tiny_models["blip"]  # named relative to the command's working directory, as users often do
        first = process.mmcli("caption", image, "--model", blip.name, "--max-new-tokens", "3", cwd=blip.parent)
        assert first.returncode == 0, first.stderr
        kept = [(m["kind"], m["name"]) for m in process.status()["models"]]
        assert kept == [("captioner", blip.name)], process.log()
        again = process.mmcli("caption", image, "--model", blip.name, "--max-new-tokens", "3", cwd=blip.parent)
        assert again.stdout == first.stdout and again.returncode == 0
        assert process.log().count(f"keeping captioner {blip.name}") == 1  # the second run used the kept one
        embedded = process.mmcli("extract-features", image, "--model", tiny_models["clip"], "-o", tmp_path / "e.npy")
        assert embedded.returncode == 0, embedded.stderr
        kept = [(m["kind"], m["name"]) for m in process.status()["models"]]
        assert kept == [("encoder", str(tiny_models["clip"]))]  # at most one: the caption model went
        assert f"dropped {blip.name}" in process.log()
    finally:
        process.stop()


def test_a_checkpoint_saved_again_is_loaded_again(warm, tiny_models, photos, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_models["blip"], model)
    image = photos / "astronaut.jpg"
    before = warm.mmcli("caption", image, "--model", model, "--max-new-tokens", "4", "--min-new-tokens", "4")
    assert before.returncode == 0, before.stderr
    assert str(model) in [m["name"] for m in warm.status()["models"]]
    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(model / "model.safetensors")
    for name in weights:
        if "decoder" in name and name.endswith("bias"):
            weights[name] = weights[name] + torch.linspace(-3, 3, weights[name].numel()).reshape(weights[name].shape)
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    after = warm.mmcli("caption", image, "--model", model, "--max-new-tokens", "4", "--min-new-tokens", "4")
    cold = warm.mmcli(
        "caption", image, "--model", model, "--max-new-tokens", "4", "--min-new-tokens", "4", env={"MMCLI_WARM": "off"}
    )
    assert after.stdout == cold.stdout != before.stdout


def test_ctrl_c_through_the_warm_process_stops_the_command_and_a_rerun_resumes(warm, tiny_models, album, tmp_path):
    out = tmp_path / "out.npy"
    command = [
        warm.exe,
        "extract-features",
        str(album),
        "-o",
        str(out),
        "--model",
        str(tiny_models["clip"]),
        "-b",
        "4",
        "--dtype",
        "float32",
    ]
    before = warm.commands_run()
    interrupt_partway(command, tmp_path / "out.partial" / "state.json", 8, warm.env)
    assert not out.exists()
    rerun = warm.mmcli(*command[1:])
    assert rerun.returncode == 1 and "resuming: " in rerun.stderr, rerun.stderr
    assert warm.commands_run() == before + 2
    whole = warm.mmcli(*command[1:3], "-o", tmp_path / "whole.npy", *command[5:])  # warm too: warm runs equal cold ones
    assert whole.returncode == 1
    assert out.read_bytes() == (tmp_path / "whole.npy").read_bytes()


def test_kill_9_of_the_client_stops_its_command_and_the_rerun_equals_an_uninterrupted_run(
    warm, tiny_models, album, tmp_path
):
    out = tmp_path / "out.jsonl"
    command = [
        warm.exe,
        "caption",
        str(album),
        "-o",
        str(out),
        "--model",
        str(tiny_models["blip"]),
        "-b",
        "4",
        "--min-new-tokens",
        "4",
        "--max-new-tokens",
        "4",
        "-q",
    ]
    kill_partway(command, tmp_path / "out.partial" / "state.json", 8, warm.env)
    rerun = warm.mmcli(*command[1:])  # the killed client's command is gone: the rerun is not refused as busy
    assert rerun.returncode == 1, rerun.stderr
    assert "went away: stopping it" in warm.log()
    whole = warm.mmcli(*command[1:3], "-o", tmp_path / "whole.jsonl", *command[5:])
    assert whole.returncode == 1
    assert out.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    assert (tmp_path / "out.files.jsonl").read_bytes() == (tmp_path / "whole.files.jsonl").read_bytes()


def _as_other_user(test) -> int:
    """Run ``test()`` (True: as expected) in a forked child that became uid/gid nobody; its exit status."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os._exit(0 if test() else 3)
        except BaseException:
            traceback.print_exc()
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(os.getuid() != 0, reason="switching to another uid needs root")
def test_a_client_of_another_uid_is_refused_and_runs_cold(warm, mmcli_exe, tmp_path_factory):
    from mmcli.warm import client

    before = warm.status()
    os.environ.update(MMCLI_WARM="on", MMCLI_WARM_SOCKET=str(warm.socket))
    try:
        # The socket's folder is the owner's alone (0700): another user cannot even reach the socket.
        assert _as_other_user(lambda: client.run(["mmcli", "--version"]) is None) == 0
        # With the folder opened to everyone, the kernel's account of the peer (SO_PEERCRED) refuses it.
        # (a folder outside pytest's own, which only its owner may enter)
        shared = Warm(mmcli_exe, Path(tempfile.mkdtemp(prefix="mmcli-warm-")), warm.env)
        try:
            shared.folder.chmod(0o755)
            shared.socket.chmod(0o777)
            os.environ["MMCLI_WARM_SOCKET"] = str(shared.socket)

            def refused_by_uid():
                with protocol.connect(str(shared.socket), 10) as sock:
                    answer, _ = protocol.receive(sock)
                return answer == {"ok": False, "why": "uid"} and client.run(["mmcli", "--version"]) is None

            assert _as_other_user(refused_by_uid) == 0
            shared.folder.chmod(0o700)
            status = shared.status()
            assert status["refused"] == 2 and status["commands_run"] == 0
            assert f"refused a client of uid {NOBODY}" in shared.log()
        finally:
            shared.folder.chmod(0o700)
            shared.stop()
            shutil.rmtree(shared.folder, ignore_errors=True)
    finally:
        os.environ.update(MMCLI_WARM="off")
        del os.environ["MMCLI_WARM_SOCKET"]
    after = warm.status()
    assert after["commands_run"] == before["commands_run"] and after["refused"] == before["refused"]


def test_another_environment_runs_cold(warm, tiny_models, photos):
    before = warm.commands_run()
    result = warm.mmcli("--version", env={"HF_HUB_DISABLE_TELEMETRY": "1"})  # read by huggingface_hub at import
    assert result.returncode == 0 and result.stdout.startswith("mmcli ")
    assert warm.commands_run() == before
    status = warm.mmcli("warm", "status", env={"HF_HUB_DISABLE_TELEMETRY": "1"})
    assert "serves another mmcli version or environment" in status.stdout


def test_another_version_of_mmcli_has_another_fingerprint(tmp_path, monkeypatch):
    package = tmp_path / "mmcli"
    shutil.copytree(REPO / "mmcli", package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(protocol, "__file__", str(package / "warm" / "protocol.py"))
    first = protocol.fingerprint()
    assert protocol.fingerprint() == first
    engine = package / "engine.py"
    os.utime(engine, ns=(engine.stat().st_atime_ns, engine.stat().st_mtime_ns + 10**9))
    assert protocol.fingerprint() != first
    monkeypatch.undo()
    assert protocol.fingerprint() != first  # and the installed package is yet another


def test_a_client_of_another_version_runs_cold(warm, mmcli_exe, tmp_path):
    """A warm process whose fingerprint differs (an older mmcli left running) answers no; the command
    runs in the client's own process."""
    path = tmp_path / "old.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    seen = []

    def old_warm_process():
        connection, _ = listener.accept()
        with connection:
            message, fds = protocol.receive(connection, max_fds=3)
            for fd in fds:
                os.close(fd)
            seen.append(message)
            protocol.send(connection, {"ok": False, "why": "fingerprint"})

    import threading

    thread = threading.Thread(target=old_warm_process, daemon=True)
    thread.start()
    result = subprocess.run(
        [mmcli_exe, "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**warm.env, "MMCLI_WARM_SOCKET": str(path)},
    )
    thread.join(30)
    listener.close()
    assert result.returncode == 0 and result.stdout.startswith("mmcli ") and result.stderr == ""
    assert seen and seen[0]["op"] == "run" and seen[0]["argv"][1:] == ["--version"]


def test_a_stale_socket_runs_cold(mmcli_exe, tmp_path):
    path = tmp_path / "stale.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: what a killed warm process leaves
    env = {**os.environ, "MMCLI_WARM": "on", "MMCLI_WARM_SOCKET": str(path)}
    result = subprocess.run([mmcli_exe, "--version"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("mmcli ") and result.stderr == ""
    status = subprocess.run([mmcli_exe, "warm", "status"], capture_output=True, text=True, env=env, timeout=120)
    assert status.returncode == 1 and "no warm process" in status.stderr


def test_an_idle_warm_process_leaves_on_time(mmcli_exe, tmp_path_factory):
    process = Warm(mmcli_exe, private_folder(tmp_path_factory, "idle"), {**os.environ}, "--idle", "1")
    pid = process.status()["pid"]
    deadline = time.monotonic() + 60
    while process.socket.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process.socket.exists()
    assert "idle for 1 s: leaving" in process.log() and f"warm process {pid} stopped" in process.log()
    status = process.mmcli("warm", "status")
    assert status.returncode == 1


def test_auto_starts_a_warm_process_for_the_next_command(mmcli_exe, tmp_path_factory):
    folder = private_folder(tmp_path_factory, "auto")
    env = {**os.environ, "MMCLI_WARM": "auto", "MMCLI_WARM_SOCKET": str(folder / "warm.sock")}
    first = subprocess.run([mmcli_exe, "--version"], capture_output=True, text=True, env=env, timeout=120)
    assert first.returncode == 0 and first.stdout.startswith("mmcli ")
    try:
        deadline = time.monotonic() + 300
        while not (folder / "warm.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        second = subprocess.run([mmcli_exe, "--version"], capture_output=True, text=True, env=env, timeout=120)
        assert second.stdout == first.stdout
        status = subprocess.run(
            [mmcli_exe, "warm", "status", "--json"], capture_output=True, text=True, env=env, timeout=120
        )
        assert json.loads(status.stdout)["commands_run"] == 1
    finally:
        subprocess.run([mmcli_exe, "warm", "stop"], env=env, timeout=120)


def test_warm_help_says_how_to_bypass_it(mmcli_exe):
    result = subprocess.run(
        [mmcli_exe, "warm", "--help"], capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"}
    )
    assert result.returncode == 0
    assert "MMCLI_WARM=off" in result.stdout and "MMCLI_WARM=auto" in result.stdout


def test_models_beyond_the_memory_bound_are_not_kept(mmcli_exe, tmp_path_factory, tiny_models, photos):
    process = Warm(mmcli_exe, private_folder(tmp_path_factory, "memory"), {**os.environ, "HF_HUB_OFFLINE": "1"},
                   "--max-memory", "0.01")  # fmt: skip
    try:
        result = process.mmcli(
            "caption", photos / "rocket.jpg", "--model", tiny_models["blip"], "--max-new-tokens", "3"
        )
        assert result.returncode == 0, result.stderr
        status = process.status()
        assert status["models"] == [] and status["max_memory"] == int(0.01 * 2**30)
        assert f"keeping captioner {tiny_models['blip']}" in process.log()
        assert f"dropped {tiny_models['blip']}" in process.log()
    finally:
        process.stop()


def test_a_socket_folder_others_may_enter_is_refused(mmcli_exe, tmp_path):
    folder = tmp_path / "open"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    env = {**os.environ, "MMCLI_WARM_SOCKET": str(folder / "warm.sock")}
    result = subprocess.run([mmcli_exe, "warm", "start"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    assert result.stderr == f"mmcli: error: {folder} must be yours and mode 0700 (chmod 700 {folder})\n"
    assert not (folder / "warm.sock").exists()


def test_foreground_serves_in_the_terminal_until_ctrl_c_and_quiet_says_nothing(mmcli_exe, tmp_path_factory):
    folder = private_folder(tmp_path_factory, "foreground")
    env = {**os.environ, "MMCLI_WARM": "on", "MMCLI_WARM_SOCKET": str(folder / "warm.sock")}
    server = subprocess.Popen([mmcli_exe, "warm", "start", "--foreground"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (folder / "warm.sock").exists() and time.monotonic() < deadline:
            assert server.poll() is None
            time.sleep(0.1)
        quiet = subprocess.run([mmcli_exe, "warm", "start", "-q"], env=env, capture_output=True, text=True, timeout=60)
        assert quiet.returncode == 0 and quiet.stderr == "" and server.poll() is None  # the one running is kept
        version = subprocess.run([mmcli_exe, "--version"], env=env, capture_output=True, text=True, timeout=60)
        assert version.returncode == 0 and version.stdout.startswith("mmcli ")
        server.send_signal(signal.SIGINT)
        _, log = server.communicate(timeout=60)
    finally:
        server.kill()
    assert server.returncode == 0, log
    assert f"warm process {server.pid} listening on {folder / 'warm.sock'}" in log
    assert "ran --version (process" in log and f"warm process {server.pid} stopped" in log
    assert not (folder / "warm.sock").exists()
    stop = subprocess.run([mmcli_exe, "warm", "stop", "-q"], env=env, capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0 and stop.stderr == ""
    loud = subprocess.run([mmcli_exe, "warm", "stop"], env=env, capture_output=True, text=True, timeout=60)
    assert loud.stderr == "mmcli: no warm process was running\n"

"""The ``mmcli`` command end to end: mostly in-process through ``run_mmcli``; the installed executable, through
real pipes and a terminal as a user's shell would, where a process is what is under test."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_models import hub_layout

from mmcli.output.feature_set import read_feature_set


def _assert_clean_failure(result, code):
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("mmcli: error: ")


def _no_outputs(folder, stem="out"):
    return not (folder / f"{stem}.npy").exists() and not (folder / f"{stem}.jsonl").exists()


def test_help_lists_subcommands_without_importing_torch():
    code = (
        "import sys\n"
        "sys.argv = ['mmcli', '--help']\n"
        "from mmcli.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'cv2', 'numpy', 'pyarrow', 'fsspec', 's3fs', 'webdataset',\n"
        "                       'botocore', 'ray', 'jinja2', 'fastapi', 'uvicorn', 'open_clip', 'timm')\n"
        "         if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "extract-features" in result.stdout
    assert "Embed images, videos, audio and texts" in result.stdout
    assert "HEAVY []" in result.stdout


def test_the_top_help_lists_commands_in_the_docs_order_with_examples(run_mmcli):
    from test_readme import pages

    shown = run_mmcli("--help", env={"COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    listed = re.findall(r"^│ ([a-z][a-z-]+) ", shown.stdout, re.MULTILINE)
    titles = [page.read_text().split("\n", 1)[0] for page in pages() if page.parent.name == "commands"]
    documented = list(dict.fromkeys(match[1] for title in titles if (match := re.match(r"# `mmcli ([a-z-]+)", title))))
    assert [name for name in listed if name in documented] == documented, (listed, documented)
    assert set(documented) <= set(listed)
    assert "Examples:" in shown.stdout and "mmcli caption examples/photos/chelsea.jpg" in shown.stdout


def test_every_command_has_help_with_an_example(run_mmcli):
    from mmcli.cli import app

    names = [[command.name] for command in app.registered_commands]
    names += [
        [group.name, command.name]
        for group in app.registered_groups
        for command in group.typer_instance.registered_commands
    ]
    assert len(names) >= 5, "subcommands missing"
    for name in names:
        result = run_mmcli(*name, "--help")
        assert result.returncode == 0, result.stderr
        assert "Example" in result.stdout and f"mmcli {' '.join(name)}" in result.stdout, name


def test_version_and_module_entry_point(run_mmcli_process):
    from mmcli import __version__

    assert run_mmcli_process("--version").stdout.strip() == f"mmcli {__version__}"  # the console script
    module = subprocess.run([sys.executable, "-m", "mmcli", "--version"], capture_output=True, text=True)
    assert module.stdout.strip() == f"mmcli {__version__}"


def test_extract_folder_writes_matching_pair(run_mmcli, tiny_models, photos, tmp_path):
    from mmcli.encoders import load_encoder

    out = tmp_path / "out.npy"
    result = run_mmcli("extract-features", photos, "-o", out, "--model", tiny_models["clip"], "--batch-size", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "", "stdout carries no chatter when writing to a file"
    assert "wrote 4 rows" in result.stderr

    matrix = np.load(out)
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert matrix.shape[0] == len(lines) == 4
    records = [json.loads(line) for line in lines]
    expected_paths = [str(photos / f"{n}.jpg") for n in ("astronaut", "chelsea", "coffee", "rocket")]
    assert [r["source"] for r in records] == expected_paths
    assert [r["id"] for r in records] == expected_paths
    assert {r["modality"] for r in records} == {"image"}
    assert {r["model"] for r in records} == {str(tiny_models["clip"])}

    encoder = load_encoder(str(tiny_models["clip"]), device="cpu")
    from mmcli.media.images import load_image

    expected = encoder.encode_images([load_image(p) for p in expected_paths])
    np.testing.assert_allclose(matrix, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)


def test_stdin_paths_and_jsonl_records(run_mmcli, tiny_models, photos, tmp_path):
    paths = sorted(str(p) for p in photos.glob("*.jpg"))
    lines = [paths[0], json.dumps({"path": paths[1], "id": "cat", "split": "test"})]
    out = tmp_path / "out.npy"
    result = run_mmcli("extract-features", "-", "-o", out, "--model", tiny_models["vit"], input="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    feature_set = read_feature_set(out)
    assert feature_set.ids == [paths[0], "cat"]
    assert feature_set.records[1]["split"] == "test"
    assert feature_set.records[1]["source"] == paths[1]
    assert feature_set.vectors.shape == (2, 32)


def test_texts_from_flags_files_and_jsonl(run_mmcli, tiny_models, tmp_path):
    from mmcli.encoders import load_encoder

    (tmp_path / "captions.txt").write_text("a cat\n\na dog runs\n")
    (tmp_path / "captions.jsonl").write_text(
        json.dumps({"id": "x1", "caption": "coffee in a cup", "image_id": "7"}) + "\n"
    )
    out = tmp_path / "out.npy"
    result = run_mmcli(
        "extract-features",
        "--modality",
        "text",
        tmp_path / "captions.txt",
        tmp_path / "captions.jsonl",
        "--field",
        "caption",
        "--text",
        "an astronaut",
        "-o",
        out,
        "--model",
        tiny_models["bert"],
    )
    assert result.returncode == 0, result.stderr
    feature_set = read_feature_set(out)
    txt = str(tmp_path / "captions.txt")
    assert feature_set.ids == ["text:1", f"{txt}:1", f"{txt}:3", "x1"]
    assert [r["source"] for r in feature_set.records] == ["an astronaut", "a cat", "a dog runs", "coffee in a cup"]
    assert {r["modality"] for r in feature_set.records} == {"text"}
    assert feature_set.records[3]["image_id"] == "7"

    expected = load_encoder(str(tiny_models["bert"]), device="cpu").encode_texts(
        ["an astronaut", "a cat", "a dog runs", "coffee in a cup"]
    )
    np.testing.assert_allclose(feature_set.vectors, expected, atol=1e-5)


def test_text_lines_from_stdin_with_float16_and_no_normalize(run_mmcli, tiny_models, tmp_path):
    out = tmp_path / "out.npy"
    result = run_mmcli(
        "extract-features",
        "--modality",
        "text",
        "-",
        "-o",
        out,
        "--model",
        tiny_models["clip"],
        "--output-dtype",
        "float16",
        "--no-normalize",
        input="a cat\na dog\n",
    )
    assert result.returncode == 0, result.stderr
    matrix = np.load(out)
    assert matrix.dtype == np.float16 and matrix.shape == (2, 24)
    assert not np.allclose(np.linalg.norm(matrix.astype(np.float32), axis=1), 1.0, atol=1e-2)
    assert read_feature_set(out).ids == ["1", "2"]


def test_corrupt_image_in_folder_is_an_error_record_and_the_rest_is_written(run_mmcli, tiny_models, photos, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(photos, folder)
    (folder / "broken.jpg").write_bytes((photos / "chelsea.jpg").read_bytes()[:300])
    (folder / "notes.md").write_text("not an image, skipped silently by extension")
    out = tmp_path / "out.npy"

    result = run_mmcli("extract-features", folder, "-o", out, "--model", tiny_models["clip"])
    assert result.returncode == 1
    assert f"skipping {folder / 'broken.jpg'}" in result.stderr
    assert "notes.md" not in result.stderr
    assert len(read_feature_set(out)) == 4
    errors = [json.loads(line) for line in (tmp_path / "out.errors.jsonl").read_text().splitlines()]
    assert [e["id"] for e in errors] == [str(folder / "broken.jpg")]
    assert "corrupt" in errors[0]["error"] or "truncated" in errors[0]["error"]


def test_on_error_fail_stops_and_writes_no_pair(run_mmcli, tiny_models, photos, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("this is text, not a JPEG")
    result = run_mmcli(
        "extract-features",
        photos / "astronaut.jpg",
        bad,
        "-o",
        tmp_path / "out.npy",
        "--model",
        tiny_models["clip"],
        "--on-error",
        "fail",
    )
    _assert_clean_failure(result, 1)
    assert "not an image" in result.stderr
    assert _no_outputs(tmp_path)


def test_explicit_non_image_and_missing_files_are_error_records(run_mmcli, tiny_models, photos, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    out = tmp_path / "out.npy"
    result = run_mmcli(
        "extract-features",
        photos / "rocket.jpg",
        notes,
        tmp_path / "missing.jpg",
        "-o",
        out,
        "--model",
        tiny_models["clip"],
    )
    assert result.returncode == 1
    assert read_feature_set(out).ids == [str(photos / "rocket.jpg")]
    errors = {e["id"]: e["error"] for e in map(json.loads, (tmp_path / "out.errors.jsonl").read_text().splitlines())}
    assert set(errors) == {str(notes), str(tmp_path / "missing.jpg")}
    assert "no such file" in errors[str(tmp_path / "missing.jpg")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{empty}"], "no images found"),
        ([], "no inputs"),
        (["{photo}", "-o", "{tmp}/no/such/dir/x.npy"], "does not exist"),
        (["{photo}", "--model", "{tmp}/not-a-model"], "does not exist"),
        (["{photo}", "--model", "{empty}"], "is not a Hugging Face checkpoint"),
        (["{photo}", "--device", "gpu"], "Invalid value"),
    ],
)
def test_usage_errors_exit_2_with_one_line(run_mmcli, photos, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    fill = {"empty": tmp_path / "empty", "photo": photos / "coffee.jpg", "tmp": tmp_path}
    args = [a.format(**fill) for a in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "out.npy")]
    result = run_mmcli("extract-features", *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert message in result.stderr
    assert _no_outputs(tmp_path)


def test_uncached_model_offline_is_one_clear_line(run_mmcli_process, photos, tmp_path):
    # A fresh process: huggingface_hub reads HF_HOME when it is imported.
    result = run_mmcli_process(
        "extract-features",
        photos / "coffee.jpg",
        "-o",
        tmp_path / "out.npy",
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )
    _assert_clean_failure(result, 2)
    assert "openai/clip-vit-base-patch32" in result.stderr and "hf download" in result.stderr
    assert "--model PATH" in result.stderr  # a local folder works too
    assert _no_outputs(tmp_path)


def test_uncached_model_with_an_unreachable_hub_fails_at_once_in_one_line(mmcli_exe, photos, tmp_path):
    import time

    # HF_HUB_OFFLINE unset, and a hub endpoint on this machine where nothing listens: no outside address is tried.
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    started = time.monotonic()
    result = subprocess.run(
        [mmcli_exe, "extract-features", photos / "coffee.jpg", "-o", tmp_path / "out.npy"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    _assert_clean_failure(result, 2)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # no retry chatter from the hub client
    assert "openai/clip-vit-base-patch32" in result.stderr and "hf download" in result.stderr
    assert "--model PATH" in result.stderr
    assert elapsed < 15, f"took {elapsed:.0f} s to find the hub unreachable"
    assert _no_outputs(tmp_path)


def test_cached_hub_model_with_an_unreachable_hub_loads_from_the_cache(mmcli_exe, tiny_models, photos, tmp_path):
    # The tiny CLIP laid out as the hub cache holds a download of "tiny/clip"; the hub itself does not answer.
    hub_layout(tmp_path / "hf", "tiny/clip", tiny_models["clip"])
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    result = subprocess.run(
        [mmcli_exe, "extract-features", photos / "coffee.jpg", "-o", tmp_path / "out.npy", "--model", "tiny/clip"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Retrying" not in result.stderr
    assert read_feature_set(tmp_path / "out.npy").models == {"tiny/clip"}


def test_image_only_model_with_texts_is_a_usage_error(run_mmcli, tiny_models, tmp_path):
    result = run_mmcli("extract-features", "--text", "a cat", "-o", tmp_path / "out.npy", "--model", tiny_models["vit"])
    _assert_clean_failure(result, 2)
    assert "not texts" in result.stderr


def test_existing_output_needs_overwrite(run_mmcli, tiny_models, tmp_path):
    out = tmp_path / "out.npy"
    args = ["extract-features", "--text", "a cat", "-o", out, "--model", tiny_models["bert"]]
    assert run_mmcli(*args).returncode == 0
    before = out.read_bytes()
    refused = run_mmcli(*args[:2], "a dog", *args[3:])
    _assert_clean_failure(refused, 2)
    assert "--overwrite" in refused.stderr
    assert out.read_bytes() == before
    replaced = run_mmcli(*args[:2], "a dog", *args[3:], "--overwrite")
    assert replaced.returncode == 0
    assert read_feature_set(out).records[0]["source"] == "a dog"


def test_hostile_images_each_get_a_record(run_mmcli, tiny_models, tmp_path):
    folder = tmp_path / "hostile"
    folder.mkdir()
    (folder / "empty.jpg").write_bytes(b"")
    Image.new("RGBA", (20, 20), (255, 0, 0, 0)).save(folder / "alpha.png")
    Image.new("CMYK", (20, 20), (0, 255, 0, 0)).save(folder / "cmyk.jpg")
    Image.new("RGB", (20, 20), "blue").save(folder / "png-named.jpg", format="PNG")
    frames = [Image.new("P", (10, 10), i) for i in range(3)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    os.symlink(folder, folder / "loop")
    result = run_mmcli(
        "extract-features", folder, "-o", tmp_path / "out.npy", "--model", tiny_models["clip"], "--quiet"
    )
    assert result.returncode == 1
    ids = read_feature_set(tmp_path / "out.npy").ids
    assert sorted(os.path.basename(i) for i in ids) == ["alpha.png", "anim.gif", "cmyk.jpg", "png-named.jpg"]
    assert result.stderr.count("skipping") == 1 and "empty file" in result.stderr


def test_progress_bar_with_rate_on_a_terminal(mmcli_exe, tiny_models, photos, tmp_path):
    """On a terminal stderr shows a progress bar with items/s; in pipes and logs it stays silent."""
    import fcntl
    import pty
    import struct
    import termios

    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a real terminal has a size
    process = subprocess.Popen(
        [
            mmcli_exe,
            "extract-features",
            photos,
            "-o",
            tmp_path / "out.npy",
            "--model",
            tiny_models["clip"],
            "--batch-size",
            "1",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=secondary,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    assert process.wait(timeout=120) == 0
    terminal = b"".join(chunks).decode(errors="replace")
    assert "item/s" in terminal and "/4" in terminal
    assert "wrote 4 rows" in terminal


def test_example_pipeline_runs(tiny_models, warm_env):
    from conftest import EXAMPLES

    result = subprocess.run(
        ["bash", str(EXAMPLES / "pipeline.sh")],
        capture_output=True,
        text=True,
        env={**warm_env, "MMCLI_MODEL": str(tiny_models["clip"]), "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [os.path.basename(row[0]) for row in rows] == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"]
    captions = (EXAMPLES / "captions.txt").read_text().splitlines()
    assert all(row[1] in captions and -1.0 <= float(row[2]) <= 1.0 for row in rows)


def test_file_name_that_is_not_utf8_round_trips_through_the_records(run_mmcli, tiny_models, photos, tmp_path):
    folder = tmp_path / "names"
    folder.mkdir()
    raw = os.path.join(os.fsencode(folder), b"caf\xe9.jpg")
    shutil.copy(photos / "chelsea.jpg", raw)
    out = tmp_path / "out.npy"
    done = run_mmcli("extract-features", folder, "-o", out, "--model", tiny_models["clip"], "--quiet")
    assert done.returncode == 0, done.stderr
    (record,) = read_feature_set(out).records
    assert os.fsencode(record["source"]) == raw  # escaped in the JSON, exact after decoding
    captions = run_mmcli("caption", folder, "--model", tiny_models["blip"], "--max-new-tokens", "3", "--quiet")
    assert captions.returncode == 0, captions.stderr
    assert os.fsencode(json.loads(captions.stdout)["id"]) == raw


WIDE = {"COLUMNS": "400", "TERMINAL_WIDTH": "400"}  # help with no line wrapped


def _every_command():
    """(path, click command) of mmcli, each group and each command in it."""
    import typer

    from mmcli.cli import app

    def walk(command, path):
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


def test_help_shows_flags_choices_and_brackets_as_written(run_mmcli):
    """Help renders what the options say: no ``<bool>`` beside on/off flags, choices spelled out, and
    bracketed words in help texts (which rich would read as markup) kept."""
    bracketed = 0
    for path, command in _every_command():
        shown = run_mmcli(*path, "--help", env=WIDE).stdout
        assert "<bool>" not in shown, path
        for param in command.params:
            for word in re.findall(r"(\[[a-z][a-z ,]*\])", (param.help or "").replace("\\[", "[")):
                assert word in shown, (path, param.name, word)
                bracketed += 1
    assert bracketed >= 2  # evaluate retrieval --qrels's [ids], index build --nlist's [default: ...]
    assert "<ivf|hnsw>" in run_mmcli("index", "build", "--help", env=WIDE).stdout


def _every_command_help(run_mmcli):
    """Each command's help (groups left out), by its name: ``{"evaluate retrieval": ...}``."""
    return {
        " ".join(path): run_mmcli(*path, "--help", env=WIDE).stdout
        for path, command in _every_command()
        if not getattr(command, "commands", None)
    }


def test_one_flag_name_per_idea_in_every_commands_help(run_mmcli):
    """A cut-off is --top-k, true labels are --truth, a written matrix's dtype is --output-dtype, and
    --batch-size is always items per model call; the old spellings are in no help."""
    helps = _every_command_help(run_mmcli)
    assert len(helps) >= 12
    for old in ("--top ", "--k ", "--storage"):
        assert not [name for name, shown in helps.items() if old in shown], old
    for name in ("retrieve", "classify", "evaluate retrieval", "evaluate classification", "fuse"):
        assert "--top-k" in helps[name], name
    for name in ("fuse", "evaluate classification"):
        options = "\n".join(line for line in helps[name].splitlines() if line.lstrip().startswith("│"))
        assert "--truth" in options and "--labels" not in options, name
    assert "--labels" in helps["classify"]  # the labels to choose from
    for name in ("extract-features", "fuse"):
        assert "--output-dtype" in helps[name], name
    assert "--train-batch-size" in helps["fuse"] and "--batch-size" not in helps["fuse"]


def test_default_model_names_are_whole_in_help_at_120_columns(run_mmcli):
    from mmcli.captioners import DEFAULT_CAPTIONER
    from mmcli.encoders import DEFAULT_MODEL
    from mmcli.speech import DEFAULT_TRANSCRIBER

    columns = {"COLUMNS": "120", "TERMINAL_WIDTH": "120"}
    for command, name in ((["extract-features"], DEFAULT_MODEL), (["classify"], DEFAULT_MODEL),
                          (["caption"], DEFAULT_CAPTIONER), (["train", "caption"], DEFAULT_CAPTIONER),
                          (["transcribe"], DEFAULT_TRANSCRIBER)):  # fmt: skip
        shown = run_mmcli(*command, "--help", env=columns).stdout
        assert max(len(line) for line in shown.splitlines()) <= 120, command
        assert name in shown and "…" not in shown, (command, shown)


def test_usage_errors_come_before_the_model_loads(run_mmcli, tiny_models, tmp_path):
    """A checkpoint folder holding only its config cannot load: where a command refuses its inputs or
    flags with such a model, it did so before loading any weights."""
    import shutil

    from test_video_media import scenes, write_video

    config_only = tmp_path / "xclip-config-only"
    config_only.mkdir()
    shutil.copy(tiny_models["xclip"] / "config.json", config_only / "config.json")
    video = write_video(tmp_path / "clip.mp4", scenes, fps=10, duration=2.0)
    fps = run_mmcli("extract-features", video, "-o", tmp_path / "a.npy", "--model", config_only, "--fps", "2")
    assert fps.returncode == 2 and "--fps does not apply" in fps.stderr, fps.stderr
    loads = run_mmcli("extract-features", video, "-o", tmp_path / "b.npy", "--model", config_only)
    assert loads.returncode == 2 and "--fps" not in loads.stderr, loads.stderr  # the weights were the problem

    missing = run_mmcli("caption", tmp_path / "nosuch.jpg", "--model", tmp_path)  # (not a checkpoint at all)
    assert missing.returncode == 2, missing.stderr
    assert f"none of the inputs can be read: {tmp_path / 'nosuch.jpg'}: no such file" in missing.stderr
    lone = tmp_path / "lone.npy"
    np.save(lone, np.ones((2, 4), np.float32))
    sidecar = run_mmcli("classify", "--features", lone, "--labels", "a,b", "--model", tmp_path)
    assert sidecar.returncode == 2 and "sidecar" in sidecar.stderr and "lone.jsonl" in sidecar.stderr


def test_a_spinner_names_the_model_while_it_loads_on_a_terminal(mmcli_exe, tiny_models, photos, tmp_path):
    import pty

    model = str(tiny_models["clip"])
    command = [mmcli_exe, "extract-features", str(photos / "coffee.jpg"), "--model", model]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TERM": "xterm", "COLUMNS": "400"}
    leader, follower = pty.openpty()
    process = subprocess.Popen([*command, "-o", str(tmp_path / "a.npy")], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=follower, env=env)  # fmt: skip
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the program closed its end
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert process.wait(timeout=300) == 0
    assert f"loading {model}" in shown.decode(errors="replace")
    piped = subprocess.run([*command, "-o", str(tmp_path / "b.npy")], capture_output=True, text=True, env=env)
    assert piped.returncode == 0 and "loading" not in piped.stderr  # no spinner in logs


def test_old_flag_spellings_still_work(run_mmcli, tmp_path):
    pred, truth = tmp_path / "pred.jsonl", tmp_path / "truth.jsonl"
    pred.write_text('{"id": "a", "label": "cat", "scores": {"cat": 0.9, "dog": 0.1}}\n'
                    '{"id": "b", "label": "cat", "scores": {"cat": 0.6, "dog": 0.4}}\n')  # fmt: skip
    truth.write_text('{"id": "a", "label": "cat"}\n{"id": "b", "label": "dog"}\n')
    new = run_mmcli("evaluate", "classification", "--pred", pred, "--truth", truth, "--top-k", "2", "--format", "json")
    old = run_mmcli("evaluate", "classification", "--pred", pred, "--labels", truth, "-k", "2", "--format", "json")
    assert new.returncode == old.returncode == 0, new.stderr + old.stderr
    assert json.loads(new.stdout) == json.loads(old.stdout)
    assert json.loads(new.stdout)["metrics"]["accuracy"] == 0.5
    run = tmp_path / "run.jsonl"
    run.write_text('{"query_id": "q", "hits": [{"id": "x", "rank": 1}, {"id": "y", "rank": 2}]}\n')
    qrels = tmp_path / "qrels.jsonl"
    qrels.write_text('{"query_id": "q", "relevant": ["y"]}\n')
    by_k = [run_mmcli("evaluate", "retrieval", "--results", run, "--qrels", qrels, flag, "1,2", "--format", "json")
            for flag in ("--top-k", "--k")]  # fmt: skip
    assert by_k[0].returncode == 0 and json.loads(by_k[0].stdout) == json.loads(by_k[1].stdout)


def test_a_folder_without_images_says_what_it_holds(run_mmcli, tiny_models, tmp_path):
    empty, texts = tmp_path / "empty", tmp_path / "texts"
    empty.mkdir()
    texts.mkdir()
    (texts / "captions.txt").write_text("a dog\na cat\n")
    model = str(tiny_models["clip"])
    result = run_mmcli("extract-features", empty, "-o", tmp_path / "a.npy", "--model", model)
    assert result.returncode == 2 and "no images found" in result.stderr and "(no files there)" in result.stderr
    result = run_mmcli("extract-features", texts, "-o", tmp_path / "b.npy", "--model", model)
    assert result.returncode == 2 and "(found 1 .txt)" in result.stderr and "--modality text" in result.stderr
    result = run_mmcli(
        "extract-features", texts / "captions.txt", "-o", tmp_path / "b.npy", "--model", model, "--modality", "text"
    )
    assert result.returncode == 0, result.stderr


def test_batches_of_files_are_full_however_slowly_frames_come_and_a_stream_ships_them_short(
    run_mmcli, tiny_models, tmp_path, monkeypatch
):
    """Same inputs, same batches, same bytes, whatever the machine's load: a file's frames fill each
    batch even when decoding lags; only a stream (stdin) ships a batch short to answer promptly."""
    from test_video_media import scenes_with_moving_square, write_video

    from mmcli.encoders.base import Encoder
    from mmcli.media.video import VideoReader

    video = write_video(tmp_path / "clip.mp4", scenes_with_moving_square, fps=10, duration=2.0)
    args = ["--model", tiny_models["clip"], "--fps", "5", "-b", "4", "-q"]
    sizes: list[int] = []
    embed, frames = Encoder.embed_preprocessed, VideoReader.frames

    def counted(self, inputs, **kwargs):
        sizes.append(len(inputs))
        return embed(self, inputs, **kwargs)

    def lagging(self):
        for frame in frames(self):
            time.sleep(0.15)  # a busy machine: each frame comes later than a stream's linger
            yield frame

    monkeypatch.setattr(Encoder, "embed_preprocessed", counted)
    prompt = run_mmcli("extract-features", video, "-o", tmp_path / "prompt.npy", "--pool", "none", *args)
    assert prompt.returncode == 0, prompt.stderr
    assert sizes == [4, 4, 2]  # ten frames
    sizes.clear()
    monkeypatch.setattr(VideoReader, "frames", lagging)
    slow = run_mmcli("extract-features", video, "-o", tmp_path / "slow.npy", "--pool", "none", *args)
    assert slow.returncode == 0, slow.stderr
    assert sizes == [4, 4, 2]
    assert (tmp_path / "slow.npy").read_bytes() == (tmp_path / "prompt.npy").read_bytes()
    sizes.clear()
    streamed = run_mmcli("extract-features", "-", "-o", tmp_path / "streamed.npy", "--pool", "none", *args,
                         input=f"{video}\n")  # fmt: skip
    assert streamed.returncode == 0, streamed.stderr
    assert sum(sizes) == 10 and max(sizes) < 4, sizes


def test_each_model_variable_the_readme_names_sets_its_commands_model(run_mmcli, tiny_models, photos, tmp_path):
    from audio_media import speech_like, write_wav

    photo = photos / "chelsea.jpg"
    speech = write_wav(tmp_path / "talk.wav", speech_like(2.0, 16000), 16000)
    runs = {
        "MMCLI_MODEL": (["extract-features", photo, "-o", tmp_path / "f.npy"], "clip", tmp_path / "f.jsonl"),
        "MMCLI_CAPTION_MODEL": (["caption", photo, "--max-new-tokens", "2"], "blip", None),
        "MMCLI_SPEECH_MODEL": (["transcribe", speech], "whisper", None),
    }
    docs = (Path(__file__).resolve().parent.parent / "docs" / "commands" / "extract-features.md").read_text()
    for variable, (args, model, sidecar) in runs.items():
        assert f"`{variable}`" in docs, variable  # where the options shared by the model commands are
        done = run_mmcli(*args, env={variable: str(tiny_models[model])})
        assert done.returncode == 0, (variable, done.stderr)
        lines = (sidecar.read_text() if sidecar else done.stdout).splitlines()
        assert json.loads(lines[0])["model"] == str(tiny_models[model]), (variable, lines[0])


def test_summaries_count_in_the_singular_and_the_corpus_script_has_help(run_mmcli, tiny_models, photos, tmp_path):
    from audio_media import speech_like, write_wav

    speech = write_wav(tmp_path / "one.wav", speech_like(2.0, 16000), 16000)
    said = run_mmcli("transcribe", speech, "-m", tiny_models["whisper"])
    segments = len(said.stdout.splitlines())
    assert f"transcribed 1 recording into {segments} segment{'' if segments == 1 else 's'}" in said.stderr
    labelled = run_mmcli("classify", photos / "coffee.jpg", "--labels", "cat", "-m", tiny_models["clip"])
    assert "classified 1 input into 1 label" in labelled.stderr and "1 labels" not in labelled.stderr
    helped = subprocess.run([sys.executable, "tests/shapes_corpus.py", "--help"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent.parent, timeout=120)  # fmt: skip
    assert helped.returncode == 0 and "usage:" in helped.stdout
    assert not (Path(__file__).resolve().parent.parent / "--help").exists()


def test_install_hints_name_packages_that_exist_not_another_projects_mmcli(
    run_mmcli, tiny_models, tmp_path, monkeypatch
):
    import tomllib

    from mmcli.errors import EXTRA_PACKAGES

    root = Path(__file__).resolve().parent.parent
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra, packages in EXTRA_PACKAGES.items():
        declared = {re.split(r"[<>=\[]", requirement)[0] for requirement in extras[extra]}
        assert {re.split(r"[\[]", name.strip("'"))[0] for name in packages.split()} == declared, extra
    for source in (root / "mmcli").rglob("*.py"):
        for line in source.read_text().splitlines():
            assert "install 'mmcli[" not in line or line.lstrip().startswith("#"), (source, line)
    monkeypatch.setitem(sys.modules, "av", None)  # PyAV not installed
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    missing = run_mmcli("transcribe", tmp_path / "a.wav", "-m", tiny_models["whisper"])
    assert missing.returncode == 2, missing.stderr
    assert "pip install av (or, in mmcli's source folder, pip install '.[audio]')" in missing.stderr

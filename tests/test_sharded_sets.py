"""Sharded feature sets (``-o DIR/``): parts of ``--shard-rows`` rows with an index; what they hold equals
the single-file run, every reader takes ``DIR/``, a killed run resumes after its finished parts, and
``--update`` rewrites only the parts that change."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
from PIL import Image
from test_publish import run_killed
from test_video_extract import scenes
from test_video_media import write_video

from mmcli.errors import InputError
from mmcli.output.feature_set import read_feature_set
from mmcli.output.npy import FeatureSetWriter
from mmcli.output.sharded import ShardedVectors


def extract(run, inputs, out, model, *extra):
    return run("extract-features", *[str(i) for i in inputs], "-o", out, "--model", model, *extra)


def index_of(folder):
    return json.loads((folder / "index.json").read_text())


def parts_mtimes(folder):
    return {path.name: path.stat().st_mtime_ns for path in sorted(folder.glob("part-*.npy"))}


def same_set(got, want):
    """Row for row: ids, records and order equal, values within 1e-6."""
    assert got.records == want.records
    np.testing.assert_allclose(np.asarray(got.vectors), np.asarray(want.vectors), rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def sets(run_mmcli, tiny_models, photos, tmp_path_factory):
    """The test photos as one file and as a sharded set of 2-row parts."""
    folder = tmp_path_factory.mktemp("sets")
    model = tiny_models["clip"]
    assert extract(run_mmcli, [photos], folder / "single.npy", model, "-q").returncode == 0
    done = extract(run_mmcli, [photos], f"{folder / 'sharded'}/", model, "--shard-rows", "2")
    assert done.returncode == 0, done.stderr
    assert "2 parts" in done.stderr
    return folder


def test_sharded_run_equals_the_single_file_run_part_by_part(sets, run_mmcli, tiny_models, photos, tmp_path):
    folder = sets / "sharded"
    index = index_of(folder)
    assert index["complete"] and index["shard_rows"] == 2
    assert [(p["name"], p["rows"], p["consumed"]) for p in index["parts"]] == [
        ("part-00000", 2, 2),
        ("part-00001", 2, 4),
    ]
    single = read_feature_set(sets / "single.npy")
    sharded = read_feature_set(folder)
    assert isinstance(sharded.vectors, ShardedVectors) and sharded.path == folder
    same_set(sharded, single)
    # Each part is a feature set of its own, with its manifest (after the settings line).
    parts = [read_feature_set(folder / f"part-0000{n}.npy") for n in range(2)]
    assert [len(part) for part in parts] == [2, 2]
    assert parts[0].ids + parts[1].ids == single.ids
    manifest = [line for n in range(2) for line in (folder / f"part-0000{n}.files.jsonl").read_text().splitlines()[1:]]
    assert manifest == (sets / "single.files.jsonl").read_text().splitlines()[1:]

    # Another --shard-rows gives other parts: a part closes at the first item once it holds that many.
    three = tmp_path / "three"
    assert extract(run_mmcli, [photos], f"{three}/", tiny_models["clip"], "--shard-rows", "3", "-q").returncode == 0
    assert [p["rows"] for p in index_of(three)["parts"]] == [3, 1]
    same_set(read_feature_set(three), single)
    # --shard-rows sizes the parts of a folder, and means nothing for a .npy
    refused = extract(run_mmcli, [photos], tmp_path / "x.npy", tiny_models["clip"], "--shard-rows", "2")
    assert refused.returncode == 2 and "--shard-rows" in refused.stderr and not (tmp_path / "x.npy").exists()


def test_sharded_vectors_read_like_a_read_only_matrix(sets):
    vectors = read_feature_set(sets / "sharded").vectors
    whole = np.load(sets / "single.npy")
    assert vectors.shape == whole.shape and vectors.dtype == whole.dtype and len(vectors) == 4 and vectors.ndim == 2
    np.testing.assert_allclose(vectors[2], whole[2], atol=1e-6)
    np.testing.assert_allclose(vectors[-1], whole[-1], atol=1e-6)
    np.testing.assert_allclose(vectors[1:3], whole[1:3], atol=1e-6)  # across the two parts
    np.testing.assert_allclose(vectors[::2], whole[::2], atol=1e-6)
    np.testing.assert_allclose(vectors[[3, 0, 2]], whole[[3, 0, 2]], atol=1e-6)
    np.testing.assert_allclose(vectors[np.array([True, False, False, True])], whole[[0, 3]], atol=1e-6)
    np.testing.assert_allclose(vectors[1:3, :5], whole[1:3, :5], atol=1e-6)
    assert vectors[1, 4] == pytest.approx(float(whole[1, 4]), abs=1e-6)
    np.testing.assert_allclose(np.asarray(vectors, dtype=np.float64), whole, atol=1e-6)
    chunks = list(vectors.chunks(3))
    assert [(start, len(rows)) for start, rows in chunks] == [(0, 2), (2, 2)]  # never across parts
    assert isinstance(vectors[0:2], np.memmap)  # rows within a part are a view of its mapping
    with pytest.raises(IndexError):
        vectors[4]
    with pytest.raises((ValueError, TypeError)):
        vectors[0][0] = 1.0  # read-only


def test_every_reader_takes_a_sharded_set(sets, run_mmcli, tiny_models, monkeypatch):
    single, sharded = sets / "single.npy", f"{sets / 'sharded'}/"
    model = str(tiny_models["clip"])

    def both(*args):
        outputs = []
        for features in (single, sharded):
            done = run_mmcli(*[features if a == "SET" else a for a in args])
            assert done.returncode == 0, done.stderr
            outputs.append(done.stdout)
        assert outputs[0] == outputs[1] and outputs[0]
        return outputs[0]

    # Exact search streams the parts: loading the whole set at once is not how it reads them.
    def whole_set(*_args, **_kwargs):
        raise AssertionError("exact search loaded every part at once")

    with monkeypatch.context() as patch:
        patch.setattr(ShardedVectors, "__array__", whole_set)
        hits = both("retrieve", "-i", "SET", "--query", "a cat", "--query", "a rocket", "-k", "3", "--ann", "exact")
    assert [len(json.loads(line)["hits"]) for line in hits.splitlines()] == [3, 3]
    both("retrieve", "-i", "SET", "--queries", "SET", "-k", "2", "--exclude-self")
    both("classify", "--features", "SET", "--labels", "cat,rocket,coffee,astronaut", "--model", model)
    report = both("evaluate", "retrieval", "--images", "SET", "--texts", "SET", "--match-field", "id")
    assert json.loads(report)["metrics"]["image->text R@1"] == pytest.approx(1.0)
    ids = read_feature_set(single).ids[1:3]
    pred, refs = sets / "pred.jsonl", sets / "refs.jsonl"
    pred.write_text("".join(json.dumps({"id": i, "caption": "a cat"}) + "\n" for i in ids))
    refs.write_text("".join(json.dumps({"id": i, "captions": ["a cat", "a rocket"]}) + "\n" for i in ids))
    scores = both("evaluate", "captions", "--pred", pred, "--refs", refs, "--metrics", "bleu", "--clipscore",
                  "--images", "SET", "--model", model)  # fmt: skip
    assert json.loads(scores)["metrics"]["CLIPScore"] > 0

    fused = []
    for features in (single, sharded):
        out = sets / f"fused-{len(fused)}.npy"
        done = run_mmcli("fuse", features, single, "-o", out)
        assert done.returncode == 0, done.stderr
        fused.append(read_feature_set(out))
    assert [r["id"] for r in fused[0].records] == [r["id"] for r in fused[1].records]
    np.testing.assert_allclose(fused[0].vectors, fused[1].vectors, atol=1e-6)

    built = run_mmcli("index", "build", sharded, "--kind", "hnsw")
    assert built.returncode == 0, built.stderr
    assert (sets / "sharded" / "set.faiss").exists()  # in the set's folder, beside its parts
    through = run_mmcli("retrieve", "-i", sharded, "--query", "a cat", "-k", "4", "--ann", "faiss")
    assert through.returncode == 0 and "through" in through.stderr and "set.faiss" in through.stderr
    exact = run_mmcli("retrieve", "-i", single, "--query", "a cat", "-k", "4")
    assert [h["id"] for h in json.loads(through.stdout)["hits"]] == [h["id"] for h in json.loads(exact.stdout)["hits"]]


def test_a_videos_rows_stay_in_one_part(run_mmcli, tiny_models, photos, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    write_video(media / "clip.mp4", scenes, fps=10, duration=4.0)
    write_video(media / "long.avi", scenes, fps=10, duration=6.0)
    shutil.copy(photos / "chelsea.jpg", media / "a_photo.jpg")
    (media / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    model = tiny_models["clip"]
    flags = ("--pool", "both", "-b", "3")  # batches end inside the videos
    assert extract(run_mmcli, [media], tmp_path / "one.npy", model, *flags, "-q").returncode == 1
    done = extract(run_mmcli, [media], f"{tmp_path / 'parts'}/", model, *flags, "--shard-rows", "1", "-q")
    assert done.returncode == 1, done.stderr  # the corrupt video, as in the single-file run
    folder = tmp_path / "parts"
    same_set(read_feature_set(folder), read_feature_set(tmp_path / "one.npy"))
    owners = []
    for part in index_of(folder)["parts"]:
        records = [json.loads(line) for line in (folder / f"{part['name']}.jsonl").read_text().splitlines()]
        owners.append({record.get("video", record["id"]) for record in records})
    assert all(len(owner) == 1 for owner in owners)  # one input's rows per part: frames and pooled row together
    assert len(owners) == 3  # the photo; a video; the corrupt video's error with the other video
    errors = [line for path in sorted(folder.glob("part-*.errors.jsonl")) for line in path.read_text().splitlines()]
    assert errors == (tmp_path / "one.errors.jsonl").read_text().splitlines()


@pytest.fixture(scope="module")
def album(tmp_path_factory):
    folder = tmp_path_factory.mktemp("album")
    rng = np.random.default_rng(1)
    for index in range(120):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(folder / f"img{index:03d}.jpg")
    return folder


def listed_parts(folder):
    try:
        return len(index_of(folder)["parts"])
    except (OSError, ValueError, KeyError):
        return 0


def test_a_killed_run_resumes_after_its_finished_parts(mmcli_exe, run_mmcli, tiny_models, album, tmp_path):
    model = tiny_models["clip"]
    folder = tmp_path / "killed"
    command = [mmcli_exe, "extract-features", str(album), "-o", f"{folder}/", "--model", str(model),
               "--shard-rows", "1", "-b", "1", "-q"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    deadline = time.monotonic() + 120
    while listed_parts(folder) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait()
    index = index_of(folder)
    finished = len(index["parts"])
    assert 3 <= finished < 120 and not index["complete"]
    unfinished = run_mmcli("retrieve", "-i", f"{folder}/", "--query", "x")
    assert unfinished.returncode == 2 and "unfinished run" in unfinished.stderr  # no reader takes it for a set
    before = parts_mtimes(folder)

    rerun = run_mmcli(*command[1:-1])
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming: {finished} finished parts ({finished} items)" in rerun.stderr
    after = parts_mtimes(folder)
    assert all(after[name] == before[name] for name in list(before)[:finished])  # not written again
    assert len(after) == 120 and not [p.name for p in folder.iterdir() if p.name.startswith(".")]

    whole = tmp_path / "whole"
    assert run_mmcli(*command[1:4], f"{whole}/", *command[5:]).returncode == 0
    same_set(read_feature_set(folder), read_feature_set(whole))
    assert index_of(folder)["parts"] == index_of(whole)["parts"]


def test_a_run_killed_as_a_part_is_published_leaves_no_temporaries(run_mmcli, tiny_models, album, tmp_path):
    folder = tmp_path / "killed"
    args = ["extract-features", str(album), "-o", f"{folder}/", "--model", str(tiny_models["clip"]),
            "--shard-rows", "40"]  # fmt: skip
    # Killed with part 1 written and the plan of its renames too, before the plan takes its name.
    run_killed(f"import sys; sys.argv = ['mmcli', *{args!r}, '-q']; from mmcli.cli import main; main()",
               before_renaming=".part-00001.npy.publishing")  # fmt: skip
    assert len(index_of(folder)["parts"]) == 1
    assert any(".publishing" in p.name for p in folder.iterdir())  # the plan, under a temporary name
    rerun = run_mmcli(*args)
    assert rerun.returncode == 0 and "resuming: 1 finished parts (40 items)" in rerun.stderr, rerun.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["index.json"] + [
        f"part-0000{number}{suffix}" for number in range(3) for suffix in (".files.jsonl", ".jsonl", ".npy")
    ]
    assert len(read_feature_set(folder).ids) == 120


def test_other_settings_are_refused_naming_the_setting(run_mmcli, tiny_models, photos, tmp_path):
    model = tiny_models["clip"]
    folder = tmp_path / "set"
    target = f"{folder}/"
    assert extract(run_mmcli, [photos], target, model, "--shard-rows", "1", "-q").returncode == 0
    reference = read_feature_set(folder)
    # As a run killed after its second part leaves it: the index lists two parts and is unfinished.
    index = index_of(folder)
    index.update(complete=False, parts=index["parts"][:2])
    (folder / "index.json").write_text(json.dumps(index))
    (folder / "part-00003.npy").unlink()

    for extra, named in ((("--shard-rows", "2"), "--shard-rows was 1, now 2"), (("--no-normalize",), "--normalize")):
        refused = extract(run_mmcli, [photos], target, model, *extra)
        assert refused.returncode == 2 and named in refused.stderr and "--restart" in refused.stderr, refused.stderr
    before = parts_mtimes(folder)
    resumed = extract(run_mmcli, [photos], target, model)  # the stored --shard-rows is kept
    assert resumed.returncode == 0 and "resuming: 2 finished parts (2 items)" in resumed.stderr, resumed.stderr
    after = parts_mtimes(folder)
    assert [after[n] for n in ("part-00000.npy", "part-00001.npy")] == [before[n] for n in list(before)[:2]]
    same_set(read_feature_set(folder), reference)

    again = extract(run_mmcli, [photos], target, model)  # a finished set, as an existing .npy
    assert again.returncode == 2 and "already exists; pass --overwrite" in again.stderr
    replaced = extract(run_mmcli, [photos], target, model, "--overwrite", "--shard-rows", "2")
    assert replaced.returncode == 0 and "resuming" not in replaced.stderr
    assert sorted(p.name for p in folder.glob("part-*.npy")) == ["part-00000.npy", "part-00001.npy"]
    index = index_of(folder)
    index.update(complete=False, parts=index["parts"][:1])
    (folder / "index.json").write_text(json.dumps(index))
    restarted = extract(run_mmcli, [photos], target, model, "--restart", "--shard-rows", "3")
    assert restarted.returncode == 0 and "resuming" not in restarted.stderr
    assert [p["rows"] for p in index_of(folder)["parts"]] == [3, 1]
    same_set(read_feature_set(folder), reference)


def test_update_rewrites_only_the_parts_that_change(run_mmcli, tiny_models, photos, tmp_path):
    model = tiny_models["clip"]
    library = tmp_path / "library"
    shutil.copytree(photos, library)
    folder = tmp_path / "set"
    assert extract(run_mmcli, [library], f"{folder}/", model, "--shard-rows", "2", "-q").returncode == 0
    before = parts_mtimes(folder)

    Image.new("RGB", (40, 30), "red").save(library / "rocket.jpg")  # in the second part
    Image.new("RGB", (40, 30), "blue").save(library / "zebra.jpg")  # new, last: a third part
    updated = extract(run_mmcli, [library], f"{folder}/", model, "--update")
    assert updated.returncode == 0, updated.stderr
    assert "3 inputs kept" in updated.stderr and "2 embedded" in updated.stderr
    after = parts_mtimes(folder)
    assert after["part-00000.npy"] == before["part-00000.npy"]  # unchanged: kept as it was
    assert after["part-00001.npy"] != before["part-00001.npy"] and "part-00002.npy" in after
    assert not (folder / ".staging").exists()

    fresh = tmp_path / "fresh"
    assert extract(run_mmcli, [library], f"{fresh}/", model, "--shard-rows", "2", "-q").returncode == 0
    same_set(read_feature_set(folder), read_feature_set(fresh))
    assert [(p["name"], p["rows"]) for p in index_of(folder)["parts"]] == [
        (p["name"], p["rows"]) for p in index_of(fresh)["parts"]
    ]
    for name in ("part-00001.files.jsonl", "part-00002.files.jsonl"):
        assert (folder / name).read_text() == (fresh / name).read_text()

    (library / "astronaut.jpg").unlink()  # the first part changes, and every part after it moves
    assert extract(run_mmcli, [library], f"{folder}/", model, "--update", "-q").returncode == 0
    assert [p["rows"] for p in index_of(folder)["parts"]] == [2, 2]
    assert not (folder / "part-00002.npy").exists()  # a part no longer in the set is removed with the swap
    assert read_feature_set(folder).ids == [str(library / n) for n in ("chelsea.jpg", "coffee.jpg", "rocket.jpg",
                                                                       "zebra.jpg")]  # fmt: skip


def test_a_damaged_part_is_refused_by_name(sets, run_mmcli, tmp_path):
    def damaged(change):
        folder = tmp_path / f"damaged{len(list(tmp_path.iterdir()))}"
        shutil.copytree(sets / "sharded", folder)
        change(folder)
        done = run_mmcli("retrieve", "-i", f"{folder}/", "--query", "a cat")
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        return done.stderr

    assert "part part-00001.npy is missing" in damaged(lambda f: (f / "part-00001.npy").unlink())
    assert "part-00001.npy is cut short" in damaged(
        lambda f: (f / "part-00001.npy").write_bytes((f / "part-00001.npy").read_bytes()[:-8])
    )
    assert "part-00000.npy: not a plain numeric .npy" in damaged(lambda f: (f / "part-00000.npy").write_bytes(b"junk"))
    assert "part-00001.jsonl" in damaged(lambda f: (f / "part-00001.jsonl").unlink())

    def duplicate(folder):
        lines = (folder / "part-00001.jsonl").read_text().splitlines()
        first = json.loads((folder / "part-00000.jsonl").read_text().splitlines()[0])
        lines[1] = json.dumps({**json.loads(lines[1]), "id": first["id"]})
        (folder / "part-00001.jsonl").write_text("\n".join(lines) + "\n")

    message = damaged(duplicate)
    assert "part-00000.jsonl (line 1) and part-00001.jsonl (line 2)" in message and "unique" in message

    def no_index(folder):
        (folder / "index.json").unlink()

    assert "without index.json" in damaged(no_index)


def test_a_folder_with_other_files_is_never_written_into(run_mmcli, tiny_models, photos, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    done = extract(run_mmcli, [photos], taken, tiny_models["clip"])  # an existing folder: a sharded output
    assert done.returncode == 2 and "no index.json" in done.stderr
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]


def test_library_call_and_writer_parts(tiny_models, photos, tmp_path):
    from mmcli import extract_features

    result = extract_features([photos], f"{tmp_path / 'lib'}/", model=str(tiny_models["clip"]), shard_rows=3)
    assert result.rows == 4 and [p["rows"] for p in index_of(tmp_path / "lib")["parts"]] == [3, 1]
    # a hand-made part with a float16 matrix next to a float32 one is refused, naming the part
    with FeatureSetWriter(tmp_path / "lib" / "part-00001.npy", dtype="float16") as writer:
        record = {"id": "x", "modality": "image", "model": "m", "source": "s"}
        writer.add(np.ones((1, result.dim), np.float32), [record])
    with pytest.raises(InputError, match=r"part-00001\.npy holds 24-wide float16 rows"):
        read_feature_set(tmp_path / "lib")


def test_when_every_item_fails_the_errors_are_kept_and_no_set_is(run_mmcli, tiny_models, photos, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (broken / name).write_bytes(b"not an image")
    folder = tmp_path / "out"
    failed = extract(run_mmcli, [broken], f"{folder}/", tiny_models["clip"])
    assert failed.returncode == 1 and "every input failed (2)" in failed.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["part-00000.errors.jsonl"]  # no index: no set
    assert len((folder / "part-00000.errors.jsonl").read_text().splitlines()) == 2
    # a rerun into that folder is a fresh run, as for a .npy whose every item failed
    shutil.copy(photos / "coffee.jpg", broken / "c.jpg")
    again = extract(run_mmcli, [broken], f"{folder}/", tiny_models["clip"], "--shard-rows", "1")
    assert again.returncode == 1, again.stderr
    parts = index_of(folder)["parts"]
    assert [(p["rows"], p["consumed"], p["errors"]) for p in parts] == [(1, 3, 2)]
    assert read_feature_set(folder).ids == [str(broken / "c.jpg")]

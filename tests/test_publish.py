"""Outputs made of several files (a feature set, a caption file and its manifest) are replaced as one.

A run is killed with SIGKILL between the renames that publish its files, so the folder really holds
a mix of the old and new files; the next mmcli command that reads the output finishes the change
first and sees the new output whole.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mmcli.output.atomic import publish, publishing_path, settle
from mmcli.output.feature_set import read_feature_set
from mmcli.output.journal import Journal, journal_path
from mmcli.output.manifest import read_manifest
from mmcli.output.npy import FeatureSetWriter, errors_path


def records(count: int, tag: str) -> list[dict]:
    return [{"id": f"{tag}{i}", "modality": "image", "model": "m", "source": f"{tag}{i}.jpg"} for i in range(count)]


def files(count: int, tag: str) -> list[dict]:
    return [
        {"id": f"{tag}{i}", "path": f"{tag}{i}.jpg", "size": i, "mtime_ns": i, "blake2b": tag} for i in range(count)
    ]


def write_set(npy: Path, count: int, tag: str, value: float, *, errors: int = 0) -> None:
    with FeatureSetWriter(npy, settings={"model": "m"}) as writer:
        writer.add(np.full((count, 4), value, np.float32), records(count, tag), files=files(count, tag))
        for i in range(errors):
            writer.add_error({"id": f"bad{i}", "source": f"bad{i}.jpg", "error": "broken"})


KILL_AT_RENAME = """
import os, signal, sys
real_replace = os.replace
def replace(source, target, *args, **kwargs):
    if os.path.basename(target) == {before!r}:
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(source, target, *args, **kwargs)
    if os.path.basename(target) == {after!r}:
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
"""


def run_killed(body: str, *, after_renaming: str | None = None, before_renaming: str | None = None) -> None:
    """Run ``body`` in a fresh interpreter that is SIGKILLed right after renaming a file onto
    ``after_renaming``, or right before renaming one onto ``before_renaming`` (else ``body`` kills itself)."""
    prefix = KILL_AT_RENAME.format(before=before_renaming, after=after_renaming)
    script = prefix + textwrap.dedent(body)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == -9, (result.returncode, result.stderr)


def test_a_set_published_whole_leaves_no_temporary_or_marker(tmp_path):
    npy = tmp_path / "set.npy"
    write_set(npy, 3, "a", 1.0, errors=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set.errors.jsonl", "set.files.jsonl", "set.jsonl", "set.npy"]
    write_set(npy, 2, "b", 2.0)  # no errors now: the stale list goes in the same change
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set.files.jsonl", "set.jsonl", "set.npy"]
    assert read_feature_set(npy).ids == ["b0", "b1"]


def test_a_kill_between_the_renames_is_completed_by_the_next_reader(tmp_path):
    npy = tmp_path / "set.npy"
    write_set(npy, 3, "old", 1.0)
    run_killed(
        f"""
        import numpy as np, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_publish import write_set
        write_set(__import__("pathlib").Path({str(npy)!r}), 5, "new", 2.0, errors=2)
        """,
        after_renaming="set.jsonl",  # the sidecar is renamed before the manifest and the matrix
    )
    # The crash left a real mix: the new sidecar beside the old matrix and manifest.
    assert publishing_path(npy).exists()
    assert len(np.load(npy, allow_pickle=False)) == 3
    assert len(npy.with_suffix(".jsonl").read_text().splitlines()) == 5
    assert errors_path(npy).exists()

    loaded = read_feature_set(npy)  # finishes the change first
    assert loaded.ids == [f"new{i}" for i in range(5)]
    np.testing.assert_array_equal(loaded.vectors, np.full((5, 4), 2.0, np.float32))
    assert [entry["id"] for entry in read_manifest(npy)] == loaded.ids
    assert len(errors_path(npy).read_text().splitlines()) == 2
    assert not publishing_path(npy).exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "temporaries left behind"


def test_a_kill_before_the_change_is_decided_keeps_the_old_set(tmp_path):
    npy = tmp_path / "set.npy"
    write_set(npy, 3, "old", 1.0)
    run_killed(  # killed as the marker's own temporary is about to be renamed into place
        f"""
        import os, signal
        from pathlib import Path
        import mmcli.output.atomic as atomic
        def dying_commit(temporary, final):
            os.kill(os.getpid(), signal.SIGKILL)
        atomic.commit = dying_commit
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_publish import write_set
        write_set(Path({str(npy)!r}), 5, "new", 2.0)
        """,
    )
    assert not publishing_path(npy).exists()
    assert read_feature_set(npy).ids == ["old0", "old1", "old2"]


def test_cli_reads_a_half_published_set_as_the_new_one(run_mmcli, tmp_path):
    npy = tmp_path / "index.npy"
    write_set(npy, 2, "old", 0.5)
    moves = []
    for name, lines in (("index.jsonl", records(3, "new")), ("index.files.jsonl", files(3, "new"))):
        temporary = tmp_path / f".{name}.part"
        temporary.write_text("".join(json.dumps(line) + "\n" for line in lines))
        moves.append((temporary, tmp_path / name))
    new_rows = np.eye(3, 4, dtype=np.float32)
    np.save(tmp_path / ".index.npy.part.npy", new_rows)
    moves.append((tmp_path / ".index.npy.part.npy", npy))
    # A change decided but not carried out: exactly what a kill right after the marker leaves.
    publishing_path(npy).write_text(json.dumps({
        "moves": [[t.name, f.name] for t, f in moves], "removals": ["index.errors.jsonl"]
    }))  # fmt: skip
    queries = tmp_path / "q.npy"
    with FeatureSetWriter(queries) as writer:
        writer.add(new_rows[2:3], records(1, "q"))
    result = run_mmcli("retrieve", "--index", npy, "--queries", queries, "-k", "1")
    assert result.returncode == 0, result.stderr
    hit = json.loads(result.stdout)["hits"][0]
    assert hit["id"] == "new2" and hit["score"] == pytest.approx(1.0)
    assert not publishing_path(npy).exists()


def test_caption_output_and_manifest_are_published_together(tmp_path):
    from mmcli.output.records import RecordWriter

    output = tmp_path / "captions.jsonl"
    with RecordWriter(output, settings={"model": "old"}) as writer:
        writer.write({"id": "a", "source": "a", "caption": "old"}, file={"id": "a", "path": "a"})
    run_killed(
        f"""
        from pathlib import Path
        from mmcli.output.records import RecordWriter
        with RecordWriter(Path({str(output)!r}), settings={{"model": "new"}}) as writer:
            for name in "bc":
                writer.write({{"id": name, "source": name, "caption": "new"}}, file={{"id": name, "path": name}})
        """,
        after_renaming="captions.files.jsonl",  # the manifest goes first, the captions after
    )
    assert json.loads(output.read_text())["caption"] == "old"  # the mix the kill left
    assert [entry["id"] for entry in read_manifest(output)] == ["b", "c"]  # settled on the way in
    assert [json.loads(line)["id"] for line in output.read_text().splitlines()] == ["b", "c"]


def test_a_finished_run_takes_its_journal_with_it_in_the_same_change(tmp_path):
    npy = tmp_path / "set.npy"
    journal = Journal(journal_path(npy), {"run": 1})
    with FeatureSetWriter(npy, journal=journal) as writer:
        writer.add(np.ones((2, 4), np.float32), records(2, "j"))
        writer.checkpoint(2)
    assert not journal_path(npy).exists()
    assert read_feature_set(npy).ids == ["j0", "j1"]


def test_publish_removes_folders_and_settle_is_idempotent(tmp_path):
    primary = tmp_path / "out.txt"
    temporary = tmp_path / ".out.txt.part"
    temporary.write_text("new")
    leftover = tmp_path / "out.partial"
    (leftover / "inner").mkdir(parents=True)
    publish(primary, [(temporary, primary)], [leftover, tmp_path / "never-existed"])
    assert primary.read_text() == "new" and not leftover.exists()
    assert settle(primary) is False


def test_an_unreadable_marker_is_an_error_not_a_guess(tmp_path):
    from mmcli.errors import InputError

    primary = tmp_path / "set.npy"
    publishing_path(primary).write_text("{not json")
    with pytest.raises(InputError, match="unfinished write"):
        settle(primary)


def test_a_journal_whose_files_lost_committed_data_starts_over(tmp_path):
    npy = tmp_path / "set.npy"
    journal = Journal(journal_path(npy), {"run": 1})
    journal.write("records.jsonl", b'{"id": "x"}\n')
    journal.commit(consumed=8, rows=1, dim=4)
    journal.close()
    os.truncate(journal.path("records.jsonl"), 0)  # committed bytes are gone (a damaged disk, a hand edit)
    again = Journal(journal_path(npy), {"run": 1})
    assert again.consumed == 0
    assert journal.path("records.jsonl").read_bytes() == b"", "never padded out to the committed size"
    again.close()


def test_extract_features_killed_while_publishing_is_complete_on_the_next_run(run_mmcli, run_mmcli_process, tiny_models,
                                                                             tmp_path):  # fmt: skip
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for index in range(12):
        Image.fromarray(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(folder / f"p{index:02d}.jpg")
    (folder / "broken.jpg").write_bytes(b"no image")
    args = ["extract-features", str(folder), "-o", str(tmp_path / "set.npy"), "--model", str(tiny_models["clip"]),
            "-b", "4", "-q"]  # fmt: skip
    # The real command, killed right after its sidecar took the final name (with the journal still in place).
    run_killed(f"import sys; sys.argv = ['mmcli', *{args!r}]; from mmcli.cli import main; main()",
               after_renaming="set.jsonl")  # fmt: skip
    assert (tmp_path / "set.partial").is_dir() and publishing_path(tmp_path / "set.npy").exists()

    again = run_mmcli(*args)  # the same command: it completes the output, says so, and has nothing left to do
    assert again.returncode == 0 and "is now complete" in again.stderr, again.stderr
    assert "error" not in again.stderr and again.stdout == ""
    assert not (tmp_path / "set.partial").exists() and not publishing_path(tmp_path / "set.npy").exists()
    # Compared to the bit with the killed run's rows: a process of its own too, with torch's default threads.
    whole = run_mmcli_process(*args[:3], str(tmp_path / "whole.npy"), *args[4:])
    assert whole.returncode == 1, whole.stderr
    got, want = read_feature_set(tmp_path / "set.npy"), read_feature_set(tmp_path / "whole.npy")
    assert got.records == want.records
    np.testing.assert_array_equal(got.vectors, want.vectors)
    for suffix in (".files.jsonl", ".errors.jsonl"):
        assert (tmp_path / f"set{suffix}").read_text() == (tmp_path / f"whole{suffix}").read_text()


def test_a_run_killed_before_its_publication_is_decided_leaves_no_temporaries(run_mmcli, tiny_models, photos,
                                                                              tmp_path):  # fmt: skip
    (tmp_path / "photos").mkdir()
    for photo in sorted(photos.iterdir())[:3]:
        shutil.copy(photo, tmp_path / "photos" / photo.name)
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"no image")
    args = ["extract-features", str(tmp_path / "photos"), "-o", str(tmp_path / "set.npy"),
            "--model", str(tiny_models["clip"]), "-q"]  # fmt: skip
    # Killed with the matrix, the error list and the plan of the renames written, before the plan takes its name.
    run_killed(f"import sys; sys.argv = ['mmcli', *{args!r}]; from mmcli.cli import main; main()",
               before_renaming=publishing_path(tmp_path / "set.npy").name)  # fmt: skip
    left = sorted(p.name.rsplit(".", 1)[-1] for p in tmp_path.iterdir() if p.name.startswith("."))
    # What the kill left: nothing is decided, so nothing is published; the lock file's lock died with the run.
    assert left == ["lock", "npy", "part", "tmp"], left
    assert not (tmp_path / "set.npy").exists() and (tmp_path / "set.partial").is_dir()

    again = run_mmcli(*args)  # resumes from the journal and publishes; the dead run's temporaries are gone
    assert again.returncode == 1 and "broken.jpg" in again.stderr, again.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "photos", "set.errors.jsonl", "set.files.jsonl", "set.jsonl", "set.npy"
    ]  # fmt: skip
    assert len(read_feature_set(tmp_path / "set.npy").ids) == 3


def test_a_set_that_cannot_be_published_keeps_the_old_one_and_the_journal(tmp_path, monkeypatch):
    import errno

    import mmcli.output.npy as features

    npy = tmp_path / "set.npy"
    write_set(npy, 2, "old", 1.0)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    settings = {"run": 1}
    journal = Journal(journal_path(npy), settings)
    writer = FeatureSetWriter(npy, journal=journal)
    writer.add(np.ones((3, 4), np.float32), records(3, "new"))
    writer.checkpoint(3)
    monkeypatch.setattr(features, "publish", disk_full)
    with pytest.raises(OSError, match="No space"):
        writer.close()
    assert read_feature_set(npy).ids == ["old0", "old1"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "temporaries left behind"
    monkeypatch.undo()

    resumed = Journal(journal_path(npy), settings)  # the committed rows are still there for a rerun
    assert resumed.consumed == 3
    with FeatureSetWriter(npy, journal=resumed):
        pass
    assert read_feature_set(npy).ids == ["new0", "new1", "new2"]


def test_caption_rerun_after_a_kill_while_publishing_completes_the_output_and_stops(run_mmcli, tiny_models, photos,
                                                                                    tmp_path):  # fmt: skip
    output = tmp_path / "captions.jsonl"
    output.write_text(json.dumps({"id": "a", "source": "a", "caption": "old"}) + "\n")
    temporary = tmp_path / ".captions.jsonl.part"
    temporary.write_text("".join(json.dumps({"id": n, "source": n, "caption": "new"}) + "\n" for n in "bc"))
    (tmp_path / "captions.partial").mkdir()  # the killed run's journal, which the change removes
    # A change decided but not carried out: exactly what a kill right after the marker leaves.
    publishing_path(output).write_text(
        json.dumps({"moves": [[temporary.name, output.name]], "removals": ["captions.partial"]})
    )
    again = run_mmcli("caption", photos, "-o", output, "--model", tiny_models["blip"])
    assert again.returncode == 0, again.stderr
    assert "is now complete" in again.stderr and "error" not in again.stderr, again.stderr
    assert [json.loads(line)["id"] for line in output.read_text().splitlines()] == ["b", "c"], "no further work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["captions.jsonl"]


def test_only_the_temporaries_of_the_named_outputs_are_swept(tmp_path):
    from mmcli.output.atomic import sweep_temporaries, temporary_sibling

    npy = tmp_path / "set.npy"
    ours = [temporary_sibling(npy, suffix) for suffix in (".part", ".rows", ".npy", ".publishing.tmp")]
    kept = [publishing_path(npy), temporary_sibling(tmp_path / "set.faiss"), tmp_path / ".set.npy.notes",
            tmp_path / ".set.npy.a1b2c3d4", tmp_path / "set.npy"]  # fmt: skip
    for path in kept:
        path.touch()
    sweep_temporaries(npy, tmp_path / "absent-folder" / "x.npy")
    assert not [path for path in ours if path.exists()]
    assert all(path.exists() for path in kept)

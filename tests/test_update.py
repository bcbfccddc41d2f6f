"""``--update`` (extract-features, caption): after files are added, deleted, renamed and modified, the output
equals a fresh run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from mmcli.output.feature_set import read_feature_set


@pytest.fixture
def library(tmp_path):
    folder = tmp_path / "library"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for index in range(40):
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(folder / f"p{index:02d}.jpg")
    return folder


def extract(run_mmcli, folder, out, model, *extra):
    return run_mmcli("extract-features", folder, "-o", out, "--model", model, "-b", "8", *extra)


def test_update_after_add_delete_rename_modify_equals_a_fresh_run(run_mmcli, tiny_models, library, tmp_path):
    model = tiny_models["clip"]
    out = tmp_path / "set.npy"
    assert extract(run_mmcli, library, out, model, "-q").returncode == 0
    header, *manifest = [json.loads(line) for line in (tmp_path / "set.files.jsonl").read_text().splitlines()]
    assert header["settings"]["model"] == str(model) and header["settings"]["normalize"] is True
    assert [entry["id"] for entry in manifest] == read_feature_set(out).ids and "blake2b" in manifest[0]

    (library / "p03.jpg").rename(library / "renamed.jpg")  # same content, new name: reused, not re-embedded
    (library / "p10.jpg").unlink()  # gone: dropped
    shutil.copy(library / "p20.jpg", library / "p20_copy.jpg")  # a duplicate: reused
    Image.new("RGB", (30, 30), "red").save(library / "p30.jpg")  # modified: embedded again
    Image.new("RGB", (30, 30), "blue").save(library / "a_new.jpg")  # new: embedded
    (library / "broken.jpg").write_bytes(b"not an image")  # fails as in a fresh run

    updated = extract(run_mmcli, library, out, model, "--update")
    assert updated.returncode == 1, updated.stderr  # the broken file, as a fresh run reports it
    assert "2 recognised by content" in updated.stderr and "1 dropped" in updated.stderr
    assert "2 embedded" in updated.stderr  # p30 and a_new only

    fresh = tmp_path / "fresh.npy"
    assert extract(run_mmcli, library, fresh, model, "-q").returncode == 1
    got, want = read_feature_set(out), read_feature_set(fresh)
    assert got.records == want.records  # row for row, order included
    # Equal to float32 rounding: an image's embedding moves in the last bits with its batch neighbours.
    np.testing.assert_allclose(got.vectors, want.vectors, rtol=0, atol=1e-6)
    assert (tmp_path / "set.files.jsonl").read_text() == (tmp_path / "fresh.files.jsonl").read_text()
    assert (tmp_path / "set.errors.jsonl").read_text() == (tmp_path / "fresh.errors.jsonl").read_text()


def test_keep_missing_keeps_rows_of_vanished_files_at_the_end(run_mmcli, tiny_models, library, tmp_path):
    model = tiny_models["clip"]
    out = tmp_path / "set.npy"
    assert extract(run_mmcli, library, out, model, "-q").returncode == 0
    before = read_feature_set(out)
    vanished = before.ids[5]
    (library / "p05.jpg").unlink()
    done = extract(run_mmcli, library, out, model, "--update", "--keep-missing", "-q")
    assert done.returncode == 0, done.stderr
    after = read_feature_set(out)
    assert after.ids == [*[i for i in before.ids if i != vanished], vanished]
    np.testing.assert_array_equal(after.vectors[-1], before.vectors[5])


def test_update_refusals(run_mmcli, tiny_models, library, tmp_path):
    missing = extract(run_mmcli, library, tmp_path / "none.npy", tiny_models["clip"], "--update")
    assert missing.returncode == 2 and "does not exist yet" in missing.stderr
    out = tmp_path / "set.npy"
    assert extract(run_mmcli, library, out, tiny_models["clip"], "-q").returncode == 0
    other = extract(run_mmcli, library, out, tiny_models["siglip"], "--update")
    assert other.returncode == 2 and "same --model" in other.stderr
    before = out.read_bytes()
    unnormalised = extract(run_mmcli, library, out, tiny_models["clip"], "--update", "--no-normalize")
    assert unnormalised.returncode == 2
    assert "normalize=True" in unnormalised.stderr and "normalize=False" in unnormalised.stderr
    assert out.read_bytes() == before  # refused before anything was written


def caption(run_mmcli, folder, out, model, *extra):
    return run_mmcli("caption", folder, "-o", out, "--model", model, "-b", "4",
                     "--min-new-tokens", "3", "--max-new-tokens", "3", *extra)  # fmt: skip


def test_caption_update_equals_a_fresh_run_and_captions_only_what_changed(run_mmcli, tiny_models, library, tmp_path):
    model = tiny_models["blip"]
    out = tmp_path / "captions.jsonl"
    assert caption(run_mmcli, library, out, model, "-q").returncode == 0
    header = json.loads((tmp_path / "captions.files.jsonl").read_text().splitlines()[0])
    assert header["settings"]["options"]["max_new_tokens"] == 3

    (library / "p03.jpg").rename(library / "renamed.jpg")
    (library / "p10.jpg").unlink()
    Image.new("RGB", (30, 30), "red").save(library / "p30.jpg")
    Image.new("RGB", (30, 30), "blue").save(library / "a_new.jpg")
    (library / "broken.jpg").write_bytes(b"not an image")

    updated = caption(run_mmcli, library, out, model, "--update")
    assert updated.returncode == 1, updated.stderr  # the broken file, as a fresh run reports it
    assert "38 inputs kept (1 recognised by content)" in updated.stderr
    assert "2 captioned, 1 dropped; 1 failed" in updated.stderr

    fresh = tmp_path / "fresh.jsonl"
    assert caption(run_mmcli, library, fresh, model, "-q").returncode == 1
    assert out.read_text() == fresh.read_text()  # record for record, order and error record included
    assert (tmp_path / "captions.files.jsonl").read_text() == (tmp_path / "fresh.files.jsonl").read_text()

    longer = caption(run_mmcli, library, out, model, "--update", "--max-new-tokens", "5")
    assert longer.returncode == 2 and "--update must use the same settings" in longer.stderr
    assert out.read_text() == fresh.read_text()
    text = caption(run_mmcli, library, tmp_path / "c.txt", model, "--update", "--format", "text")
    assert text.returncode == 2 and "existing -o JSONL" in text.stderr


def test_reused_rows_take_the_ids_a_fresh_run_gives_the_current_inputs(tmp_path):
    """Rows made under other ids (a run fed JSONL from stdin with its own ids, say) are carried under the
    ids a fresh run over these files gives: an image's row, and a video's segments with no summary."""
    from mmcli.incremental import plan_update
    from mmcli.io.inputs import discover_images
    from mmcli.output.manifest import file_entry

    (tmp_path / "a.jpg").write_bytes(b"image bytes")
    (tmp_path / "v.mp4").write_bytes(b"video bytes")
    photo, video = str(tmp_path / "a.jpg"), str(tmp_path / "v.mp4")
    records = [
        {"id": "holiday-1", "source": photo, "caption": "a beach", "model": "m"},
        {"id": "clip-7#t=0.000,1.000", "source": video, "t": 0.0, "end": 1.0, "caption": "a dog", "model": "m"},
        {"id": "clip-7#t=1.000,2.000", "source": video, "t": 1.0, "end": 2.0, "caption": "a cat", "model": "m"},
    ]
    manifest = [file_entry(records[0]["id"], photo), *(file_entry(r["id"], video) for r in records[1:])]
    items = list(discover_images([str(tmp_path)], videos=True))
    plan = plan_update(items, records, manifest, name="captions.jsonl")
    assert sorted(plan.reuse) == [0, 1] and not plan.embed

    image_records, image_entries = plan.carried(0, items[0], records, manifest)
    assert image_records == [{"id": photo, "source": photo, "caption": "a beach", "model": "m"}]
    assert image_entries == [{**manifest[0], "id": photo}]
    segments, entries = plan.carried(1, items[1], records, manifest)
    assert [s["id"] for s in segments] == [f"{video}#t=0.000,1.000", f"{video}#t=1.000,2.000"]
    assert [s["caption"] for s in segments] == ["a dog", "a cat"] and [e["id"] for e in entries] == [
        s["id"] for s in segments
    ]

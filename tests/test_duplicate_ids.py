"""One rule for repeated input ids in every command that writes a set or a record stream: the first
occurrence is kept, each later one is a failed item (reported, an error record, exit status 1)."""

from __future__ import annotations

import json

from mmcli.output.feature_set import read_feature_set
from mmcli.output.npy import errors_path


def _lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_extract_features_keeps_the_first_of_a_repeated_file(run_mmcli, tiny_models, photos, tmp_path):
    photo = str(photos / "chelsea.jpg")
    out = tmp_path / "feats.npy"
    result = run_mmcli("extract-features", photo, str(photos / "coffee.jpg"), photo, "-o", out,
                       "--model", tiny_models["clip"])  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and f"skipping {photo}: duplicate id" in result.stderr
    assert read_feature_set(out).ids == [photo, str(photos / "coffee.jpg")]
    (error,) = _lines(errors_path(out).read_text())
    assert error["id"] == photo and "duplicate id" in error["error"]
    assert not (tmp_path / "feats.partial").exists()


def test_repeated_ids_on_stdin_are_failed_items(run_mmcli, tiny_models, photos, tmp_path):
    records = [{"path": str(photos / name), "id": "same"} for name in ("chelsea.jpg", "rocket.jpg")]
    stdin = "".join(json.dumps(record) + "\n" for record in records)
    out = tmp_path / "feats.npy"
    result = run_mmcli("extract-features", "-", "-o", out, "--model", tiny_models["clip"], input=stdin)
    assert result.returncode == 1, result.stderr
    feature_set = read_feature_set(out)
    assert feature_set.ids == ["same"] and feature_set.records[0]["source"] == str(photos / "chelsea.jpg")

    repeated = '{"id": "t", "text": "a cat"}\n{"id": "t", "text": "a dog"}\n'
    texts = run_mmcli("extract-features", "--modality", "text", "-", "-o", tmp_path / "texts.npy", "--model",
                      tiny_models["clip"], input=repeated)  # fmt: skip
    assert texts.returncode == 1 and read_feature_set(tmp_path / "texts.npy").ids == ["t"], texts.stderr


def test_caption_writes_one_record_per_id(run_mmcli, tiny_models, photos, tmp_path):
    photo = str(photos / "astronaut.jpg")
    out = tmp_path / "captions.jsonl"
    result = run_mmcli("caption", photo, photo, "-o", out, "--model", tiny_models["blip"])
    assert result.returncode == 1, result.stderr
    first, second = _lines(out.read_text())
    assert first["id"] == photo and "caption" in first
    assert second["id"] == photo and "duplicate id" in second["error"] and "caption" not in second


def test_update_with_a_repeated_file_equals_a_fresh_run(run_mmcli, tiny_models, photos, tmp_path):
    folder = tmp_path / "album"
    folder.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg"):
        (folder / name).write_bytes((photos / name).read_bytes())
    model = ["--model", tiny_models["clip"]]
    out = tmp_path / "feats.npy"
    assert run_mmcli("extract-features", folder, "-o", out, *model).returncode == 0
    (folder / "rocket.jpg").write_bytes((photos / "rocket.jpg").read_bytes())
    again = [folder, str(folder / "coffee.jpg")]  # coffee.jpg twice: once in the folder, once by name
    updated = run_mmcli("extract-features", *again, "-o", out, "--update", *model)
    fresh = run_mmcli("extract-features", *again, "-o", tmp_path / "fresh.npy", *model)
    assert updated.returncode == fresh.returncode == 1, updated.stderr + fresh.stderr
    assert read_feature_set(out).records == read_feature_set(tmp_path / "fresh.npy").records
    assert errors_path(out).read_text() == errors_path(tmp_path / "fresh.npy").read_text()

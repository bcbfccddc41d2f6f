"""Feature sets no command can use are refused by every command that reads them, with one line naming
what is wrong: non-finite rows (by row), an empty set, sidecar lines lacking a required key or
repeating an id (by file and line). Nothing is written, and there is no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmcli.errors import InputError
from mmcli.output.feature_set import read_feature_set


def write_set(npy: Path, matrix: np.ndarray, model: str = "m", records: list[dict] | None = None) -> Path:
    np.save(npy, np.asarray(matrix, np.float32))
    if records is None:
        records = [
            {"id": f"r{i}", "modality": "image", "model": model, "source": f"r{i}.jpg"} for i in range(len(matrix))
        ]
    npy.with_suffix(".jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    return npy


def assert_one_line_refusal(result, folder: Path, before: set[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmcli: error: "), result.stderr
    assert result.stdout == ""
    assert {p.name for p in folder.iterdir()} == before, "a refused command left files behind"
    return lines[0]


@pytest.fixture(scope="module")
def width(tiny_models) -> int:
    """The width of the tiny CLIP's embeddings, so ``classify --features`` gets as far as the rows."""
    from mmcli.encoders import load_encoder

    return int(load_encoder(str(tiny_models["clip"]), device="cpu").encode_texts(["a cat"]).shape[1])


def commands(npy: Path, out: Path, tiny_models) -> dict[str, list]:
    return {
        "classify": ["classify", "--features", npy, "--labels", "cat,dog", "--model", tiny_models["clip"], "-o", out],
        "index": ["index", "build", npy],
        "retrieve": ["retrieve", "--index", npy, "--queries", npy.with_name("q.npy"), "-o", out],
        "fuse": ["fuse", npy, npy.with_name("other.npy"), "-o", out.with_suffix(".npy")],
    }


COMMANDS = ["classify", "index", "retrieve", "fuse"]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_non_finite_rows_are_refused_naming_the_row(run_mmcli, tiny_models, width, tmp_path, command, bad):
    rows = np.full((4, width), 1 / np.sqrt(width), np.float32)
    rows[2, 1] = float(bad)
    npy = write_set(tmp_path / "feats.npy", rows, model=str(tiny_models["clip"]))
    write_set(tmp_path / "q.npy", rows[:1] * 0 + 1 / np.sqrt(width), model=str(tiny_models["clip"]))
    write_set(tmp_path / "other.npy", np.ones((4, width), np.float32))
    before = {p.name for p in tmp_path.iterdir()}
    result = run_mmcli(*commands(npy, tmp_path / "out.jsonl", tiny_models)[command])
    line = assert_one_line_refusal(result, tmp_path, before)
    assert "row 2" in line and "NaN or infinite" in line, line


@pytest.mark.parametrize("command", COMMANDS)
def test_a_set_with_no_rows_is_refused(run_mmcli, tiny_models, width, tmp_path, command):
    npy = write_set(tmp_path / "feats.npy", np.zeros((0, width), np.float32))
    write_set(tmp_path / "q.npy", np.ones((1, width), np.float32))
    write_set(tmp_path / "other.npy", np.ones((2, width), np.float32))
    before = {p.name for p in tmp_path.iterdir()}
    result = run_mmcli(*commands(npy, tmp_path / "out.jsonl", tiny_models)[command])
    line = assert_one_line_refusal(result, tmp_path, before)
    assert f"{npy} has no rows" in line, line


def test_library_calls_refuse_what_the_commands_refuse(tmp_path):
    from mmcli.ann import index_feature_set
    from mmcli.classify import Classes, classify_features
    from mmcli.search import search_set

    nan = np.ones((3, 4), np.float32)
    nan[1, 0] = np.nan
    classes = Classes(["a", "b"], np.eye(2, 4, dtype=np.float32), 100.0, None)
    with pytest.raises(InputError, match=r"row 1 \(id 'r1'\)"):
        classify_features(read_feature_set(write_set(tmp_path / "nan.npy", nan)), classes)
    with pytest.raises(InputError, match=r"row 1 \(id 'r1'\)"):
        index_feature_set(tmp_path / "nan.npy")
    empty = read_feature_set(write_set(tmp_path / "empty.npy", np.zeros((0, 4), np.float32)))
    with pytest.raises(InputError, match="has no rows"):
        search_set(empty, np.ones((1, 4), np.float32), 3)
    with pytest.raises(InputError, match="has no rows"):
        classify_features(empty, classes)
    assert not (tmp_path / "nan.faiss").exists()


# --- the sidecar ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["id", "modality", "model", "source"])
def test_a_sidecar_line_lacking_a_required_key_is_refused_naming_file_and_line(tmp_path, key):
    records = [{"id": f"r{i}", "modality": "image", "model": "m", "source": f"r{i}.jpg"} for i in range(3)]
    del records[1][key]
    npy = write_set(tmp_path / "feats.npy", np.ones((3, 4)), records=records)
    with pytest.raises(InputError, match=rf"feats.jsonl:2: record lacks '{key}'"):
        read_feature_set(npy)


def test_duplicate_ids_are_refused_naming_both_lines(tmp_path):
    records = [{"id": name, "modality": "image", "model": "m", "source": name} for name in ("a", "b", "c", "b")]
    npy = write_set(tmp_path / "feats.npy", np.ones((4, 4)), records=records)
    with pytest.raises(InputError, match=r"feats.jsonl: id 'b' appears on rows 1 and 3 \(lines 2 and 4\)"):
        read_feature_set(npy)


@pytest.mark.parametrize("flaw", ["no_id", "duplicate"])
def test_retrieve_refuses_a_flawed_sidecar_in_one_line(run_mmcli, tmp_path, flaw):
    records = [{"id": f"r{i}", "modality": "image", "model": "m", "source": f"r{i}.jpg"} for i in range(3)]
    if flaw == "no_id":
        del records[2]["id"]
    else:
        records[2]["id"] = "r0"
    npy = write_set(tmp_path / "feats.npy", np.eye(3, 4), records=records)
    write_set(tmp_path / "q.npy", np.eye(1, 4))
    before = {p.name for p in tmp_path.iterdir()}
    result = run_mmcli("retrieve", "--index", npy, "--queries", tmp_path / "q.npy", "-o", tmp_path / "hits.jsonl")
    line = assert_one_line_refusal(result, tmp_path, before)
    assert "feats.jsonl" in line and ("feats.jsonl:3" in line if flaw == "no_id" else "lines 1 and 3" in line), line

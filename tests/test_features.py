"""Feature-set files: streaming writer, atomic publication, and a reader that refuses bad pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmcli.errors import InputError, OutputExists, UsageError
from mmcli.output.destination import check_output_path
from mmcli.output.feature_set import read_feature_set
from mmcli.output.npy import FeatureSetWriter


def _records(ids):
    return [{"id": i, "modality": "text", "model": "m", "source": f"text {i}", "lang": "en"} for i in ids]


def test_writer_streams_batches_into_a_valid_pair(tmp_path):
    out = tmp_path / "feats.npy"
    rng = np.random.default_rng(0)
    first, second = rng.standard_normal((3, 5)), rng.standard_normal((2, 5))
    with FeatureSetWriter(out) as writer:
        writer.add(first, _records(["a", "b", "c"]))
        assert not out.exists(), "nothing appears under the final name before close"
        writer.add(second, _records(["d", "e"]))

    matrix = np.load(out, allow_pickle=False)
    assert matrix.dtype == np.float32 and matrix.shape == (5, 5)
    np.testing.assert_allclose(matrix, np.concatenate([first, second]).astype(np.float32))
    lines = (tmp_path / "feats.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a", "b", "c", "d", "e"]
    assert json.loads(lines[0])["lang"] == "en"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats.jsonl", "feats.npy"], "no temporary files left"

    loaded = read_feature_set(out)
    assert len(loaded) == 5 and loaded.ids == ["a", "b", "c", "d", "e"]
    assert isinstance(loaded.vectors, np.memmap)


def test_float16_storage(tmp_path):
    out = tmp_path / "half.npy"
    with FeatureSetWriter(out, dtype="float16") as writer:
        writer.add(np.ones((2, 4)), _records(["a", "b"]))
    assert np.load(out).dtype == np.float16


def test_exception_inside_the_block_leaves_no_pair_and_keeps_old_outputs(tmp_path):
    out = tmp_path / "feats.npy"
    with FeatureSetWriter(out) as writer:
        writer.add(np.zeros((1, 3)), _records(["old"]))
    before = out.read_bytes()

    with pytest.raises(RuntimeError), FeatureSetWriter(out) as writer:
        writer.add(np.ones((4, 3)), _records(list("abcd")))
        raise RuntimeError("killed half way")

    assert out.read_bytes() == before
    assert read_feature_set(out).ids == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats.jsonl", "feats.npy"]


def test_errors_go_beside_the_set_and_never_become_rows(tmp_path):
    out = tmp_path / "feats.npy"
    with FeatureSetWriter(out) as writer:
        writer.add(np.ones((1, 3)), _records(["good"]))
        writer.add_error({"id": "bad", "source": "bad.jpg", "error": "corrupt image"})
    assert read_feature_set(out).ids == ["good"]
    errors = [json.loads(line) for line in (tmp_path / "feats.errors.jsonl").read_text().splitlines()]
    assert errors == [{"id": "bad", "source": "bad.jpg", "error": "corrupt image"}]

    with FeatureSetWriter(out) as writer:  # a clean rerun clears the stale error list
        writer.add(np.ones((1, 3)), _records(["good"]))
    assert not (tmp_path / "feats.errors.jsonl").exists()


def test_writer_rejects_inconsistent_rows(tmp_path):
    with FeatureSetWriter(tmp_path / "x.npy") as writer:
        writer.add(np.ones((1, 3)), _records(["a"]))
        with pytest.raises(ValueError, match="duplicate id"):
            writer.add(np.ones((1, 3)), _records(["a"]))
        with pytest.raises(ValueError, match="row width"):
            writer.add(np.ones((1, 4)), _records(["b"]))
        with pytest.raises(ValueError, match="lacks"):
            writer.add(np.ones((1, 3)), [{"id": "c"}])


def test_reader_refuses_row_count_mismatch(tmp_path):
    out = tmp_path / "feats.npy"
    np.save(out, np.ones((3, 2), np.float32))
    (tmp_path / "feats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records(["a", "b"])))
    with pytest.raises(InputError, match=r"3 rows but .* 2 records"):
        read_feature_set(out)


def test_reader_refuses_pickled_object_arrays(tmp_path):
    out = tmp_path / "evil.npy"
    np.save(out, np.array([{"x": 1}, None], dtype=object), allow_pickle=True)
    (tmp_path / "evil.jsonl").write_text("")
    with pytest.raises(InputError, match="not a plain numeric"):
        read_feature_set(out)


def test_reader_names_the_broken_sidecar_line(tmp_path):
    out = tmp_path / "feats.npy"
    np.save(out, np.ones((2, 2), np.float32))
    (tmp_path / "feats.jsonl").write_text(json.dumps(_records(["a"])[0]) + "\n{broken\n")
    with pytest.raises(InputError, match=r"feats\.jsonl:2"):
        read_feature_set(out)


def test_check_output_path(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "x.npy", overwrite=False)
    with pytest.raises(UsageError, match=r"must end in \.npy"):
        check_output_path(tmp_path / "x.txt", overwrite=False)
    (tmp_path / "x.npy").write_bytes(b"")
    with pytest.raises(OutputExists, match="--overwrite"):
        check_output_path(tmp_path / "x.npy", overwrite=False)
    assert check_output_path(tmp_path / "x.npy", overwrite=True) == tmp_path / "x.npy"


def test_every_public_name_of_the_package_resolves():
    import mmcli

    for name in mmcli.__all__:
        assert getattr(mmcli, name) is not None, name


def test_models_of_rows_fused_twice_are_the_inner_names(tmp_path):
    import json

    import numpy as np

    from mmcli.output.feature_set import read_feature_set

    np.save(tmp_path / "f.npy", np.ones((2, 3), np.float32))
    records = [
        {"id": "a", "modality": "fused", "model": [["clip", "dino"], "siglip"], "source": "a"},
        {"id": "b", "modality": "fused", "model": [["clip", "dino"], "siglip"], "source": "b"},
    ]
    (tmp_path / "f.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert read_feature_set(tmp_path / "f.npy").models == {"clip", "dino", "siglip"}

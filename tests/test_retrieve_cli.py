"""``mmcli retrieve`` end to end on a tiny CLIP: text->image, image->image, image->text."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmcli.output.feature_set import read_feature_set


@pytest.fixture(scope="module")
def feature_sets(tmp_path_factory, tiny_models, photos, run_mmcli):
    folder = tmp_path_factory.mktemp("sets")
    model = str(tiny_models["clip"])
    commands = [
        ["extract-features", str(photos), "-o", str(folder / "photos.npy"), "--model", model, "-q"],
        [
            "extract-features",
            "--text",
            "a photo of a cat",
            "--text",
            "a rocket",
            "--text",
            "coffee",
            "-o",
            str(folder / "texts.npy"),
            "--model",
            model,
            "-q",
        ],
    ]
    for command in commands:
        result = run_mmcli(*command)
        assert result.returncode == 0, result.stderr
    return folder


def _brute_force(index, queries, k):
    scores = queries @ index.T
    return [np.lexsort((np.arange(len(row)), -row))[:k] for row in scores]


def test_text_query_ranks_images_like_brute_force(run_mmcli, tiny_models, feature_sets):
    from mmcli.encoders import load_encoder

    result = run_mmcli("retrieve", "--index", feature_sets / "photos.npy", "--query", "a photo of a cat", "-k", "3")
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["query_id"] == "1" and record["query"] == "a photo of a cat"
    photos = read_feature_set(feature_sets / "photos.npy")
    query = load_encoder(str(tiny_models["clip"]), device="cpu").encode_texts(["a photo of a cat"])
    expected = _brute_force(np.asarray(photos.vectors), query, 3)[0]
    assert [hit["id"] for hit in record["hits"]] == [photos.ids[row] for row in expected]
    assert [hit["rank"] for hit in record["hits"]] == [1, 2, 3]
    scores = [hit["score"] for hit in record["hits"]]
    np.testing.assert_allclose(scores, (query @ np.asarray(photos.vectors).T)[0][expected], atol=1e-5)


def test_image_to_image_excludes_itself_and_image_to_text(run_mmcli, feature_sets, photos):
    cat = str(photos / "chelsea.jpg")
    similar = run_mmcli("retrieve", "--index", feature_sets / "photos.npy", "--query-image", cat, "--exclude-self")
    hits = json.loads(similar.stdout)["hits"]
    assert similar.returncode == 0 and len(hits) == 3 and cat not in [hit["id"] for hit in hits]

    to_text = run_mmcli("retrieve", "--index", feature_sets / "texts.npy", "--query-image", cat, "-k", "1")
    (hit,) = json.loads(to_text.stdout)["hits"]
    assert hit["source"] in {"a photo of a cat", "a rocket", "coffee"}


def test_feature_set_queries_and_metadata(run_mmcli, feature_sets):
    result = run_mmcli(
        "retrieve",
        "--index",
        feature_sets / "photos.npy",
        "--queries",
        feature_sets / "texts.npy",
        "-k",
        "2",
        "--with-metadata",
    )
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["query_id"] for r in records] == ["1", "2", "3"]
    assert all(hit["modality"] == "image" for r in records for hit in r["hits"])
    texts, photos = read_feature_set(feature_sets / "texts.npy"), read_feature_set(feature_sets / "photos.npy")
    expected = _brute_force(np.asarray(photos.vectors), np.asarray(texts.vectors), 2)
    assert [[hit["id"] for hit in r["hits"]] for r in records] == [[photos.ids[i] for i in rows] for rows in expected]


def test_stdin_queries_and_errors(run_mmcli, feature_sets, tmp_path):
    lines = '{"id": "q-cat", "text": "a cat"}\nplain text query\n'
    result = run_mmcli("retrieve", "--index", feature_sets / "photos.npy", "--queries", "-", "-k", "1", input=lines)
    assert [json.loads(line)["query_id"] for line in result.stdout.splitlines()] == ["q-cat", "2"]

    np.save(tmp_path / "wrong.npy", np.ones((1, 7), np.float32))
    (tmp_path / "wrong.jsonl").write_text(
        json.dumps({"id": "x", "modality": "text", "model": "m", "source": "x"}) + "\n"
    )
    mismatch = run_mmcli("retrieve", "--index", feature_sets / "photos.npy", "--queries", tmp_path / "wrong.npy")
    assert mismatch.returncode == 2 and "7 dimensions" in mismatch.stderr and "Traceback" not in mismatch.stderr
    missing = run_mmcli("retrieve", "--index", tmp_path / "nope.npy", "--query", "x")
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_queries_of_the_same_width_from_another_model_are_refused_unless_model_is_given(
    run_mmcli, tiny_models, feature_sets, tmp_path
):
    texts = read_feature_set(feature_sets / "texts.npy")
    np.save(tmp_path / "other.npy", np.asarray(texts.vectors))
    with open(tmp_path / "other.jsonl", "w") as handle:
        for record in texts.records:
            handle.write(json.dumps({**record, "model": "openai/clip-vit-large-patch14"}) + "\n")
    index = feature_sets / "photos.npy"
    refused = run_mmcli("retrieve", "--index", index, "--queries", tmp_path / "other.npy", "-k", "1")
    assert refused.returncode == 2, refused.stderr
    assert "'openai/clip-vit-large-patch14'" in refused.stderr and repr(str(tiny_models["clip"])) in refused.stderr
    assert "--model" in refused.stderr and refused.stdout == ""
    forced = run_mmcli("retrieve", "--index", index, "--queries", tmp_path / "other.npy", "-k", "1",
                       "--model", tiny_models["clip"])  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    assert len(forced.stdout.splitlines()) == 3


def test_example_search_pipeline_with_jq(tiny_models, warm_env):
    import subprocess

    from conftest import EXAMPLES

    result = subprocess.run(
        ["bash", str(EXAMPLES / "search.sh"), "a rocket"],
        capture_output=True,
        text=True,
        env={**warm_env, "MMCLI_MODEL": str(tiny_models["clip"]), "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [row[0] for row in rows] == ["1", "2", "3"]
    assert all(row[2].endswith(".jpg") for row in rows)
    scores = [float(row[1]) for row in rows]
    assert scores == sorted(scores, reverse=True)

"""``mmcli score`` and ``mmcli select``: scores equal their hand computation (the image-text cosine;
LAION's aesthetic MLP run from its state dict; a safetensors linear stack with ReLU), selections are
valid feature sets whose search equals the full set's restricted to the chosen ids, and bad input is
one line, exit 2, nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_feature_set_refusals import assert_one_line_refusal, write_set

from mmcli.output.feature_set import read_feature_set
from mmcli.retrieval import search


@pytest.fixture
def sets(tmp_path):
    """Image rows (40 x 768, CLIP ViT-L/14's width) and text rows for 30 of the same ids (the others have
    no caption), plus 5 text rows of ids no image has."""
    rng = np.random.default_rng(3)
    images = rng.standard_normal((40, 768)).astype(np.float32)
    noise = np.linspace(0.3, 3.0, 30)[:, None] * rng.standard_normal((30, 768))  # cosines from ~0.95 to ~0.3
    texts = (images[:30] + noise).astype(np.float32)
    ids = [f"img{i:02d}.jpg" for i in range(40)]
    image_records = [{"id": i, "modality": "image", "model": "m", "source": i} for i in ids]
    text_ids = ids[:30][::-1] + [f"other{i}" for i in range(5)]  # another order, and strangers
    text_rows = np.concatenate([texts[::-1], rng.standard_normal((5, 768)).astype(np.float32)])
    text_records = [{"id": i, "modality": "text", "model": "m", "source": "a caption"} for i in text_ids]
    return (
        write_set(tmp_path / "images.npy", images, records=image_records),
        write_set(tmp_path / "texts.npy", text_rows, records=text_records),
        images,
        texts,
    )


def _lines(result) -> list[dict]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_pair_scores_are_the_cosine_of_each_id_s_rows(run_mmcli, sets):
    images_npy, texts_npy, images, texts = sets
    result = run_mmcli("score", images_npy, "--texts", texts_npy)
    scores = _lines(result)
    assert [s["id"] for s in scores] == [f"img{i:02d}.jpg" for i in range(30)]  # the image set's order
    expected = (images[:30] * texts).sum(1) / np.linalg.norm(images[:30], axis=1) / np.linalg.norm(texts, axis=1)
    np.testing.assert_allclose([s["score"] for s in scores], expected, atol=1e-6)
    assert "scored 30 rows; 10 rows without a text row of its id" in result.stderr


def laion_aesthetic_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The layout of LAION's improved aesthetic predictor (sac+logos+ava1-l14-linearMSE.pth):
    Linear(768, 1024), Dropout, Linear(1024, 128), Dropout, Linear(128, 64), Dropout, Linear(64, 16),
    Linear(16, 1), as ``layers.0`` ... ``layers.7`` of an ``nn.Sequential``."""
    torch.manual_seed(seed)
    layers = torch.nn.Sequential(
        torch.nn.Linear(768, 1024), torch.nn.Dropout(0.2), torch.nn.Linear(1024, 128), torch.nn.Dropout(0.2),
        torch.nn.Linear(128, 64), torch.nn.Dropout(0.1), torch.nn.Linear(64, 16), torch.nn.Linear(16, 1),
    )  # fmt: skip
    return {f"layers.{key}": value for key, value in layers.state_dict().items()}


def test_the_aesthetic_predictor_s_forward_pass_from_its_state_dict(run_mmcli, sets, tmp_path):
    images_npy, _, images, _ = sets
    state = laion_aesthetic_state_dict()
    torch.save(state, tmp_path / "aesthetic.pth")
    scores = _lines(run_mmcli("score", images_npy, "--head", tmp_path / "aesthetic.pth"))
    x = images.astype(np.float64) / np.linalg.norm(images, axis=1, keepdims=True)  # normalised CLIP rows
    for layer in (0, 2, 4, 6, 7):  # linear throughout, as the predictor's MLP is (dropout is off at inference)
        x = x @ state[f"layers.{layer}.weight"].double().numpy().T + state[f"layers.{layer}.bias"].double().numpy()
    np.testing.assert_allclose([s["score"] for s in scores], x[:, 0], atol=1e-6)
    raw = _lines(run_mmcli("score", images_npy, "--head", tmp_path / "aesthetic.pth", "--no-normalize"))
    assert raw != scores


def test_a_safetensors_linear_stack_with_relu(run_mmcli, sets, tmp_path):
    from safetensors.numpy import save_file

    images_npy, _, images, _ = sets
    rng = np.random.default_rng(5)
    w1, b1 = rng.standard_normal((8, 768)).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    w2, b2 = rng.standard_normal((1, 8)).astype(np.float32), rng.standard_normal(1).astype(np.float32)
    head = tmp_path / "head.safetensors"
    save_file({"0.weight": w1, "0.bias": b1, "2.weight": w2, "2.bias": b2}, str(head), metadata={"activation": "relu"})
    x = images.astype(np.float64) / np.linalg.norm(images, axis=1, keepdims=True)
    expected = (np.maximum(x @ w1.T + b1, 0) @ w2.T + b2)[:, 0]
    np.testing.assert_allclose([s["score"] for s in _lines(run_mmcli("score", images_npy, "--head", head))],
                               expected, atol=1e-6)  # fmt: skip
    linear = _lines(run_mmcli("score", images_npy, "--head", head, "--activation", "none"))
    np.testing.assert_allclose([s["score"] for s in linear], ((x @ w1.T + b1) @ w2.T + b2)[:, 0], atol=1e-6)


def test_select_writes_a_valid_set_whose_search_is_the_full_set_s_restricted(run_mmcli, sets, tmp_path):
    images_npy, texts_npy, images, _ = sets
    scores = tmp_path / "scores.jsonl"
    assert run_mmcli("score", images_npy, "--texts", texts_npy, "-o", scores).returncode == 0
    out = tmp_path / "chosen.npy"
    made = run_mmcli("select", images_npy, "--join", scores, "--where", "score >= 0.5", "-o", out)
    assert made.returncode == 0, made.stderr
    by_id = {json.loads(line)["id"]: json.loads(line)["score"] for line in scores.read_text().splitlines()}
    wanted = [i for i in read_feature_set(images_npy).ids if by_id.get(i, -1) >= 0.5]
    chosen = read_feature_set(out)
    assert chosen.ids == wanted and 0 < len(wanted) < 30
    full = read_feature_set(images_npy)
    rows = [full.ids.index(i) for i in wanted]
    np.testing.assert_array_equal(np.asarray(chosen.vectors), images[rows])
    assert chosen.records == [full.records[r] for r in rows]
    queries = np.random.default_rng(9).standard_normal((5, 768)).astype(np.float32)
    ours = search(chosen.vectors, queries, 3)
    restricted = search(images[rows], queries, 3)
    assert [list(r) for r in ours.rows] == [list(r) for r in restricted.rows]
    assert f"wrote {len(wanted)} rows of 40" in made.stderr

    top = tmp_path / "top.npy"
    ranked = run_mmcli("select", images_npy, "--join", scores, "--fraction", "0.2", "--by", "score", "-o", top)
    assert ranked.returncode == 0, ranked.stderr
    best = sorted(by_id, key=lambda i: -by_id[i])[:6]  # ceil(0.2 * 30 scored rows)
    assert set(read_feature_set(top).ids) == set(best) and read_feature_set(top).ids == sorted(best)

    listed = tmp_path / "ids.jsonl"
    listed.write_text("".join(json.dumps({"id": i}) + "\n" for i in ("img03.jpg", "img01.jpg")))
    by_list = tmp_path / "listed.npy"
    assert run_mmcli("select", images_npy, "--ids", listed, "-o", by_list).returncode == 0
    assert read_feature_set(by_list).ids == ["img01.jpg", "img03.jpg"]  # the set's order


def test_dedup_then_select_keeps_one_row_of_each_group(run_mmcli, tmp_path):
    rng = np.random.default_rng(2)
    base = rng.standard_normal((10, 32)).astype(np.float32)
    rows = np.concatenate([base, base[:3] + 0.01 * rng.standard_normal((3, 32)).astype(np.float32)])
    npy = write_set(tmp_path / "set.npy", rows)
    dups = tmp_path / "dups.jsonl"
    assert run_mmcli("dedup", npy, "-o", dups).returncode == 0
    out = tmp_path / "unique.npy"
    assert run_mmcli("select", npy, "--join", dups, "--where", "keep == true", "-o", out).returncode == 0
    assert read_feature_set(out).ids == [f"r{i}" for i in range(10)]


def test_bad_input_is_one_line_and_nothing_is_written(run_mmcli, sets, tmp_path):
    images_npy, _, _, _ = sets
    scores = tmp_path / "scores.jsonl"
    scores.write_text('{"id": "img00.jpg", "score": 0.4}\n{"id": "img00.jpg", "score": 0.5}\n')
    repeated = tmp_path / "repeated.jsonl"
    scores.rename(repeated)
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text('{"id": "img00.jpg", "score": 0.4}\n{"id": "nobody.jpg", "score": 0.5}\n')
    torch.save({"layers.0.weight": torch.zeros(1, 512), "layers.0.bias": torch.zeros(1)}, tmp_path / "narrow.pth")
    good = tmp_path / "good.jsonl"
    good.write_text('{"id": "img00.jpg", "score": 0.4}\n')
    before = {p.name for p in tmp_path.iterdir()}
    out, scored = ["-o", tmp_path / "out.npy"], ["-o", tmp_path / "s.jsonl"]
    for args, words in (
        (["select", images_npy, "--join", repeated, *out], "repeated.jsonl:2: id 'img00.jpg' is repeated"),
        (["select", images_npy, "--join", unknown, *out], "unknown.jsonl:2: id 'nobody.jpg' is no row"),
        (["select", images_npy, "--join", good, "--where", "label != nsfw", *out], "'label': no row's records"),
        (["select", images_npy, "--where", "score >>= 1", *out], "write FIELD OP VALUE"),
        (["select", images_npy, "--join", good, "--fraction", "0.5", *out], "--by"),
        (["select", images_npy, "--join", good, "--where", "score > 0.9", *out], "no row of"),
        (["score", images_npy, "--head", tmp_path / "narrow.pth", *scored], "takes rows of 512 columns"),
        (["score", images_npy, *scored], "give --texts"),
    ):
        result = run_mmcli(*args)
        line = assert_one_line_refusal(result, tmp_path, before)
        assert words in line, (args, line)


def test_score_and_select_refuse_an_existing_output_without_overwrite(run_mmcli, sets, tmp_path):
    images_npy, texts_npy, _, _ = sets
    scores, out = tmp_path / "scores.jsonl", tmp_path / "out.npy"
    assert run_mmcli("score", images_npy, "--texts", texts_npy, "-o", scores, "--quiet").stderr == ""
    first = scores.read_text()
    refused = run_mmcli("score", images_npy, "--texts", texts_npy, "-o", scores)
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    assert run_mmcli("score", images_npy, "--texts", texts_npy, "-o", scores, "--overwrite").returncode == 0
    assert scores.read_text() == first
    chosen = run_mmcli("select", images_npy, "--join", scores, "--where", "score > 0.5", "-o", out, "-q")
    assert chosen.returncode == 0 and chosen.stderr == ""
    again = run_mmcli("select", images_npy, "--join", scores, "--where", "score > 0.9", "-o", out)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    replaced = run_mmcli("select", images_npy, "--join", scores, "--where", "score > 0.9", "-o", out, "--overwrite")
    assert replaced.returncode == 0 and len(read_feature_set(out)) < 30


def test_media_shards_read_back_to_the_same_bytes_and_records(run_mmcli, tiny_models, photos, tmp_path):
    import tarfile

    import webdataset as wds

    npy = tmp_path / "photos.npy"
    assert run_mmcli("extract-features", photos, "-o", npy, "--model", tiny_models["clip"]).returncode == 0
    captions = tmp_path / "captions.jsonl"
    records = read_feature_set(npy).records
    captions.write_text(
        "".join(json.dumps({"id": r["id"], "caption": f"photo {n}"}) + "\n" for n, r in enumerate(records))
    )
    shards = tmp_path / "shards"
    made = run_mmcli("select", npy, "--join", captions, "--where", 'caption != "photo 1"', "-o", tmp_path / "kept.npy",
                     "--media-shards", shards, "--shard-samples", "2")  # fmt: skip
    assert made.returncode == 0, made.stderr
    kept = read_feature_set(tmp_path / "kept.npy").records
    assert len(kept) == len(records) - 1 and records[1] not in kept
    assert sorted(p.name for p in shards.iterdir()) == ["shard-000000.tar", "shard-000001.tar"][: (len(kept) + 1) // 2]
    samples = list(wds.WebDataset(sorted(str(p) for p in shards.iterdir()), shardshuffle=False, empty_check=False))
    assert len(samples) == len(kept)
    for sample, record in zip(samples, kept, strict=True):
        assert sample["jpg"] == open(record["source"], "rb").read()  # the bytes as read, not re-encoded
        assert json.loads(sample["json"]) == {**record, "caption": f"photo {records.index(record)}"}
        assert sample["txt"].decode() == f"photo {records.index(record)}"
    with tarfile.open(shards / "shard-000000.tar") as tar:
        assert all("." not in name.split(".", 1)[0] for name in tar.getnames())  # keys hold no dot
    # mmcli reads the shards back as inputs: the same pictures give the same rows
    again = tmp_path / "again.npy"
    assert run_mmcli("extract-features", f"{shards}/", "-o", again, "--model", tiny_models["clip"]).returncode == 0
    np.testing.assert_allclose(np.asarray(read_feature_set(again).vectors),
                               np.asarray(read_feature_set(tmp_path / "kept.npy").vectors), atol=1e-5)  # fmt: skip


def test_select_into_a_sharded_set_equals_the_one_file_set_and_resumes(run_mmcli, sets, tmp_path):
    images_npy, texts_npy, _, _ = sets
    scores = tmp_path / "scores.jsonl"
    assert run_mmcli("score", images_npy, "--texts", texts_npy, "-o", scores).returncode == 0
    choose = ["--join", scores, "--where", "score >= 0.4"]
    assert run_mmcli("select", images_npy, *choose, "-o", tmp_path / "one.npy").returncode == 0
    folder = tmp_path / "parts"
    made = run_mmcli("select", images_npy, *choose, "-o", f"{folder}/", "--shard-rows", "4")
    assert made.returncode == 0, made.stderr
    one, parts = read_feature_set(tmp_path / "one.npy"), read_feature_set(folder)
    assert parts.ids == one.ids and parts.records == one.records
    np.testing.assert_array_equal(np.asarray(parts.vectors), np.asarray(one.vectors))
    index = json.loads((folder / "index.json").read_text())
    assert index["complete"] and [p["rows"] for p in index["parts"]][:-1] == [4] * (len(index["parts"]) - 1)

    # a run killed after its first part: the same command finishes it, a different one is refused
    last = index["parts"][-1]["name"]
    for suffix in (".npy", ".jsonl"):
        (folder / f"{last}{suffix}").unlink()
    (folder / "index.json").write_text(json.dumps(dict(index, parts=index["parts"][:-1], complete=False)))
    other = run_mmcli("select", images_npy, "--join", scores, "--where", "score >= 0.5", "-o", f"{folder}/",
                      "--shard-rows", "4")  # fmt: skip
    assert other.returncode == 2 and "unfinished run with other settings" in other.stderr, other.stderr
    first = (folder / "part-00000.npy").stat().st_mtime_ns
    again = run_mmcli("select", images_npy, *choose, "-o", f"{folder}/", "--shard-rows", "4")
    assert again.returncode == 0, again.stderr
    assert (folder / "part-00000.npy").stat().st_mtime_ns == first  # the finished part was kept, not rewritten
    resumed = read_feature_set(folder)
    assert resumed.records == one.records
    np.testing.assert_array_equal(np.asarray(resumed.vectors), np.asarray(one.vectors))
    done = run_mmcli("select", images_npy, *choose, "-o", f"{folder}/")
    assert done.returncode == 2 and "--overwrite" in done.stderr


def test_a_fuse_head_scores_through_fuse_and_its_predictions_join_select(run_mmcli, tmp_path):
    rng = np.random.default_rng(4)
    a = write_set(tmp_path / "a.npy", rng.standard_normal((24, 8)))
    b = write_set(tmp_path / "b.npy", rng.standard_normal((24, 6)))
    truth = tmp_path / "truth.jsonl"
    truth.write_text("".join(json.dumps({"id": f"r{i}", "label": "even" if i % 2 == 0 else "odd"}) + "\n"
                             for i in range(24)))  # fmt: skip
    trained = run_mmcli("fuse", a, b, "--truth", truth, "--save-head", tmp_path / "head", "-o", tmp_path / "f.npy",
                        "--epochs", "3")  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    refused = run_mmcli("score", a, "--head", tmp_path / "head.safetensors")
    assert refused.returncode == 2 and "mmcli fuse SET1.npy SET2.npy --head" in refused.stderr, refused.stderr
    predictions = tmp_path / "predictions.jsonl"
    assert run_mmcli("fuse", a, b, "--head", tmp_path / "head", "--predict", "-o", predictions).returncode == 0
    chosen = run_mmcli("select", a, "--join", predictions, "--where", "label == even", "-o", tmp_path / "even.npy")
    assert chosen.returncode == 0, chosen.stderr
    even = {json.loads(line)["id"] for line in predictions.read_text().splitlines() if '"even"' in line}
    assert set(read_feature_set(tmp_path / "even.npy").ids) == even

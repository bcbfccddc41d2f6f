"""Inputs beyond loose files: webdataset shards, Parquet tables and fsspec URLs (a real S3 API on
127.0.0.1) give exactly the rows and captions of the same pictures as loose files."""

from __future__ import annotations

import glob
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile

import numpy as np
import pytest
from conftest import PHOTO_NAMES
from PIL import Image

from mmcli.errors import ItemError
from mmcli.io.inputs import discover_images, discover_texts
from mmcli.io.parquet import Columns, ParquetCell
from mmcli.io.patterns import expand_braces
from mmcli.io.remote import ByteRange
from mmcli.io.webdataset import split_key
from mmcli.media.images import load_image
from mmcli.output.feature_set import read_feature_set

KEYS = [f"{index:06d}" for index in range(len(PHOTO_NAMES))]


def add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def write_shard(path, samples) -> None:
    """``samples``: (key, {extension: bytes}) pairs, written in order as webdataset writes them."""
    with tarfile.open(path, "w") as archive:
        for key, members in samples:
            for extension, data in members.items():
                add_member(archive, f"{key}.{extension}", data)


def sample(photos, index: int) -> tuple[str, dict[str, bytes]]:
    name = PHOTO_NAMES[index]
    meta = {"name": name, "index": index, "id": "not-the-id", "source": "not-the-source", "modality": "x"}
    return KEYS[index], {
        "jpg": (photos / f"{name}.jpg").read_bytes(),
        "txt": f"a photo of {name}".encode(),
        "json": json.dumps(meta).encode(),
    }


@pytest.fixture(scope="module")
def shards(tmp_path_factory, photos):
    """Two shards of two samples each, in the loose files' (sorted) order."""
    folder = tmp_path_factory.mktemp("shards")
    write_shard(folder / "shard-000000.tar", [sample(photos, 0), sample(photos, 1)])
    write_shard(folder / "shard-000001.tar", [sample(photos, 2), sample(photos, 3)])
    return folder


def parquet_table(path, photos, *, row_group_size: int = 3) -> None:
    """Every way a table holds an image, for the four photos (row groups of 3: two of them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = [(photos / f"{name}.jpg").read_bytes() for name in PHOTO_NAMES]
    relative = [os.path.relpath(photos / f"{name}.jpg", path.parent) for name in PHOTO_NAMES]
    table = pa.table(
        {
            "key": [f"k{index}" for index in range(len(PHOTO_NAMES))],
            "caption": [f"a photo of {name}" for name in PHOTO_NAMES],
            "bytes": pa.array(data, pa.binary()),
            "path": relative,
            "image": [{"bytes": value, "path": f"{name}.jpg"} for value, name in zip(data, PHOTO_NAMES, strict=True)],
            # HF datasets style without bytes: the path is used
            "image_path_only": [{"bytes": None, "path": rel} for rel in relative],
            "n": list(range(len(PHOTO_NAMES))),
            "tags": [["x"]] * len(PHOTO_NAMES),  # not a scalar: not carried
        }
    )
    pq.write_table(table, path, row_group_size=row_group_size)


@pytest.fixture(scope="module")
def table(tmp_path_factory, photos):
    path = tmp_path_factory.mktemp("table") / "photos.parquet"
    parquet_table(path, photos)
    return path


def extract(run_mmcli, tiny_models, out, *args, input=None, env=None):
    result = run_mmcli(
        "extract-features", *map(str, args), "-o", out, "--model", tiny_models["clip"], input=input, env=env
    )
    return result, (read_feature_set(out) if out.exists() else None)


@pytest.fixture(scope="module")
def loose(run_mmcli, tiny_models, photos, tmp_path_factory):
    result, feature_set = extract(run_mmcli, tiny_models, tmp_path_factory.mktemp("loose") / "loose.npy", photos)
    assert result.returncode == 0, result.stderr
    assert [r["source"] for r in feature_set.records] == [str(photos / f"{n}.jpg") for n in PHOTO_NAMES]
    return feature_set


def same_rows(feature_set, reference) -> None:
    assert feature_set.vectors.shape == reference.vectors.shape
    assert np.abs(feature_set.vectors - reference.vectors).max() < 1e-6


# -- webdataset shards ---------------------------------------------------------------------------------


def test_shards_give_the_loose_files_rows_with_keys_sources_and_members(
    run_mmcli, tiny_models, shards, loose, tmp_path
):
    given = [str(shards / "shard-000000.tar"), str(shards / "shard-000001.tar")]
    result, feature_set = extract(run_mmcli, tiny_models, tmp_path / "s.npy", *given)
    assert result.returncode == 0, result.stderr
    same_rows(feature_set, loose)
    records = feature_set.records
    assert [r["id"] for r in records] == KEYS
    assert [r["source"] for r in records] == [f"{given[i // 2]}#{key}" for i, key in enumerate(KEYS)]
    assert all(r["modality"] == "image" for r in records)  # the json's fields never override these
    assert [r["name"] for r in records] == list(PHOTO_NAMES)
    assert [r["index"] for r in records] == [0, 1, 2, 3]
    assert [r["text"] for r in records] == [f"a photo of {n}" for n in PHOTO_NAMES]


def test_a_brace_pattern_a_folder_and_stdin_list_the_same_shards(run_mmcli, tiny_models, shards, loose, tmp_path):
    for index, (args, stdin) in enumerate(
        [
            ([shards / "shard-{000000..000001}.tar"], None),
            ([shards], None),  # a folder: its .tar files are shards
            (["-"], f"{shards / 'shard-000000.tar'}\n{shards / 'shard-000001.tar'}\n"),
        ]
    ):
        result, feature_set = extract(run_mmcli, tiny_models, tmp_path / f"{index}.npy", *args, input=stdin)
        assert result.returncode == 0, (args, result.stderr)
        same_rows(feature_set, loose)
        assert feature_set.ids == KEYS


def test_text_modality_on_shards_embeds_the_txt_members(run_mmcli, tiny_models, shards, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"a photo of {name}\n" for name in PHOTO_NAMES))
    result, reference = extract(run_mmcli, tiny_models, tmp_path / "t.npy", "--modality", "text", texts)
    assert result.returncode == 0, result.stderr
    result, feature_set = extract(
        run_mmcli, tiny_models, tmp_path / "s.npy", "--modality", "text", shards / "shard-{000000..000001}.tar"
    )
    assert result.returncode == 0, result.stderr
    same_rows(feature_set, reference)
    assert feature_set.ids == KEYS
    assert [r["source"] for r in feature_set.records] == [f"a photo of {n}" for n in PHOTO_NAMES]
    assert [r["name"] for r in feature_set.records] == list(PHOTO_NAMES)


def test_a_corrupt_member_and_a_truncated_shard_are_error_records(run_mmcli, tiny_models, photos, loose, tmp_path):
    good = tmp_path / "good.tar"
    write_shard(good, [sample(photos, 0), ("bad", {"jpg": b"\xff\xd8 not a jpeg"}), ("notxt", {"cls": b"3"})])
    whole = tmp_path / "whole.tar"
    write_shard(whole, [sample(photos, 1), sample(photos, 2)])
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2 + 700])  # inside the second photo
    result, feature_set = extract(run_mmcli, tiny_models, tmp_path / "e.npy", good, cut)
    assert result.returncode == 1, result.stderr
    assert feature_set.ids == [KEYS[0], KEYS[1]]
    assert np.abs(feature_set.vectors - loose.vectors[:2]).max() < 1e-6
    errors = {e["id"]: e for e in map(json.loads, (tmp_path / "e.errors.jsonl").read_text().splitlines())}
    assert errors["bad"]["source"] == f"{good}#bad" and "not an image" in errors["bad"]["error"]
    assert "no image or video member" in errors["notxt"]["error"]
    # the photo cut short, then the shard itself, by name
    assert "truncated" in errors[KEYS[2]]["error"] or "corrupt" in errors[KEYS[2]]["error"]
    assert errors[str(cut)]["source"] == str(cut) and "shard" in errors[str(cut)]["error"]


def test_links_and_devices_in_a_shard_are_error_records_not_silent_losses(
    run_mmcli, tiny_models, photos, loose, tmp_path
):
    shard = tmp_path / "links.tar"
    with tarfile.open(shard, "w") as archive:
        for key, members in [sample(photos, 0)]:
            for extension, data in members.items():
                add_member(archive, f"{key}.{extension}", data)
        folder = tarfile.TarInfo("folder")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)  # a folder entry is no sample, and no error
        for name, kind, target in [("sym.jpg", tarfile.SYMTYPE, f"{KEYS[0]}.jpg"),
                                   ("hard.jpg", tarfile.LNKTYPE, f"{KEYS[0]}.jpg"), ("dev.jpg", tarfile.CHRTYPE, ""),
                                   ("fifo.jpg", tarfile.FIFOTYPE, "")]:  # fmt: skip
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            archive.addfile(info)
    result, feature_set = extract(run_mmcli, tiny_models, tmp_path / "e.npy", shard)
    assert result.returncode == 1, result.stderr
    assert feature_set.ids == [KEYS[0]] and np.abs(feature_set.vectors - loose.vectors[:1]).max() < 1e-6
    errors = {e["id"]: e["error"] for e in map(json.loads, (tmp_path / "e.errors.jsonl").read_text().splitlines())}
    assert errors == {
        "sym": f"member sym.jpg is a symbolic link (to {KEYS[0]}.jpg), not a regular file",
        "hard": f"member hard.jpg is a hard link (to {KEYS[0]}.jpg), not a regular file",
        "dev": "member dev.jpg is a device, not a regular file",
        "fifo": "member fifo.jpg is a FIFO, not a regular file",
    }


def test_a_video_in_a_shard_is_spooled_and_embedded_like_the_file(run_mmcli, tiny_models, tmp_path):
    from test_video_extract import scenes
    from test_video_media import write_video

    video = tmp_path / "clip.mp4"
    write_video(video, scenes, fps=10, duration=2.0)
    shard = tmp_path / "videos.tar"
    write_shard(shard, [("clip", {"mp4": video.read_bytes(), "json": b'{"label": 7}'})])
    result, reference = extract(run_mmcli, tiny_models, tmp_path / "v.npy", video)
    assert result.returncode == 0, result.stderr
    spooled = set(glob.glob(os.path.join(tempfile.gettempdir(), "mmcli-video-*")))
    result, feature_set = extract(run_mmcli, tiny_models, tmp_path / "s.npy", shard)
    assert result.returncode == 0, result.stderr
    same_rows(feature_set, reference)
    (record,) = feature_set.records
    assert record["id"] == "clip" and record["modality"] == "video" and record["frames"] == 2 and record["label"] == 7
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "mmcli-video-*"))) == spooled  # deleted afterwards


def test_update_refuses_inputs_inside_shards(run_mmcli, tiny_models, shards, tmp_path):
    out = tmp_path / "s.npy"
    assert extract(run_mmcli, tiny_models, out, shards)[0].returncode == 0
    result = run_mmcli("extract-features", shards, "-o", out, "--model", tiny_models["clip"], "--update")
    assert result.returncode == 2
    assert "--update compares local files" in result.stderr and "shard" in result.stderr


# -- Parquet -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("column", ["bytes", "path", "image", "image_path_only"])
def test_parquet_image_columns_give_the_loose_files_rows(run_mmcli, tiny_models, table, loose, tmp_path, column):
    result, feature_set = extract(run_mmcli, tiny_models, tmp_path / "p.npy", table, "--image-column", column)
    assert result.returncode == 0, result.stderr
    same_rows(feature_set, loose)
    records = feature_set.records
    assert [r["id"] for r in records] == [f"{table}:{row}" for row in range(4)]  # the default id
    assert [r["n"] for r in records] == [0, 1, 2, 3] and [r["key"] for r in records] == ["k0", "k1", "k2", "k3"]
    assert all("tags" not in r and "caption" in r for r in records)
    if column == "path":
        assert [r["source"] for r in records] == [str(table.parent / p) for p in _relative(table)]
    elif column == "bytes":
        assert [r["source"] for r in records] == [f"{table}#{row}" for row in range(4)]


def _relative(table):
    import pyarrow.parquet as pq

    return pq.read_table(table, columns=["path"]).column(0).to_pylist()


def test_parquet_id_and_text_columns(run_mmcli, tiny_models, table, loose, tmp_path):
    result, feature_set = extract(
        run_mmcli, tiny_models, tmp_path / "p.npy", table,
        "--image-column", "bytes", "--id-column", "key", "--text-column", "caption",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    same_rows(feature_set, loose)
    assert feature_set.ids == ["k0", "k1", "k2", "k3"]
    assert [r["text"] for r in feature_set.records] == [f"a photo of {n}" for n in PHOTO_NAMES]
    assert all("key" not in r and "caption" not in r for r in feature_set.records)

    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"a photo of {name}\n" for name in PHOTO_NAMES))
    _, reference = extract(run_mmcli, tiny_models, tmp_path / "t.npy", "--modality", "text", texts)
    result, feature_set = extract(
        run_mmcli, tiny_models, tmp_path / "pt.npy", "--modality", "text", table, "--text-column", "caption",
        "--id-column", "key",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    same_rows(feature_set, reference)
    assert feature_set.ids == ["k0", "k1", "k2", "k3"]


def test_parquet_refusals_name_the_flag_and_the_columns(run_mmcli, tiny_models, table, tmp_path):
    result = run_mmcli("extract-features", table, "-o", tmp_path / "x.npy", "--model", tiny_models["clip"])
    assert result.returncode == 2 and "--image-column" in result.stderr
    result = run_mmcli(
        "extract-features", table, "-o", tmp_path / "x.npy", "--model", tiny_models["clip"], "--image-column", "nope"
    )
    assert result.returncode == 2 and "no column 'nope'" in result.stderr and "caption" in result.stderr
    result = run_mmcli(
        "extract-features", table, "-o", tmp_path / "x.npy", "--model", tiny_models["clip"], "--image-column", "n"
    )
    assert result.returncode == 2 and "holds int64" in result.stderr


def test_a_folder_reads_tables_only_when_the_column_is_named(run_mmcli, tiny_models, table, loose, tmp_path):
    result, feature_set = extract(run_mmcli, tiny_models, tmp_path / "f.npy", table.parent, "--image-column", "bytes")
    assert result.returncode == 0, result.stderr
    same_rows(feature_set, loose)
    result, _ = extract(run_mmcli, tiny_models, tmp_path / "g.npy", table.parent)
    assert result.returncode == 2 and "no images found" in result.stderr


# -- caption -------------------------------------------------------------------------------------------


def caption(run_mmcli, tiny_models, *args):
    result = run_mmcli("caption", *map(str, args), "--model", tiny_models["blip"], "--max-new-tokens", "6")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_caption_on_shards_and_parquet_gives_the_loose_files_captions(run_mmcli, tiny_models, photos, shards, table):
    reference = [r["caption"] for r in caption(run_mmcli, tiny_models, photos)]
    assert len(reference) == 4
    records = caption(run_mmcli, tiny_models, shards / "shard-{000000..000001}.tar")
    assert [r["caption"] for r in records] == reference
    assert [r["id"] for r in records] == KEYS and [r["name"] for r in records] == list(PHOTO_NAMES)
    records = caption(
        run_mmcli, tiny_models, table, "--image-column", "image", "--id-column", "key", "--text-column", "caption"
    )
    assert [r["caption"] for r in records] == reference
    assert [r["id"] for r in records] == ["k0", "k1", "k2", "k3"]
    assert [r["text"] for r in records] == [f"a photo of {n}" for n in PHOTO_NAMES]


# -- the pieces ------------------------------------------------------------------------------------------


def test_brace_expansion():
    assert expand_braces("data-{000000..000002}.tar") == ["data-000000.tar", "data-000001.tar", "data-000002.tar"]
    assert expand_braces("s3://b/{a,b}/x-{8..10}.tar") == [
        "s3://b/a/x-8.tar", "s3://b/a/x-9.tar", "s3://b/a/x-10.tar",
        "s3://b/b/x-8.tar", "s3://b/b/x-9.tar", "s3://b/b/x-10.tar",
    ]  # fmt: skip
    assert expand_braces("{0..10..5}") == ["0", "5", "10"] and expand_braces("{3..1}") == ["3", "2", "1"]
    assert expand_braces("a{b,c{d,e}}") == ["ab", "acd", "ace"]
    assert expand_braces("odd{}name{x}.jpg") == ["odd{}name{x}.jpg"]
    import braceexpand

    for pattern in ("d-{00..12}.tar", "{a,b}{1..3}", "x{1,{2..4}}y", "{09..11}"):
        assert expand_braces(pattern) == list(braceexpand.braceexpand(pattern)), pattern


def test_member_names_split_as_webdataset_splits_them():
    from webdataset.tariterators import base_plus_ext

    for name in ("a/b/000.jpg", "000.seg.PNG", "x.y/z.txt", "dir/name", "./k.json", ".hidden.jpg"):
        base, extension = base_plus_ext(name)
        assert split_key(name) == (base, extension.lower() if extension else None), name


def test_items_pickle_and_decode_anywhere(shards, table, photos):
    items = list(discover_images([str(shards / "shard-000000.tar")]))
    items += list(discover_images([str(table)], columns=Columns(image="image")))
    assert isinstance(items[0].blob, ByteRange) and isinstance(items[-1].blob, ParquetCell)
    reference = np.asarray(load_image(photos / "astronaut.jpg"))
    for item in (items[0], items[2]):
        assert len(pickle.dumps(item)) < 1000 < (photos / "astronaut.jpg").stat().st_size  # a reference, no bytes
        copy = pickle.loads(pickle.dumps(item))
        assert copy == item
        assert np.array_equal(np.asarray(load_image(copy.media())), reference)


def test_load_image_from_bytes_keeps_every_check():
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the stored 40x20 is shown 20x40
    Image.new("RGB", (40, 20), "red").save(buffer, "JPEG", exif=exif)
    data = buffer.getvalue()
    assert load_image(data).size == (20, 40)
    assert load_image(io.BytesIO(data)).size == (20, 40)
    with pytest.raises(ItemError, match="over the limit"):
        load_image(data, max_pixels=100)
    with pytest.raises(ItemError, match="empty"):
        load_image(b"")
    with pytest.raises(ItemError, match="not an image"):
        load_image(b"hello")
    big = io.BytesIO()
    Image.new("RGB", (1600, 1200)).save(big, "JPEG")
    assert load_image(big.getvalue(), min_side=200).size == (400, 300)  # reduced-scale JPEG decoding


def test_texts_and_images_discovered_from_a_table(table):
    texts = list(discover_texts([str(table)], columns=Columns(text="caption")))
    assert [t.text for t in texts] == [f"a photo of {n}" for n in PHOTO_NAMES]
    assert [t.id for t in texts] == [f"{table}:{row}" for row in range(4)]
    images = list(discover_images([str(table)], columns=Columns(image="bytes", id="key")))
    assert [(i.blob.row_group, i.blob.row) for i in images] == [(0, 0), (0, 1), (0, 2), (1, 0)]


# -- a real S3 API ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3(photos, shards, table):
    """A moto S3 server on 127.0.0.1 holding the shards, the table and the loose photos; the endpoint
    and credentials reach s3fs through the environment (AWS_ENDPOINT_URL, read by botocore)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    environment = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
    }
    saved = {key: os.environ.get(key) for key in environment}
    os.environ.update(environment)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.mkdir("bucket")
    for shard in sorted(shards.glob("*.tar")):
        fs.put_file(str(shard), f"bucket/shards/{shard.name}")
    fs.put_file(str(table), "bucket/table/photos.parquet")
    for name in PHOTO_NAMES:
        fs.put_file(str(photos / f"{name}.jpg"), f"bucket/photos/{name}.jpg")
    fs.put_file(str(photos / "chelsea.jpg"), "bucket/photos/sub/chelsea.jpg")
    try:
        yield environment
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_s3_inputs_give_the_local_rows(run_mmcli, tiny_models, s3, loose, tmp_path):
    result, feature_set = extract(
        run_mmcli, tiny_models, tmp_path / "a.npy", "s3://bucket/shards/shard-{000000..000001}.tar"
    )
    assert result.returncode == 0, result.stderr
    same_rows(feature_set, loose)
    assert feature_set.ids == KEYS
    assert feature_set.records[0]["source"] == "s3://bucket/shards/shard-000000.tar#000000"

    result, feature_set = extract(run_mmcli, tiny_models, tmp_path / "b.npy", "s3://bucket/table/photos.parquet",
                                  "--image-column", "bytes", "--id-column", "key")  # fmt: skip
    assert result.returncode == 0, result.stderr
    same_rows(feature_set, loose)
    assert feature_set.ids == ["k0", "k1", "k2", "k3"]

    result, feature_set = extract(run_mmcli, tiny_models, tmp_path / "c.npy", "s3://bucket/photos/*.jpg")
    assert result.returncode == 0, result.stderr
    same_rows(feature_set, loose)
    assert feature_set.ids == [f"s3://bucket/photos/{n}.jpg" for n in PHOTO_NAMES]

    result, feature_set = extract(run_mmcli, tiny_models, tmp_path / "d.npy", "s3://bucket/photos/")  # a folder
    assert result.returncode == 0, result.stderr
    assert feature_set.ids == [f"s3://bucket/photos/{n}.jpg" for n in PHOTO_NAMES] + [
        "s3://bucket/photos/sub/chelsea.jpg"
    ]
    assert np.abs(feature_set.vectors[:4] - loose.vectors).max() < 1e-6
    assert np.abs(feature_set.vectors[4] - loose.vectors[1]).max() < 1e-6

    result, feature_set = extract(run_mmcli, tiny_models, tmp_path / "e.npy", "s3://bucket/photos/missing.jpg",
                                  "s3://bucket/photos/rocket.jpg")  # fmt: skip
    assert result.returncode == 1
    assert feature_set.ids == ["s3://bucket/photos/rocket.jpg"]
    assert "no such file" in (tmp_path / "e.errors.jsonl").read_text()


def test_s3_endpoint_from_an_fsspec_variable_in_a_fresh_process(s3):
    """The documented FSSPEC_S3_ENDPOINT_URL (fsspec's config, read when fsspec is imported)."""
    environment = {key: value for key, value in os.environ.items() if key != "AWS_ENDPOINT_URL"}
    environment["FSSPEC_S3_ENDPOINT_URL"] = s3["AWS_ENDPOINT_URL"]
    code = (
        "from mmcli.io.inputs import discover_images\n"
        "items = list(discover_images(['s3://bucket/shards/', 's3://bucket/photos/rocket.jpg']))\n"
        "print([i.id for i in items], len(items[-1].media()))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"{[*KEYS, 's3://bucket/photos/rocket.jpg']}" in result.stdout
    assert int(result.stdout.split()[-1]) > 1000


def test_caption_on_s3_shards(run_mmcli, tiny_models, photos, s3):
    reference = [r["caption"] for r in caption(run_mmcli, tiny_models, photos)]
    records = caption(run_mmcli, tiny_models, "s3://bucket/shards/shard-000001.tar", "s3://bucket/photos/rocket.jpg")
    assert [r["caption"] for r in records] == [*reference[2:], reference[3]]
    assert [r["id"] for r in records] == [*KEYS[2:], "s3://bucket/photos/rocket.jpg"]


def test_s3_text_file_and_text_shard(s3, tmp_path):
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.pipe_file("bucket/texts/notes.txt", b"first text\nsecond text\n")
    texts = list(discover_texts(["s3://bucket/texts/notes.txt", "s3://bucket/shards/shard-000000.tar"]))
    assert [t.text for t in texts] == ["first text", "second text", "a photo of astronaut", "a photo of chelsea"]
    assert [t.id for t in texts] == ["s3://bucket/texts/notes.txt:1", "s3://bucket/texts/notes.txt:2", *KEYS[:2]]


@pytest.fixture
def http_server(tmp_path_factory, photos, shards):
    """A plain HTTP server (no Range support, as many are) over the photos and the shards."""
    import functools
    import http.server
    import shutil
    import threading

    root = tmp_path_factory.mktemp("www")
    shutil.copytree(photos, root / "photos")
    shutil.copytree(shards, root / "shards")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def test_http_images_and_shards(run_mmcli, tiny_models, http_server, loose, tmp_path):
    given = [f"{http_server}/photos/astronaut.jpg", f"{http_server}/shards/shard-000001.tar"]
    result, feature_set = extract(run_mmcli, tiny_models, tmp_path / "h.npy", *given)
    assert result.returncode == 0, result.stderr
    assert feature_set.ids == [given[0], KEYS[2], KEYS[3]]
    assert np.abs(feature_set.vectors - loose.vectors[[0, 2, 3]]).max() < 1e-6

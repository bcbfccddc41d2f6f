"""The hostile-input corpus: every bad file a user's folder can hold, each asserted through the real CLI.

One module-scoped folder ``corpus/`` holds the bad files next to a few good JPEGs. ``mmcli extract-features``
and ``mmcli caption`` each run over it once; every case then checks its own item in those runs: a per-item
error record (``{"id", "source", "error"}``, in ``OUT.errors.jsonl`` for feature sets and inline for records),
or a correct row for files that are readable after conversion, exit status 1, and the rest of the batch
processed. Inputs that must stop a whole command (bad index files, broken query files, no inputs at all) are
checked for one clear line on stderr, exit status 2 and no output left behind.

Every file is generated here, in temporary folders; nothing binary is committed.
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmcli.errors import ItemError
from mmcli.media.images import load_image
from mmcli.output.feature_set import read_feature_set

ORIENTATION = 0x0112
RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, PR_CAPBSET_DROP = 1, 2, 24  # from <linux/capability.h>, <linux/prctl.h>


def without_root_file_access() -> None:
    """For a child process run as root: drop the capabilities that let root read any file, so permission
    bits apply to the program it runs as they do to any user (Linux; a ``preexec_fn``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _root_can_give_up_file_access() -> bool:
    """Whether a child run as root here can be made to respect permission bits (needs CAP_SETPCAP)."""
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        return False
    with tempfile.NamedTemporaryFile() as locked:
        os.chmod(locked.name, 0)
        probe = [sys.executable, "-c", f"open({locked.name!r}).close()"]
        try:
            result = subprocess.run(probe, preexec_fn=without_root_file_access, capture_output=True, timeout=60)
        except subprocess.SubprocessError:
            return False
        return b"PermissionError" in result.stderr


DROP_ROOT_FILE_ACCESS = _root_can_give_up_file_access()
# Whether the corpus runs see a mode-0 file as unreadable: always, but for root where it cannot give that up.
PERMISSIONS_BITE = os.geteuid() != 0 or DROP_ROOT_FILE_ACCESS
NON_UTF8_NAME = b"caf\xe9.jpg"
FEATURE_KEYS = {"id", "modality", "model", "source"}
ERROR_KEYS = {"id", "source", "error"}

# Corpus entries that must become rows (readable, possibly after conversion) and those that must be error records.
GOOD_PHOTOS = {"good_astronaut.jpg": "astronaut", "good_chelsea.jpg": "chelsea", "good_coffee.jpg": "coffee"}
CONVERTED = (
    "png_named.jpg",
    "deep16.png",
    "cmyk.jpg",
    "palette_alpha.png",
    "rotated.jpg",
    "animated.gif",
)
FAILING = ("empty.jpg", "truncated.jpg", "text.jpg", "bomb.png")


# --- helpers -----------------------------------------------------------------------------------------------------


def run_cli(exe: str, *args, input: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """The installed ``mmcli`` in a subprocess, as ``run_mmcli`` does, usable from module-scoped fixtures."""
    return subprocess.run(
        [exe, *map(os.fspath, args)],
        input=input,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=timeout,
        preexec_fn=without_root_file_access if DROP_ROOT_FILE_ACCESS else None,
    )


def assert_stops_with_one_line(result: subprocess.CompletedProcess, code: int = 2) -> str:
    """The command stopped with ``code`` and one readable ``mmcli: error:`` line; returns that line."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines, "no message on stderr"
    assert lines[-1].startswith("mmcli: error: "), result.stderr
    assert result.stdout == "", "a command that stops must not print records"
    return lines[-1]


def close_to(actual, expected, tolerance=10) -> bool:
    return all(abs(int(a) - int(e)) <= tolerance for a, e in zip(actual, expected, strict=True))


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_feature_set(npy: Path, matrix: np.ndarray, records: int | None = None, model: str = "m") -> Path:
    """A hand-made feature set: ``matrix`` and ``records`` sidecar lines (default: one per row)."""
    np.save(npy, matrix, allow_pickle=True)
    count = len(matrix) if records is None else records
    lines = [
        json.dumps({"id": f"r{i}", "modality": "image", "model": model, "source": f"r{i}.jpg"}) for i in range(count)
    ]
    npy.with_suffix(".jsonl").write_text("".join(line + "\n" for line in lines))
    return npy


def png_with_size(small: Image.Image, width: int, height: int) -> bytes:
    """``small`` as a PNG whose IHDR is patched to claim ``width`` x ``height`` (CRC recomputed, so it is valid)."""
    buffer = io.BytesIO()
    small.save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


# --- the corpus --------------------------------------------------------------------------------------------------


@dataclass
class Corpus:
    folder: Path
    photos: Path
    rotated_reference: Image.Image  # the pixels of rotated.jpg as they look upright
    non_utf8: str  # the surrogate-escaped str path of the file whose name is not UTF-8
    raw_non_utf8: bytes  # the same path as bytes
    extra: dict[str, Path] = field(default_factory=dict)

    def path(self, name: str) -> str:
        """The id/source the CLI gives a file found by walking the folder."""
        return os.path.join(str(self.folder), name)

    def good_ids(self) -> set[str]:
        ids = {self.path(name) for name in (*GOOD_PHOTOS, *CONVERTED)}
        if not PERMISSIONS_BITE:
            ids.add(self.path("unreadable.jpg"))
        return ids | {self.non_utf8}

    def failing_ids(self) -> set[str]:
        ids = {self.path(name) for name in FAILING}
        if PERMISSIONS_BITE:
            ids.add(self.path("unreadable.jpg"))
        return ids


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, photos) -> Corpus:
    root = tmp_path_factory.mktemp("hostile")
    folder = root / "corpus"
    folder.mkdir()
    for name, photo in GOOD_PHOTOS.items():
        shutil.copy(photos / f"{photo}.jpg", folder / name)

    # 1. zero bytes, 2. the first half of a real JPEG, 4. text under a .jpg name
    (folder / "empty.jpg").write_bytes(b"")
    rocket = (photos / "rocket.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(rocket[: len(rocket) // 2])
    (folder / "text.jpg").write_text("this is a shopping list, not a photograph\n")

    # 3. a PNG under a .jpg name: the pixels of good_coffee.jpg, losslessly
    with Image.open(photos / "coffee.jpg") as coffee:
        coffee.convert("RGB").save(folder / "png_named.jpg", format="PNG")

    # 5. a 16-bit grayscale PNG (0, half, full scale in thirds) and a CMYK JPEG
    deep = np.zeros((24, 36), np.uint16)
    deep[:, 12:24], deep[:, 24:] = 128 * 257, 65535
    Image.fromarray(deep).save(folder / "deep16.png")
    Image.new("RGB", (32, 32), (200, 40, 40)).convert("CMYK").save(folder / "cmyk.jpg", quality=95)

    # 6. a palette PNG whose index 1 is fully transparent (tRNS): left half red, right half transparent
    palette = Image.new("P", (32, 32), 0)
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    palette.paste(1, (16, 0, 32, 32))
    palette.save(folder / "palette_alpha.png", transparency=1)

    # 7. stored sideways with EXIF orientation 6 (turn 90 degrees clockwise to view)
    with Image.open(photos / "astronaut.jpg") as astronaut:
        sideways = astronaut.convert("RGB").resize((64, 40))
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    sideways.save(folder / "rotated.jpg", quality=95, exif=exif)
    with Image.open(folder / "rotated.jpg") as stored:  # the reference: the stored pixels, turned clockwise
        rotated_reference = stored.convert("RGB").transpose(Image.Transpose.ROTATE_270)

    # 8. a decompression bomb: a tiny valid PNG whose header claims 30000 x 30000 pixels
    (folder / "bomb.png").write_bytes(png_with_size(Image.new("RGB", (8, 8), RED), 30_000, 30_000))

    # 9. an animated GIF: a red first frame, then blue and green ones
    frames = [Image.new("RGB", (24, 24), color) for color in (RED, BLUE, (0, 255, 0))]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)

    # 10. a file name that is not valid UTF-8, holding a valid JPEG
    raw = os.path.join(os.fsencode(folder), NON_UTF8_NAME)
    descriptor = os.open(raw, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write((photos / "chelsea.jpg").read_bytes())

    # 11. symlink loops: the folder inside itself, and two links pointing at each other
    os.symlink(folder, folder / "loop")
    os.symlink("b", folder / "a")
    os.symlink("a", folder / "b")

    # 12. a valid JPEG nobody may read
    shutil.copy(photos / "rocket.jpg", folder / "unreadable.jpg")
    os.chmod(folder / "unreadable.jpg", 0)

    # 18. garbage bytes under a video extension
    (folder / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4096))

    yield Corpus(folder, photos, rotated_reference, os.fsdecode(raw), raw)
    os.chmod(folder / "unreadable.jpg", stat.S_IRUSR | stat.S_IWUSR)  # let the temporary folder be removed


@dataclass
class ExtractRun:
    result: subprocess.CompletedProcess
    out: Path
    records: list[dict]
    vectors: np.ndarray
    errors: list[dict]

    @property
    def row_of(self) -> dict[str, int]:
        return {record["id"]: row for row, record in enumerate(self.records)}

    @property
    def error_of(self) -> dict[str, str]:
        return {error["id"]: error["error"] for error in self.errors}


@pytest.fixture(scope="module")
def extracted(corpus, tiny_models, mmcli_exe, tmp_path_factory) -> ExtractRun:
    out = tmp_path_factory.mktemp("extracted") / "out.npy"
    started = time.perf_counter()
    result = run_cli(mmcli_exe, "extract-features", corpus.folder, "-o", out, "--model", tiny_models["clip"], "-q")
    assert time.perf_counter() - started < 120, "the walk over the corpus (with symlink loops) must terminate"
    assert out.exists() and out.with_suffix(".jsonl").exists(), result.stderr
    errors_file = out.with_suffix(".errors.jsonl")
    errors = jsonl(errors_file) if errors_file.exists() else []
    return ExtractRun(result, out, jsonl(out.with_suffix(".jsonl")), np.load(out, allow_pickle=False), errors)


@pytest.fixture(scope="module")
def captioned(corpus, tiny_models, mmcli_exe) -> tuple[subprocess.CompletedProcess, list[dict]]:
    result = run_cli(
        mmcli_exe,
        "caption",
        corpus.folder,
        "--model",
        tiny_models["blip"],
        "--min-new-tokens",
        "2",
        "--max-new-tokens",
        "2",
        "-q",
    )
    return result, [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def encoder(tiny_models):
    from mmcli.encoders import load_encoder

    return load_encoder(str(tiny_models["clip"]), device="cpu")


def error_for(extracted: ExtractRun, path: str) -> str:
    assert path in extracted.error_of, f"no error record for {path!r}; errors: {extracted.errors}"
    assert path not in extracted.row_of, f"{path!r} failed but became a row"
    return extracted.error_of[path]


def row_for(extracted: ExtractRun, path: str) -> np.ndarray:
    assert path not in extracted.error_of, f"{path!r} must be a row, got error {extracted.error_of.get(path)!r}"
    assert path in extracted.row_of, f"{path!r} is neither a row nor an error; rows: {sorted(extracted.row_of)}"
    return extracted.vectors[extracted.row_of[path]]


def caption_record(captioned, path: str) -> dict:
    _, records = captioned
    found = [record for record in records if record.get("id") == path]
    assert len(found) == 1, f"expected one caption record for {path!r}, got {found}"
    return found[0]


def assert_caption_error(captioned, path: str) -> str:
    record = caption_record(captioned, path)
    assert set(record) == ERROR_KEYS and record["source"] == path, record
    return record["error"]


def assert_captioned(captioned, path: str) -> None:
    record = caption_record(captioned, path)
    assert "error" not in record, record
    assert isinstance(record["caption"], str) and record["source"] == path, record


# --- the whole batch ---------------------------------------------------------------------------------------------


def test_extract_over_the_corpus_exits_1_and_every_good_file_is_a_row(extracted, corpus, tiny_models):
    result = extracted.result
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""
    assert len(extracted.records) == extracted.vectors.shape[0]
    ids = [record["id"] for record in extracted.records]
    assert len(ids) == len(set(ids)), "a row appears twice (symlink loop followed?)"
    assert set(ids) == corpus.good_ids()
    assert all(FEATURE_KEYS <= set(record) and record["modality"] == "image" for record in extracted.records)
    assert all(record["source"] == record["id"] for record in extracted.records)
    assert {record["model"] for record in extracted.records} == {str(tiny_models["clip"])}
    assert np.isfinite(extracted.vectors).all()
    np.testing.assert_allclose(np.linalg.norm(extracted.vectors, axis=1), 1.0, atol=1e-4)
    image_errors = {e["id"] for e in extracted.errors} - {corpus.path("corrupt.mp4")}
    assert image_errors == corpus.failing_ids()
    assert all(set(error) == ERROR_KEYS and error["source"] == error["id"] for error in extracted.errors)


def test_rows_are_in_walk_order(extracted):
    ids = [record["id"] for record in extracted.records]
    assert ids == sorted(ids, key=lambda path: path.split(os.sep))


def test_each_failure_is_one_readable_line_on_stderr(extracted):
    stderr = extracted.result.stderr
    for error in extracted.errors:
        lines = [line for line in stderr.splitlines() if line.startswith(f"mmcli: skipping {error['id']}: ")]
        assert len(lines) == 1, (error, stderr)
        assert error["error"] in lines[0]
        assert "\n" not in error["error"] and error["error"].strip()
    assert sum(line.startswith("mmcli: skipping ") for line in stderr.splitlines()) == len(extracted.errors)


def test_rows_are_the_embeddings_of_the_decoded_files(extracted, encoder):
    paths = [record["id"] for record in extracted.records]
    expected = encoder.encode_images([load_image(path) for path in paths])
    np.testing.assert_allclose(extracted.vectors, expected, atol=2e-4)


def test_caption_over_the_corpus_reports_the_same_items(captioned, extracted, corpus, tiny_models):
    result, records = captioned
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    ids = [record["id"] for record in records]
    assert len(ids) == len(set(ids)), "an image was captioned twice (symlink loop followed?)"
    captions = {record["id"] for record in records if "error" not in record}
    errors = {record["id"] for record in records if "error" in record}
    assert captions == {record["id"] for record in extracted.records} == corpus.good_ids()
    assert errors - {corpus.path("corrupt.mp4")} == corpus.failing_ids()
    for record in records:
        if "error" in record:
            assert set(record) == ERROR_KEYS, record
        else:
            assert set(record) >= {"id", "source", "caption", "model"}, record
            assert record["model"] == str(tiny_models["blip"]) and isinstance(record["caption"], str)


# --- 1-4: files that are not what their name says ---------------------------------------------------------------


def test_zero_byte_file(extracted, captioned, corpus):
    path = corpus.path("empty.jpg")
    assert "empty file" in error_for(extracted, path)
    assert "empty file" in assert_caption_error(captioned, path)


def test_truncated_jpeg(extracted, captioned, corpus):
    path = corpus.path("truncated.jpg")
    assert re.search("truncated|corrupt", error_for(extracted, path))
    assert re.search("truncated|corrupt", assert_caption_error(captioned, path))


def test_png_named_jpg_is_decoded_as_what_it_is(extracted, captioned, corpus):
    path = corpus.path("png_named.jpg")
    with Image.open(path) as image:
        assert image.format == "PNG"
    # The same pixels as good_coffee.jpg (decoded at full size: the conftest sets MMCLI_EXACT_DECODE), so the same row.
    np.testing.assert_allclose(row_for(extracted, path), row_for(extracted, corpus.path("good_coffee.jpg")), atol=1e-4)
    assert_captioned(captioned, path)


def test_text_file_named_jpg(extracted, captioned, corpus):
    path = corpus.path("text.jpg")
    assert "not an image" in error_for(extracted, path)
    assert "not an image" in assert_caption_error(captioned, path)


# --- 5-7: modes, transparency, orientation ----------------------------------------------------------------------


def test_16_bit_png_is_scaled_to_8_bit_rgb(extracted, captioned, corpus):
    path = corpus.path("deep16.png")
    raw = Path(path).read_bytes()
    assert raw[24] == 16, "the fixture must really be a 16-bit PNG (IHDR bit depth)"
    with Image.open(path) as stored:
        assert stored.mode in ("I;16", "I")
    image = load_image(path)
    assert image.mode == "RGB" and np.asarray(image).dtype == np.uint8
    assert [image.getpixel((x, 5)) for x in (3, 18, 30)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]
    row_for(extracted, path)
    assert_captioned(captioned, path)


def test_cmyk_jpeg_becomes_rgb_with_its_colours(extracted, captioned, corpus):
    path = corpus.path("cmyk.jpg")
    with Image.open(path) as stored:
        assert (stored.format, stored.mode) == ("JPEG", "CMYK")
    image = load_image(path)
    assert image.mode == "RGB"
    assert close_to(image.getpixel((16, 16)), (200, 40, 40))
    row_for(extracted, path)
    assert_captioned(captioned, path)


def test_palette_transparency_is_composited_over_white(extracted, captioned, corpus):
    path = corpus.path("palette_alpha.png")
    with Image.open(path) as stored:
        assert stored.mode == "P" and stored.info.get("transparency") == 1
    image = load_image(path)
    assert image.mode == "RGB"
    assert image.getpixel((4, 4)) == RED
    assert image.getpixel((28, 4)) == WHITE  # transparent, not the palette's green and not black
    row_for(extracted, path)
    assert_captioned(captioned, path)


def test_exif_rotated_photo_comes_out_upright(extracted, captioned, corpus, encoder):
    path = corpus.path("rotated.jpg")
    with Image.open(path) as stored:
        assert stored.size == (64, 40) and stored.getexif()[ORIENTATION] == 6
    image = load_image(path)
    assert image.size == (40, 64), "width and height must be swapped"
    difference = np.abs(np.asarray(image, np.int16) - np.asarray(corpus.rotated_reference, np.int16))
    assert difference.mean() < 1.0
    sideways = np.asarray(corpus.rotated_reference.transpose(Image.Transpose.ROTATE_180), np.int16)
    assert np.abs(np.asarray(image, np.int16) - sideways).mean() > 10, "the reference must tell the turns apart"
    expected = encoder.encode_images([corpus.rotated_reference])[0]
    np.testing.assert_allclose(row_for(extracted, path), expected, atol=2e-3)
    assert_captioned(captioned, path)


# --- 8-9: size and frames ----------------------------------------------------------------------------------------


def test_decompression_bomb_header_is_refused_fast(extracted, captioned, corpus):
    path = corpus.path("bomb.png")
    with open(path, "rb") as handle:
        assert struct.unpack(">II", handle.read(24)[16:24]) == (30_000, 30_000)
        assert os.path.getsize(path) < 1024
    started = time.perf_counter()
    with pytest.raises(ItemError) as caught:
        load_image(path)
    assert time.perf_counter() - started < 2.0, "refused from the header, without decoding 900 megapixels"
    for message in (str(caught.value), error_for(extracted, path), assert_caption_error(captioned, path)):
        assert "limit" in message, message
        assert "30000x30000" in message or "900000000" in message.replace(",", ""), message


def test_animated_gif_gives_its_first_frame(extracted, captioned, corpus, encoder):
    path = corpus.path("animated.gif")
    with Image.open(path) as stored:
        assert stored.n_frames == 3
    image = load_image(path)
    assert image.mode == "RGB" and image.getpixel((5, 5)) == RED
    red, blue = encoder.encode_images([Image.new("RGB", (24, 24), RED), Image.new("RGB", (24, 24), BLUE)])
    row = row_for(extracted, path)
    np.testing.assert_allclose(row, red, atol=2e-4)
    assert float(row @ red) > float(row @ blue)
    assert_captioned(captioned, path)


# --- 10-12: names, links, permissions ---------------------------------------------------------------------------


def test_non_utf8_file_name_round_trips(extracted, captioned, corpus):
    row_for(extracted, corpus.non_utf8)
    (record,) = [r for r in extracted.records if r["id"] == corpus.non_utf8]
    assert os.fsencode(record["source"]) == corpus.raw_non_utf8
    extracted.out.with_suffix(".jsonl").read_bytes().decode("utf-8")  # the sidecar stays valid UTF-8
    caption = caption_record(captioned, corpus.non_utf8)
    assert "error" not in caption
    assert os.fsencode(caption["source"]) == corpus.raw_non_utf8
    assert os.fsencode(caption["id"]) == corpus.raw_non_utf8


def test_symlink_loops_terminate_without_duplicates(extracted, captioned, corpus):
    for ids in ([r["id"] for r in extracted.records], [r["id"] for r in captioned[1]]):
        assert len(ids) == len(set(ids))
        assert not [i for i in ids if os.sep + "loop" + os.sep in i], "rows reached through corpus/loop"
        assert not [i for i in ids if os.path.basename(i) in ("a", "b")]
    assert len(extracted.records) == len(corpus.good_ids())


def test_unreadable_file(extracted, captioned, corpus):
    path = corpus.path("unreadable.jpg")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0
    if PERMISSIONS_BITE:  # a user's run; or root's, with its read-anything capabilities dropped
        assert "permission denied" in error_for(extracted, path)
        assert "permission denied" in assert_caption_error(captioned, path)
    else:  # root that cannot give them up reads any file: the JPEG is processed like the others
        row_for(extracted, path)
        assert_captioned(captioned, path)
        assert load_image(path).mode == "RGB"


def test_the_unreadable_case_is_a_refusal_even_for_root():
    """CI runs as root: there too the unreadable file must be a real refusal, not quietly a row."""
    if sys.platform.startswith("linux"):
        assert PERMISSIONS_BITE, "could not drop root's CAP_DAC_OVERRIDE for the corpus runs"


# --- 18: a corrupt video in the folder ---------------------------------------------------------------------------


def test_corrupt_video_does_not_derail_the_image_batch(extracted, captioned, corpus):
    path = corpus.path("corrupt.mp4")
    assert path not in extracted.row_of
    assert extracted.result.returncode == 1
    # Both commands read videos in folders: it is one clean item error for each.
    assert "video" in extracted.error_of[path] and "\n" not in extracted.error_of[path]
    assert "video" in assert_caption_error(captioned, path)
    assert {r["id"] for r in extracted.records} == corpus.good_ids()


def test_corrupt_video_sample_frames_is_an_item_error(corpus):
    from mmcli.media.video import sample_frames

    with pytest.raises(ItemError) as caught:
        sample_frames(corpus.path("corrupt.mp4"))
    message = str(caught.value)
    assert message.strip() and "\n" not in message and "Traceback" not in message
    assert "video" in message or "decode" in message


# --- 13-16: files that stop retrieve and evaluate ----------------------------------------------------------------


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_index_with_non_finite_rows_is_refused_naming_the_row(run_mmcli, tmp_path, bad):
    index = np.full((4, 8), 0.25, np.float32)
    index[2, 0] = float(bad)
    write_feature_set(tmp_path / "index.npy", index)
    queries = np.full((1, 8), 0.5, np.float32)
    write_feature_set(tmp_path / "queries.npy", queries)
    result = run_mmcli("retrieve", "--index", tmp_path / "index.npy", "--queries", tmp_path / "queries.npy", "-k", "4")
    line = assert_stops_with_one_line(result, 2)
    assert "row 2" in line and re.search("NaN|infinite", line), line


def test_query_feature_set_with_nan_rows_is_refused_naming_the_row(run_mmcli, tmp_path):
    write_feature_set(tmp_path / "index.npy", np.full((3, 8), 0.25, np.float32))
    queries = np.full((3, 8), 0.5, np.float32)
    queries[1, 3] = np.nan
    write_feature_set(tmp_path / "queries.npy", queries)
    result = run_mmcli("retrieve", "--index", tmp_path / "index.npy", "--queries", tmp_path / "queries.npy")
    line = assert_stops_with_one_line(result, 2)
    assert "row 1" in line and "NaN" in line, line


class _Payload:
    """Unpickling this creates ``marker``: proof that a pickle inside a .npy was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_object_npy_is_refused_and_never_unpickled(run_mmcli, tmp_path):
    control, marker = tmp_path / "control.flag", tmp_path / "pwned.flag"
    np.save(tmp_path / "control.npy", np.array([_Payload(control)], dtype=object), allow_pickle=True)
    np.load(tmp_path / "control.npy", allow_pickle=True)  # the payload works when something does unpickle it
    assert control.exists()

    write_feature_set(tmp_path / "evil.npy", np.array([[_Payload(marker)]], dtype=object))
    write_feature_set(tmp_path / "queries.npy", np.ones((1, 1), np.float32))
    result = run_mmcli("retrieve", "--index", tmp_path / "evil.npy", "--queries", tmp_path / "queries.npy")
    line = assert_stops_with_one_line(result, 2)
    assert "evil.npy" in line and re.search("pickle|object", line, re.IGNORECASE), line
    assert not marker.exists(), "the pickled object in the .npy was unpickled"


def test_sidecar_with_a_different_row_count_is_refused(run_mmcli, tmp_path):
    write_feature_set(tmp_path / "index.npy", np.full((3, 8), 0.25, np.float32), records=2)
    write_feature_set(tmp_path / "queries.npy", np.full((1, 8), 0.5, np.float32))
    result = run_mmcli("retrieve", "--index", tmp_path / "index.npy", "--queries", tmp_path / "queries.npy")
    line = assert_stops_with_one_line(result, 2)
    assert "3 rows" in line and "2 records" in line, line


def test_a_zero_byte_npy_is_one_error_line_not_aborted(run_mmcli, tmp_path):
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "empty.jsonl").write_text("")
    write_feature_set(tmp_path / "queries.npy", np.ones((1, 8), np.float32))
    for args in (["retrieve", "--index", tmp_path / "empty.npy", "--queries", tmp_path / "queries.npy"],
                 ["fuse", tmp_path / "empty.npy", tmp_path / "queries.npy", "-o", tmp_path / "f.npy"],
                 ["index", "build", tmp_path / "empty.npy"]):  # fmt: skip
        result = run_mmcli(*args)
        line = assert_stops_with_one_line(result, 2)
        assert "empty.npy" in line and "empty or cut short" in line and "Aborted" not in result.stderr, line


def test_a_byte_order_mark_is_not_part_of_the_first_text_query_label_or_path(run_mmcli, tiny_models, photos, tmp_path):
    bom = "\ufeff"
    texts = tmp_path / "input-texts.txt"
    texts.write_text(bom + "a red cat\na dog\n", encoding="utf-8")
    records = tmp_path / "input-records.jsonl"
    records.write_text(bom + json.dumps({"id": "first", "caption": "a red cat"}) + "\n", encoding="utf-8")
    clip = tiny_models["clip"]
    for name, args in (("texts", [texts]), ("records", [records, "--field", "caption"])):
        done = run_mmcli("extract-features", "--modality", "text", *args, "-o", tmp_path / f"{name}.npy", "-m", clip)
        assert done.returncode == 0, done.stderr
    plain = read_feature_set(tmp_path / "texts.npy")
    assert plain.records[0]["source"] == "a red cat" and read_feature_set(tmp_path / "records.npy").ids == ["first"]
    queries = tmp_path / "queries.txt"
    queries.write_text(bom + "a red cat\n", encoding="utf-8")
    hits = run_mmcli("retrieve", "--index", tmp_path / "texts.npy", "--queries", queries, "-k", "1")
    assert hits.returncode == 0, hits.stderr
    assert json.loads(hits.stdout)["query"] == "a red cat"
    labels = tmp_path / "labels.txt"
    labels.write_text(bom + "cat\nrocket\n", encoding="utf-8")
    scored = run_mmcli("classify", photos / "chelsea.jpg", "--labels-file", labels, "-m", clip)
    assert scored.returncode == 0, scored.stderr
    assert set(json.loads(scored.stdout)["scores"]) == {"cat", "rocket"}
    paths = tmp_path / "paths.txt"
    paths.write_text(bom + f"{photos / 'chelsea.jpg'}\n", encoding="utf-8")
    listed = run_mmcli("extract-features", "-", "-o", tmp_path / "listed.npy", "-m", clip, input=paths.read_text())
    assert listed.returncode == 0, listed.stderr
    assert read_feature_set(tmp_path / "listed.npy").records[0]["source"] == str(photos / "chelsea.jpg")


def test_a_null_parquet_text_is_an_error_record_naming_its_row(run_mmcli, tiny_models, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = tmp_path / "texts.parquet"
    pq.write_table(pa.table({"caption": ["a cat", None, "a dog"]}), table)
    out = tmp_path / "t.npy"
    done = run_mmcli("extract-features", "--modality", "text", table, "--text-column", "caption", "-o", out,
                     "-m", tiny_models["clip"])  # fmt: skip
    assert done.returncode == 1, done.stderr
    (error,) = [json.loads(line) for line in (tmp_path / "t.errors.jsonl").read_text().splitlines()]
    assert error["source"] == f"{table}:1" and error["error"] == "no text in column 'caption' (null)", error
    assert [r["source"] for r in read_feature_set(out).records] == ["a cat", "a dog"]


def test_broken_jsonl_queries_name_the_line(run_mmcli, extracted, tmp_path):
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"id": "q1", "text": "a cat"}\n{"id": "q2", "text": "a ro\n{"id": "q3", "text": "coffee"}\n')
    result = run_mmcli("retrieve", "--index", extracted.out, "--queries", queries)
    line = assert_stops_with_one_line(result, 2)
    assert "queries.jsonl:2" in line or "line 2" in line, line


def test_broken_jsonl_predictions_name_the_line(run_mmcli, tmp_path):
    pred, refs = tmp_path / "pred.jsonl", tmp_path / "refs.jsonl"
    pred.write_text(
        '{"id": "a", "caption": "a cat on a sofa"}\n'
        '{"id": "b", "caption": "a rocket"}\n'
        '{"id": "c", "caption": "coffee in a cup"\n'
    )
    refs.write_text(
        "".join(json.dumps({"id": i, "captions": ["a cat on a couch", "a cup of coffee"]}) + "\n" for i in "abc")
    )
    result = run_mmcli("evaluate", "captions", "--pred", pred, "--refs", refs, "--format", "json")
    line = assert_stops_with_one_line(result, 2)
    assert "pred.jsonl:3" in line or "line 3" in line, line


def test_query_of_the_wrong_dimension_is_refused(run_mmcli, extracted, tmp_path):
    width = extracted.vectors.shape[1]
    write_feature_set(tmp_path / "other.npy", np.ones((2, width + 3), np.float32))
    result = run_mmcli("retrieve", "--index", extracted.out, "--queries", tmp_path / "other.npy")
    line = assert_stops_with_one_line(result, 2)
    assert f"{width + 3} dimensions" in line and str(width) in line, line


# --- 17: nothing to do -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("contents", ["empty", "no_images"])
def test_empty_input_set_is_a_usage_error_without_outputs(run_mmcli, tiny_models, tmp_path, contents):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    if contents == "no_images":
        (inputs / "notes.txt").write_text("not an image\n")
        (inputs / "readme.md").write_text("nothing to embed here\n")
    out = tmp_path / "out"
    out.mkdir()

    extract = run_mmcli("extract-features", inputs, "-o", out / "feats.npy", "--model", tiny_models["clip"])
    line = assert_stops_with_one_line(extract, 2)
    assert "no images" in line or "no inputs" in line, line
    assert list(out.iterdir()) == [], "no .npy / .jsonl / errors / partial files for an empty input set"

    to_file = run_mmcli("caption", inputs, "-o", out / "caps.jsonl", "--model", tiny_models["blip"])
    line = assert_stops_with_one_line(to_file, 2)
    assert "no images" in line or "no inputs" in line, line
    assert list(out.iterdir()) == []

    to_stdout = run_mmcli("caption", inputs, "--model", tiny_models["blip"])
    assert_stops_with_one_line(to_stdout, 2)


BINARY = bytes(range(256)) * 4  # every byte value: never valid UTF-8 text


def _hostile_text_inputs(folder: Path, photo: Path) -> dict[str, Path]:
    """Files that stand where a command expects text: binary data, JSONL broken in the middle, and
    records whose fields have the wrong type."""
    files = {
        "binary": BINARY,
        "broken_middle": (
            json.dumps({"path": str(photo), "text": "a cat"}) + '\n{"path": \n' + json.dumps({"text": "a dog"}) + "\n"
        ).encode(),
        "path_is_a_number": b'{"path": 5}\n',
        "text_is_a_number": b'{"text": 5}\n',
    }
    paths = {}
    for name, data in files.items():
        paths[name] = folder / f"{name}.jsonl"
        paths[name].write_bytes(data)
    return paths


@pytest.mark.parametrize("case", ["binary", "broken_middle", "path_is_a_number", "text_is_a_number"])
def test_every_reading_command_stops_on_hostile_text_with_one_line(run_mmcli, tiny_models, photos, tmp_path, case):
    """Each command that reads JSONL or text lines, given a file of this kind, exits 2 with one readable line
    naming the file, prints no record and leaves no output behind."""
    files = _hostile_text_inputs(tmp_path, photos / "chelsea.jpg")
    bad = files[case]
    out = tmp_path / "out"
    out.mkdir()
    index = write_feature_set(tmp_path / "index.npy", np.eye(4, 24, dtype=np.float32), model=str(tiny_models["clip"]))
    clip, blip = ["--model", tiny_models["clip"]], ["--model", tiny_models["blip"]]
    commands = {
        "extract images from stdin": (["extract-features", "-", "-o", out / "a.npy", *clip], bad.read_bytes()),
        "extract texts": (["extract-features", "--modality", "text", bad, "-o", out / "b.npy", *clip], None),
        "caption from stdin": (["caption", "-", "-o", out / "c.jsonl", *blip], bad.read_bytes()),
        "retrieve queries": (["retrieve", "--index", index, "--queries", bad, *clip], None),
        "fuse results": (["fuse", "--results", bad, bad], None),
        "evaluate captions": (["evaluate", "captions", "--pred", bad, "--refs", bad], None),
        "evaluate retrieval": (["evaluate", "retrieval", "--results", bad, "--qrels", bad], None),
        "evaluate classification": (["evaluate", "classification", "--pred", bad, "--truth", bad], None),
    }
    if case == "binary":
        commands["classify labels file"] = (["classify", photos, "--labels-file", bad, *clip], None)
    expected_to_refuse = {
        # A record whose path is a number is a bad line for every reader; so is one whose text is a number,
        # except where only a path (stdin images) or only the text (texts) is read: those are per-item cases.
        "path_is_a_number": set(commands) - {"extract texts"},
        "text_is_a_number": {"extract texts", "retrieve queries"},
    }.get(case, set(commands))
    for what, (args, stdin) in commands.items():
        if what not in expected_to_refuse:
            continue
        result = run_mmcli(*args, input=stdin)
        line = assert_stops_with_one_line(result, 2) if what != "caption from stdin" else result.stderr
        assert result.returncode == 2 and "Traceback" not in result.stderr, (what, result.stderr)
        assert line.strip(), what
        assert list(out.iterdir()) == [], f"{what} left {list(out.iterdir())}"

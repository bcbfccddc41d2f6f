"""Image decoding: every file becomes an upright 8-bit RGB picture, or an ItemError a person can read.

Every test image is generated inside the test, in ``tmp_path``; nothing binary is committed.
"""

from __future__ import annotations

import os
import resource
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from mmcli.errors import ItemError
from mmcli.media.images import DEFAULT_MAX_PIXELS, is_image_path, load_image

RED = (255, 0, 0)
BLUE = (0, 0, 255)
GREEN = (0, 255, 0)
WHITE = (255, 255, 255)
ORIENTATION = 0x0112


def close_to(actual, expected, tolerance=8):
    return all(abs(int(a) - int(e)) <= tolerance for a, e in zip(actual, expected, strict=True))


def assert_rgb8(image):
    assert isinstance(image, Image.Image)
    assert image.mode == "RGB"
    assert np.asarray(image).dtype == np.uint8


def left_red_right_blue(width=40, height=20):
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, width // 2, height))
    return image


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def crafted_png(width, height, color_type=2):
    """A well-formed PNG signature and IHDR (correct CRC) declaring any size, with a tiny, truncated IDAT."""
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))


def load_error(path, **kwargs):
    with pytest.raises(ItemError) as caught:
        load_image(path, **kwargs)
    return str(caught.value)


# --- orientation -------------------------------------------------------------------------------------------------


def save_with_orientation(path, orientation):
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    left_red_right_blue().save(path, quality=95, exif=exif)
    with Image.open(path) as stored:  # the file really is stored sideways, with the tag
        assert stored.size == (40, 20)
        assert stored.getexif()[ORIENTATION] == orientation


def test_exif_orientation_6_is_rotated_upright(tmp_path):
    path = tmp_path / "rot6.jpg"
    save_with_orientation(path, 6)
    image = load_image(path)
    assert_rgb8(image)
    assert image.size == (20, 40)  # width and height swapped
    # Orientation 6: the picture must be turned 90 degrees clockwise, so its left edge becomes the top.
    assert close_to(image.getpixel((10, 5)), RED)
    assert close_to(image.getpixel((10, 34)), BLUE)


def test_exif_orientation_8_is_rotated_upright(tmp_path):
    path = tmp_path / "rot8.jpg"
    save_with_orientation(path, 8)
    image = load_image(path)
    assert image.size == (20, 40)
    # Orientation 8: turned 90 degrees counter-clockwise, so the left edge becomes the bottom.
    assert close_to(image.getpixel((10, 5)), BLUE)
    assert close_to(image.getpixel((10, 34)), RED)


def test_jpeg_without_orientation_is_unchanged(tmp_path):
    path = tmp_path / "plain.jpg"
    left_red_right_blue().save(path, quality=95)
    image = load_image(path)
    assert image.size == (40, 20)
    assert close_to(image.getpixel((5, 10)), RED)
    assert close_to(image.getpixel((34, 10)), BLUE)


def test_malformed_exif_never_escapes_as_a_non_item_error(tmp_path):
    # A camera wrote its "Make" string under tag 0x0100 (ImageWidth, normally a number). Pillow decodes the pixels
    # and reads the tags, so the photo is usable; re-writing the EXIF while transposing must not crash the run.
    path = tmp_path / "odd_exif.jpg"
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    exif[0x010F] = "Canon"
    left_red_right_blue().save(path, quality=95, exif=exif)
    data = path.read_bytes()
    make_entry = b"\x01\x0f\x00\x02"  # big-endian IFD entry: tag 0x010F, type ASCII
    assert data.count(make_entry) == 1
    path.write_bytes(data.replace(make_entry, b"\x01\x00\x00\x02"))
    with Image.open(path) as stored:
        stored.load()
        assert stored.getexif()[0x0100] == "Canon"
    try:
        image = load_image(path)
    except ItemError as exc:  # a per-item error is acceptable ...
        assert str(exc)
    else:  # ... loading it upright is better
        assert_rgb8(image)
        assert image.size == (20, 40)
        assert close_to(image.getpixel((10, 5)), RED)


# --- modes -------------------------------------------------------------------------------------------------------


def test_grayscale_l(tmp_path):
    path = tmp_path / "gray.png"
    Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8), mode="L").save(path)
    image = load_image(path)
    assert_rgb8(image)
    assert image.size == (3, 1)
    assert [image.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (77, 77, 77), (255, 255, 255)]


def test_grayscale_with_alpha_la_is_composited_over_white(tmp_path):
    path = tmp_path / "la.png"
    image = Image.new("LA", (3, 1))
    image.putpixel((0, 0), (100, 255))  # opaque
    image.putpixel((1, 0), (100, 0))  # fully transparent
    image.putpixel((2, 0), (0, 128))  # half transparent black
    image.save(path)
    with Image.open(path) as stored:
        assert stored.mode == "LA"
    loaded = load_image(path)
    assert_rgb8(loaded)
    assert loaded.getpixel((0, 0)) == (100, 100, 100)
    assert loaded.getpixel((1, 0)) == WHITE
    assert close_to(loaded.getpixel((2, 0)), (127, 127, 127), tolerance=1)


def palette_image():
    image = Image.new("P", (3, 1))
    palette = [0, 0, 0] * 256
    palette[0:9] = [*GREEN, *RED, *BLUE]
    image.putpalette(palette)
    for x in range(3):
        image.putpixel((x, 0), x)
    return image


def test_palette_with_transparent_index_becomes_white(tmp_path):
    path = tmp_path / "pal_transparent.png"
    palette_image().save(path, transparency=0)  # index 0 (green) is transparent
    with Image.open(path) as stored:
        assert stored.mode == "P"
        assert "transparency" in stored.info
    image = load_image(path)
    assert_rgb8(image)
    assert [image.getpixel((x, 0)) for x in range(3)] == [WHITE, RED, BLUE]


def test_palette_without_transparency(tmp_path):
    path = tmp_path / "pal.png"
    palette_image().save(path)
    with Image.open(path) as stored:
        assert stored.mode == "P"
        assert "transparency" not in stored.info
    image = load_image(path)
    assert_rgb8(image)
    assert [image.getpixel((x, 0)) for x in range(3)] == [GREEN, RED, BLUE]


def test_rgba_alpha_is_composited_over_white(tmp_path):
    path = tmp_path / "rgba.png"
    image = Image.new("RGBA", (3, 1))
    image.putpixel((0, 0), (10, 20, 30, 0))  # transparent: its colour must not leak through
    image.putpixel((1, 0), (10, 20, 30, 255))  # opaque: keeps its colour
    image.putpixel((2, 0), (255, 0, 0, 128))  # half transparent red over white
    image.save(path)
    loaded = load_image(path)
    assert_rgb8(loaded)
    assert loaded.getpixel((0, 0)) == WHITE
    assert loaded.getpixel((1, 0)) == (10, 20, 30)
    assert close_to(loaded.getpixel((2, 0)), (255, 127, 127), tolerance=1)


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    image = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red in CMYK
    image.paste((0, 0, 0, 0), (8, 0, 16, 16))  # white
    image.save(path, quality=95)
    with Image.open(path) as stored:
        assert stored.mode == "CMYK"
    loaded = load_image(path)
    assert_rgb8(loaded)
    assert loaded.size == (16, 16)
    assert close_to(loaded.getpixel((3, 8)), RED, tolerance=12)
    assert close_to(loaded.getpixel((12, 8)), WHITE, tolerance=12)


def test_16_bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    values = np.array([[65535, 32768, 0, 257]], dtype=np.uint16)
    Image.fromarray(values).save(path)
    with Image.open(path) as stored:
        assert stored.mode == "I;16"
    image = load_image(path)
    assert_rgb8(image)
    pixels = [image.getpixel((x, 0)) for x in range(4)]
    assert pixels[0] == (255, 255, 255)
    assert close_to(pixels[1], (128, 128, 128), tolerance=1)  # mid-range stays mid-grey, not clipped to 255
    assert pixels[2] == (0, 0, 0)
    assert close_to(pixels[3], (1, 1, 1), tolerance=1)


def test_one_bit_image(tmp_path):
    path = tmp_path / "bits.png"
    image = Image.new("1", (4, 1), 0)
    image.putpixel((1, 0), 1)
    image.putpixel((3, 0), 1)
    image.save(path)
    with Image.open(path) as stored:
        assert stored.mode == "1"
    loaded = load_image(path)
    assert_rgb8(loaded)
    assert [loaded.getpixel((x, 0)) for x in range(4)] == [(0, 0, 0), WHITE, (0, 0, 0), WHITE]


def test_rgb_png_round_trips_exactly(tmp_path):
    path = tmp_path / "rgb.png"
    left_red_right_blue().save(path)
    image = load_image(path)
    assert_rgb8(image)
    assert image.size == (40, 20)
    assert image.getpixel((0, 0)) == RED
    assert image.getpixel((39, 19)) == BLUE


def test_animated_gif_gives_first_frame(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (8, 8), color) for color in (RED, BLUE, GREEN)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as stored:
        assert stored.n_frames == 3
    image = load_image(path)
    assert_rgb8(image)
    assert image.size == (8, 8)
    assert image.getpixel((4, 4)) == RED


# --- decompression bombs -----------------------------------------------------------------------------------------


def test_image_over_max_pixels_is_refused_with_the_limit(tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (20, 10), RED).save(path)
    message = load_error(path, max_pixels=199)
    assert "20x10" in message
    assert "199" in message
    assert "limit" in message
    assert "--max-pixels" in message
    assert load_image(path, max_pixels=200).size == (20, 10)  # exactly at the limit is fine


def test_crafted_huge_png_header_is_refused_quickly_without_allocating(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    path.write_bytes(crafted_png(30_000, 30_000))
    with monkeypatch.context() as patch:  # the file is a real PNG (CRC checked) whose header claims 900 megapixels
        patch.setattr(Image, "MAX_IMAGE_PIXELS", None)
        with Image.open(path) as header_only:
            assert (header_only.format, header_only.size) == ("PNG", (30_000, 30_000))
    assert Image.MAX_IMAGE_PIXELS is not None
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    message = load_error(path)
    elapsed = time.perf_counter() - start
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert elapsed < 2.0
    assert grown_kib < 200 * 1024  # decoding 30000x30000 RGB would need about 2.7 GB
    assert "decompression bomb" in message
    assert "limit" in message
    assert "900000000" in message.replace(",", "") or "30000x30000" in message


def test_raised_max_pixels_above_pillow_default_is_honoured(tmp_path):
    # 180 megapixels: over the default limit, but the user said --max-pixels 1,000,000,000. The header must get
    # past the size check; the file then fails for what it is (truncated), not as a decompression bomb.
    path = tmp_path / "big_but_allowed.png"
    path.write_bytes(crafted_png(15_000, 12_000, color_type=0))
    assert 15_000 * 12_000 > DEFAULT_MAX_PIXELS
    assert "limit" in load_error(path)  # refused under the default limit
    message = load_error(path, max_pixels=1_000_000_000)
    assert "decompression bomb" not in message
    assert message.startswith("corrupt image")


# --- broken and odd files ----------------------------------------------------------------------------------------


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert "empty file" in load_error(path)


def test_truncated_jpeg(tmp_path):
    path = tmp_path / "truncated.jpg"
    noise = np.random.default_rng(0).integers(0, 256, size=(96, 96, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, quality=95)
    data = path.read_bytes()
    assert load_image(path).size == (96, 96)  # whole, it is fine
    path.write_bytes(data[: len(data) // 2])
    message = load_error(path)
    assert message.startswith("corrupt image")
    assert "truncated" in message


def test_png_data_under_jpg_name_loads(tmp_path):
    path = tmp_path / "really_a_png.jpg"
    left_red_right_blue().save(path, format="PNG")
    assert path.read_bytes().startswith(b"\x89PNG")
    image = load_image(path)
    assert_rgb8(image)
    assert image.getpixel((0, 0)) == RED
    assert image.getpixel((39, 0)) == BLUE


def test_text_file_named_jpg_is_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("these are not pixels\n" * 10)
    assert "not an image" in load_error(path)


def test_missing_file(tmp_path):
    message = load_error(tmp_path / "nowhere.jpg")
    assert "no such file" in message


def test_directory_path(tmp_path):
    folder = tmp_path / "album.jpg"
    folder.mkdir()
    assert "directory" in load_error(folder)


def test_unreadable_file(tmp_path):
    path = tmp_path / "secret.png"
    Image.new("RGB", (4, 4), GREEN).save(path)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):  # root reads through chmod 000: then the file must simply load
            assert load_image(path).getpixel((0, 0)) == GREEN
        else:
            assert "permission denied" in load_error(path)
    finally:
        path.chmod(0o644)


def test_accepts_str_paths(tmp_path):
    path = tmp_path / "str.png"
    Image.new("RGB", (2, 3), RED).save(path)
    assert load_image(str(path)).size == (2, 3)


def test_error_is_an_item_error_with_readable_message_not_a_traceback(tmp_path):
    path = tmp_path / "junk.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 5)
    message = load_error(path)
    assert message
    assert "Traceback" not in message
    assert "\n" not in message


# --- extensions --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["a.jpg", "A.JPG", "photo.jpeg", "photo.JPEG", "x.png", "X.PnG", "y.webp", "Y.WEBP", "dir.d/z.Jpg"]
)
def test_is_image_path_accepts_image_extensions(name):
    assert is_image_path(name)


@pytest.mark.parametrize("name", ["notes.txt", "NOTES.TXT", "jpg", "archive.jpg.zip", "noext", "folder.png/readme"])
def test_is_image_path_rejects_others(name):
    assert not is_image_path(name)


def test_is_image_path_takes_pathlike(tmp_path):
    assert is_image_path(tmp_path / "a.JPG")
    assert not is_image_path(tmp_path / "a.txt")

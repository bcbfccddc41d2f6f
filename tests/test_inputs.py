"""Input discovery: files, folders, globs, stdin and texts become a deterministic stream of items."""

from __future__ import annotations

import io
import os

import pytest

from mmcli.errors import InputError, UsageError
from mmcli.io.inputs import discover_images, discover_texts, walk_images
from mmcli.items import InputItem


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def rel(paths, root):
    return [os.path.relpath(p, root) for p in paths]


@pytest.fixture
def album(tmp_path):
    """A folder whose names sort differently as plain strings and as path components."""
    root = tmp_path / "album"
    for name in (
        "a/b.jpg",
        "a/c/d.png",
        "a-b.jpg",
        "a.png",
        "Z.JPG",
        "zz/deep/deeper/e.webp",
        "a/c/notes.txt",
        "readme",
        "zz/data.json",
    ):
        touch(root / name)
    return root


ALBUM_ORDER = ["Z.JPG", "a/b.jpg", "a/c/d.png", "a-b.jpg", "a.png", "zz/deep/deeper/e.webp"]


# --- folders -----------------------------------------------------------------------------------------------------


def test_walk_images_sorts_by_path_components(album):
    found = walk_images(str(album))
    assert rel(found, album) == ALBUM_ORDER
    # The order really is by components: a naive string sort puts "a-b.jpg" and "a.png" before "a/b.jpg".
    assert sorted(ALBUM_ORDER) != ALBUM_ORDER
    assert all(os.path.isabs(p) and p.startswith(str(album) + os.sep) for p in found)


def test_walk_images_is_deterministic(album):
    assert walk_images(str(album)) == walk_images(str(album))


def test_discover_images_recurses_a_folder_and_skips_non_images(album):
    items = list(discover_images([str(album)]))
    assert rel([item.path for item in items], album) == ALBUM_ORDER
    for item in items:
        assert item.modality == "image"
        assert item.error is None
        assert item.id == item.source == item.path
        assert item.extra == {}
    names = {os.path.basename(item.path) for item in items}
    assert not names & {"notes.txt", "readme", "data.json"}


def test_trailing_slash_on_a_folder_gives_clean_paths(album):
    items = list(discover_images([str(album) + os.sep]))
    assert [item.path for item in items] == [os.path.join(str(album), *p.split("/")) for p in ALBUM_ORDER]


def test_relative_folder_keeps_relative_ids(album, monkeypatch):
    monkeypatch.chdir(album.parent)
    items = list(discover_images(["album"]))
    assert [item.id for item in items] == [os.path.join("album", *p.split("/")) for p in ALBUM_ORDER]


def test_symlink_loop_terminates_and_lists_real_images_once(tmp_path):
    root = tmp_path / "loopy"
    touch(root / "a.jpg")
    touch(root / "sub" / "b.jpg")
    (root / "sub" / "back").symlink_to("..", target_is_directory=True)  # sub/back -> loopy
    (root / "sub" / "again").symlink_to(root, target_is_directory=True)  # absolute link to the same folder
    (root / "self").symlink_to("self")  # a link to itself: stat fails with ELOOP
    (root / "dangling.jpg").symlink_to("nowhere")
    found = walk_images(str(root))
    real = [p for p in found if not os.path.basename(p).startswith("dangling")]
    assert rel(real, root) == ["a.jpg", "sub/b.jpg"]
    items = list(discover_images([str(root)]))
    assert sum(os.path.basename(item.path) == "b.jpg" for item in items) == 1
    assert sum(os.path.basename(item.path) == "a.jpg" for item in items) == 1


def test_symlinked_folder_is_followed(tmp_path):
    real = tmp_path / "real"
    touch(real / "x.png")
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(real, target_is_directory=True)
    assert rel(walk_images(str(root)), root) == ["link/x.png"]


def test_empty_folder_gives_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    assert list(discover_images([str(tmp_path / "empty")])) == []


# --- files, globs, missing paths ---------------------------------------------------------------------------------


def test_explicit_non_image_file_is_still_an_item(tmp_path):
    notes = touch(tmp_path / "notes.txt")
    items = list(discover_images([str(notes)]))
    assert len(items) == 1
    assert items[0].path == items[0].id == items[0].source == str(notes)
    assert items[0].error is None  # decoding will report it; discovery must not drop it


def test_inputs_keep_the_order_given(album, tmp_path):
    one = touch(tmp_path / "one.jpg")
    items = list(discover_images([str(one), str(album / "a"), str(album / "Z.JPG")]))
    assert [item.path for item in items] == [
        str(one),
        str(album / "a" / "b.jpg"),
        str(album / "a" / "c" / "d.png"),
        str(album / "Z.JPG"),
    ]


def test_glob_pattern(tmp_path):
    for name in ("b.jpg", "a.jpg", "c.png", "d.txt"):
        touch(tmp_path / "g" / name)
    items = list(discover_images([str(tmp_path / "g" / "*.jpg")]))
    assert [os.path.basename(item.path) for item in items] == ["a.jpg", "b.jpg"]
    assert all(item.error is None for item in items)


def test_glob_skips_non_images_and_walks_matched_folders(tmp_path):
    for name in ("top.png", "notes.txt", "sub/inner.jpg", "sub/inner.txt"):
        touch(tmp_path / "g" / name)
    items = list(discover_images([str(tmp_path / "g" / "*")]))
    assert rel([item.path for item in items], tmp_path / "g") == ["sub/inner.jpg", "top.png"]


def test_recursive_glob(tmp_path):
    for name in ("x.png", "one/y.png", "one/two/z.png", "one/two/z.jpg"):
        touch(tmp_path / "r" / name)
    items = list(discover_images([str(tmp_path / "r" / "**" / "*.png")]))
    assert sorted(rel([item.path for item in items], tmp_path / "r")) == ["one/two/z.png", "one/y.png", "x.png"]


def test_glob_matching_nothing_is_an_error_item(tmp_path):
    pattern = str(tmp_path / "none" / "*.jpg")
    items = list(discover_images([pattern]))
    assert len(items) == 1
    assert items[0].id == items[0].source == pattern
    assert items[0].error == "no image matches this pattern"


def test_missing_path_is_an_error_item_and_later_inputs_continue(tmp_path):
    there = touch(tmp_path / "there.jpg")
    missing = str(tmp_path / "missing.jpg")
    items = list(discover_images([missing, str(there)]))
    assert [item.id for item in items] == [missing, str(there)]
    assert items[0].error == "no such file or directory"
    assert items[0].modality == "image"
    assert items[1].error is None


# --- stdin -------------------------------------------------------------------------------------------------------


def test_stdin_bare_paths():
    stdin = io.StringIO("a.jpg\n\n   \nfolder with space/b.png\nc.webp")
    items = list(discover_images(["-"], stdin=stdin))
    assert [item.path for item in items] == ["a.jpg", "folder with space/b.png", "c.webp"]
    assert [item.id for item in items] == ["a.jpg", "folder with space/b.png", "c.webp"]
    assert all(item.extra == {} and item.error is None for item in items)


def test_stdin_jsonl_records_carry_id_and_extra_keys():
    stdin = io.StringIO(
        '{"path": "cats/1.jpg", "id": "cat-1", "label": "cat", "score": 0.5}\n'
        '{"path": "dogs/2.jpg", "meta": {"k": [1, 2]}}\n'
        '{"path": "3.jpg", "id": 7}\n'
        "plain.jpg\n"
    )
    items = list(discover_images(["-"], stdin=stdin))
    assert [(item.id, item.path, item.source) for item in items] == [
        ("cat-1", "cats/1.jpg", "cats/1.jpg"),
        ("dogs/2.jpg", "dogs/2.jpg", "dogs/2.jpg"),
        ("7", "3.jpg", "3.jpg"),
        ("plain.jpg", "plain.jpg", "plain.jpg"),
    ]
    assert items[0].extra == {"label": "cat", "score": 0.5}
    assert items[1].extra == {"meta": {"k": [1, 2]}}
    assert items[2].extra == {}


def test_stdin_broken_jsonl_line_names_the_line():
    stdin = io.StringIO('{"path": "a.jpg"}\nb.jpg\n{"path": "c.jpg"\n{"path": "d.jpg"}\n')
    items = discover_images(["-"], stdin=stdin)
    assert next(items).path == "a.jpg"  # lazy: earlier lines are already out
    assert next(items).path == "b.jpg"
    with pytest.raises(InputError) as caught:
        next(items)
    assert "<stdin>:3" in str(caught.value)
    assert "JSON" in str(caught.value)


def test_stdin_record_without_path_names_the_line():
    stdin = io.StringIO('\n{"file": "a.jpg"}\n')
    with pytest.raises(InputError, match=r"<stdin>:2: .*'path'"):
        list(discover_images(["-"], stdin=stdin))


def test_stdin_line_starting_with_a_brace_must_be_valid_json():
    with pytest.raises(InputError, match=r"<stdin>:1"):
        list(discover_images(["-"], stdin=io.StringIO("{[1, 2]\n")))


def test_stdin_mixed_with_files(tmp_path):
    there = touch(tmp_path / "there.png")
    items = list(discover_images([str(there), "-"], stdin=io.StringIO("piped.jpg\n")))
    assert [item.path for item in items] == [str(there), "piped.jpg"]


# --- texts -------------------------------------------------------------------------------------------------------


def test_texts_from_text_values():
    items = list(discover_texts([], ["a photo of a cat", "a dog", "  spaced  "]))
    assert [item.id for item in items] == ["1", "2", "3"]
    assert [item.text for item in items] == ["a photo of a cat", "a dog", "  spaced  "]
    assert [item.source for item in items] == ["a photo of a cat", "a dog", "  spaced  "]
    assert all(item.modality == "text" and item.path is None and item.error is None for item in items)


def test_texts_from_txt_file_skip_blank_lines_and_use_line_numbers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("first\n\nsecond line\n   \nthird\n", encoding="utf-8")
    items = list(discover_texts(["notes.txt"]))
    assert [(item.id, item.text) for item in items] == [("1", "first"), ("3", "second line"), ("5", "third")]


def test_texts_txt_file_non_ascii_and_crlf(tmp_path):
    path = tmp_path / "unicode.txt"
    path.write_bytes("café ☕\r\nnaïve\r\n".encode())
    assert [item.text for item in discover_texts([str(path)])] == ["café ☕", "naïve"]


def test_texts_from_jsonl_with_custom_field(tmp_path):
    path = tmp_path / "captions.jsonl"
    path.write_text(
        '{"caption": "a red car", "id": "c1", "lang": "en"}\n'
        "\n"
        '{"caption": "ein Hund", "lang": "de", "text": "not this one"}\n',
        encoding="utf-8",
    )
    items = list(discover_texts([str(path)], field_name="caption"))
    assert [(item.id, item.text) for item in items] == [("c1", "a red car"), ("3", "ein Hund")]
    assert items[0].extra == {"lang": "en"}
    assert items[1].extra == {"lang": "de", "text": "not this one"}


def test_records_without_the_field_are_skipped_and_counted(tmp_path):
    # caption's output: results, then a video's summary record and an error record, which have no caption
    path = tmp_path / "captions.jsonl"
    path.write_text('{"id": "a.jpg", "caption": "ok"}\n{"id": "talk.mp4", "summary": "s; t"}\n'
                    '{"id": "b.jpg", "error": "cannot decode"}\n{"id": "c.jpg", "caption": null}\n'
                    '{"id": "d.jpg", "caption": "fine"}\n', encoding="utf-8")  # fmt: skip
    notes = []
    items = list(discover_texts([str(path)], field_name="caption", on_note=notes.append))
    assert [(item.id, item.text) for item in items] == [("a.jpg", "ok"), ("d.jpg", "fine")]
    assert notes == [f"{path}: skipped 3 of 5 records without 'caption' (summary or error records)"]


def test_a_field_no_record_has_names_the_field(tmp_path):
    path = tmp_path / "captions.jsonl"
    path.write_text('{"text": "wrong field"}\n{"text": "again"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"no record has a text field 'caption'"):
        list(discover_texts([str(path)], field_name="caption"))


def test_a_field_that_is_not_text_names_the_line(tmp_path):
    path = tmp_path / "captions.jsonl"
    path.write_text('{"caption": "ok"}\n{"caption": 3}\n', encoding="utf-8")
    with pytest.raises(InputError, match=rf"{path.name}:2: the field 'caption' is int, not a text or a list"):
        list(discover_texts([str(path)], field_name="caption"))


def test_a_list_field_gives_a_text_per_element_with_its_parent(tmp_path):
    path = tmp_path / "references.jsonl"
    path.write_text('{"id": "cat.jpg", "captions": ["a cat", "a tabby"], "split": "test"}\n'
                    '{"captions": ["a cup"]}\n', encoding="utf-8")  # fmt: skip
    items = list(discover_texts([str(path)], field_name="captions"))
    assert [(item.id, item.text) for item in items] == [("cat.jpg#1", "a cat"), ("cat.jpg#2", "a tabby"),
                                                         ("2#1", "a cup")]  # fmt: skip
    assert items[0].extra == {"split": "test", "parent": "cat.jpg"} and items[2].extra == {"parent": "2"}


def test_texts_jsonl_broken_line_names_the_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(InputError, match=rf"{path.name}:2: not valid JSON"):
        list(discover_texts([str(path)]))


def test_several_text_sources_prefix_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("alpha\n\nbeta\n", encoding="utf-8")
    (tmp_path / "more.jsonl").write_text('{"text": "gamma"}\n{"text": "delta", "id": "d"}\n', encoding="utf-8")
    items = list(discover_texts(["notes.txt", "more.jsonl"], ["hello", "world"]))
    assert [(item.id, item.text) for item in items] == [
        ("text:1", "hello"),
        ("text:2", "world"),
        ("notes.txt:1", "alpha"),
        ("notes.txt:3", "beta"),
        ("more.jsonl:1", "gamma"),
        ("d", "delta"),  # an explicit id is kept as is
    ]


def test_two_files_prefix_even_without_text_values(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text("x\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("y\n", encoding="utf-8")
    assert [item.id for item in discover_texts(["a.txt", "b.txt"])] == ["a.txt:1", "b.txt:1"]


def test_texts_from_stdin_plain_and_json():
    stdin = io.StringIO('plain words\n\n{"text": "from json", "tag": 1}\n')
    items = list(discover_texts(["-"], stdin=stdin))
    assert [(item.id, item.text, item.extra) for item in items] == [
        ("1", "plain words", {}),
        ("3", "from json", {"tag": 1}),
    ]


def test_text_inputs_that_cannot_be_read(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        list(discover_texts([str(tmp_path / "missing.txt")]))
    with pytest.raises(UsageError, match="folder"):
        list(discover_texts([str(tmp_path)]))


# --- records -----------------------------------------------------------------------------------------------------


def test_record_puts_required_keys_first_and_keeps_them_safe_from_extras():
    item = InputItem(
        id="cat-1",
        modality="image",
        source="cats/1.jpg",
        path="cats/1.jpg",
        extra={"label": "cat", "id": "evil", "modality": "text", "source": "elsewhere", "model": "fake", "score": 0.5},
    )
    record = item.record(model="clip-tiny")
    assert list(record) == ["id", "modality", "model", "source", "label", "score"]
    assert record == {
        "id": "cat-1",
        "modality": "image",
        "model": "clip-tiny",
        "source": "cats/1.jpg",
        "label": "cat",
        "score": 0.5,
    }
    assert item.extra["id"] == "evil"  # the item itself is not changed


def test_record_with_more_fields_and_no_extra():
    item = InputItem(id="1", modality="text", source="a dog", text="a dog")
    record = item.record(model="m", dim=4)
    assert list(record) == ["id", "modality", "model", "dim", "source"]
    assert record["dim"] == 4


def test_record_from_stdin_jsonl_round_trip():
    stdin = io.StringIO('{"path": "p.jpg", "id": "p", "model": "not-me", "source": "nope", "label": "x"}\n')
    (item,) = discover_images(["-"], stdin=stdin)
    assert item.record(model="real") == {
        "id": "p",
        "modality": "image",
        "model": "real",
        "source": "p.jpg",
        "label": "x",
    }


def test_error_record():
    item = InputItem(id="x", modality="image", source="x.jpg", path="x.jpg")
    assert item.error_record("no such file") == {"id": "x", "source": "x.jpg", "error": "no such file"}


def test_glob_gives_the_same_order_as_the_folder_walk(album):
    from_glob = [item.path for item in discover_images([str(album / "**" / "*")])]
    assert rel(from_glob, album) == ALBUM_ORDER


def test_glob_matching_only_non_images_is_an_error_item(album):
    items = list(discover_images([str(album / "zz" / "*.json")]))
    assert len(items) == 1 and items[0].error == "no image matches this pattern"


def test_windows_line_endings_on_stdin_are_not_part_of_paths_or_texts():
    items = list(discover_images(["-"], stdin=io.StringIO("a.jpg\r\nb.jpg\r\n")))
    assert [item.path for item in items] == ["a.jpg", "b.jpg"]
    texts = list(discover_texts(["-"], stdin=io.StringIO("a cat\r\na dog\r\n")))
    assert [item.text for item in texts] == ["a cat", "a dog"]

"""``mmcli report`` on the real output of retrieve, caption, classify and evaluate, run on tiny models."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from conftest import ATTRIBUTE, SCRIPT
from PIL import Image
from test_video_media import write_video


class Page(HTMLParser):
    """What a browser would build of a page: its tags with their attributes, and its text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    @property
    def images(self) -> list[dict[str, str | None]]:
        return [attrs for tag, attrs in self.tags if tag == "img"]

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())

    def by_class(self, tag: str, name: str) -> list[dict[str, str | None]]:
        return [attrs for t, attrs in self.tags if t == tag and name in (attrs.get("class") or "").split()]


def decode_data_uri(src: str) -> Image.Image:
    prefix = "data:image/jpeg;base64,"
    assert src.startswith(prefix), src[:40]
    image = Image.open(io.BytesIO(base64.b64decode(src[len(prefix) :], validate=True)))
    assert image.format == "JPEG"
    image.load()
    return image


def assert_self_contained_and_inert(page: Page) -> None:
    """Every picture is an embedded JPEG; nothing from the records became a tag, a script or a handler."""
    assert page.images, "no pictures in the page"
    for attrs in page.images:
        decode_data_uri(attrs["src"] or "")
    assert_inert(page)


def assert_inert(page: Page) -> None:
    assert not [tag for tag, _ in page.tags if tag in {"script", "iframe", "object", "embed", "style"} - {"style"}]
    for tag, attrs in page.tags:
        assert not [name for name in attrs if name.startswith("on")], (tag, attrs)
        if tag == "link":
            assert attrs.get("href") == "data:,", attrs  # the empty favicon, so a browser asks for none
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            assert not re.match(r"\s*(https?:|//|javascript:)", value, re.I), (tag, attrs)


@pytest.fixture(scope="module")
def outputs(result_files):
    return result_files


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def report(run_mmcli, *args, code=0, input=None):
    result = run_mmcli("report", *args, input=input)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    return result


def test_retrieve_report_shows_every_query_with_its_ranked_hits(run_mmcli, outputs, tmp_path):
    out = tmp_path / "hits.html"
    done = report(run_mmcli, outputs / "hits.jsonl", "-o", out, "--title", f"hits {SCRIPT}")
    assert f"wrote {out}" in done.stderr and "retrieve report of 3 records" in done.stderr
    html = out.read_text()
    page = Page(html)
    assert_self_contained_and_inert(page)
    text = page.all_text
    queries = records(outputs / "hits.jsonl")
    assert [q["query"] for q in queries][:2] == ["a cat", SCRIPT]
    for query in queries:
        assert query["query"] in text  # the query itself, as text: the script query too
        for hit in query["hits"]:
            assert hit["id"] in text and f"#{hit['rank']}" in text and f"{hit['score']:.4f}" in text
    hits = page.by_class("figure", "hit")
    assert len(hits) == sum(len(q["hits"]) for q in queries) == 9
    # Each hit's thumbnail, and the image query's, is a picture; the text queries have none.
    assert len(page.images) == 9 + 1
    assert SCRIPT not in html and html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 3  # title, h1, query
    assert ("title", {}) in page.tags and f"hits {SCRIPT}" in text  # --title, escaped


def test_caption_report_shows_images_videos_as_timelines_and_errors(run_mmcli, outputs, tmp_path):
    captions = records(outputs / "captions.jsonl")
    # A caption made hostile, as any text in a record may be
    captions[0]["caption"] = f"{SCRIPT} {ATTRIBUTE}"
    hostile = tmp_path / "captions.jsonl"
    hostile.write_text("".join(json.dumps(r) + "\n" for r in captions))
    report(run_mmcli, hostile)  # default: beside the input
    html = (tmp_path / "captions.html").read_text()
    page = Page(html)
    assert_self_contained_and_inert(page)
    text = page.all_text
    segments = [r for r in captions if "t" in r]
    (summary,) = [r for r in captions if "summary" in r]
    images = [r for r in captions if "caption" in r and "t" not in r]
    (error,) = [r for r in captions if "error" in r]
    assert segments and len(images) == 4 and error["id"].endswith("broken.jpg")
    for record in images:
        assert record["id"] in text and " ".join(record["caption"].split()) in text
    assert f"{SCRIPT} {ATTRIBUTE}" in text and SCRIPT not in html and "<img src=x" not in html
    for segment in segments:
        assert f"{segment['t']:.2f}–{segment['end']:.2f} s" in text and segment["caption"] in text
    assert summary["summary"] in text
    assert len(page.by_class("figure", "segment")) == len(segments)
    # The segments' keyframes come from the video: the first red, the last blue, as the video was drawn.
    frames = [decode_data_uri(attrs["src"]) for attrs in page.images][-len(segments) :]
    first, last = (np.asarray(frame, np.float32).reshape(-1, 3).mean(axis=0) for frame in (frames[0], frames[-1]))
    assert first[0] > 150 > first[2] and last[2] > 150 > last[0]
    assert error["error"] in text and len(page.by_class("section", "error")) == 1
    assert len(page.images) == len(images) + len(segments)


def test_classify_report_draws_the_top_labels_as_bars(run_mmcli, outputs, tmp_path):
    out = tmp_path / "labels.html"
    report(run_mmcli, outputs / "labels.jsonl", "-o", out, "-q")
    page = Page(out.read_text())
    assert_self_contained_and_inert(page)
    meters = page.by_class("tr", "bar")
    predictions = records(outputs / "labels.jsonl")
    assert len(meters) == 4 * len(predictions)  # every label (4, under the top 5) of every image
    values = [float(attrs["value"]) for tag, attrs in page.tags if tag == "meter"]
    expected = [score for p in predictions for score in sorted(p["scores"].values(), reverse=True)]
    np.testing.assert_allclose(values, expected)
    text = page.all_text
    for prediction in predictions:
        assert prediction["id"] in text
    assert SCRIPT in text  # a label is text too
    assert len(page.images) == len(predictions)


def test_evaluate_report_has_metric_table_histogram_and_extremes(run_mmcli, outputs, tmp_path):
    items = records(outputs / "items.jsonl")
    out = tmp_path / "items.html"
    report(run_mmcli, outputs / "items.jsonl", "-o", out)
    html = out.read_text()
    page = Page(html)
    assert_self_contained_and_inert(page)
    text = page.all_text
    cider = [item["CIDEr"] for item in items]
    assert f"{np.mean(cider):.4f}" in text and f"{np.median(cider):.4f}" in text
    for metric in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr"):
        assert metric in text
    assert f"CIDEr over {len(items)} items" in text  # the default metric
    bars = [attrs for tag, attrs in page.tags if tag == "rect"]
    assert len(bars) == 10 and sum(int(t.split(": ")[-1]) for t in re.findall(r"<title>([^<]*)</title>", html)
                                   if "–" in t) == len(items)  # fmt: skip
    ranked = sorted(items, key=lambda item: -item["CIDEr"])
    assert ranked[0]["id"].endswith("chelsea.jpg") and ranked[0]["CIDEr"] > ranked[1]["CIDEr"]
    best_html = html[html.index('class="best"') : html.index('class="worst"')]
    assert ranked[0]["id"].replace('"', "&#34;") in best_html and ranked[-1]["id"] not in best_html
    best, worst = page.by_class("section", "best"), page.by_class("section", "worst")
    assert best and worst and "Best 2 by CIDEr" in text and "Worst 2 by CIDEr" in text
    assert ranked[0]["id"] in text and ranked[-1]["id"] in text
    assert len(page.images) == 4  # the items are images: each of the best and worst is shown

    bleu = report(run_mmcli, outputs / "items.jsonl", "-o", tmp_path / "bleu.html", "--metric", "BLEU-1")
    assert bleu.returncode == 0 and "BLEU-1 over" in Page((tmp_path / "bleu.html").read_text()).all_text
    unknown = report(run_mmcli, outputs / "items.jsonl", "-o", tmp_path / "x.html", "--metric", "nope", code=2)
    assert "--metric" in unknown.stderr and "CIDEr" in unknown.stderr and not (tmp_path / "x.html").exists()


def test_link_images_writes_relative_links_that_resolve(run_mmcli, outputs, tmp_path):
    out = tmp_path / "deep" / "er" / "captions.html"
    out.parent.mkdir(parents=True)
    report(run_mmcli, outputs / "captions.jsonl", "-o", out, "--link-images")
    page = Page(out.read_text())
    assert_inert(page)
    linked = [attrs["src"] for attrs in page.images if not attrs["src"].startswith("data:")]
    embedded = [attrs["src"] for attrs in page.images if attrs["src"].startswith("data:")]
    assert len(linked) == 4 and len(embedded) == len([r for r in records(outputs / "captions.jsonl") if "t" in r])
    for src in linked:
        assert not src.startswith("/") and ".." in src and "<" not in src and '"' not in src
        target = out.parent / unquote(src)
        assert target.is_file() and Image.open(target).format == "JPEG"
    assert any(unquote(src).endswith(f"{ATTRIBUTE}.jpg") for src in linked)
    for src in embedded:  # video frames have no file to link to
        decode_data_uri(src)


def test_contact_sheet_is_a_grid_of_labelled_thumbnails(run_mmcli, outputs, tmp_path):
    from mmcli.web.contact_sheet import LABEL_LINES, LINE_HEIGHT, PAD, cell_size

    sheet = tmp_path / "hits.png"
    done = report(run_mmcli, outputs / "hits.jsonl", "--contact-sheet", sheet, "--thumb-size", "64")
    assert f"wrote {sheet}" in done.stderr and not (outputs / "hits.html").exists()  # only the sheet was asked for
    image = Image.open(sheet)
    assert image.format == "PNG"
    width, height = cell_size(64)
    assert (width, height) == (64 + 2 * PAD, 64 + 2 * PAD + LABEL_LINES * LINE_HEIGHT)
    assert image.size == (4 * width, 3 * height)  # 3 queries, each the query and its 3 hits
    pixels = np.asarray(image.convert("L"), np.float32)
    for row in range(3):
        for column in range(4):
            top, left = row * height + PAD, column * width + PAD
            square = pixels[top : top + 64, left : left + 64]
            label = pixels[row * height + PAD + 64 : (row + 1) * height, column * width : (column + 1) * width]
            assert square.std() > 5, (row, column)  # a photo, or a query's text
            assert label.min() < 128, (row, column)  # ink: the label was drawn
    # The image query's tile and the hits are the photos themselves: much more varied than a text tile.
    assert pixels[2 * height + PAD : 2 * height + PAD + 64, PAD : PAD + 64].std() > 20

    grid = tmp_path / "captions.png"
    report(run_mmcli, outputs / "captions.jsonl", "--contact-sheet", grid, "-o", tmp_path / "c.html")
    tiles = len(records(outputs / "captions.jsonl")) - 1  # every record but the video's summary
    width, height = cell_size(192)
    assert Image.open(grid).size == (6 * width, -(-tiles // 6) * height) and (tmp_path / "c.html").is_file()


def test_missing_and_undecodable_images_are_placeholders_and_counted(run_mmcli, outputs, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    good = records(outputs / "captions.jsonl")[0]
    lines = [
        good,
        {"id": "gone", "source": str(tmp_path / "gone.jpg"), "caption": "a missing photo", "model": "m"},
        {"id": "bad", "source": "bad.png", "caption": "an undecodable photo", "model": "m"},  # relative: to the cwd
    ]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    done = run_mmcli("report", "c.jsonl", "--contact-sheet", "c.png", "-o", "c.html", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 image(s) could not be shown" in done.stderr
    page = Page((tmp_path / "c.html").read_text())
    assert len(page.images) == 1 and len(page.by_class("div", "placeholder")) == 2
    assert "no such file" in page.all_text and "not an image" in page.all_text
    assert len(page.by_class("dd", "missing-count")) == 1
    assert "missing images 2" in page.all_text
    assert Image.open(tmp_path / "c.png").size[0] == 3 * 204

    small = run_mmcli("report", "c.jsonl", "-o", "small.html", "--max-pixels", "100", cwd=tmp_path)
    assert small.returncode == 0 and "3 image(s) could not be shown" in small.stderr
    assert "over the limit of 100" in (tmp_path / "small.html").read_text()


def test_unrecognised_input_names_the_keys_it_expected(run_mmcli, tmp_path):
    (tmp_path / "odd.jsonl").write_text('{"name": "x", "value": "y"}\n')
    done = report(run_mmcli, tmp_path / "odd.jsonl", code=2)
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("mmcli: error: ") and "its keys: name, value" in line
    for expected in ('"hits"', '"caption"', '"scores"', "--per-item"):
        assert expected in line
    assert not (tmp_path / "odd.html").exists()
    empty = report(run_mmcli, "-", code=2)
    assert "no records" in empty.stderr
    mixed = '{"id": "a.jpg", "source": "a.jpg", "caption": "a cat"}\n{"query": "cat", "hits": []}\n'
    refused = report(run_mmcli, "-", input=mixed, code=2)
    assert "caption (from record 1), retrieve (from record 2)" in refused.stderr


def test_stdin_to_stdout_and_overwrite(run_mmcli, outputs, tmp_path):
    done = run_mmcli("report", "-", input=(outputs / "labels.jsonl").read_text())
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("<!DOCTYPE html>") and len(Page(done.stdout).by_class("tr", "bar")) == 16
    out = tmp_path / "r.html"
    report(run_mmcli, outputs / "labels.jsonl", "-o", out, "--title", "first")
    refused = report(run_mmcli, outputs / "labels.jsonl", "-o", out, "--title", "second", code=2)
    assert "--overwrite" in refused.stderr and "<title>first</title>" in out.read_text()
    report(run_mmcli, outputs / "labels.jsonl", "-o", out, "--title", "second", "--overwrite")
    assert "<title>second</title>" in out.read_text()
    quiet = report(run_mmcli, outputs / "labels.jsonl", "-o", out, "--overwrite", "-q")
    assert quiet.stderr == ""


def test_thumb_size_bounds_every_thumbnail(run_mmcli, outputs, tmp_path):
    report(run_mmcli, outputs / "labels.jsonl", "-o", tmp_path / "small.html", "--thumb-size", "40")
    sizes = [decode_data_uri(attrs["src"]).size for attrs in Page((tmp_path / "small.html").read_text()).images]
    assert sizes and max(max(size) for size in sizes) == 40


def test_write_report_library_call(outputs, tmp_path):
    import mmcli

    predictions = records(outputs / "labels.jsonl")
    done = mmcli.write_report(predictions, tmp_path / "lib.html", contact_sheet=tmp_path / "s.png")
    assert done.kind == "classify" and done.records == 4 and done.images == 4 and not done.missing
    assert done.html == tmp_path / "lib.html" and done.html.is_file() and Image.open(done.contact_sheet).format == "PNG"


def test_templates_ship_as_package_data():
    import tomllib

    repo = Path(__file__).resolve().parent.parent
    patterns = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["mmcli.web"]
    templates = sorted((repo / "mmcli" / "web" / "templates").glob("*"))
    assert templates and all(any(t.match(p.split("/")[-1]) for p in patterns) for t in templates)


def test_keyframes_are_grabbed_in_one_pass_at_the_times_asked(tmp_path):
    from mmcli.media.video import VideoReader
    from mmcli.web.thumbnails import Thumbnails

    path = tmp_path / "steps.mp4"
    write_video(path, lambda t: np.full((48, 64, 3), min(250, int(t * 10) * 12), np.uint8), fps=10, duration=2.0)
    with VideoReader(path) as reader:
        times = [round(frame.t, 3) for frame in reader.frames_at([1.5, 0.0, 0.05, 99.0])]
    assert times == [0.0, 0.1, 1.5]  # sorted; 0.05 answered by the next frame; nothing past the end
    thumbs = Thumbnails(size=32)
    frames = thumbs.frames(str(path), [0.0, 1.5, 99.0])
    brightness = [np.asarray(frames[t].image).mean() for t in (0.0, 1.5)]
    assert brightness[0] < 20 and 160 < brightness[1] < 200 and frames[99.0].error and len(thumbs.missing) == 1


def test_scores_that_are_all_one_value_say_so_instead_of_an_axis_of_one_point(run_mmcli, tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"id": f"{n}.jpg", "BLEU-4": 0.0, "CIDEr": 0.0}) + "\n" for n in range(4)))
    out = tmp_path / "items.html"
    report(run_mmcli, items, "-o", out, "--metric", "BLEU-4")
    page = Page(out.read_text())
    assert "all 4 items score 0.0000" in page.all_text
    assert not [attrs for tag, attrs in page.tags if tag == "rect"]  # no bars over a 0.0000–0.0000 axis


def test_contact_sheet_labels_use_a_real_font_at_a_readable_size(monkeypatch):
    from PIL import ImageFont

    from mmcli.web import contact_sheet

    font = contact_sheet.label_font()
    assert isinstance(font, ImageFont.FreeTypeFont) and font.size == contact_sheet.FONT_SIZE >= 12
    assert font.getname()[0] == "DejaVu Sans"  # the system's, as CI installs it
    left, top, right, bottom = font.getbbox("BLEU-4 0.000")
    assert bottom - top >= 9 and right - left > 70  # Pillow's default draws it 8 pixels high, 60 wide

    truetype = ImageFont.truetype

    def missing(font, *args, **kwargs):  # no font file of that name on this system; Pillow's own still loads
        if isinstance(font, str):
            raise OSError("cannot open resource")
        return truetype(font, *args, **kwargs)

    monkeypatch.setattr(ImageFont, "truetype", missing)
    fallback = contact_sheet.label_font()
    assert isinstance(fallback, ImageFont.FreeTypeFont) and fallback.size == contact_sheet.FONT_SIZE

"""The pages in a real headless Chromium (the system's, driven by Playwright): ``mmcli serve``'s search
page against a real server process, and the page ``mmcli report`` writes.

With ``MMCLI_SCREENSHOTS=DIR`` in the environment, the screenshots are kept in DIR (``search.png``,
``report.png``), as the serve page of the docs shows them.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import REPO
from PIL import Image

QUERY = "a photo of a cat"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _browser() -> str:
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:
        pytest.fail(
            "no Chromium on PATH for the browser tests: install it as .ci/run does "
            "(apt-get update && apt-get install -y chromium chromium-driver)"
        )
    return found


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=_browser(), headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh page that records console errors and uncaught exceptions in ``page.errors``."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    page.errors = []
    page.on("console", lambda message: message.type == "error" and page.errors.append(message.text))
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    yield page
    context.close()


@pytest.fixture(scope="module")
def photo_set(tmp_path_factory, photos, tiny_models, run_mmcli):
    """The photos as a set whose sources are relative to the photos' parent folder, where the server runs."""
    out = tmp_path_factory.mktemp("browser") / "photos.npy"
    done = run_mmcli(
        "extract-features", photos.name, "-o", out, "--model", tiny_models["clip"], "-q", cwd=photos.parent
    )
    assert done.returncode == 0, done.stderr
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(photo_set, photos, tmp_path):
    """``mmcli serve`` as its own process on 127.0.0.1 and a free port; stopped with Ctrl-C (SIGINT)."""
    port = _free_port()
    log = open(tmp_path / "serve.log", "w+")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "mmcli", "serve", "--index", str(photo_set), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env=env,
        cwd=photos.parent,  # where the set's relative sources start
    )
    base = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    try:
        while True:
            assert process.poll() is None, f"mmcli serve exited: {Path(log.name).read_text()}"
            assert time.monotonic() < deadline, "mmcli serve did not answer within 120 s"
            try:
                if httpx.get(base + "api/stats", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield base
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        log.seek(0)
        stderr = log.read()
        log.close()
    assert code == 0 and "Traceback" not in stderr, stderr
    assert f"at {base} (Ctrl-C stops)" in stderr and "mmcli: stopped" in stderr


def _check_screenshot(png: bytes, name: str) -> None:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50, f"{name} looks blank ({len(colours or [])} colours)"
    keep = os.environ.get("MMCLI_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / name).write_bytes(png)


def _images_loaded(page) -> list:
    """(src, naturalWidth) of every image on the page, once each has finished loading or failing."""
    # Polled from here: page.wait_for_function evaluates strings, which the pages' CSP forbids.
    deadline = time.monotonic() + 30
    while not page.evaluate("() => Array.from(document.images).every(image => image.complete)"):
        assert time.monotonic() < deadline, "images still loading after 30 s"
        time.sleep(0.1)
    return page.eval_on_selector_all("img", "images => images.map(image => [image.src, image.naturalWidth])")


def test_search_page_in_a_browser(server, page, photo_set, run_mmcli):
    done = run_mmcli("retrieve", "--index", photo_set, "--query", QUERY)
    assert done.returncode == 0, done.stderr
    expected = [hit["id"] for hit in json.loads(done.stdout)["hits"]]

    page.goto(server)
    page.fill("input[name=q]", QUERY)
    with page.expect_navigation(wait_until="load"):
        page.press("input[name=q]", "Enter")
    page.wait_for_selector("#hits li.hit")
    assert page.eval_on_selector_all("#hits li.hit", "tiles => tiles.map(tile => tile.dataset.id)") == expected
    thumbs = _images_loaded(page)
    assert len(thumbs) == len(expected) and all(width > 0 for _, width in thumbs), thumbs
    _check_screenshot(page.screenshot(full_page=True), "search.png")

    with page.expect_navigation(wait_until="load"):
        page.click("#hits li.hit >> nth=0")
    page.wait_for_selector("img#full")
    (full,) = _images_loaded(page)
    assert full[1] > 0 and "/image/" in full[0]
    assert page.inner_text("#record").count(expected[0]) >= 1
    assert page.errors == []


def test_report_page_in_a_browser(page, photo_set, photos, run_mmcli, tmp_path):
    results = tmp_path / "results.jsonl"
    done = run_mmcli("retrieve", "--index", photo_set, "--query", QUERY, "--query", "a rocket", "-o", results)
    assert done.returncode == 0, done.stderr
    report = tmp_path / "report.html"
    made = run_mmcli("report", results, "-o", report, cwd=photos.parent)  # where the set's relative sources resolve
    assert made.returncode == 0, made.stderr
    page.goto(report.resolve().as_uri())
    images = _images_loaded(page)
    assert images and all(width > 0 for _, width in images), images
    assert page.errors == []
    _check_screenshot(page.screenshot(full_page=True), "report.png")

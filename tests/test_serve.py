"""``mmcli serve``: the JSON API answers what ``mmcli retrieve`` answers, images are served by row only,
uploads are bounded and safely decoded, pages render hostile records inert, and concurrent queries
share model calls (observed on a real uvicorn server on 127.0.0.1)."""

from __future__ import annotations

import io
import json
import shutil
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mmcli.output.feature_set import read_feature_set
from mmcli.web import serve as web

QUERIES = ["a photo of a cat", "a rocket on the launch pad"]
LOCAL = "http://127.0.0.1"  # the Host a browser on this machine sends


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, photos, tiny_models, run_mmcli):
    """A feature set of the four photos plus ``link.jpg``, a symlink to a photo outside the folder."""
    root = tmp_path_factory.mktemp("serve")
    folder, elsewhere = root / "gallery", root / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    for photo in sorted(photos.glob("*.jpg")):
        shutil.copy(photo, folder / photo.name)
    shutil.copy(photos / "rocket.jpg", elsewhere / "secret.jpg")
    (folder / "link.jpg").symlink_to(elsewhere / "secret.jpg")
    out = root / "gallery.npy"
    done = run_mmcli("extract-features", folder, "-o", out, "--model", tiny_models["clip"], "-q")
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def app(gallery):
    app = web.make_app(gallery)
    yield app
    app.state.service.close()


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app, base_url=LOCAL)


@pytest.fixture(scope="module")
def encoder(app):
    return app.state.service.encoder


def _retrieve(run_mmcli, index, *args):
    done = run_mmcli("retrieve", "--index", index, *args)
    assert done.returncode == 0, done.stderr
    (record,) = [json.loads(line) for line in done.stdout.splitlines()]
    return record


def _same_record(served, expected, *, query=True):
    if query:
        assert (served["query_id"], served["query"]) == (expected["query_id"], expected["query"])
    assert [(h["rank"], h["id"], h["source"]) for h in served["hits"]] == [
        (h["rank"], h["id"], h["source"]) for h in expected["hits"]
    ]
    np.testing.assert_allclose([h["score"] for h in served["hits"]], [h["score"] for h in expected["hits"]], atol=1e-6)


def test_text_search_api_equals_retrieve(client, gallery, run_mmcli):
    for text in QUERIES:
        for k in (1, 3, 10):
            response = client.get("/api/search", params={"q": text, "k": k})
            assert response.status_code == 200, response.text
            record = response.json()
            assert set(record) == {"query_id", "query", "hits"}
            assert len(record["hits"]) == min(k, 5)
            _same_record(record, _retrieve(run_mmcli, gallery, "--query", text, "-k", k))


def test_image_upload_api_equals_retrieve(client, gallery, run_mmcli):
    photo = gallery.parent / "gallery" / "chelsea.jpg"
    expected = _retrieve(run_mmcli, gallery, "--query-image", photo, "-k", "3")
    response = client.post("/api/search", files={"image": ("chelsea.jpg", photo.read_bytes())}, data={"k": "3"})
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["query_id"] == record["query"] == "chelsea.jpg"
    _same_record(record, expected, query=False)
    by_query = client.post("/api/search?k=2", files={"image": ("c.jpg", photo.read_bytes())}).json()
    assert [hit["id"] for hit in by_query["hits"]] == [hit["id"] for hit in expected["hits"][:2]]


def test_k_and_query_bounds(client):
    for bad in ("0", "-1", "1001", "abc", "1.5", "1e3", " "):
        response = client.get("/api/search", params={"q": "a cat", "k": bad})
        if bad == " ":  # blank: the default
            assert response.status_code == 200 and len(response.json()["hits"]) == 5
            continue
        assert response.status_code == 400, bad
        assert "k must be a whole number from 1 to 1000" in response.json()["error"]
    assert len(client.get("/api/search", params={"q": "a cat", "k": 1000}).json()["hits"]) == 5
    assert len(client.get("/api/search", params={"q": "a cat"}).json()["hits"]) == 5  # default 10, 5 rows
    for params in ({}, {"q": ""}, {"q": "   "}):
        response = client.get("/api/search", params=params)
        assert response.status_code == 400 and response.json() == {"error": "no query: give q=TEXT"}


TRAVERSALS = [
    "/image/../../etc/passwd",
    "/image/..%2F..%2Fetc%2Fpasswd",
    "/image/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/image/%2e%2e/%2e%2e/etc/passwd",
    "/image//etc/passwd",
    "/image/%2Fetc%2Fpasswd",
    "/thumb/..%2F0",
    "/image/0%2F..%2F..%2Fetc%2Fpasswd",
    "/image/abc",
    "/image/-1",
    "/image/1.0",
    "/image/0x1",
    "/image/%30",  # "0" encoded: a row number, still served
    "/image/5",
    "/image/99999999999999",
    "/thumb/7",
]


def test_images_are_served_by_row_number_only(client, gallery):
    feature_set = read_feature_set(gallery)
    for row, record in enumerate(feature_set.records):
        if record["id"].endswith("link.jpg"):
            continue
        response = client.get(f"/image/{row}")
        assert response.status_code == 200
        assert response.content == Path(record["source"]).read_bytes()
        assert response.headers["content-type"] == "image/jpeg"
        assert response.headers["x-content-type-options"] == "nosniff"
        thumb = Image.open(io.BytesIO(client.get(f"/thumb/{row}").content))
        assert thumb.format == "JPEG" and max(thumb.size) == web.THUMB_SIDE
    passwd = Path("/etc/passwd").read_bytes()
    for url in TRAVERSALS:
        response = client.get(url)
        if url == "/image/%30":
            assert (
                response.status_code == 200 and response.content == Path(feature_set.records[0]["source"]).read_bytes()
            )
            continue
        assert response.status_code == 404, url
        assert response.content != passwd and "error" in response.json()
    absolute = client.get("/image/" + feature_set.records[0]["source"])
    assert absolute.status_code == 404


def test_raw_traversal_requests_on_a_real_server(gallery, encoder):
    """The same URLs sent byte for byte (no client-side normalisation of dot segments) to uvicorn."""
    with _server(web.make_app(gallery, encoder=encoder)) as base:
        port = int(base.rsplit(":", 1)[1].strip("/"))
        for url in ["/image/../../etc/passwd", "/image/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/thumb/../../../etc/passwd"]:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
                reply = b""
                while chunk := conn.recv(65536):
                    reply += chunk
            status = reply.split(b"\r\n", 1)[0]
            assert b" 404 " in status or b" 400 " in status, (url, status)
            assert b"root:" not in reply


def test_symlink_out_of_the_sources_folders_is_refused(client, gallery, app):
    feature_set = read_feature_set(gallery)
    (row,) = [row for row, record in enumerate(feature_set.records) if record["id"].endswith("link.jpg")]
    assert Path(feature_set.records[row]["source"]).resolve().read_bytes()  # a real, readable image
    for url in (f"/image/{row}", f"/thumb/{row}"):
        response = client.get(url)
        assert response.status_code == 404 and "no image for row" in response.json()["error"]
    assert app.state.service.refused == 1
    assert client.get("/api/stats").json()["images"] == 4
    page = client.get(f"/item/{row}")
    assert page.status_code == 200 and f'src="/image/{row}"' not in page.text


def test_oversized_upload_is_413(gallery, encoder):
    small = web.make_app(gallery, encoder=encoder, max_upload_mb=0.01)
    try:
        client = TestClient(small, base_url=LOCAL)
        photo = (gallery.parent / "gallery" / "astronaut.jpg").read_bytes()
        assert len(photo) > 0.01 * 2**20
        response = client.post("/api/search", files={"image": ("a.jpg", photo)})
        assert response.status_code == 413 and "upload too large" in response.json()["error"]
        # Sent in chunks with no Content-Length, the body is counted as it arrives.
        body, content_type = _multipart(photo)
        chunks = (body[i : i + 4096] for i in range(0, len(body), 4096))
        streamed = client.post("/api/search", content=chunks, headers={"content-type": content_type})
        assert "content-length" not in streamed.request.headers
        assert streamed.status_code == 413 and "upload too large" in streamed.json()["error"]
        page = client.post("/", files={"image": ("a.jpg", photo)})
        assert page.status_code == 413 and "upload too large" in page.text
        tiny = io.BytesIO()
        Image.new("RGB", (8, 8), "red").save(tiny, format="PNG")
        assert client.post("/api/search", files={"image": ("t.png", tiny.getvalue())}).status_code == 200
    finally:
        small.state.service.close()


def _multipart(data: bytes, name: str = "a.jpg") -> tuple[bytes, str]:
    boundary = "mmcliboundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
    head += "Content-Type: application/octet-stream\r\n\r\n"
    return head.encode() + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _bomb_png(side: int = 60_000) -> bytes:
    """A small PNG whose header claims side x side pixels (3.6 gigapixels at the default)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    rows = zlib.compress(b"\x00" * (1 + side // 8) * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def test_malformed_uploads_get_a_4xx_json_error(client, gallery):
    photo = (gallery.parent / "gallery" / "coffee.jpg").read_bytes()
    cases = {
        "not an image": (b"<html>hello</html>", "not an image"),
        "truncated": (photo[: len(photo) // 3], "truncated"),
        "bomb": (_bomb_png(), "decompression bomb"),
        "empty": (b"", "empty"),
    }
    for name, (data, says) in cases.items():
        response = client.post("/api/search", files={"image": (f"{name}.png", data)})
        assert 400 <= response.status_code < 500, (name, response.status_code)
        assert says in response.json()["error"], (name, response.json())
    no_field = client.post("/api/search", files={"picture": ("a.jpg", photo)})
    assert no_field.status_code == 400 and "multipart field 'image'" in no_field.json()["error"]
    not_multipart = client.post("/api/search", content=photo, headers={"content-type": "image/jpeg"})
    assert not_multipart.status_code == 415 and "multipart/form-data" in not_multipart.json()["error"]
    broken = client.post(
        "/api/search", content=b"--x\r\ngarbage", headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert 400 <= broken.status_code < 500 and "error" in broken.json()
    page = client.post("/", files={"image": ("bomb.png", _bomb_png())})
    assert page.status_code == 413 and "decompression bomb" in page.text  # refused from its header


class _Elements(HTMLParser):
    """Every element of a page, with its attributes, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(html: str) -> _Elements:
    parser = _Elements()
    parser.feed(html)
    return parser


HOSTILE_ID = "<script>alert('id')</script>"
HOSTILE_CAPTION = '<img src=x onerror="alert(1)">'
HOSTILE_NAME = '"><svg onload=alert(2)>.jpg'


def test_hostile_ids_sources_and_captions_render_inert(tmp_path, photos, tiny_models, run_mmcli, encoder):
    shutil.copy(photos / "chelsea.jpg", tmp_path / HOSTILE_NAME)
    lines = [
        {"path": str(tmp_path / HOSTILE_NAME), "id": HOSTILE_ID, "caption": HOSTILE_CAPTION},
        {"path": str(photos / "coffee.jpg"), "id": "coffee</title><b>", "caption": "{{ 7 * 7 }}"},
    ]
    out = tmp_path / "hostile.npy"
    stdin = "".join(json.dumps(line) + "\n" for line in lines)
    done = run_mmcli("extract-features", "-", "-o", out, "--model", tiny_models["clip"], "-q", input=stdin)
    assert done.returncode == 0, done.stderr
    hostile = web.make_app(out, encoder=encoder)
    try:
        client = TestClient(hostile, base_url=LOCAL)
        pages = [client.get("/", params={"q": "<script>alert('q')</script>"}), client.get("/item/0")]
        pages.append(client.get("/item/1"))
        for response in pages:
            assert response.status_code == 200
            assert "script-src" not in response.headers["content-security-policy"]  # default-src 'none': no script
            parsed = _parse(response.text)
            tags = [tag for tag, _ in parsed.elements]
            assert "script" not in tags and "svg" not in tags and "b" not in tags
            for tag, attrs in parsed.elements:
                assert not any(name.startswith("on") for name in attrs), (tag, attrs)
                if tag == "img":
                    assert attrs["src"].startswith(("/thumb/", "/image/")), attrs
            assert "49" not in "".join(parsed.text)  # not a template either
        results = _parse(pages[0].text)
        text = "".join(results.text)
        assert HOSTILE_ID in text and HOSTILE_CAPTION in text and "<script>alert('q')</script>" in text
        assert {attrs.get("data-id") for tag, attrs in results.elements if tag == "li"} == {
            HOSTILE_ID,
            "coffee</title><b>",
        }
        assert HOSTILE_NAME in "".join(_parse(pages[1].text).text)
        assert client.get("/image/0").content == (tmp_path / HOSTILE_NAME).read_bytes()
    finally:
        hostile.state.service.close()


class _server:
    """``app`` on a real uvicorn server on 127.0.0.1 (a free port), in a thread; the base URL inside."""

    def __init__(self, app) -> None:
        import uvicorn

        self.app = app
        self.sock = web.listen("127.0.0.1", 0)
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        return web.url_of(self.sock, "127.0.0.1")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
        self.app.state.service.close()
        assert not self.thread.is_alive()


def _concurrent_queries(base: str, count: int) -> list[httpx.Response]:
    barrier = threading.Barrier(count)

    def ask(number: int) -> httpx.Response:
        barrier.wait(timeout=30)
        return httpx.get(f"{base}api/search", params={"q": QUERIES[number % 2], "k": 3}, timeout=60)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(ask, range(count)))


@pytest.mark.parametrize("max_batch", [16, 1])
def test_concurrent_queries_share_model_calls_unless_batching_is_off(gallery, encoder, client, max_batch):
    expected = {text: client.get("/api/search", params={"q": text, "k": 3}).json() for text in QUERIES}
    count = 16
    with _server(web.make_app(gallery, encoder=encoder, max_batch=max_batch, linger=0.25)) as base:
        responses = _concurrent_queries(base, count)
        stats = httpx.get(f"{base}api/stats", timeout=10).json()["batching"]
    assert [response.status_code for response in responses] == [200] * count
    for number, response in enumerate(responses):
        _same_record(response.json(), expected[QUERIES[number % 2]])
    sizes = [int(response.headers["x-batch-size"]) for response in responses]
    assert stats["queries"] == count and stats["max_batch"] == max_batch
    if max_batch == 1:
        assert stats["batch_sizes"] == {"1": count} and set(sizes) == {1}
    else:
        assert stats["largest_batch"] > 1 and max(sizes) > 1 and stats["batches"] < count
        assert sum(int(size) * n for size, n in stats["batch_sizes"].items()) == count


def test_host_warning_for_anything_but_loopback():
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.5"):
        assert web.host_warning(host) is None
    for host in ("0.0.0.0", "::", "192.168.1.20", "example.org"):
        warning = web.host_warning(host)
        assert warning is not None and f"host {host} serves" in warning and "127.0.0.1" in warning


@pytest.fixture
def captured_run(monkeypatch):
    """Replaces the uvicorn run with a few requests to the app, so the CLI returns; what it saw is kept."""
    seen: dict = {}

    def run(app, sock):
        seen["app"], seen["address"] = app, sock.getsockname()
        client = TestClient(app, base_url=LOCAL)
        seen["stats"] = client.get("/api/stats").json()
        seen["search"] = client.get("/api/search", params={"q": QUERIES[0], "k": 2}).json()
        seen["upload"] = client.post("/api/search", files={"image": ("a.jpg", b"x" * 20_000)}).status_code
        seen["big"] = client.post("/api/search", files={"image": ("b.png", _bomb_png(7_000))})
        seen["hosts"] = {host: client.get("/api/stats", headers={"host": host}).status_code
                         for host in ("evil.example", "search.lan:8000", "localhost:8000")}  # fmt: skip

    monkeypatch.setattr(web, "_run", run)
    return seen


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_command_flags_reach_the_server(run_mmcli, gallery, captured_run, tiny_models, run_mmcli_process):
    port = _free_port()
    args = ["serve", "--index", gallery, "--port", port, "--max-batch", "4", "--linger-ms", "40"]
    done = run_mmcli(*args, "--max-upload-mb", "0.01")
    assert done.returncode == 0, done.stderr
    assert captured_run["big"].status_code == 413 and "limit of 40 megapixels" in captured_run["big"].json()["error"]
    assert captured_run["hosts"] == {"evil.example": 400, "search.lan:8000": 400, "localhost:8000": 200}
    assert captured_run["address"] == ("127.0.0.1", port)
    assert f"serving 5 rows of {gallery} with {tiny_models['clip']} at http://127.0.0.1:{port}/" in done.stderr
    assert "stopped" in done.stderr and "warning" not in done.stderr
    batching = captured_run["stats"]["batching"]
    assert (batching["max_batch"], batching["linger_ms"]) == (4, 40.0)
    assert captured_run["upload"] == 413  # 20 kB over a 0.01 MB limit
    assert (
        captured_run["search"]["hits"][0]["id"] == _retrieve(run_mmcli, gallery, "--query", QUERIES[0])["hits"][0]["id"]
    )
    assert "1 image row(s)" in done.stderr  # the refused symlink

    quiet = run_mmcli("serve", "--index", gallery, "--port", "0", "-q")
    assert quiet.returncode == 0 and "serving" not in quiet.stderr and captured_run["address"][1] != 0

    wider = run_mmcli("serve", "--index", gallery, "--port", "0", "--max-upload-megapixels", "200",
                      "--allow-host", "search.lan", "-q")  # fmt: skip
    assert wider.returncode == 0, wider.stderr
    assert captured_run["big"].status_code == 200  # 49 megapixels: decoded and searched under a 200 limit
    assert captured_run["hosts"] == {"evil.example": 400, "search.lan:8000": 200, "localhost:8000": 200}

    copy = gallery.parent / "other-clip"
    shutil.copytree(tiny_models["clip"], copy, dirs_exist_ok=True)
    other = run_mmcli("serve", "--index", gallery, "--port", "0", "--model", copy)
    assert other.returncode == 0, other.stderr
    assert captured_run["stats"]["model"] == str(copy) and f"with {copy} at" in other.stderr


def test_serve_command_warns_for_a_public_host_and_refuses_a_busy_port(run_mmcli, gallery, captured_run, monkeypatch):
    real_listen = web.listen
    asked = []
    monkeypatch.setattr(web, "listen", lambda host, port: asked.append(host) or real_listen("127.0.0.1", 0))
    public = run_mmcli("serve", "--index", gallery, "--host", "0.0.0.0", "--port", "0")
    assert public.returncode == 0, public.stderr
    assert asked == ["0.0.0.0"] and "warning: --host 0.0.0.0 serves" in public.stderr
    monkeypatch.setattr(web, "listen", real_listen)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        refused = run_mmcli("serve", "--index", gallery, "--port", busy.getsockname()[1])
    assert refused.returncode == 2 and "mmcli: error: cannot listen on 127.0.0.1:" in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.fixture
def loads(monkeypatch):
    from mmcli import registry

    seen: dict[str, list] = {"device": [], "dtype": []}
    real_device, real_dtype = registry.resolve_device, registry.resolve_dtype
    monkeypatch.setattr(
        registry, "resolve_device", lambda asked="auto": seen["device"].append(asked) or real_device(asked)
    )
    monkeypatch.setattr(
        registry,
        "resolve_dtype",
        lambda asked, on, config=None: seen["dtype"].append(asked) or real_dtype(asked, on, config),
    )
    return seen


def test_serve_device_and_dtype_reach_the_loader(run_mmcli, gallery, captured_run, loads, monkeypatch):
    import torch

    done = run_mmcli("serve", "--index", gallery, "--port", "0", "--device", "cpu", "--dtype", "bfloat16")
    assert done.returncode == 0, done.stderr
    assert loads == {"device": ["cpu"], "dtype": ["bfloat16"]}
    assert captured_run["app"].state.service.encoder.dtype == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cuda = run_mmcli("serve", "--index", gallery, "--port", "0", "--device", "cuda")
    assert cuda.returncode == 2 and "--device cuda was asked for, but no CUDA GPU" in cuda.stderr


def test_foreign_host_names_are_refused_on_every_route(gallery, encoder):
    """DNS rebinding: a page on another site that resolves its name to 127.0.0.1 sends its own Host."""
    with _server(web.make_app(gallery, encoder=encoder)) as base:
        for path in ("api/search?q=cat", "image/0", "thumb/0", "item/0", "", "api/stats"):
            evil = httpx.get(f"{base}{path}", headers={"host": "evil.example"}, timeout=30)
            assert evil.status_code == 400, (path, evil.status_code)
            for host in ("127.0.0.1", "localhost:8000", "[::1]:8000", "LOCALHOST"):
                assert httpx.get(f"{base}{path}", headers={"host": host}, timeout=30).status_code == 200, (path, host)


def test_uploads_decode_on_their_own_threads_two_at_a_time_while_text_queries_are_answered(gallery, encoder):
    app = web.make_app(gallery, encoder=encoder)
    service = app.state.service
    decoding: list[str] = []
    threads: set[str] = set()
    most = 0
    lock, release = threading.Lock(), threading.Event()
    decode = service.decode_upload

    def held(data, name):
        nonlocal most
        with lock:
            decoding.append(name)
            most = max(most, len(decoding))
            threads.add(threading.current_thread().name)
        release.wait(60)
        try:
            return decode(data, name)
        finally:
            with lock:
                decoding.remove(name)

    service.decode_upload = held
    photo = (gallery.parent / "gallery" / "chelsea.jpg").read_bytes()
    with _server(app) as base, ThreadPoolExecutor(4) as pool:
        uploads = [
            pool.submit(httpx.post, f"{base}api/search", files={"image": (f"u{n}.jpg", photo)}, timeout=120)
            for n in range(4)
        ]
        deadline = time.monotonic() + 60
        while len(decoding) < web.UPLOAD_DECODERS:
            assert time.monotonic() < deadline, "the uploads never reached their decoders"
            time.sleep(0.02)
        text = httpx.get(f"{base}api/search", params={"q": QUERIES[0], "k": 2}, timeout=60)
        assert text.status_code == 200 and len(text.json()["hits"]) == 2  # answered while two uploads decode
        assert len(decoding) == web.UPLOAD_DECODERS  # the other two wait their turn
        release.set()
        answers = [upload.result() for upload in uploads]
    assert [answer.status_code for answer in answers] == [200] * 4
    assert most == web.UPLOAD_DECODERS == 2
    assert threads and all(name.startswith("mmcli-upload") for name in threads), threads


def test_clients_that_leave_mid_upload_leave_no_traceback(gallery, encoder, capfd):
    count = 20
    with _server(web.make_app(gallery, encoder=encoder)) as base:
        port = int(base.rsplit(":", 1)[1].strip("/"))
        body, content_type = _multipart(b"\xff\xd8" + b"\0" * 5000)
        for _ in range(count):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                head = (f"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
                        f"Content-Length: {len(body) + 100_000}\r\n\r\n")  # fmt: skip
                conn.sendall(head.encode() + body)  # and the connection closes, the body unfinished
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}api/stats", timeout=30).json()["uploads_abandoned"] < count:
            assert time.monotonic() < deadline, "the server did not see the clients go"
            time.sleep(0.05)
        assert httpx.get(f"{base}api/search", params={"q": QUERIES[0]}, timeout=30).status_code == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err and "ClientDisconnect" not in err, err[-2000:]

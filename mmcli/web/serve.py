"""``mmcli serve``: a local search page and JSON API over one feature set.

The model loads once, at start-up; every query then goes through the same calls as ``mmcli retrieve``
(:func:`mmcli.search.embed_queries`, :func:`mmcli.search.search_set`, :func:`mmcli.retrieval.hits_for`),
so ``GET /api/search?q=TEXT&k=K`` answers exactly the record ``mmcli retrieve --query TEXT -k K``
writes. Queries that arrive together are embedded and searched in one model call
(:class:`~mmcli.web.batching.MicroBatcher`); ``/api/stats`` tells how large the batches were.

Images are served by row number only, never by a path from the request: each image row's ``source``
is resolved once at start-up, and one whose real path (after symlinks) lies outside the folders the
set's sources live in is refused. Thumbnails and uploads are decoded by the one safe decoder,
:func:`mmcli.media.images.load_image`, so an upload that is no image, is truncated or is a
decompression bomb gets a 4xx JSON error. Uploads are bounded twice, in bytes and in decoded pixels
(far below what a local run accepts), and decoded a few at a time on threads of their own, so a
text query never waits for an upload's decoding. Requests naming another host than the server's
own (DNS rebinding) get a 400. ``fastapi``, ``uvicorn`` and ``jinja2`` (the ``web`` extra)
are imported here, never by ``mmcli --help``.
"""

# (No `from __future__ import annotations`: FastAPI reads the handlers' annotations at run time.)
import asyncio
import contextlib
import io
import ipaddress
import itertools
import mimetypes
import os
import re
import socket
import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmcli.errors import InputError, MmcliError, UsageError, option
from mmcli.io.inputs import discover_texts
from mmcli.items import InputItem
from mmcli.media.clips import FrameItem
from mmcli.media.images import DEFAULT_MAX_PIXELS, ImageTooLarge, is_image_path, load_image
from mmcli.output.feature_set import read_feature_set
from mmcli.output.npy import FeatureSet
from mmcli.reporting import Reporter
from mmcli.web.batching import DEFAULT_LINGER_S, DEFAULT_MAX_BATCH, MicroBatcher

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_K = 10
MAX_K = 1000
DEFAULT_MAX_UPLOAD_MB = 20.0
# An upload's decoded size: a 40-megapixel photo decodes to 120 MB of RGB; a 164 KB PNG can claim
# 170 megapixels (3 GB decoded), which a local run's --max-pixels allows but a server must not.
DEFAULT_MAX_UPLOAD_MEGAPIXELS = 40.0
UPLOAD_DECODERS = 2  # uploads decoded at once; the rest wait their turn, holding only their bytes
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
THUMB_SIDE = 256
THUMB_CACHE = 2048
TEMPLATES = Path(__file__).resolve().parent / "templates"
# The pages run no script and load nothing from elsewhere: whatever a record holds stays text.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
FAVICON = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#2f5fd0"/>'
    b'<circle cx="7" cy="7" r="3.5" fill="none" stroke="#fff" stroke-width="1.6"/>'
    b'<path d="M9.5 9.5l3.5 3.5" stroke="#fff" stroke-width="1.8"/></svg>'
)
_ROW = re.compile(r"[0-9]{1,12}")


class RequestError(MmcliError):
    """A request the server refuses, with the HTTP status to answer it with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Query:
    """One query on its way through the model worker: the item to embed, the id its record gives, and k."""

    item: InputItem
    query_id: str
    k: int
    upload: bool = False


@dataclass
class Answer:
    """A query's ``retrieve`` record and the index rows of its hits, or the error that stopped it."""

    record: dict[str, Any] | None = None
    rows: list[int] = field(default_factory=list)
    error: str | None = None
    batch_size: int = 1


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine alone."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_warning(host: str) -> str | None:
    """The warning to print when ``host`` exposes the server beyond this machine (``None`` on loopback)."""
    if is_loopback(host):
        return None
    return (
        f"mmcli: warning: {option('host')} {host} serves this index's images and records, and runs its model, "
        "for anyone who can reach this machine's network; there is no login. Use 127.0.0.1 unless that is meant."
    )


def resolve_images(feature_set: FeatureSet, *, base: Path | None = None) -> tuple[dict[int, Path], int]:
    """The image file of each image row (by row number), resolved once, and how many were refused.

    A relative ``source`` is taken from ``base`` (the working directory), else from the set's folder.
    A source whose real path lies outside every folder the set's sources live in (a symlink pointing
    elsewhere) is refused, as is anything that is not a regular image file.
    """
    base = Path.cwd() if base is None else base
    homes = [base, feature_set.path.parent if feature_set.path.suffix == ".npy" else feature_set.path]
    given: dict[int, Path] = {}
    for row, record in enumerate(feature_set.records):
        source = record.get("source")
        if record.get("modality") != "image" or not isinstance(source, str) or not is_image_path(source):
            continue
        candidates = [Path(source)] if os.path.isabs(source) else [home / source for home in homes]
        path = next((c for c in candidates if os.path.lexists(c)), None)
        if path is not None:
            given[row] = Path(os.path.abspath(path))
    roots = {Path(os.path.realpath(path.parent)) for path in given.values()}
    found: dict[int, Path] = {}
    refused = 0
    for row, path in given.items():
        real = Path(os.path.realpath(path))
        if not real.is_file():
            continue
        if not any(real.is_relative_to(root) for root in roots):
            refused += 1
            continue
        found[row] = real
    return found, refused


class SearchService:
    """The loaded model and feature set behind the app: answers queries through one model worker."""

    def __init__(
        self,
        feature_set: FeatureSet,
        encoder: Any,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        linger: float = DEFAULT_LINGER_S,
        max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 2**20),
        max_upload_pixels: int = int(DEFAULT_MAX_UPLOAD_MEGAPIXELS * 1e6),
        max_pixels: int = DEFAULT_MAX_PIXELS,
        base: Path | None = None,
    ) -> None:
        self.feature_set = feature_set
        self.encoder = encoder
        self.max_upload_bytes = max_upload_bytes
        self.max_upload_pixels = max_upload_pixels
        self.max_pixels = max_pixels
        self._decoders = ThreadPoolExecutor(max_workers=UPLOAD_DECODERS, thread_name_prefix="mmcli-upload")
        self.images, self.refused = resolve_images(feature_set, base=base)
        self.batcher: MicroBatcher[Query, Answer] = MicroBatcher(self._answer, max_batch=max_batch, linger=linger)
        self._numbers = itertools.count(1)
        self.uploads_abandoned = 0  # clients that left before their upload was read
        self._thumbs: OrderedDict[int, bytes] = OrderedDict()
        self._thumbs_lock = threading.Lock()

    @property
    def model(self) -> str:
        return self.encoder.name

    def close(self) -> None:
        self.batcher.close()
        self._decoders.shutdown(wait=False, cancel_futures=True)

    # -- queries ---------------------------------------------------------------------------------
    def text_query(self, text: str, k: int) -> Query:
        (item,) = discover_texts([], [text])  # the item `retrieve --query TEXT` makes, id "1"
        return self._query(item, k)

    async def image_query(self, data: bytes, name: str, k: int) -> Query:
        """The query of an uploaded image, decoded on the upload threads (at most
        :data:`UPLOAD_DECODERS` at once), so the model worker gets it ready to embed."""
        image = await asyncio.get_running_loop().run_in_executor(self._decoders, self.decode_upload, data, name)
        return self._query(FrameItem(id=name, modality="image", source=name, image=image), k, upload=True)

    def decode_upload(self, data: bytes, name: str) -> Any:
        """An upload's picture: refused (413) from its header when it claims more than
        ``max_upload_pixels`` (the decoder's own header check, with this server's limit), else decoded
        (422 with the reason it cannot be)."""
        limit = self.max_upload_pixels
        try:
            return load_image(data, max_pixels=limit, min_side=getattr(self.encoder, "decode_min_side", None))
        except ImageTooLarge as exc:
            pixels = f"{exc.pixels:,} pixels" if exc.pixels else "too many pixels"
            raise RequestError(
                f"query {name}: image has {pixels}, over this server's upload limit of {limit / 1e6:g} "
                f"megapixels ({option('max_upload_megapixels')}): a decompression bomb, or a picture to shrink first",
                413,
            ) from None
        except MmcliError as exc:
            raise RequestError(f"query {name}: {exc}", 422) from None

    def _query(self, item: InputItem, k: int, *, upload: bool = False) -> Query:
        query_id = item.id
        item.id = f"{query_id}\x00{next(self._numbers)}"  # unique within any batch; the record keeps query_id
        return Query(item, query_id, k, upload=upload)

    async def ask(self, query: Query) -> Answer:
        """The query's answer, embedded and searched in a batch with the queries that came with it."""
        future = self.batcher.submit(query)
        answer = await asyncio.wrap_future(future)
        answer.batch_size = getattr(future, "batch_size", 1)
        return answer

    def _answer(self, batch: list[Query]) -> list[Answer]:
        """One model call and one search per distinct k for a batch of queries (on the model worker)."""
        from mmcli.retrieval import hits_for
        from mmcli.search import embed_queries, search_set

        try:
            found = embed_queries(
                self.feature_set,
                query_items=[query.item for query in batch],
                encoder=self.encoder,
                batch_size=self.batcher.max_batch,
            )
        except MmcliError as exc:
            return [Answer(error=str(exc)) for _ in batch]
        position = {item_id: number for number, item_id in enumerate(found.ids)}
        failed = {failure["query_id"]: failure["error"] for failure in found.failures}
        answers = [Answer(error=failed.get(query.item.id)) for query in batch]
        for k in sorted({query.k for query in batch}):
            members = [n for n, query in enumerate(batch) if query.k == k and query.item.id in position]
            if not members:
                continue
            vectors = found.vectors[[position[batch[n].item.id] for n in members]]
            result = search_set(self.feature_set, vectors, k)
            for n, rows, scores in zip(members, result.rows, result.scores, strict=True):
                query = batch[n]
                hits = hits_for(rows, scores, self.feature_set.records)
                answers[n].record = {"query_id": query.query_id, "query": query.item.source, "hits": hits}
                answers[n].rows = [int(row) for row in rows]
        return answers

    # -- images ----------------------------------------------------------------------------------
    def image_path(self, row: str) -> Path:
        """The file of image row ``row`` (a row number as text); anything else is a 404."""
        if not _ROW.fullmatch(row) or int(row) not in self.images:
            raise RequestError(f"no image for row {row!r} in this index", 404)
        return self.images[int(row)]

    def thumbnail(self, row: str) -> bytes:
        """A JPEG of at most THUMB_SIDE pixels a side, decoded by the safe decoder, cached."""
        path = self.image_path(row)
        number = int(row)
        with self._thumbs_lock:
            if number in self._thumbs:
                self._thumbs.move_to_end(number)
                return self._thumbs[number]
        try:
            image = load_image(path, max_pixels=self.max_pixels, min_side=THUMB_SIDE)
        except MmcliError as exc:
            raise RequestError(f"row {row}: {exc}", 422) from None
        image.thumbnail((THUMB_SIDE, THUMB_SIDE))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        data = buffer.getvalue()
        with self._thumbs_lock:
            self._thumbs[number] = data
            while len(self._thumbs) > THUMB_CACHE:
                self._thumbs.popitem(last=False)
        return data

    def tile(self, row: int, hit: dict[str, Any]) -> dict[str, Any]:
        """What the results grid shows of a hit: its fields, a caption if the record has one, its image."""
        record = self.feature_set.records[row]
        caption = record.get("caption")
        return {
            **hit,
            "row": row,
            "caption": caption if isinstance(caption, str) else None,
            "image": row in self.images,
        }


def parse_k(value: Any) -> int:
    """``k`` from a request: an integer from 1 to MAX_K, else a 400."""
    text = "" if value is None else str(value).strip()
    if not text:
        return DEFAULT_K
    if not re.fullmatch(r"[0-9]{1,7}", text) or not 1 <= int(text) <= MAX_K:
        raise RequestError(f"k must be a whole number from 1 to {MAX_K} (got {str(value)[:40]!r})")
    return int(text)


def make_app(
    index: str | os.PathLike[str] | FeatureSet,
    *,
    model: str | None = None,
    encoder: Any = None,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    max_batch: int = DEFAULT_MAX_BATCH,
    linger: float = DEFAULT_LINGER_S,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_upload_megapixels: float = DEFAULT_MAX_UPLOAD_MEGAPIXELS,
    hosts: Sequence[str] = (),
    reporter: Reporter | None = None,
) -> Any:
    """The ASGI app (FastAPI) serving search over ``index``; the model loads here, once.

    ``model`` defaults to the model named in the set's records (as for ``retrieve``); an ``encoder``
    already loaded is used as it is. ``max_batch`` queries at most share a model call, gathered for up
    to ``linger`` seconds (``max_batch=1``: no batching). Uploads over ``max_upload_mb``, or whose
    header claims more than ``max_upload_megapixels``, get a 413. Requests must name this machine as
    their host (``127.0.0.1``, ``localhost``, ``[::1]``) or one of ``hosts`` (``*``: any), else a 400.
    The :class:`SearchService` is ``app.state.service`` (close it when done).
    """
    from mmcli.search import index_model

    if max_batch < 1:
        raise UsageError(f"{option('max_batch')} must be at least 1")
    if linger < 0:
        raise UsageError(f"{option('linger_ms')} cannot be negative")
    if not max_upload_mb > 0:
        raise UsageError(f"{option('max_upload_mb')} must be more than 0")
    if not max_upload_megapixels > 0:
        raise UsageError(f"{option('max_upload_megapixels')} must be more than 0")
    reporter = reporter or Reporter()
    feature_set = index if isinstance(index, FeatureSet) else read_feature_set(index)
    if len(feature_set) == 0:
        raise InputError(f"{feature_set.path} has no rows to search")
    if encoder is None:
        from mmcli.encoders import load_encoder

        name = model or index_model(feature_set)
        with reporter.loading(name):
            encoder = load_encoder(name, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    service = SearchService(
        feature_set, encoder, max_batch=max_batch, linger=linger, max_upload_bytes=int(max_upload_mb * 2**20),
        max_upload_pixels=int(max_upload_megapixels * 1e6),
    )  # fmt: skip
    if service.refused:
        reporter.note(
            f"{service.refused} image row(s) of {feature_set.path} are not served: their files resolve "
            "outside the folders the set's sources live in"
        )
    return _build_app(service, allowed_hosts(hosts))


def allowed_hosts(hosts: Sequence[str]) -> list[str]:
    """The names a request may give as its ``Host``: this machine's loopback names and ``hosts``;
    a wildcard address (``0.0.0.0``, ``::``) adds this machine's own name and addresses."""
    names = [*LOOPBACK_NAMES]
    for host in hosts:
        names.append(f"[{host}]" if ":" in host and not host.startswith("[") else host)
        if host in ("0.0.0.0", "::", "[::]"):
            own = {socket.gethostname(), socket.getfqdn()}
            with contextlib.suppress(OSError):
                own |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
            names += sorted(f"[{name}]" if ":" in name else name for name in own)
    return list(dict.fromkeys(name.lower() for name in names))


class _ClientGone(Exception):
    """The client closed the connection before its request was read: nobody is left to answer."""


def _build_app(service: SearchService, hosts: list[str]) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from jinja2 import Environment, FileSystemLoader
    from starlette.exceptions import HTTPException

    pages = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True, lstrip_blocks=True)
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    app = FastAPI(title="mmcli search", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)  # DNS rebinding: another name is a 400
    app.state.service = service
    feature_set = service.feature_set

    def error(message: str, status: int) -> Any:
        return JSONResponse({"error": message}, status_code=status, headers=SECURITY_HEADERS)

    @app.exception_handler(RequestError)
    async def _refused(request: Request, exc: RequestError) -> Any:
        return error(str(exc), exc.status)

    @app.exception_handler(_ClientGone)
    async def _gone(request: Request, exc: _ClientGone) -> Any:
        service.uploads_abandoned += 1
        return Response(status_code=400)  # never read by anyone; no traceback, no log line

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Any:
        return error(str(exc.detail), exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Any:
        return error("malformed request", 400)

    async def answered(query: Query) -> Answer:
        answer = await service.ask(query)
        if answer.error is not None:
            raise RequestError(f"query {query.query_id}: {answer.error}", 422 if query.upload else 400)
        return answer

    def text_query(request: Request) -> Query:
        text = request.query_params.get("q", "")
        if not text.strip():
            raise RequestError("no query: give q=TEXT")
        return service.text_query(text, parse_k(request.query_params.get("k")))

    async def upload_query(request: Request) -> Query:
        form = await _bounded_form(request, service.max_upload_bytes)
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise RequestError("no image: send the file as the multipart field 'image'")
        data = await upload.read()
        if not data:
            raise RequestError("the uploaded image is empty (0 bytes)")
        k = parse_k(form.get("k") or request.query_params.get("k"))
        name = os.path.basename(upload.filename or "") or "upload"
        return await service.image_query(data, name, k)

    def api_answer(answer: Answer) -> Any:
        headers = {**SECURITY_HEADERS, "X-Batch-Size": str(answer.batch_size)}
        return JSONResponse(answer.record, headers=headers)

    @app.get("/api/search")
    async def api_search_text(request: Request) -> Any:
        return api_answer(await answered(text_query(request)))

    @app.post("/api/search")
    async def api_search_image(request: Request) -> Any:
        return api_answer(await answered(await upload_query(request)))

    @app.get("/api/stats")
    async def api_stats() -> Any:
        stats = {"index": str(feature_set.path), "rows": len(feature_set), "model": service.model}
        stats["images"] = len(service.images)
        stats["batching"] = service.batcher.stats
        stats["uploads_abandoned"] = service.uploads_abandoned
        return JSONResponse(stats, headers=SECURITY_HEADERS)

    def page(name: str, status: int = 200, **values: Any) -> Any:
        html = pages.get_template(name).render(
            index=feature_set.path.name, rows=len(feature_set), model=service.model, max_k=MAX_K, **values
        )
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    async def results_page(request: Request, make: Any, *, q: str, k: Any, upload: bool = False) -> Any:
        try:
            query = await make(request)
            answer = await answered(query)
        except RequestError as exc:
            return page("search.html.j2", exc.status, error=str(exc), q=q, k=k, upload=upload)
        tiles = [service.tile(row, hit) for row, hit in zip(answer.rows, answer.record["hits"], strict=True)]
        return page("search.html.j2", record=answer.record, tiles=tiles, q=q, k=query.k, upload=upload)

    @app.get("/")
    async def home(request: Request) -> Any:
        text = request.query_params.get("q")
        if text is None:
            return page("search.html.j2", q="", k=DEFAULT_K)

        async def make(request: Request) -> Query:
            return text_query(request)

        return await results_page(request, make, q=text, k=request.query_params.get("k") or DEFAULT_K)

    @app.post("/")
    async def home_upload(request: Request) -> Any:
        return await results_page(request, upload_query, q="", k=DEFAULT_K, upload=True)

    @app.get("/favicon.ico")
    async def favicon() -> Any:
        return Response(
            FAVICON, media_type="image/svg+xml", headers={**SECURITY_HEADERS, "Cache-Control": "max-age=86400"}
        )

    @app.get("/item/{row}")
    async def item(row: str) -> Any:
        if not _ROW.fullmatch(row) or int(row) >= len(feature_set):
            raise RequestError(f"no row {row!r} in this index", 404)
        number = int(row)
        record = feature_set.records[number]
        return page("search_item.html.j2", row=number, record=record, image=number in service.images)

    @app.get("/image/{row}")
    async def image(row: str) -> Any:
        path = service.image_path(row)
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if not media_type.startswith("image/"):
            media_type = "application/octet-stream"
        return FileResponse(path, media_type=media_type, headers=SECURITY_HEADERS)

    @app.get("/thumb/{row}")
    def thumb(row: str) -> Any:  # (sync: decoding runs on the server's thread pool)
        data = service.thumbnail(row)
        return Response(data, media_type="image/jpeg", headers={**SECURITY_HEADERS, "Cache-Control": "max-age=3600"})

    return app


async def _bounded_form(request: Any, limit: int) -> Any:
    """The request's multipart form, read only while the body stays within ``limit`` bytes (else a 413)."""
    from starlette.requests import ClientDisconnect, Request

    too_large = RequestError(f"upload too large: the limit is {limit / 2**20:g} MB ({option('max_upload_mb')})", 413)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise RequestError("send the image as multipart/form-data, in the field 'image'", 415)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
    except ClientDisconnect:
        raise _ClientGone() from None
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": bytes(body), "more_body": False}

    try:
        return await Request(request.scope, receive).form(max_files=1, max_fields=8)
    except Exception as exc:  # malformed multipart bodies: the parser's own error, as a 400
        raise RequestError(f"malformed upload: {getattr(exc, 'detail', None) or exc}") from None


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: a free one), or a one-line error saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"{option('host')} {host}: cannot resolve ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def serve(
    index: str | os.PathLike[str],
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    reporter: Reporter | None = None,
    **app_options: Any,
) -> None:
    """Run the search app on ``host:port`` until Ctrl-C (or SIGTERM); ``app_options`` go to :func:`make_app`.

    The address is bound before the model loads, so a port in use fails at once; a non-loopback
    ``host`` prints :func:`host_warning` on stderr.
    """
    reporter = reporter or Reporter()
    sock = listen(host, port)
    try:
        warning = host_warning(host)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        hosts = [host, *app_options.pop("hosts", ())]  # the name the server was started with is its own
        app = make_app(index, reporter=reporter, hosts=hosts, **app_options)
        service: SearchService = app.state.service
        try:
            reporter.note(
                f"serving {len(service.feature_set):,} rows of {service.feature_set.path} with {service.model} "
                f"at {url_of(sock, host)} (Ctrl-C stops)"
            )
            try:
                _run(app, sock)
            except KeyboardInterrupt:  # uvicorn shuts down on Ctrl-C, then raises it again: the way to stop
                pass
        finally:
            service.close()
    finally:
        sock.close()
    reporter.note("stopped")


def _run(app: Any, sock: socket.socket) -> None:
    """Serve ``app`` on the bound ``sock`` with uvicorn until it is told to stop."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])

"""``mmcli serve`` under load: concurrent text queries with micro-batching against without, in one run.

The set has 100,000 random L2-normalised rows of 512 dimensions, its records pointing at a few
generated JPEGs; the model is a full-size random CLIP ViT-B/32 (``make_clip_b32``), whose text tower
embeds every query. For each mode the script starts ``mmcli serve`` as its own process on
127.0.0.1 (a free port) — ``--max-batch 32`` (batching, 5 ms linger) and ``--max-batch 1`` (every
query alone) — waits until it answers, then runs ``--clients`` threads, each sending text queries
back to back for ``--seconds`` (every request has a 60 s timeout), and reports requests/s, p50 and
p99 latency, errors, and the batch sizes the server made (``/api/stats``).

    python benchmarks/serve_load.py                          # 32 clients, 20 s per mode
    python benchmarks/serve_load.py --clients 8 --seconds 5  # quicker

Measured on the 2-core development machine (32 clients, 20 s a mode): 119.2 req/s batched against
30.9 unbatched (3.86x), p99 639 ms against 1,213 ms, no errors; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import make_images  # noqa: E402  (benchmarks/ is on the path when run as a script)
from extract_throughput import make_clip_b32  # noqa: E402

WORDS = "cat dog red car night beach city street mountain river snow sunset forest boat train kitchen".split()
MAX_CLIENTS = 256
MAX_SECONDS = 300


def make_set(folder: Path, model: Path, rows: int, dim: int = 512) -> Path:
    """``rows`` random unit rows whose records point at a few generated images."""
    images = make_images(folder / "images", 8)
    generator = np.random.default_rng(0)
    vectors = generator.standard_normal((rows, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    out = folder / "load.npy"
    np.save(out, vectors)
    with open(out.with_suffix(".jsonl"), "w", encoding="utf-8") as sidecar:
        for row in range(rows):
            source = str(images[row % len(images)])
            record = {"id": f"row-{row:06d}", "modality": "image", "model": str(model), "source": source}
            sidecar.write(json.dumps(record) + "\n")
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``mmcli serve`` in its own process on 127.0.0.1, stopped with Ctrl-C (SIGINT)."""

    def __init__(self, index: Path, *flags: str) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}/"
        command = [sys.executable, "-m", "mmcli", "serve", "--index", str(index), "--port", str(self.port), *flags]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def __enter__(self) -> Server:
        import httpx

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"mmcli serve exited: {self.process.stderr.read()}")
            try:
                if httpx.get(self.base + "api/stats", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        raise SystemExit("mmcli serve did not start within 300 s")

    def stats(self) -> dict:
        import httpx

        return httpx.get(self.base + "api/stats", timeout=10).json()["batching"]

    def __exit__(self, *exc: object) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def load(base: str, clients: int, seconds: float) -> dict:
    """``clients`` threads sending text queries for ``seconds``: throughput, latency and errors."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start_line = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(number: int) -> None:
        chooser = random.Random(number)
        with httpx.Client(base_url=base, timeout=60) as session:
            start_line.wait()
            while time.monotonic() < stop_at[0]:
                text = " ".join(chooser.choices(WORDS, k=4))
                began = time.perf_counter()
                try:
                    response = session.get("api/search", params={"q": text, "k": 10})
                    ok = response.status_code == 200 and len(response.json()["hits"]) == 10
                    problem = None if ok else f"HTTP {response.status_code}: {response.text[:100]}"
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                took = time.perf_counter() - began
                with lock:
                    (errors.append(problem) if problem else latencies.append(took))

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.monotonic() + seconds
    began = time.monotonic()
    start_line.wait()
    for thread in threads:
        thread.join(seconds + 120)
    elapsed = time.monotonic() - began
    done = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(done, 50)) if len(done) else float("nan"),
        "p99_ms": float(np.percentile(done, 99)) if len(done) else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS or not 0 < args.seconds <= MAX_SECONDS:
        raise SystemExit(f"--clients must be 1..{MAX_CLIENTS} and --seconds 0..{MAX_SECONDS}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = make_clip_b32(folder / "clip-b32")
        index = make_set(folder, model, args.rows)
        print(f"{args.rows:,} rows x 512, random CLIP ViT-B/32, {args.clients} clients, {args.seconds:g} s per mode")
        results = {}
        for name, flags in (
            ("batched (--max-batch 32)", ("--max-batch", "32")),
            ("unbatched (--max-batch 1)", ("--max-batch", "1")),
        ):
            with Server(index, *flags) as server:
                load(server.base, min(args.clients, 4), 2.0)  # warm-up: first calls, caches
                before = server.stats()
                result = load(server.base, args.clients, args.seconds)
                after = server.stats()
            batches = after["batches"] - before["batches"]
            result["mean_batch"] = (after["queries"] - before["queries"]) / batches if batches else 0.0
            result["largest_batch"] = after["largest_batch"]
            results[name] = result
            print(
                f"{name:27s} {result['rps']:7.1f} req/s  p50 {result['p50_ms']:7.1f} ms  "
                f"p99 {result['p99_ms']:7.1f} ms  "
                f"{result['requests']} ok, {result['errors']} errors  mean batch {result['mean_batch']:.1f} "
                f"(largest {result['largest_batch']})"
            )
            if result["errors"]:
                print(f"  first error: {result['first_error']}")
        batched, alone = results.values()
        speedup, tail = batched["rps"] / alone["rps"], alone["p99_ms"] / batched["p99_ms"]
        print(f"micro-batching: {speedup:.2f}x the requests/s, p99 latency {tail:.2f}x lower")


if __name__ == "__main__":
    main()

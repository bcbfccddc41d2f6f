"""Scale-out: ``--backend ray`` against the local backend, and reading a sharded set, in one run.

    pip install -e ".[ray]"
    python benchmarks/scale_out.py                       # 512 images; 1,000,000 x 256 rows in 10 parts
    python benchmarks/scale_out.py --images 128 --rows 200000   # quicker

1. ``extract_features`` on the same 512 640x480 JPEGs with a full-size random CLIP ViT-B/32
   (``CLIPConfig()``), wall time from the call to the written set (model loads and Ray's start-up
   included, as a user waits for them), split into the start-up (to the first batch written) and the
   steady rate after it: the local backend; Ray with 1 worker (the overhead ratio);
   Ray with 2 workers (the speed-up over 1 worker, and over local). The rows of every run are
   checked against the local run's (same ids in the same order, values within 1e-5).
2. ``retrieve``'s search (``search_set`` exact) over a 1M-row set stored as one ``.npy`` and as a
   sharded ``DIR/`` of 10 parts, the same rows: reading the set (``read_feature_set``) and the search
   itself, best of three each, with the hits checked equal. The sidecar records are kept minimal.

A 2-core machine shares its cores between the decode tasks and the actors, so 2 workers cannot beat
one process using both cores for the model; the figures say what Ray costs there, and the
speed-up it gives belongs to machines (or clusters) with cores to spare. Figures: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import make_images  # noqa: E402  (benchmarks/ is on the path when run as a script)
from extract_throughput import make_clip_b32  # noqa: E402


def cpu_capability() -> str:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    kinds = (("amx_bf16", "AMX"), ("avx512_bf16", "AVX-512 BF16"), ("avx2", "AVX2"))
    kind = next((name for flag, name in kinds if flag in flags), "no AVX2")
    return f"{os.cpu_count()} cores, {kind}"


class Clock:
    """A reporter's progress bar that notes when the first batch is written: the start-up (model loads,
    Ray's start, the actors' model loads) is the time to it, the steady rate what follows."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first: tuple[float, int] | None = None
        self.count = 0

    def update(self, n: int = 1) -> None:
        self.count += n
        if n and self.first is None:
            self.first = (time.perf_counter(), self.count)


def extract(images: Path, model: Path, out: Path, **backend: object) -> tuple[float, float, float]:
    """Wall time, start-up time and the steady rate after the first batch (inputs a second)."""
    from contextlib import contextmanager

    from mmcli import extract_features
    from mmcli.reporting import Reporter

    clock = Clock()

    class Timed(Reporter):
        @contextmanager
        def progress(self, total: int | None, *, unit: str, desc: str) -> Any:
            yield clock

    extract_features([images], out, model=str(model), reporter=Timed(), **backend)
    ended = time.perf_counter()
    assert clock.first is not None
    first_at, first_count = clock.first
    return ended - clock.started, first_at - clock.started, (clock.count - first_count) / max(ended - first_at, 1e-9)


def same_rows(left: Path, right: Path) -> bool:
    from mmcli.output.feature_set import read_feature_set

    a, b = read_feature_set(left), read_feature_set(right)
    return a.ids == b.ids and bool(np.allclose(np.asarray(a.vectors), np.asarray(b.vectors), atol=1e-5, rtol=0))


def backends(work: Path, count: int) -> None:
    images = work / "images"
    make_images(images, count)
    model = make_clip_b32(work / "clip-b32")
    runs = {
        "local": {},
        "ray, 1 worker": {"backend": "ray", "num_workers": 1},
        "ray, 2 workers": {"backend": "ray", "num_workers": 2},
    }
    seconds = {}
    for name, backend in runs.items():
        out = work / f"{name.replace(', ', '-').replace(' ', '')}.npy"
        seconds[name], startup, steady = extract(images, model, out, **backend)
        ok = name == "local" or same_rows(work / "local.npy", out)
        print(f"  {name:15s} {seconds[name]:7.1f} s  {count / seconds[name]:6.1f} img/s overall;  start-up "
              f"{startup:5.1f} s, then {steady:6.1f} img/s;  rows equal local: {ok}")  # fmt: skip
    print(f"  ray overhead at 1 worker: {seconds['ray, 1 worker'] / seconds['local']:.2f}x the local time")
    print(f"  2 workers vs 1 worker: {seconds['ray, 1 worker'] / seconds['ray, 2 workers']:.2f}x faster; "
          f"vs local: {seconds['local'] / seconds['ray, 2 workers']:.2f}x")  # fmt: skip


def write_sets(work: Path, rows: int, dim: int, parts: int) -> tuple[Path, Path]:
    """The same rows as one ``.npy`` and as a sharded folder (parts written with the set writer)."""
    from mmcli.output.npy import FeatureSetWriter
    from mmcli.output.sharded import new_index, part_name, write_index

    rng = np.random.default_rng(0)
    single, folder = work / "single.npy", work / "sharded"
    folder.mkdir()
    index = new_index({"model": "random"}, {}, -(-rows // parts))
    per_part = -(-rows // parts)
    with FeatureSetWriter(single) as whole:
        for number, start in enumerate(range(0, rows, per_part)):
            block = rng.standard_normal((min(per_part, rows - start), dim), dtype=np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            records = [{"id": str(i), "modality": "image", "model": "random", "source": str(i)}
                       for i in range(start, start + len(block))]  # fmt: skip
            whole.add(block, records)
            with FeatureSetWriter(folder / f"{part_name(number)}.npy") as part:
                part.add(block, records)
            index["parts"].append({"name": part_name(number), "rows": len(block), "consumed": start + len(block),
                                   "errors": 0})  # fmt: skip
    index["complete"] = True
    write_index(folder, index)
    return single, folder


def best(function: Callable[[], Any], repeats: int = 3) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return min(times), result


def sharded_reading(work: Path, rows: int, dim: int, parts: int) -> None:
    from mmcli.output.feature_set import read_feature_set
    from mmcli.search import search_set

    single, folder = write_sets(work, rows, dim, parts)
    queries = np.asarray(read_feature_set(single).vectors[:: max(1, rows // 100)][:100])
    timings = {}
    for name, path in (("one file", single), (f"{parts} parts", folder)):
        load, feature_set = best(lambda path=path: read_feature_set(path))
        search, found = best(lambda feature_set=feature_set: search_set(feature_set, queries, 10, ann="exact"))
        timings[name] = (load, search, found)
        print(f"  {name:10s} read {load:6.2f} s   search 100 queries k=10 {search:6.2f} s")
    (_, _, a), (_, _, b) = timings.values()
    equal = all(np.array_equal(x, y) for x, y in zip(a.rows, b.rows, strict=True))
    one, many = timings["one file"], timings[f"{parts} parts"]
    print(f"  parts / one file: read {many[0] / one[0]:.2f}x, search {many[1] / one[1]:.2f}x; hits equal: {equal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--parts", type=int, default=10)
    parser.add_argument("--skip-backends", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"machine: {cpu_capability()}")
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        if not args.skip_backends:
            print(f"extract-features, {args.images} images 640x480, CLIP ViT-B/32 (random), --dtype auto:")
            backends(work, args.images)
        print(f"retrieve over {args.rows:,} x {args.dim} rows:")
        sharded_reading(work, args.rows, args.dim, args.parts)
    print(json.dumps({"done": True}))


if __name__ == "__main__":
    main()

"""Exact top-k search: mmcli's chunked search against faiss ``IndexFlatIP`` and numpy, in one run.

    pip install faiss-cpu
    python benchmarks/search_speed.py                        # 1,000,000 x 512 rows, 1,000 queries, k=10
    python benchmarks/search_speed.py --rows 200000          # quicker

Rows are L2-normalised float32 vectors around 1,000 random centres (embeddings cluster; uniformly
random vectors have no neighbourhoods for an approximate index to find), saved as a ``.npy`` and
memory-mapped, as ``mmcli retrieve`` reads a feature set; queries are perturbed copies of random
rows. The approximate part runs ``mmcli.search_set(ann="faiss")`` (mmcli's default IVF index, built
and saved beside the set on first use, loaded again by each search as ``retrieve`` does) against
``search_set(ann="exact")`` in the same run: the speed ratio and recall@k against exact search. mmcli's results are
checked against float32 brute force (the same ids, ties by row order); faiss is timed on an
in-memory copy, as ``IndexFlatIP`` needs. Peak resident memory is reported after each step.

mmcli and faiss are timed alternately, three times each, and each keeps its best time (the
machines here are shared, and the first search also competes with the write-back of the file just
generated). Figures: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

T = TypeVar("T")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(run: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def main() -> None:
    from mmcli.retrieval import search

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="alternating timed runs of mmcli and faiss; best kept")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((1_000, args.dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.npy"
        index = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(args.rows, args.dim))
        for start in range(0, args.rows, 100_000):
            size = min(100_000, args.rows - start)
            block = centres[rng.integers(0, len(centres), size)]
            block += 0.5 * rng.standard_normal((size, args.dim), dtype=np.float32) / np.sqrt(args.dim)
            index[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
        index.flush()
        del index
        mapped = np.load(path, mmap_mode="r")
        queries = np.asarray(mapped[rng.choice(args.rows, args.queries)], dtype=np.float32)
        queries += 0.05 * rng.standard_normal(queries.shape, dtype=np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        index_mib = args.rows * args.dim * 4 / 2**20
        print(f"{args.rows} x {args.dim} float32 rows ({index_mib:.0f} MiB), {args.queries} queries, k={args.k}")
        print(f"peak RSS before searching: {peak_mib():.0f} MiB")

        search(mapped[:4096], queries[:8], args.k)  # warm up
        ours_seconds, ours = timed(lambda: search(mapped, queries, args.k))
        print(f"mmcli exact (memory-mapped): {ours_seconds:6.2f} s   peak RSS {peak_mib():.0f} MiB")

        reference = np.empty((args.queries, args.k), np.int64)
        reference_scores = np.empty((args.queries, args.k), np.float32)
        for first in range(0, args.queries, 100):
            scores = queries[first : first + 100] @ np.asarray(mapped).T
            order = np.argsort(-scores, axis=1, kind="stable")[:, : args.k]
            reference[first : first + 100] = order
            reference_scores[first : first + 100] = np.take_along_axis(scores, order, axis=1)
        same_ids = sum(np.array_equal(a, b) for a, b in zip(ours.rows, reference, strict=True))
        # Where ids differ, the scores must agree: the difference is then a tie within float rounding.
        worst = max(float(np.abs(a - b).max()) for a, b in zip(ours.scores, reference_scores, strict=True))
        print(
            f"same ids as float32 brute force for {same_ids}/{args.queries} queries; "
            f"largest score difference {worst:.1e} (others are ties within rounding)"
        )

        try:
            import faiss
        except ImportError:
            print("faiss not installed: pip install faiss-cpu")
            return
        flat = faiss.IndexFlatIP(args.dim)
        flat.add(np.ascontiguousarray(mapped))
        faiss_seconds, (_, faiss_rows) = timed(partial(flat.search, queries, args.k))
        same = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(faiss_rows, reference, strict=True)]))
        print(f"faiss IndexFlatIP (in memory): {faiss_seconds:6.2f} s   overlap with brute force {same:.4f}")
        # The machines here are shared: alternate the two and keep each one's best time.
        for _ in range(args.repeat - 1):
            ours_seconds = min(ours_seconds, timed(lambda: search(mapped, queries, args.k))[0])
            faiss_seconds = min(faiss_seconds, timed(partial(flat.search, queries, args.k))[0])
        print(
            f"best of {args.repeat} alternating runs: mmcli {ours_seconds:.2f} s, faiss {faiss_seconds:.2f} s; "
            f"mmcli / faiss time: {ours_seconds / faiss_seconds:.2f}x"
        )
        del flat

        from mmcli.ann import default_nprobe
        from mmcli.output.npy import FeatureSet
        from mmcli.search import search_set

        # The set as retrieve reads it; searching reads no record, so one shared empty record stands for each row.
        feature_set = FeatureSet(vectors=mapped, records=[{}] * args.rows, path=path)
        exact_seconds, exact = timed(partial(search_set, feature_set, queries, args.k, ann="exact"))
        for _ in range(args.repeat - 1):
            exact_seconds = min(exact_seconds, timed(partial(search_set, feature_set, queries, args.k, ann="exact"))[0])
        assert exact.backend == "exact"
        build_seconds, built = timed(
            partial(search_set, feature_set, queries[:8], args.k, ann="faiss", save_index=True)
        )
        assert built.backend == "faiss" and built.saved and built.index_file is not None
        from mmcli.ann import load_index

        load_seconds, ivf = timed(partial(load_index, path, mapped))
        print(
            f"search_set(ann='faiss'): IVF with {ivf.nlist} lists, built and saved in {build_seconds:.1f} s; "
            f"each search loads it again ({load_seconds:.2f} s, included below)"
        )
        print(f"search_set(ann='exact'): {exact_seconds:6.2f} s (best of {args.repeat})")
        for nprobe in sorted({1, max(1, ivf.nlist // 128), max(1, ivf.nlist // 32), default_nprobe(ivf.nlist)}):
            run = partial(search_set, feature_set, queries, args.k, ann="faiss", nprobe=nprobe)
            ann_seconds, approximate = timed(run)
            for _ in range(args.repeat - 1):
                ann_seconds = min(ann_seconds, timed(run)[0])
            assert approximate.backend == "faiss" and not approximate.built
            recall = float(
                np.mean([len(set(a) & set(b)) / args.k for a, b in zip(approximate.rows, exact.rows, strict=True)])
            )
            default = " (default)" if nprobe == default_nprobe(ivf.nlist) else ""
            print(
                f"  nprobe {nprobe:4d}{default}: {ann_seconds:6.2f} s, recall@{args.k} {recall:.4f} against "
                f"ann='exact', {exact_seconds / ann_seconds:.1f}x faster than ann='exact', "
                f"{faiss_seconds / ann_seconds:.1f}x than faiss flat"
            )


if __name__ == "__main__":
    main()

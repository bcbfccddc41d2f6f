"""``mmcli dedup`` at scale: 1,000,000 x 512 clustered rows with planted near-duplicates, one run.

The set: rows around 2,000 cluster centres (members at cosine ~0.5-0.8 to each other, as photos of
one kind are), 1 % of them planted near-copies of another row (cosine ~0.97, a re-encode or a
resize), in random order, stored as one ``.npy`` with its sidecar. The command runs in a process of
its own, so its time and its peak memory (``VmHWM`` of that process, which unlike ``ru_maxrss`` does not
carry over the parent's peak through fork and exec) are its own:

- mmcli dedup with the default method (``auto``: faiss above 100,000 rows) and the default threshold;
- the baseline: exact all-pairs search (``--method exact``) on a random 50,000-row sample of the same
  rows, its time extrapolated by the square of the row ratio (all pairs grow as N^2), which is what an
  exact run over the whole set would take.

It reports the recall of the planted pairs (those at the threshold or above) and the ratio of the
extrapolated exact time to the default method's.

    python benchmarks/dedup.py                    # 1,000,000 rows (about 4 GB of disk, 10 minutes)
    python benchmarks/dedup.py --rows 200000      # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM, CLUSTERS, PLANTED_SHARE, THRESHOLD = 512, 2_000, 0.01, 0.94


def make_set(folder: Path, rows: int, seed: int = 0) -> tuple[Path, set[tuple[int, int]]]:
    """The clustered set, written a chunk at a time; the planted pairs as (row, row), smaller first."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, DIM)).astype(np.float32)
    planted = int(rows * PLANTED_SHARE)
    originals = rows - planted
    order = rng.permutation(rows)  # where each generated row lands in the set
    npy = folder / "set.npy"
    matrix = np.lib.format.open_memmap(npy, mode="w+", dtype=np.float32, shape=(rows, DIM))
    chunk = 100_000
    for start in range(0, originals, chunk):
        count = min(chunk, originals - start)
        block = centres[rng.integers(0, CLUSTERS, count)] + 1.1 * rng.standard_normal((count, DIM), dtype=np.float32)
        matrix[order[start : start + count]] = block / np.linalg.norm(block, axis=1, keepdims=True)
    sources = rng.integers(0, originals, planted)
    copies = matrix[order[sources]] + 0.012 * rng.standard_normal((planted, DIM), dtype=np.float32)
    matrix[order[originals:]] = copies / np.linalg.norm(copies, axis=1, keepdims=True)
    matrix.flush()
    pairs = {(min(int(order[s]), int(order[originals + i])), max(int(order[s]), int(order[originals + i])))
             for i, s in enumerate(sources)}  # fmt: skip
    with open(folder / "set.jsonl", "w", encoding="utf-8") as sidecar:
        for row in range(rows):
            sidecar.write(
                json.dumps(
                    {"id": f"r{row:07d}", "modality": "image", "model": "synthetic", "source": f"r{row:07d}.jpg"}
                )
                + "\n"
            )
    return npy, pairs


def run_dedup(npy: Path, out: Path, *flags: str) -> tuple[float, float]:
    """Seconds and peak memory (GiB) of ``mmcli dedup`` in a process of its own."""
    code = (
        "import resource, sys, time\n"
        "from mmcli.cli import main\n"
        "started = time.perf_counter()\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "print('SECONDS', time.perf_counter() - started, file=sys.stderr)\n"
        "peak = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')]\n"
        "print('PEAK', peak[0] if peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    )
    argv = ["mmcli", "dedup", str(npy), "-o", str(out), "--threshold", str(THRESHOLD), *flags]
    result = subprocess.run([sys.executable, "-c", f"import sys; sys.argv = {argv!r}\n" + code],
                            capture_output=True, text=True, env={**os.environ, "MMCLI_WARM": "off"})  # fmt: skip
    if not out.exists():
        raise SystemExit(f"mmcli dedup failed:\n{result.stderr}")
    lines = dict(line.split(" ", 1) for line in result.stderr.splitlines() if line.startswith(("SECONDS", "PEAK")))
    summary = [line for line in result.stderr.splitlines() if line.startswith("mmcli:")]
    print("   ", "\n    ".join(summary))
    return float(lines["SECONDS"]), int(lines["PEAK"]) / 2**20


def groups_of(out: Path) -> np.ndarray:
    with open(out, encoding="utf-8") as handle:
        return np.array([json.loads(line)["group"] for line in handle], dtype=np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=50_000, help="rows of the exact baseline's sample")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        npy, planted = make_set(folder, args.rows)
        vectors = np.load(npy, mmap_mode="r")
        near = {(a, b) for a, b in planted if float(vectors[a] @ vectors[b]) >= THRESHOLD}
        print(f"{args.rows:,} x {DIM} rows, {len(planted):,} planted copies ({len(near):,} at cosine >= {THRESHOLD}); "
              f"made in {time.perf_counter() - started:.0f} s; {os.cpu_count()} CPUs")  # fmt: skip

        seconds, peak = run_dedup(npy, folder / "dups.jsonl")
        groups = groups_of(folder / "dups.jsonl")
        recall = sum(groups[a] == groups[b] for a, b in near) / max(len(near), 1)
        print(f"mmcli dedup (default method): {seconds:.1f} s, peak memory {peak:.2f} GiB, "
              f"recall of planted pairs {recall:.4f}")  # fmt: skip

        rng = np.random.default_rng(1)
        sample = np.sort(rng.choice(args.rows, min(args.sample, args.rows), replace=False))
        small = folder / "sample.npy"
        np.save(small, np.asarray(vectors[sample]))
        with open(folder / "sample.jsonl", "w", encoding="utf-8") as sidecar:
            for row in sample:
                sidecar.write(
                    json.dumps(
                        {"id": f"r{row:07d}", "modality": "image", "model": "synthetic", "source": f"r{row:07d}.jpg"}
                    )
                    + "\n"
                )
        exact_seconds, exact_peak = run_dedup(small, folder / "sample-dups.jsonl", "--method", "exact")
        extrapolated = exact_seconds * (args.rows / len(sample)) ** 2
        print(f"exact all pairs on {len(sample):,} rows: {exact_seconds:.1f} s (peak {exact_peak:.2f} GiB); "
              f"extrapolated to {args.rows:,} rows: {extrapolated / 3600:.1f} h")  # fmt: skip
        print(f"default method vs exact all pairs (extrapolated): {extrapolated / seconds:.0f}x faster")
    print(f"(peak memory of this script: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB)")


if __name__ == "__main__":
    main()

"""Peak memory of ``mmcli extract-features`` does not grow with the number of inputs.

The same command embeds 500 and then 5,000 generated 640x480 JPEGs with a full-size CLIP ViT-B/32
(random weights, saved like a hub checkpoint). Each run is a fresh ``mmcli`` process, and its own
peak resident memory (``VmHWM`` from ``/proc/self/status``, Linux) is read as it exits, so the
parent's memory and the image generation do not count. The ratio of the two peaks is the figure.

    python benchmarks/memory_flat.py                              # 500 and 5,000 images
    python benchmarks/memory_flat.py --small 100 --large 1000     # quicker

Measured on a 2-core AMD EPYC (AVX2, float32): see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import make_images  # noqa: E402  (benchmarks/ is on the path when run as a script)
from extract_throughput import make_clip_b32  # noqa: E402

# Runs the real command line in this interpreter and prints the process's peak RSS (KiB) at exit.
RUN_MMCLI = """
import atexit, sys
def report():
    status = open("/proc/self/status").read()
    print("VmHWM", status.split("VmHWM:")[1].split()[0], file=sys.stderr)
atexit.register(report)
from mmcli.cli import main
sys.argv = ["mmcli", *sys.argv[1:]]
main()
"""


def peak_kib(images: Path, model: Path, output: Path) -> tuple[int, float]:
    """Peak RSS of one ``mmcli extract-features`` run over ``images``, and its wall time."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", RUN_MMCLI, "extract-features", str(images), "-o", str(output), "--model", str(model)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"mmcli failed ({done.returncode}):\n{done.stderr[-2000:]}")
    peak = [line for line in done.stderr.splitlines() if line.startswith("VmHWM")]
    return int(peak[-1].split()[1]), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=5_000)
    args = parser.parse_args()
    if not Path("/proc/self/status").exists():
        raise SystemExit("this benchmark reads the peak RSS from /proc/self/status (Linux)")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = make_clip_b32(folder / "clip-b32")
        peaks = {}
        for count in (args.small, args.large):
            images = folder / f"images-{count}"
            make_images(images, count)
            peak, seconds = peak_kib(images, model, folder / f"features-{count}.npy")
            peaks[count] = peak
            rate = count / seconds
            print(f"{count:6d} images: peak RSS {peak / 1024:7.0f} MiB  ({seconds:.0f} s, {rate:.1f} images/s)")
    print(f"peak RSS, {args.large} / {args.small} images: {peaks[args.large] / peaks[args.small]:.3f}x")


if __name__ == "__main__":
    main()

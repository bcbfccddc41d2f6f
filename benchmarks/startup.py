"""Start-up: how long ``mmcli --help`` takes, and how soon a model command's first result comes.

- ``mmcli --help`` against ``python -c pass`` (the interpreter's own start), median of ``--runs``,
  and the heavy modules (torch, transformers, ...) that must not be imported for it;
- ``mmcli extract-features`` on one JPEG, a full-size CLIP ViT-B/32 with random weights, against the
  shortest script that does the same (import transformers, ``from_pretrained``, the processor, one
  ``get_image_features``, ``np.save``), each in a fresh process, median of ``--runs``: what mmcli adds
  before its first batch beyond loading the model.

    python benchmarks/startup.py
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import make_images  # noqa: E402  (benchmarks/ is on the path when run as a script)
from extract_throughput import make_clip_b32  # noqa: E402

HEAVY = ("torch", "transformers", "numpy", "PIL", "cv2", "faiss", "pyarrow", "ray", "fastapi", "av")

PLAIN_SCRIPT = """
import sys
import numpy as np
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor
model_path, image, out = sys.argv[1:]
model = CLIPModel.from_pretrained(model_path).eval()
processor = CLIPProcessor.from_pretrained(model_path)
with torch.inference_mode():
    output = model.get_image_features(**processor(images=Image.open(image).convert("RGB"), return_tensors="pt"))
rows = output if isinstance(output, torch.Tensor) else output.pooler_output
np.save(out, torch.nn.functional.normalize(rows, dim=-1).numpy())
"""


PROBE = """
import runpy, sys
sys.argv = ["mmcli", "--help"]
try:
    runpy.run_module("mmcli", run_name="__main__")
except SystemExit:
    pass
print(" ".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
"""


def median_seconds(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    mmcli = [sys.executable, "-m", "mmcli"]

    floor = median_seconds([sys.executable, "-c", "pass"], args.runs)
    help_seconds = median_seconds([*mmcli, "--help"], args.runs)
    probe = PROBE.format(heavy=HEAVY)
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stderr.split()
    print(f"python -c pass      {floor * 1000:6.0f} ms")
    print(f"mmcli --help        {help_seconds * 1000:6.0f} ms  (heavy modules imported: {imported or 'none'})")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        image = make_images(folder / "images", 1)[0]
        model_path = make_clip_b32(folder / "clip-vit-b32")
        plain_command = [sys.executable, "-c", PLAIN_SCRIPT, str(model_path), str(image), str(folder / "p.npy")]
        plain = median_seconds(plain_command, args.runs)
        command = [*mmcli, "extract-features", str(image), "--model", str(model_path), "-o", str(folder / "m.npy")]
        ours = median_seconds([*command, "--overwrite", "--quiet"], args.runs)
    print(f"one image, plain transformers script  {plain:6.2f} s")
    print(f"one image, mmcli extract-features     {ours:6.2f} s  (x{ours / plain:.2f} the plain script's time)")


if __name__ == "__main__":
    main()

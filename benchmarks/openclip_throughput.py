"""open_clip image embedding: ``mmcli extract-features`` on an open_clip model against open_clip's own loop.

The model is open_clip's ViT-B-32 architecture with random weights (``open_clip.create_model("ViT-B-32")``),
saved as open_clip saves a model for the hub (``open_clip_config.json`` and the weights) and loaded
from that folder; the inputs are 640x480 JPEGs made from scikit-image's photographs. Both contenders
go from files to L2-normalised rows, models loaded beforehand (untimed), float32:

- open_clip's loop, as its README embeds images: PIL open, ``preprocess``, ``encode_image`` on batches
  of 32 under ``torch.no_grad()``, decoding and model in turn;
- mmcli: ``embed_items`` + ``FeatureSetWriter`` (what ``mmcli extract-features --model FOLDER`` runs),
  ``--dtype float32``, and ``--dtype auto`` (bfloat16 on CPUs with native bfloat16).

    python benchmarks/openclip_throughput.py              # 128 images, 2 rounds, best round counts
    python benchmarks/openclip_throughput.py --images 64 --rounds 1
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import make_images  # noqa: E402  (benchmarks/ is on the path when run as a script)
from extract_throughput import mmcli_engine  # noqa: E402  (the same engine runner, files to rows)

BATCH = 32
Runner = Callable[[], np.ndarray]


class _BuiltInTokenizer:
    def save_pretrained(self, folder: Path) -> None:  # ViT-B-32 reads open_clip's built-in BPE: no files
        pass


def make_vit_b32(folder: Path) -> Path:
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32").eval()
    config = open_clip.get_model_config("ViT-B-32")
    importlib.import_module("open_clip.push_to_hf_hub").save_for_hf(
        model, _BuiltInTokenizer(), config, folder, safe_serialization=True
    )
    return folder


def open_clip_loop(folder: Path, paths: list[Path]) -> Runner:
    import open_clip
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    model.eval()

    def run() -> np.ndarray:
        rows = []
        with torch.no_grad():
            for start in range(0, len(paths), BATCH):
                batch = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths[start : start + BATCH]])
                rows.append(torch.nn.functional.normalize(model.encode_image(batch), dim=-1))
        return torch.cat(rows).numpy()

    return run


def main() -> None:
    from mmcli.loading import native_bf16_cpu

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = make_images(root / "images", args.images)
        folder = make_vit_b32(root / "open-clip-vit-b32")
        print(
            f"{args.images} JPEGs 640x480, open_clip ViT-B-32 (random weights), {torch.get_num_threads()} threads, "
            f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bfloat16: {native_bf16_cpu()}"
        )
        runners = {
            f"open_clip loop (batch {BATCH}, float32)": open_clip_loop(folder, paths),
            "mmcli (--dtype float32)": mmcli_engine(folder, paths, root / "f32.npy", dtype="float32"),
            "mmcli (--dtype auto)": mmcli_engine(folder, paths, root / "auto.npy", dtype="auto"),
        }
        best: dict[str, tuple[float, np.ndarray]] = {}
        for round_number in range(args.rounds):
            for name, run in runners.items():
                started = time.perf_counter()
                rows = run()
                seconds = time.perf_counter() - started
                gc.collect()
                print(f"  round {round_number + 1}: {name:<34} {args.images / seconds:6.2f} images/s", flush=True)
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, rows)
    baseline_name = next(iter(best))
    baseline_seconds, reference = best[baseline_name]
    for name, (seconds, rows) in best.items():
        cosine = float(np.min(np.sum(rows * reference, axis=1)))
        print(f"{name:<34} {args.images / seconds:6.2f} images/s  x{baseline_seconds / seconds:4.2f} open_clip's loop"
              f"  (min cosine to it {cosine:.6f})")  # fmt: skip


if __name__ == "__main__":
    main()

"""Image embedding throughput: ``mmcli extract-features``'s engine against the loops people write.

The model is a full-size CLIP ViT-B/32 (``CLIPConfig()`` defaults) with random weights, saved and
loaded like a hub checkpoint; the inputs are 640x480 JPEGs made from scikit-image's photographs.
Every contender goes from files to a ``.npy`` of L2-normalised rows, in the same process (each
loads its model first, untimed):

- naive: PIL open -> CLIPProcessor -> get_image_features, one image at a time, float32;
- careful: the processor and the model on batches of 32, float32, decoding and model in turn;
- mmcli: ``embed_items`` + ``FeatureSetWriter`` (what ``mmcli extract-features`` runs), with
  ``--dtype auto`` (bfloat16 on CPUs with native bfloat16, else float32), with ``--quantize int8``,
  and with ``--compile on`` (its one-off compile, timed apart and printed, is not in its rate).

The compute-bound limit comes from matrix products of ViT-B/32's own shapes timed in the same run
(float32 and bfloat16), and the model's FLOPs per image from torch's FLOP counter:
limit = GEMM FLOP/s / FLOP per image.

    python benchmarks/extract_throughput.py                # 256 images
    python benchmarks/extract_throughput.py --images 64    # quicker

Measured on a 2-core AMD EPYC (AVX2, no native bfloat16), 256 images: see benchmarks/README.md
for the figures; mmcli's rows match the naive loop's to cosine >= 0.9999
(float32) and >= 0.999 (int8).
"""

from __future__ import annotations

import argparse
import gc
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

CAREFUL_BATCH = 32


def make_clip_b32(folder: Path) -> Path:
    """A random full-size CLIP ViT-B/32 with a small stand-in tokenizer, in save_pretrained layout."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = ["<|startoftext|>", "<|endoftext|>", *letters, *(f"{c}</w>" for c in letters)]
    torch.manual_seed(0)
    CLIPModel(CLIPConfig()).eval().save_pretrained(folder)
    tokenizer = CLIPTokenizer(vocab={token: i for i, token in enumerate(vocab)}, merges=[])
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(folder)
    return folder


def _normalised(rows: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(rows.float(), dim=-1).numpy()


def _features(output: object) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output  # transformers 4 / 5


Runner = Callable[[], np.ndarray]


def naive(model_path: Path, paths: list[Path], out: Path) -> Runner:
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    processor = CLIPProcessor.from_pretrained(model_path)
    model = CLIPModel.from_pretrained(model_path).eval()

    def run() -> np.ndarray:
        rows = []
        with torch.inference_mode():
            for path in paths:
                inputs = processor(images=Image.open(path).convert("RGB"), return_tensors="pt")
                rows.append(_normalised(_features(model.get_image_features(**inputs))))
        np.save(out, np.concatenate(rows))
        return np.load(out)

    return run


def careful(model_path: Path, paths: list[Path], out: Path) -> Runner:
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    processor = CLIPProcessor.from_pretrained(model_path)
    model = CLIPModel.from_pretrained(model_path).eval()

    def run() -> np.ndarray:
        rows = []
        with torch.inference_mode():
            for start in range(0, len(paths), CAREFUL_BATCH):
                images = [Image.open(p).convert("RGB") for p in paths[start : start + CAREFUL_BATCH]]
                inputs = processor(images=images, return_tensors="pt")
                rows.append(_normalised(_features(model.get_image_features(**inputs))))
        np.save(out, np.concatenate(rows))
        return np.load(out)

    return run


COMPILE_SECONDS: list[float] = []  # the one-off compile of the --compile on contender, timed apart


def mmcli_engine(model_path: Path, paths: list[Path], out: Path, compile: bool = False, **load: str | None) -> Runner:
    from mmcli.encoders import load_encoder
    from mmcli.extract import embed_items
    from mmcli.io.features import FeatureSetWriter
    from mmcli.io.inputs import discover_images

    encoder = load_encoder(str(model_path), device="cpu", **load)
    if compile:  # compiled and warmed on one batch, as the first batch of a long run would be
        from PIL import Image

        encoder.compile_images(encoder.default_batch_size)
        started = time.perf_counter()
        warm = [encoder.preprocess_image(Image.new("RGB", (640, 480)))] * encoder.default_batch_size
        encoder.embed_preprocessed(warm)
        COMPILE_SECONDS.append(time.perf_counter() - started)

    def run() -> np.ndarray:
        with FeatureSetWriter(out) as writer:
            for batch in embed_items(discover_images([str(p) for p in paths]), encoder):
                writer.add([o.value for o in batch], [o.item.record(model=str(model_path)) for o in batch])
        return np.load(out)

    return run


def gemm_flops_per_second(dtype: torch.dtype, tokens: int, seconds: float = 3.0) -> float:
    """FLOP/s of the four matrix products of a ViT-B/32 block (qkv, out, fc1, fc2) on ``tokens`` rows."""
    width = 768
    shapes = [(width, 3 * width), (width, width), (width, 4 * width), (4 * width, width)]
    inputs = [torch.randn(tokens, k).to(dtype) for k, _ in shapes]
    weights = [torch.randn(k, n).to(dtype) for k, n in shapes]
    flop = sum(2 * tokens * k * n for k, n in shapes)

    def step() -> None:
        for x, w in zip(inputs, weights, strict=True):
            torch.mm(x, w)

    step()
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        step()
        count += 1
    return flop * count / elapsed


def flop_per_image(model_path: Path) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(model_path).eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.get_image_features(pixel_values=torch.zeros(1, 3, 224, 224))
    return float(counter.get_total_flops())


def timed(make: Callable[[], Runner]) -> tuple[float, np.ndarray]:
    """Seconds from files to a loaded ``.npy``; the model is loaded beforehand, the same for all."""
    run = make()
    start = time.perf_counter()
    rows = run()
    seconds = time.perf_counter() - start
    del run
    gc.collect()
    return seconds, rows


def main() -> None:
    from mmcli.loading import native_bf16_cpu

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256)
    args = parser.parse_args()

    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_images(folder / "images", args.images)
        model_path = make_clip_b32(folder / "clip-vit-b32")
        print(
            f"{args.images} JPEGs 640x480, CLIP ViT-B/32 (random weights), {torch.get_num_threads()} threads, "
            f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bfloat16: {native_bf16_cpu()}"
        )
        runs = {
            "naive (batch 1, float32)": lambda: naive(model_path, paths, folder / "naive.npy"),
            f"careful (batch {CAREFUL_BATCH}, float32)": lambda: careful(model_path, paths, folder / "careful.npy"),
            "mmcli (--dtype auto)": lambda: mmcli_engine(model_path, paths, folder / "auto.npy", dtype="auto"),
            "mmcli (--quantize int8)": lambda: mmcli_engine(model_path, paths, folder / "int8.npy", quantize="int8"),
            "mmcli (--compile on)": lambda: mmcli_engine(
                model_path, paths, folder / "compiled.npy", compile=True, dtype="auto"
            ),
        }
        results = {name: timed(run) for name, run in runs.items()}
        image_flop = flop_per_image(model_path)
        tokens = CAREFUL_BATCH * 50  # 49 patches + the class token per image
        gemm = {dtype: gemm_flops_per_second(dtype, tokens) for dtype in (torch.float32, torch.bfloat16)}

    reference_seconds, reference = results["naive (batch 1, float32)"]
    naive_rate = args.images / reference_seconds
    careful_rate = args.images / results[f"careful (batch {CAREFUL_BATCH}, float32)"][0]
    # The limit that matters is the one for the numerics --dtype auto picks on this CPU.
    limit_dtype = torch.bfloat16 if native_bf16_cpu() else torch.float32
    print(f"model: {image_flop / 1e9:.2f} GFLOP per image")
    for dtype, flops in gemm.items():
        limit = flops / image_flop
        print(f"GEMM, ViT-B/32 shapes, {str(dtype)[6:]:>8}: {flops / 1e9:7.1f} GFLOP/s -> limit {limit:6.2f} images/s")
    for name, (seconds, rows) in results.items():
        rate = args.images / seconds
        cosine = float(np.min(np.sum(rows * reference, axis=1)))
        share = rate * image_flop / gemm[limit_dtype]
        print(
            f"{name:<28} {rate:6.2f} images/s  x{rate / naive_rate:4.2f} naive  x{rate / careful_rate:4.2f} careful  "
            f"{share:4.0%} of the {str(limit_dtype)[6:]} limit  (min cosine to naive {cosine:.6f})"
        )
    if COMPILE_SECONDS:
        print(f"--compile on: the one-off compile and first batch took {COMPILE_SECONDS[0]:.1f} s (not in its rate)")


if __name__ == "__main__":
    main()

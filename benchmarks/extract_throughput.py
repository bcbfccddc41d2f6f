"""Image embedding throughput: ``mmcli extract-features``'s engine against the loops people write.

The model is a full-size CLIP ViT-B/32 (``CLIPConfig()`` defaults) with random weights, saved and
loaded like a hub checkpoint; the inputs are 640x480 JPEGs made from scikit-image's photographs.
Every contender goes from files to a ``.npy`` of L2-normalised rows, in the same process (each
loads its model first, untimed):

- naive: PIL open -> CLIPProcessor -> get_image_features, one image at a time, float32;
- careful: the processor and the model on batches of 32, float32, decoding and model in turn;
- clip-retrieval: its own ``clip_inference`` (the tool a user would otherwise pick) on the same
  checkpoint (``hf_clip:PATH``) and folder, batch 32, a decode worker per core, in a subprocess run by
  ``--clip-retrieval-python`` (an interpreter with ``pip install clip-retrieval``; it pins numpy<2
  and pyarrow<16, so it usually wants a virtual environment of its own). Its model load and warm-up
  are done before the clock starts, as for the others;
- mmcli: ``embed_items`` + ``FeatureSetWriter`` (what ``mmcli extract-features`` runs), with
  ``--dtype auto`` (bfloat16 on CPUs with native bfloat16, else float32), with ``--quantize int8``,
  and with ``--compile on`` (its one-off compile, timed apart and printed, is not in its rate).

The compute-bound limit comes from matrix products of ViT-B/32's own shapes timed in the same run
(float32 and bfloat16), and the model's FLOPs per image from torch's FLOP counter:
limit = GEMM FLOP/s / FLOP per image. Shared machines drift by 10-20 % within a minute, so the run
goes round ``--rounds`` times, the GEMM rate timed at the start of each round and every contender
once per round; each figure is its best round.

    python benchmarks/extract_throughput.py                # 256 images, 2 rounds
    python benchmarks/extract_throughput.py --images 64    # quicker
    python3.11 -m venv /tmp/cr
    /tmp/cr/bin/pip install torch==2.14.1 torchvision==0.29.1 clip-retrieval "setuptools<81"
    python benchmarks/extract_throughput.py --clip-retrieval-python /tmp/cr/bin/python

Measured on a 2-core AMD EPYC (AVX2, no native bfloat16), 256 images: see benchmarks/README.md
for the figures; mmcli's rows match the naive loop's to cosine >= 0.9999
(float32) and >= 0.999 (int8).
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import subprocess
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


# Run by the clip-retrieval interpreter: load (and warm) the model the way clip_inference's reader
# and mapper ask for it, so their lru-cached load_clip calls hit, then time clip_inference alone.
CLIP_INFERENCE = """
import sys, time
from all_clip import load_clip
from clip_retrieval.clip_inference.main import main

if __name__ == "__main__":  # its decode workers start by spawning, which imports this file again
    images, out, model, batch, workers = sys.argv[1:]
    batch, workers = int(batch), int(workers)
    load_clip(clip_model=model, use_jit=False, warmup_batch_size=batch, clip_cache_path=None)
    started = time.perf_counter()
    main(images, out, batch_size=batch, num_prepro_workers=workers, enable_text=False, clip_model=model)
    print("clip_inference seconds:", time.perf_counter() - started)
"""


class ClipRetrieval:
    """clip-retrieval's ``clip_inference`` in its own interpreter; ``seconds`` excludes its start-up."""

    def __init__(self, python: str, model_path: Path, folder: Path, out: Path) -> None:
        self.python, self.model_path, self.folder, self.out = python, model_path, folder, out
        self.seconds = 0.0

    def __call__(self) -> np.ndarray:
        import shutil

        shutil.rmtree(self.out, ignore_errors=True)
        workers = str(os.cpu_count() or 1)
        script = self.out.with_name("clip_inference_run.py")
        script.write_text(CLIP_INFERENCE)
        command = [self.python, str(script), str(self.folder), str(self.out), f"hf_clip:{self.model_path}"]
        done = subprocess.run([*command, str(CAREFUL_BATCH), workers], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"clip_inference failed:\n{done.stderr[-3000:]}")
        # its progress lines end without a newline, so the timing can share a line with them
        self.seconds = float(re.findall(r"clip_inference seconds: ([0-9.]+)", done.stdout)[-1])
        return np.load(self.out / "img_emb" / "img_emb_0.npy").astype(np.float32)


COMPILE_SECONDS: list[float] = []  # the one-off compile of the --compile on contender, timed apart


def mmcli_engine(model_path: Path, paths: list[Path], out: Path, compile: bool = False, **load: str | None) -> Runner:
    from mmcli.encoders import load_encoder
    from mmcli.extract import embed_items
    from mmcli.io.inputs import discover_images
    from mmcli.output.npy import FeatureSetWriter

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


def timed(run: Runner) -> tuple[float, np.ndarray]:
    """Seconds from files to a loaded ``.npy``; models are loaded beforehand, the same for all."""
    start = time.perf_counter()
    rows = run()
    seconds = getattr(run, "seconds", None) or time.perf_counter() - start
    gc.collect()
    return seconds, rows


def main() -> None:
    from mmcli.loading import native_bf16_cpu

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2, help="each contender runs once a round; its best counts")
    parser.add_argument("--clip-retrieval-python", help="an interpreter that has clip-retrieval installed")
    args = parser.parse_args()

    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    limit_dtype = torch.bfloat16 if native_bf16_cpu() else torch.float32  # what --dtype auto picks here
    tokens = CAREFUL_BATCH * 50  # 49 patches + the class token per image
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_images(folder / "images", args.images)
        model_path = make_clip_b32(folder / "clip-vit-b32")
        print(
            f"{args.images} JPEGs 640x480, CLIP ViT-B/32 (random weights), {torch.get_num_threads()} threads, "
            f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bfloat16: {native_bf16_cpu()}"
        )
        makers: dict[str, Callable[[], Runner]] = {
            "naive (batch 1, float32)": lambda: naive(model_path, paths, folder / "naive.npy"),
            f"careful (batch {CAREFUL_BATCH}, float32)": lambda: careful(model_path, paths, folder / "careful.npy"),
            "mmcli (--dtype auto)": lambda: mmcli_engine(model_path, paths, folder / "auto.npy", dtype="auto"),
            "mmcli (--quantize int8)": lambda: mmcli_engine(model_path, paths, folder / "int8.npy", quantize="int8"),
            "mmcli (--compile on)": lambda: mmcli_engine(
                model_path, paths, folder / "compiled.npy", compile=True, dtype="auto"
            ),
        }
        if args.clip_retrieval_python:
            makers["clip-retrieval clip_inference"] = lambda: ClipRetrieval(
                args.clip_retrieval_python, model_path, folder / "images", folder / "clip-retrieval"
            )
        runners = {name: make() for name, make in makers.items()}
        best: dict[str, tuple[float, np.ndarray]] = {}
        gemm_best = {torch.float32: 0.0, torch.bfloat16: 0.0}
        for round_number in range(args.rounds):
            gemm_best[limit_dtype] = max(gemm_best[limit_dtype], gemm_flops_per_second(limit_dtype, tokens))
            for name, run in runners.items():
                seconds, rows = timed(run)
                print(f"  round {round_number + 1}: {name:<32} {args.images / seconds:6.2f} images/s", flush=True)
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, rows)
        other = torch.float32 if limit_dtype == torch.bfloat16 else torch.bfloat16
        gemm_best[other] = gemm_flops_per_second(other, tokens // 8, seconds=1.0)  # for information; can be slow
        image_flop = flop_per_image(model_path)

    reference_seconds, reference = best["naive (batch 1, float32)"]
    naive_rate = args.images / reference_seconds
    careful_rate = args.images / best[f"careful (batch {CAREFUL_BATCH}, float32)"][0]
    print(f"model: {image_flop / 1e9:.2f} GFLOP per image; best of {args.rounds} rounds")
    for dtype, flops in gemm_best.items():
        limit = flops / image_flop
        print(f"GEMM, ViT-B/32 shapes, {str(dtype)[6:]:>8}: {flops / 1e9:7.1f} GFLOP/s -> limit {limit:6.2f} images/s")
    for name, (seconds, rows) in best.items():
        rate = args.images / seconds
        cosine = float(np.min(np.sum(rows * reference, axis=1)))
        share = rate * image_flop / gemm_best[limit_dtype]
        print(
            f"{name:<32} {rate:6.2f} images/s  x{rate / naive_rate:4.2f} naive  x{rate / careful_rate:4.2f} careful  "
            f"{share:4.0%} of the {str(limit_dtype)[6:]} limit  (min cosine to naive {cosine:.6f})"
        )
    if not args.clip_retrieval_python:
        print("clip-retrieval: not measured (give --clip-retrieval-python, see the docstring)")
    if COMPILE_SECONDS:
        print(f"--compile on: the one-off compile and first batch took {COMPILE_SECONDS[0]:.1f} s (not in its rate)")


if __name__ == "__main__":
    main()

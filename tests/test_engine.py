"""The inference engine's choices: automatic numerics, int8 quantization, reduced-scale JPEG decoding,
device-sized batches, and a start-up that leaves torch alone where it is not needed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmcli import loading
from mmcli.errors import UsageError
from mmcli.loading import resolve_dtype

# The real detector, before conftest's autouse fixture swaps the module attribute for each test.
DETECT_NATIVE_BF16 = loading.native_bf16_cpu.__wrapped__

# -- --dtype auto -------------------------------------------------------------------------------


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_dtype_on_cpu_follows_native_bfloat16(monkeypatch, native, expected):
    monkeypatch.setattr(loading, "native_bf16_cpu", lambda: native)
    assert resolve_dtype("auto", "cpu") is expected
    assert resolve_dtype("float32", "cpu") is torch.float32  # an explicit choice always wins
    assert resolve_dtype("bfloat16", "cpu") is torch.bfloat16


def test_auto_dtype_on_gpus(monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("auto", "cuda") is torch.float16
    assert resolve_dtype("auto", "cuda", SimpleNamespace(dtype="bfloat16")) is torch.bfloat16
    assert resolve_dtype("auto", "cuda:1", SimpleNamespace(torch_dtype=torch.bfloat16)) is torch.bfloat16
    assert resolve_dtype("auto", "cuda", SimpleNamespace(dtype="float32")) is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("auto", "cuda", SimpleNamespace(dtype="bfloat16")) is torch.float16
    assert resolve_dtype("auto", "mps") is torch.float16


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 amx_tile", True),
        ("flags\t\t: fpu sse2 avx2 amx_bf16", True),
        ("Features\t: fp asimd sve bf16 i8mm", True),  # Arm
        ("flags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512_vnni", False),  # AVX-512 without BF16
        ("processor\t: 0", False),
    ],
)
def test_native_bfloat16_is_read_from_the_cpu_flags(monkeypatch, tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\n{flags}\n")
    monkeypatch.setattr(loading, "CPUINFO", str(cpuinfo))
    assert DETECT_NATIVE_BF16() is expected
    monkeypatch.setattr(loading, "CPUINFO", str(tmp_path / "absent"))  # macOS, Windows: no /proc
    assert DETECT_NATIVE_BF16() is False


def test_bfloat16_embeddings_stay_close_to_float32(tiny_models, photos):
    from mmcli.encoders import load_encoder
    from mmcli.media.images import load_image

    images = [load_image(path) for path in sorted(photos.glob("*.jpg"))]
    reference = load_encoder(str(tiny_models["clip"]), device="cpu", dtype="float32").encode_images(images)
    half = load_encoder(str(tiny_models["clip"]), device="cpu", dtype="bfloat16")
    assert next(half.model.parameters()).dtype is torch.bfloat16
    rows = half.encode_images(images)
    assert rows.dtype == np.float32
    assert np.min(np.sum(rows * reference, axis=1)) > 0.999


# -- --quantize int8 ----------------------------------------------------------------------------


def test_int8_quantization_replaces_every_linear_layer_and_keeps_embeddings_close(tiny_models, photos):
    from mmcli.encoders import load_encoder
    from mmcli.media.images import load_image

    images = [load_image(path) for path in sorted(photos.glob("*.jpg"))]
    texts = ["a cat", "a rocket on its pad"]
    exact = load_encoder(str(tiny_models["clip"]), device="cpu", dtype="float32")
    quantized = load_encoder(str(tiny_models["clip"]), device="cpu", quantize="int8")
    assert quantized.quantized == "int8" and exact.quantized is None
    float_linears = [m for m in quantized.model.modules() if type(m) is torch.nn.Linear]
    assert not float_linears, "a Linear layer escaped quantization"
    assert any("quantized" in type(m).__module__ for m in quantized.model.modules())
    for ours, reference in (
        (quantized.encode_images(images), exact.encode_images(images)),
        (quantized.encode_texts(texts), exact.encode_texts(texts)),
    ):
        cosine = np.sum(ours * reference, axis=1)
        assert np.all(cosine > 0.99) and not np.allclose(ours, reference, atol=1e-6)


@pytest.mark.parametrize(
    ("device", "dtype", "message"),
    [("cuda", "auto", "runs on the CPU only"), ("cpu", "bfloat16", "leave --dtype at auto or float32")],
)
def test_int8_quantization_is_refused_where_it_cannot_apply(monkeypatch, device, dtype, message):
    from mmcli import registry
    from mmcli.registry import Registry

    monkeypatch.setattr(registry, "resolve_device", lambda name: name)

    with pytest.raises(UsageError, match=message):
        Registry("encoder").load("unused", device=device, dtype=dtype, quantize="int8")


def test_cli_quantize_caption_and_refusal(run_mmcli, tiny_models, photos, tmp_path):
    result = run_mmcli(
        "extract-features", str(photos), "-o", str(tmp_path / "q.npy"), "--model", str(tiny_models["clip"]),
        "--quantize", "int8", "-q",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "q.npy").shape[0] == len(list(photos.glob("*.jpg")))
    refused = run_mmcli(
        "extract-features", str(photos), "-o", str(tmp_path / "r.npy"), "--model", str(tiny_models["clip"]),
        "--quantize", "int8", "--dtype", "bfloat16",
    )  # fmt: skip
    assert refused.returncode == 2
    assert "--quantize int8 quantizes float32 weights" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "r.npy").exists()


# -- reduced-scale JPEG decoding ----------------------------------------------------------------


@pytest.fixture(scope="module")
def large_jpeg(tmp_path_factory) -> Path:
    """A 12-megapixel camera-sized JPEG made from a real photograph."""
    from skimage import data

    path = tmp_path_factory.mktemp("large") / "large.jpg"
    Image.fromarray(data.astronaut()).resize((4000, 3000), Image.Resampling.BICUBIC).save(path, quality=92)
    return path


def test_decode_min_side_reads_plain_sizes_and_declines_the_rest():
    from transformers import BlipImageProcessor, CLIPImageProcessor, Idefics3ImageProcessor, SiglipImageProcessor

    from mmcli.media.images import decode_min_side

    assert decode_min_side(CLIPImageProcessor()) == 448  # shortest edge 224, crop 224x224
    assert decode_min_side(SiglipImageProcessor()) == 448  # 224x224
    assert decode_min_side(BlipImageProcessor()) == 768  # 384x384
    assert decode_min_side(Idefics3ImageProcessor()) is None  # longest-edge tiling wants every pixel
    assert decode_min_side(None) is None


def test_reduced_jpeg_decode_keeps_the_processor_input(large_jpeg):
    from transformers import CLIPImageProcessor

    from mmcli.media.images import decode_min_side, load_image

    processor = CLIPImageProcessor()
    full = load_image(large_jpeg)
    reduced = load_image(large_jpeg, min_side=decode_min_side(processor))
    assert full.size == (4000, 3000)
    assert reduced.size == (1000, 750)  # 1/4 scale: the smallest that keeps 448 pixels or more a side
    exact = processor(images=[full], return_tensors="np")["pixel_values"]
    fast = processor(images=[reduced], return_tensors="np")["pixel_values"]
    cosine = float(np.sum(exact * fast) / np.linalg.norm(exact) / np.linalg.norm(fast))
    assert cosine > 0.9999
    assert np.mean(np.abs(exact - fast)) < 0.01  # normalised units: about a quarter of one 8-bit level


def test_reduced_decode_applies_to_large_jpegs_only(large_jpeg, tmp_path):
    from mmcli.media.images import load_image

    small = tmp_path / "small.jpg"
    Image.open(large_jpeg).resize((800, 600)).save(small)
    assert load_image(small, min_side=448).size == (800, 600)  # under twice the needed side: full decode
    png = tmp_path / "large.png"
    Image.open(large_jpeg).resize((2000, 1500)).save(png)
    assert load_image(png, min_side=448).size == (2000, 1500)  # only JPEG decoders scale for free


def test_embedding_uses_reduced_decode_unless_exact_is_asked(tiny_models, large_jpeg, photos):
    from mmcli.encoders import load_encoder
    from mmcli.extract import embed_items
    from mmcli.io.inputs import discover_images

    encoder = load_encoder(str(tiny_models["clip"]), device="cpu", dtype="float32")
    assert encoder.decode_min_side is not None

    def rows(paths: list[Path], **options) -> np.ndarray:
        outcomes = [
            o for batch in embed_items(discover_images([str(p) for p in paths]), encoder, **options) for o in batch
        ]
        return np.stack([o.value for o in outcomes])

    reference = encoder.encode_images([Image.open(large_jpeg).convert("RGB")])
    exact = rows([large_jpeg], exact_decode=True)
    fast = rows([large_jpeg])
    np.testing.assert_allclose(exact, reference, atol=1e-5)
    assert not np.allclose(fast, exact, atol=1e-6)  # the default path really decoded at reduced scale
    assert float(np.sum(fast * exact)) > 0.99


# -- batch sizes, device copies -----------------------------------------------------------------


def test_default_batch_sizes_follow_the_device(tiny_models):
    from mmcli.encoders import load_encoder

    encoder = load_encoder(str(tiny_models["clip"]), device="cpu")
    assert encoder.default_batch_size == 16
    encoder.device = "cuda"
    assert encoder.default_batch_size == 64


def test_move_to_casts_floating_inputs_only():
    from mmcli.loading import move_to

    moved = move_to(
        {"pixel_values": torch.ones(2, 3), "input_ids": torch.ones(2, 3, dtype=torch.long), "n": 3},
        "cpu",
        torch.bfloat16,
    )
    assert moved["pixel_values"].dtype is torch.bfloat16
    assert moved["input_ids"].dtype is torch.long
    assert moved["n"] == 3


# -- start-up -----------------------------------------------------------------------------------


def test_evaluate_never_imports_torch(tmp_path):
    predictions = tmp_path / "pred.jsonl"
    predictions.write_text(json.dumps({"id": "a", "caption": "a cat on a mat"}) + "\n")
    references = tmp_path / "refs.jsonl"
    references.write_text(json.dumps({"id": "a", "captions": ["a cat sits on a mat", "a cat"]}) + "\n")
    code = (
        "import sys\n"
        f"sys.argv = ['mmcli', 'evaluate', 'captions', '--pred', {str(predictions)!r}, '--refs', {str(references)!r},"
        " '--metrics', 'bleu,rouge,cider']\n"
        "from mmcli.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "print('HEAVY', [m for m in ('torch', 'transformers', 'cv2') if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
    assert "cider" in result.stdout.lower()

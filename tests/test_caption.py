"""Captioning: the BLIP family against its reference usage, the engine, and ``mmcli caption`` end to end."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

from mmcli.captioners import GenerationOptions, clean_caption, load_captioner
from mmcli.errors import UsageError

OPTIONS = GenerationOptions(max_new_tokens=12, min_new_tokens=8)
REFERENCE_KWARGS = {"max_new_tokens": 12, "min_new_tokens": 8, "do_sample": False, "num_beams": 1}


@pytest.fixture(scope="module")
def images(photos):
    return [Image.open(path).convert("RGB") for path in sorted(photos.glob("*.jpg"))]


def _reference_blip(path, images, prompt=None):
    """The model card's usage: processor -> generate -> batch_decode(skip_special_tokens) -> prompt removed."""
    from transformers import AutoProcessor, BlipForConditionalGeneration

    processor = AutoProcessor.from_pretrained(path)
    model = BlipForConditionalGeneration.from_pretrained(path).eval()
    texts = None if prompt is None else [prompt] * len(images)
    with torch.inference_mode():
        output = model.generate(**processor(images=images, text=texts, return_tensors="pt"), **REFERENCE_KWARGS)
    decoded = processor.batch_decode(output, skip_special_tokens=True)
    return [text[len(prompt) :].strip() if prompt else text.strip() for text in decoded]


@pytest.mark.parametrize("prompt", [None, "a photo of"])
def test_blip_matches_reference_usage_and_batching(tiny_models, images, prompt):
    captioner = load_captioner(str(tiny_models["blip"]), device="cpu")
    assert captioner.family == "blip"
    batched = captioner.generate(images, prompt, OPTIONS)
    assert batched == _reference_blip(tiny_models["blip"], images, prompt)
    assert batched == [captioner.generate([image], prompt, OPTIONS)[0] for image in images]
    assert all(batched) and len(set(batched)) > 1, "captions should depend on the image"
    if prompt:
        assert not any(caption.startswith(prompt) for caption in batched)


def test_fused_vision_attention_matches_eager_at_full_resolution():
    """The SDPA path replaces BLIP's eager attention over 577 tokens without changing its output."""
    from transformers import BlipVisionConfig, BlipVisionModel

    from mmcli.speedups import fuse_vision_attention

    torch.manual_seed(0)
    config = BlipVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=384,
        patch_size=16,
        initializer_range=0.2,
    )
    model = BlipVisionModel(config).eval()
    pixels = torch.randn(2, 3, 384, 384)
    with torch.inference_mode():
        eager = model(pixels).last_hidden_state.clone()
        assert fuse_vision_attention(model) == 2
        fused = model(pixels).last_hidden_state
    torch.testing.assert_close(fused, eager, atol=1e-4, rtol=1e-4)


def test_generation_options_are_explicit():
    assert OPTIONS.generate_kwargs() == REFERENCE_KWARGS
    sampled = GenerationOptions(temperature=0.7, top_p=0.9, repetition_penalty=1.2).generate_kwargs()
    assert sampled["do_sample"] is True and sampled["temperature"] == 0.7 and sampled["top_p"] == 0.9
    assert sampled["repetition_penalty"] == 1.2


def test_clean_caption():
    assert clean_caption("  a photography of   a dog\n on grass ", "a photography of") == "a dog on grass"
    assert clean_caption("A Photo Of a cat", "a photo of") == "a cat"
    assert clean_caption("a cat", None) == "a cat"


def test_detail_levels_need_a_family_that_has_them(tiny_models):
    captioner = load_captioner(str(tiny_models["blip"]), device="cpu")
    assert captioner.prompt_for(None, "brief") is None
    assert captioner.prompt_for("a picture of", "detailed") == "a picture of"
    with pytest.raises(UsageError, match="--detail detailed is not available"):
        captioner.prompt_for(None, "detailed")


# -- the command ------------------------------------------------------------------------------


def test_caption_one_image_as_text(run_mmcli, tiny_models, photos):
    expected = load_captioner(str(tiny_models["blip"]), device="cpu").generate(
        [Image.open(photos / "chelsea.jpg").convert("RGB")], None, OPTIONS
    )
    result = run_mmcli(
        "caption",
        photos / "chelsea.jpg",
        "--model",
        tiny_models["blip"],
        "--format",
        "text",
        "--max-new-tokens",
        "12",
        "--min-new-tokens",
        "8",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected


def test_caption_folder_streams_jsonl_and_reports_corrupt_images(run_mmcli, tiny_models, photos, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    (folder / "broken.jpg").write_bytes((photos / "rocket.jpg").read_bytes()[:200])
    result = run_mmcli("caption", folder, "--model", tiny_models["blip"], "--batch-size", "2", "--min-new-tokens", "3")
    assert result.returncode == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in records] == [
        str(folder / n) for n in ("astronaut.jpg", "broken.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg")
    ]
    good = [r for r in records if "caption" in r]
    assert len(good) == 4
    assert all(set(r) == {"id", "source", "caption", "model"} and r["caption"] for r in good)
    assert {r["model"] for r in good} == {str(tiny_models["blip"])}
    bad = records[1]
    assert set(bad) == {"id", "source", "error"} and "corrupt" in bad["error"]
    assert f"skipping {folder / 'broken.jpg'}" in result.stderr
    assert "captioned 4 images; 1 failed" in result.stderr


@pytest.mark.parametrize("fmt", ["text", "tsv"])
def test_text_and_tsv_keep_a_line_per_input_when_one_fails(run_mmcli, tiny_models, photos, tmp_path, fmt):
    # `paste inputs.txt <(mmcli caption - --format text < inputs.txt)` pairs lines only if none is dropped
    paths = [photos / "chelsea.jpg", tmp_path / "broken.jpg", photos / "coffee.jpg"]
    paths[1].write_bytes((photos / "rocket.jpg").read_bytes()[:200])
    result = run_mmcli("caption", "-", "--model", tiny_models["blip"], "--format", fmt, "--min-new-tokens", "3",
                       input="".join(f"{path}\n" for path in paths))  # fmt: skip
    assert result.returncode == 1
    lines = result.stdout.split("\n")[:-1]
    assert len(lines) == 3, result.stdout
    texts = [line.split("\t")[-1] for line in lines]
    assert texts[0] and texts[1] == "" and texts[2], lines
    if fmt == "tsv":
        assert [line.split("\t")[0] for line in lines] == [str(path) for path in paths]
    assert f"skipping {paths[1]}" in result.stderr


def test_caption_stdin_records_keep_ids_and_extra_fields(run_mmcli, tiny_models, photos):
    lines = "\n".join(
        json.dumps({"path": str(photos / n), "id": f"img{i}", "split": "val"})
        for i, n in enumerate(["coffee.jpg", "rocket.jpg"])
    )
    result = run_mmcli("caption", "-", "--model", tiny_models["blip"], "--format", "jsonl", input=lines + "\n")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in records] == ["img0", "img1"]
    assert all(r["split"] == "val" for r in records)


def test_caption_tsv_to_file_needs_overwrite_to_replace(run_mmcli, tiny_models, photos, tmp_path):
    out = tmp_path / "captions.tsv"
    args = ["caption", photos, "--model", tiny_models["blip"], "--format", "tsv", "-o", out]
    first = run_mmcli(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == ""
    rows = [line.split("\t") for line in out.read_text().splitlines()]
    assert [row[0] for row in rows] == sorted(str(p) for p in photos.glob("*.jpg"))
    assert all(len(row) == 2 and row[1] for row in rows)
    refused = run_mmcli(*args)
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    assert run_mmcli(*args, "--overwrite").returncode == 0


def test_caption_usage_errors(run_mmcli, tiny_models, photos, tmp_path):
    detail = run_mmcli("caption", photos / "coffee.jpg", "--model", tiny_models["blip"], "--detail", "more")
    assert detail.returncode == 2 and "--detail more is not available" in detail.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = run_mmcli("caption", empty, "--model", tiny_models["blip"])
    assert nothing.returncode == 2 and "no images or videos found" in nothing.stderr
    for result in (detail, nothing):
        assert "Traceback" not in result.stderr


def test_caption_records_stream_before_stdin_closes(mmcli_exe, tiny_models, photos):
    """Each batch is written and flushed as soon as it is done, while the input is still open."""
    import os
    import subprocess

    process = subprocess.Popen(
        [mmcli_exe, "caption", "-", "--model", str(tiny_models["blip"])],  # default batch size and workers
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        process.stdin.write(f"{photos / 'coffee.jpg'}\n")
        process.stdin.flush()
        first = json.loads(process.stdout.readline())  # arrives while stdin is still open
        assert first["id"] == str(photos / "coffee.jpg") and first["caption"]
        process.stdin.write(f"{photos / 'rocket.jpg'}\n")
        process.stdin.close()
        second = json.loads(process.stdout.readline())
        assert second["id"] == str(photos / "rocket.jpg")
        assert process.wait(timeout=120) == 0
    finally:
        process.kill()


@pytest.fixture(scope="module")
def tiny_llava(tiny_models):
    return tiny_models["llava"]


def test_caption_with_a_chat_model_and_detail_levels(run_mmcli, tiny_llava, photos):
    """A chat model through the real command: the detail level picks the instruction it answers."""
    image = Image.open(photos / "astronaut.jpg").convert("RGB")
    captioner = load_captioner(str(tiny_llava), device="cpu")
    options = GenerationOptions(max_new_tokens=10, min_new_tokens=6)
    for detail in ("brief", "detailed"):
        result = run_mmcli(
            "caption",
            photos / "astronaut.jpg",
            "--model",
            tiny_llava,
            "--format",
            "text",
            "--detail",
            detail,
            "--max-new-tokens",
            "10",
            "--min-new-tokens",
            "6",
        )
        assert result.returncode == 0, result.stderr
        expected = captioner.generate([image], captioner.prompt_for(None, detail), options)
        assert result.stdout.splitlines() == expected

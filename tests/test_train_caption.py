"""``mmcli train caption``: learning for real on a synthetic corpus, one step equal to the transformers
recipe per family, resume after ``kill -9`` to the uninterrupted weights, LoRA, and bad inputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from shapes_corpus import build_word_blip, write_corpus

from mmcli.train import read_log


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """1,500 training and 60 unseen validation pictures, and a random-init word-level BLIP."""
    folder = tmp_path_factory.mktemp("shapes")
    return {
        "train": write_corpus(folder, 1500, seed=1, name="train"),
        "val": write_corpus(folder, 60, seed=2, name="val"),
        "small": write_corpus(folder, 240, seed=3, name="small"),
        "model": build_word_blip(folder / "word-blip"),
        "folder": folder,
    }


@pytest.mark.slow  # thirty epochs on 1,500 pictures
def test_training_from_scratch_learns_to_caption_unseen_pictures(run_mmcli, corpus, tmp_path):
    out = tmp_path / "captioner"
    started = time.monotonic()
    settings = ["--epochs", "30", "-b", "32", "--lr", "1e-3", "--warmup", "0.05"]
    run = run_mmcli("train", "caption", "--train", corpus["train"], "--val", corpus["val"], "--model",
                    corpus["model"], "-o", out, *settings)  # fmt: skip
    seconds = time.monotonic() - started
    assert run.returncode == 0, run.stderr
    state = json.loads((out / "train_state.json").read_text())
    untrained, best = state["untrained_cider"], state["best_cider"]
    print(f"CIDEr-D {untrained:.3f} untrained -> {best:.3f} (epoch {state['best_epoch']}), "
          f"{state['steps']} steps in {seconds:.0f} s")  # fmt: skip
    assert best >= 5.0 and best >= 10 * untrained, (untrained, best)
    assert f"{best:.3f} best" in run.stderr
    log = read_log(out)
    epochs = [line for line in log if "cider" in line]
    assert [line["epoch"] for line in epochs] == list(range(31))  # the untrained score, then each epoch
    steps = [line for line in log if "loss" in line]
    assert len(steps) == state["steps"] == 30 * 47 and steps[-1]["loss"] < steps[0]["loss"] / 3
    # the saved folder is a captioner every command loads: its captions of unseen pictures name them
    captions = run_mmcli("caption", corpus["val"].parent / "val", "--model", out, "-b", "16")
    assert captions.returncode == 0, captions.stderr
    written = {json.loads(line)["id"]: json.loads(line)["caption"] for line in captions.stdout.splitlines()}
    truth = {str(corpus["val"].parent / r["path"]): r["caption"] for r in map(json.loads, corpus["val"].open())}
    from mmcli.metrics.captions import evaluate_captions

    scored = evaluate_captions(written, {key: [caption] for key, caption in truth.items()}, ["cider"]).corpus["CIDEr"]
    assert scored == pytest.approx(best, abs=1e-6)  # the epoch kept is the one scored, captioned as `caption` does
    exact = sum(written[key] == caption for key, caption in truth.items())
    assert exact >= 25, (exact, list(written.items())[:5])  # whole captions right, of 48 kinds (chance: ~1)
    curves = np.asarray(Image.open(out / "curves.png").convert("L"))
    assert curves.shape == (340, 900) and (curves < 128).mean() > 0.005  # lines drawn, not a blank page


def _pictures(count, seed=0, side=32):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)) for _ in range(count)]


CAPTIONS = ["a cat on the grass", "a red rocket", "two dogs", "a cup of coffee"]


def _reference_batch(family, model, processor, images, captions):
    """The transformers recipe, written out: the processor's pixels and the tokenizer's ids, with the
    start token ``generate`` uses in front (BLIP's ``[DEC]``, GIT's ``[CLS]``; none for an encoder-decoder,
    whose model prepends ``decoder_start_token_id``), the end token ``generate`` stops at, padding masked."""
    tokenizer = getattr(processor, "tokenizer", processor)
    if family == "blip":
        tokens = tokenizer(captions, padding=True, return_tensors="pt")  # [CLS] ... [SEP]
        ids = tokens.input_ids.clone()
        ids[:, 0] = model.config.text_config.bos_token_id
        labels = ids.masked_fill(tokens.attention_mask == 0, -100)
        labels[:, 0] = -100
        pixels = processor(images=images, return_tensors="pt").pixel_values
        return {"pixel_values": pixels, "input_ids": ids, "attention_mask": tokens.attention_mask, "labels": labels}
    if family == "git":
        tokens = tokenizer(captions, padding=True, return_tensors="pt")  # [CLS] ... [SEP], CLS being GIT's bos
        assert (tokens.input_ids[:, 0] == model.generation_config.bos_token_id).all()
        labels = tokens.input_ids.masked_fill(tokens.attention_mask == 0, -100)
        labels[:, 0] = -100
        pixels = processor(images=images, return_tensors="pt").pixel_values
        return {"pixel_values": pixels, "input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask,
                "labels": labels}  # fmt: skip
    end = tokenizer.eos_token_id
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token  # GPT-2 has none: the usual recipe's choice
    tokens = tokenizer([c + tokenizer.eos_token for c in captions], padding=True, return_tensors="pt")
    assert (tokens.input_ids[tokens.attention_mask.bool()] == end).sum() == len(captions)
    labels = tokens.input_ids.masked_fill(tokens.attention_mask == 0, -100)
    pixels = processor.image_processor(images, return_tensors="pt").pixel_values
    return {"pixel_values": pixels, "labels": labels, "decoder_attention_mask": tokens.attention_mask}


@pytest.mark.parametrize("family", ["blip", "git", "vision-encoder-decoder"])
def test_one_step_equals_the_transformers_recipe(family, tiny_models, tmp_path):
    """The loss and gradient norm of mmcli's first step equal the plain recipe's (same seed, same pairs)."""
    from mmcli import loading, train_captioner
    from mmcli.train import TrainOptions
    from mmcli.train.families import FAMILIES

    images = _pictures(len(CAPTIONS))
    folder = tmp_path / "pairs"
    folder.mkdir()
    lines = []
    for index, (image, caption) in enumerate(zip(images, CAPTIONS, strict=True)):
        image.save(folder / f"{index}.png")
        lines.append(json.dumps({"path": str(folder / f"{index}.png"), "caption": caption}))
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    model_path = str(tiny_models[family])
    options = TrainOptions(epochs=1, batch_size=len(CAPTIONS), lr=1e-3, warmup=0.0, seed=5)
    train_captioner(str(tmp_path / "pairs.jsonl"), tmp_path / "out", model=model_path,
                    val=str(tmp_path / "pairs.jsonl"), options=options, dtype="float32")  # fmt: skip
    step = next(line for line in read_log(tmp_path / "out") if "loss" in line)

    recipe = FAMILIES[family]
    model = loading.from_pretrained(recipe.model_class, model_path, model_path, dtype=torch.float32)
    processor = recipe.load_processor(model_path, model_path)
    torch.manual_seed(5)
    model.train()
    order = torch.randperm(len(CAPTIONS), generator=torch.Generator().manual_seed(5 * 100_003 + 1)).tolist()
    batch = _reference_batch(family, model, processor, [images[i] for i in order], [CAPTIONS[i] for i in order])
    loss = model(**batch).loss
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
    assert step["loss"] == pytest.approx(float(loss.detach()), abs=1e-5)
    assert step["grad_norm"] == pytest.approx(float(norm), abs=1e-5, rel=1e-5)


def _train_command(mmcli_exe, corpus, out, *extra):
    return [mmcli_exe, "train", "caption", "--train", str(corpus["small"]), "--model", str(corpus["model"]),
            "-o", str(out), "--epochs", "4", "-b", "8", "--lr", "1e-3", "--save-every", "5", "--seed", "3",
            "--dtype", "float32", *extra]  # fmt: skip


def test_kill_9_mid_epoch_then_the_same_command_ends_with_the_uninterrupted_weights(mmcli_exe, corpus, tmp_path):
    whole = subprocess.run(_train_command(mmcli_exe, corpus, tmp_path / "whole", "-q"), capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "resumed"
    process = subprocess.Popen(_train_command(mmcli_exe, corpus, out, "-q"), stderr=subprocess.PIPE, text=True)
    checkpoint = out / "checkpoint" / "state.json"
    deadline = time.monotonic() + 300
    killed_at = None
    while process.poll() is None and time.monotonic() < deadline:
        try:
            state = json.loads(checkpoint.read_text())
        except (OSError, ValueError):
            state = {}
        if state.get("epoch") == 2 and state.get("position", 0) > 0:  # mid-epoch 2
            process.send_signal(signal.SIGKILL)
            killed_at = state["step"]
            break
        time.sleep(0.02)
    process.wait(timeout=60)
    assert killed_at, "the run ended before it could be killed mid-epoch"
    assert not (out / "train_state.json").exists()
    rerun = subprocess.run(_train_command(mmcli_exe, corpus, out), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming: step " in rerun.stderr, rerun.stderr
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    strip = [{k: v for k, v in line.items() if k != "samples_per_s"} for line in read_log(tmp_path / "whole")]
    assert strip == [{k: v for k, v in line.items() if k != "samples_per_s"} for line in read_log(out)]
    assert not (out / "checkpoint").exists()


def test_other_settings_do_not_resume_and_a_finished_folder_is_kept(mmcli_exe, run_mmcli, corpus, tmp_path):
    out = tmp_path / "run"
    command = _train_command(mmcli_exe, corpus, out, "-q")[1:]
    process = subprocess.Popen([mmcli_exe, *command], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (out / "checkpoint" / "state.json").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    other = run_mmcli(*[part if part != "1e-3" else "2e-3" for part in command])
    assert other.returncode == 2 and "other settings (options.lr was 0.001, now 0.002)" in other.stderr, other.stderr
    done = run_mmcli(*command, "--restart")
    assert done.returncode == 0, done.stderr
    again = run_mmcli(*command)
    assert again.returncode == 2 and "already holds a trained model" in again.stderr


@pytest.mark.parametrize("name", ["blip2", "idefics3", "qwen2_vl", "llava"])
def test_lora_adapters_are_saved_and_the_merged_model_captions(name, run_mmcli, corpus, tiny_models, tmp_path):
    """BLIP-2 and chat models train LoRA adapters on their language model: only its attention projections
    change, the adapter is saved beside the merged weights, and both caption alike."""
    from peft import PeftModel

    from mmcli import load_captioner

    out = tmp_path / name
    base = tiny_models[name]
    refused = run_mmcli("train", "caption", "--train", corpus["small"], "--model", base, "-o", out)
    assert refused.returncode == 2 and "--lora-rank" in refused.stderr, refused.stderr
    run = run_mmcli("train", "caption", "--train", corpus["small"], "--model", base, "-o", out, "--epochs", "2",
                    "-b", "16", "--lr", "1e-2", "--lora-rank", "4", "--max-new-tokens", "8")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (out / "adapter" / "adapter_config.json").exists()
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    losses = [line["loss"] for line in read_log(out) if "loss" in line]
    assert losses[-1] < losses[0] * 0.9, losses  # the answer tokens are learnt
    merged, original = load_file(out / "model.safetensors"), load_file(base / "model.safetensors")
    changed = {key for key in original if not torch.equal(merged[key], original[key])}
    assert changed and all(key.endswith(("q_proj.weight", "v_proj.weight")) for key in changed), sorted(changed)[:5]
    assert not any("vision" in key or "visual" in key for key in changed), sorted(changed)
    picture = corpus["val"].parent / "val" / "00000.png"
    captions = run_mmcli("caption", picture, "--model", out, "--max-new-tokens", "8", "-q")
    assert captions.returncode == 0, captions.stderr
    # the merged weights caption as the base model with the adapter loaded by peft
    adapted = load_captioner(str(base), dtype="float32")
    adapted.model = PeftModel.from_pretrained(adapted.model, out / "adapter").eval()
    expected = adapted.generate([Image.open(picture).convert("RGB")], options=_greedy(8))
    assert json.loads(captions.stdout)["caption"] == expected[0]


def _greedy(tokens):
    from mmcli import GenerationOptions

    return GenerationOptions(max_new_tokens=tokens)


def test_a_chat_batch_puts_only_the_answer_in_the_loss(tiny_models):
    from mmcli.train.families import IGNORE, ChatFamily

    path = str(tiny_models["idefics3"])
    from transformers import AutoModelForImageTextToText

    family = ChatFamily(AutoModelForImageTextToText.from_pretrained(path), ChatFamily.load_processor(path, path))
    captions = ["a cat", "two dogs on the grass"]
    batch = family.batch(_pictures(2), captions, max_length=40)
    _, end = family.start_and_end()
    for row, caption in enumerate(captions):
        answer = batch["labels"][row][batch["labels"][row] != IGNORE].tolist()
        assert answer == [*family.caption_ids(caption, 40), end]
        real = int(batch["attention_mask"][row].sum())
        assert batch["input_ids"][row, real - 1] == end and batch["labels"][row, : real - len(answer)].eq(IGNORE).all()


def test_bad_inputs_are_clear_errors_before_training(run_mmcli, corpus, tiny_models, tmp_path):
    folder = corpus["folder"]
    pairs = [json.loads(line) for line in corpus["small"].read_text().splitlines()][:40]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    listing = tmp_path / "mixed.jsonl"
    records = [{"path": str(folder / p["path"]), "caption": p["caption"]} for p in pairs]
    records += [{"path": str(tmp_path / "missing.png"), "caption": "a thing"},
                {"path": str(broken), "captions": ["a thing", "another"]}]  # fmt: skip
    listing.write_text("".join(json.dumps(record) + "\n" for record in records))
    common = ["--model", corpus["model"], "--epochs", "1", "-b", "8"]
    run = run_mmcli("train", "caption", "--train", listing, "-o", tmp_path / "ok", *common)
    assert run.returncode == 0, run.stderr
    assert "2 skipped" in run.stderr and run.stderr.count("mmcli: skipping") == 2, run.stderr

    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"path": str(tmp_path / "missing.png"), "caption": "a thing"}) + "\n")
    run = run_mmcli("train", "caption", "--train", empty, "-o", tmp_path / "e", *common)
    assert run.returncode == 2 and "no readable image-caption pair in" in run.stderr, run.stderr
    run = run_mmcli("train", "caption", "--train", listing, "--val", empty, "-o", tmp_path / "v", *common)
    assert run.returncode == 2 and "no readable image-caption pair in the validation set" in run.stderr
    nothing = tmp_path / "nothing.jsonl"
    Image.open(folder / pairs[0]["path"]).save(tmp_path / "copy.png")
    blank = {"path": str(tmp_path / "copy.png"), "caption": "\u200b"}  # a zero-width space, and nothing else
    nothing.write_text(listing.read_text() + json.dumps(blank) + "\n")
    run = run_mmcli("train", "caption", "--train", nothing, "-o", tmp_path / "n", *common)
    assert run.returncode == 2 and "tokenises to nothing" in run.stderr, run.stderr
    run = run_mmcli("train", "caption", "--train", listing, "-o", tmp_path / "f", "--model", tiny_models["florence2"])
    assert run.returncode == 2 and "which mmcli cannot train; trainable families: blip, git" in run.stderr, run.stderr
    for name in ("e", "v", "n", "f"):
        assert not (tmp_path / name / "model.safetensors").exists()


def test_python_api_and_relative_paths_from_the_listing_folder(corpus, tmp_path, monkeypatch):
    import mmcli

    monkeypatch.chdir(tmp_path)  # the listing's relative paths resolve from its own folder
    result = mmcli.train_captioner(str(corpus["small"]), tmp_path / "api", model=str(corpus["model"]),
                                   options=mmcli.TrainOptions(epochs=1, batch_size=16), dtype="float32")  # fmt: skip
    assert result.train_pairs + result.val_pairs == 240 and result.val_pairs == 24 and result.skipped == 0
    assert result.steps == 14 and (tmp_path / "api" / "model.safetensors").exists()
    assert os.path.exists(tmp_path / "api" / "train_log.jsonl")


def _quick(run_mmcli, corpus, out, *extra, train=None):
    """A one-epoch run on the small corpus (240 pairs), its result, log and state."""
    run = run_mmcli("train", "caption", "--train", train or corpus["small"], "--model", corpus["model"], "-o", out,
                    "--epochs", "1", "-b", "16", "--lr", "1e-3", *extra)  # fmt: skip
    assert run.returncode == 0, run.stderr
    return run, read_log(out), json.loads((out / "train_state.json").read_text())


def _val_captions(out):
    return [json.loads(line) for line in (out / "val_captions.jsonl").read_text().splitlines()]


def test_schedule_flags_reach_the_loop(run_mmcli, corpus, tmp_path):
    """--grad-accum, --warmup, --lr, --epochs and --batch-size, observed in the logged steps."""
    _, log, _ = _quick(run_mmcli, corpus, tmp_path / "plain", "--warmup", "0")
    steps = [line for line in log if "loss" in line]
    assert len(steps) == 14 and steps[0]["lr"] < 1e-3 and steps[0]["lr"] == pytest.approx(1e-3, rel=0.05)
    _, log, _ = _quick(run_mmcli, corpus, tmp_path / "accum", "--grad-accum", "2", "--warmup", "0.5")
    steps = [line for line in log if "loss" in line]
    assert len(steps) == 7  # 14 batches, two to a step
    peak = max(line["lr"] for line in steps)
    assert steps[0]["lr"] < peak / 2 and peak == pytest.approx(1e-3, rel=0.05)  # warm-up to the peak, then decay


def test_freeze_vision_keeps_the_vision_tower(run_mmcli, corpus, tmp_path):
    before = load_file(corpus["model"] / "model.safetensors")
    _quick(run_mmcli, corpus, tmp_path / "frozen", "--freeze-vision")
    _quick(run_mmcli, corpus, tmp_path / "free")
    for name, frozen in (("frozen", True), ("free", False)):
        after = load_file(tmp_path / name / "model.safetensors")
        vision = [key for key in before if key.startswith("vision_model.")]
        assert vision and all(torch.equal(before[k], after[k]) for k in vision) == frozen, name
        assert not torch.equal(before["text_decoder.cls.predictions.transform.dense.weight"],
                               after["text_decoder.cls.predictions.transform.dense.weight"])  # fmt: skip


def test_weight_decay_and_seed_change_the_weights(run_mmcli, corpus, tmp_path):
    _quick(run_mmcli, corpus, tmp_path / "a", "--seed", "1")
    _quick(run_mmcli, corpus, tmp_path / "b", "--seed", "1")
    _quick(run_mmcli, corpus, tmp_path / "c", "--seed", "2")
    _quick(run_mmcli, corpus, tmp_path / "d", "--seed", "1", "--weight-decay", "0.5")
    weights = {name: load_file(tmp_path / name / "model.safetensors") for name in "abcd"}
    key = "text_decoder.cls.predictions.transform.dense.weight"
    assert torch.equal(weights["a"][key], weights["b"][key])  # one seed, one result
    assert not torch.equal(weights["a"][key], weights["c"][key])
    assert not torch.equal(weights["a"][key], weights["d"][key])
    # the seed also draws the held-out pairs
    assert {r["id"] for r in _val_captions(tmp_path / "a")} != {r["id"] for r in _val_captions(tmp_path / "c")}


def test_patience_stops_when_cider_does_not_improve(run_mmcli, corpus, tmp_path):
    run = run_mmcli("train", "caption", "--train", corpus["small"], "--model", corpus["model"], "-o", tmp_path / "p",
                    "--epochs", "6", "-b", "16", "--lr", "1e-9", "--patience", "1")  # fmt: skip
    assert run.returncode == 0, run.stderr
    state = json.loads((tmp_path / "p" / "train_state.json").read_text())
    assert state["epochs"] == 2 and "stopping early: CIDEr-D has not improved for 1 epochs" in run.stderr


def test_lengths_and_val_fraction(run_mmcli, corpus, tmp_path):
    run, _, state = _quick(run_mmcli, corpus, tmp_path / "short", "--max-new-tokens", "2", "--max-length", "5",
                           "--val-fraction", "0.25")  # fmt: skip
    assert "on 180 pairs (60 for validation)" in run.stderr
    assert all(len(r["caption"].split()) <= 2 for r in _val_captions(tmp_path / "short"))
    assert state["fingerprint"]["options"]["max_length"] == 5

    from mmcli.train.families import BlipFamily

    family = BlipFamily(*_loaded_word_blip(corpus))
    tokens = family.tokens(["a small red square on the left"], max_length=5)
    assert tokens.input_ids.shape == (1, 5) and tokens.input_ids[0, -1] == 3  # [DEC] a small red [SEP]


def _loaded_word_blip(corpus):
    from transformers import BlipForConditionalGeneration, BlipProcessor

    return BlipForConditionalGeneration.from_pretrained(corpus["model"]), BlipProcessor.from_pretrained(corpus["model"])


def test_device_dtype_quiet_and_max_pixels(run_mmcli, corpus, tmp_path):
    run, _, _ = _quick(run_mmcli, corpus, tmp_path / "bf16", "--dtype", "bfloat16", "--device", "cpu")
    assert "training in bfloat16 autocast on cpu" in run.stderr
    run, _, _ = _quick(run_mmcli, corpus, tmp_path / "f32", "--dtype", "float32", "-q")
    assert run.stderr == ""
    if not torch.cuda.is_available():
        refused = run_mmcli("train", "caption", "--train", corpus["small"], "--model", corpus["model"], "-o",
                            tmp_path / "gpu", "--device", "cuda")  # fmt: skip
        assert refused.returncode == 2 and "no CUDA GPU is available" in refused.stderr
    run = run_mmcli("train", "caption", "--train", corpus["small"], "--model", corpus["model"], "-o", tmp_path / "px",
                    "--max-pixels", "1000")  # 64x64 pictures are 4,096 pixels: every one is refused  # fmt: skip
    assert run.returncode == 2 and "no readable image-caption pair" in run.stderr and "pixels" in run.stderr


def test_parquet_columns_and_trust_remote_code(run_mmcli, corpus, tmp_path, monkeypatch):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [json.loads(line) for line in corpus["small"].read_text().splitlines()][:64]
    blobs = []
    for record in records:
        buffer = io.BytesIO()
        Image.open(corpus["folder"] / record["path"]).save(buffer, format="PNG")
        blobs.append(buffer.getvalue())
    table = pa.table({"picture": blobs, "words": [r["caption"] for r in records],
                      "key": [f"row-{i}" for i in range(len(records))]})  # fmt: skip
    pq.write_table(table, tmp_path / "pairs.parquet")
    seen = []
    from mmcli import loading

    real = loading.load_config
    monkeypatch.setattr(loading, "load_config", lambda name, **kw: seen.append(kw) or real(name, **kw))
    run, _, _ = _quick(run_mmcli, corpus, tmp_path / "pq", "--image-column", "picture", "--text-column", "words",
                       "--id-column", "key", "--trust-remote-code", train=tmp_path / "pairs.parquet")  # fmt: skip
    assert "on 58 pairs (6 for validation)" in run.stderr, run.stderr
    assert {r["id"] for r in _val_captions(tmp_path / "pq")} <= {f"row-{i}" for i in range(64)}
    assert seen and seen[0]["trust_remote_code"] is True


def test_pairs_from_stdin_and_from_webdataset_shards(run_mmcli, corpus, tmp_path):
    import tarfile

    records = [json.loads(line) for line in corpus["small"].read_text().splitlines()][:48]
    stdin = "".join(json.dumps({"path": str(corpus["folder"] / r["path"]), "captions": [r["caption"], "a shape"]})
                    + "\n" for r in records)  # fmt: skip
    run = run_mmcli("train", "caption", "--train", "-", "--model", corpus["model"], "-o", tmp_path / "stdin",
                    "--epochs", "1", "-b", "16", input=stdin)  # fmt: skip
    assert run.returncode == 0 and "on 43 pairs (5 for validation)" in run.stderr, run.stderr
    assert _val_captions(tmp_path / "stdin")[0]["references"][1] == "a shape"  # every caption of a record
    shard = tmp_path / "pairs-000000.tar"
    with tarfile.open(shard, "w") as tar:
        for index, record in enumerate(records):
            tar.add(corpus["folder"] / record["path"], arcname=f"s{index:03d}.png")
            text = tmp_path / "caption.txt"
            text.write_text(record["caption"])
            tar.add(text, arcname=f"s{index:03d}.txt")
    run = run_mmcli("train", "caption", "--train", shard, "--model", corpus["model"], "-o", tmp_path / "shard",
                    "--epochs", "1", "-b", "16")  # fmt: skip
    assert run.returncode == 0 and "on 43 pairs (5 for validation)" in run.stderr, run.stderr
    shown = _val_captions(tmp_path / "shard")
    assert all(r["source"].startswith(f"{shard}#s") for r in shown)
    assert {r["references"][0] for r in shown} <= {r["caption"] for r in records}

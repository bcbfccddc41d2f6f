"""One test per command option that no other test proves: each observes something only that option
produces (a changed value, a file, a refusal, a note, what reaches the model), so it fails if the
option is ignored. tests/test_option_audit.py names, for every option, the test that proves it."""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest

from mmcli.output.feature_set import read_feature_set
from mmcli.output.npy import FeatureSetWriter


def jsonl(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def write_set(path, ids, rows, model="m", modality="image"):
    with FeatureSetWriter(path) as writer:
        writer.add(np.asarray(rows, dtype=np.float32),
                   [{"id": i, "modality": modality, "model": model, "source": f"{i}.src"} for i in ids])  # fmt: skip
    return path


@pytest.fixture(scope="module")
def photo_set(tmp_path_factory, run_mmcli, tiny_models, photos):
    """The photos embedded by the tiny CLIP: an index for retrieve and image features for the rest."""
    out = tmp_path_factory.mktemp("photo_set") / "photos.npy"
    done = run_mmcli("extract-features", photos, "-o", out, "--model", tiny_models["clip"], "-q")
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture
def loads(monkeypatch):
    """What reaches the model loader (mmcli.registry): the device and dtype asked for, and whether the
    checkpoint's own code is trusted when its config is read."""
    from mmcli import registry

    seen: dict[str, list] = {"device": [], "dtype": [], "trust_remote_code": []}
    real_device, real_dtype, real_config = registry.resolve_device, registry.resolve_dtype, registry.checkpoint_config

    def device(asked="auto"):
        seen["device"].append(asked)
        return real_device(asked)

    def dtype(asked, on, config=None):
        seen["dtype"].append(asked)
        return real_dtype(asked, on, config)

    def config(name, *, trust_remote_code=False):
        seen["trust_remote_code"].append(trust_remote_code)
        return real_config(name, trust_remote_code=trust_remote_code)

    monkeypatch.setattr(registry, "resolve_device", device)
    monkeypatch.setattr(registry, "resolve_dtype", dtype)
    monkeypatch.setattr(registry, "checkpoint_config", config)
    return seen


@pytest.fixture
def model_calls(monkeypatch):
    """How many items each model call got: captioner generate calls and encoder forward passes."""
    from mmcli.captioners.base import Captioner
    from mmcli.encoders.base import Encoder

    sizes: list[int] = []
    generate, embed = Captioner.generate, Encoder.embed_preprocessed

    def counted_generate(self, images, *args, **kwargs):
        sizes.append(len(images))
        return generate(self, images, *args, **kwargs)

    def counted_embed(self, inputs, *args, **kwargs):
        sizes.append(len(inputs))
        return embed(self, inputs, *args, **kwargs)

    monkeypatch.setattr(Captioner, "generate", counted_generate)
    monkeypatch.setattr(Encoder, "embed_preprocessed", counted_embed)
    return sizes


@pytest.fixture
def text_calls(monkeypatch):
    """How many texts each call of an encoder's text tower got."""
    from mmcli.encoders.base import Encoder

    sizes: list[int] = []
    real = Encoder.embed_texts

    def counted(self, values, *args, **kwargs):
        sizes.append(len(values))
        return real(self, values, *args, **kwargs)

    monkeypatch.setattr(Encoder, "embed_texts", counted)
    return sizes


@pytest.fixture
def decodes(monkeypatch):
    """Each image decode: the name of the thread it ran on and the reduced-scale ``min_side`` it was given."""
    from mmcli import caption, extract

    seen: list[tuple[str, object]] = []
    real = extract.load_image

    def spy(path, *args, **kwargs):
        seen.append((threading.current_thread().name, kwargs.get("min_side")))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(extract, "load_image", spy)
    monkeypatch.setattr(caption, "load_image", spy)
    return seen


MODEL_COMMANDS = ["caption", "classify", "extract-features", "retrieve", "evaluate captions", "transcribe"]


def model_command(name, tiny_models, photos, photo_set, tmp_path):
    """A quick run of a command that loads a model, on one photo (or the photo set)."""
    photo = photos / "coffee.jpg"
    if name == "caption":
        return ["caption", photo, "--model", tiny_models["blip"], "--max-new-tokens", "3"]
    if name == "classify":
        return ["classify", photo, "--labels", "cat,dog", "--model", tiny_models["clip"]]
    if name == "extract-features":
        return ["extract-features", photo, "-o", tmp_path / "out.npy", "--model", tiny_models["clip"], "--overwrite"]
    if name == "retrieve":
        return ["retrieve", "--index", photo_set, "--query", "a cat"]
    if name == "transcribe":
        from audio_media import speech_like, write_wav

        speech = write_wav(tmp_path / "speech.wav", speech_like(3.0, 16_000), 16_000)
        return ["transcribe", speech, "--model", tiny_models["whisper"]]
    pred = write_jsonl(tmp_path / "pred.jsonl", [{"id": "coffee.jpg", "caption": "a cup"}])
    refs = write_jsonl(tmp_path / "refs.jsonl", [{"id": "coffee.jpg", "captions": ["coffee in a cup"]}])
    return ["evaluate", "captions", "--pred", pred, "--refs", refs, "--metrics", "bleu", "--clipscore",
            "--images", photos, "--model", tiny_models["clip"]]  # fmt: skip


def test_version_prints_the_version_and_nothing_else(run_mmcli):
    from mmcli import __version__

    done = run_mmcli("--version")
    assert done.returncode == 0 and done.stdout == f"mmcli {__version__}\n"
    assert "Usage" in run_mmcli().stdout + run_mmcli().stderr  # without it: the help, not the version


# -- flags every model command shares -------------------------------------------------------------


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_device_reaches_the_loader_and_an_absent_gpu_is_refused(
    command, run_mmcli, tiny_models, photos, photo_set, tmp_path, loads, monkeypatch
):
    import torch

    args = model_command(command, tiny_models, photos, photo_set, tmp_path)
    on_cpu = run_mmcli(*args, "--device", "cpu")
    assert on_cpu.returncode == 0, on_cpu.stderr
    assert loads["device"] == ["cpu"]  # the default asks for "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    cuda = run_mmcli(*args, "--device", "cuda")
    assert cuda.returncode == 2 and "--device cuda was asked for, but no CUDA GPU" in cuda.stderr
    mps = run_mmcli(*args, "--device", "mps")
    assert mps.returncode == 2 and "--device mps was asked for" in mps.stderr


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_dtype_reaches_the_loader(command, run_mmcli, tiny_models, photos, photo_set, tmp_path, loads):
    args = model_command(command, tiny_models, photos, photo_set, tmp_path)
    plain = run_mmcli(*args)
    assert plain.returncode == 0, plain.stderr
    assert loads["dtype"] == ["float32"]  # MMCLI_DTYPE, as the suite sets it
    loads["dtype"].clear()
    done = run_mmcli(*args, "--dtype", "bfloat16")
    assert done.returncode == 0, done.stderr
    assert loads["dtype"] == ["bfloat16"]


def test_dtype_changes_the_rows(run_mmcli, tiny_models, photos, photo_set, tmp_path):
    out = tmp_path / "bf16.npy"
    done = run_mmcli("extract-features", photos, "-o", out, "--model", tiny_models["clip"], "--dtype", "bfloat16")
    assert done.returncode == 0, done.stderr
    low, full = read_feature_set(out).vectors, read_feature_set(photo_set).vectors
    assert not np.array_equal(low, full)
    np.testing.assert_allclose(low, full, atol=0.05)  # the same model, in coarser numerics


@pytest.mark.parametrize("command", ["caption", "classify", "extract-features", "retrieve", "transcribe"])
def test_trust_remote_code_reaches_the_config_loader(
    command, run_mmcli, tiny_models, photos, photo_set, tmp_path, loads
):
    args = model_command(command, tiny_models, photos, photo_set, tmp_path)
    assert run_mmcli(*args).returncode == 0
    # every read of the config (what files the model reads, then its family) asks the same
    assert loads["trust_remote_code"] and set(loads["trust_remote_code"]) == {False}
    loads["trust_remote_code"].clear()
    done = run_mmcli(*args, "--trust-remote-code")
    assert done.returncode == 0, done.stderr
    assert loads["trust_remote_code"] and set(loads["trust_remote_code"]) == {True}


def test_quantize_makes_linear_layers_int8(run_mmcli, tiny_models, photos, photo_set, tmp_path):
    for command in ("caption", "classify"):
        args = model_command(command, tiny_models, photos, photo_set, tmp_path)
        refused = run_mmcli(*args, "--quantize", "int8", "--dtype", "bfloat16")
        assert refused.returncode == 2 and "--quantize int8 quantizes float32 weights" in refused.stderr
    plain = run_mmcli("classify", photos, "--labels", "cat,dog,cup", "--model", tiny_models["clip"])
    quantized = run_mmcli("classify", photos, "--labels", "cat,dog,cup", "--model", tiny_models["clip"],
                          "--quantize", "int8")  # fmt: skip
    assert plain.returncode == quantized.returncode == 0, quantized.stderr
    scores = [[r["scores"][k] for k in sorted(r["scores"])] for r in jsonl(plain.stdout)]
    int8 = [[r["scores"][k] for k in sorted(r["scores"])] for r in jsonl(quantized.stdout)]
    assert scores != int8
    np.testing.assert_allclose(scores, int8, atol=0.05)


@pytest.mark.parametrize("command", ["caption", "classify", "extract-features"])
def test_batch_size_is_the_items_per_model_call(
    command, run_mmcli, tiny_models, photos, photo_set, tmp_path, model_calls
):
    args = model_command(command, tiny_models, photos, photo_set, tmp_path)
    args[1] = photos  # all four photos
    done = run_mmcli(*args, "--batch-size", "3", "--quiet")
    assert done.returncode == 0, done.stderr
    assert model_calls == [3, 1]
    model_calls.clear()
    assert run_mmcli(*args, "--quiet").returncode == 0
    assert model_calls == [4]  # the CPU default (8 or 16) takes them in one call


def test_retrieve_batch_size_is_the_queries_per_model_call(run_mmcli, photo_set, text_calls):
    queries = [arg for text in ("a cat", "a dog", "a cup") for arg in ("--query", text)]
    done = run_mmcli("retrieve", "--index", photo_set, *queries, "--batch-size", "2")
    assert done.returncode == 0, done.stderr
    assert text_calls == [2, 1]
    text_calls.clear()
    assert run_mmcli("retrieve", "--index", photo_set, *queries).returncode == 0
    assert text_calls == [3]


@pytest.mark.parametrize("command", ["caption", "classify", "extract-features"])
def test_workers_decode_in_threads_and_zero_in_the_calling_thread(
    command, run_mmcli, tiny_models, photos, photo_set, tmp_path, decodes
):
    args = model_command(command, tiny_models, photos, photo_set, tmp_path)
    args[1] = photos
    inline = run_mmcli(*args, "--workers", "0")
    assert inline.returncode == 0, inline.stderr
    assert [thread for thread, _ in decodes] == ["mmcli-feed"] * 4  # the feeder decodes them itself
    decodes.clear()
    threaded = run_mmcli(*args, "--workers", "2")
    assert threaded.returncode == 0, threaded.stderr
    threads = {thread for thread, _ in decodes}
    assert len(decodes) == 4 and all(thread.startswith("mmcli-prepare") for thread in threads)
    assert jsonl(threaded.stdout) == jsonl(inline.stdout)  # the same records either way


@pytest.mark.parametrize("command", ["caption", "classify", "extract-features"])
def test_exact_decode_turns_reduced_scale_decoding_off(
    command, run_mmcli, tiny_models, photos, photo_set, tmp_path, decodes
):
    args = model_command(command, tiny_models, photos, photo_set, tmp_path)
    reduced = run_mmcli(*args, env={"MMCLI_EXACT_DECODE": "0"})
    assert reduced.returncode == 0, reduced.stderr
    assert [side for _, side in decodes] == [64]  # twice the tiny models' 32-pixel input
    decodes.clear()
    exact = run_mmcli(*args, "--exact-decode", env={"MMCLI_EXACT_DECODE": "0"})
    assert exact.returncode == 0, exact.stderr
    assert [side for _, side in decodes] == [None]


@pytest.mark.parametrize("command", ["caption", "classify", "extract-features"])
def test_max_pixels_refuses_larger_images(command, run_mmcli, tiny_models, photos, photo_set, tmp_path):
    args = model_command(command, tiny_models, photos, photo_set, tmp_path)
    done = run_mmcli(*args, "--max-pixels", "1000")
    assert done.returncode == 1
    assert "skipping" in done.stderr and "--max-pixels" in done.stderr
    assert run_mmcli(*args).returncode == 0


@pytest.mark.parametrize("command", ["caption", "classify"])
def test_on_error_fail_stops_at_the_bad_item(command, run_mmcli, tiny_models, photos, photo_set, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not a JPEG")
    args = model_command(command, tiny_models, photos, photo_set, tmp_path)
    args[1:2] = [bad, photos / "rocket.jpg"]
    skipped = run_mmcli(*args, "--workers", "0")
    assert skipped.returncode == 1 and len(jsonl(skipped.stdout)) == 2  # an error record, then the photo
    stopped = run_mmcli(*args, "--workers", "0", "--on-error", "fail")
    assert stopped.returncode == 1 and "on-error fail" in stopped.stderr
    assert not any("caption" in r or "label" in r for r in jsonl(stopped.stdout))


@pytest.mark.parametrize("command", ["caption", "classify", "extract-features", "fuse", "index build", "transcribe"])
def test_quiet_silences_the_summary(command, run_mmcli, tiny_models, photos, photo_set, tmp_path):
    if command == "fuse":
        args = ["fuse", photo_set, photo_set, "-o", tmp_path / "fused.npy", "--overwrite"]
    elif command == "index build":
        args = ["index", "build", photo_set, "--overwrite"]
        shutil.copy(photo_set, tmp_path / "set.npy")
        shutil.copy(photo_set.with_suffix(".jsonl"), tmp_path / "set.jsonl")
        args[2] = tmp_path / "set.npy"
    else:
        args = model_command(command, tiny_models, photos, photo_set, tmp_path)
    loud = run_mmcli(*args)
    assert loud.returncode == 0, loud.stderr
    assert loud.stderr.startswith("mmcli: ")
    quiet = run_mmcli(*args, "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_retrieve_quiet_silences_the_summary(run_mmcli, photo_set):
    loud = run_mmcli("retrieve", "--index", photo_set, "--queries", photo_set, "-k", "1")
    assert loud.returncode == 0 and "mmcli: searched 4 rows for 4 queries" in loud.stderr
    quiet = run_mmcli("retrieve", "--index", photo_set, "--queries", photo_set, "-k", "1", "-q")
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == loud.stdout


# -- caption ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def blip_captions(run_mmcli, tiny_models, photos):
    """Greedy captions of the four photos by the tiny BLIP at the default settings (30 new tokens)."""

    def captions(*extra):
        done = run_mmcli("caption", photos, "--model", tiny_models["blip"], "--format", "text", "-q", *extra)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    return captions


def test_caption_max_new_tokens_shortens_every_caption(blip_captions, tiny_models, images):
    from mmcli.captioners import GenerationOptions, load_captioner

    default, short = blip_captions(), blip_captions("--max-new-tokens", "3")
    assert all(len(s) < len(d) for s, d in zip(short, default, strict=True))
    captioner = load_captioner(str(tiny_models["blip"]), device="cpu")
    assert short == captioner.generate(images, None, GenerationOptions(max_new_tokens=3))


@pytest.fixture
def generate_kwargs(monkeypatch):
    """The keyword arguments each call of transformers' generate received."""
    from transformers.generation.utils import GenerationMixin

    seen: list[dict] = []
    real = GenerationMixin.generate

    def spy(self, *args, **kwargs):
        seen.append(kwargs)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", spy)
    return seen


def test_caption_min_new_tokens_reaches_generate(run_mmcli, tiny_models, photos, generate_kwargs):
    # The random tiny BLIP never ends a caption early, so the floor shows only in what generate is given.
    args = ["caption", photos / "coffee.jpg", "--model", tiny_models["blip"], "--max-new-tokens", "6"]
    assert run_mmcli(*args).returncode == 0
    assert all(kwargs.get("min_new_tokens") is None for kwargs in generate_kwargs)
    generate_kwargs.clear()
    assert run_mmcli(*args, "--min-new-tokens", "5").returncode == 0
    assert [kwargs["min_new_tokens"] for kwargs in generate_kwargs] == [5]


def test_caption_num_beams_changes_the_captions(blip_captions, run_mmcli, tiny_models, photos, generate_kwargs):
    assert blip_captions("--num-beams", "3") != blip_captions()
    assert [kwargs["num_beams"] for kwargs in generate_kwargs] == [3, 1]


def test_caption_repetition_penalty_changes_the_captions(blip_captions, generate_kwargs):
    assert blip_captions("--repetition-penalty", "5") != blip_captions()
    assert generate_kwargs[0]["repetition_penalty"] == 5.0 and "repetition_penalty" not in generate_kwargs[1]


def test_caption_temperature_samples_instead_of_greedy(blip_captions):
    greedy = blip_captions("--seed", "1")  # a seed alone changes nothing: greedy decoding draws nothing
    assert greedy == blip_captions()
    assert blip_captions("--temperature", "1.0", "--seed", "1") != greedy


def test_caption_seed_makes_sampling_reproducible(blip_captions):
    first = blip_captions("--temperature", "1.0", "--seed", "1")
    assert blip_captions("--temperature", "1.0", "--seed", "1") == first
    assert blip_captions("--temperature", "1.0", "--seed", "2") != first


def test_caption_top_p_cuts_the_nucleus(blip_captions):
    # A nucleus of probability 0.01 holds only the likeliest token: sampling becomes greedy decoding.
    sampled = blip_captions("--temperature", "1.0", "--seed", "2")
    assert blip_captions("--temperature", "1.0", "--seed", "2", "--top-p", "0.01") == blip_captions() != sampled


def test_caption_prompt_conditions_the_captions(blip_captions, tiny_models, images):
    from mmcli.captioners import GenerationOptions, load_captioner

    prompted = blip_captions("--prompt", "a photo of")
    assert prompted != blip_captions()
    captioner = load_captioner(str(tiny_models["blip"]), device="cpu")
    assert prompted == captioner.generate(images, "a photo of", GenerationOptions())


def test_caption_restart_discards_an_interrupted_runs_progress(run_mmcli, tiny_models, photos, tmp_path,
                                                               monkeypatch):  # fmt: skip
    from mmcli.captioners.base import Captioner

    out = tmp_path / "captions.jsonl"
    args = ["caption", photos, "-o", out, "--model", tiny_models["blip"], "-b", "1", "--workers", "0",
            "--max-new-tokens", "3"]  # fmt: skip
    real, calls = Captioner.generate, []

    def interrupted(self, images, *rest, **kwargs):
        calls.append(len(images))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, images, *rest, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Captioner, "generate", interrupted)
        killed = run_mmcli(*args)
    assert killed.returncode == 130 and (tmp_path / "captions.partial").is_dir()
    other = run_mmcli(*args[:-1], "4")
    assert other.returncode == 2 and "--restart" in other.stderr
    restarted = run_mmcli(*args[:-1], "4", "--restart")
    assert restarted.returncode == 0, restarted.stderr
    assert "resuming" not in restarted.stderr and len(jsonl(out.read_text())) == 4


def test_caption_keep_missing_keeps_the_records_of_vanished_files(run_mmcli, tiny_models, photos, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    out = tmp_path / "captions.jsonl"
    args = ["caption", folder, "-o", out, "--model", tiny_models["blip"], "--max-new-tokens", "3"]
    assert run_mmcli(*args, "-q").returncode == 0
    before = jsonl(out.read_text())
    (folder / "chelsea.jpg").unlink()
    kept = run_mmcli(*args, "--update", "--keep-missing")
    assert kept.returncode == 0, kept.stderr
    assert "1 records of vanished files kept" in kept.stderr
    after = jsonl(out.read_text())
    assert after[-1] == before[1] and len(after) == 4
    dropped = run_mmcli(*args, "--update")
    assert dropped.returncode == 0 and str(folder / "chelsea.jpg") not in out.read_text()


@pytest.fixture(scope="module")
def scene_video(tmp_path_factory):
    from test_video_caption import scenes
    from test_video_media import write_video

    path = tmp_path_factory.mktemp("video") / "scenes.mp4"
    write_video(path, scenes, fps=10, duration=5.0)
    return path


def caption_video(run_mmcli, tiny_models, video, *extra):
    done = run_mmcli("caption", video, "--model", tiny_models["blip"], "--max-new-tokens", "3", "--no-summary",
                     "-b", "1", *extra)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return jsonl(done.stdout)


def test_caption_video_sampling_flags_pick_the_frames(run_mmcli, tiny_models, scene_video,
                                                                  model_calls):  # fmt: skip
    keyframes = caption_video(run_mmcli, tiny_models, scene_video)
    assert len(model_calls) == 5  # a frame per scene: the cuts at 1, 2, 3 and 4 seconds
    model_calls.clear()
    caption_video(run_mmcli, tiny_models, scene_video, "--scene-threshold", "0.99")
    assert 1 <= len(model_calls) < 5  # only the starkest cuts score 0.99
    model_calls.clear()
    caption_video(run_mmcli, tiny_models, scene_video, "--end", "2.5")
    assert len(model_calls) == 3  # the scenes that start before 2.5 s
    model_calls.clear()
    late = caption_video(run_mmcli, tiny_models, scene_video, "--start", "2")
    assert len(model_calls) == 3 and late[0]["t"] == pytest.approx(2.0, abs=0.11)  # the scenes from 2 s on
    model_calls.clear()
    caption_video(run_mmcli, tiny_models, scene_video, "--fps", "2")
    assert len(model_calls) == 10  # a frame every half second instead of one per scene
    model_calls.clear()
    frames = caption_video(run_mmcli, tiny_models, scene_video, "--frames", "2")
    assert len(model_calls) == 2
    assert frames[0]["t"] == 0.0 and frames[-1]["end"] == pytest.approx(5.0, abs=1e-3)
    assert keyframes[0]["t"] == 0.0


# -- classify ---------------------------------------------------------------------------------------


def test_classify_labels_file_adds_its_lines(run_mmcli, tiny_models, photos, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("rocket\ncup\n")
    done = run_mmcli("classify", photos / "coffee.jpg", "--labels", "cat", "--labels-file", labels,
                     "--model", tiny_models["clip"])  # fmt: skip
    assert done.returncode == 0, done.stderr
    (record,) = jsonl(done.stdout)
    assert set(record["scores"]) == {"cat", "rocket", "cup"}


def test_classify_template_changes_the_scores(run_mmcli, tiny_models, photos):
    args = ["classify", photos / "coffee.jpg", "--labels", "cat,dog,cup", "--model", tiny_models["clip"]]
    plain, templated = run_mmcli(*args), run_mmcli(*args, "--template", "a drawing of the {}, two people")
    assert plain.returncode == templated.returncode == 0, templated.stderr
    assert jsonl(plain.stdout)[0]["scores"] != jsonl(templated.stdout)[0]["scores"]


def test_classify_output_and_overwrite(run_mmcli, tiny_models, photos, tmp_path):
    out = tmp_path / "pred.jsonl"
    args = ["classify", photos / "coffee.jpg", "--labels", "cat,dog", "--model", tiny_models["clip"], "-o", out]
    done = run_mmcli(*args)
    assert done.returncode == 0 and done.stdout == "" and jsonl(out.read_text())[0]["label"] in {"cat", "dog"}
    out.write_text("old\n")
    refused = run_mmcli(*args)
    assert refused.returncode == 2 and "--overwrite" in refused.stderr and out.read_text() == "old\n"
    assert run_mmcli(*args, "--overwrite").returncode == 0 and out.read_text() != "old\n"


def test_classify_quiet_silences_the_summary(run_mmcli, tiny_models, photos):
    args = ["classify", photos / "coffee.jpg", "--labels", "cat,dog", "--model", tiny_models["clip"]]
    assert "mmcli: classified 1 input into 2 labels" in run_mmcli(*args).stderr
    assert run_mmcli(*args, "-q").stderr == ""


# -- extract-features -------------------------------------------------------------------------------


def test_extract_quiet_silences_the_summary(run_mmcli, tiny_models, photos, tmp_path):
    args = ["extract-features", photos / "coffee.jpg", "-o", tmp_path / "o.npy", "--model", tiny_models["clip"],
            "--overwrite"]  # fmt: skip
    assert "mmcli: wrote 1 rows" in run_mmcli(*args).stderr
    assert run_mmcli(*args, "--quiet").stderr == ""


def test_extract_scene_threshold_sets_the_cuts(run_mmcli, tiny_models, scene_video, tmp_path):
    out = tmp_path / "frames.npy"
    args = ["extract-features", scene_video, "-o", out, "--model", tiny_models["clip"], "--pool", "none",
            "--keyframes", "--overwrite", "-q"]  # fmt: skip
    assert run_mmcli(*args).returncode == 0
    assert len(read_feature_set(out)) == 5
    assert run_mmcli(*args, "--scene-threshold", "0.99").returncode == 0
    assert 1 <= len(read_feature_set(out)) < 5  # only the starkest cuts score 0.99


def test_extract_end_stops_the_sampling(run_mmcli, tiny_models, scene_video, tmp_path):
    out = tmp_path / "frames.npy"
    args = ["extract-features", scene_video, "-o", out, "--model", tiny_models["clip"], "--pool", "none",
            "--fps", "1", "--overwrite", "-q"]  # fmt: skip
    assert run_mmcli(*args).returncode == 0
    assert len(read_feature_set(out)) == 5
    assert run_mmcli(*args, "--end", "2.5").returncode == 0
    assert [r["t"] for r in read_feature_set(out).records] == pytest.approx([0.0, 1.0, 2.0], abs=1e-3)


# -- fuse -------------------------------------------------------------------------------------------


@pytest.fixture
def two_sets(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"item{i}" for i in range(6)]
    a = write_set(tmp_path / "a.npy", ids, rng.standard_normal((6, 4)) * 3, model="ma")
    b = write_set(tmp_path / "b.npy", ids[::-1], rng.standard_normal((6, 4)) * 3, model="mb")
    return a, b


def fused(run_mmcli, out, *args):
    done = run_mmcli("fuse", *args, "-o", out, "--overwrite")
    assert done.returncode == 0, done.stderr
    return read_feature_set(out)


def test_fuse_align_row_pairs_rows_by_position(run_mmcli, two_sets, tmp_path):
    a, b = two_sets
    by_id = fused(run_mmcli, tmp_path / "id.npy", a, b)
    by_row = fused(run_mmcli, tmp_path / "row.npy", a, b, "--align", "row")
    assert by_id.ids == by_row.ids
    assert not np.allclose(by_id.vectors[:, 4:], by_row.vectors[:, 4:])
    raw_b = read_feature_set(b).vectors
    np.testing.assert_allclose(by_row.vectors[0, 4:] / np.linalg.norm(by_row.vectors[0, 4:]),
                               raw_b[0] / np.linalg.norm(raw_b[0]), atol=1e-5)  # fmt: skip


def test_fuse_strict_refuses_ids_missing_from_an_input(run_mmcli, two_sets, tmp_path):
    a, _ = two_sets
    partial = write_set(tmp_path / "partial.npy", ["item0", "item1"], np.ones((2, 4)))
    loose = run_mmcli("fuse", a, partial, "-o", tmp_path / "loose.npy")
    assert loose.returncode == 0 and len(read_feature_set(tmp_path / "loose.npy")) == 2
    strict = run_mmcli("fuse", a, partial, "-o", tmp_path / "strict.npy", "--strict")
    assert strict.returncode == 2 and "--strict" in strict.stderr and not (tmp_path / "strict.npy").exists()


def test_fuse_weights_weigh_the_inputs(run_mmcli, two_sets, tmp_path):
    a, b = two_sets
    heavy_a = fused(run_mmcli, tmp_path / "wa.npy", a, b, "--method", "weighted", "--weights", "0.9,0.1")
    heavy_b = fused(run_mmcli, tmp_path / "wb.npy", a, b, "--method", "weighted", "--weights", "0.1,0.9")
    assert not np.allclose(heavy_a.vectors, heavy_b.vectors)


def test_fuse_no_normalize_keeps_raw_scale(run_mmcli, two_sets, tmp_path):
    a, b = two_sets
    unit = fused(run_mmcli, tmp_path / "n.npy", a, b)
    raw = fused(run_mmcli, tmp_path / "r.npy", a, b, "--no-normalize")
    np.testing.assert_allclose(np.linalg.norm(unit.vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(np.linalg.norm(raw.vectors, axis=1), 1.0, atol=1e-2)


def test_fuse_storage_float16(run_mmcli, two_sets, tmp_path):
    a, b = two_sets
    fused(run_mmcli, tmp_path / "h.npy", a, b, "--output-dtype", "float16")
    assert np.load(tmp_path / "h.npy").dtype == np.float16
    fused(run_mmcli, tmp_path / "f.npy", a, b)
    assert np.load(tmp_path / "f.npy").dtype == np.float32


def test_fuse_overwrite_and_quiet(run_mmcli, two_sets, tmp_path):
    a, b = two_sets
    out = tmp_path / "o.npy"
    first = run_mmcli("fuse", a, b, "-o", out)
    assert first.returncode == 0 and "mmcli: fused 6 rows" in first.stderr
    refused = run_mmcli("fuse", a, b, "-o", out, "-q")
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    again = run_mmcli("fuse", a, b, "-o", out, "--overwrite", "-q")
    assert again.returncode == 0 and again.stderr == ""


@pytest.fixture
def labelled(tmp_path):
    """Two 4-wide sets of 40 items whose label is the sign of the first column of the first set."""
    rng = np.random.default_rng(1)
    ids = [f"item{i:02d}" for i in range(40)]
    rows_a, rows_b = rng.standard_normal((40, 4)), rng.standard_normal((40, 4))
    a, b = write_set(tmp_path / "a.npy", ids, rows_a), write_set(tmp_path / "b.npy", ids, rows_b)
    truth = [{"id": i, "label": "pos" if row[0] > 0 else "neg"} for i, row in zip(ids, rows_a, strict=True)]
    labels = write_jsonl(tmp_path / "labels.jsonl", truth)
    return a, b, labels


def train(run_mmcli, labelled, out, *extra):
    a, b, labels = labelled
    done = run_mmcli("fuse", a, b, "--truth", labels, "--method", "mlp", "-o", out, "--overwrite", "--hidden", "8",
                     *extra)  # fmt: skip
    assert done.returncode == 0, done.stderr
    epochs = [line for line in done.stderr.splitlines() if line.startswith("epoch")]
    return read_feature_set(out).vectors, epochs, done.stderr


def test_fuse_epochs_is_the_most_training_epochs(run_mmcli, labelled, tmp_path):
    _, epochs, _ = train(run_mmcli, labelled, tmp_path / "o.npy", "--epochs", "3", "--patience", "50")
    assert len(epochs) == 3


def test_fuse_patience_stops_training_early(run_mmcli, labelled, tmp_path):
    # With a vanishing learning rate the validation loss hardly moves: patience runs out long before 30 epochs.
    _, patient, _ = train(run_mmcli, labelled, tmp_path / "o.npy", "--epochs", "30", "--lr", "1e-9", "--patience", "30")
    _, epochs, _ = train(run_mmcli, labelled, tmp_path / "o.npy", "--epochs", "30", "--lr", "1e-9", "--patience", "2")
    assert len(patient) == 30 and len(epochs) < 30


def test_fuse_lr_sets_the_step(run_mmcli, labelled, tmp_path):
    still, _, _ = train(run_mmcli, labelled, tmp_path / "still.npy", "--epochs", "3", "--lr", "1e-9")
    moved, _, _ = train(run_mmcli, labelled, tmp_path / "moved.npy", "--epochs", "3", "--lr", "0.05")
    assert not np.allclose(still, moved)


def test_fuse_hidden_is_the_width_of_the_fused_rows(run_mmcli, labelled, tmp_path):
    narrow, _, _ = train(run_mmcli, labelled, tmp_path / "n.npy", "--epochs", "1")
    wide, _, _ = train(run_mmcli, labelled, tmp_path / "w.npy", "--epochs", "1", "--hidden", "16")
    assert narrow.shape == (40, 8) and wide.shape == (40, 16)


def test_fuse_batch_size_changes_the_training(run_mmcli, labelled, tmp_path):
    whole, _, _ = train(run_mmcli, labelled, tmp_path / "out_a.npy", "--epochs", "2")
    steps, _, _ = train(run_mmcli, labelled, tmp_path / "out_b.npy", "--epochs", "2", "--train-batch-size", "4")
    assert not np.allclose(whole, steps)


def test_fuse_val_fraction_zero_trains_without_validation(run_mmcli, labelled, tmp_path):
    _, _, held_out = train(run_mmcli, labelled, tmp_path / "out_a.npy", "--epochs", "2")
    _, epochs, none = train(run_mmcli, labelled, tmp_path / "out_b.npy", "--epochs", "2", "--val-fraction", "0")
    assert "best validation loss" in held_out and "no validation split" in none
    assert not any("val loss" in line for line in epochs)


def test_fuse_seed_makes_training_reproducible(run_mmcli, labelled, tmp_path):
    one, _, _ = train(run_mmcli, labelled, tmp_path / "out_a.npy", "--epochs", "2", "--seed", "1")
    again, _, _ = train(run_mmcli, labelled, tmp_path / "out_b.npy", "--epochs", "2", "--seed", "1")
    other, _, _ = train(run_mmcli, labelled, tmp_path / "out_c.npy", "--epochs", "2", "--seed", "2")
    np.testing.assert_array_equal(one, again)
    assert not np.allclose(one, other)


def test_fuse_quiet_hides_the_training_log(run_mmcli, labelled, tmp_path):
    _, epochs, stderr = train(run_mmcli, labelled, tmp_path / "out_a.npy", "--epochs", "2", "-q")
    assert stderr == "" and epochs == []


@pytest.fixture
def result_lists(tmp_path):
    def run_file(name, hits):
        record = {"query_id": "q1", "query": "a cat",
                  "hits": [{"rank": r, "id": i, "score": s} for r, (i, s) in enumerate(hits, 1)]}  # fmt: skip
        return write_jsonl(tmp_path / name, [record])

    return run_file("one.jsonl", [("a", 0.9), ("b", 0.8), ("c", 0.1)]), run_file("two.jsonl", [("b", 0.7), ("c", 0.6)])


def late(run_mmcli, *args):
    done = run_mmcli("fuse", "--results", *args)
    assert done.returncode == 0, done.stderr
    return jsonl(done.stdout)[0]["hits"]


def test_fuse_top_k_keeps_the_best_fused_hits(run_mmcli, result_lists):
    assert len(late(run_mmcli, *result_lists)) == 3
    assert [h["id"] for h in late(run_mmcli, *result_lists, "--top-k", "1")] == ["b"]


def test_fuse_rrf_k_is_the_rrf_constant(run_mmcli, result_lists):
    default = late(run_mmcli, *result_lists)
    assert default[0]["score"] == round(1 / 62 + 1 / 61, 6)
    small = late(run_mmcli, *result_lists, "--rrf-k", "1")
    assert small[0]["score"] == round(1 / 3 + 1 / 2, 6)


def test_fuse_weights_weigh_result_lists(run_mmcli, result_lists):
    even = late(run_mmcli, *result_lists)
    tilted = late(run_mmcli, *result_lists, "--weights", "1,0")
    assert even[0]["id"] == "b" and tilted[0]["id"] == "a"


def test_fuse_results_output_file(run_mmcli, result_lists, tmp_path):
    out = tmp_path / "fused.jsonl"
    done = run_mmcli("fuse", "--results", *result_lists, "-o", out)
    assert done.returncode == 0 and done.stdout == "" and jsonl(out.read_text())[0]["query_id"] == "q1"


# -- retrieve ---------------------------------------------------------------------------------------


def test_retrieve_threshold_drops_lower_hits(run_mmcli, photo_set):
    everything = jsonl(run_mmcli("retrieve", "--index", photo_set, "--query", "a cat").stdout)[0]["hits"]
    scores = sorted(hit["score"] for hit in everything)
    cut = (scores[1] + scores[2]) / 2
    kept = jsonl(run_mmcli("retrieve", "--index", photo_set, "--query", "a cat", "--threshold", str(cut)).stdout)
    assert [hit["id"] for hit in kept[0]["hits"]] == [hit["id"] for hit in everything[:2]]


def test_retrieve_with_metadata_adds_record_keys(run_mmcli, photo_set):
    plain = jsonl(run_mmcli("retrieve", "--index", photo_set, "--query", "a cat", "-k", "1").stdout)[0]["hits"][0]
    rich = jsonl(run_mmcli("retrieve", "--index", photo_set, "--query", "a cat", "-k", "1",
                           "--with-metadata").stdout)[0]["hits"][0]  # fmt: skip
    assert set(plain) == {"rank", "id", "score", "source"}
    assert rich["modality"] == "image" and "model" in rich and set(rich) > set(plain)


def test_retrieve_output_and_overwrite(run_mmcli, photo_set, tmp_path):
    out = tmp_path / "hits.jsonl"
    args = ["retrieve", "--index", photo_set, "--query", "a cat", "-o", out]
    done = run_mmcli(*args)
    assert done.returncode == 0 and done.stdout == "" and jsonl(out.read_text())[0]["query"] == "a cat"
    refused = run_mmcli(*args)
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    assert run_mmcli(*args, "--overwrite").returncode == 0


def test_retrieve_model_embeds_the_queries(run_mmcli, photo_set, tiny_models, tmp_path):
    missing = run_mmcli("retrieve", "--index", photo_set, "--query", "a cat", "--model", tmp_path / "nowhere")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    other = run_mmcli("retrieve", "--index", photo_set, "--query", "a cat", "--model", tiny_models["siglip"])
    assert other.returncode == 2 and "Traceback" not in other.stderr  # another model's space: refused


@pytest.fixture(scope="module")
def hnsw_set(tmp_path_factory):
    rng = np.random.default_rng(4)
    centres = rng.standard_normal((10, 16))
    data = centres[rng.integers(0, 10, 3_000)] + 0.35 * rng.standard_normal((3_000, 16))
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    folder = tmp_path_factory.mktemp("hnsw")
    npy = write_set(folder / "feats.npy", [f"r{i}" for i in range(len(data))], data)
    queries = write_set(folder / "queries.npy", [f"q{i}" for i in range(50)], data[:50] + 0.05)
    return npy, queries


def test_retrieve_ef_widens_the_hnsw_search(run_mmcli, hnsw_set):
    npy, queries = hnsw_set
    built = run_mmcli("index", "build", npy, "--kind", "hnsw", "--m", "4", "--overwrite")
    assert built.returncode == 0, built.stderr

    def hits(*extra):
        done = run_mmcli("retrieve", "--index", npy, "--queries", queries, "-k", "10", *extra)
        assert done.returncode == 0, done.stderr
        return [[h["id"] for h in record["hits"]] for record in jsonl(done.stdout)]

    def recall(found, exact):
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact, strict=True)])

    exact = hits("--ann", "exact")
    narrow, wide = (
        recall(hits("--ann", "faiss", "--ef", "1"), exact),
        recall(hits("--ann", "faiss", "--ef", "500"), exact),
    )
    assert narrow < wide and wide > 0.99


# -- index build ------------------------------------------------------------------------------------


def test_index_build_kind_nlist_m_and_overwrite(run_mmcli, hnsw_set, tmp_path):
    import faiss

    from mmcli.ann import index_path

    npy = tmp_path / "feats.npy"
    shutil.copy(hnsw_set[0], npy)
    shutil.copy(hnsw_set[0].with_suffix(".jsonl"), npy.with_suffix(".jsonl"))

    read = []  # the proxies faiss.read_index returns own the indexes: keep them alive

    def built(*args):
        done = run_mmcli("index", "build", npy, "--overwrite", *args)
        assert done.returncode == 0, done.stderr
        read.append(faiss.read_index(str(index_path(npy))))
        return faiss.downcast_index(read[-1])

    assert faiss.extract_index_ivf(built("--nlist", "8")).nlist == 8
    assert faiss.extract_index_ivf(built("--nlist", "5")).nlist == 5  # replaced: --overwrite
    hnsw = built("--kind", "hnsw", "--m", "6")
    assert isinstance(hnsw, faiss.IndexHNSW)

    def links(index):  # HNSW keeps 2M links per node on the base level, M on the others
        return int(faiss.vector_to_array(index.hnsw.cum_nneighbor_per_level)[1]) // 2

    assert links(hnsw) == 6
    assert links(built("--kind", "hnsw")) == 32


# -- evaluate ---------------------------------------------------------------------------------------


@pytest.fixture
def caption_files(tmp_path):
    pred = write_jsonl(tmp_path / "pred.jsonl", [
        {"id": "a", "caption": "a dog runs on the grass"},
        {"id": "b", "caption": "two people ride bikes"},
        {"id": "z", "caption": "no reference for this one"},
    ])  # fmt: skip
    refs = write_jsonl(tmp_path / "refs.jsonl", [
        {"id": "a", "captions": ["a dog running on grass", "a brown dog runs across the lawn"]},
        {"id": "b", "captions": ["two people are riding bicycles"]},
    ])  # fmt: skip
    return pred, refs


def evaluate(run_mmcli, *args):
    done = run_mmcli("evaluate", *args)
    assert done.returncode == 0, done.stderr
    return done


def test_evaluate_captions_metrics_chooses_the_metrics(run_mmcli, caption_files):
    pred, refs = caption_files
    done = evaluate(run_mmcli, "captions", "--pred", pred, "--refs", refs, "--metrics", "bleu")
    assert set(json.loads(done.stdout)["metrics"]) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"}
    both = evaluate(run_mmcli, "captions", "--pred", pred, "--refs", refs, "--metrics", "bleu,rouge")
    assert "ROUGE-L" in json.loads(both.stdout)["metrics"]


@pytest.mark.parametrize("command", ["captions", "retrieval", "classification"])
def test_evaluate_strict_quiet_and_format(command, run_mmcli, caption_files, tmp_path):
    if command == "captions":
        pred, refs = caption_files
        args = ["captions", "--pred", pred, "--refs", refs, "--metrics", "bleu"]
    elif command == "retrieval":
        run = write_jsonl(tmp_path / "run.jsonl", [{"query_id": "q1", "query": "a", "hits": [{"rank": 1, "id": "x"}]}])
        qrels = write_jsonl(tmp_path / "qrels.jsonl", [{"query_id": "q1", "relevant": ["x"]},
                                                        {"query_id": "q9", "relevant": ["x"]}])  # fmt: skip
        args = ["retrieval", "--results", run, "--qrels", qrels]
    else:
        pred = write_jsonl(tmp_path / "p.jsonl", [{"id": "1", "label": "cat"}, {"id": "9", "label": "dog"}])
        labels = write_jsonl(tmp_path / "l.jsonl", [{"id": "1", "label": "cat"}])
        args = ["classification", "--pred", pred, "--truth", labels]
    loose = evaluate(run_mmcli, *args)
    assert loose.stderr.startswith("mmcli: ") and json.loads(loose.stdout)["metrics"]  # a note on the unknown id
    assert evaluate(run_mmcli, *args, "--quiet").stderr == ""
    strict = run_mmcli("evaluate", *args, "--strict")
    assert strict.returncode == 2 and "--strict" in strict.stderr
    table = evaluate(run_mmcli, *args, "--format", "table", "-q")
    assert "metric" in table.stdout and not table.stdout.lstrip().startswith("{")
    assert json.loads(evaluate(run_mmcli, *args, "--format", "json", "-q").stdout)["metrics"]


def test_evaluate_overwrite_replaces_the_written_file(run_mmcli, caption_files, tmp_path):
    pred, refs = caption_files
    items = tmp_path / "items.jsonl"
    items.write_text("old\n")
    args = ["captions", "--pred", pred, "--refs", refs, "--metrics", "bleu", "--per-item", items, "-q"]
    refused = run_mmcli("evaluate", *args)
    assert refused.returncode == 2 and "--overwrite" in refused.stderr and items.read_text() == "old\n"
    evaluate(run_mmcli, *args, "--overwrite")
    assert [r["id"] for r in jsonl(items.read_text())] == ["a", "b"]

    confusion = tmp_path / "confusion.csv"
    confusion.write_text("old\n")
    cls = write_jsonl(tmp_path / "c.jsonl", [{"id": "1", "label": "cat"}])
    args = ["classification", "--pred", cls, "--truth", cls, "--confusion", confusion]
    refused = run_mmcli("evaluate", *args)
    assert refused.returncode == 2 and "--overwrite" in refused.stderr and confusion.read_text() == "old\n"
    evaluate(run_mmcli, *args, "--overwrite")
    assert confusion.read_text().splitlines()[1] == "cat,1"


def test_evaluate_retrieval_match_field_names_the_owner_field(run_mmcli, tmp_path):
    images = write_set(tmp_path / "images.npy", ["img0", "img1"], np.eye(2))
    with FeatureSetWriter(tmp_path / "texts.npy") as writer:
        records = [
            {
                "id": f"t{i}",
                "modality": "text",
                "model": "m",
                "source": "s",
                "image_id": f"img{1 - i}",
                "owner": f"img{i}",
            }
            for i in range(2)
        ]
        writer.add(np.eye(2, dtype=np.float32), records)
    args = ["retrieval", "--images", images, "--texts", tmp_path / "texts.npy", "--k", "1"]
    by_default = json.loads(evaluate(run_mmcli, *args).stdout)["metrics"]
    by_owner = json.loads(evaluate(run_mmcli, *args, "--match-field", "owner").stdout)["metrics"]
    assert by_default["text->image R@1"] == pytest.approx(0.0)
    assert by_owner["text->image R@1"] == pytest.approx(1.0)


@pytest.fixture
def compiles(monkeypatch):
    """torch.compile replaced by a wrapper that runs the eager function and records each batch's size."""
    import torch

    seen: dict[str, list] = {"compiled": [], "batches": []}

    def fake_compile(function, **kwargs):
        seen["compiled"].append(kwargs)

        def compiled(batch):
            seen["batches"].append(int(batch["pixel_values"].shape[0]))
            return function(batch)

        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    return seen


def test_compile_on_runs_full_batches_through_the_compiled_tower(run_mmcli, tiny_models, photos, tmp_path, compiles):
    args = ["extract-features", photos, "--model", tiny_models["clip"], "-b", "3"]
    done = run_mmcli(*args, "-o", tmp_path / "on.npy", "--compile", "on")
    assert done.returncode == 0, done.stderr
    assert compiles["compiled"] == [{"dynamic": False}] and compiles["batches"] == [3]  # the last batch of 1 is eager
    assert "compiling the image tower with torch.compile for batches of 3" in done.stderr
    off = run_mmcli(*args, "-o", tmp_path / "off.npy", "--compile", "off")
    assert off.returncode == 0 and compiles["batches"] == [3] and "compiling" not in off.stderr
    np.testing.assert_allclose(np.load(tmp_path / "on.npy"), np.load(tmp_path / "off.npy"), atol=1e-6)


def test_compile_auto_compiles_only_runs_large_enough(run_mmcli, tiny_models, photos, tmp_path, compiles, monkeypatch):
    from mmcli import extract

    args = ["extract-features", photos, "--model", tiny_models["clip"], "-b", "2", "--device", "cpu"]
    small = run_mmcli(*args, "-o", tmp_path / "small.npy")
    assert small.returncode == 0 and compiles["compiled"] == []  # 4 images: not worth a compile
    monkeypatch.setattr(extract, "COMPILE_MIN_IMAGES", 4)
    large = run_mmcli(*args, "-o", tmp_path / "large.npy")
    assert large.returncode == 0 and compiles["batches"] == [2, 2]
    quantized = run_mmcli(*args, "-o", tmp_path / "int8.npy", "--quantize", "int8")
    assert quantized.returncode == 0 and len(compiles["compiled"]) == 1  # int8 layers stay eager


def test_a_failing_compile_falls_back_to_eager_and_says_so(run_mmcli, tiny_models, photos, tmp_path, monkeypatch):
    import torch

    def broken(function, **kwargs):
        def compiled(batch):
            raise RuntimeError("no C++ compiler found\nmore detail")

        return compiled

    monkeypatch.setattr(torch, "compile", broken)
    out = tmp_path / "x.npy"
    done = run_mmcli(
        "extract-features", photos, "-o", out, "--model", tiny_models["clip"], "-b", "2", "--compile", "on"
    )
    assert done.returncode == 0, done.stderr
    assert (
        "torch.compile failed (RuntimeError: no C++ compiler found); the rows were embedded without it" in done.stderr
    )
    assert len(read_feature_set(out)) == 4


def test_compiled_rows_equal_the_eager_rows(run_mmcli, tiny_models, photos, photo_set, tmp_path):
    out = tmp_path / "compiled.npy"
    done = run_mmcli(
        "extract-features", photos, "-o", out, "--model", tiny_models["clip"], "-b", "4", "--compile", "on"
    )
    assert done.returncode == 0, done.stderr
    assert "torch.compile failed" not in done.stderr
    np.testing.assert_allclose(read_feature_set(out).vectors, read_feature_set(photo_set).vectors, atol=1e-5)

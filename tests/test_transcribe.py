"""Speech: ``mmcli transcribe`` against Whisper's reference usage window by window, its batching,
language and task, errors and resume; and ``mmcli caption --speech``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from audio_media import as_pcm16, speech_like, tone, write_mp4, write_wav
from test_resume import kill_partway

RATE = 16_000  # Whisper's
WINDOW = 30


@pytest.fixture(scope="module")
def whisper(tiny_models):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    path = tiny_models["whisper"]
    return path, WhisperProcessor.from_pretrained(path), WhisperForConditionalGeneration.from_pretrained(path).eval()


@pytest.fixture(scope="module")
def talk(tmp_path_factory):
    """65 s of speech-like sound: two whole windows and a short one."""
    samples = speech_like(65.0, RATE, seed=1)
    return write_wav(tmp_path_factory.mktemp("talk") / "talk.wav", samples, RATE), as_pcm16(samples)


def reference_segments(whisper, samples: np.ndarray, **generate) -> list[tuple[float, float, str]]:
    """Whisper's own usage on a whole recording: the processor (all of it, with its attention mask, when
    longer than 30 s: sequential long-form decoding) -> generate with timestamps -> decode with offsets."""
    _, processor, model = whisper
    long = len(samples) > WINDOW * RATE
    options = {"truncation": False, "padding": "longest", "return_attention_mask": True} if long else {}
    inputs = processor(samples, sampling_rate=RATE, return_tensors="pt", **options)
    with torch.no_grad():
        ids = model.generate(**inputs, return_timestamps=True, **generate)[0]
    decoded = processor.tokenizer.decode(ids.tolist(), skip_special_tokens=True, output_offsets=True)
    duration, segments = len(samples) / RATE, []
    for piece in decoded["offsets"]:
        begin, end = piece["timestamp"]
        end = duration if end is None else min(end, duration)
        if piece["text"].strip() and begin < duration:
            segments.append((round(begin, 6), round(end, 6), piece["text"].strip()))
    return segments


def records(run) -> list[dict]:
    return [json.loads(line) for line in run.stdout.splitlines()]


def test_segments_are_whispers_own_long_form_decoding_of_the_recording(run_mmcli, whisper, talk):
    path, samples = talk
    run = run_mmcli("transcribe", path, "--model", whisper[0])
    assert run.returncode == 0, run.stderr
    found = records(run)
    expected = reference_segments(whisper, samples)
    assert expected, "the tiny model gives timed pieces"
    assert [(r["t"], r["end"], r["text"]) for r in found] == expected
    assert {r["source"] for r in found} == {str(path)} and {r["model"] for r in found} == {str(whisper[0])}
    assert found[0]["id"] == f"{path}#t={found[0]['t']:.3f},{found[0]['end']:.3f}"
    assert any(r["t"] >= 60 for r in found) and max(r["end"] for r in found) <= 65.0  # past two windows
    assert f"transcribed 1 recording into {len(found)} segment{'s' if len(found) != 1 else ''}" in run.stderr


def test_windows_of_several_recordings_share_batches(run_mmcli, whisper, tmp_path, monkeypatch):
    from transformers import WhisperForConditionalGeneration

    paths = [write_wav(tmp_path / f"r{i}.wav", speech_like(40.0 if i == 0 else 10.0, RATE, seed=i), RATE)
             for i in range(3)]  # fmt: skip
    sizes, calls = [], []
    generate = WhisperForConditionalGeneration.generate

    def counting(self, *args, **kwargs):
        sizes.append(int(kwargs["input_features"].shape[0]))
        calls.append({k: kwargs.get(k) for k in ("language", "task", "return_timestamps")})
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(WhisperForConditionalGeneration, "generate", counting)
    # files' batches are full, however long the next file takes to decode
    batched = run_mmcli("transcribe", *paths, "-m", whisper[0], "-b", "3", "--language", "en", "--task", "translate")
    assert batched.returncode == 0, batched.stderr
    assert sizes == [1, 2]  # the 40 s recording long-form, the two 10 s ones together
    assert calls[0] == {"language": "en", "task": "translate", "return_timestamps": True}
    sizes.clear()
    one_by_one = run_mmcli("transcribe", *paths, "-m", whisper[0], "-b", "1", "--language", "en", "--task", "translate")
    assert sizes == [1, 1, 1]
    assert one_by_one.stdout == batched.stdout


def test_long_recordings_of_different_lengths_share_a_long_form_call_as_if_alone(run_mmcli, whisper, talk, tmp_path):
    path = talk[0]  # 65 s
    shorter = write_wav(tmp_path / "forty.wav", speech_like(40.0, RATE, seed=7), RATE)
    together = run_mmcli("transcribe", path, shorter, "-m", whisper[0], "-b", "2")
    assert together.returncode == 0, together.stderr
    alone = [run_mmcli("transcribe", one, "-m", whisper[0], "-b", "1").stdout for one in (path, shorter)]
    assert together.stdout == "".join(alone)  # the padding of the shorter one is masked
    heard = [(r["t"], r["end"], r["text"]) for r in records(together) if r["source"] == str(shorter)]
    assert heard == reference_segments(whisper, as_pcm16(speech_like(40.0, RATE, seed=7)))


def test_an_unknown_language_is_a_usage_error(run_mmcli, whisper, talk):
    run = run_mmcli("transcribe", talk[0], "-m", whisper[0], "--language", "klingon")
    assert run.returncode == 2
    assert "Traceback" not in run.stderr and "klingon" in run.stderr


def test_a_videos_soundtrack_and_a_time_range(run_mmcli, whisper, tmp_path):
    samples = speech_like(35.0, RATE, seed=2)
    wav = write_wav(tmp_path / "a.wav", samples, RATE)
    video = write_mp4(tmp_path / "a.mp4", samples, RATE, codec="alac")
    from_wav, from_video = (
        run_mmcli("transcribe", wav, "-m", whisper[0]),
        run_mmcli("transcribe", video, "-m", whisper[0]),
    )
    assert from_video.returncode == 0, from_video.stderr
    strip = [(r["t"], r["end"], r["text"]) for r in records(from_wav)]
    assert [(r["t"], r["end"], r["text"]) for r in records(from_video)] == strip

    ranged = run_mmcli("transcribe", wav, "-m", whisper[0], "--start", "5", "--end", "20")
    assert ranged.returncode == 0, ranged.stderr
    expected = [(round(t + 5, 6), round(e + 5, 6), text) for t, e, text in
                reference_segments(whisper, as_pcm16(samples)[5 * RATE : 20 * RATE])]  # fmt: skip
    assert [(r["t"], r["end"], r["text"]) for r in records(ranged)] == expected
    assert all(5 <= r["t"] and r["end"] <= 20 for r in records(ranged))


def test_silent_and_broken_recordings_are_error_records(run_mmcli, whisper, talk, tmp_path):
    silent = write_wav(tmp_path / "silent.wav", np.zeros(RATE * 3, np.float32), RATE)
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(b"ID3" + bytes(300))
    mute = write_mp4(tmp_path / "mute.mp4", None, RATE)
    run = run_mmcli("transcribe", silent, broken, mute, talk[0], "-m", whisper[0])
    assert run.returncode == 1
    lines = records(run)
    errors = {r["id"]: r["error"] for r in lines if "error" in r}
    assert set(errors) == {str(silent), str(broken), str(mute)}
    assert errors[str(silent)].startswith("silent") and errors[str(mute)] == "has no audio track"
    assert all(r["source"] == str(talk[0]) for r in lines if "error" not in r)
    assert "3 failed" in run.stderr

    stopped = run_mmcli("transcribe", silent, talk[0], "-m", whisper[0], "--on-error", "fail")
    assert stopped.returncode == 1 and not any("text" in r for r in records(stopped))


def test_a_killed_transcription_resumes_to_the_uninterrupted_output(mmcli_exe, run_mmcli_process, whisper, tmp_path):
    folder = tmp_path / "podcasts"
    folder.mkdir()
    for index in range(24):
        write_wav(
            folder / f"ep{index:02d}.wav", speech_like(2.0, RATE, seed=index) + tone(2.0, RATE, 200 + index), RATE
        )

    def command(out):
        return [mmcli_exe, "transcribe", str(folder), "-m", str(whisper[0]), "-b", "2", "-o", str(out), "-q"]

    whole = run_mmcli_process(*command(tmp_path / "whole.jsonl")[1:])
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "resumed.jsonl"
    done = kill_partway(command(out), tmp_path / "resumed.partial" / "state.json", 6)
    assert 6 <= done < 24 and not out.exists()
    rerun = run_mmcli_process(*command(out)[1:-1])
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming: {done} recordings" in rerun.stderr
    assert out.read_text() == (tmp_path / "whole.jsonl").read_text()

    exists = run_mmcli_process(*command(out)[1:-1])
    assert exists.returncode == 2 and "--overwrite" in exists.stderr
    again = tmp_path / "again.jsonl"
    kill_partway(command(again), tmp_path / "again.partial" / "state.json", 6)
    restarted = run_mmcli_process(*command(again)[1:-1], "--restart")
    assert restarted.returncode == 0 and "resuming" not in restarted.stderr
    assert again.read_text() == (tmp_path / "whole.jsonl").read_text()
    replaced = run_mmcli_process(*command(again)[1:-1], "--overwrite", "--end", "1")
    assert replaced.returncode == 0 and again.read_text() != (tmp_path / "whole.jsonl").read_text()


def test_caption_speech_adds_what_is_said_during_each_segment(run_mmcli, whisper, tiny_models, tmp_path):
    samples = speech_like(40.0, RATE, seed=4)
    video = write_mp4(tmp_path / "talk.mp4", samples, RATE, codec="alac")
    mute = write_mp4(tmp_path / "mute.mp4", None, RATE)
    transcript = records(run_mmcli("transcribe", video, "-m", whisper[0]))
    assert transcript
    run = run_mmcli("caption", video, mute, "-m", tiny_models["blip"], "--speech", whisper[0], "--fps", "0.1",
                    "--max-new-tokens", "3")  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = records(run)
    segments = [r for r in lines if "t" in r and r["source"] == str(video)]
    summary = next(r for r in lines if r["id"] == str(video))
    assert len(segments) >= 2
    for record in segments:
        said = [s["text"] for s in transcript if s["t"] < record["end"] and s["end"] > record["t"]]
        assert record["speech"] == " ".join(said)
    assert summary["speech"] == " ".join(s["text"] for s in transcript)
    mute_summary = next(r for r in lines if r["id"] == str(mute))
    assert mute_summary["speech"] == "" and mute_summary["speech_error"] == "has no audio track"
    plain = run_mmcli("caption", video, "-m", tiny_models["blip"], "--fps", "0.1", "--max-new-tokens", "3")
    assert not any("speech" in r for r in records(plain))


def test_caption_speech_language_reaches_whisper(run_mmcli, whisper, tiny_models, tmp_path, monkeypatch):
    from transformers import WhisperForConditionalGeneration

    video = write_mp4(tmp_path / "talk.mp4", speech_like(5.0, RATE), RATE, codec="alac")
    languages = []
    generate = WhisperForConditionalGeneration.generate

    def spy(self, *args, **kwargs):
        languages.append(kwargs.get("language"))
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(WhisperForConditionalGeneration, "generate", spy)
    args = ["caption", video, "-m", tiny_models["blip"], "--speech", whisper[0], "--max-new-tokens", "2"]
    assert run_mmcli(*args).returncode == 0 and languages == [None]  # detected
    assert run_mmcli(*args, "--speech-language", "de").returncode == 0 and languages[-1] == "de"
    refused = run_mmcli(*args, "--speech-language", "klingon")
    assert refused.returncode == 2 and "klingon" in refused.stderr


def test_workers_preprocess_windows_in_threads_and_quantize_makes_int8(run_mmcli, whisper, talk, monkeypatch):
    import threading

    from mmcli import registry
    from mmcli.speech import Transcriber

    threads, quantized = [], []
    preprocess, quantize = Transcriber.preprocess_audio, registry.quantize_linear_layers

    def spy(self, samples):
        threads.append(threading.current_thread().name)
        return preprocess(self, samples)

    def spy_quantize(model):
        quantized.append(type(model).__name__)
        return quantize(model)

    monkeypatch.setattr(Transcriber, "preprocess_audio", spy)
    monkeypatch.setattr(registry, "quantize_linear_layers", spy_quantize)
    inline = run_mmcli("transcribe", talk[0], "-m", whisper[0], "--workers", "0")
    assert inline.returncode == 0 and threads == ["mmcli-feed"]  # one piece: the 65 s recording whole
    threads.clear()
    threaded = run_mmcli("transcribe", talk[0], "-m", whisper[0], "--workers", "2")
    assert threaded.stdout == inline.stdout and all(name.startswith("mmcli-prepare") for name in threads)
    assert quantized == []
    int8 = run_mmcli("transcribe", talk[0], "-m", whisper[0], "--quantize", "int8")
    assert int8.returncode == 0, int8.stderr
    assert quantized == ["WhisperForConditionalGeneration"]


SAID = "The weather today is sunny and warm. Please call me back after lunch."


@pytest.fixture(scope="module")
def real_whisper(tmp_path_factory):
    """Whisper tiny.en with its real weights (see tests/real_whisper.py), as a transformers checkpoint."""
    from real_whisper import convert

    return convert(tmp_path_factory.mktemp("whisper-tiny-en"))


def words(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c.isspace() else " " for c in text.lower()).split()


def test_a_real_whisper_transcribes_speech(run_mmcli, real_whisper, tmp_path):
    import shutil
    import subprocess

    espeak = shutil.which("espeak-ng")
    assert espeak, "espeak-ng speaks the test sentences (.ci/run installs it)"
    spoken = tmp_path / "spoken.wav"  # 22.05 kHz, resampled to Whisper's 16 kHz on the way in
    subprocess.run([espeak, "-v", "en-us", "-s", "130", "-w", str(spoken), SAID], check=True)
    video = write_mp4(tmp_path / "spoken.mp4", as_pcm16(_read_wav(spoken, RATE)), RATE, codec="aac")
    run = run_mmcli("transcribe", spoken, video, "--model", real_whisper)
    assert run.returncode == 0, run.stderr
    for source in (spoken, video):
        segments = [r for r in records(run) if r["source"] == str(source)]
        heard = words(" ".join(r["text"] for r in segments))
        expected = words(SAID)
        # the smallest Whisper mishears a word or two of a synthetic voice; it must get the sentences
        assert len(set(heard) & set(expected)) >= 0.6 * len(set(expected)), heard
        assert {"today", "sunny", "warm", "please", "call", "lunch"} <= set(heard), heard
        assert segments and all(0 <= r["t"] <= r["end"] for r in segments), segments


def _read_wav(path, rate: int) -> np.ndarray:
    from mmcli.media.audio import decode_audio

    return decode_audio(str(path), rate)


ACROSS = "My brother bought a small boat and sails it on the lake every weekend."


def test_a_sentence_across_the_30_second_boundary_is_transcribed_whole(run_mmcli, real_whisper, tmp_path):
    import shutil
    import subprocess

    espeak = shutil.which("espeak-ng")
    assert espeak, "espeak-ng speaks the test sentences (.ci/run installs it)"
    spoken = {}
    for name, text in (("first", SAID), ("across", ACROSS)):
        subprocess.run([espeak, "-v", "en-us", "-s", "130", "-w", str(tmp_path / f"{name}.wav"), text], check=True)
        spoken[name] = _read_wav(tmp_path / f"{name}.wav", RATE)
    starts = 28.0 - len(spoken["across"]) / RATE / 2  # the second sentence's middle at 28 s
    samples = np.zeros(int((starts + 12) * RATE), np.float32)
    samples[: len(spoken["first"])] = spoken["first"]
    at = int(starts * RATE)
    samples[at : at + len(spoken["across"])] = spoken["across"]
    samples += np.random.default_rng(0).normal(0, 1e-3, len(samples)).astype(np.float32)  # a room, not silence
    path = write_wav(tmp_path / "two.wav", samples, RATE)
    assert at / RATE < 30 < (at + len(spoken["across"])) / RATE  # the sentence is cut by the first window's end
    run = run_mmcli("transcribe", path, "--model", real_whisper)
    assert run.returncode == 0, run.stderr
    found = records(run)
    whole = [r for r in found if {"boat", "lake", "weekend"} <= set(words(r["text"]))]
    assert whole, found  # one segment holds the sentence, from before 30 s to after it
    assert whole[0]["t"] < 30 < whole[0]["end"], whole

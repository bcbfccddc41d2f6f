"""Audio: decoding (WAV, MP3, the soundtrack of an MP4) against reference decoders, windows over a
stream, and CLAP embeddings against the model's reference usage, through the commands users run."""

from __future__ import annotations

import json
import shutil
import subprocess
import tracemalloc

import numpy as np
import pytest
import torch
from audio_media import as_pcm16, speech_like, tone, write_mp3, write_mp4, write_wav

from mmcli.media.audio import AudioReader, Windowing, decode_audio, windows
from mmcli.output.feature_set import read_feature_set

RATE = 48_000  # CLAP's


@pytest.fixture(scope="module")
def clap(tiny_models):
    from transformers import ClapModel, ClapProcessor

    path = tiny_models["clap"]
    return path, ClapProcessor.from_pretrained(path), ClapModel.from_pretrained(path).eval()


def reference_audio(clap, samples: np.ndarray) -> np.ndarray:
    """CLAP's reference usage: processor -> get_audio_features -> L2 norm."""
    _, processor, model = clap
    with torch.no_grad():
        output = model.get_audio_features(**processor(audio=samples, sampling_rate=RATE, return_tensors="pt"))
    vector = getattr(output, "pooler_output", output)[0]
    return (vector / vector.norm()).numpy()


def reference_text(clap, text: str) -> np.ndarray:
    _, processor, model = clap
    with torch.no_grad():
        output = model.get_text_features(**processor(text=[text], return_tensors="pt", padding=True))
    vector = getattr(output, "pooler_output", output)[0]
    return (vector / vector.norm()).numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- decoding ------------------------------------------------------------------------------------


def test_wav_decodes_to_its_samples_and_resamples_to_the_model_rate(tmp_path):
    samples = tone(2.0, 44_100)
    stereo = write_wav(tmp_path / "stereo.wav", samples, 44_100, channels=2)
    np.testing.assert_allclose(decode_audio(stereo, 44_100), as_pcm16(samples), atol=1e-6)  # channels averaged
    resampled = decode_audio(stereo, 16_000)
    assert len(resampled) == 32_000
    spectrum = np.abs(np.fft.rfft(resampled))
    assert np.argmax(spectrum) * 16_000 / len(resampled) == pytest.approx(440, abs=1)
    cut = decode_audio(stereo, 44_100, start=0.5, end=1.25)
    np.testing.assert_allclose(cut, as_pcm16(samples)[22_050:55_125], atol=1e-6)


def test_mp3_decodes_to_the_samples_libsndfile_gives(tmp_path):
    soundfile = pytest.importorskip("soundfile")  # an independent MP3 decoder (mpg123 in libsndfile)
    path = write_mp3(tmp_path / "speech.mp3", speech_like(3.0, 44_100), 44_100)
    reference, rate = soundfile.read(path, dtype="float32")
    ours = decode_audio(path, rate)
    assert len(ours) == len(reference)
    np.testing.assert_allclose(ours, reference, atol=1e-4)


def test_the_soundtrack_of_an_mp4_decodes_to_its_samples(tmp_path):
    samples = speech_like(2.5, RATE)
    lossless = write_mp4(tmp_path / "alac.mp4", samples, RATE, codec="alac")
    np.testing.assert_allclose(decode_audio(lossless, RATE), as_pcm16(samples), atol=1e-4)


def test_an_aac_soundtrack_decodes_as_the_ffmpeg_command_decodes_it(tmp_path):
    samples = speech_like(2.5, RATE)
    path = write_mp4(tmp_path / "aac.mp4", samples, RATE, codec="aac")
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg, "the ffmpeg command is the reference decoder here (.ci/run installs it)"
    # -ac 1 mixes at -3 dB; mmcli averages channels, which for one channel is the channel itself
    raw = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1", "-ar", str(16_000), "-"],
                         capture_output=True, check=True).stdout  # fmt: skip
    reference = np.frombuffer(raw, np.float32)
    ours = decode_audio(path, 16_000)
    assert abs(len(ours) - len(reference)) <= 16, (len(ours), len(reference))
    n = min(len(ours), len(reference))
    assert np.abs(ours[:n] - reference[:n]).max() < 1e-3
    assert np.abs(reference).max() > 0.1  # the track holds the signal, not silence


def test_bad_files_are_item_errors(tmp_path):
    from mmcli.errors import ItemError

    (tmp_path / "junk.ogg").write_bytes(b"OggS" + bytes(range(200)))
    no_track = write_mp4(tmp_path / "mute.mp4", None, RATE)
    for path, message in ((tmp_path / "junk.ogg", "not audio FFmpeg can decode"), (no_track, "no audio track"),
                          (tmp_path / "absent.wav", "no such file")):  # fmt: skip
        with pytest.raises(ItemError, match=message):
            with AudioReader(str(path), RATE) as reader:
                list(reader.chunks())


def _with_data_size(wav: bytes, size: int) -> bytes:
    """``wav`` with its data chunk's size field set to ``size`` (the samples themselves unchanged)."""
    at = wav.index(b"data") + 4
    return wav[:at] + size.to_bytes(4, "little") + wav[at + 4 :]


def test_a_wav_whose_header_claims_more_than_it_holds_is_truncated(run_mmcli, clap, tmp_path):
    whole = write_wav(tmp_path / "whole.wav", speech_like(1.0, RATE), RATE).read_bytes()
    liar = tmp_path / "liar.wav"
    liar.write_bytes(_with_data_size(whole, RATE * 2 * 36_000))  # ten hours claimed, one second there
    piped = tmp_path / "piped.wav"
    piped.write_bytes(_with_data_size(whole, 0xFFFFFFFF))  # a writer to a pipe: length unknown
    for path, cut in ((tmp_path / "whole.wav", False), (liar, True), (piped, False)):
        for source in (str(path), path.read_bytes()):  # a file, and a shard member's bytes
            with AudioReader(source, RATE) as reader:
                assert sum(len(chunk) for chunk in reader.chunks()) == RATE
            assert reader.truncated is cut, (path.name, type(source))
    out = tmp_path / "sounds.npy"
    run = run_mmcli("extract-features", tmp_path / "whole.wav", liar, "--model", clap[0], "-o", out)
    assert run.returncode == 0, run.stderr
    pooled = {r["id"]: r for r in read_feature_set(out).records if r.get("pool")}
    assert pooled[str(liar)]["truncated"] is True and "truncated" not in pooled[str(tmp_path / "whole.wav")]


def test_windows_of_a_two_hour_stream_hold_about_one_window_in_memory():
    rate, seconds = 16_000, 2 * 3600
    chunk = np.ones(4096, np.float32)

    def stream():
        for _ in range(rate * seconds // len(chunk)):
            yield chunk
        yield chunk[:1000]  # and a little more than two hours

    total, size = rate * seconds + 1000, 30 * rate
    tracemalloc.start()
    try:
        starts = []
        for first, samples in windows(stream(), rate, Windowing(30.0)):
            assert len(samples) == size
            starts.append(first)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # every whole window end to end, then one more ending where the stream does
    assert starts == [i * size for i in range(seconds // 30)] + [total - size]
    window_bytes = 30 * rate * 4
    assert peak < 6 * window_bytes, f"peak {peak / 1e6:.1f} MB for {rate * seconds * 4 / 1e6:.0f} MB of samples"


# -- CLAP ----------------------------------------------------------------------------------------


def test_clap_rows_match_the_reference_usage_and_pool_as_a_hand_computation(run_mmcli, clap, tmp_path):
    samples = tone(25.0, RATE, 330) + speech_like(25.0, RATE)
    path = write_wav(tmp_path / "long.wav", samples, RATE)
    out = tmp_path / "sounds.npy"
    run = run_mmcli("extract-features", path, "--model", clap[0], "--pool", "both", "-o", out,
                    "--text", "a dog barking")  # fmt: skip
    assert run.returncode == 0, run.stderr
    features = read_feature_set(out)
    records, rows = features.records, np.asarray(features.vectors)
    assert [r["modality"] for r in records] == ["audio"] * 4 + ["text"]
    assert [(r["t"], r["end"]) for r in records[:3]] == [(0.0, 10.0), (10.0, 20.0), (15.0, 25.0)]
    assert all(r["audio"] == str(path) for r in records[:3])
    assert records[1]["id"] == f"{path}#t=10.000,20.000"
    decoded = as_pcm16(samples)
    for row, (t, end) in zip(rows[:3], ((0, 10), (10, 20), (15, 25)), strict=True):
        assert cosine(row, reference_audio(clap, decoded[t * RATE : end * RATE])) >= 0.9999
    mean = rows[:3].mean(axis=0)
    np.testing.assert_allclose(rows[3], mean / np.linalg.norm(mean), atol=1e-6)
    assert records[3]["id"] == str(path) and records[3]["windows"] == 3 and records[3]["pool"] == "mean"
    assert cosine(rows[4], reference_text(clap, "a dog barking")) >= 0.9999


def test_window_and_hop_cut_the_recording(run_mmcli, clap, tiny_models, tmp_path):
    samples = speech_like(9.0, RATE)
    path = write_wav(tmp_path / "short.wav", samples, RATE)
    out = tmp_path / "w.npy"
    run = run_mmcli("extract-features", path, "-m", clap[0], "--window", "4", "--hop", "2", "--pool", "none", "-o", out)
    assert run.returncode == 0, run.stderr
    features = read_feature_set(out)
    assert [(r["t"], r["end"]) for r in features.records] == [(0, 4), (2, 6), (4, 8), (5, 9)]
    decoded = as_pcm16(samples)
    assert cosine(features.vectors[1], reference_audio(clap, decoded[2 * RATE : 6 * RATE])) >= 0.9999

    refused = run_mmcli("extract-features", path, "-m", clap[0], "--window", "20", "-o", tmp_path / "x.npy")
    assert refused.returncode == 2
    assert "takes at most 10 s of audio at once; --window 20.0 is longer" in refused.stderr
    image_model = run_mmcli(
        "extract-features", path, "-m", tiny_models["clip"], "--window", "4", "-o", tmp_path / "y.npy"
    )
    assert image_model.returncode == 2 and "--window cuts recordings into windows" in image_model.stderr


def test_a_folder_gives_its_recordings_and_video_soundtracks(run_mmcli, clap, photos, tmp_path):
    folder = tmp_path / "library"
    folder.mkdir()
    samples = speech_like(3.0, RATE)
    write_wav(folder / "a.wav", samples, RATE)
    write_mp4(folder / "b.mp4", samples, RATE, codec="alac")
    write_mp3(folder / "c.mp3", tone(2.0, RATE), RATE)
    write_wav(folder / "silent.wav", np.zeros(RATE, np.float32), RATE)
    (folder / "broken.flac").write_bytes(b"fLaC" + bytes(100))
    shutil.copy(next(photos.iterdir()), folder / "photo.jpg")  # not audio: skipped in a folder
    (folder / "notes.txt").write_text("not audio\n")
    out = tmp_path / "library.npy"
    run = run_mmcli("extract-features", folder, "-m", clap[0], "-o", out)
    assert run.returncode == 1, run.stderr  # some items failed
    features = read_feature_set(out)
    assert [r["id"] for r in features.records] == [str(folder / name) for name in ("a.wav", "b.mp4", "c.mp3")]
    assert all(r["modality"] == "audio" for r in features.records)
    assert cosine(features.vectors[0], features.vectors[1]) >= 0.9999  # the soundtrack is the same samples
    errors = {
        r["id"]: r["error"] for r in map(json.loads, (tmp_path / "library.errors.jsonl").read_text().splitlines())
    }
    assert set(errors) == {str(folder / "silent.wav"), str(folder / "broken.flac")}
    assert errors[str(folder / "silent.wav")].startswith("silent")
    assert "skipping" in run.stderr and "silent.wav" in run.stderr

    stopped = run_mmcli("extract-features", folder, "-m", clap[0], "-o", tmp_path / "stop.npy", "--on-error", "fail")
    assert stopped.returncode == 1 and "broken.flac" in stopped.stderr
    assert not (tmp_path / "stop.npy").exists()


def test_modality_audio_embeds_a_videos_soundtrack_not_its_frames(run_mmcli, clap, tiny_models, tmp_path):
    samples = speech_like(3.0, RATE)
    video = write_mp4(tmp_path / "talk.mp4", samples, RATE, codec="alac")
    out = tmp_path / "talk.npy"
    run = run_mmcli("extract-features", video, "-m", clap[0], "--modality", "audio", "-o", out)
    assert run.returncode == 0, run.stderr
    (record,) = read_feature_set(out).records
    assert record["modality"] == "audio" and record["duration"] == pytest.approx(3.0, abs=0.01)
    assert cosine(read_feature_set(out).vectors[0], reference_audio(clap, as_pcm16(samples))) >= 0.9999
    frames = run_mmcli("extract-features", video, "-m", tiny_models["clip"], "--modality", "audio", "-o",
                       tmp_path / "clip.npy")  # fmt: skip
    assert frames.returncode == 2 and "embeds image, text only, not audio;" in frames.stderr


def test_retrieve_finds_recordings_with_a_text_query(run_mmcli, clap, tmp_path):
    folder = tmp_path / "sounds"
    folder.mkdir()
    for index, frequency in enumerate((220, 440, 880)):
        write_wav(folder / f"tone{index}.wav", tone(2.0, RATE, frequency), RATE)
    index_path = tmp_path / "sounds.npy"
    assert run_mmcli("extract-features", folder, "-m", clap[0], "-o", index_path).returncode == 0
    run = run_mmcli("retrieve", "--index", index_path, "--query", "a dog barking", "-k", "3")
    assert run.returncode == 0, run.stderr
    (result,) = [json.loads(line) for line in run.stdout.splitlines()]
    features = read_feature_set(index_path)
    scores = np.asarray(features.vectors) @ reference_text(clap, "a dog barking")
    expected = [features.records[i]["id"] for i in np.argsort(-scores)]
    assert [hit["id"] for hit in result["hits"]] == expected
    assert result["hits"][0]["score"] == pytest.approx(float(scores.max()), abs=1e-5)


def test_classify_scores_recordings_with_claps_prompt_and_audio_temperature(run_mmcli, clap, tmp_path):
    _, processor, model = clap
    samples = speech_like(4.0, RATE, seed=3)
    path = write_wav(tmp_path / "bark.wav", samples, RATE)
    labels = ["dog", "siren", "rain"]
    run = run_mmcli("classify", path, "-m", clap[0], "--labels", ",".join(labels))
    assert run.returncode == 0, run.stderr
    (record,) = [json.loads(line) for line in run.stdout.splitlines()]
    # the reference: ClapModel's own logits_per_audio for "This is a sound of {label}." prompts
    with torch.no_grad():
        inputs = processor(text=[f"This is a sound of {label}." for label in labels], audio=as_pcm16(samples),
                           sampling_rate=RATE, return_tensors="pt", padding=True)  # fmt: skip
        probabilities = model(**inputs).logits_per_audio.softmax(dim=-1)[0].numpy()
    for label, probability in zip(labels, probabilities, strict=True):
        assert record["scores"][label] == pytest.approx(float(probability), abs=1e-4)
    assert record["label"] == labels[int(np.argmax(probabilities))]


def test_update_keeps_renamed_recordings_and_equals_a_fresh_run(run_mmcli, clap, tmp_path):
    folder = tmp_path / "library"
    folder.mkdir()
    write_wav(folder / "long.wav", speech_like(22.0, RATE, seed=5), RATE)
    write_mp3(folder / "short.mp3", tone(3.0, RATE), RATE)
    out = tmp_path / "library.npy"
    args = ["-m", clap[0], "--pool", "both"]
    assert run_mmcli("extract-features", folder, "-o", out, *args).returncode == 0
    (folder / "short.mp3").rename(folder / "renamed.mp3")
    write_wav(folder / "new.wav", speech_like(4.0, RATE, seed=6), RATE)
    updated = run_mmcli("extract-features", folder, "-o", out, *args, "--update")
    assert updated.returncode == 0, updated.stderr
    assert "2 inputs kept (1 recognised by content), 1 embedded, 0 dropped" in updated.stderr
    fresh = tmp_path / "fresh.npy"
    assert run_mmcli("extract-features", folder, "-o", fresh, *args).returncode == 0
    assert (tmp_path / "library.jsonl").read_text() == (tmp_path / "fresh.jsonl").read_text()
    np.testing.assert_allclose(np.load(out), np.load(fresh), atol=1e-6)

"""Audio throughput: mmcli against the plain processor + model loop on the same 2 minutes of audio, in one run.

    python benchmarks/audio_throughput.py                 # 120 s of audio
    python benchmarks/audio_throughput.py --seconds 60    # quicker

Two models with random weights at their real sizes, saved and loaded like hub checkpoints:

- CLAP (``ClapConfig()``: HTSAT audio tower and RoBERTa-base text tower, ``laion/clap-htsat-unfused``'s
  feature extractor) on a 48 kHz WAV. The plain loop reads the file with soundfile, cuts 10 s windows
  and runs ``ClapProcessor`` -> ``get_audio_features`` one window at a time; mmcli is
  ``extract_features(..., pool="none")`` (PyAV decoding streamed on a thread, windows batched).
- Whisper (``WhisperConfig()``: whisper-tiny's layout, 39M parameters) on four 16 kHz WAVs of half
  that length each, generation capped at 64 tokens a window on both sides. The plain loop reads each
  file and runs Whisper's own long-form usage on it, a recording at a time: ``WhisperProcessor(...,
  truncation=False, padding="longest", return_attention_mask=True)`` -> ``generate(return_timestamps=True)``
  -> ``decode(output_offsets=True)``; mmcli is ``transcribe_files`` (the recordings' long-form
  decoding batched).

Each side's time includes reading the file and loading nothing (both models are loaded before the
clock starts). The outputs are checked equal (CLAP rows to cosine 0.9999, Whisper segment texts).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from audio_media import speech_like, tone, write_wav  # noqa: E402


def clap_checkpoint(folder: Path) -> Path:
    import torch
    from tiny_audio import roberta_tokenizer
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

    tokenizer = roberta_tokenizer()
    config = ClapConfig(text_config={"vocab_size": len(tokenizer), "max_position_embeddings": 514})
    torch.manual_seed(0)
    ClapModel(config).eval().save_pretrained(folder)
    features = ClapFeatureExtractor(frequency_min=50, frequency_max=14000, truncation="rand_trunc")
    ClapProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def whisper_checkpoint(folder: Path, max_length: int) -> Path:
    import torch
    from tiny_audio import whisper_generation_config, whisper_tokenizer
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    tokenizer = whisper_tokenizer()
    generation = whisper_generation_config(tokenizer)
    generation.max_length = max_length
    ids = {name: getattr(generation, name) for name in ("bos_token_id", "eos_token_id", "pad_token_id",
                                                         "decoder_start_token_id")}  # fmt: skip
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(WhisperConfig(vocab_size=len(tokenizer), **ids)).eval()
    model.generation_config = generation
    model.save_pretrained(folder)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(), tokenizer=tokenizer).save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--max-length", type=int, default=64, help="Whisper tokens a window, both sides")
    args = parser.parse_args()

    import numpy as np
    import soundfile
    import torch
    from transformers import ClapModel, ClapProcessor, WhisperForConditionalGeneration, WhisperProcessor

    from mmcli.encoders import load_encoder
    from mmcli.extract import extract_features
    from mmcli.loading import native_bf16_cpu
    from mmcli.output.feature_set import read_feature_set
    from mmcli.speech import load_transcriber, transcribe_files

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bfloat16: {native_bf16_cpu()}")
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        seconds = args.seconds
        # -- CLAP -------------------------------------------------------------------------------------
        rate = 48_000
        audio = write_wav(folder / "sounds.wav", tone(seconds, rate, 330) + speech_like(seconds, rate), rate)
        clap = clap_checkpoint(folder / "clap")
        processor, model = ClapProcessor.from_pretrained(clap), ClapModel.from_pretrained(clap).eval()
        started = time.perf_counter()
        samples, _ = soundfile.read(audio, dtype="float32")
        plain = []
        with torch.inference_mode():
            for start in range(0, len(samples), 10 * rate):
                window = samples[start : start + 10 * rate]
                output = model.get_audio_features(**processor(audio=window, sampling_rate=rate, return_tensors="pt"))
                vector = getattr(output, "pooler_output", output)[0]
                plain.append((vector / vector.norm()).numpy())
        plain_time = time.perf_counter() - started

        encoder = load_encoder(str(clap), dtype="float32")
        loaded = {str(clap): encoder}
        import mmcli.encoders

        mmcli.encoders.load_encoder = lambda name, **_: loaded[name]  # the model loaded before the clock
        started = time.perf_counter()
        extract_features([str(audio)], folder / "sounds.npy", model=str(clap), pool="none", dtype="float32")
        mmcli_time = time.perf_counter() - started
        rows = read_feature_set(folder / "sounds.npy")
        windows = len(rows.records)
        # mmcli's last window ends with the recording; the plain loop's last is the shorter rest
        agreement = min(float(a @ b) for a, b in zip(plain[: windows - 1], np.asarray(rows.vectors), strict=False))
        print(f"CLAP (HTSAT + RoBERTa-base), {seconds:g} s at 48 kHz, {windows} windows:")
        print(f"  plain loop, a window at a time: {plain_time:6.2f} s ({seconds / plain_time:5.1f}x real time)")
        print(f"  mmcli extract-features:         {mmcli_time:6.2f} s ({seconds / mmcli_time:5.1f}x real time), "
              f"batch {encoder.default_batch_size}")  # fmt: skip
        print(f"  ratio {plain_time / mmcli_time:.2f}x; least cosine between the two sides' windows {agreement:.6f}")

        # -- Whisper ----------------------------------------------------------------------------------
        rate = 16_000
        talks = [write_wav(folder / f"talk{n}.wav", speech_like(seconds / 2, rate, seed=n), rate) for n in range(4)]
        whisper = whisper_checkpoint(folder / "whisper", args.max_length)
        processor, model = (
            WhisperProcessor.from_pretrained(whisper),
            WhisperForConditionalGeneration.from_pretrained(whisper).eval(),
        )
        started = time.perf_counter()
        plain_texts = []
        with torch.inference_mode():
            for talk in talks:
                samples, _ = soundfile.read(talk, dtype="float32")
                inputs = processor(samples, sampling_rate=rate, return_tensors="pt", truncation=False,
                                   padding="longest", return_attention_mask=True)  # fmt: skip
                ids = model.generate(**inputs, return_timestamps=True)[0]
                decoded = processor.tokenizer.decode(ids.tolist(), skip_special_tokens=True, output_offsets=True)
                inside = len(samples) / rate  # (a piece timed past the recording's end is not in it)
                plain_texts += [piece["text"].strip() for piece in decoded["offsets"]
                                if piece["text"].strip() and piece["timestamp"][0] < inside]  # fmt: skip
        plain_time = time.perf_counter() - started

        transcriber = load_transcriber(str(whisper), dtype="float32")
        import mmcli.speech as speech_module

        speech_module.load_transcriber = lambda name, **_: transcriber
        stream = io.StringIO()
        started = time.perf_counter()
        transcribe_files([str(talk) for talk in talks], stream=stream, model=str(whisper), dtype="float32")
        mmcli_time = time.perf_counter() - started
        texts = [json.loads(line)["text"] for line in stream.getvalue().splitlines()]
        total = 4 * seconds / 2
        print(f"Whisper (whisper-tiny layout), 4 recordings of {seconds / 2:g} s at 16 kHz, long-form, "
              f"{args.max_length} tokens at most a window:")  # fmt: skip
        print(f"  plain loop, a recording at a time: {plain_time:6.2f} s ({total / plain_time:5.1f}x real time)")
        print(f"  mmcli transcribe:                  {mmcli_time:6.2f} s ({total / mmcli_time:5.1f}x real time), "
              f"batch {transcriber.default_batch_size}")  # fmt: skip
        print(f"  ratio {plain_time / mmcli_time:.2f}x; segment texts equal: {texts == plain_texts}")


if __name__ == "__main__":
    main()

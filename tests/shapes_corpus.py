"""A synthetic captioning corpus a small model can learn on a CPU in minutes: one coloured shape per
picture, at a size and place its caption names ("a small red square on the left"), seeded.

Also a word-level BLIP built from a config for it: its vocabulary is the corpus's words, and its
generation start token ``[DEC]`` differs from the ``[CLS]`` its tokenizer begins sequences with, as
in the hub's BLIP checkpoints (the mismatch a trainer must handle)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (235, 210, 20)}
SHAPES = ("square", "circle", "triangle")
SIZES = {"small": 12, "large": 24}
PLACES = {"left": 16, "right": 48}
WORDS = ["a", "on", "the", *COLOURS, *SHAPES, *SIZES, *PLACES]
SIDE = 64


def draw(shape: str, colour: str, size: str, place: str, rng: np.random.Generator) -> Image.Image:
    background = tuple(int(v) for v in rng.integers(200, 256, 3))
    image = Image.new("RGB", (SIDE, SIDE), background)
    pen = ImageDraw.Draw(image)
    half = SIZES[size] // 2
    x = PLACES[place] + int(rng.integers(-3, 4))
    y = SIDE // 2 + int(rng.integers(-8, 9))
    box = [x - half, y - half, x + half, y + half]
    if shape == "square":
        pen.rectangle(box, fill=COLOURS[colour])
    elif shape == "circle":
        pen.ellipse(box, fill=COLOURS[colour])
    else:
        pen.polygon([(x, y - half), (x - half, y + half), (x + half, y + half)], fill=COLOURS[colour])
    return image


def write_corpus(folder: Path, count: int, seed: int, name: str = "pairs") -> Path:
    """``count`` pictures and ``NAME.jsonl`` of their ``{"path", "caption"}`` records (paths relative)."""
    rng = np.random.default_rng(seed)
    images = folder / name
    images.mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(count):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        size = list(SIZES)[int(rng.integers(len(SIZES)))]
        place = list(PLACES)[int(rng.integers(len(PLACES)))]
        file = images / f"{index:05d}.png"
        draw(shape, colour, size, place, rng).save(file)
        caption = f"a {size} {colour} {shape} on the {place}"
        lines.append(json.dumps({"path": f"{name}/{file.name}", "caption": caption}))
    listing = folder / f"{name}.jsonl"
    listing.write_text("\n".join(lines) + "\n")
    return listing


def word_tokenizer():
    from transformers import BertTokenizerFast

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *WORDS]
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(tokens)}, do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return tokenizer


def build_word_blip(folder: Path, hidden: int = 64, seed: int = 0) -> Path:
    """A random-init BLIP whose vocabulary is the corpus's words, at 32 pixels (patches of 8)."""
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    tokenizer = word_tokenizer()
    start = tokenizer.convert_tokens_to_ids("[DEC]")
    text = dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=32, bos_token_id=start, sep_token_id=3, pad_token_id=0,
                eos_token_id=3)  # fmt: skip
    vision = dict(hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=2, num_attention_heads=4,
                  image_size=32, patch_size=8)  # fmt: skip
    config = BlipConfig(text_config=text, vision_config=vision)
    torch.manual_seed(seed)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    processor.save_pretrained(folder)
    return folder


if __name__ == "__main__":  # python tests/shapes_corpus.py DIR: a corpus and a model to try training on
    import argparse

    parser = argparse.ArgumentParser(description="Write a captioning corpus and a word-level BLIP to train on.")
    parser.add_argument("folder", nargs="?", default="shapes", help="where to write them (default: shapes)")
    root = Path(parser.parse_args().folder)
    write_corpus(root, 1500, seed=1, name="train")
    write_corpus(root, 60, seed=2, name="val")
    build_word_blip(root / "word-blip")
    print(f"wrote {root}/train.jsonl, {root}/val.jsonl and the model {root}/word-blip")

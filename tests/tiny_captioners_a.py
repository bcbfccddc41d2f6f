"""Tiny, randomly initialised BLIP-2 and GIT (image and video) captioning checkpoints, saved like hub models.

Both use a wider initialisation than the architectures' defaults so that a random model's
captions depend on the image. They register in ``tiny_models``' registry; ``python tests/tiny_models.py
/tmp/mmcli-tiny`` writes them with the others.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tiny_models import IMAGE_SIZE, MEAN, STD, _text_kwargs, _vision_kwargs, tiny, wordpiece_tokenizer

INIT = 0.2
NUM_QUERY_TOKENS = 8


def opt_tokenizer():
    """A byte-level BPE tokenizer laid out like OPT's (``</s>`` prepended to the text).

    Its vocabulary is printable ASCII, bare and with GPT-2's leading-space marker ``Ġ``, which the
    merges attach to the character after a space. The bare marker is a special token, skipped when
    decoding, so no token sequence decodes to a run of spaces or to control bytes and a random
    model's captions are readable single-spaced text, as a trained model's are.
    """
    from tokenizers import AddedToken
    from transformers import GPT2Tokenizer

    chars = [chr(code) for code in range(33, 127)]
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "Ġ": 4}
    vocab.update({piece: len(vocab) + i for i, piece in enumerate(chars + ["Ġ" + char for char in chars])})
    tokenizer = GPT2Tokenizer(
        vocab=vocab,
        merges=[("Ġ", char) for char in chars],
        bos_token="</s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        add_bos_token=True,
    )
    tokenizer.add_tokens([AddedToken("Ġ", special=True, normalized=False)], special_tokens=True)
    return tokenizer


@tiny("blip2")
def build_blip2(folder: Path) -> Path:
    """BLIP-2: a ViT encoder, a Q-Former of learned queries and an OPT decoder, as in blip2-opt-*.

    The processor expands ``num_query_tokens`` ``<image>`` placeholders in front of the text, and the
    config's ``image_token_index`` says which id they are (transformers 5 layout of the hub checkpoints).
    """
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor

    image_processor = BlipImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=MEAN, image_std=STD
    )
    processor = Blip2Processor(
        image_processor=image_processor, tokenizer=opt_tokenizer(), num_query_tokens=NUM_QUERY_TOKENS
    )
    tokenizer = processor.tokenizer
    image_token_index = tokenizer.convert_tokens_to_ids("<image>")
    text = _text_kwargs(len(tokenizer))
    text.update(
        model_type="opt",
        ffn_dim=text.pop("intermediate_size"),
        word_embed_proj_dim=text["hidden_size"],
        max_position_embeddings=128,
        bos_token_id=2,
        eos_token_id=2,
        pad_token_id=1,
        init_std=INIT,
        initializer_range=INIT,
    )
    vision = {**_vision_kwargs(), "initializer_range": INIT}
    qformer = {**_text_kwargs(len(tokenizer)), "cross_attention_frequency": 1, "initializer_range": INIT}
    config = Blip2Config(
        vision_config=vision,
        qformer_config=qformer,
        text_config=text,
        num_query_tokens=NUM_QUERY_TOKENS,
        image_token_index=image_token_index,
        initializer_range=INIT,
    )
    torch.manual_seed(11)
    model = Blip2ForConditionalGeneration(config).eval()
    # Queries start at zero in transformers; random ones make the Q-Former's outputs differ per query.
    with torch.no_grad():
        model.query_tokens.normal_(std=1.0)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@tiny("git")
def build_git(folder: Path) -> Path:
    """GIT: a CLIP-style image encoder whose patch tokens prefix a BERT-style causal decoder."""
    from transformers import CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

    tokenizer = wordpiece_tokenizer()
    text = _text_kwargs(len(tokenizer))
    text.update(bos_token_id=2, eos_token_id=3, pad_token_id=0, max_position_embeddings=128, initializer_range=INIT)
    vision = {**_vision_kwargs(), "initializer_range": INIT}
    config = GitConfig(vision_config=vision, **text)
    torch.manual_seed(12)
    GitForCausalLM(config).eval().save_pretrained(folder)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=MEAN,
        image_std=STD,
    )
    GitProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@tiny("git_video")
def build_git_video(folder: Path, frames: int = 4) -> Path:
    """GIT for video, laid out like ``microsoft/git-base-vatex``: ``num_image_with_embedding`` frames
    per clip, each with a learned temporal embedding, and a ``VideoMAEImageProcessor`` (mean and std
    0.5), which turns a list of frames into one clip's ``(1, frames, C, H, W)`` pixel values.

    The temporal embeddings start at zero in transformers; random ones make the frames' order matter.
    """
    from transformers import GitConfig, GitForCausalLM, GitProcessor, VideoMAEImageProcessor

    tokenizer = wordpiece_tokenizer()
    text = _text_kwargs(len(tokenizer))
    text.update(bos_token_id=2, eos_token_id=3, pad_token_id=0, max_position_embeddings=128, initializer_range=INIT)
    vision = {**_vision_kwargs(), "initializer_range": INIT}
    config = GitConfig(vision_config=vision, num_image_with_embedding=frames, **text)
    torch.manual_seed(13)
    model = GitForCausalLM(config).eval()
    with torch.no_grad():
        for embedding in model.git.img_temporal_embedding:
            embedding.normal_(std=1.0)
    model.save_pretrained(folder)
    image_processor = VideoMAEImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    GitProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder

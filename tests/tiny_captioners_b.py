"""Tiny, randomly initialised VisionEncoderDecoder (ViT + GPT-2) and Florence-2 captioning checkpoints.

Both are laid out as their hub checkpoints are (``nlpconnect/vit-gpt2-image-captioning``: an image
processor and a GPT-2 tokenizer, no processor config; ``florence-community/Florence-2-*``: a
``Florence2Processor`` with a BART tokenizer carrying Florence-2's task, location and image tokens)
and use a wider initialisation than the architectures' defaults so that a random model's captions
depend on the image. They register in ``tiny_models``' registry; ``python tests/tiny_models.py
/tmp/mmcli-tiny`` writes them with the others.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tiny_models import IMAGE_SIZE, MEAN, STD, _text_kwargs, _vision_kwargs, tiny

INIT = 0.2
# Printable ASCII: every character is a token, bare and after GPT-2's leading-space marker.
CHARS = [chr(code) for code in range(33, 127)]
SPACE = "Ġ"
# What the original Florence-2 processor adds to BART's vocabulary (location bins, task markers).
FLORENCE_TASK_TOKENS = ["<od>", "</od>", "<ocr>", "</ocr>"]
FLORENCE_TAIL_TOKENS = [
    "<cap>", "</cap>", "<ncap>", "</ncap>", "<dcap>", "</dcap>", "<grounding>", "</grounding>", "<seg>", "</seg>",
    "<sep>", "<region_cap>", "</region_cap>", "<region_to_desciption>", "</region_to_desciption>", "<proposal>",
    "</proposal>", "<poly>", "</poly>", "<and>",
]  # fmt: skip
NUM_LOCATION_TOKENS = 1000


def _byte_level_pieces() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Pieces and merges of a byte-level BPE vocabulary over printable ASCII (no ids assigned)."""
    pieces = CHARS + [SPACE + char for char in CHARS] + [SPACE]
    return {piece: i for i, piece in enumerate(pieces)}, [(SPACE, char) for char in CHARS]


def _space_is_special(tokenizer):
    """Mark the bare space marker special, so it is skipped when decoding with ``skip_special_tokens``.

    No token sequence then decodes to a run of spaces, and a random model's captions are
    single-spaced text, as a trained model's are.
    """
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken(SPACE, special=True, normalized=False)], special_tokens=True)
    return tokenizer


def gpt2_tokenizer():
    """A GPT-2 byte-level BPE tokenizer: ``<|endoftext|>`` last, as bos, eos and unk (GPT-2 has no pad)."""
    from transformers import GPT2Tokenizer

    pieces, merges = _byte_level_pieces()
    vocab = {**pieces, "<|endoftext|>": len(pieces)}
    return _space_is_special(GPT2Tokenizer(vocab=vocab, merges=merges))


def bart_tokenizer():
    """A BART (RoBERTa) byte-level BPE tokenizer extended as Florence-2's is.

    ``<s> <pad> </s> <unk>`` first and ``<mask>`` after the text pieces as in BART, then the task and
    ``<loc_*>`` tokens the original Florence-2 processor adds as special tokens, and ``<image>``, the
    processor's image placeholder, named ``image_token`` as the transformers conversion names it.
    """
    from transformers import BartTokenizer

    specials = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    pieces, merges = _byte_level_pieces()
    vocab = {**specials, **{piece: len(specials) + i for piece, i in pieces.items()}}
    vocab["<mask>"] = len(vocab)
    extra = FLORENCE_TASK_TOKENS + [f"<loc_{i}>" for i in range(NUM_LOCATION_TOKENS)] + FLORENCE_TAIL_TOKENS
    tokenizer = BartTokenizer(vocab=vocab, merges=merges, extra_special_tokens=extra, image_token="<image>")
    return _space_is_special(tokenizer)


@tiny("vision-encoder-decoder")
def build_vision_encoder_decoder(folder: Path) -> Path:
    """ViT encoder + GPT-2 decoder with cross-attention, saved as ``nlpconnect/vit-gpt2-image-captioning`` is:
    model, ``ViTImageProcessor`` and GPT-2 tokenizer, but no processor config."""
    from transformers import (
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    tokenizer = gpt2_tokenizer()
    end = tokenizer.eos_token_id
    text = _text_kwargs(len(tokenizer))
    decoder = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=text["hidden_size"],
        n_inner=text["intermediate_size"],
        n_layer=text["num_hidden_layers"],
        n_head=text["num_attention_heads"],
        n_positions=text["max_position_embeddings"],
        bos_token_id=end,
        eos_token_id=end,
        initializer_range=INIT,
        is_decoder=True,
        add_cross_attention=True,
    )
    encoder = ViTConfig(**_vision_kwargs(), initializer_range=INIT)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    # The hub checkpoints start decoding at <|endoftext|> and pad with it.
    config.decoder_start_token_id = end
    config.pad_token_id = end
    config.eos_token_id = end
    torch.manual_seed(2)
    VisionEncoderDecoderModel(config=config).eval().save_pretrained(folder)
    ViTImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@tiny("florence2")
def build_florence2(folder: Path) -> Path:
    """Florence-2: a two-stage DaViT image encoder whose projected tokens, with the task prompt's, feed a BART.

    A 32-pixel image leaves 4 x 4 patches after strides 4 and 2, plus one pooled token: the
    processor's ``image_seq_length`` placeholders.
    """
    from transformers import CLIPImageProcessor, Florence2Config, Florence2ForConditionalGeneration, Florence2Processor

    tokenizer = bart_tokenizer()
    hidden = 32
    vision = dict(
        depths=[1, 1],
        patch_size=[7, 3],
        patch_stride=[4, 2],
        patch_padding=[3, 1],
        patch_prenorm=[False, True],
        embed_dim=[16, hidden],
        num_heads=[2, 4],
        num_groups=[2, 4],
        window_size=4,
        drop_path_rate=0.0,
        projection_dim=hidden,
        initializer_range=INIT,
    )
    grid = IMAGE_SIZE // 4 // 2
    image_seq_length = grid * grid + 1
    text = dict(
        model_type="bart",
        vocab_size=len(tokenizer),
        d_model=hidden,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=hidden * 2,
        decoder_ffn_dim=hidden * 2,
        max_position_embeddings=128,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_eos_token_id=2,
        init_std=INIT,
        initializer_range=INIT,
    )
    config = Florence2Config(
        vision_config=vision, text_config=text, image_token_id=tokenizer.image_token_id, initializer_range=INIT
    )
    torch.manual_seed(3)
    model = Florence2ForConditionalGeneration(config).eval()
    # A trained Florence-2 writes location and task tokens only for the tasks that ask for them; a random
    # one would mostly write them (they are most of the vocabulary) and its captions, which skip special
    # tokens, would be empty. Zero embeddings (tied to the output layer) keep their logits at zero.
    with torch.no_grad():
        specials = [i for i in tokenizer.all_special_ids if i != tokenizer.eos_token_id]
        model.get_input_embeddings().weight[specials] = 0
    # The original checkpoints' generation settings: BART's </s> <s> start, beams, no repeated trigrams.
    # GenerationOptions passes num_beams explicitly, so captions must not depend on the saved 3.
    model.generation_config.update(forced_bos_token_id=0, num_beams=3, no_repeat_ngram_size=3, early_stopping=True)
    model.save_pretrained(folder)
    image_processor = CLIPImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=False,
        image_mean=MEAN,
        image_std=STD,
        image_seq_length=image_seq_length,
    )
    post_processor_config = {"pure_text": {}, "description_with_bboxes": {}, "bboxes": {}}
    Florence2Processor(
        image_processor=image_processor, tokenizer=tokenizer, post_processor_config=post_processor_config
    ).save_pretrained(folder)
    return folder

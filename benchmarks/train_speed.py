"""Training throughput: ``mmcli train caption`` against the plain transformers loop, in one run.

    python benchmarks/train_speed.py                    # BLIP-base layout at 224 pixels, 64 JPEGs, batch 8
    python benchmarks/train_speed.py --images 32 --image-size 160   # quicker

Both train the same random-init BLIP (``BlipConfig()``'s ViT-B/16 and BERT-base decoder, at
``--image-size``) for one epoch over the same 640x480 JPEGs and captions, batch ``--batch-size``,
AdamW at 1e-5, float32 (``--dtype float32``: the same numerics on every CPU):

- the plain loop: the processor on the decoded images and captions, ``model(**batch).loss``,
  ``backward``, ``optimizer.step`` (what the transformers fine-tuning tutorials write);
- mmcli: ``train_captioner``; its rate is the samples per second of the epoch's steps, from
  ``train_log.jsonl`` (validation, which the plain loop does not do, is not counted).

The ratio is mmcli's samples/s over the plain loop's; mmcli decodes every picture once, before the
first step, where the plain loop decodes each batch as it goes (its decoding is counted, as a user
of the loop waits for it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import make_images  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    import torch
    from PIL import Image
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    from mmcli.loading import native_bf16_cpu
    from mmcli.train import TrainOptions, train_captioner

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bfloat16: {native_bf16_cpu()}")
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        paths = make_images(folder / "images", args.images)
        words = ["a", "photo", "of", "an", "astronaut", "cat", "cup", "rocket", "galaxy", "cells", "on", "the", "table"]
        tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *words]
        tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=True)
        captions = [f"a photo of the {words[4 + index % 6]} on a table" for index in range(len(paths))]
        listing = folder / "pairs.jsonl"
        listing.write_text(
            "".join(json.dumps({"path": str(p), "caption": c}) + "\n" for p, c in zip(paths, captions, strict=True))
        )
        config = BlipConfig(text_config={"vocab_size": len(tokens), "bos_token_id": 5, "sep_token_id": 3,
                                         "pad_token_id": 0, "eos_token_id": 3},
                            vision_config={"image_size": args.image_size})  # fmt: skip
        torch.manual_seed(0)
        BlipForConditionalGeneration(config).save_pretrained(folder / "model")
        size = {"height": args.image_size, "width": args.image_size}
        processor = BlipProcessor(image_processor=BlipImageProcessor(size=size), tokenizer=tokenizer)
        processor.save_pretrained(folder / "model")

        # the plain loop
        model = BlipForConditionalGeneration.from_pretrained(folder / "model").train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        started = time.perf_counter()
        for start in range(0, len(paths), args.batch_size):
            images = [Image.open(p).convert("RGB") for p in paths[start : start + args.batch_size]]
            batch = processor(images=images, text=captions[start : start + args.batch_size], padding=True,
                              return_tensors="pt")  # fmt: skip
            loss = model(**batch, labels=batch["input_ids"]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        plain = len(paths) / (time.perf_counter() - started)
        del model, optimizer

        # mmcli
        options = TrainOptions(epochs=1, batch_size=args.batch_size, lr=1e-5, warmup=0.0, max_new_tokens=5,
                               val_fraction=min(0.5, max(1, args.batch_size // 4) / len(paths)))  # fmt: skip
        result = train_captioner(str(listing), folder / "out", model=str(folder / "model"), options=options,
                                 dtype="float32")  # fmt: skip
        steps = [line for line in (folder / "out" / "train_log.jsonl").read_text().splitlines() if '"loss"' in line]
        mmcli_rate = json.loads(steps[-1])["samples_per_s"]
        trained = result.train_pairs
    print(f"plain transformers loop: {plain:.2f} samples/s ({len(paths)} pairs)")
    print(f"mmcli train caption:     {mmcli_rate:.2f} samples/s ({trained} pairs, the rest held out)")
    print(f"ratio: {mmcli_rate / plain:.2f}x")


if __name__ == "__main__":
    main()

"""Tiny, randomly initialised checkpoints of real architectures, saved like hub models, and the one
registry of their builders.

The test suite (and anyone trying mmcli without network) builds these and loads them through exactly
the ``from_pretrained`` path a hub model takes. Every builder, here and in ``tiny_captioners_*.py``,
registers itself with :func:`tiny` under the name tests look its checkpoint up by; the suite builds
each on first use (:class:`TinyModels`). Run as a script to write them all to a folder:
``python tests/tiny_models.py /tmp/mmcli-tiny``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch

# A few sentences are enough for a character-level vocabulary that covers the test texts.
CORPUS = (
    "a photo of a cat. a dog runs on the grass! two people ride bicycles in the city, "
    "an astronaut in a white suit; a rocket on the launch pad? coffee in a cup 0123456789 "
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ the quick brown fox jumps over the lazy dog - xyz'\"()[]"
)
IMAGE_SIZE = 32
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]

Builder = Callable[[Path], Path]
REGISTRY: dict[str, Builder] = {}


def tiny(name: str) -> Callable[[Builder], Builder]:
    """Register a builder of the tiny checkpoint tests call ``name`` (saved as ``tiny-NAME``)."""

    def register(build: Builder) -> Builder:
        if name in REGISTRY:
            raise ValueError(f"two tiny builders are named {name!r}")
        REGISTRY[name] = build
        return build

    return register


def _chars() -> list[str]:
    return sorted(set(CORPUS.lower() + CORPUS) - {" "})


def clip_tokenizer():
    """A CLIP BPE tokenizer whose vocabulary is single characters (no merges)."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    for token in ["<|startoftext|>", "<|endoftext|>"]:
        vocab[token] = len(vocab)
    for char in _chars():
        for piece in (char, char + "</w>"):
            vocab.setdefault(piece, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[])


def wordpiece_tokenizer():
    """A BERT WordPiece tokenizer over single characters, as a sentence encoder would ship."""
    from transformers import BertTokenizer

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += [c for c in _chars() if c.lower() == c]
    tokens += ["##" + c for c in _chars() if c.lower() == c]
    return BertTokenizer(vocab={token: i for i, token in enumerate(tokens)}, do_lower_case=True)


def _vision_kwargs(hidden: int = 32) -> dict:
    return dict(
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=8,
    )


def _text_kwargs(vocab_size: int, hidden: int = 32) -> dict:
    return dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
    )


def _build_clip_like(folder: Path, config_class: type, model_class: type, seed: int, projection_dim: int) -> Path:
    """CLIP and MetaCLIP 2 share the architecture, tokenizer and processor; only the classes differ."""
    from transformers import CLIPImageProcessor, CLIPProcessor

    tokenizer = clip_tokenizer()
    text = _text_kwargs(len(tokenizer))
    text.update(bos_token_id=0, eos_token_id=1, pad_token_id=1)
    config = config_class(text_config=text, vision_config=_vision_kwargs(), projection_dim=projection_dim)
    torch.manual_seed(seed)
    model_class(config).eval().save_pretrained(folder)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=MEAN,
        image_std=STD,
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@tiny("clip")
def build_clip(folder: Path) -> Path:
    from transformers import CLIPConfig, CLIPModel

    return _build_clip_like(folder, CLIPConfig, CLIPModel, seed=0, projection_dim=24)


@tiny("siglip")
def build_siglip(folder: Path) -> Path:
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    tokenizer = clip_tokenizer()
    tokenizer.model_max_length = 16
    text = _text_kwargs(len(tokenizer))
    text.update(max_position_embeddings=16, pad_token_id=1, eos_token_id=1, bos_token_id=0)
    config = SiglipConfig(text_config=text, vision_config=_vision_kwargs())
    torch.manual_seed(1)
    SiglipModel(config).eval().save_pretrained(folder)
    image_processor = SiglipImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@tiny("siglip2")
def build_siglip2(folder: Path) -> Path:
    """SigLIP 2 (NaFlex): variable-resolution patches with an attention mask and spatial shapes."""
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model, Siglip2Processor

    tokenizer = clip_tokenizer()
    tokenizer.model_max_length = 64
    text = _text_kwargs(len(tokenizer))
    text.update(max_position_embeddings=64, pad_token_id=1, eos_token_id=1, bos_token_id=0)
    vision = _vision_kwargs()
    del vision["image_size"]
    # Siglip2Processor's call defaults (patch 16, 256 patches) override its image processor's config,
    # so the tiny model uses them too.
    vision.update(patch_size=16, num_patches=256)
    config = Siglip2Config(text_config=text, vision_config=vision)
    torch.manual_seed(4)
    Siglip2Model(config).eval().save_pretrained(folder)
    image_processor = Siglip2ImageProcessor(
        patch_size=16, max_num_patches=256, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    Siglip2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@tiny("metaclip2")
def build_metaclip2(folder: Path) -> Path:
    from transformers import MetaClip2Config, MetaClip2Model

    return _build_clip_like(folder, MetaClip2Config, MetaClip2Model, seed=5, projection_dim=16)


@tiny("dinov2")
def build_dinov2(folder: Path) -> Path:
    """DINOv2: its pooled output is the layer-normed CLS token (no dense pooler)."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    config = Dinov2Config(**_vision_kwargs())
    torch.manual_seed(6)
    Dinov2Model(config).eval().save_pretrained(folder)
    BitImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    ).save_pretrained(folder)
    return folder


@tiny("vit")
def build_vit(folder: Path) -> Path:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    config = ViTConfig(**_vision_kwargs())
    torch.manual_seed(2)
    ViTModel(config).eval().save_pretrained(folder)
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folder)
    return folder


IMAGE_LABELS = {0: "tabby cat", 1: "rocket", 2: "astronaut", 3: "coffee mug"}


@tiny("vit_classifier")
def build_vit_classifier(folder: Path) -> Path:
    """ViT fine-tuned for image classification (ViTForImageClassification), with named labels."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(**_vision_kwargs(), id2label=IMAGE_LABELS, label2id={v: k for k, v in IMAGE_LABELS.items()})
    torch.manual_seed(12)
    model = ViTForImageClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(30)  # probabilities that are not all alike
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folder)
    return folder


SOUND_LABELS = {0: "Speech", 1: "Music", 2: "Sine wave", 3: "Silence", 4: "Dog"}


@tiny("ast_classifier")
def build_ast_classifier(folder: Path) -> Path:
    """An Audio Spectrogram Transformer fine-tuned for audio classification (ASTForAudioClassification),
    as the AudioSet checkpoints are, at toy size: 32 mel bins, 1.28 s windows (128 frames of 10 ms)."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    config = ASTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_mel_bins=32,
        max_length=128, id2label=SOUND_LABELS, label2id={v: k for k, v in SOUND_LABELS.items()},
    )  # fmt: skip
    torch.manual_seed(13)
    model = ASTForAudioClassification(config).eval()
    with torch.no_grad():
        model.classifier.dense.weight.mul_(30)
    model.save_pretrained(folder)
    ASTFeatureExtractor(num_mel_bins=32, max_length=128).save_pretrained(folder)
    return folder


@tiny("bert")
def build_bert(folder: Path) -> Path:
    """A BERT sentence encoder laid out as sentence-transformers saves one (mean pooling)."""
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = wordpiece_tokenizer()
    config = BertConfig(**_text_kwargs(len(tokenizer)), type_vocab_size=2, pad_token_id=0)
    torch.manual_seed(3)
    BertModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    pooling = folder / "1_Pooling"
    pooling.mkdir(exist_ok=True)
    (pooling / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}))
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
            ]
        )
    )
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 48}))
    return folder


@tiny("blip")
def build_blip(folder: Path) -> Path:
    """BLIP captioning: a ViT encoder and a BERT decoder with cross-attention."""
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    tokenizer = wordpiece_tokenizer()
    text = _text_kwargs(len(tokenizer))
    # A wider initialisation than the default makes a random model's captions depend on the image,
    # so tests can tell images apart.
    text.update(bos_token_id=2, sep_token_id=3, pad_token_id=0, eos_token_id=3, initializer_range=0.2)
    vision = {**_vision_kwargs(), "initializer_range": 0.2}
    config = BlipConfig(text_config=text, vision_config=vision, initializer_range=0.2)
    torch.manual_seed(7)
    BlipForConditionalGeneration(config).eval().save_pretrained(folder)
    image_processor = BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


CLIP_FRAMES = 4  # frames per clip of the tiny video models


@tiny("xclip")
def build_xclip(folder: Path) -> Path:
    """X-CLIP: CLIP towers plus a multi-frame integration transformer and a prompt generator, whose
    widths must equal the projection; the processor is XCLIPProcessor with VideoMAE's image processor."""
    from transformers import VideoMAEImageProcessor, XCLIPConfig, XCLIPModel, XCLIPProcessor

    tokenizer = clip_tokenizer()
    text = _text_kwargs(len(tokenizer))
    text.update(bos_token_id=0, eos_token_id=1, pad_token_id=1)
    projection = 24
    vision = {
        **_vision_kwargs(),
        "num_frames": CLIP_FRAMES,
        "mit_hidden_size": projection,
        "mit_intermediate_size": projection * 2,
        "mit_num_hidden_layers": 1,
        "mit_num_attention_heads": 4,
    }
    config = XCLIPConfig(
        text_config=text,
        vision_config=vision,
        projection_dim=projection,
        prompt_layers=1,
        prompt_attention_heads=4,
        prompt_num_attention_heads=4,
    )
    torch.manual_seed(8)
    XCLIPModel(config).eval().save_pretrained(folder)
    image_processor = VideoMAEImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=MEAN,
        image_std=STD,
    )
    XCLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@tiny("videomae")
def build_videomae(folder: Path) -> Path:
    """VideoMAE fine-tuned for video classification with mean pooling (so it has a trained ``fc_norm``),
    as the Kinetics checkpoints are; tubelets of 2 frames x 8x8 pixels."""
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification, VideoMAEImageProcessor

    labels = {0: "archery", 1: "juggling balls", 2: "playing guitar"}  # Kinetics-style classes
    config = VideoMAEConfig(
        **_vision_kwargs(), num_frames=CLIP_FRAMES, tubelet_size=2, use_mean_pooling=True, id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )  # fmt: skip
    torch.manual_seed(9)
    model = VideoMAEForVideoClassification(config).eval()
    with torch.no_grad():  # a non-trivial fc_norm, so tests can tell whether it was applied
        model.fc_norm.weight.uniform_(0.5, 1.5)
        model.fc_norm.bias.uniform_(-0.5, 0.5)
    model.save_pretrained(folder)
    VideoMAEImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    ).save_pretrained(folder)
    return folder


def hub_layout(home: Path, repo_id: str, checkpoint: Path) -> Path:
    """Lay ``checkpoint`` out in the Hugging Face cache under ``home`` (an ``HF_HOME``) as a download of
    ``repo_id``, so the hub client finds it there offline; returns ``home``."""
    revision = "0" * 40
    model = home / "hub" / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(checkpoint, model / "snapshots" / revision)
    (model / "refs").mkdir(exist_ok=True)
    (model / "refs" / "main").write_text(revision)
    return home


def registry() -> dict[str, Builder]:
    """Every tiny builder by name, encoders' and captioners' alike (the captioner modules register on import)."""
    import tiny_audio  # noqa: F401
    import tiny_captioners_a  # noqa: F401
    import tiny_captioners_b  # noqa: F401
    import tiny_captioners_c  # noqa: F401
    import tiny_libraries  # noqa: F401

    return REGISTRY


STAMP = ".tiny-stamp.json"  # each saved file's size and modification time, written when the build ended


class TinyModels(Mapping[str, Path]):
    """The tiny checkpoints under ``root``, each built the first time it is looked up, so a run that
    needs two models builds two; one already under ``root`` (a cache kept across runs, see
    :func:`cache_folder`) is used as it is, unless a file of it changed since it was built.

    A checkpoint is built in a folder of its own beside ``root``'s and renamed into place whole, so
    parallel test processes building the same one never see half of it. Builders seed torch
    themselves; building under a forked RNG keeps a lazy build in the middle of a test from changing
    the global random state that test sees.
    """

    def __init__(self, root: Path, builders: Mapping[str, Builder] | None = None) -> None:
        self.root = root
        self.builders = registry() if builders is None else builders
        self._built: dict[str, Path] = {}

    def __getitem__(self, name: str) -> Path:
        if name not in self._built:
            if name not in self.builders:
                raise KeyError(f"no tiny checkpoint named {name!r}; known: {', '.join(sorted(self.builders))}")
            self._built[name] = self._build(name)
        return self._built[name]

    def _build(self, name: str) -> Path:
        final = self.root / f"tiny-{name}"
        if _intact(final):
            return final
        self.root.mkdir(parents=True, exist_ok=True)
        if final.exists():  # changed since it was built (or left half-made by an older layout): set aside
            with contextlib.suppress(OSError):
                final.rename(self.root / f".stale-{name}-{os.getpid()}")
                shutil.rmtree(self.root / f".stale-{name}-{os.getpid()}", ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".building-{name}-", dir=self.root))
        try:
            with torch.random.fork_rng(devices=[]):
                built = self.builders[name](staging / final.name)
            assert built == staging / final.name, f"the {name} builder saved elsewhere: {built}"
            (built / STAMP).write_text(json.dumps(_stamps(built)))
            with contextlib.suppress(OSError):  # another process renamed its own build first: use that
                built.rename(final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return final

    def __contains__(self, name: object) -> bool:
        return name in self.builders  # without building it, as Mapping's default would

    def __iter__(self) -> Iterator[str]:
        return iter(self.builders)

    def __len__(self) -> int:
        return len(self.builders)


def _stamps(folder: Path) -> dict[str, list[int]]:
    return {
        str(path.relative_to(folder)): [path.stat().st_size, path.stat().st_mtime_ns]
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != STAMP
    }


def _intact(folder: Path) -> bool:
    try:
        return json.loads((folder / STAMP).read_text()) == _stamps(folder)
    except (OSError, ValueError):
        return False


def cache_folder() -> Path:
    """Where tiny checkpoints are kept across test runs: ``$MMCLI_TEST_CACHE``, else
    ``~/.cache/mmcli-tests``, in a folder named by the torch and transformers versions and a digest of
    the builders' source, so a new release or a changed builder builds afresh."""
    import hashlib

    import transformers

    base = os.environ.get("MMCLI_TEST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mmcli-tests"
    )
    digest = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("tiny_*.py")):
        digest.update(source.read_bytes())
    name = f"tiny-torch-{torch.__version__}-transformers-{transformers.__version__}-{digest.hexdigest()[:12]}"
    return Path(base) / name


def build_all(root: Path) -> dict[str, Path]:
    """Every tiny checkpoint, built now, under ``root``."""
    return dict(TinyModels(root))


if __name__ == "__main__":
    # Every tiny checkpoint the suite uses, encoders and captioners alike, to try commands offline.
    sys.path.insert(0, str(Path(__file__).parent))
    import tiny_models  # the registry the builders fill is that module's, not this script's copy

    models = tiny_models.TinyModels(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-models"))
    for name in models:
        print(f"{name}\t{models[name]}", flush=True)

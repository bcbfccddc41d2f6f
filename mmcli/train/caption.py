"""``mmcli train caption``: fine-tune a captioner on image-caption pairs, keeping the best checkpoint.

The loop is the families' own fine-tuning recipe (:mod:`mmcli.train.families`): AdamW, linear
warm-up then cosine decay, gradient accumulation, bf16 / fp16 autocast where the device multiplies
them natively. Each epoch is scored on the validation pairs, by the teacher-forced loss and by the
CIDEr-D of greedy captions (the same scorer as ``mmcli evaluate captions``); the best epoch's
weights are saved with their processor in ``save_pretrained`` layout, so every command loads the
folder as it loads a hub model. Early stopping watches CIDEr-D (``patience``).

A run is resumable: every ``save_every`` optimiser steps and at each epoch's end the model, the
optimiser, the schedule, the random states and the position in the epoch's (seeded) order are
saved to ``OUT_DIR/checkpoint/``, and the same command continues from there, to the weights an
uninterrupted run ends with. Nothing in the loop depends on anything a checkpoint does not hold.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from mmcli.errors import OutputExists, UsageError, install_hint, option
from mmcli.io.parquet import Columns
from mmcli.output.destination import writes
from mmcli.reporting import Reporter
from mmcli.settings import describe_differences
from mmcli.train.data import Pair, discover_pairs, load_pairs, split_pairs
from mmcli.train.families import TrainableFamily, trainable_family

CHECKPOINT = "checkpoint"
LOG = "train_log.jsonl"
CURVES = "curves.png"
STATE = "train_state.json"
ADAPTER = "adapter"
VAL_CAPTIONS = "val_captions.jsonl"
STATE_VERSION = 1


@dataclass(frozen=True)
class TrainOptions:
    """The settings of a run; every one of them is part of what a resume must match."""

    epochs: int = 3
    batch_size: int = 16
    lr: float = 5e-5
    grad_accum: int = 1
    warmup: float = 0.1  # fraction of the optimiser steps spent warming up
    weight_decay: float = 0.01
    freeze_vision: bool = False
    lora_rank: int | None = None
    seed: int = 0
    patience: int = 0  # epochs without a better CIDEr-D before stopping; 0: never stop early
    val_fraction: float = 0.1
    max_length: int = 40  # tokens per caption, start and end included
    max_new_tokens: int = 30  # of the validation captions
    save_every: int = 200  # optimiser steps between resumable checkpoints
    max_pixels: int = 0  # 0: the decoder's default

    def check(self) -> None:
        for name, least in (("epochs", 1), ("batch_size", 1), ("grad_accum", 1), ("max_length", 3),
                            ("max_new_tokens", 1), ("save_every", 1)):  # fmt: skip
            if getattr(self, name) < least:
                raise UsageError(f"{option(name)} is at least {least}, not {getattr(self, name)}")
        if self.lr <= 0 or not 0 <= self.warmup < 1 or self.weight_decay < 0 or self.patience < 0:
            raise UsageError(
                f"{option('lr')} is above 0, {option('warmup')} in [0, 1), {option('weight_decay')} and "
                f"{option('patience')} at least 0"
            )
        if self.lora_rank is not None and self.lora_rank < 1:
            raise UsageError(f"{option('lora_rank')} is at least 1, not {self.lora_rank}")


@dataclass
class TrainResult:
    output: Path
    family: str
    train_pairs: int
    val_pairs: int
    skipped: int
    steps: int
    epochs: int  # epochs run (fewer than asked when stopped early)
    best_epoch: int
    best_cider: float
    untrained_cider: float
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)  # the epoch lines of the log
    resumed_from_step: int = 0


@writes("output")
def train_captioner(
    train: str,
    output: str | os.PathLike[str],
    *,
    model: str,
    val: str | None = None,
    columns: Columns | None = None,
    options: TrainOptions | None = None,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    overwrite: bool = False,
    restart: bool = False,
    reporter: Reporter | None = None,
    stdin: IO[str] | None = None,
) -> TrainResult:
    """Fine-tune ``model`` (a hub id or folder) on the pairs of ``train`` into the folder ``output``.

    ``train`` and ``val`` are a JSONL file or ``-`` of ``{"path", "caption" | "captions"}`` records, or
    shards / Parquet tables with captions; without ``val``, ``options.val_fraction`` of ``train`` is held
    out (seeded). Everything that can be refused is refused before the first step."""
    import torch

    from mmcli import loading
    from mmcli.captioners.registry import CAPTIONERS

    options = options or TrainOptions()
    options.check()
    reporter = reporter or Reporter()
    out = Path(output)
    fingerprint = {"model": model, "train": train, "val": val, "options": asdict(options),
                   "version": STATE_VERSION}  # fmt: skip
    resume = _check_output(out, fingerprint, overwrite=overwrite, restart=restart)

    resolved_device = loading.resolve_device(device)
    autocast_dtype = _autocast_dtype(dtype, resolved_device)
    config = loading.load_config(model, trust_remote_code=trust_remote_code)
    captioner_family = CAPTIONERS.family_for(config, model).name
    family_class = trainable_family(captioner_family, model)
    if not family_class.full and options.lora_rank is None:
        raise UsageError(f"{family_class.name} models are trained through LoRA adapters: give {option('lora_rank')}")

    path = os.path.expanduser(model)
    with reporter.loading(model):
        net = loading.from_pretrained(family_class.model_class, model, path, dtype=torch.float32,
                                      trust_remote_code=trust_remote_code)  # fmt: skip
        processor = family_class.load_processor(model, path, trust_remote_code=trust_remote_code)
    family = family_class(net, processor)

    size = _input_size(processor)
    read = {"size": size, "max_pixels": options.max_pixels or _default_max_pixels(), "reporter": reporter}
    train_set = load_pairs(discover_pairs(train, columns=columns, stdin=stdin), what="training pairs", **read)
    if not train_set.pairs:
        raise UsageError(f"no readable image-caption pair in {train} ({train_set.skipped} skipped)")
    skipped = train_set.skipped
    if val is not None:
        val_set = load_pairs(discover_pairs(val, columns=columns, stdin=stdin), what="validation pairs", **read)
        if not val_set.pairs:
            raise UsageError(f"no readable image-caption pair in the validation set {val} ({val_set.skipped} skipped)")
        skipped += val_set.skipped
        train_pairs, val_pairs = train_set.pairs, val_set.pairs
    else:
        train_pairs, val_pairs = split_pairs(train_set.pairs, options.val_fraction, options.seed)
    _check_captions(family, train_pairs + val_pairs, options.max_length)

    torch.manual_seed(options.seed)
    if options.lora_rank is not None:
        net = _with_lora(family, options.lora_rank)
    if options.freeze_vision:
        for module in family.vision():
            module.requires_grad_(False)
    net.to(resolved_device).train()
    if autocast_dtype is not None:
        reporter.note(f"training in {str(autocast_dtype).replace('torch.', '')} autocast on {resolved_device}")
    trainer = _Trainer(family, net, train_pairs, val_pairs, options, resolved_device, autocast_dtype, reporter)
    started = time.monotonic()
    trainer.run(out, fingerprint, resume)
    _write_curves(out)
    result = TrainResult(
        output=out, family=family_class.name, train_pairs=len(train_pairs), val_pairs=len(val_pairs),
        skipped=skipped, steps=trainer.step, epochs=trainer.epochs_run, best_epoch=trainer.best_epoch,
        best_cider=trainer.best_cider, untrained_cider=trainer.untrained_cider,
        seconds=time.monotonic() - started, history=trainer.history, resumed_from_step=trainer.resumed_from,
    )  # fmt: skip
    return result


def _check_output(out: Path, fingerprint: dict[str, Any], *, overwrite: bool, restart: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from, if any; refuses a finished folder and one left by other settings."""
    state_path = out / STATE
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file; -o names the folder the trained model is saved in")
    folder = out if out.is_dir() else out.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        why = "does not exist" if not folder.is_dir() else "is not writable"
        raise UsageError(f"cannot write {out}/: folder {str(folder)!r} {why}")
    if state_path.exists() and not overwrite:
        raise OutputExists(f"{out} already holds a trained model; pass --overwrite to train it again")
    checkpoint = out / CHECKPOINT / "state.json"
    if checkpoint.exists() and not restart and not overwrite:
        saved = json.loads(checkpoint.read_text())
        if saved.get("fingerprint") != fingerprint:
            differs = describe_differences(saved.get("fingerprint", {}), fingerprint, first_only=True)
            raise UsageError(
                f"{out} holds an unfinished training run with other settings ({differs}); run the same command "
                "again to resume it, or pass --restart to discard it"
            )
        return saved
    if out.is_dir() and (overwrite or restart):
        for name in (CHECKPOINT, STATE, LOG, CURVES, ADAPTER, VAL_CAPTIONS):
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    elif out.is_dir() and any(out.iterdir()) and not checkpoint.exists():
        raise OutputExists(f"{out} is a folder that is not empty; name a new one, or pass --overwrite")
    return None


def _autocast_dtype(dtype: str, device: str) -> Any:
    """The autocast dtype (``None``: plain float32): what ``--dtype auto`` would run the model in."""
    import torch

    from mmcli import loading

    if dtype == "float32":
        return None
    chosen = loading.resolve_dtype(dtype, device)
    if chosen == torch.float16 and device.startswith("cuda") and torch.cuda.is_bf16_supported() and dtype == "auto":
        chosen = torch.bfloat16  # training: bf16 keeps float32's range, so no loss scaling is needed
    return None if chosen == torch.float32 else chosen


def _default_max_pixels() -> int:
    from mmcli.media.images import DEFAULT_MAX_PIXELS

    return DEFAULT_MAX_PIXELS


def _input_size(processor: Any) -> tuple[int, int] | None:
    """The (width, height) the processor resizes every image to, if fixed: pictures are kept at it."""
    image_processor = getattr(processor, "image_processor", processor)
    size = getattr(image_processor, "size", None)
    if getattr(image_processor, "do_center_crop", False) or not (
        isinstance(size, dict) and {"height", "width"} <= size.keys()
    ):
        return None  # (a crop, a shortest edge or tiles: the processor sees the original picture)
    return int(size["width"]), int(size["height"])


def _check_captions(family: TrainableFamily, pairs: Sequence[Pair], max_length: int) -> None:
    for pair in pairs:
        for caption in pair.captions:
            if not family.caption_ids(caption, max_length):
                raise UsageError(f"the caption {caption!r} of {pair.source} tokenises to nothing for this model")


def _with_lora(family: TrainableFamily, rank: int) -> Any:
    """The model with LoRA adapters on its attention projections (only they train)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise UsageError(f"{option('lora_rank')} needs peft: {install_hint('train')}") from None
    present = {name.rsplit(".", 1)[-1] for name, _ in family.model.named_modules()}
    targets = [t for t in family.lora_targets if t in present]
    if not targets:
        raise UsageError(f"no module of this {family.name} model is one LoRA adapts ({', '.join(family.lora_targets)})")
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=family.lora_pattern or targets)
    wrapped = get_peft_model(family.model, config)
    family.model = wrapped
    return wrapped


class _Trainer:
    def __init__(self, family: TrainableFamily, model: Any, train: list[Pair], val: list[Pair],
                 options: TrainOptions, device: str, autocast_dtype: Any, reporter: Reporter) -> None:  # fmt: skip
        import torch
        from transformers import get_cosine_schedule_with_warmup

        self.family, self.model, self.train, self.val = family, model, train, val
        self.options, self.device, self.autocast_dtype, self.reporter = options, device, autocast_dtype, reporter
        self.batches_per_epoch = math.ceil(len(train) / options.batch_size)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / options.grad_accum)
        self.total_steps = self.steps_per_epoch * options.epochs
        trainable = [p for p in model.parameters() if p.requires_grad]
        decay = [p for p in trainable if p.ndim >= 2]
        no_decay = [p for p in trainable if p.ndim < 2]  # biases and norms, as the reference recipes do
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": options.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=options.lr,
        )
        self.scheduler = get_cosine_schedule_with_warmup(
            self.optimizer, round(options.warmup * self.total_steps), self.total_steps
        )
        self.step = 0
        self.epochs_run = 0
        self.best_epoch, self.best_cider, self.untrained_cider, self.waited = 0, -1.0, 0.0, 0
        self.history: list[dict[str, Any]] = []
        self.resumed_from = 0

    # -- the loop --------------------------------------------------------------------------
    def run(self, out: Path, fingerprint: dict[str, Any], resume: dict[str, Any] | None) -> None:
        out.mkdir(parents=True, exist_ok=True)
        epoch, position = 1, 0
        if resume is not None:
            epoch, position = self._restore(out, resume)
            self.resumed_from = self.step
            self.reporter.note(
                f"resuming: step {self.step} of {self.total_steps} (epoch {epoch}) from {out / CHECKPOINT}"
            )
        else:
            (out / LOG).write_text("")
            scores = self.validate()
            self.untrained_cider = scores["cider"]
            self._log(out, {"epoch": 0, "step": 0, **scores})
        stopped = False
        with self.reporter.progress(self.total_steps, unit="step", desc="training") as bar:
            bar.update(self.step)
            while epoch <= self.options.epochs and not stopped:
                position = self._epoch(out, fingerprint, epoch, position, bar)
                scores = self.validate()
                improved = scores["cider"] > self.best_cider
                if improved:
                    self.best_epoch, self.best_cider, self.waited = epoch, scores["cider"], 0
                    self._save_best(out)
                    self._write_val_captions(out)
                else:
                    self.waited += 1
                self.epochs_run = epoch
                line = {"epoch": epoch, "step": self.step, **scores, "best": improved}
                self._log(out, line)
                self.history.append(line)
                stopped = bool(self.options.patience) and self.waited >= self.options.patience
                if stopped:
                    self.reporter.note(f"stopping early: CIDEr-D has not improved for {self.waited} epochs")
                epoch, position = epoch + 1, 0
                self._checkpoint(out, fingerprint, epoch, position, stopped=stopped)
        state = {"complete": True, "best_epoch": self.best_epoch, "best_cider": self.best_cider,
                 "untrained_cider": self.untrained_cider, "steps": self.step, "epochs": self.epochs_run,
                 "fingerprint": fingerprint}  # fmt: skip
        (out / STATE).write_text(json.dumps(state, indent=2) + "\n")
        shutil.rmtree(out / CHECKPOINT, ignore_errors=True)

    def _epoch(self, out: Path, fingerprint: dict[str, Any], epoch: int, position: int, bar: Any) -> int:
        """One epoch from batch ``position`` of its order; returns the batches done."""
        import torch

        order = self.order(epoch)
        batch_size = self.options.batch_size
        accumulated, started, seen, losses = 0, time.monotonic(), 0, []
        for index in range(position, self.batches_per_epoch):
            chosen = [self.train[i] for i in order[index * batch_size : (index + 1) * batch_size]]
            group = min(self.options.grad_accum, self.batches_per_epoch - (index - index % self.options.grad_accum))
            loss = self.loss(chosen, epoch=epoch) / group
            loss.backward()
            losses.append(float(loss.detach()) * group)
            accumulated += 1
            seen += len(chosen)
            if accumulated == group:
                norm = torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], 1.0)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                accumulated = 0
                rate = seen / max(time.monotonic() - started, 1e-9)
                mean = sum(losses) / len(losses)
                line = {"step": self.step, "epoch": epoch, "loss": round(mean, 6), "grad_norm": float(norm),
                        "lr": self.scheduler.get_last_lr()[0], "samples_per_s": round(rate, 2)}  # fmt: skip
                self._log(out, line)
                losses = []
                bar.update(1)
                postfix = getattr(bar, "set_postfix_str", None)
                if postfix is not None:
                    postfix(f"loss {mean:.3f}, {rate:.1f} samples/s", refresh=False)
                if self.step % self.options.save_every == 0 and index + 1 < self.batches_per_epoch:
                    self._checkpoint(out, fingerprint, epoch, index + 1)
        return self.batches_per_epoch

    def order(self, epoch: int) -> list[int]:
        """The epoch's shuffled order: from the seed and the epoch alone, so a resumed run sees the same."""
        import torch

        generator = torch.Generator().manual_seed(self.options.seed * 100_003 + epoch)
        return torch.randperm(len(self.train), generator=generator).tolist()

    def loss(self, pairs: Sequence[Pair], *, epoch: int) -> Any:
        """The model's own loss on a batch, each pair with one of its captions (chosen by epoch, so
        every caption of an image is seen in turn)."""
        captions = [pair.captions[(epoch - 1) % len(pair.captions)] for pair in pairs]
        batch = self.family.batch([pair.image for pair in pairs], captions, self.options.max_length)
        batch = {key: value.to(self.device) for key, value in batch.items()}
        with self._autocast():
            return self.model(**batch).loss

    def _autocast(self) -> Any:
        import torch

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.split(":")[0], dtype=self.autocast_dtype)

    # -- validation ------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Teacher-forced loss and the CIDEr-D of greedy captions, on the validation pairs."""
        import torch

        from mmcli.captioners.base import GenerationOptions
        from mmcli.metrics.captions import evaluate_captions

        self.model.eval()
        total, count, predictions = 0.0, 0, {}
        batch_size = self.options.batch_size
        generation = GenerationOptions(max_new_tokens=self.options.max_new_tokens)
        with torch.inference_mode():
            for start in range(0, len(self.val), batch_size):
                pairs = self.val[start : start + batch_size]
                total += float(self.loss(pairs, epoch=1)) * len(pairs)
                count += len(pairs)
                for pair, text in zip(pairs, self._generate([p.image for p in pairs], generation), strict=True):
                    predictions[pair.id] = text
        self.model.train()
        references = {pair.id: pair.captions for pair in self.val}
        cider = evaluate_captions(predictions, references, ["cider"]).corpus["CIDEr"] or 0.0
        self.predictions = predictions
        return {"val_loss": round(total / max(count, 1), 6), "cider": round(float(cider), 6)}

    def _generate(self, images: Sequence[Any], generation: Any) -> list[str]:
        """Greedy captions through the family's own captioner, as ``mmcli caption`` writes them."""
        with self._autocast():
            return self.family.captioner().generate(list(images), options=generation)

    # -- files -----------------------------------------------------------------------------
    def _log(self, out: Path, line: dict[str, Any]) -> None:
        with open(out / LOG, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")

    def _save_best(self, out: Path) -> None:
        """The weights and processor in ``save_pretrained`` layout (a LoRA run: merged, plus its adapter)."""
        import copy

        staging = out / ".best.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        model = self.family.model
        if hasattr(model, "merge_and_unload"):
            model.save_pretrained(staging / ADAPTER)
            merged = copy.deepcopy(model).merge_and_unload()
            merged.save_pretrained(staging)
        else:
            model.save_pretrained(staging)
        processor = self.family.processor
        for part in [processor] if hasattr(processor, "save_pretrained") else vars(processor).values():
            part.save_pretrained(staging)  # (a processor, or an image processor and a tokenizer saved apart)
        for entry in staging.iterdir():
            target = out / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)
        staging.rmdir()

    def _write_val_captions(self, out: Path) -> None:
        """The kept epoch's captions of the validation pictures, beside their references."""
        with open(out / VAL_CAPTIONS, "w", encoding="utf-8") as handle:
            for pair in self.val:
                record = {"id": pair.id, "source": pair.source, "caption": self.predictions[pair.id],
                          "references": pair.captions}  # fmt: skip
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    def _checkpoint(self, out: Path, fingerprint: dict[str, Any], epoch: int, position: int, *,
                    stopped: bool = False) -> None:  # fmt: skip
        """Everything the loop depends on, written beside and then swapped in (never half a checkpoint)."""
        import numpy as np
        import torch

        staging = out / f"{CHECKPOINT}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        trainable = {name: p.detach() for name, p in self.model.named_parameters() if p.requires_grad}
        torch.save({"model": trainable, "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                    "numpy_rng": np.random.get_state(), "python_rng": random.getstate()},
                   staging / "training.pt")  # fmt: skip
        state = {"fingerprint": fingerprint, "epoch": epoch, "position": position, "step": self.step,
                 "log_bytes": (out / LOG).stat().st_size, "best_epoch": self.best_epoch,
                 "best_cider": self.best_cider, "untrained_cider": self.untrained_cider, "waited": self.waited,
                 "epochs_run": self.epochs_run, "history": self.history, "stopped": stopped}  # fmt: skip
        (staging / "state.json").write_text(json.dumps(state))
        old = out / f"{CHECKPOINT}.old"
        shutil.rmtree(old, ignore_errors=True)
        if (out / CHECKPOINT).exists():
            os.replace(out / CHECKPOINT, old)
        os.replace(staging, out / CHECKPOINT)
        shutil.rmtree(old, ignore_errors=True)

    def _restore(self, out: Path, state: dict[str, Any]) -> tuple[int, int]:
        import torch

        saved = torch.load(out / CHECKPOINT / "training.pt", weights_only=False)
        parameters = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in saved["model"].items():
                parameters[name].copy_(value)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        import numpy as np

        np.random.set_state(saved["numpy_rng"])
        random.setstate(saved["python_rng"])
        with open(out / LOG, "rb+") as handle:  # what was logged after the checkpoint is done again
            handle.truncate(state["log_bytes"])
        self.step, self.best_epoch, self.best_cider = state["step"], state["best_epoch"], state["best_cider"]
        self.untrained_cider, self.waited = state["untrained_cider"], state["waited"]
        self.epochs_run, self.history = state["epochs_run"], state["history"]
        if state.get("stopped"):
            return self.options.epochs + 1, 0
        return state["epoch"], state["position"]


def read_log(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The lines of a run's ``train_log.jsonl``."""
    with open(Path(folder) / LOG, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _write_curves(out: Path) -> None:
    from mmcli.train.curves import draw_curves

    draw_curves(read_log(out), out / CURVES)

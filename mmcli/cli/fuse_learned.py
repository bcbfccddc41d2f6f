"""``mmcli fuse --truth`` / ``--head``: train a fusion head, or apply a saved one, and say what it did."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mmcli.cli.common import note
from mmcli.errors import UsageError
from mmcli.fusion import HEAD_METHODS

NO_OUTPUT = "give -o OUT.npy for the fused feature set (its .jsonl sidecar goes beside it)"


def fuse_learned(
    paths: list[Path],
    method: str | None,
    labels: Path | None,
    head: Path | None,
    save_head: Path | None,
    predict: bool,
    output: Path | None,
    training: dict[str, Any],
    shared: dict[str, Any],
    *,
    quiet: bool,
) -> None:
    """Refuse flags that do not go together, make the run, report its training and output on stderr."""
    from mmcli.fusion import run

    if labels is not None and head is not None:
        raise UsageError("give --truth to train a head or --head to apply one, not both")
    if labels is not None and method not in (None, *HEAD_METHODS):
        raise UsageError(f"learned fusion methods are {', '.join(HEAD_METHODS)}; --method {method} is not one")
    if output is None and not predict:
        raise UsageError(NO_OUTPUT)
    if save_head is not None and head is not None:
        raise UsageError("--save-head saves a head trained with --truth")
    if head is not None:
        done = run.apply_fusion_head(paths, head, output=output, predict=predict, method=method, **shared)
    else:
        from mmcli.fusion.learned import TrainingOptions

        assert labels is not None
        options = TrainingOptions(method=method or "attention", **training)
        on_epoch = None if quiet else _show_epoch
        done = run.train_fusion(
            paths,
            labels,
            output=output,
            predict=predict,
            save_head=save_head,
            options=options,
            on_epoch=on_epoch,
            **shared,
        )
        _summarise(done, quiet)
    if not predict:
        kind = done.head.config["method"]
        note(f"wrote {done.rows} fused rows of width {done.width} ({kind} head) to {output}", quiet=quiet)


def _show_epoch(log: Any) -> None:
    line = f"epoch {log.epoch:4d}  train loss {log.train_loss:.4f} acc {log.train_accuracy:.3f}"
    if log.val_loss is not None:
        line += f"  val loss {log.val_loss:.4f} acc {log.val_accuracy:.3f}"
    print(line, file=sys.stderr, flush=True)


def _summarise(done: Any, quiet: bool) -> None:
    """How training went (the epoch whose weights were kept), and where the head was saved."""
    from mmcli.fusion.learned import best_epoch

    history, kind = done.head.history, done.head.config["method"]
    if history and not quiet:
        best = best_epoch(history)
        if best is not None:
            note(
                f"{kind} head on {done.labelled} labelled rows: best validation loss {best.val_loss:.4f}, "
                f"accuracy {best.val_accuracy:.3f} at epoch {best.epoch} of {len(history)}"
            )
        else:
            note(
                f"{kind} head on {done.labelled} labelled rows: training accuracy "
                f"{history[-1].train_accuracy:.3f} after {len(history)} epochs (no validation split)"
            )
    if done.saved:
        note(f"saved the head to {', '.join(map(str, done.saved))}", quiet=quiet)

"""Every default a help text states in words is the code's default.

Typer prints most defaults itself, from the code; where a default depends on the model or the device,
the help says it in words (``[default: 16 on a CPU, 64 on a GPU]``). Each number such a text states is
held here to the value the code uses, so a changed default cannot leave its help behind; a new stated
default fails the first test until it is added to :data:`STATED`.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

STATED_DEFAULT = re.compile(r"\\?\[default: ([^\]]*)\]")
NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _batch_sizes(*classes: type) -> list[float]:
    return [size for cls in classes for size in (cls.cpu_batch_size, cls.gpu_batch_size)]


def _encoder_batches() -> list[float]:
    from mmcli.encoders.audio import ClapEncoder
    from mmcli.encoders.base import Encoder

    return _batch_sizes(Encoder, ClapEncoder)


def _captioner_batches() -> list[float]:
    from mmcli.captioners.base import Captioner

    return _batch_sizes(Captioner)


def _transcriber_batches() -> list[float]:
    from mmcli.speech import Transcriber

    return _batch_sizes(Transcriber)


def _query_batch() -> list[float]:
    from mmcli.cli.retrieve import retrieve

    return [inspect.signature(retrieve).parameters["batch_size"].default]


def _most_workers() -> list[float]:
    from unittest import mock

    from mmcli.pipeline import default_workers

    with mock.patch("os.cpu_count", return_value=1024):
        return [default_workers()]


def _shard_rows() -> list[float]:
    from mmcli.output.sharded import DEFAULT_SHARD_ROWS

    return [DEFAULT_SHARD_ROWS]


def _frame_rate() -> list[float]:
    from mmcli.media.video import SamplingOptions

    return [SamplingOptions().fps]


def _rows_per_list() -> list[float]:
    from mmcli.ann import TRAINING_ROWS_PER_LIST, default_nlist

    assert default_nlist(1_000_000) == 1_000  # the square root
    assert default_nlist(1_000) == 1_000 // TRAINING_ROWS_PER_LIST  # where the root would leave fewer a list
    return [TRAINING_ROWS_PER_LIST]


def _default_clip() -> list[float]:
    from mmcli.encoders import DEFAULT_MODEL

    assert DEFAULT_MODEL == "openai/clip-vit-base-patch32"  # the ViT-B/32 the help names
    return [32]


def _clap_window() -> list[float]:
    from transformers import ClapFeatureExtractor

    return [inspect.signature(ClapFeatureExtractor.__init__).parameters["max_length_s"].default]


def _whisper_window() -> list[float]:
    from transformers import WhisperFeatureExtractor

    return [inspect.signature(WhisperFeatureExtractor.__init__).parameters["chunk_length"].default]


# (command, option) -> the code's values for the numbers its stated default gives, in order; None for a
# number that is no default (a row count starting at 0).
STATED: dict[tuple[str, str], Callable[[], list[float]] | None] = {
    ("extract-features", "--batch-size"): _encoder_batches,
    ("classify", "--batch-size"): _encoder_batches,
    ("caption", "--batch-size"): _captioner_batches,
    ("transcribe", "--batch-size"): _transcriber_batches,
    ("retrieve", "--batch-size"): _query_batch,
    ("extract-features", "--shard-rows"): _shard_rows,
    ("select", "--shard-rows"): _shard_rows,
    ("extract-features", "--window"): _clap_window,
    ("transcribe", "--language"): _whisper_window,
    ("extract-features", "--fps"): _frame_rate,
    ("index build", "--nlist"): _rows_per_list,
    ("evaluate captions", "--model"): _default_clip,
    **{(command, "--workers"): _most_workers for command in ("extract-features", "classify", "caption", "transcribe")},
    **{(command, "--id-column"): None for command in ("extract-features", "caption", "train caption")},
}


def stated_defaults() -> Iterator[tuple[str, str, str]]:
    """``(command path, option, stated default)`` for every option whose help states its default in words."""
    from mmcli.cli import click_command

    def walk(command: Any, path: str) -> Iterator[tuple[str, str, str]]:
        if hasattr(command, "commands"):  # a group (typer's own click)
            for name, sub in command.commands.items():
                yield from walk(sub, f"{path} {name}".strip())
            return
        for param in command.params:
            match = STATED_DEFAULT.search(getattr(param, "help", None) or "")
            if match and NUMBER.search(match.group(1)):
                yield path, max(param.opts, key=len), match.group(1)

    yield from walk(click_command(), "")


def test_every_stated_number_is_listed():
    found = {(command, option) for command, option, _ in stated_defaults()}
    assert found - set(STATED) == set(), "help states a default no test holds to the code"
    assert set(STATED) - found == set(), "listed here, but no longer stated in the help"


@pytest.mark.parametrize(("command", "option", "text"), list(stated_defaults()), ids=lambda v: str(v)[:40])
def test_a_stated_default_is_the_codes(command, option, text):
    expected = STATED[(command, option)]
    if expected is None:
        return
    stated = [float(number) for number in NUMBER.findall(text)]
    assert stated == [float(value) for value in expected()], (command, option, text)

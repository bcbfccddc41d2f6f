"""Durable progress for long runs, so a killed run resumes instead of starting over.

A run writes into ``NAME.partial/`` beside its output: ``rows.bin`` (raw rows), ``records.jsonl``,
``errors.jsonl``, ``files.jsonl`` (the manifest) and ``state.json``. Data is appended and fsynced
first; ``state.json``, replaced atomically afterwards, says how much of it is committed (bytes of
each file, items consumed from the input stream) and which settings produced it. After a crash
(even ``kill -9``) everything beyond the committed sizes is cut off, so the journal always
describes whole batches. The folder is never mistaken for a finished output: outputs appear only
when the run completes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import IO, Any

from mmcli.errors import UsageError, option

STATE_VERSION = 1
STATE_FILE = "state.json"  # what the journal has committed; written last, atomically


def journal_path(output: Path) -> Path:
    """``photos.npy`` -> ``photos.partial``: beside the output, named so nobody takes it for one."""
    return output.with_name(output.stem + ".partial")


class Journal:
    """Append-only files plus a committed state; ``commit`` makes everything so far durable."""

    FILES = ("rows.bin", "records.jsonl", "errors.jsonl", "files.jsonl")

    def __init__(self, folder: Path, fingerprint: dict[str, Any], *, restart: bool = False) -> None:
        self.folder = folder
        self.fingerprint = fingerprint
        state = self._load_state()
        if state is not None and not restart and state.get("fingerprint") != fingerprint:
            from mmcli.settings import describe_differences

            differences = describe_differences(state.get("fingerprint") or {}, fingerprint)
            raise UsageError(
                f"{folder} holds an unfinished run with other settings ({differences}); "
                f"run the same command again to resume it, or pass {option('restart')} to discard it"
            )
        if restart or state is None:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            state = {"version": STATE_VERSION, "fingerprint": fingerprint, "consumed": 0, "rows": 0, "dim": None}
            state.update({name: 0 for name in self.FILES})
        self.state = state
        for name in self.FILES:  # cut off what was written after the last commit
            path = folder / name
            path.touch()
            with open(path, "rb+") as handle:
                handle.truncate(state[name])
        self.handles: dict[str, IO[bytes]] = {name: open(folder / name, "ab") for name in self.FILES}

    @property
    def consumed(self) -> int:
        """Input items fully handled (rows, records and errors committed)."""
        return int(self.state["consumed"])

    @property
    def rows(self) -> int:
        return int(self.state["rows"])

    @property
    def dim(self) -> int | None:
        return self.state["dim"]

    def write(self, name: str, data: bytes) -> None:
        self.handles[name].write(data)

    @property
    def counters(self) -> dict[str, int]:
        """Tallies a command keeps across a resume (e.g. failures, for its summary and exit status)."""
        return dict(self.state.get("counters", {}))

    def commit(self, *, consumed: int, rows: int, dim: int | None, counters: dict[str, int] | None = None) -> None:
        """Make the data so far durable, then record it in ``state.json`` (atomically)."""
        for name, handle in self.handles.items():
            handle.flush()
            os.fsync(handle.fileno())
            self.state[name] = handle.tell()
        self.state.update(consumed=consumed, rows=rows, dim=dim, counters=counters or {})
        temporary = self.folder / f"{STATE_FILE}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(self.state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.folder / STATE_FILE)

    def path(self, name: str) -> Path:
        return self.folder / name

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()

    def abandon(self) -> None:
        """Close after a run that did not finish: committed progress stays for a rerun to resume, and a
        journal that committed nothing goes, as it holds nothing a rerun could use."""
        if self.consumed:
            self.close()
        else:
            self.discard()

    def discard(self) -> None:
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _load_state(self) -> dict[str, Any] | None:
        try:
            with open(self.folder / STATE_FILE, encoding="utf-8") as handle:
                state = json.load(handle)
        except (OSError, ValueError):
            return None
        if state.get("version") != STATE_VERSION or any(name not in state for name in self.FILES):
            return None
        for name in self.FILES:  # a file shorter than its committed size lost data: nothing to resume from
            try:
                if os.path.getsize(self.folder / name) < state[name]:
                    return None
            except OSError:
                return None
        return state

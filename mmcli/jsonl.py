"""JSON Lines in and out, with errors that name the file and line."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any

from mmcli.errors import InputError


def dumps(record: dict[str, Any]) -> str:
    """One compact JSON line; non-ASCII text is kept readable.

    A file name that is not valid UTF-8 reaches Python with surrogate escapes, which UTF-8 cannot
    encode; such a record is written with ``\\u`` escapes instead, which keep it exact: ``json.loads``
    and ``os.fsencode`` give back the original bytes, so the path can still be opened.
    """
    line = json.dumps(record, ensure_ascii=False, separators=(", ", ": "))
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(record, ensure_ascii=True, separators=(", ", ": "))
    return line


def parse_line(line: str, where: str) -> dict[str, Any]:
    """Parse one JSONL line that must hold an object; ``where`` is ``file:line`` for the error."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(value, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


#: What ``errors="surrogateescape"`` turns a byte that is not UTF-8 into; valid UTF-8 never decodes to these.
_UNDECODABLE = re.compile("[\udc80-\udcff]")


def text_lines(lines: Iterable[str], name: str, *, paths: bool = False) -> Iterator[tuple[int, str]]:
    """``(line_number, line)`` of a text stream, refusing bytes that are not UTF-8 with the line that
    holds them: files read with ``errors="surrogateescape"`` carry them as surrogates; a strictly
    decoded stream (stdin) fails in whole blocks, with no line to name. A list of ``paths`` keeps
    such bytes (a file name may hold them) and refuses only a stream that cannot be decoded at all.
    A byte-order mark before the first line (Windows editors write one) is not part of it."""
    try:
        for number, line in enumerate(lines, start=1):
            if number == 1:
                line = line.removeprefix("\ufeff")
            undecodable = None if paths else _UNDECODABLE.search(line)
            if undecodable is not None:
                byte = ord(undecodable.group()) - 0xDC00
                raise InputError(
                    f"{name}:{number}: not valid UTF-8 (byte 0x{byte:02x} at column {undecodable.start() + 1})"
                )
            yield number, line
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}: not valid {exc.encoding} text ({exc.reason})") from None


def iter_jsonl(lines: Iterable[str], name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)`` for each non-blank line of a JSONL stream (see :func:`text_lines`)."""
    for number, line in text_lines(lines, name):
        if line.strip():
            yield number, parse_line(line, f"{name}:{number}")


def read_jsonl(path: str | os.PathLike[str], what: str = "JSONL file") -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line_number, record)`` from a JSONL file (``-``: stdin); a missing file is one clear error."""
    if str(path) == "-":
        yield from iter_jsonl(sys.stdin, "<stdin>")
        return
    if not os.path.isfile(path):
        raise InputError(f"{what} {path} does not exist")
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        yield from iter_jsonl(handle, str(path))


def write_jsonl(records: Iterable[dict[str, Any]], handle: IO[str]) -> int:
    count = 0
    for record in records:
        handle.write(dumps(record) + "\n")
        count += 1
    return count

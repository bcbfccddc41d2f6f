"""Cutting a feature set down to the rows chosen: the run behind ``mmcli select``.

Rows are chosen by id (a JSONL list of ``{"id"}`` records, such as ``dedup``'s kept rows), by
conditions over the fields of records joined to the rows by id (``dedup``'s ``keep``, ``classify``'s
``label``, ``score``'s ``score``), or as the top fraction by a number of those records; the chosen
rows keep their order, their vectors and their own records, and are written as a new feature set.
"""

from __future__ import annotations

import json
import math
import operator
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmcli.errors import InputError, UsageError, option
from mmcli.output.destination import writes

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
}  # fmt: skip
CONDITION = re.compile(r"^\s*(?P<field>[A-Za-z_][\w.-]*)\s*(?P<op>==|!=|>=|<=|>|<)\s*(?P<value>.+?)\s*$")


@dataclass(frozen=True)
class Condition:
    """``FIELD OP VALUE``: VALUE a JSON literal (``true``, ``0.3``, ``"nsfw"``) or a bare word (a string)."""

    field: str
    op: str
    value: Any

    @classmethod
    def parse(cls, text: str) -> Condition:
        match = CONDITION.match(text)
        if match is None or match["value"][0] in "<>=!":
            raise UsageError(
                f"{option('where')} {text!r}: write FIELD OP VALUE with OP one of {', '.join(OPERATORS)}, "
                "e.g. 'keep == true', 'score >= 0.3', 'label != nsfw'"
            )
        raw = match["value"]
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw  # a bare word
        return cls(match["field"], match["op"], value)

    def holds(self, record: dict[str, Any]) -> bool:
        if self.field not in record:
            return False
        found = record[self.field]
        if self.op in ("==", "!="):
            return OPERATORS[self.op](found, self.value)
        if not _number(found) or not _number(self.value):
            return False  # an ordering of a non-number holds for no row
        return OPERATORS[self.op](found, self.value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def joined_records(paths: Sequence[str | os.PathLike[str]], ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The fields of ``paths``' JSONL records merged by ``id`` (later files win a field), each file's ids
    checked: a repeated id, or an id that is no row's, is refused naming the file and line."""
    from mmcli.jsonl import read_jsonl

    known = set(ids)
    merged: dict[str, dict[str, Any]] = {}
    for path in paths:
        seen: set[str] = set()
        for line, record in read_jsonl(path, "records file"):
            identifier = record.get("id")
            if not isinstance(identifier, str):
                raise InputError(f'{path}:{line}: a record without an "id"')
            if identifier in seen:
                raise InputError(f"{path}:{line}: id {identifier!r} is repeated; each row takes one record a file")
            if identifier not in known:
                raise InputError(f"{path}:{line}: id {identifier!r} is no row of the feature set")
            seen.add(identifier)
            merged.setdefault(identifier, {}).update({k: v for k, v in record.items() if k != "id"})
    return merged


def chosen_rows(
    ids: Sequence[str],
    records: Sequence[dict[str, Any]],
    *,
    joined: dict[str, dict[str, Any]] | None = None,
    where: Sequence[str] = (),
    fraction: float | None = None,
    by: str | None = None,
    listed: set[str] | None = None,
) -> np.ndarray:
    """The rows (ascending) whose id is ``listed`` (where given), whose fields (the row's record, then
    ``joined``) satisfy every ``where`` condition, and, with ``fraction``, the top fraction of those by
    the number ``by`` (ties keep the earlier row)."""
    joined = joined or {}
    fields = [{**record, **joined.get(identifier, {})} for identifier, record in zip(ids, records, strict=True)]
    conditions = [Condition.parse(text) for text in where]
    for condition in conditions:
        if not any(condition.field in row for row in fields):
            raise InputError(f"{option('where')} {condition.field!r}: no row's records have that field")
    keep = np.array([all(c.holds(row) for c in conditions) for row in fields], dtype=bool)
    if listed is not None:
        keep &= np.array([identifier in listed for identifier in ids], dtype=bool)
    if fraction is not None:
        if not 0.0 < fraction <= 1.0:
            raise UsageError(f"{option('fraction')} is a share of the rows, in (0, 1], not {fraction}")
        if by is None:
            raise UsageError(f"{option('fraction')} keeps the rows highest by a number: name it with {option('by')}")
        values = np.array([row.get(by) if _number(row.get(by)) else np.nan for row in fields], dtype=np.float64)
        if np.isnan(values).all():
            raise InputError(f"{option('by')} {by!r}: no row's records have a number in that field")
        candidates = np.flatnonzero(keep & ~np.isnan(values))
        count = math.ceil(fraction * len(candidates))
        order = candidates[np.argsort(-values[candidates], kind="stable")][:count]
        keep = np.zeros(len(ids), dtype=bool)
        keep[order] = True
    elif by is not None:
        raise UsageError(f"{option('by')} ranks the rows for {option('fraction')}; give both")
    return np.flatnonzero(keep)


@dataclass
class SelectResult:
    """What :func:`select_rows` wrote: ``rows`` of the set's ``total`` to ``output``; with media shards,
    the ``shards`` written and the rows whose media are ``not_files`` (so not in them)."""

    output: Path
    rows: int
    total: int
    shards: list[Path] | None = None
    not_files: int = 0


SHARD_SAMPLES = 1_000  # samples a media shard holds


def write_media_shards(
    folder: Path, records: Sequence[dict[str, Any]], joined: dict[str, dict[str, Any]], *, shard_samples: int
) -> tuple[list[Path], int]:
    """The chosen rows' media as webdataset shards ``folder/shard-NNNNNN.tar``: per sample, the file's
    bytes as read (``KEY.jpg``, ``.png``, ... by its extension), the row's record with its joined fields
    (``KEY.json``) and its caption where it has one (``KEY.txt``). Keys are the sample's number, so no
    key holds a dot; each shard is written atomically. Rows whose source is not a file are left out
    and counted."""
    import io
    import tarfile

    from mmcli.jsonl import dumps
    from mmcli.output.atomic import atomic_output

    folder.mkdir(parents=True, exist_ok=True)
    samples, skipped = [], 0
    for record in records:
        source = record.get("source")
        if isinstance(source, str) and os.path.isfile(source):
            samples.append((source, {**record, **joined.get(record["id"], {})}))
        else:
            skipped += 1
    shards = []
    for number, start in enumerate(range(0, len(samples), shard_samples)):
        path = folder / f"shard-{number:06d}.tar"
        with (
            atomic_output(path, "wb") as handle,
            tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for index, (source, fields) in enumerate(samples[start : start + shard_samples], start=start):
                key = f"{index:09d}"
                members = [(Path(source).suffix.lower() or ".bin", Path(source).read_bytes()),
                           (".json", dumps(fields).encode("utf-8"))]  # fmt: skip
                caption = fields.get("caption")
                if isinstance(caption, str):
                    members.append((".txt", caption.encode("utf-8")))
                for extension, data in members:
                    info = tarfile.TarInfo(key + extension)
                    info.size, info.mode = len(data), 0o644
                    tar.addfile(info, io.BytesIO(data))
        shards.append(path)
    return shards, skipped


@writes("output")
def select_rows(
    features: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    ids_from: str | os.PathLike[str] | None = None,
    join: Sequence[str | os.PathLike[str]] = (),
    where: Sequence[str] = (),
    fraction: float | None = None,
    by: str | None = None,
    media_shards: str | os.PathLike[str] | None = None,
    shard_samples: int = SHARD_SAMPLES,
    shard_rows: int | None = None,
    overwrite: bool = False,
) -> SelectResult:
    """Write the rows of the feature set ``features`` chosen by :func:`chosen_rows` (``ids_from``: a JSONL
    of ``{"id"}`` records; ``join``: JSONL records whose fields ``where`` and ``by`` read) to ``output``,
    a new ``.npy`` feature set with the rows' own records, atomically, or a sharded ``DIR/`` of parts of
    ``shard_rows`` rows (resumable); with ``media_shards``, their media too, as webdataset shards in that
    folder (:func:`write_media_shards`)."""
    from mmcli.output.destination import check_output_path
    from mmcli.output.feature_set import read_feature_set
    from mmcli.output.npy import FeatureSetWriter
    from mmcli.output.sharded import check_sharded_output, is_sharded_output, write_rows_sharded

    sharded = is_sharded_output(output)
    target = Path(output)
    if sharded:
        check_sharded_output(target, overwrite=overwrite, update=False)  # refused before any work
    else:
        check_output_path(target, overwrite=overwrite)
    shards_folder = Path(media_shards) if media_shards is not None else None
    if shards_folder is not None and shards_folder.exists() and any(shards_folder.iterdir()) and not overwrite:
        raise UsageError(f"{shards_folder} is not empty; pass {option('overwrite')} to write the shards into it")
    if ids_from is None and not join and not where and fraction is None:
        raise UsageError(f"nothing chooses the rows: give {option('ids')}, {option('where')} or {option('fraction')}")
    feature_set = read_feature_set(features)
    ids = feature_set.ids
    listed = None
    if ids_from is not None:
        listed = set(joined_records([ids_from], ids))
    joined = joined_records(join, ids)
    rows = chosen_rows(ids, feature_set.records, joined=joined, where=where, fraction=fraction, by=by, listed=listed)
    if not len(rows):
        raise InputError(f"no row of {features} is chosen; nothing written")
    dtype = str(np.dtype(feature_set.vectors.dtype))
    chosen = [feature_set.records[i] for i in rows]
    result = SelectResult(target, len(rows), len(ids))
    if shards_folder is not None:  # before the set is published: a failed shard leaves no set either
        result.shards, result.not_files = write_media_shards(shards_folder, chosen, joined, shard_samples=shard_samples)
    if sharded:
        settings = {
            "command": "select", "features": str(features), "ids": str(ids_from) if ids_from else None,
            "join": [str(path) for path in join], "where": list(where), "fraction": fraction, "by": by,
        }  # fmt: skip
        write_rows_sharded(target, lambda start, stop: np.asarray(feature_set.vectors[rows[start:stop]]), chosen,
                           shard_rows=shard_rows, dtype=dtype, settings=settings, overwrite=overwrite)  # fmt: skip
        return result
    with FeatureSetWriter(target, dtype=dtype) as writer:
        for start in range(0, len(rows), 8_192):
            block = rows[start : start + 8_192]
            writer.add(np.asarray(feature_set.vectors[block]), [feature_set.records[i] for i in block])
    return result

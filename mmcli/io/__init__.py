"""Inputs: discovery (:mod:`mmcli.io.inputs`) and one module per format they come in, beside loose
local files: brace patterns (:mod:`~mmcli.io.patterns`), URLs and byte references
(:mod:`~mmcli.io.remote`), webdataset shards (:mod:`~mmcli.io.webdataset`) and Parquet tables
(:mod:`~mmcli.io.parquet`). This package reads; everything a run writes is :mod:`mmcli.output`'s.

Discovery lists where each item's bytes are (a :class:`~mmcli.io.remote.ByteRange` in a shard or a
remote file, a :class:`~mmcli.io.parquet.ParquetCell` in a table) without reading them; the bytes
are read when the item is decoded, on the pipeline's worker threads, so a 100 GB shard set costs an
index in memory, not its images. Both references are frozen dataclasses of plain values: items
pickle with plain :mod:`pickle` (a process-based backend can ship them) and reopen their source
wherever they are decoded.

URLs (``s3://``, ``gs://``, ``hf://``, ``http(s)://``, ``file://``, ...) are read through fsspec,
which finds credentials as it always does (the environment, ``~/.aws``, ``gcloud`` ...) and takes
per-protocol settings from ``FSSPEC_<PROTOCOL>_<KWARG>`` variables (``FSSPEC_S3_ENDPOINT_URL``).
fsspec, s3fs and pyarrow are imported only when such an input is met.
"""

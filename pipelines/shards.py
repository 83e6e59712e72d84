"""Arrow shards: which shard a row goes to, their names, writing and reading them (Beam-free).

A shard is an Arrow IPC *stream* file (what ``datasets.Dataset.from_file`` memory-maps). All rows of
a record go to the shard chosen by a hash of its ``source_id``, and a shard's rows are sorted by
(``source_id``, ``aug_index``), so the shards do not depend on how many workers built them.
"""
from __future__ import annotations

import re
import zlib
from typing import BinaryIO, Iterable, Sequence

import pyarrow as pa

SHARD_PATTERN = "shard-*.arrow"
WRITE_BATCH_ROWS = 4096
# The corpus format on disk, shared by every writer (the corpus builder, ``distill shard-text``) and
# reader (``distill``): shards named by :func:`shard_name` plus a manifest carrying these two keys.
FORMAT = "bert-compress-augmented-corpus"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class CorpusError(ValueError):
    """A corpus directory is incomplete, of another format, or not the one expected."""


def shard_of(source_id: str, num_shards: int) -> int:
    """The shard of a record's rows: CRC-32 of its id (stable across processes and runs)."""
    return zlib.crc32(source_id.encode("utf-8")) % num_shards


def shard_name(index: int, num_shards: int) -> str:
    """``shard-00003-of-00008.arrow``."""
    return f"shard-{index:05d}-of-{num_shards:05d}.arrow"


def natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers numerically (``train-9`` before ``train-10``)."""
    return tuple(int(p) if i % 2 else p for i, p in enumerate(re.split(r"(\d+)", text)))


def sort_rows(rows: Iterable[dict]) -> list[dict]:
    """Rows in (source_id, aug_index) order; raises ``ValueError`` on a repeated row id."""
    ordered = sorted(rows, key=lambda r: (natural_key(r["source_id"]), r["source_id"], r["aug_index"]))
    for a, b in zip(ordered, ordered[1:]):
        if a["id"] == b["id"]:
            raise ValueError(f"row id {a['id']!r} appears twice (two records share a source_id)")
    return ordered


def write_shard(rows: Sequence[dict], schema: pa.Schema, sink: BinaryIO) -> int:
    """Write ``rows`` (already in order) to ``sink`` as one Arrow IPC stream; returns the row count.

    Rows are written in record batches of ``WRITE_BATCH_ROWS``, so equal rows give equal bytes.
    """
    with pa.ipc.new_stream(sink, schema) as writer:
        for start in range(0, len(rows), WRITE_BATCH_ROWS):
            chunk = rows[start:start + WRITE_BATCH_ROWS]
            writer.write_batch(pa.RecordBatch.from_pylist(list(chunk), schema=schema))
    return len(rows)


def read_shard(source: BinaryIO | str) -> pa.Table:
    """A shard as a ``pyarrow.Table`` (a path or an open binary stream)."""
    with pa.ipc.open_stream(source) as reader:
        return reader.read_all()

"""File access through Beam's ``FileSystems``, so every path may be local, ``gs://`` or ``s3://``."""
from __future__ import annotations

import hashlib
import uuid

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

RAW = CompressionTypes.UNCOMPRESSED


def join(base: str, *parts: str) -> str:
    return FileSystems.join(base, *parts)


def basename(path: str) -> str:
    return FileSystems.split(path)[1]


def open_read(path: str):
    """A binary stream of the file's stored bytes (never decompressed: hashes see what is stored)."""
    return FileSystems.open(path, compression_type=RAW)


def open_data(path: str):
    """A binary stream of the file's content, decompressed by extension (``.gz``, ``.bz2``...)."""
    return FileSystems.open(path, compression_type=CompressionTypes.AUTO)


def create(path: str):
    """A new binary output stream (parent folders made as needed on a local disk)."""
    return FileSystems.create(path, mime_type="application/octet-stream", compression_type=RAW)


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def match(pattern: str) -> list[str]:
    """Paths matching ``pattern`` (a glob or a single path), sorted; [] when none."""
    try:
        result = FileSystems.match([pattern])[0]
    except Exception:  # BeamIOError when nothing matches on some filesystems
        return []
    return sorted(m.path for m in result.metadata_list)


def delete(paths: list[str]) -> None:
    if paths:
        FileSystems.delete(paths)


def read_bytes(path: str) -> bytes:
    with open_read(path) as f:
        return f.read()


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary name and a rename: readers see all or nothing."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with create(tmp) as f:
        f.write(data)
    FileSystems.rename([tmp], [path])


def sha256(path: str, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's stored bytes."""
    h = hashlib.sha256()
    with open_read(path) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()

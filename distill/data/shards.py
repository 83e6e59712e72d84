"""Corpus shards: Arrow IPC *stream* files (what ``datasets.Dataset.from_file`` loads) plus a
``manifest.json`` (task, text_fields, label_names, shards [{file, rows}], counts, fingerprint).

Labelled corpora (from the corpus builder) have columns ``id``, ``source_id``, ``aug_index`` (0 =
original), the task's text fields and ``label``; unlabelled text for general distillation has ``id``
and ``text``. Paths may be local or any fsspec URL (``s3://``, ``gs://``, ``memory://``...).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.ipc as ipc

from pipelines.shards import FORMAT, FORMAT_VERSION, MANIFEST, CorpusError, shard_name  # the one corpus format

TEXT_TASK = "text"  # the manifest task of unlabelled-text shards


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _local(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def join(base: str, name: str) -> str:
    return os.path.join(base, name) if _is_local(base) else base.rstrip("/") + "/" + name


def open_table(path: str) -> pa.Table:
    """The whole shard as a table: memory-mapped (zero copy) when local, read into memory otherwise.
    Accepts the IPC stream format (``datasets``) and the IPC file format."""
    if _is_local(path):
        source = pa.memory_map(_local(path))
    else:
        import fsspec

        with fsspec.open(path, "rb") as f:
            source = pa.BufferReader(f.read())
    try:
        return ipc.open_stream(source).read_all()
    except pa.ArrowInvalid:
        source.seek(0)
        return ipc.open_file(source).read_all()


def read_schema(path: str) -> pa.Schema:
    return open_table(path).schema  # zero copy when local: only the metadata is touched


@dataclass(frozen=True)
class Manifest:
    """The parsed ``manifest.json`` of a corpus directory."""

    root: str
    task: str
    text_fields: tuple[str, ...]
    label_names: tuple[str, ...] | None
    files: tuple[str, ...]
    rows: tuple[int, ...]
    fingerprint: str
    raw: dict

    @property
    def total_rows(self) -> int:
        return sum(self.rows)

    def paths(self) -> list[str]:
        return [join(self.root, f) for f in self.files]


def read_manifest(root: str) -> Manifest:
    """Parse ``root/manifest.json``; ``CorpusError`` when it is missing or lacks a required key."""
    path = join(root, MANIFEST)
    try:
        if _is_local(root):
            with open(_local(path), encoding="utf-8") as f:
                raw = json.load(f)
        else:
            import fsspec

            with fsspec.open(path, "r", encoding="utf-8") as f:
                raw = json.load(f)
    except FileNotFoundError:
        raise CorpusError(f"{root}: no {MANIFEST}; is this a corpus directory?") from None
    except json.JSONDecodeError as e:
        raise CorpusError(f"{path}: not valid JSON ({e})") from None
    if raw.get("format", FORMAT) != FORMAT:
        raise CorpusError(f"{path}: format {raw.get('format')!r}, expected {FORMAT!r}")
    missing = [k for k in ("task", "text_fields", "shards") if k not in raw]
    if missing:
        raise CorpusError(f"{path}: missing keys {missing}")
    try:
        files = tuple(s["file"] for s in raw["shards"])
        rows = tuple(int(s["rows"]) for s in raw["shards"])
    except (KeyError, TypeError, ValueError):
        raise CorpusError(f"{path}: every shards entry needs 'file' and 'rows'") from None
    labels = raw.get("label_names")
    return Manifest(root=root, task=str(raw["task"]), text_fields=tuple(raw["text_fields"]),
                    label_names=None if labels is None else tuple(str(x) for x in labels), files=files, rows=rows,
                    fingerprint=str(raw.get("fingerprint", "")), raw=raw)


class ShardWriter:
    """Write rows into numbered shards of at most ``rows_per_shard`` rows, then ``manifest.json``.

    Shards are written under temporary names and renamed once the total is known
    (``shard-00000-of-00003.arrow``). Local directories only.

        with ShardWriter(out, schema, rows_per_shard=10_000, manifest={...}) as w:
            w.write({"id": "a:1", "text": "..."})
    """

    def __init__(self, root: str, schema: pa.Schema, rows_per_shard: int = 100_000, manifest: dict | None = None,
                 batch_rows: int = 1000):
        if rows_per_shard < 1:
            raise ValueError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
        self.root, self.schema, self.rows_per_shard = root, schema, rows_per_shard
        self.manifest, self.batch_rows = dict(manifest or {}), batch_rows
        self._written: list[tuple[str, int]] = []
        self._pending: list[dict] = []
        self._writer = None
        self._rows_in_shard = 0
        self._hash = hashlib.sha256()
        os.makedirs(root, exist_ok=True)

    def write(self, row: dict) -> None:
        self._pending.append(row)
        if len(self._pending) >= self.batch_rows or self._rows_in_shard + len(self._pending) >= self.rows_per_shard:
            self._flush()

    def _flush(self) -> None:
        while self._pending:
            if self._writer is None:
                tmp = os.path.join(self.root, f".tmp-{len(self._written):05d}.arrow")
                self._sink = pa.OSFile(tmp, "wb")
                self._writer = ipc.new_stream(self._sink, self.schema)
                self._written.append((tmp, 0))
            take = min(len(self._pending), self.rows_per_shard - self._rows_in_shard)
            rows, self._pending = self._pending[:take], self._pending[take:]
            batch = pa.RecordBatch.from_pylist(rows, schema=self.schema)
            self._writer.write_batch(batch)
            self._hash.update(json.dumps(rows, sort_keys=True, default=str).encode())
            self._rows_in_shard += take
            tmp, n = self._written[-1]
            self._written[-1] = (tmp, n + take)
            if self._rows_in_shard == self.rows_per_shard:
                self._close_shard()

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer, self._rows_in_shard = None, 0

    def close(self) -> Manifest:
        self._flush()
        self._close_shard()
        total = len(self._written)
        shards = []
        for i, (tmp, n) in enumerate(self._written):
            name = shard_name(i, total)
            os.replace(tmp, os.path.join(self.root, name))
            shards.append({"file": name, "rows": n})
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **self.manifest, "shards": shards,
                    "counts": {**self.manifest.get("counts", {}), "rows": sum(n for _, n in self._written)},
                    "fingerprint": self.manifest.get("fingerprint") or self._hash.hexdigest()[:16]}
        # written last and renamed into place: a manifest on disk means a complete corpus
        tmp = os.path.join(self.root, MANIFEST + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
        os.replace(tmp, os.path.join(self.root, MANIFEST))
        return read_manifest(self.root)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        else:
            self._close_shard()


def text_schema() -> pa.Schema:
    return pa.schema([("id", pa.string()), ("text", pa.string())])


def task_schema(text_fields: Sequence[str], regression: bool = False) -> pa.Schema:
    """The corpus builder's labelled-row schema for a task."""
    return pa.schema([("id", pa.string()), ("source_id", pa.string()), ("aug_index", pa.int32())]
                     + [(f, pa.string()) for f in text_fields]
                     + [("label", pa.float32() if regression else pa.int64())])


def write_text_shards(paths: Iterable[str], root: str, rows_per_shard: int = 100_000, min_chars: int = 1,
                      skip_headings: bool = False) -> Manifest:
    """Turn plain UTF-8 text files (one text per line) into unlabelled shards (``distill shard-text``).

    Lines shorter than ``min_chars`` after stripping are dropped; with ``skip_headings`` WikiText
    headings (`` = Title = ``) are too. Row ids are ``FILE:LINE``.
    """
    paths = list(paths)
    if not paths:
        raise CorpusError("no input text files given")
    params = {"min_chars": min_chars, "skip_headings": skip_headings, "inputs": [os.path.basename(p) for p in paths]}
    manifest = {"task": TEXT_TASK, "text_fields": ["text"], "label_names": None, "params": params}
    with ShardWriter(root, text_schema(), rows_per_shard, manifest) as w:
        for path in paths:
            for lineno, text in _lines(path):
                text = text.strip()
                if len(text) < min_chars or (skip_headings and text.startswith("=") and text.endswith("=")):
                    continue
                w.write({"id": f"{os.path.basename(path)}:{lineno}", "text": text})
    m = read_manifest(root)
    if m.total_rows == 0:
        raise CorpusError(f"no text lines of at least {min_chars} characters in {paths}")
    return m


def _lines(path: str) -> Iterator[tuple[int, str]]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CorpusError(f"{path}: line {lineno} is not valid UTF-8 ({e.reason} at byte {e.start})") from None

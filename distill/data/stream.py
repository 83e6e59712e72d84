"""Streaming training data over corpus shards, and dynamic-padding batches.

The authors' script tokenises the whole augmented set into tensors in RAM (~26 GB for MNLI). Here
the corpus stays on disk (memory-mapped Arrow, or any fsspec path) and is streamed:

1. Every shard is cut into chunks of ``chunk_rows`` rows. Each epoch the chunk list is shuffled with
   ``(seed, epoch)``, giving one global order that every process computes identically.
2. That order is cut into ``ranks x workers`` contiguous ranges of equal size (+-1 row): each
   consumer (a DataLoader worker of a DDP rank) owns one, so no example is lost or repeated.
3. A consumer draws *positions* in its range through a shuffle buffer of ``buffer_size`` ints and
   reads a chunk only when one of its rows is first needed; a chunk is dropped once all its rows
   have been emitted. Memory is O(buffer + open chunks), whatever the corpus size.
4. Optionally (``group_by_length`` > 0, as Hugging Face's ``group_by_length``), a consumer's rows
   are taken ``group_by_length`` batches at a time; each such pool is sorted by text length, cut
   into batches, and the full batches are shuffled with ``(seed, epoch, consumer, pool)``. Rows of
   similar length then share a batch, so padding wastes little (SQuAD windows: ~1.8x fewer tokens
   per step); the order stays random across pools and deterministic.
5. The stream is endless (epoch after epoch); the trainer counts steps. The data position of a run
   is just the number of batches it has drawn: on resume each consumer skips its share of them,
   in positions only (no I/O, no tokenisation), and continues where it left off.

Tokenisation happens in ``Collator``, inside the DataLoader workers, padding each batch only to its
longest row.
"""
from __future__ import annotations

import bisect
import itertools
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import IterableDataset, get_worker_info

from distill.data.encoding import encode_text
from distill.data.shards import TEXT_TASK, CorpusError, Manifest, open_table, read_manifest

Chunk = tuple[int, int, int]  # (shard index, start, stop) in the shard's selected rows


def make_chunks(rows: Sequence[int], chunk_rows: int) -> list[Chunk]:
    """Cut shards of ``rows[i]`` rows into chunks of at most ``chunk_rows`` rows."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    return [(s, a, min(a + chunk_rows, n)) for s, n in enumerate(rows) for a in range(0, n, chunk_rows)]


def epoch_order(chunks: Sequence[Chunk], seed: int, epoch: int, shuffle: bool = True) -> list[Chunk]:
    """The chunks in this epoch's global order (the same in every process)."""
    if not shuffle:
        return list(chunks)
    perm = np.random.default_rng([seed, epoch]).permutation(len(chunks))
    return [chunks[i] for i in perm]


def consumer_pieces(order: Sequence[Chunk], consumer: int, n_consumers: int) -> list[Chunk]:
    """The contiguous row range of ``order`` owned by one consumer, as chunk pieces.

    Consumer c owns rows [c * N // C, (c + 1) * N // C) of the epoch's concatenated order: the
    ranges tile it exactly, and sizes differ by at most one row.
    """
    if not 0 <= consumer < n_consumers:
        raise ValueError(f"consumer {consumer} out of range for {n_consumers} consumers")
    total = sum(b - a for _, a, b in order)
    lo, hi = consumer * total // n_consumers, (consumer + 1) * total // n_consumers
    pieces, pos = [], 0
    for shard, a, b in order:
        n = b - a
        start, stop = max(lo, pos), min(hi, pos + n)
        if start < stop:
            pieces.append((shard, a + start - pos, a + stop - pos))
        pos += n
        if pos >= hi:
            break
    return pieces


def buffered_positions(n: int, buffer_size: int, rng: np.random.Generator) -> Iterator[int]:
    """A permutation of ``range(n)`` through a shuffle buffer: positions enter in order, and each
    new one replaces (and emits) a random resident. ``buffer_size`` <= 1 keeps the order."""
    if buffer_size <= 1:
        yield from range(n)
        return
    size = min(buffer_size, n)
    buf = list(range(size))
    block = 4096
    for start in range(size, n, block):
        picks = rng.integers(0, size, min(block, n - start))
        for offset, j in enumerate(picks):
            yield buf[j]
            buf[j] = start + offset
    rng.shuffle(buf)
    yield from buf


def consumer_length(total: int, consumer: int, n_consumers: int) -> int:
    return (consumer + 1) * total // n_consumers - consumer * total // n_consumers


def text_length(row: dict) -> int:
    """Characters of a row's text fields (every string but ``id``): the sort key of length grouping."""
    return sum(len(v) for k, v in row.items() if k != "id" and isinstance(v, str))


def length_grouped(rows: Sequence[dict], batch_size: int, rng: np.random.Generator) -> list[dict]:
    """``rows`` reordered so that consecutive runs of ``batch_size`` rows have similar lengths:
    sorted longest first (ties by position), cut into batches, the full batches shuffled with ``rng``
    and any short remainder kept last (so the loader's batches stay aligned with these)."""
    order = sorted(range(len(rows)), key=lambda i: (-text_length(rows[i]), i))
    full = len(order) // batch_size
    batches = [order[b * batch_size:(b + 1) * batch_size] for b in range(full)]
    shuffled = [batches[b] for b in rng.permutation(full)] if full else []
    return [rows[i] for batch in shuffled for i in batch] + [rows[i] for i in order[full * batch_size:]]


def skipped_batches(batches_drawn: int, worker: int, num_workers: int) -> int:
    """Batches worker ``worker`` has produced after the loader drew ``batches_drawn`` (round robin)."""
    return max(0, (batches_drawn - worker + num_workers - 1) // num_workers)


class ShardStream(IterableDataset):
    """An endless, deterministic, shuffled stream of rows (dicts) from corpus shards.

    Args:
        paths, rows: the shard files and their (selected) row counts.
        columns: the columns to read.
        selections: per shard, the row indices to use (``None`` = all rows), e.g. originals only.
        seed, shuffle, buffer_size, chunk_rows: the shuffle (see the module docstring).
        rank, world_size: this DDP process.
        batch_size: rows per batch a worker makes (to convert batches drawn into rows to skip).
        group_by_length: batches per length-sorted pool (0: off; see the module docstring).
        cache_tables: how many opened shards to keep (memory-mapped when local).
    """

    def __init__(self, paths: Sequence[str], rows: Sequence[int], columns: Sequence[str],
                 selections: Sequence[np.ndarray | None] | None = None, *, seed: int = 0, shuffle: bool = True,
                 buffer_size: int = 10_000, chunk_rows: int = 1024, rank: int = 0, world_size: int = 1,
                 batch_size: int = 1, cache_tables: int = 2, group_by_length: int = 0):
        if len(paths) != len(rows):
            raise ValueError(f"{len(paths)} paths but {len(rows)} row counts")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        self.paths, self.rows, self.columns = list(paths), list(rows), list(columns)
        self.selections = list(selections) if selections is not None else [None] * len(paths)
        self.seed, self.shuffle, self.buffer_size = seed, shuffle, buffer_size
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.cache_tables = cache_tables
        if group_by_length < 0:
            raise ValueError(f"group_by_length must be >= 0, got {group_by_length}")
        self.group_by_length = group_by_length
        self.chunks = make_chunks(self.rows, chunk_rows)
        self.total = sum(self.rows)
        self.batches_drawn = 0  # the data position to resume from
        if self.total < world_size:
            raise CorpusError(f"{self.total} rows cannot be split across {world_size} processes")

    def set_position(self, batches_drawn: int) -> None:
        """Resume after the DataLoader has drawn ``batches_drawn`` batches (call before iterating)."""
        self.batches_drawn = batches_drawn

    def _consumer(self) -> tuple[int, int, int, int]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        # A new DataLoader starts its round robin at worker 0; the batch due next came from worker
        # (batches_drawn % workers) in the original run, so worker ids are rotated to match.
        worker = (worker + self.batches_drawn) % workers
        return self.rank * workers + worker, self.world_size * workers, worker, workers

    def __iter__(self) -> Iterator[dict]:
        consumer, n_consumers, worker, workers = self._consumer()
        skip = skipped_batches(self.batches_drawn, worker, workers) * self.batch_size
        per_epoch = consumer_length(self.total, consumer, n_consumers)
        if per_epoch == 0:
            raise CorpusError(f"{self.total} rows cannot feed {n_consumers} consumers (ranks x workers); "
                              f"use fewer DataLoader workers")
        epoch, skip = divmod(skip, per_epoch)
        while True:
            yield from self.iter_epoch(epoch, consumer, n_consumers, skip)
            epoch, skip = epoch + 1, 0

    def iter_epoch(self, epoch: int, consumer: int = 0, n_consumers: int = 1, skip: int = 0) -> Iterator[dict]:
        """One consumer's rows for one epoch, after skipping the first ``skip``."""
        if not self.group_by_length:
            yield from self._shuffled_rows(epoch, consumer, n_consumers, skip)
            return
        pool_rows = self.group_by_length * self.batch_size
        first = skip // pool_rows  # pools before it are skipped in positions only; it is read whole
        rows = self._shuffled_rows(epoch, consumer, n_consumers, first * pool_rows)
        for pool in itertools.count(first):
            part = list(itertools.islice(rows, pool_rows))
            if not part:
                return
            rng = np.random.default_rng([self.seed, epoch, consumer, 2, pool])
            yield from length_grouped(part, self.batch_size, rng)[max(0, skip - pool * pool_rows):]

    def _shuffled_rows(self, epoch: int, consumer: int, n_consumers: int, skip: int) -> Iterator[dict]:
        pieces = consumer_pieces(epoch_order(self.chunks, self.seed, epoch, self.shuffle), consumer, n_consumers)
        starts = np.cumsum([0] + [b - a for _, a, b in pieces]).tolist()
        remaining = [b - a for _, a, b in pieces]
        rng = np.random.default_rng([self.seed, epoch, consumer, 1])
        positions = buffered_positions(starts[-1], self.buffer_size if self.shuffle else 0, rng)
        loaded: dict[int, list[dict]] = {}
        tables = TableCache(self.cache_tables)
        for i, pos in enumerate(positions):
            p = bisect.bisect_right(starts, pos) - 1
            remaining[p] -= 1
            if i < skip:  # resuming: positions only, nothing is read
                continue
            if p not in loaded:
                loaded[p] = self._read_piece(tables, pieces[p])
            row = loaded[p][pos - starts[p]]
            if remaining[p] == 0:
                del loaded[p]
            yield row

    def _read_piece(self, tables: "TableCache", piece: Chunk) -> list[dict]:
        shard, a, b = piece
        table = tables.get(self.paths[shard]).select(self.columns)
        sel = self.selections[shard]
        part = table.slice(a, b - a) if sel is None else table.take(pa.array(sel[a:b]))
        return part.to_pylist()


class TableCache:
    """The last ``size`` opened shard tables (memory-mapped when local)."""

    def __init__(self, size: int):
        self.size, self.items = max(1, size), {}

    def get(self, path: str) -> pa.Table:
        if path not in self.items:
            if len(self.items) >= self.size:
                self.items.pop(next(iter(self.items)))
            self.items[path] = open_table(path)
        return self.items[path]


# --------------------------------------------------------------------------------------------------
# Opening and checking a corpus


@dataclass
class Corpus:
    """A checked corpus: its manifest, the columns to read and the rows selected per shard."""

    manifest: Manifest
    columns: list[str]
    selections: list[np.ndarray | None]
    rows: list[int]

    @property
    def total(self) -> int:
        return sum(self.rows)

    def stream(self, **kwargs) -> ShardStream:
        return ShardStream(self.manifest.paths(), self.rows, self.columns, self.selections, **kwargs)


def open_corpus(root: str, task=None, original_only: bool = False) -> Corpus:
    """Open and check a corpus before training.

    Args:
        task: a ``TaskSpec`` for labelled shards (SQuAD: the QA columns instead of ``label``), or
            ``None`` for unlabelled text (column ``text``).
        original_only: keep only rows with ``aug_index == 0`` (the un-augmented baseline).
    Raises:
        CorpusError: a task or label set that does not match, a missing column or wrong label type,
            labels out of range, a SQuAD answer not at its answer_start, a row count that differs from
            the manifest, an empty corpus.
    """
    m = read_manifest(root)
    if task is None:
        columns = ["id", "text"]
    else:
        _check_task(m, task)
        columns = ["id", *task.text_fields, "label"] if task.kind != "qa" else ["id", "question", "context",
                                                                               "answers", "is_impossible"]
    if not m.files:
        raise CorpusError(f"{root}: the corpus is empty (no shards in the manifest)")
    local = "://" not in root or root.startswith("file://")
    selections, rows = [], []
    for i, path in enumerate(m.paths()):
        if not local and i > 0:  # remote: trust the manifest beyond the first shard
            selections.append(None)
            rows.append(m.rows[i])
            continue
        table = _open_checked(path)
        _check_columns(path, table.schema, columns + (["aug_index"] if original_only else []), task)
        if table.num_rows != m.rows[i]:
            raise CorpusError(f"{path}: {table.num_rows} rows but the manifest says {m.rows[i]}")
        if task is not None and task.label_names is not None and table.num_rows:
            _check_label_range(path, table.column("label"), task)
        if task is not None and task.kind == "qa":
            _check_qa_rows(path, table)
        sel = None
        if original_only:
            sel = np.flatnonzero(pc.equal(table.column("aug_index"), 0).to_numpy(zero_copy_only=False))
        selections.append(sel)
        rows.append(m.rows[i] if sel is None else len(sel))
    if sum(rows) == 0:
        what = "original (aug_index 0) rows" if original_only else "rows"
        raise CorpusError(f"{root}: the corpus has no {what}")
    return Corpus(m, columns, selections, rows)


def _open_checked(path: str) -> pa.Table:
    try:
        return open_table(path)
    except (FileNotFoundError, OSError) as e:
        raise CorpusError(f"{path}: cannot read shard ({e})") from None
    except pa.ArrowInvalid as e:
        raise CorpusError(f"{path}: not an Arrow IPC shard ({e})") from None


def _check_task(m: Manifest, task) -> None:
    from pipelines.tasks import normalise_task_name

    if m.task == TEXT_TASK or normalise_task_name(m.task) != task.name:
        raise CorpusError(f"{m.root}: corpus is for task {m.task!r}, not {task.name!r}")
    if tuple(m.text_fields) != tuple(task.text_fields):
        raise CorpusError(f"{m.root}: text fields {list(m.text_fields)} do not match task {task.name} "
                          f"({list(task.text_fields)})")
    expected = None if task.label_names is None else tuple(task.label_names)
    if m.label_names != expected:
        raise CorpusError(f"{m.root}: label set {m.label_names} does not match task {task.name} {expected}")


def _check_columns(path: str, schema: pa.Schema, columns: Sequence[str], task) -> None:
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise CorpusError(f"{path}: missing columns {missing} (has {schema.names})")
    for c in columns:
        if c in ("text",) or (task is not None and c in task.text_fields):
            if not (pa.types.is_string(schema.field(c).type) or pa.types.is_large_string(schema.field(c).type)):
                raise CorpusError(f"{path}: column {c!r} is {schema.field(c).type}, expected string")
    if task is not None and task.kind == "qa":
        t = schema.field("answers").type
        if not (pa.types.is_struct(t) and {"text", "answer_start"} <= {f.name for f in t}):
            raise CorpusError(f"{path}: answers column is {t}, expected struct<text, answer_start>")
    elif task is not None:
        t = schema.field("label").type
        ok = pa.types.is_floating(t) if task.label_names is None else pa.types.is_integer(t)
        if not ok:
            want = "float" if task.label_names is None else "integer class ids"
            raise CorpusError(f"{path}: label column is {t}, expected {want} for task {task.name}")


def check_answers(row: dict) -> None:
    """Raise ``CorpusError`` naming the row when an answer is not at its ``answer_start``."""
    answers = row.get("answers") or {"text": [], "answer_start": []}
    texts, starts = list(answers.get("text") or []), list(answers.get("answer_start") or [])
    if len(texts) != len(starts):
        raise CorpusError(f"question {row['id']!r}: {len(texts)} answer texts but {len(starts)} answer_start")
    for text, start in zip(texts, starts):
        found = row["context"][start:start + len(text)]
        if found != text:
            raise CorpusError(f"question {row['id']!r}: answer {text!r} is not at answer_start {start} "
                              f"(the context has {found!r} there)")
    if not row.get("is_impossible") and not texts:
        raise CorpusError(f"question {row['id']!r}: answerable (is_impossible false) but has no answers")


def _check_qa_rows(path: str, table: pa.Table) -> None:
    """Every answer at its answer_start (one pass over the shard)."""
    for row in table.select(["id", "context", "answers", "is_impossible"]).to_pylist():
        try:
            check_answers(row)
        except CorpusError as e:
            raise CorpusError(f"{path}: {e}") from None


def _check_label_range(path: str, labels: pa.ChunkedArray, task) -> None:
    mm = pc.min_max(labels).as_py()
    if labels.null_count:
        raise CorpusError(f"{path}: {labels.null_count} rows have no label")
    if mm["min"] is not None and (mm["min"] < 0 or mm["max"] >= task.num_labels):
        raise CorpusError(f"{path}: labels span {mm['min']}..{mm['max']}, task {task.name} has "
                          f"{task.num_labels} classes {list(task.label_names)}")


# --------------------------------------------------------------------------------------------------
# Batches


class Collator:
    """Tokenise rows and pad each batch to its longest row (optionally a multiple of 8).

    Args:
        tokenizer: a transformers tokenizer.
        text_fields: one field, or two for sentence pairs.
        max_length: truncation length. regression: float labels; with_labels: read ``label``.
    Returns (on call): input_ids, attention_mask, token_type_ids (B, T) long; labels (B,) when asked.
    """

    def __init__(self, tokenizer, text_fields: Sequence[str], max_length: int = 128, regression: bool = False,
                 with_labels: bool = True, pad_to_multiple_of: int | None = None):
        if len(text_fields) not in (1, 2):
            raise ValueError(f"text_fields must have 1 or 2 fields, got {list(text_fields)}")
        self.tokenizer, self.text_fields, self.max_length = tokenizer, list(text_fields), max_length
        self.regression, self.with_labels, self.pad_to_multiple_of = regression, with_labels, pad_to_multiple_of

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        texts = [[r[f] for r in rows] for f in self.text_fields]
        enc = encode_text(self.tokenizer, *texts, truncation=True, max_length=self.max_length, padding="longest",
                          pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt",
                          return_token_type_ids=True)
        batch = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        if self.with_labels:
            dtype = torch.float32 if self.regression else torch.long
            batch["labels"] = torch.tensor([r["label"] for r in rows], dtype=dtype)
        return batch


def loader(stream: ShardStream, collator: Collator, batch_size: int, num_workers: int = 0) -> torch.utils.data.DataLoader:
    """A DataLoader over ``stream``; workers batch their own ranges, drawn round robin."""
    stream.batch_size = batch_size
    if num_workers:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # A private generator: creating the iterator must not draw from the global RNG (resume equivalence).
    return torch.utils.data.DataLoader(stream, batch_size=batch_size, collate_fn=collator, num_workers=num_workers,
                                       prefetch_factor=4 if num_workers else None,
                                       generator=torch.Generator().manual_seed(stream.seed))

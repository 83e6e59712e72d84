"""The corpus builder's Beam transforms: ReadTask, Augment, WriteCorpus, WriteManifest.

They only wire the Beam-free pieces (:mod:`pipelines.readers`, :mod:`pipelines.augmentation`,
:mod:`pipelines.shards`, :mod:`pipelines.manifest`) into one chain that uses only what every Beam
runner executes the same way, Beam's Dask runner included (which runs the consumers of a ParDo's
tagged outputs on all of its outputs, drops what ``finish_bundle`` emits, recomputes side inputs
inside other tasks, reports no metrics and runs only what the last transform needs):

* single outputs only: records and rejects travel together in :class:`Batch` es, and rows, rejects
  and one :class:`Tally` per batch together out of Augment; they are told apart by type;
* counts come from the data (tallies, shard summaries, the dead-letter count), not Beam metrics;
* no side inputs, nothing emitted from ``finish_bundle`` (the reader cuts the batches);
* every step feeds the last one, WriteManifest, whose GroupByKey waits for every file.

The augmenter is loaded once per worker process through a ``shared.Shared`` handle.

(No ``from __future__ import annotations`` here: Beam reads ``process`` annotations as type hints.)
"""
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from typing import Any, Callable, Sequence, Tuple

import apache_beam as beam
from apache_beam.utils import shared

from pipelines import fs
from pipelines.augmentation import augment_records
from pipelines.manifest import DEAD_LETTER, CorpusError, build_manifest, canonical_json, write_manifest
from pipelines.readers import read_input
from pipelines.records import Batch, InputSpec, Record, Reject, Tally
from pipelines.rows import schema
from pipelines.shards import natural_key, shard_name, shard_of, sort_rows, write_shard
from pipelines.tasks import TaskSpec

log = logging.getLogger(__name__)

# Records per engine call: enough that the masked-LM forwards stay full (measured: bench/pipeline_throughput.py).
RECORDS_PER_BATCH = 128
# Read tasks per input. Beam's Dask runner runs a whole chain in the partitions its Create makes
# and never rebalances after reading, so this bounds how many of its workers share the work.
INPUT_SPLITS = 16


# -- ReadTask ----------------------------------------------------------------------------------
class _ReadSplit(beam.DoFn):
    """(input index, input, split) -> the split's batches: chunks ``split``, ``split + splits``,
    ``split + 2 * splits``... of ``batch_size`` consecutive items (records and rejects)."""

    def __init__(self, spec: TaskSpec, max_records, batch_size: int, splits: int):
        self.spec, self.max_records, self.batch_size, self.splits = spec, max_records, batch_size, splits

    def process(self, work):
        index, inp, split = work
        kept, total = [], 0
        # Every split reads the whole input (cheap next to augmenting it) and keeps its chunks.
        for n, item in enumerate(read_input(self.spec, inp, fs.open_data)):
            if self.max_records is not None and n >= self.max_records:
                break
            total += 1
            if (n // self.batch_size) % self.splits == split:
                kept.append(item)
        # ``kept`` is whole chunks end to end (only the input's last chunk can be short): cut it back.
        for start in range(0, len(kept), self.batch_size):
            yield Batch(index, total, tuple(kept[start:start + self.batch_size]))


class ReadTask(beam.PTransform):
    """PBegin -> :class:`Batch` es of every record and reject of ``inputs``, spread over the workers.

    Args:
        spec: the task. inputs: the resolved inputs. max_records: per input, keep the first N.
        batch_size: items per batch (the last of an input may have fewer).
        splits: read tasks per input (each reads the whole input and keeps every ``splits``-th batch).
    """

    def __init__(self, spec: TaskSpec, inputs: Sequence[InputSpec], max_records: int | None = None,
                 batch_size: int = RECORDS_PER_BATCH, splits: int = INPUT_SPLITS):
        super().__init__()
        for name, value in (("batch_size", batch_size), ("splits", splits)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.spec, self.inputs, self.max_records = spec, list(inputs), max_records
        self.batch_size, self.splits = batch_size, splits

    def expand(self, pbegin):
        work = [(i, inp, split) for i, inp in enumerate(self.inputs) for split in range(self.splits)]
        return (pbegin
                | "Splits" >> beam.Create(work)
                | "Read" >> beam.ParDo(_ReadSplit(self.spec, self.max_records, self.batch_size, self.splits))
                | "Spread" >> beam.Reshuffle())


# -- Augment -----------------------------------------------------------------------------------
class AugmenterLoader:
    """Builds the :class:`augment.Augmenter` on a worker (picklable; ``key`` names the model).

    ``teacher`` may be a hub name, a local folder or a folder URL (``gs://...``), ``glove`` a path
    or URL: URLs are copied to a local temporary folder first, once per worker process.
    """

    def __init__(self, teacher: str, glove: str, params: dict, torch_threads: int | None = None):
        self.teacher, self.glove, self.params, self.torch_threads = teacher, glove, dict(params), torch_threads

    @property
    def key(self) -> str:
        return canonical_json([self.teacher, self.glove, sorted(self.params.items(), key=str)])

    def __call__(self):
        import torch

        from augment import Augmenter

        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        teacher, glove = _localise(self.teacher, folder=True), _localise(self.glove)
        log.info("loading augmenter: teacher %s, GloVe %s (pid %d)", self.teacher, self.glove, os.getpid())
        return Augmenter.from_pretrained(teacher, glove, **self.params)


def _localise(path: str, folder: bool = False) -> str:
    """A local copy of a ``scheme://`` file or folder (the engine reads local files); others as is."""
    if "://" not in path:
        return path
    name = fs.basename(path.rstrip("/"))
    local = os.path.join(tempfile.gettempdir(), "bert-compress-assets",
                         hashlib.sha256(path.encode()).hexdigest()[:12], name)
    if os.path.exists(local):
        return local
    os.makedirs(os.path.dirname(local), exist_ok=True)
    staging = tempfile.mkdtemp(dir=os.path.dirname(local))
    for src in fs.match(path.rstrip("/") + "/*") if folder else [path]:
        with fs.open_read(src) as f, open(os.path.join(staging, fs.basename(src)), "wb") as out:
            shutil.copyfileobj(f, out)
    try:
        os.rename(staging if folder else os.path.join(staging, name), local)
    except OSError:  # another process on this machine finished first: its copy is as good
        pass
    shutil.rmtree(staging, ignore_errors=True)
    return local


class _Engine:
    """The per-process augmenter, its lock (DoFn threads share it) and the progress log."""

    def __init__(self, augmenter, progress_seconds: float, workers: int):
        self.augmenter, self.lock = augmenter, threading.Lock()
        self.progress_seconds, self.workers = progress_seconds, max(1, workers)
        self.start = self.last_log = time.monotonic()
        self.records = self.texts = 0
        self.totals: dict[int, int] = {}  # input index -> its item count, as the batches say

    def progress(self, batch: Batch, texts: int) -> None:
        self.records += len(batch.items)
        self.texts += texts
        self.totals[batch.input] = batch.total
        now = time.monotonic()
        if now - self.last_log < self.progress_seconds:
            return
        self.last_log = now
        elapsed = max(now - self.start, 1e-9)
        rate = self.records / elapsed
        total = sum(self.totals.values())  # of the inputs this process has seen
        left = max(total / self.workers - self.records, 0)  # this worker's expected share
        eta = left / rate if rate else float("inf")
        log.info("augment (pid %d): %d records, %d texts in %.0fs: %.1f texts/s, %.1f records/s; "
                 "%d records in the corpus, ETA %s", os.getpid(), self.records, self.texts, elapsed,
                 self.texts / elapsed, rate, total, _duration(eta))


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "unknown"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class AugmentFn(beam.DoFn):
    """A :class:`Batch` -> its rows, its rejects (read's and the engine's) and one :class:`Tally`.

    Args:
        loader: a picklable callable returning the augmenter (:class:`AugmenterLoader`, or a fake
            in tests); called once per worker process thanks to ``shared.Shared``.
        spec: the task. augment_context: SQuAD contexts too.
        progress_seconds: how often to log progress. workers: expected worker count (for the ETA).
    """

    def __init__(self, loader: Callable, spec: TaskSpec, augment_context: bool = False,
                 progress_seconds: float = 30.0, workers: int = 1):
        self.loader, self.spec, self.augment_context = loader, spec, augment_context
        self.progress_seconds, self.workers = progress_seconds, workers
        self._shared = shared.Shared()
        self.engine = None

    def setup(self):
        key = getattr(self.loader, "key", repr(self.loader))
        self.engine = self._shared.acquire(
            lambda: _Engine(self.loader(), self.progress_seconds, self.workers), tag=key)

    def process(self, batch: Batch):
        records = [item for item in batch.items if isinstance(item, Record)]
        engine = self.engine
        with engine.lock:  # one batch at a time per process: the model uses every core already
            before = engine.augmenter.stats()
            result = augment_records(engine.augmenter, records, self.spec, self.augment_context) if records else None
            after = engine.augmenter.stats()
            texts = result.texts if result else 0
            engine.progress(batch, texts)
        yield from (item for item in batch.items if isinstance(item, Reject))
        if result:
            yield from result.rows
            yield from result.rejects
        used = {name: after.get(name, 0) - before.get(name, 0)
                for name in ("mlm_rows", "glove_cache_hits", "glove_cache_misses")}
        yield Tally(read=len(batch.items), texts=texts, **used)


class Augment(beam.PTransform):
    """:class:`Batch` es -> rows (dicts), :class:`Reject` s and one :class:`Tally` per batch, in one
    PCollection: a single output, which every runner delivers to its consumers as it is."""

    def __init__(self, loader: Callable, spec: TaskSpec, augment_context: bool = False,
                 progress_seconds: float = 30.0, workers: int = 1):
        super().__init__()
        self.fn = AugmentFn(loader, spec, augment_context, progress_seconds, workers)

    def expand(self, batches):
        return batches | "Engine" >> beam.ParDo(self.fn)


# -- writing -----------------------------------------------------------------------------------
def _is_tally(item) -> bool:
    return isinstance(item, Tally)


def _destination(item, num_shards: int) -> Tuple[int, Any]:
    """(file key, item): a row to its shard's index, a reject to ``num_shards`` (the dead letters)."""
    if isinstance(item, Reject):
        return num_shards, item
    return shard_of(item["source_id"], num_shards), item


class _WriteFile(beam.DoFn):
    """(file key, items) -> the file written (a shard, or the dead letters) and its summary."""

    def __init__(self, output: str, spec: TaskSpec, num_shards: int):
        self.output, self.spec, self.num_shards = output, spec, num_shards

    def process(self, keyed):
        key, items = keyed
        items = [item for item in items if item is not None]
        if key == self.num_shards:
            yield {"file": DEAD_LETTER, "rejected": _write_dead_letters(items, fs.join(self.output, DEAD_LETTER))}
            return
        rows = sort_rows(items)
        name = shard_name(key, self.num_shards)
        with fs.create(fs.join(self.output, name)) as sink:
            write_shard(rows, schema(self.spec), sink)
        originals = sum(r["aug_index"] == 0 for r in rows)
        yield {"file": name, "rows": len(rows), "originals": originals, "variants": len(rows) - originals}


def _write_dead_letters(rejects: list[Reject], path: str) -> int:
    lines = sorted((r.to_json() for r in rejects), key=natural_key)  # by location: file:9 before file:10
    with fs.create(path) as f:
        f.write("".join(line + "\n" for line in lines).encode("utf-8"))
    return len(lines)


class WriteCorpus(beam.PTransform):
    """Augment's output -> every shard and ``dead-letter.jsonl`` written (empty ones too), each
    summarised ({file, rows, originals, variants}; {file, rejected}), plus the tallies as they are.

    The rows of a shard (and all rejects) are grouped by an integer file key and sorted before
    writing, so the files do not depend on the runner, worker count or arrival order.
    """

    def __init__(self, output: str, spec: TaskSpec, num_shards: int):
        super().__init__()
        self.output, self.spec, self.num_shards = output, spec, num_shards

    def expand(self, items):
        n = self.num_shards
        keyed = (items
                 | "RowsAndRejects" >> beam.Filter(lambda item: not _is_tally(item))
                 | "Route" >> beam.Map(_destination, n))
        every = items.pipeline | "EveryFile" >> beam.Create([(key, None) for key in range(n + 1)])
        written = ((keyed, every)
                   | "Merge" >> beam.Flatten()
                   | "Group" >> beam.GroupByKey()
                   | "Write" >> beam.ParDo(_WriteFile(self.output, self.spec, n)))
        tallies = items | "Tallies" >> beam.Filter(_is_tally)
        return (written, tallies) | "Summaries" >> beam.Flatten()


class WriteManifest(beam.PTransform):
    """WriteCorpus's summaries and tallies -> ``OUTPUT/manifest.json``, written atomically once
    they are all in (one group), so the manifest's presence means the corpus is complete.

    Args:
        output: the corpus folder. static: the manifest's run-independent part (identity, inputs...).
    """

    def __init__(self, output: str, static: dict):
        super().__init__()
        self.output, self.static = output, static

    def expand(self, summaries):
        return (summaries
                | "One" >> beam.Map(lambda s: (0, s))
                | "All" >> beam.GroupByKey()
                | "Write" >> beam.Map(write_manifest_file, self.output, self.static))


def write_manifest_file(keyed, output: str, static: dict) -> str:
    parts = list(keyed[1])
    tally = sum((p for p in parts if isinstance(p, Tally)), Tally())
    files = [p for p in parts if isinstance(p, dict)]
    dead = [f for f in files if f["file"] == DEAD_LETTER]
    if len(dead) != 1:  # a runner that lost or repeated a group: refuse, as for shards
        raise CorpusError(f"{len(dead)} summaries of {DEAD_LETTER}, expected 1")
    shards = [f for f in files if f["file"] != DEAD_LETTER]
    engine = {k: getattr(tally, k) for k in ("texts", "mlm_rows", "glove_cache_hits", "glove_cache_misses")}
    manifest = build_manifest(static, shards, {"read": tally.read, "rejected": dead[0]["rejected"]}, engine)
    return write_manifest(output, manifest)

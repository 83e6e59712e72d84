"""The corpus builder's Beam transforms: ReadTask, Augment, WriteShards, WriteDeadLetters, WriteManifest.

They only wire the Beam-free pieces (:mod:`pipelines.readers`, :mod:`pipelines.augmentation`,
:mod:`pipelines.shards`, :mod:`pipelines.manifest`): bad records leave through the ``REJECTED``
tagged output, counted with Beam metrics; the augmenter is loaded once per worker process through a
``shared.Shared`` handle and fed batches of records by ``BatchElements``.

(No ``from __future__ import annotations`` here: Beam reads ``process`` annotations as type hints.)
"""
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from typing import Callable, Sequence

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from pipelines import fs
from pipelines.augmentation import augment_records
from pipelines.manifest import DEAD_LETTER, build_manifest, canonical_json, write_manifest
from pipelines.readers import read_input
from pipelines.records import InputSpec, Record, Reject
from pipelines.rows import schema
from pipelines.shards import natural_key, shard_name, shard_of, sort_rows, write_shard
from pipelines.tasks import TaskSpec

log = logging.getLogger(__name__)

REJECTED = "rejected"
NAMESPACE = "bert_compress"
# Records per engine call: enough that the masked-LM forwards stay full (measured: bench/pipeline_throughput.py).
RECORDS_PER_BATCH = 128


# -- ReadTask ----------------------------------------------------------------------------------
class _ParseInput(beam.DoFn):
    """One input (file or dataset) -> its records; rejects to ``REJECTED``."""

    def __init__(self, spec: TaskSpec, max_records: int | None = None):
        self.spec, self.max_records = spec, max_records
        self.read = Metrics.counter(NAMESPACE, "records_read")
        self.rejected = Metrics.counter(NAMESPACE, "records_rejected_read")

    def process(self, inp: InputSpec):
        for n, item in enumerate(read_input(self.spec, inp, fs.open_data)):
            if self.max_records is not None and n >= self.max_records:
                break
            self.read.inc()
            if isinstance(item, Reject):
                self.rejected.inc()
                yield pvalue.TaggedOutput(REJECTED, item)
            else:
                yield item


class ReadTask(beam.PTransform):
    """PBegin -> (records, rejects): every record of ``inputs``, spread over the workers.

    Args:
        spec: the task. inputs: the resolved inputs. max_records: per input, keep the first N.
    """

    def __init__(self, spec: TaskSpec, inputs: Sequence[InputSpec], max_records: int | None = None):
        super().__init__()
        self.spec, self.inputs, self.max_records = spec, list(inputs), max_records

    def expand(self, pbegin):
        parsed = (pbegin
                  | "Inputs" >> beam.Create(self.inputs)
                  | "Parse" >> beam.ParDo(_ParseInput(self.spec, self.max_records)).with_outputs(
                      REJECTED, main="records"))
        records = parsed.records | "Spread" >> beam.Reshuffle()
        return records, parsed[REJECTED]


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

    def progress(self, records: int, texts: int, total: int) -> None:
        self.records += records
        self.texts += texts
        now = time.monotonic()
        if now - self.last_log < self.progress_seconds:
            return
        self.last_log = now
        elapsed = max(now - self.start, 1e-9)
        rate = self.records / elapsed
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
    """A batch of records -> their rows; records the engine cannot handle to ``REJECTED``.

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
        self.counters = {name: Metrics.counter(NAMESPACE, name) for name in (
            "records_augmented", "texts", "variants", "rows", "records_rejected_augment",
            "mlm_rows", "glove_cache_hits", "glove_cache_misses")}

    def setup(self):
        key = getattr(self.loader, "key", repr(self.loader))
        self.engine = self._shared.acquire(
            lambda: _Engine(self.loader(), self.progress_seconds, self.workers), tag=key)

    def process(self, batch: list[Record], total: int):
        engine = self.engine
        with engine.lock:  # one batch at a time per process: the model uses every core already
            before = engine.augmenter.stats()
            result = augment_records(engine.augmenter, batch, self.spec, self.augment_context)
            after = engine.augmenter.stats()
            engine.progress(len(batch), result.texts, total)
        for name in ("mlm_rows", "glove_cache_hits", "glove_cache_misses"):
            self.counters[name].inc(after.get(name, 0) - before.get(name, 0))
        self.counters["records_augmented"].inc(len(batch) - len(result.rejects))
        self.counters["texts"].inc(result.texts)
        self.counters["variants"].inc(result.variants)
        self.counters["rows"].inc(len(result.rows))
        self.counters["records_rejected_augment"].inc(len(result.rejects))
        yield from result.rows
        for reject in result.rejects:
            yield pvalue.TaggedOutput(REJECTED, reject)


class Augment(beam.PTransform):
    """records -> (rows, rejects), in batches of at most ``max_batch`` records per engine call."""

    def __init__(self, loader: Callable, spec: TaskSpec, augment_context: bool = False,
                 max_batch: int = RECORDS_PER_BATCH, progress_seconds: float = 30.0, workers: int = 1):
        super().__init__()
        self.fn = AugmentFn(loader, spec, augment_context, progress_seconds, workers)
        self.max_batch = max_batch

    def expand(self, records):
        total = records | "Total" >> beam.combiners.Count.Globally()
        out = (records
               # Fixed-size batches: the engine batches its masked-LM rows itself, and gains from more
               # texts per call; BatchElements' adaptive sizing would start at one record.
               | "Batch" >> beam.BatchElements(min_batch_size=self.max_batch, max_batch_size=self.max_batch)
               | "Engine" >> beam.ParDo(self.fn, total=beam.pvalue.AsSingleton(total)).with_outputs(
                   REJECTED, main="rows"))
        return out.rows, out[REJECTED]


# -- writing -----------------------------------------------------------------------------------
class _WriteShard(beam.DoFn):
    def __init__(self, output: str, spec: TaskSpec, num_shards: int):
        self.output, self.spec, self.num_shards = output, spec, num_shards

    def process(self, keyed):
        index, rows = keyed
        rows = sort_rows(r for r in rows if r is not None)
        name = shard_name(index, self.num_shards)
        with fs.create(fs.join(self.output, name)) as sink:
            write_shard(rows, schema(self.spec), sink)
        originals = sum(r["aug_index"] == 0 for r in rows)
        yield {"file": name, "rows": len(rows), "originals": originals, "variants": len(rows) - originals}


class WriteShards(beam.PTransform):
    """rows -> one summary {file, rows, originals, variants} per shard written (empty ones too)."""

    def __init__(self, output: str, spec: TaskSpec, num_shards: int):
        super().__init__()
        self.output, self.spec, self.num_shards = output, spec, num_shards

    def expand(self, rows):
        n = self.num_shards
        keyed = rows | "Key" >> beam.Map(lambda r: (shard_of(r["source_id"], n), r))
        every = rows.pipeline | "EveryShard" >> beam.Create([(i, None) for i in range(n)])
        return ((keyed, every)
                | "Merge" >> beam.Flatten()
                | "Group" >> beam.GroupByKey()
                | "Write" >> beam.ParDo(_WriteShard(self.output, self.spec, n)))


def _write_dead_letters(lines: list[str], path: str) -> int:
    with fs.create(path) as f:  # sorted by location (lines start with it), file:9 before file:10
        f.write("".join(line + "\n" for line in sorted(lines, key=natural_key)).encode("utf-8"))
    return len(lines)


class WriteDeadLetters(beam.PTransform):
    """rejects -> ``OUTPUT/dead-letter.jsonl`` (sorted JSON lines, written even when empty); the count."""

    def __init__(self, output: str):
        super().__init__()
        self.path = fs.join(output, DEAD_LETTER)

    def expand(self, rejects):
        return (rejects
                | "Json" >> beam.Map(Reject.to_json)
                | "All" >> beam.combiners.ToList()
                | "Write" >> beam.Map(_write_dead_letters, self.path))


class WriteManifest(beam.PTransform):
    """Once every shard and the dead letters are written: ``OUTPUT/manifest.json``, atomically.

    Args:
        output: the corpus folder. static: the manifest's run-independent part (identity, inputs...).
        shards, read, rejected: PCollections of the shard summaries, the read count, the reject count.
    """

    def __init__(self, output: str, static: dict, shards, read, rejected):
        super().__init__()
        self.output, self.static = output, static
        self.shards, self.read, self.rejected = shards, read, rejected

    def expand(self, pbegin):
        return (pbegin
                | "Once" >> beam.Create([None])
                | "Write" >> beam.Map(_write_manifest, self.output, self.static,
                                      beam.pvalue.AsList(self.shards), beam.pvalue.AsSingleton(self.read),
                                      beam.pvalue.AsSingleton(self.rejected)))


def _write_manifest(_, output: str, static: dict, shards: list[dict], read: int, rejected: int) -> str:
    manifest = build_manifest(static, shards, {"read": read, "rejected": rejected})
    return write_manifest(output, manifest)

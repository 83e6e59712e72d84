"""The teacher's prediction-layer outputs, computed once per corpus and read by every student.

Users build a corpus once, then train many students on it (sizes, seeds, learning rates, pruning
levels); in the prediction step each of those runs would recompute the teacher's forward for every
row of every epoch. ``distill cache-teacher`` runs the teacher once and writes its outputs beside
the corpus (:func:`build`)::

    OUTPUT/manifest.json                   the teacher (hash of its files), the corpus (fingerprint,
                                           each shard's hash), the tokenisation, the dtype, the shards
    OUTPUT/shard-00000-of-00004.arrow ...  one per corpus shard, same name, same rows, same order

A classification (or regression) row holds ``id``, ``length`` (its tokens) and ``logits`` (C,). A
SQuAD row holds ``id``, ``window_lengths`` (the tokens of each of its windows, as ``QACollator``
cuts them) and ``logits``: each window's start logits then its end logits over its real tokens
only, window after window. bfloat16 outputs are stored as their 16-bit patterns (uint16).

Training with ``data.teacher_cache=OUTPUT`` (``distill task --step prediction``, which is also
pruning recovery) checks the cache against the run before the first step
(:meth:`TeacherCache.attach`: teacher, corpus, windows, task, each difference named), then streams
cache rows beside corpus rows: corpus shard k row i pairs with cache shard k row i, read chunk by
chunk as the corpus is (memory stays flat), and :class:`TargetCollator` puts them in the batch,
padded as the batch is, under ``stages.TEACHER_TARGETS``. The teacher's weights are never loaded.

Numerics. Rows are computed grouped by canonical length (padded to a multiple of ``PAD_MULTIPLE``
tokens, at most max_seq_length), ``batch_size`` rows per forward, the last batch of a length filled
up with copies of a row. A shard's forwards are cut from that shard alone, so a resumed build, or
one split across processes, runs each shard's same forwards on the same tensors and writes the same
bytes: exact by construction (same torch build, CPU kind and thread count). A cached value is not
bit-identical to the row's forward in any other batch: the matrix library may group a row's
additions differently at another position or shape (MKL's float32 GEMM gives rows of one product
different kernels on AVX-512), so it equals the row's own forward, and the live teacher's on a
training batch, to float rounding (measured in docs/distill.md), and a training step from the
cache matches the live teacher's within the bounds docs/distill.md states and the tests check.
Computing every row alone would make it exact against that reference, at 2.25x the build time on
a CPU (measured) and more on a GPU, for no gain in training.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import torch

from distill.data.stream import Collator, Corpus, ShardStream, TableCache, open_corpus
from distill.modules.models import ModelError, features, load_model
from distill.data.shards import MANIFEST, CorpusError, open_table
from distill.modules.objectives import TEACHER_TARGETS, span_logits, trained_head

FORMAT = "bert-compress-teacher-cache"
FORMAT_VERSION = 1
BUILD_FILE = "build.json"  # a build in progress: its identity, so a rerun resumes only the same build
PAD_MULTIPLE = 8  # canonical lengths: the tokens of a row rounded up to a multiple of this
# Rows tokenised and run together (SQuAD: fewer, each has windows and offsets). Batches are filled
# up within a block, at most batch_size - 1 copies per canonical length: larger blocks waste less.
BLOCK_ROWS = {"qa": 2048, "other": 16384}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
ROW_KEY = "_teacher"  # the cache entry the stream adds to each corpus row
#: Files of a model directory that decide its outputs on a text: weights, config, tokenizer.
IDENTITY_FILES = ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                  "added_tokens.json", "merges.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")


class CacheError(CorpusError):
    """A teacher cache that is incomplete, of another format, or not the one this run needs."""


# --------------------------------------------------------------------------------------------------
# Identities: what a cache was built from


def _sha256(path: str, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (local path or fsspec URL)."""
    h = hashlib.sha256()
    if "://" in path and not path.startswith("file://"):
        import fsspec

        opener = fsspec.open(path, "rb")
    else:
        opener = open(path[len("file://"):] if path.startswith("file://") else path, "rb")
    with opener as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def teacher_identity(path: str) -> dict:
    """``{"sha256", "files": {name: sha256}}`` of a local model directory: its weights, config.json
    and tokenizer files, everything that decides its outputs on a text (not ``config.yaml`` or
    ``metrics.json``). ``sha256`` hashes the per-file hashes in name order.

    Raises ``ModelError`` when ``path`` is not a directory holding weights (a hub model: download
    it first, e.g. ``huggingface-cli download NAME --local-dir DIR``).
    """
    if not os.path.isdir(path):
        raise ModelError(f"teacher {path!r} is not a local model directory; the cache names a teacher by the hash "
                         f"of its files (download a hub model first: huggingface-cli download NAME --local-dir DIR)")
    names = sorted(n for n in os.listdir(path) if n in IDENTITY_FILES or n.endswith(WEIGHT_SUFFIXES))
    if not any(n.endswith(WEIGHT_SUFFIXES) for n in names):
        raise ModelError(f"teacher {path}: no weights file (*.safetensors, *.bin)")
    files = {n: _sha256(os.path.join(path, n)) for n in names}
    combined = hashlib.sha256("".join(f"{n}:{h}\n" for n, h in files.items()).encode()).hexdigest()
    return {"sha256": combined, "files": files}


def corpus_identity(corpus: Corpus) -> dict:
    """``{"fingerprint", "shards": [{file, rows, sha256}]}`` of a corpus: the manifest's fingerprint
    and every shard's hash, so a shard changed after the manifest was written is caught too."""
    m = corpus.manifest
    return {"fingerprint": m.fingerprint,
            "shards": [{"file": f, "rows": n, "sha256": _sha256(p)} for f, n, p in zip(m.files, m.rows, m.paths())]}


def tokenization(task, max_seq_length: int, doc_stride: int, max_query_length: int) -> dict:
    """The settings that decide a row's token windows: the run's ``data.*`` keys (and text fields)."""
    out = {"text_fields": list(task.text_fields), "max_seq_length": max_seq_length}
    if task.kind == "qa":
        out |= {"doc_stride": doc_stride, "max_query_length": max_query_length}
    return out


def _identity_differences(cached: dict, now: dict) -> list[str]:
    """What differs between two builds' identities, in words (empty when they match)."""
    out = []
    if cached.get("task") != now.get("task"):
        out.append(f"task {now.get('task')} (cache: {cached.get('task')})")
    out += _teacher_differences(cached["teacher"], now["teacher"], "the teacher")
    out += _corpus_differences(cached["corpus"], now["corpus"])
    out += _tokenization_differences(cached["tokenization"], now["tokenization"], "")
    for key in ("dtype", "numerics"):
        if cached.get(key) != now.get(key):
            out.append(f"{key} {now.get(key)} (cache: {cached.get(key)})")
    return out


def _teacher_differences(cached: dict, now: dict, name: str) -> list[str]:
    if cached["sha256"] == now["sha256"]:
        return []
    a, b = cached["files"], now["files"]
    files = sorted(n for n in set(a) | set(b) if a.get(n) != b.get(n))
    return [f"teacher: the cache was built from {cached.get('path')} (sha256 {cached['sha256'][:12]}), "
            f"{name} {now.get('path')} has sha256 {now['sha256'][:12]} (files that differ: {', '.join(files)})"]


def _corpus_differences(cached: dict, now: dict) -> list[str]:
    out = []
    if cached["fingerprint"] != now["fingerprint"]:
        out.append(f"corpus: fingerprint {now['fingerprint']} (cache: {cached['fingerprint']})")
    a = [(s["file"], s["rows"]) for s in cached["shards"]]
    b = [(s["file"], s["rows"]) for s in now["shards"]]
    if a != b:
        out.append(f"corpus shards: {len(b)} shards of {[n for _, n in b][:8]} rows (cache: {len(a)} shards of "
                   f"{[n for _, n in a][:8]} rows)")
        return out
    for s, t in zip(cached["shards"], now["shards"]):
        if s["sha256"] != t["sha256"]:
            out.append(f"corpus shard {s['file']} changed since the cache was built (sha256 {t['sha256'][:12]}, "
                       f"cache: {s['sha256'][:12]})")
    return out


def _tokenization_differences(cached: dict, now: dict, prefix: str) -> list[str]:
    return [f"windows: {prefix}{k} {now.get(k)} (cache: {cached.get(k)})"
            for k in sorted(set(cached) | set(now)) if cached.get(k) != now.get(k)]


def _read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise CacheError(f"{path}: not valid JSON ({e})") from None


def _write_json(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)  # readers see all or nothing


# --------------------------------------------------------------------------------------------------
# Canonical-shape forwards


def canonical_length(n: int, max_length: int) -> int:
    """The padded length a row of ``n`` tokens runs at: n rounded up to ``PAD_MULTIPLE``, at most
    ``max_length`` (never less than n)."""
    return max(n, min(-(-n // PAD_MULTIPLE) * PAD_MULTIPLE, max_length))


@torch.no_grad()
def canonical_forward(run: Callable[[dict], torch.Tensor], seqs: Sequence[tuple[torch.Tensor, torch.Tensor]],
                      batch_size: int, max_length: int, pad_id: int, device: torch.device,
                      dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """``run`` on every sequence at its canonical shape; each sequence's output row, on the CPU.

    Sequences are grouped by :func:`canonical_length`; every forward holds ``batch_size`` rows of
    one length (the last of a length filled up with copies of its last row). The forwards are a
    function of ``seqs``: the same sequences give the same bits; a sequence among others gives its
    own output to float rounding (module docstring).

    Args:
        run: ``batch -> (B, ...)`` outputs; batch holds input_ids, token_type_ids, attention_mask (B, L).
        seqs: (input_ids (n,), token_type_ids (n,)) per sequence, unpadded.
        dtype: bfloat16 runs under autocast, as ``train.precision=bf16`` does.
    """
    lengths = [len(ids) for ids, _ in seqs]
    canon = [canonical_length(n, max_length) for n in lengths]
    out: list[torch.Tensor | None] = [None] * len(seqs)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    for length in sorted(set(canon)):
        group = [i for i, c in enumerate(canon) if c == length]
        for start in range(0, len(group), batch_size):
            idx = group[start:start + batch_size]
            filled = idx + [idx[-1]] * (batch_size - len(idx))
            ids = torch.full((batch_size, length), pad_id, dtype=torch.long)
            types = torch.zeros((batch_size, length), dtype=torch.long)
            mask = torch.zeros((batch_size, length), dtype=torch.long)
            for r, i in enumerate(filled):
                n = lengths[i]
                ids[r, :n], types[r, :n], mask[r, :n] = seqs[i][0], seqs[i][1], 1
            batch = {"input_ids": ids.to(device), "token_type_ids": types.to(device), "attention_mask": mask.to(device)}
            with autocast:
                y = run(batch)
            y = y[:len(idx)].to(dtype).cpu()
            for r, i in enumerate(idx):
                out[i] = y[r]
    return out


def _encode(values: torch.Tensor) -> np.ndarray:
    """Outputs as stored: float32, or bfloat16 as its uint16 bit patterns."""
    if values.dtype == torch.bfloat16:
        return values.contiguous().view(torch.int16).numpy().view(np.uint16)
    return values.float().numpy()


def _decode(values: np.ndarray) -> torch.Tensor:
    """Stored outputs back as a tensor (uint16 -> bfloat16)."""
    values = np.array(values, copy=True)  # Arrow's memory is read-only; torch wants its own
    if values.dtype == np.uint16:
        return torch.from_numpy(values.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(values)


# --------------------------------------------------------------------------------------------------
# Building a cache


def _schema(qa: bool, num_labels: int, dtype: str) -> pa.Schema:
    value = pa.uint16() if dtype == "bfloat16" else pa.float32()
    if qa:
        return pa.schema([("id", pa.string()), ("window_lengths", pa.list_(pa.int32())), ("logits", pa.list_(value))])
    return pa.schema([("id", pa.string()), ("length", pa.int32()), ("logits", pa.list_(value, num_labels))])


class _Teacher:
    """A loaded teacher and the tokenisation of the run it serves: corpus rows -> a record batch."""

    def __init__(self, path: str, task, max_seq_length: int, doc_stride: int, max_query_length: int,
                 batch_size: int, device: torch.device, dtype: str):
        from transformers import AutoTokenizer

        self.qa = task.kind == "qa"
        head = "qa" if self.qa else "classification"
        self.model = load_model(path, head)
        trained_head(self.model, head, path)
        if not self.qa and self.model.config.num_labels != task.num_labels:
            raise ModelError(f"the teacher has {self.model.config.num_labels} outputs but task {task.name} has "
                             f"{task.num_labels} labels; fine-tune a teacher on {task.name} first (distill finetune)")
        self.model.eval().requires_grad_(False).to(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.qa:
            from distill.data.qa import QACollator

            self.collator = QACollator(self.tokenizer, max_seq_length, doc_stride, max_query_length)
        else:
            self.collator = Collator(self.tokenizer, task.text_fields, max_seq_length, with_labels=False)
        self.max_seq_length, self.batch_size, self.device = max_seq_length, batch_size, device
        self.dtype = DTYPES[dtype]
        self.schema = _schema(self.qa, task.num_labels, dtype)
        self.sequences = self.forward_rows = 0  # rows (windows) needed and run: the rest are fill-up copies

    def _run(self, batch: dict) -> torch.Tensor:
        if self.qa:
            return span_logits(self.model, batch)  # (B, 2, L)
        return features(self.model, batch, need_hidden=False).logits  # (B, C)

    def _forward(self, seqs) -> list[torch.Tensor]:
        counts = Counter(canonical_length(len(ids), self.max_seq_length) for ids, _ in seqs)
        self.sequences += len(seqs)
        self.forward_rows += sum(-(-c // self.batch_size) * self.batch_size for c in counts.values())
        return canonical_forward(self._run, seqs, self.batch_size, self.max_seq_length,
                                 self.tokenizer.pad_token_id or 0, self.device, self.dtype)

    def outputs(self, rows: list[dict]) -> pa.RecordBatch:
        """The cache rows of ``rows`` (corpus rows, in order)."""
        ids = pa.array([r["id"] for r in rows], pa.string())
        if self.qa:
            return self._qa_outputs(rows, ids)
        enc = self.collator(rows)  # (B, T) padded to the longest: the training collator's own tokens
        lengths = enc["attention_mask"].sum(1).tolist()
        seqs = [(enc["input_ids"][i, :n], enc["token_type_ids"][i, :n]) for i, n in enumerate(lengths)]
        logits = _encode(torch.stack(self._forward(seqs)))  # (B, C)
        column = pa.FixedSizeListArray.from_arrays(pa.array(logits.reshape(-1)), logits.shape[1])
        return pa.RecordBatch.from_arrays([ids, pa.array(lengths, pa.int32()), column], schema=self.schema)

    def _qa_outputs(self, rows: list[dict], ids: pa.Array) -> pa.RecordBatch:
        enc = self.collator.encode(rows, padding=False)  # the training collator's own windows
        seqs = [(torch.tensor(i), torch.tensor(t)) for i, t in zip(enc["input_ids"], enc["token_type_ids"])]
        spans = self._forward(seqs)  # (2, L) per window
        lengths: list[list[int]] = [[] for _ in rows]
        values: list[list[np.ndarray]] = [[] for _ in rows]
        for w, (ex, (window, _)) in enumerate(zip(enc["example_index"], seqs)):
            n = len(window)
            lengths[ex].append(n)
            values[ex].append(_encode(spans[w][:, :n]).reshape(-1))  # start logits, then end logits
        flat = [np.concatenate(v) for v in values]
        offsets = np.cumsum([0] + [len(v) for v in flat]).astype(np.int32)
        column = pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(flat)))
        return pa.RecordBatch.from_arrays([ids, pa.array(lengths, pa.list_(pa.int32())), column], schema=self.schema)


def _corpus_dir(corpus: str, output: str, is_main: bool, barrier: Callable[[], None]) -> str:
    """``corpus``; a SQuAD JSON file is first written as a corpus under ``OUTPUT/corpus``: the same
    shard bytes a training run writes from it (``data.train=FILE.json``), so the two match."""
    if not os.path.isfile(corpus):
        return corpus
    from distill.data.qa import squad_json_corpus

    root = os.path.join(output, "corpus")
    if is_main:
        squad_json_corpus(corpus, root)
    barrier()
    return root


def build(teacher: str, corpus: str, output: str, max_seq_length: int | None = None, doc_stride: int = 128,
          max_query_length: int = 64, batch_size: int = 32, device: str | None = None, dtype: str = "float32",
          rank: int = 0, world: int = 1, barrier: Callable[[], None] = lambda: None, progress: bool | None = None,
          on_shard: Callable[[str], None] | None = None) -> dict:
    """Run ``teacher`` once over ``corpus`` and write its outputs to ``output`` (module docstring).

    Resumable by shard: a shard is written under a temporary name and renamed when complete, and
    ``build.json`` records what is being built; a rerun of the same build skips finished shards,
    a rerun of another build is refused. ``manifest.json`` is written last: its presence means a
    complete cache. Processes ``rank`` of ``world`` take shards rank, rank + world, ...; after
    ``barrier()`` rank 0 writes the manifest.

    Args:
        teacher: a fine-tuned teacher directory (classification or QA head).
        corpus: a corpus directory; for squad also a SQuAD JSON file (written as OUTPUT/corpus).
        max_seq_length, doc_stride, max_query_length: as the ``data.*`` keys of the runs it serves
            (max_seq_length None: 128, or 384 for squad).
        batch_size: rows (windows) per forward; with the device and dtype it decides float rounding.
        device: cpu or cuda (None: cuda when available). dtype: float32 or bfloat16 (autocast).
        on_shard: called with each shard file once written (progress, tests).
    Returns:
        The manifest, plus ``built`` (shards computed by this call), ``seconds`` and
        ``fill_fraction`` (of the rows this call's forwards ran, the fill-up copies).
    Raises:
        CorpusError: a bad corpus, or an output holding another build. ModelError: a teacher
        without the task's trained head. ValueError: bad settings.
    """
    from tqdm import tqdm

    from distill.config import default_max_seq_length
    from distill.data.shards import read_manifest
    from pipelines.tasks import get_task

    started = time.perf_counter()
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    os.makedirs(output, exist_ok=True)
    corpus_dir = _corpus_dir(corpus, output, rank == 0, barrier)
    task = get_task(read_manifest(corpus_dir).task)
    max_seq_length = max_seq_length or default_max_seq_length(task.name)
    opened = open_corpus(corpus_dir, task)  # the checks a training run makes
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    identity = {"format": FORMAT, "format_version": FORMAT_VERSION, "task": task.name, "kind": task.kind,
                "outputs": "span_logits" if task.kind == "qa" else "logits",
                "num_labels": None if task.kind == "qa" else task.num_labels,
                "teacher": {"path": os.path.abspath(teacher), **teacher_identity(teacher)},
                "corpus": {"path": os.path.abspath(corpus), **corpus_identity(opened)},
                "tokenization": tokenization(task, max_seq_length, doc_stride, max_query_length),
                "dtype": dtype,
                "numerics": {"batch_size": batch_size, "pad_multiple": PAD_MULTIPLE, "device": dev.type,
                             "torch": torch.__version__.split("+")[0]}}
    done = _read_json(os.path.join(output, MANIFEST))
    started_build = _read_json(os.path.join(output, BUILD_FILE))
    for what, existing in (("a teacher cache", done), ("a partial teacher cache", started_build)):
        if existing is None:
            continue
        diff = _identity_differences(existing, identity)
        if diff:
            raise CacheError(f"{output} holds {what} of another build ({'; '.join(diff)}); remove it or choose "
                             f"another --output")
        if existing is done:
            return done | {"built": 0, "seconds": time.perf_counter() - started, "fill_fraction": 0.0}
    if rank == 0:
        _write_json(os.path.join(output, BUILD_FILE), identity)

    files, rows = opened.manifest.files, opened.manifest.rows
    todo = [i for i in range(rank, len(files), world) if not os.path.exists(os.path.join(output, files[i]))]
    fill = 0.0
    if todo:
        model = _Teacher(teacher, task, max_seq_length, doc_stride, max_query_length, batch_size, dev, dtype)
        show = rank == 0 and (sys.stderr.isatty() if progress is None else progress)
        with tqdm(total=sum(rows[i] for i in todo), disable=not show, unit="row", desc="teacher outputs") as bar:
            for i in todo:
                _write_shard(model, opened, i, os.path.join(output, files[i]), bar)
                if on_shard is not None:
                    on_shard(files[i])
        fill = 1 - model.sequences / max(1, model.forward_rows)
    barrier()
    manifest = _finish(output, identity, files, rows) if rank == 0 else identity
    return manifest | {"built": len(todo), "seconds": time.perf_counter() - started, "fill_fraction": fill}


def _write_shard(model: _Teacher, corpus: Corpus, index: int, path: str, bar) -> None:
    """Cache shard ``index`` of ``corpus``, written under a temporary name, then renamed."""
    table = open_table(corpus.manifest.paths()[index]).select(corpus.columns)
    tmp = os.path.join(os.path.dirname(path), f".tmp-{os.path.basename(path)}")
    with pa.OSFile(tmp, "wb") as sink, ipc.new_stream(sink, model.schema) as writer:
        block = BLOCK_ROWS["qa" if model.qa else "other"]
        for start in range(0, table.num_rows, block):
            rows = table.slice(start, block).to_pylist()
            writer.write_batch(model.outputs(rows))
            bar.update(len(rows))
    os.replace(tmp, path)


def _finish(output: str, identity: dict, files: Sequence[str], rows: Sequence[int]) -> dict:
    """Check every cache shard is there with its rows, then write ``manifest.json`` (last)."""
    shards = []
    for f, n in zip(files, rows):
        path = os.path.join(output, f)
        if not os.path.exists(path):
            raise CacheError(f"{output}: shard {f} was not written (a process of the build failed?); rerun to resume")
        got = open_table(path).num_rows
        if got != n:
            raise CacheError(f"{path}: {got} rows, the corpus shard has {n}")
        shards.append({"file": f, "rows": n, "sha256": _sha256(path), "bytes": os.path.getsize(path)})
    total_rows, total_bytes = sum(rows), sum(s["bytes"] for s in shards)
    manifest = identity | {"shards": shards, "rows": total_rows, "bytes": total_bytes,
                           "bytes_per_row": round(total_bytes / max(1, total_rows), 1)}
    _write_json(os.path.join(output, MANIFEST), manifest)
    os.remove(os.path.join(output, BUILD_FILE))
    return manifest


# --------------------------------------------------------------------------------------------------
# Reading a cache in training


class TeacherCache:
    """A complete cache (``manifest.json`` read): checked against a run, then streamed beside its corpus."""

    def __init__(self, root: str, manifest: dict):
        self.root, self.manifest = root, manifest
        self.qa = manifest["kind"] == "qa"

    @classmethod
    def open(cls, root: str) -> "TeacherCache":
        """Raises ``CacheError`` for a directory without a manifest (not a cache, or an unfinished build)."""
        manifest = _read_json(os.path.join(root, MANIFEST))
        if manifest is None:
            partial = os.path.exists(os.path.join(root, BUILD_FILE))
            raise CacheError(f"data.teacher_cache {root}: no {MANIFEST}; " + (
                "its build did not finish (rerun distill cache-teacher with the same arguments to resume it)"
                if partial else "not a teacher cache (build one with distill cache-teacher)"))
        if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
            raise CacheError(f"data.teacher_cache {root}: format {manifest.get('format')} "
                             f"v{manifest.get('format_version')}, expected {FORMAT} v{FORMAT_VERSION}")
        return cls(root, manifest)

    def differences(self, corpus: Corpus, cfg, task) -> list[str]:
        """What differs between this cache and the run of ``cfg`` on ``corpus``, in words."""
        m, d = self.manifest, cfg.data
        out = [] if m["task"] == task.name else [f"task {task.name} (cache: {m['task']})"]
        try:
            now = {"path": cfg.model.teacher, **teacher_identity(cfg.model.teacher)}
        except ModelError as e:
            out.append(str(e))
        else:
            out += _teacher_differences(m["teacher"], now, "model.teacher")
        out += _corpus_differences(m["corpus"], corpus_identity(corpus))
        run = tokenization(task, d.max_seq_length, d.doc_stride, d.max_query_length)
        out += _tokenization_differences(m["tokenization"], run, "data.")
        return out or self._shard_problems()

    def _shard_problems(self) -> list[str]:
        out = []
        for s in self.manifest["shards"]:
            path = os.path.join(self.root, s["file"])
            if not os.path.exists(path):
                out.append(f"cache shard {s['file']} is missing")
            elif _sha256(path) != s["sha256"]:
                out.append(f"cache shard {s['file']} changed since the cache was built")
        return out

    def attach(self, corpus: Corpus, cfg, task) -> "CachedCorpus":
        """``corpus`` whose stream carries each row's cache entry; raises ``CacheError`` naming every
        difference when the cache was built from another teacher, corpus or windows."""
        diff = self.differences(corpus, cfg, task)
        if diff:
            d = cfg.data
            windows = f" --doc-stride {d.doc_stride} --max-query-length {d.max_query_length}" if self.qa else ""
            raise CacheError(f"data.teacher_cache {self.root} does not fit this run: {'; '.join(diff)}. Build one "
                             f"that does: distill cache-teacher --teacher {cfg.model.teacher} --corpus {d.train} "
                             f"--max-seq-length {d.max_seq_length}{windows} --output NEW_DIR")
        paths = [os.path.join(self.root, s["file"]) for s in self.manifest["shards"]]
        return CachedCorpus(corpus.manifest, corpus.columns, corpus.selections, corpus.rows, cache_paths=paths,
                            qa=self.qa)

    def collator(self, inner) -> "TargetCollator":
        return TargetCollator(inner, self.qa)


@dataclass
class CachedCorpus(Corpus):
    """A corpus whose stream carries each row's cache entry (:class:`CachedStream`)."""

    cache_paths: list[str] = field(default_factory=list)
    qa: bool = False

    def stream(self, **kwargs) -> "CachedStream":
        return CachedStream(self.cache_paths, self.qa, self.manifest.paths(), self.rows, self.columns,
                            self.selections, **kwargs)


class CachedStream(ShardStream):
    """``ShardStream`` whose rows carry their cache entry under ``ROW_KEY``: whenever a chunk of
    corpus shard k is read, the same rows of cache shard k are read with it (and dropped with it).

    Entry: (length, logits (C,)) for classification; (window_lengths (nw,), logits (2 x sum,)) for QA.
    """

    def __init__(self, cache_paths: Sequence[str], qa: bool, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if len(cache_paths) != len(self.paths):
            raise CacheError(f"{len(cache_paths)} cache shards for {len(self.paths)} corpus shards")
        self.cache_paths, self.qa = list(cache_paths), qa
        self._cache_tables: TableCache | None = None

    def __getstate__(self) -> dict:  # DataLoader workers open their own tables
        return self.__dict__ | {"_cache_tables": None}

    def _read_piece(self, tables, piece) -> list[dict]:
        rows = super()._read_piece(tables, piece)
        if self._cache_tables is None:
            self._cache_tables = TableCache(self.cache_tables)
        shard, a, b = piece
        table = self._cache_tables.get(self.cache_paths[shard])
        sel = self.selections[shard]
        part = table.slice(a, b - a) if sel is None else table.take(pa.array(sel[a:b]))
        entries = _qa_entries(part) if self.qa else _entries(part)
        for row, cache_id, entry in zip(rows, part.column("id").to_pylist(), entries):
            if row["id"] != cache_id:
                raise CacheError(f"{self.cache_paths[shard]}: row {cache_id!r} is not corpus row {row['id']!r} of "
                                 f"{self.paths[shard]}; the cache does not line up with the corpus")
            row[ROW_KEY] = entry
        return rows


def _entries(part: pa.Table) -> list[tuple[int, np.ndarray]]:
    lengths = part.column("length").to_numpy()
    logits = part.column("logits").combine_chunks()  # fixed-size lists (n, C)
    values = logits.flatten().to_numpy().reshape(len(part), -1)
    return [(int(n), v) for n, v in zip(lengths, values)]


def _qa_entries(part: pa.Table) -> list[tuple[np.ndarray, np.ndarray]]:
    windows = part.column("window_lengths").combine_chunks()
    logits = part.column("logits").combine_chunks()
    w_off, w_val = windows.offsets.to_numpy(), windows.values.to_numpy()
    l_off, l_val = logits.offsets.to_numpy(), logits.values.to_numpy()
    return [(w_val[w_off[i]:w_off[i + 1]], l_val[l_off[i]:l_off[i + 1]]) for i in range(len(part))]


class TargetCollator:
    """The training collator, plus the rows' cached teacher outputs under ``TEACHER_TARGETS``:
    (B, C) logits, or (W, 2, T) span logits padded as the batch (0 at padding, which the span loss
    masks). Each row's tokens (each window's, for QA) are checked against the batch's.

    Raises ``CacheError`` naming the row when they differ (a cache made with another tokenizer).
    """

    def __init__(self, inner, qa: bool):
        self.inner, self.qa = inner, qa

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        missing = [r.get("id") for r in rows if ROW_KEY not in r]
        if missing:
            raise CacheError(f"rows {missing[:5]} carry no teacher outputs; stream them with TeacherCache.attach")
        batch = self.inner(rows)
        lengths = batch["attention_mask"].sum(1).tolist()  # (B,) or (W,)
        if self.qa:
            batch[TEACHER_TARGETS] = self._spans(rows, lengths, batch["attention_mask"].shape[1])
            return batch
        cached = [r[ROW_KEY][0] for r in rows]
        self._check(rows, cached, lengths)
        batch[TEACHER_TARGETS] = _decode(np.stack([r[ROW_KEY][1] for r in rows]))  # (B, C)
        return batch

    def _spans(self, rows: Sequence[dict], lengths: list[int], width: int) -> torch.Tensor:
        cached = [int(n) for r in rows for n in r[ROW_KEY][0]]
        self._check(rows, cached, lengths)
        first = rows[0][ROW_KEY][1]
        out = _decode(np.zeros((len(cached), 2, width), dtype=first.dtype))  # (W, 2, T)
        w = 0
        for r in rows:
            window_lengths, values = r[ROW_KEY]
            spans = _decode(values)
            at = 0
            for n in window_lengths:
                out[w, :, :n] = spans[at:at + 2 * n].view(2, n)
                at, w = at + 2 * n, w + 1
        return out

    @staticmethod
    def _check(rows: Sequence[dict], cached: list[int], lengths: list[int]) -> None:
        if cached != lengths:
            raise CacheError(f"rows {[r['id'] for r in rows][:5]}...: the cache holds windows of {cached[:8]} tokens, "
                             f"this batch has {lengths[:8]}; the cache was made with another tokenizer or windows")

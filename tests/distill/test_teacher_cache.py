"""``distill cache-teacher`` and ``data.teacher_cache``: the cache holds what the teacher computes,
resumes by shard, is refused when it does not fit the run, and gives the live teacher's loss."""
from __future__ import annotations

import json
import os
import shutil

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
import torch

from distill.data import Collator, loader, open_corpus
from distill.shards import open_table, read_manifest
from distill.stages import TEACHER_TARGETS, PredictionLoss, QAPredictionLoss, span_logits
from distill.teacher_cache import BUILD_FILE, DTYPES, CacheError, TeacherCache, build
from tests.distill.conftest import save_model, tiny_config, write_task_corpus
from tests.distill.test_train import common, read_log, run_cli

QA_WINDOWS = {"max_seq_length": 24, "doc_stride": 4, "max_query_length": 12}  # several windows per question
# The training loss from the cache against the live teacher's on the same (dynamically padded) batch,
# relative. Float32: the teacher's outputs move by ~1e-8 with the batch's shape, which the loss
# mostly rounds away (measured on MiniLM: equal in most batches, at most 1.9e-7). bfloat16: the
# teacher's rounding itself moves with the shape (measured at most 3.1e-6). docs/distill.md.
FP32_REL, BF16_REL = 1e-6, 1e-4


def _build(teacher, corpus, out, **kw):
    return build(str(teacher), str(corpus), str(out), batch_size=kw.pop("batch_size", 4), progress=False, **kw)


def alone(run, ids: torch.Tensor, types: torch.Tensor, batch_size: int, max_length: int,
          dtype=torch.float32) -> torch.Tensor:
    """A row's output from a forward of ``batch_size`` copies of it alone, padded to its length
    rounded up to 8 tokens (at most ``max_length``): the canonical shape the cache promises."""
    n = len(ids)
    length = max(n, min(-(-n // 8) * 8, max_length))
    x, t, m = (torch.zeros(batch_size, length, dtype=torch.long) for _ in range(3))
    x[:, :n], t[:, :n], m[:, :n] = ids, types, 1
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        return run({"input_ids": x, "token_type_ids": t, "attention_mask": m})[0].to(dtype)


def _logits(model):
    return lambda batch: model(**batch).logits


def _spans(model):
    return lambda batch: span_logits(model, batch)


def _load(directory, qa=False):
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification, AutoTokenizer

    cls = AutoModelForQuestionAnswering if qa else AutoModelForSequenceClassification
    return cls.from_pretrained(directory).eval(), AutoTokenizer.from_pretrained(directory)


def _cached_batches(cache_dir, corpus_dir, teacher, task_name, collator, batch_size=8, original_only=False, **data):
    """Batches of the training stream over a cached corpus, as ``distill task`` draws them."""
    from distill.config import load_config
    from pipelines.tasks import get_task

    task = get_task(task_name)
    overrides = [f"model.teacher={teacher}", f"data.train={corpus_dir}", f"task={task_name}",
                 f"data.teacher_cache={cache_dir}"] + [f"data.{k}={v}" for k, v in data.items()]
    cfg = load_config(None, overrides, stage="task", step="prediction")
    cache = TeacherCache.open(str(cache_dir))
    corpus = cache.attach(open_corpus(str(corpus_dir), task, original_only), cfg, task)
    stream = corpus.stream(seed=3, buffer_size=16, chunk_rows=10)
    return iter(loader(stream, cache.collator(collator), batch_size))


# --------------------------------------------------------------------------------------------------
# What the cache holds


def test_cache_rows_are_the_teachers_outputs_for_each_corpus_row(tmp_path, teacher_dir, sst2_corpus):
    manifest = _build(teacher_dir, sst2_corpus, tmp_path / "cache")
    corpus = read_manifest(str(sst2_corpus))
    assert [(s["file"], s["rows"]) for s in manifest["shards"]] == list(zip(corpus.files, corpus.rows))
    assert manifest["teacher"]["files"].keys() >= {"model.safetensors", "config.json", "tokenizer.json"}
    assert manifest["corpus"]["fingerprint"] == corpus.fingerprint and manifest["dtype"] == "float32"
    assert manifest["tokenization"] == {"text_fields": ["sentence"], "max_seq_length": 128}
    model, tok = _load(teacher_dir)
    for path, cache_file in zip(corpus.paths(), corpus.files):
        rows = open_table(path).to_pylist()
        cached = open_table(str(tmp_path / "cache" / cache_file)).to_pylist()
        assert [r["id"] for r in cached] == [r["id"] for r in rows]
        for row, entry in list(zip(rows, cached))[::3]:  # every third row of every shard
            enc = tok(row["sentence"], truncation=True, max_length=128, return_tensors="pt")
            ids, types = enc["input_ids"][0], enc["token_type_ids"][0]
            assert entry["length"] == len(ids)
            assert torch.equal(torch.tensor(entry["logits"]), alone(_logits(model), ids, types, 4, 128))


def test_squad_cache_holds_every_window_of_every_question(tmp_path, qa_teacher_dir, squad_train_json):
    from distill.qa import QACollator

    manifest = _build(qa_teacher_dir, squad_train_json, tmp_path / "cache", **QA_WINDOWS)
    assert manifest["outputs"] == "span_logits" and manifest["tokenization"]["doc_stride"] == 4
    model, tok = _load(qa_teacher_dir, qa=True)
    collator = QACollator(tok, 24, 4, 12)
    rows = open_table(str(tmp_path / "cache" / "corpus" / manifest["shards"][0]["file"])).to_pylist()
    cached = open_table(str(tmp_path / "cache" / manifest["shards"][0]["file"])).to_pylist()
    assert len(cached) == len(rows) == 32
    assert [r["id"] for r in cached] == [r["id"] for r in rows]
    several = 0
    for row, entry in list(zip(rows, cached))[::2]:
        enc = collator.encode([row], padding=False)
        assert entry["id"] == row["id"] and entry["window_lengths"] == [len(w) for w in enc["input_ids"]]
        several += len(entry["window_lengths"]) > 1
        at = 0
        for ids, types in zip(enc["input_ids"], enc["token_type_ids"]):
            n = len(ids)
            want = alone(_spans(model), torch.tensor(ids), torch.tensor(types), 4, 24)[:, :n]  # (2, n)
            assert torch.equal(torch.tensor(entry["logits"][at:at + 2 * n]).view(2, n), want)
            at += 2 * n
        assert at == len(entry["logits"])
    assert several > 5  # the windows are really exercised


# --------------------------------------------------------------------------------------------------
# The loss from the cache


@pytest.mark.parametrize("original_only", [False, True])
def test_loss_from_the_cache_equals_the_live_teachers(tmp_path, teacher_dir, sst2_corpus, student_config_file,
                                                      original_only):
    from distill.models import build_student

    _build(teacher_dir, sst2_corpus, tmp_path / "cache")
    model, tok = _load(teacher_dir)
    batches = _cached_batches(tmp_path / "cache", sst2_corpus, teacher_dir, "sst2",
                              Collator(tok, ["sentence"], 128, with_labels=False), original_only=original_only)
    student = build_student(str(student_config_file), model.config, "classification", 2).eval()
    loss = PredictionLoss(student, regression=False, temperature=2.0)
    for _ in range(6):
        batch = next(batches)
        cached = batch.pop(TEACHER_TARGETS)  # (B, C)
        lengths = batch["attention_mask"].sum(1)
        canonical = torch.stack([alone(_logits(model), batch["input_ids"][i, :n], batch["token_type_ids"][i, :n], 4,
                                       128) for i, n in enumerate(lengths)])
        with torch.no_grad():
            live = model(**batch).logits
            from_cache, from_canonical, from_live = (loss(batch, t)["loss"] for t in (cached, canonical, live))
        assert torch.equal(cached, canonical)  # what the cache promises, to the last bit
        assert torch.equal(from_cache, from_canonical)
        assert abs(from_cache.item() - from_live.item()) <= FP32_REL * abs(from_live.item())


def test_regression_on_sentence_pairs(tmp_path, student_config_file):
    from transformers import BertForSequenceClassification

    from distill.models import build_student

    torch.manual_seed(3)
    teacher = save_model(BertForSequenceClassification(tiny_config(num_labels=1, problem_type="regression")),
                         tmp_path / "stsb-teacher")
    corpus = write_task_corpus(tmp_path / "stsb", n_source=12, task="stsb", fields=("sentence1", "sentence2"),
                               label_names=None)
    _build(teacher, corpus, tmp_path / "cache")
    model, tok = _load(teacher)
    batches = _cached_batches(tmp_path / "cache", corpus, teacher, "stsb",
                              Collator(tok, ["sentence1", "sentence2"], 128, with_labels=False))
    student = build_student(str(student_config_file), model.config, "classification", 1, regression=True).eval()
    loss = PredictionLoss(student, regression=True, temperature=1.0)
    for _ in range(3):
        batch = next(batches)
        cached = batch.pop(TEACHER_TARGETS)  # (B, 1)
        lengths = batch["attention_mask"].sum(1)
        canonical = torch.stack([alone(_logits(model), batch["input_ids"][i, :n], batch["token_type_ids"][i, :n], 4,
                                       128) for i, n in enumerate(lengths)])
        assert cached.shape == (8, 1) and torch.equal(cached, canonical)
        assert (batch["token_type_ids"] == 1).any()  # pairs: the second segment is there
        with torch.no_grad():
            assert torch.equal(loss(batch, cached)["loss"], loss(batch, canonical)["loss"])


def test_squad_loss_from_the_cache_equals_the_live_teachers(tmp_path, qa_teacher_dir, squad_train_json,
                                                            qa_student_config_file):
    from distill.models import build_student
    from distill.qa import QACollator

    _build(qa_teacher_dir, squad_train_json, tmp_path / "cache", **QA_WINDOWS)
    model, tok = _load(qa_teacher_dir, qa=True)
    data = {"max_seq_length": 24, "doc_stride": 4, "max_query_length": 12}
    batches = _cached_batches(tmp_path / "cache", tmp_path / "cache" / "corpus", qa_teacher_dir, "squad",
                              QACollator(tok, 24, 4, 12, pad_to_multiple_of=8), batch_size=5, **data)
    student = build_student(str(qa_student_config_file), model.config, "qa").eval()
    loss = QAPredictionLoss(student, temperature=2.0, hard_weight=1.0)
    for _ in range(4):
        batch = next(batches)
        cached = batch.pop(TEACHER_TARGETS)  # (W, 2, T)
        mask = batch["attention_mask"]
        assert cached.shape == (len(mask), 2, mask.shape[1]) and len(mask) > 5  # several windows per question
        canonical = torch.zeros_like(cached)
        for w, n in enumerate(mask.sum(1).tolist()):
            canonical[w, :, :n] = alone(_spans(model), batch["input_ids"][w, :n], batch["token_type_ids"][w, :n],
                                        4, 24)[:, :n]
        with torch.no_grad():
            live = span_logits(model, batch)
            from_cache, from_canonical, from_live = (loss(batch, t)["loss"] for t in (cached, canonical, live))
        assert torch.equal(cached, canonical)  # real tokens as computed, 0 at padding
        assert torch.equal(from_cache, from_canonical)
        assert abs(from_cache.item() - from_live.item()) <= FP32_REL * abs(from_live.item())


def test_bfloat16_cache(tmp_path, teacher_dir, sst2_corpus, student_config_file):
    from distill.models import build_student

    manifest = _build(teacher_dir, sst2_corpus, tmp_path / "cache", dtype="bfloat16")
    first = open_table(str(tmp_path / "cache" / manifest["shards"][0]["file"]))
    assert first.schema.field("logits").type.value_type == pa.uint16()  # bfloat16 bit patterns: 2 bytes
    model, tok = _load(teacher_dir)
    batches = _cached_batches(tmp_path / "cache", sst2_corpus, teacher_dir, "sst2",
                              Collator(tok, ["sentence"], 128, with_labels=False))
    student = build_student(str(student_config_file), model.config, "classification", 2).eval()
    loss = PredictionLoss(student, regression=False, temperature=1.0)
    for _ in range(4):
        batch = next(batches)
        cached = batch.pop(TEACHER_TARGETS)
        assert cached.dtype == torch.bfloat16
        lengths = batch["attention_mask"].sum(1)
        canonical = torch.stack([alone(_logits(model), batch["input_ids"][i, :n], batch["token_type_ids"][i, :n], 4,
                                       128, torch.bfloat16) for i, n in enumerate(lengths)])
        assert torch.equal(cached, canonical)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # as train.precision=bf16 runs it
            live = model(**batch).logits
            from_cache, from_live = loss(batch, cached)["loss"], loss(batch, live)["loss"]
        assert abs(from_cache.item() - from_live.item()) <= BF16_REL * abs(from_live.item())


# --------------------------------------------------------------------------------------------------
# Building: resume, processes, refusals


def _shard_bytes(directory, manifest):
    return {s["file"]: (directory / s["file"]).read_bytes() for s in manifest["shards"]}


def test_a_killed_build_resumes_by_shard_and_ends_as_an_uninterrupted_one(tmp_path, teacher_dir, sst2_corpus):
    whole = _build(teacher_dir, sst2_corpus, tmp_path / "whole")
    written = []

    def dies_after_the_second_shard(name):
        written.append(name)
        if len(written) == 2:
            raise RuntimeError("killed")

    out = tmp_path / "killed"
    with pytest.raises(RuntimeError, match="killed"):
        _build(teacher_dir, sst2_corpus, out, on_shard=dies_after_the_second_shard)
    assert not (out / "manifest.json").exists() and (out / BUILD_FILE).exists()
    with pytest.raises(CacheError, match="did not finish"):
        TeacherCache.open(str(out))
    with pytest.raises(CacheError, match=r"partial teacher cache of another build \(dtype bfloat16"):
        _build(teacher_dir, sst2_corpus, out, dtype="bfloat16")
    first = os.stat(out / written[0])
    resumed = _build(teacher_dir, sst2_corpus, out)
    assert resumed["built"] == len(whole["shards"]) - 2
    assert os.stat(out / written[0]).st_mtime_ns == first.st_mtime_ns  # finished shards are not redone
    assert _shard_bytes(out, resumed) == _shard_bytes(tmp_path / "whole", whole)
    assert resumed["shards"] == whole["shards"] and not (out / BUILD_FILE).exists()
    assert _build(teacher_dir, sst2_corpus, out)["built"] == 0  # complete: nothing to do
    with pytest.raises(CacheError, match=r"holds a teacher cache of another build \(windows: max_seq_length 64"):
        _build(teacher_dir, sst2_corpus, out, max_seq_length=64)


def test_processes_sharing_the_shards_write_the_same_bytes(tmp_path, teacher_dir, sst2_corpus):
    whole = _build(teacher_dir, sst2_corpus, tmp_path / "whole", batch_size=3)
    out = tmp_path / "split"
    second = _build(teacher_dir, sst2_corpus, out, batch_size=3, rank=1, world=2)  # shards 1, 3
    assert second["built"] == 2 and not (out / "manifest.json").exists()
    first = _build(teacher_dir, sst2_corpus, out, batch_size=3, rank=0, world=2)  # 0, 2, 4, then the manifest
    assert first["built"] == 3
    assert _shard_bytes(out, first) == _shard_bytes(tmp_path / "whole", whole)


def test_cache_teacher_command(tmp_path, teacher_dir, sst2_corpus, encoder_dir):
    result = run_cli("cache-teacher", "--teacher", teacher_dir, "--corpus", sst2_corpus, "--output", tmp_path / "c",
                     "--max-seq-length", 64, "--batch-size", 8, "--device", "cpu")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["rows"] == 120 and summary["shards"] == 5 and summary["built"] == 5
    assert summary["bytes_per_row"] == round(summary["bytes"] / 120, 1) > 0
    manifest = json.load(open(tmp_path / "c" / "manifest.json"))
    assert manifest["tokenization"]["max_seq_length"] == 64 and manifest["numerics"]["batch_size"] == 8
    bad = run_cli("cache-teacher", "--teacher", encoder_dir, "--corpus", sst2_corpus, "--output", tmp_path / "d",
                  ok=False)
    assert bad.exit_code == 1 and "no trained classification head" in bad.output


# --------------------------------------------------------------------------------------------------
# Training with the cache


def _train_args(out, teacher, student, corpus, cache=None, **extra):
    items = {"task": "sst2", "model.teacher": teacher, "model.student": student, "data.train": corpus,
             "train.max_steps": 3, "distill.temperature": 2.0, **extra}
    if cache is not None:
        items["data.teacher_cache"] = cache
    return ["task", "--step", "prediction", *common(out, **items)]


def _forbid_loading(monkeypatch, path):
    """Any attempt to load ``path``'s weights fails the test."""
    from distill import stages

    original = stages.load_model

    def guarded(name, *args, **kwargs):
        assert str(name) != str(path), f"the teacher {name} was loaded"
        return original(name, *args, **kwargs)

    monkeypatch.setattr(stages, "load_model", guarded)


def test_prediction_step_reads_the_cache_and_never_loads_the_teacher(tmp_path, monkeypatch, teacher_dir,
                                                                     sst2_corpus, student_config_file):
    _build(teacher_dir, sst2_corpus, tmp_path / "cache")
    live = tmp_path / "live"
    run_cli(*_train_args(live, teacher_dir, student_config_file, sst2_corpus))
    _forbid_loading(monkeypatch, teacher_dir)
    cached = tmp_path / "cached"
    run_cli(*_train_args(cached, teacher_dir, student_config_file, sst2_corpus, tmp_path / "cache",
                         **{"data.num_workers": 1}))
    a, b = read_log(cached), read_log(live)
    assert [r["step"] for r in a] == [1, 2, 3]
    for x, y in zip(a, b):
        assert abs(x["loss"] - y["loss"]) <= FP32_REL * abs(y["loss"])


def test_a_cached_run_resumes_where_an_uninterrupted_one_ends(tmp_path, monkeypatch, teacher_dir, sst2_corpus,
                                                              student_config_file):
    from safetensors.torch import load_file

    from tests.distill.test_train import kill_then_resume

    _build(teacher_dir, sst2_corpus, tmp_path / "cache")
    extra = {"train.max_steps": 6, "train.save_every": 3}
    full, killed = tmp_path / "full", tmp_path / "killed"
    run_cli(*_train_args(full, teacher_dir, student_config_file, sst2_corpus, tmp_path / "cache", **extra))
    kill_then_resume(monkeypatch, _train_args(killed, teacher_dir, student_config_file, sst2_corpus,
                                              tmp_path / "cache", **extra), killed, killed_after_step=4)
    a, b = load_file(full / "final" / "model.safetensors"), load_file(killed / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_recovery_after_pruning_reads_the_cache(tmp_path, monkeypatch, qa_teacher_dir, squad_train_json):
    from distill.pruning import read_mask
    from tests.distill.test_prune import WINDOWS, _prune_args

    run_cli(*_prune_args(tmp_path / "p", qa_teacher_dir, squad_train_json, **{"prune.strategy": "random"}))
    pruned = tmp_path / "p" / "pruned"
    _build(qa_teacher_dir, squad_train_json, tmp_path / "cache", max_seq_length=24, doc_stride=4, max_query_length=12)
    extra = {**WINDOWS, "distill.hard_label_weight": 1.0}
    live = tmp_path / "live"
    run_cli(*_train_args(live, qa_teacher_dir, pruned, squad_train_json, **extra))
    _forbid_loading(monkeypatch, qa_teacher_dir)
    cached = tmp_path / "cached"
    run_cli(*_train_args(cached, qa_teacher_dir, pruned, squad_train_json, tmp_path / "cache", **extra))
    for x, y in zip(read_log(cached), read_log(live)):
        for k in ("soft", "gold"):
            assert abs(x[k] - y[k]) <= FP32_REL * abs(y[k])
    assert torch.equal(read_mask(str(cached / "final")).heads, read_mask(str(pruned)).heads)


def _rewrite_first_row(shard):
    table = open_table(str(shard))
    rows = table.to_pylist()
    rows[0]["sentence"] = rows[0]["sentence"] + " very good"
    data = pa.Table.from_pylist(rows, schema=table.schema)
    with pa.OSFile(str(shard), "wb") as sink, ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(data)


def test_a_cache_that_does_not_fit_the_run_is_refused_before_training(tmp_path, teacher_dir, sst2_corpus,
                                                                      student_config_file):
    from transformers import BertForSequenceClassification

    _build(teacher_dir, sst2_corpus, tmp_path / "cache")
    torch.manual_seed(7)
    other_teacher = save_model(BertForSequenceClassification(tiny_config(num_labels=2)), tmp_path / "other-teacher")
    other_corpus = write_task_corpus(tmp_path / "other-corpus", seed=1)
    changed = tmp_path / "changed"
    shutil.copytree(sst2_corpus, changed)
    _rewrite_first_row(changed / read_manifest(str(changed)).files[1])
    cases = [
        ({"model.teacher": other_teacher},
         ["teacher: the cache was built from", "files that differ: model.safetensors"]),
        ({"data.train": other_corpus}, ["corpus: fingerprint"]),
        ({"data.max_seq_length": 64}, ["windows: data.max_seq_length 64 (cache: 128)"]),
        ({"data.train": changed}, ["corpus shard shard-00001-of-00005.arrow changed since the cache was built"]),
        ({"model.teacher": other_teacher, "data.max_seq_length": 32}, ["teacher:", "data.max_seq_length 32"]),
    ]
    for i, (change, messages) in enumerate(cases):
        out = tmp_path / f"run{i}"
        args = _train_args(out, teacher_dir, student_config_file, sst2_corpus, tmp_path / "cache")
        args += [f"{k}={v}" for k, v in change.items()]
        result = run_cli(*args, ok=False)
        assert result.exit_code == 1 and "does not fit this run" in result.output, result.output
        for m in messages:
            assert m in result.output, (m, result.output)
        assert not (out / "log.jsonl").exists()  # refused before the first step


def test_an_unfinished_or_foreign_cache_and_other_steps_are_refused(tmp_path, teacher_dir, sst2_corpus,
                                                                    student_config_file):
    os.makedirs(tmp_path / "empty")
    result = run_cli(*_train_args(tmp_path / "r", teacher_dir, student_config_file, sst2_corpus, tmp_path / "empty"),
                     ok=False)
    assert result.exit_code == 1 and "not a teacher cache" in result.output
    result = run_cli("task", "--step", "intermediate", *common(tmp_path / "i", **{
        "task": "sst2", "model.teacher": teacher_dir, "model.student": student_config_file, "data.train": sst2_corpus,
        "data.teacher_cache": tmp_path / "empty"}), ok=False)
    assert result.exit_code == 2 and "serves `distill task --step prediction` only" in result.output


# --------------------------------------------------------------------------------------------------
# The real MiniLM teacher


def _minilm_teacher(source, out, head: str):
    """MiniLM-L6 with a freshly initialised (seeded) task head, saved as a fine-tuned teacher would be."""
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    if head == "qa":
        model = AutoModelForQuestionAnswering.from_pretrained(source)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return out


def _check_batches(batches, model, loss, run, n, batch_size, max_length, rel, dtype=torch.float32):
    """Cached targets equal the canonical forward of each row (window) to the last bit, so do the
    losses; against the live teacher on the padded batch the loss is within ``rel``."""
    for _ in range(n):
        batch = next(batches)
        cached = batch.pop(TEACHER_TARGETS)
        canonical = torch.zeros_like(cached)
        for i, length in enumerate(batch["attention_mask"].sum(1).tolist()):
            out = alone(run, batch["input_ids"][i, :length], batch["token_type_ids"][i, :length], batch_size,
                        max_length, dtype)
            if out.dim() == 2:  # (2, L) span logits: the real tokens only, 0 at padding
                canonical[i, :, :length] = out[:, :length]
            else:
                canonical[i] = out
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            live = run(batch)
            from_cache, from_canonical, from_live = (loss(batch, t)["loss"] for t in (cached, canonical, live))
        assert torch.equal(cached, canonical) and torch.equal(from_cache, from_canonical)
        assert abs(from_cache.item() - from_live.item()) <= rel * abs(from_live.item())


@pytest.mark.integration
def test_minilm_teacher_cache_gives_the_live_teachers_loss(tmp_path):
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification, AutoTokenizer

    from distill.glue import read_tsv
    from distill.models import build_student
    from distill.qa import QACollator
    from distill.shards import ShardWriter, task_schema
    from pipelines.tasks import get_task
    from tests.conftest import require_assets
    from tests.distill.test_qa_integration import _subset

    assets = require_assets("models/minilm-l6-mlm/config.json", "glue/SST-2/train.tsv",
                            "squad/squad2-train-split.json")
    minilm = assets / "models" / "minilm-l6-mlm"

    # SST-2: 48 training sentences in two shards
    rows = read_tsv(str(assets / "glue" / "SST-2" / "train.tsv"), get_task("sst2"))[:48]
    corpus = tmp_path / "sst2"
    with ShardWriter(str(corpus), task_schema(["sentence"]), 24,
                     {"task": "sst2", "text_fields": ["sentence"], "label_names": ["0", "1"]}) as w:
        for i, r in enumerate(rows):
            w.write({"id": f"sst2-{i}", "source_id": f"sst2-{i}", "aug_index": 0, "sentence": r["sentence"],
                     "label": r["label"]})
    teacher = _minilm_teacher(minilm, tmp_path / "sst2-teacher", "classification")
    model = AutoModelForSequenceClassification.from_pretrained(teacher).eval()
    tok = AutoTokenizer.from_pretrained(teacher)
    student = build_student("tinybert-4", model.config, "classification", 2).eval()
    loss = PredictionLoss(student, regression=False, temperature=1.0)
    for dtype, rel in (("float32", FP32_REL), ("bfloat16", BF16_REL)):
        cache = tmp_path / f"sst2-{dtype}"
        manifest = _build(teacher, corpus, cache, batch_size=8, dtype=dtype)
        assert manifest["rows"] == 48 and manifest["teacher"]["files"]["model.safetensors"]
        batches = _cached_batches(cache, corpus, teacher, "sst2", Collator(tok, ["sentence"], 128, with_labels=False),
                                  batch_size=16)
        _check_batches(batches, model, loss, _logits(model), 3, 8, 128, rel, DTYPES[dtype])

    # SQuAD: 6 questions, in the recovery config's windows (256 tokens, stride 96)
    train, n = _subset(assets / "squad" / "squad2-train-split.json", tmp_path / "train.json", 6)
    teacher = _minilm_teacher(minilm, tmp_path / "qa-teacher", "qa")
    model = AutoModelForQuestionAnswering.from_pretrained(teacher).eval()
    tok = AutoTokenizer.from_pretrained(teacher)
    manifest = _build(teacher, train, tmp_path / "squad-cache", batch_size=4, max_seq_length=256, doc_stride=96)
    assert manifest["rows"] == n == 6
    batches = _cached_batches(tmp_path / "squad-cache", tmp_path / "squad-cache" / "corpus", teacher, "squad",
                              QACollator(tok, 256, 96, 64), batch_size=3, max_seq_length=256, doc_stride=96)
    student = build_student("tinybert-4", model.config, "qa").eval()
    _check_batches(batches, model, QAPredictionLoss(student, temperature=2.0), _spans(model), 2, 4, 256, FP32_REL)

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

from distill.data.stream import Collator, loader, open_corpus
from distill.data.shards import open_table, read_manifest
from distill.modules.objectives import TEACHER_TARGETS, PredictionLoss, QAPredictionLoss, span_logits
from distill.training.teacher_cache import BUILD_FILE, DTYPES, CacheError, TeacherCache, build
from tests.distill.conftest import save_model, tiny_config, write_task_corpus
from tests.distill.test_train import common, read_log, run_cli
from tests.numerics import (U32, assert_within, bf16_bound, float32_bound, gradient_bound, mse_bound, not_exact,
                            soft_ce_bound)

QA_WINDOWS = {"max_seq_length": 24, "doc_stride": 4, "max_query_length": 12}  # several windows per question
# The cache computes a row among other rows at a canonical length; the reference and a training
# batch compute it elsewhere. Those differ by rounding, as the math library groups the additions
# (tests/numerics.py: how much, and why bounds and not bits), so the comparisons below are within
# float32_bound (bf16_bound under autocast); only rebuilding the same shards is exact.


def _build(teacher, corpus, out, **kw):
    return build(str(teacher), str(corpus), str(out), batch_size=kw.pop("batch_size", 4), progress=False, **kw)


def alone(run, ids: torch.Tensor, types: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """A row's output from a forward of it by itself (a batch of one, unpadded): the teacher's
    output for the row, as anyone would compute it."""
    batch = {"input_ids": ids[None], "token_type_ids": types[None], "attention_mask": torch.ones_like(ids)[None]}
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        return run(batch)[0].to(dtype)


def _bound(model, length: int, dtype=torch.float32) -> float:
    """How far two forwards of one row may differ (tests/numerics.py), at up to ``length`` tokens."""
    return float32_bound(model.config, length) if dtype == torch.float32 else bf16_bound(model.config)


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
        outputs = []
        for row, entry in list(zip(rows, cached))[::3]:  # every third row of every shard
            enc = tok(row["sentence"], truncation=True, max_length=128, return_tensors="pt")
            ids, types = enc["input_ids"][0], enc["token_type_ids"][0]
            assert entry["length"] == len(ids)
            outputs.append(alone(_logits(model), ids, types))
            assert_within(torch.tensor(entry["logits"]), outputs[-1], _bound(model, 128), f"cached row {row['id']}")
        # the bound tells rows apart: another row's output would not pass for this one's
        assert (outputs[0] - outputs[1]).abs().max() > _bound(model, 128) * outputs[0].abs().max()


def test_squad_cache_holds_every_window_of_every_question(tmp_path, qa_teacher_dir, squad_train_json):
    from distill.data.qa import QACollator

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
            want = alone(_spans(model), torch.tensor(ids), torch.tensor(types))  # (2, n)
            assert_within(torch.tensor(entry["logits"][at:at + 2 * n]).view(2, n), want, _bound(model, 24),
                          f"cached window of {row['id']}")
            at += 2 * n
        assert at == len(entry["logits"])
    assert several > 5  # the windows are really exercised


# --------------------------------------------------------------------------------------------------
# A training step from the cache


def _soft_targets_gradient(student_logits, teacher, delta, temperature):
    """d loss / d student logits of the soft cross-entropy, (q - p) / (T B), and how far it can move
    when each teacher logit moves by at most ``delta``: p's entries by at most p (e^(2 d / T) - 1)
    (numerics.soft_ce_bound), plus each side's rounding (a few u of q and p)."""
    q = torch.softmax(student_logits.detach().double() / temperature, -1)
    p = torch.softmax(teacher.double() / temperature, -1)
    scale = temperature * len(p)
    moved = p * (torch.exp(2 * delta.double().amax(-1, keepdim=True) / temperature) - 1)
    return (q - p) / scale, (moved + 8 * U32 * (q + p)) / scale


@pytest.mark.parametrize("original_only", [False, True])
def test_a_training_step_from_the_cache_matches_the_live_teachers(tmp_path, teacher_dir, sst2_corpus,
                                                                  student_config_file, original_only):
    # The cache computed each row among other rows at its canonical length, the live teacher computes
    # it in this batch: their logits differ by rounding, within float32_bound. What a user needs is that
    # a training step does not tell them apart by more than that difference can make it: the loss
    # within soft_ce_bound, every gradient within gradient_bound (tests/numerics.py).
    from distill.modules.models import build_student, features

    temperature = 2.0
    _build(teacher_dir, sst2_corpus, tmp_path / "cache")
    model, tok = _load(teacher_dir)
    batches = _cached_batches(tmp_path / "cache", sst2_corpus, teacher_dir, "sst2",
                              Collator(tok, ["sentence"], 128, with_labels=False), original_only=original_only)
    student = build_student(str(student_config_file), model.config, "classification", 2).eval()  # no dropout
    loss = PredictionLoss(student, regression=False, temperature=temperature)
    names, params = zip(*[(n, p) for n, p in student.named_parameters() if p.requires_grad])
    for _ in range(6):
        batch = next(batches)
        cached = batch.pop(TEACHER_TARGETS)  # (B, C)
        width = -(-batch["input_ids"].shape[1] // 8) * 8  # the longest forward either side ran
        with torch.no_grad():
            live = model(**batch).logits
        assert_within(cached, live, _bound(model, width), "cached against live teacher logits")
        delta = torch.full_like(live, _bound(model, width) * live.abs().max().item())  # what they may differ by

        steps = []
        for targets in (cached, live):
            student.zero_grad()
            terms = loss(batch, targets)
            terms["loss"].backward()
            steps.append((terms["loss"].item(), [p.grad.clone() for p in params]))
        (from_cache, grads_cache), (from_live, grads_live) = steps
        logits = features(student, batch, need_hidden=False).logits  # (B, C), as the loss computed it
        assert abs(from_cache - from_live) <= soft_ce_bound(logits, from_live, delta, temperature)

        upstream, moved = _soft_targets_gradient(logits, live, delta, temperature)
        bounds = gradient_bound(logits, params, upstream, moved, student.config, width, len(cached))
        for name, p_cache, p_live, bound in zip(names, grads_cache, grads_live, bounds):
            excess = ((p_cache - p_live).double().abs() - bound).max().item()
            assert excess <= 0, f"{name}: gradients from the cache and the teacher {excess:.3g} beyond the bound"
        assert any(g.abs().max() > 0 for g in grads_live)  # the step does move the student


def test_regression_on_sentence_pairs(tmp_path, student_config_file):
    from transformers import BertForSequenceClassification

    from distill.modules.models import build_student, features

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
        own = torch.stack([alone(_logits(model), batch["input_ids"][i, :n], batch["token_type_ids"][i, :n])
                           for i, n in enumerate(lengths)])
        assert cached.shape == (8, 1)
        assert_within(cached, own, _bound(model, 128), "cached regression outputs")
        assert (batch["token_type_ids"] == 1).any()  # pairs: the second segment is there
        with torch.no_grad():
            student_out = features(student, batch, need_hidden=False).logits
            from_cache, from_own = (loss(batch, t)["loss"].item() for t in (cached, own))
        delta = torch.full_like(own, _bound(model, 128) * own.abs().max().item())
        assert abs(from_cache - from_own) <= mse_bound(student_out, own, from_own, delta)


def test_squad_loss_from_the_cache_is_the_live_teachers_within_rounding(tmp_path, qa_teacher_dir, squad_train_json,
                                                                        qa_student_config_file):
    # As for GLUE (test_a_training_step_from_the_cache_matches_the_live_teachers): the windows'
    # span logits within float32_bound, the soft loss within soft_ce_bound over each window's tokens.
    from distill.modules.models import build_student
    from distill.data.qa import QACollator

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
        own = torch.zeros_like(cached)
        for w, n in enumerate(mask.sum(1).tolist()):
            own[w, :, :n] = alone(_spans(model), batch["input_ids"][w, :n], batch["token_type_ids"][w, :n])
        real = mask[:, None, :].expand_as(cached).bool()
        assert (cached[~real] == 0).all()  # 0 at padding: written by the collator, not computed
        with torch.no_grad():
            live = span_logits(model, batch)
            spans = span_logits(student, batch)
            from_cache, from_live = loss(batch, cached), loss(batch, live)
        assert_within(cached[real], own[real], _bound(model, 24), "cached windows")
        assert_within(cached[real], live[real], _bound(model, 24), "cached against live windows")
        delta = torch.full_like(live, _bound(model, 24) * live[real].abs().max().item())
        # Exact by construction: the gold loss reads no teacher output, so both sides run the same
        # operations on the same student outputs.
        assert torch.equal(from_cache["gold"], from_live["gold"]), not_exact("gold losses")
        soft = from_live["soft"].item()
        assert abs(from_cache["soft"].item() - soft) <= soft_ce_bound(spans, soft, delta, 2.0, mask[:, None, :])


def test_bfloat16_cache(tmp_path, teacher_dir, sst2_corpus, student_config_file):
    from distill.modules.models import build_student, features

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
        own = torch.stack([alone(_logits(model), batch["input_ids"][i, :n], batch["token_type_ids"][i, :n],
                                 torch.bfloat16) for i, n in enumerate(lengths)])
        assert_within(cached, own, bf16_bound(model.config), "bfloat16 cached logits")
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # as train.precision=bf16 runs it
            live = model(**batch).logits
            logits = features(student, batch, need_hidden=False).logits
            from_cache, from_live = loss(batch, cached)["loss"].item(), loss(batch, live)["loss"].item()
        assert_within(cached, live, bf16_bound(model.config), "bfloat16 cached against live logits")
        delta = torch.full_like(live, bf16_bound(model.config) * live.float().abs().max().item(), dtype=torch.float32)
        assert abs(from_cache - from_live) <= soft_ce_bound(logits, from_live, delta, 1.0)


# --------------------------------------------------------------------------------------------------
# Building: resume, processes, refusals


def _shard_bytes(directory, manifest):
    return {s["file"]: (directory / s["file"]).read_bytes() for s in manifest["shards"]}


def _same_shards(a: dict, b: dict) -> None:
    differ = sorted(name for name in a.keys() | b.keys() if a.get(name) != b.get(name))
    assert not differ, not_exact(f"cache shards {differ}")


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
    # Exact by construction: a shard's forwards are cut from that shard alone (its blocks, their
    # lengths, batches of batch_size), so the resumed build runs each shard's same forwards on the
    # same tensors as the uninterrupted one, in the same process.
    _same_shards(_shard_bytes(out, resumed), _shard_bytes(tmp_path / "whole", whole))
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
    # Exact by construction, as for a resumed build: each shard's forwards depend on that shard alone.
    # (Separate processes must also share the torch build, CPU kind and thread count: docs/distill.md.)
    _same_shards(_shard_bytes(out, first), _shard_bytes(tmp_path / "whole", whole))


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


# A run from the cache against one with the live teacher, as logged: the first step trains the same
# student on the same batch against targets that differ by rounding, so its loss moves by at most
# soft_ce_bound (tests/numerics.py). For these tiny models, this data and T = 2, that bound comes to
# at most 5e-6 of the loss (test_a_training_step_... computes it batch by batch: mostly the loss's
# own rounding); 1e-4 leaves a margin for the logged step's batch. Later steps are not compared:
# Adam's first update is about lr x sign(gradient), so a gradient element near 0 can step either way.
STEP_ONE_REL = 1e-4


def _train_args(out, teacher, student, corpus, cache=None, **extra):
    items = {"task": "sst2", "model.teacher": teacher, "model.student": student, "data.train": corpus,
             "train.max_steps": 3, "distill.temperature": 2.0, **extra}
    if cache is not None:
        items["data.teacher_cache"] = cache
    return ["task", "--step", "prediction", *common(out, **items)]


def _forbid_loading(monkeypatch, path):
    """Any attempt to load ``path``'s weights fails the test."""
    from distill.modules import objectives as stages

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
    assert abs(a[0]["loss"] - b[0]["loss"]) <= STEP_ONE_REL * b[0]["loss"]  # first step: the same student


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
    # Exact by construction: the resumed run restores weights, optimizer, RNG and stream position and
    # reads the same cache rows, so it runs the uninterrupted run's remaining steps operation for operation.
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), not_exact("final weights of a resumed and an uninterrupted run")


def test_recovery_after_pruning_reads_the_cache(tmp_path, monkeypatch, qa_teacher_dir, squad_train_json):
    from distill.modules.pruning import read_mask
    from tests.distill.test_prune import WINDOWS, prune_args

    run_cli(*prune_args(tmp_path / "p", qa_teacher_dir, squad_train_json, **{"prune.strategy": "random"}))
    pruned = tmp_path / "p" / "pruned"
    _build(qa_teacher_dir, squad_train_json, tmp_path / "cache", max_seq_length=24, doc_stride=4, max_query_length=12)
    extra = {**WINDOWS, "distill.hard_label_weight": 1.0}
    live = tmp_path / "live"
    run_cli(*_train_args(live, qa_teacher_dir, pruned, squad_train_json, **extra))
    _forbid_loading(monkeypatch, qa_teacher_dir)
    cached = tmp_path / "cached"
    run_cli(*_train_args(cached, qa_teacher_dir, pruned, squad_train_json, tmp_path / "cache", **extra))
    x, y = read_log(cached)[0], read_log(live)[0]  # first step: the same student, the same batch
    assert abs(x["soft"] - y["soft"]) <= STEP_ONE_REL * y["soft"]
    # Exact by construction: the gold loss reads no teacher output, and both runs start from the same
    # weights, seed and batch, so they run the same operations on the same operands.
    assert x["gold"] == y["gold"], not_exact("first steps' gold losses")
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


def _check_batches(batches, model, loss, run, student_run, n, max_length, dtype=torch.float32):
    """Cached targets are each row's (window's) output by itself, and the live teacher's on the
    training batch, within rounding; the soft loss from them within what that can move it by."""
    rel = _bound(model, max_length, dtype)
    for _ in range(n):
        batch = next(batches)
        cached = batch.pop(TEACHER_TARGETS)
        own = torch.zeros_like(cached)
        mask = None
        for i, length in enumerate(batch["attention_mask"].sum(1).tolist()):
            out = alone(run, batch["input_ids"][i, :length], batch["token_type_ids"][i, :length], dtype)
            if out.dim() == 2:  # (2, L) span logits: the real tokens only, 0 at padding
                own[i, :, :length] = out
                mask = batch["attention_mask"][:, None, :]
            else:
                own[i] = out
        real = torch.ones_like(cached, dtype=torch.bool) if mask is None else mask.expand_as(cached).bool()
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            live = run(batch)
            student = student_run(batch)
            from_cache, from_live = (loss(batch, t)["soft"].item() for t in (cached, live))
        assert_within(cached[real], own[real], rel, f"{dtype} cached outputs against each row's own")
        assert_within(cached[real], live[real], rel, f"{dtype} cached outputs against the live teacher's")
        delta = torch.full_like(live, rel * live.float()[real].abs().max().item(), dtype=torch.float32)
        assert abs(from_cache - from_live) <= soft_ce_bound(student, from_live, delta, loss.temperature, mask)


@pytest.mark.integration
def test_minilm_teacher_cache_gives_the_live_teachers_loss(tmp_path):
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification, AutoTokenizer

    from distill.data.glue import read_tsv
    from distill.modules.models import build_student
    from distill.data.qa import QACollator
    from distill.data.shards import ShardWriter, task_schema
    from pipelines.tasks import get_task
    from tests.conftest import require_assets
    from tests.distill.test_qa_integration import squad_subset

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
    for dtype in ("float32", "bfloat16"):
        cache = tmp_path / f"sst2-{dtype}"
        manifest = _build(teacher, corpus, cache, batch_size=8, dtype=dtype)
        assert manifest["rows"] == 48 and manifest["teacher"]["files"]["model.safetensors"]
        batches = _cached_batches(cache, corpus, teacher, "sst2", Collator(tok, ["sentence"], 128, with_labels=False),
                                  batch_size=16)
        _check_batches(batches, model, loss, _logits(model), _logits(student), 3, 128, DTYPES[dtype])

    # SQuAD: 6 questions, in the recovery config's windows (256 tokens, stride 96)
    train, n = squad_subset(assets / "squad" / "squad2-train-split.json", tmp_path / "train.json", 6)
    teacher = _minilm_teacher(minilm, tmp_path / "qa-teacher", "qa")
    model = AutoModelForQuestionAnswering.from_pretrained(teacher).eval()
    tok = AutoTokenizer.from_pretrained(teacher)
    manifest = _build(teacher, train, tmp_path / "squad-cache", batch_size=4, max_seq_length=256, doc_stride=96)
    assert manifest["rows"] == n == 6
    batches = _cached_batches(tmp_path / "squad-cache", tmp_path / "squad-cache" / "corpus", teacher, "squad",
                              QACollator(tok, 256, 96, 64), batch_size=3, max_seq_length=256, doc_stride=96)
    student = build_student("tinybert-4", model.config, "qa").eval()
    _check_batches(batches, model, QAPredictionLoss(student, temperature=2.0), _spans(model), _spans(student), 2,
                   256)

"""``distill prune`` end to end on tiny models: the three strategies, recovery by distillation, resume,
and the refusals. (The gate arithmetic itself is tested in test_pruning.py.)"""
from __future__ import annotations

import json
import os

import pytest
import torch

from distill.modules.pruning import read_mask
from tests.distill.test_train import common, kill_then_resume, read_log, run_cli
from tests.numerics import not_exact

# the tiny QA teacher: 2 layers x 4 heads, FFN 64 per layer
WINDOWS = {"task": "squad", "data.max_seq_length": 24, "data.doc_stride": 4, "data.max_query_length": 12}


def prune_args(out, teacher, train, dev=None, **extra):
    items = {**WINDOWS, "model.teacher": teacher, "data.train": train, "prune.keep_heads": 0.5,
             "prune.keep_ffn": 0.25, **({"data.dev": dev} if dev else {}), **extra}
    return ["prune", *common(out, **items)]


def _spans(model, batch):
    out = model(**batch)
    return torch.stack([out.start_logits, out.end_logits], 1)


def _qa_batch(teacher_dir, squad_json):
    from transformers import AutoTokenizer

    from distill.data.qa import QACollator, read_examples
    from pipelines.tasks import get_task

    rows = read_examples(str(squad_json), get_task("squad"))[:6]
    batch = QACollator(AutoTokenizer.from_pretrained(teacher_dir), 24, 4, 12)(rows)
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def test_gain_pruning_keeps_the_top_scores_and_loads_everywhere(tmp_path, qa_teacher_dir, squad_train_json,
                                                                 squad_dev_json):
    from safetensors.torch import load_file
    from transformers import AutoModelForQuestionAnswering

    from distill.modules.pruning import load_pruned

    out = tmp_path / "gain"
    result = run_cli(*prune_args(out, qa_teacher_dir, squad_train_json, squad_dev_json,
                                  **{"prune.strategy": "gain", "prune.gain_batches": 3}))
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["heads_kept"], summary["heads_total"], summary["ffn_kept"], summary["ffn_total"]) == (4, 8, 32, 128)
    assert summary["gain_batches"] == 3 and 0 <= summary["dev_f1"] <= 100
    assert summary["parameters"] < summary["parameters_before"]

    pruned = out / "pruned"
    mask = read_mask(str(pruned))
    scores = load_file(pruned / "scores.safetensors")
    # the kept heads are the 4 best-scored (every layer keeps one anyway), the kept units the 32 best
    assert set(scores["heads"].flatten().argsort(descending=True)[:4].tolist()) == \
        set(mask.heads.flatten().nonzero().flatten().tolist())
    assert scores["ffn"].flatten()[mask.ffn.flatten()].min() >= scores["ffn"].flatten()[~mask.ffn.flatten()].max()
    assert (scores["heads"] > 0).all()  # |dL/dg| of a random model is not 0

    batch = _qa_batch(qa_teacher_dir, squad_dev_json)
    plain = AutoModelForQuestionAnswering.from_pretrained(pruned).eval()
    small = load_pruned(str(pruned)).eval()
    with torch.no_grad():
        assert torch.allclose(_spans(plain, batch), _spans(small, batch), atol=1e-5)
    assert sum(p.numel() for p in small.parameters()) == summary["parameters"]

    # eval compacts a pruned model: the metrics of metrics.json, and its parameter count
    evaluated = json.loads(run_cli("eval", "--model", pruned, "--task", "squad", "--data", squad_dev_json).stdout)
    assert evaluated["f1"] == pytest.approx(summary["dev_f1"]) and evaluated["parameters"] == summary["parameters"]


def test_random_pruning_is_seeded_and_per_layer_scope_is_even(tmp_path, qa_teacher_dir, squad_train_json):
    masks = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        run_cli(*prune_args(tmp_path / name, qa_teacher_dir, squad_train_json,
                             **{"prune.strategy": "random", "prune.scope": "layer", "train.seed": seed}))
        masks.append(read_mask(str(tmp_path / name / "pruned")))
    assert masks[0].heads.sum(1).tolist() == [2, 2] and masks[0].ffn.sum(1).tolist() == [16, 16]
    assert torch.equal(masks[0].ffn, masks[1].ffn) and not torch.equal(masks[0].ffn, masks[2].ffn)


def test_l0_gates_train_resume_and_prune(tmp_path, monkeypatch, qa_teacher_dir, squad_train_json):
    from safetensors.torch import load_file

    extra = {"prune.strategy": "l0", "prune.l0_lambda": 5.0, "optim.lr": 0.1, "optim.warmup_ratio": 0.0,
             "train.max_steps": 4, "train.save_every": 2, "train.batch_size": 3, "prune.keep_heads": 0.75}
    full, killed = tmp_path / "full", tmp_path / "killed"
    result = run_cli(*prune_args(full, qa_teacher_dir, squad_train_json, **extra))
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["heads_kept"] == 6 and summary["l0_steps"] == 4
    log = read_log(full)
    assert {"soft", "l0", "loss"} <= set(log[0]) and log[-1]["l0"] < log[0]["l0"]  # the penalty closes gates
    gates = load_file(full / "checkpoints" / "step-000004" / "gates.safetensors")
    head_alpha = torch.stack([gates[f"head_gates.{l}.log_alpha"] for l in range(2)])
    assert (head_alpha < torch.log(torch.tensor(0.9 / 0.1))).all()  # every gate moved down from its start
    kept = read_mask(str(full / "pruned")).heads
    assert head_alpha.flatten()[kept.flatten()].min() >= head_alpha.flatten()[~kept.flatten()].max()
    assert not os.path.exists(full / "final")  # the output is pruned/

    kill_then_resume(monkeypatch, prune_args(killed, qa_teacher_dir, squad_train_json, **extra), killed,
                     killed_after_step=2)
    resumed = load_file(killed / "checkpoints" / "step-000004" / "gates.safetensors")
    # Exact by construction: the resumed run restores weights, optimizer, RNG and data position, so it
    # runs the uninterrupted run's remaining steps operation for operation, on the same tensors.
    assert all(torch.equal(gates[k], resumed[k]) for k in gates), not_exact("gates of a resumed and an uninterrupted run")
    assert torch.equal(read_mask(str(killed / "pruned")).ffn, read_mask(str(full / "pruned")).ffn)


def test_recovery_distillation_keeps_the_pruned_structure(tmp_path, qa_teacher_dir, squad_train_json,
                                                          squad_dev_json):
    from safetensors.torch import load_file

    run_cli(*prune_args(tmp_path / "p", qa_teacher_dir, squad_train_json, **{"prune.strategy": "random"}))
    pruned = tmp_path / "p" / "pruned"
    recover = tmp_path / "recover"
    result = run_cli("task", "--step", "prediction", *common(recover, **WINDOWS, **{
        "model.teacher": qa_teacher_dir, "model.student": pruned, "data.train": squad_train_json,
        "data.dev": squad_dev_json, "train.max_steps": 3, "train.eval_every": 3, "optim.lr": 1e-2,
        "optim.weight_decay": 0.1}))
    assert "f1" in json.loads(result.stdout.strip().splitlines()[-1])
    mask = read_mask(str(pruned))
    for name in ("final", "best"):
        assert torch.equal(read_mask(str(recover / name)).heads, mask.heads)
    before, after = load_file(pruned / "model.safetensors"), load_file(recover / "final" / "model.safetensors")
    hs = 8
    for l in range(2):
        drop = (~mask.heads[l]).repeat_interleave(hs)
        w = after[f"bert.encoder.layer.{l}.attention.output.dense.weight"]
        assert w[:, drop].abs().max() == 0  # pruned heads stay out...
        assert not torch.equal(w[:, ~drop], before[f"bert.encoder.layer.{l}.attention.output.dense.weight"][:, ~drop])
        units = after[f"bert.encoder.layer.{l}.intermediate.dense.weight"]
        assert units[~mask.ffn[l]].abs().max() == 0  # ...and the rest trained

    result = run_cli("task", "--step", "intermediate", *common(tmp_path / "i", **WINDOWS, **{
        "model.teacher": qa_teacher_dir, "model.student": pruned, "data.train": squad_train_json,
        "train.max_steps": 1}), ok=False)
    assert result.exit_code == 1 and "is pruned" in result.output


def test_recovery_of_a_pruned_student_resumes_exactly(tmp_path, monkeypatch, qa_teacher_dir, squad_train_json):
    """Pruned students train compacted: a killed recovery resumes from its compact checkpoint and
    ends with the uninterrupted run's bytes, saved full size with the pruned weights zero."""
    from safetensors.torch import load_file
    from transformers import AutoModelForQuestionAnswering

    from tests.distill.test_train import kill_then_resume

    run_cli(*prune_args(tmp_path / "p", qa_teacher_dir, squad_train_json, **{"prune.strategy": "random"}))
    pruned = tmp_path / "p" / "pruned"

    def args(out):
        return ["task", "--step", "prediction", *common(out, **WINDOWS, **{
            "model.teacher": qa_teacher_dir, "model.student": pruned, "data.train": squad_train_json,
            "train.max_steps": 4, "train.save_every": 2})]

    run_cli(*args(tmp_path / "full"))
    kill_then_resume(monkeypatch, args(tmp_path / "killed"), tmp_path / "killed", killed_after_step=3)
    full = load_file(tmp_path / "full" / "final" / "model.safetensors")
    resumed = load_file(tmp_path / "killed" / "final" / "model.safetensors")
    # Exact by construction: the resumed run restores weights, optimizer, RNG and data position, so it
    # runs the uninterrupted run's remaining steps operation for operation, on the same tensors.
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full), not_exact("weights of a resumed and an uninterrupted run")
    teacher = AutoModelForQuestionAnswering.from_pretrained(qa_teacher_dir)
    assert {k: v.shape for k, v in full.items()} == {k: v.shape for k, v in teacher.state_dict().items()}


def test_classification_pruning(tmp_path, teacher_dir, sst2_corpus, dev_tsv):
    result = run_cli("prune", *common(tmp_path / "sst2", task="sst2", **{
        "model.teacher": teacher_dir, "data.train": sst2_corpus, "data.dev": dev_tsv, "prune.strategy": "gain",
        "prune.gain_batches": 2, "prune.keep_heads": 0.25, "prune.keep_ffn": 0.5}))
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    # 4 layers x 4 heads: a quarter is 4 heads, one per layer (the floor)
    assert summary["heads_per_layer"] == [1, 1, 1, 1] and summary["ffn_kept"] == 128
    assert 0 <= summary["dev_accuracy"] <= 1


def test_bad_prune_configs_are_refused(tmp_path, monkeypatch, qa_encoder_dir, qa_teacher_dir, squad_train_json):
    result = run_cli(*prune_args(tmp_path / "a", qa_teacher_dir, squad_train_json, **{"prune.keep_heads": 0}),
                     ok=False)
    assert result.exit_code == 2 and "prune.keep_heads is the fraction kept" in result.output
    result = run_cli(*prune_args(tmp_path / "b", qa_teacher_dir, squad_train_json, **{"prune.strategy": "magic"}),
                     ok=False)
    assert result.exit_code == 2 and "prune.strategy must be one of" in result.output
    result = run_cli(*prune_args(tmp_path / "c", qa_encoder_dir, squad_train_json, **{"prune.strategy": "random"}),
                     ok=False)
    assert result.exit_code == 1 and "no trained qa head" in result.output
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun: one-pass strategies would race on the output
    result = run_cli(*prune_args(tmp_path / "d", qa_teacher_dir, squad_train_json, **{"prune.strategy": "gain"}),
                     ok=False)
    assert result.exit_code == 1 and "one pass in one process" in result.output


def test_l0_with_targets_reaches_them(tmp_path, qa_teacher_dir, squad_train_json):
    """The Lagrangian drives the expected open gates of the tiny teacher (8 heads, 128 FFN units) to
    the targets; the mask keeps that many, within 2 points."""
    out = tmp_path / "target"
    args = ["prune", *common(out, **WINDOWS, **{
        "model.teacher": qa_teacher_dir, "data.train": squad_train_json, "prune.strategy": "l0",
        "prune.target_heads": 0.5, "prune.target_ffn": 0.25, "prune.target_warmup": 0.5, "optim.lr": 0.1,
        "optim.adam_betas": "[0.5,0.99]", "optim.warmup_ratio": 0.0, "train.max_steps": 160, "train.batch_size": 2,
        "train.log_every": 10})]
    summary = json.loads(run_cli(*args).stdout.strip().splitlines()[-1])
    assert summary["target_heads"] == 0.5 and summary["target_ffn"] == 0.25
    assert abs(summary["reached_heads"] - 0.5) <= 0.02 and abs(summary["reached_ffn"] - 0.25) <= 0.02
    assert summary["heads_kept"] == round(8 * summary["reached_heads"]) and summary["ffn_kept"] == \
        round(128 * summary["reached_ffn"])
    log = read_log(out)
    assert {"lagrangian", "density_heads", "density_ffn", "gap_heads", "gap_ffn"} <= set(log[-1])
    assert log[0]["density_ffn"] > 0.9 and abs(log[-1]["density_ffn"] - 0.25) <= 0.03


def test_bad_target_configs_are_refused(tmp_path, qa_teacher_dir, squad_train_json):
    base = {**WINDOWS, "model.teacher": qa_teacher_dir, "data.train": squad_train_json, "prune.strategy": "l0"}
    cases = [({"prune.target_heads": 0.0, "prune.target_ffn": 0.5}, "prune.target_heads is the fraction kept"),
             ({"prune.target_heads": 0.5, "prune.target_ffn": 1.5}, "prune.target_ffn is the fraction kept"),
             ({"prune.target_heads": 0.5}, "prune.target_ffn is missing"),
             ({"prune.target_heads": 0.5, "prune.target_ffn": 0.5, "prune.keep_heads": 0.5}, "both size the model"),
             ({"prune.target_heads": 0.5, "prune.target_ffn": 0.5, "prune.strategy": "gain"}, "size an l0 run")]
    for i, (extra, message) in enumerate(cases):
        result = run_cli("prune", *common(tmp_path / str(i), **{**base, **extra}), ok=False)
        assert result.exit_code == 2 and message in result.output, (extra, result.output)


def test_a_checkpoint_of_another_model_is_refused(tmp_path, qa_teacher_dir, qa_encoder_dir, squad_train_json):
    # a pruning.json that does not fit the model it sits beside
    run_cli(*prune_args(tmp_path / "p", qa_teacher_dir, squad_train_json, **{"prune.strategy": "random"}))
    other = tmp_path / "other"
    from transformers import BertForQuestionAnswering

    from tests.distill.conftest import QA_VOCAB, qa_tokenizer, tiny_config

    BertForQuestionAnswering(tiny_config(layers=3, vocab_size=len(QA_VOCAB))).save_pretrained(other)
    qa_tokenizer().save_pretrained(other)
    (other / "pruning.json").write_text((tmp_path / "p" / "pruned" / "pruning.json").read_text())
    result = run_cli("task", "--step", "prediction", *common(tmp_path / "r", **WINDOWS, **{
        "model.teacher": qa_teacher_dir, "model.student": other, "data.train": squad_train_json,
        "train.max_steps": 1}), ok=False)
    assert result.exit_code == 1 and "does not fit" in result.output and not (tmp_path / "r" / "final").exists()
    # --resume from a run of another teacher
    extra = {"prune.strategy": "l0", "train.max_steps": 4, "train.save_every": 2, "prune.keep_heads": 0.5}
    run_cli(*prune_args(tmp_path / "l0", qa_teacher_dir, squad_train_json, **extra))
    result = run_cli(*prune_args(tmp_path / "l0", qa_encoder_dir, squad_train_json, **extra), "--resume", ok=False)
    assert result.exit_code == 1 and "model.teacher" in result.output


def test_finetuning_a_pruned_model_keeps_it_pruned(tmp_path, qa_teacher_dir, squad_train_json):
    """Recovery on gold spans (``distill finetune`` of a pruned model) trains only what was kept."""
    from safetensors.torch import load_file

    run_cli(*prune_args(tmp_path / "p", qa_teacher_dir, squad_train_json, **{"prune.strategy": "random"}))
    pruned = tmp_path / "p" / "pruned"
    run_cli("finetune", *common(tmp_path / "ft", **WINDOWS, **{
        "model.teacher": pruned, "data.train": squad_train_json, "train.max_steps": 2, "optim.lr": 1e-2}))
    mask = read_mask(str(pruned))
    assert torch.equal(read_mask(str(tmp_path / "ft" / "final")).ffn, mask.ffn)
    before, after = load_file(pruned / "model.safetensors"), load_file(tmp_path / "ft" / "final" / "model.safetensors")
    for l in range(2):
        key = f"bert.encoder.layer.{l}.intermediate.dense.weight"
        assert after[key][~mask.ffn[l]].abs().max() == 0
        assert not torch.equal(after[key][mask.ffn[l]], before[key][mask.ffn[l]])


def test_l0_with_targets_resumes_exactly(tmp_path, monkeypatch, qa_teacher_dir, squad_train_json):
    """The multipliers and the targets' schedule are part of the checkpoint: a killed run resumed
    ends with the gates and multipliers of an uninterrupted one, bit for bit."""
    from safetensors.torch import load_file

    extra = {**WINDOWS, "model.teacher": qa_teacher_dir, "data.train": squad_train_json, "prune.strategy": "l0",
             "prune.target_heads": 0.5, "prune.target_ffn": 0.5, "optim.lr": 0.1, "optim.warmup_ratio": 0.0,
             "train.max_steps": 6, "train.save_every": 2, "train.batch_size": 2}
    full, killed = tmp_path / "full", tmp_path / "killed"
    run_cli("prune", *common(full, **extra))
    kill_then_resume(monkeypatch, ["prune", *common(killed, **extra)], killed, killed_after_step=4)
    for name in ("gates", "lagrangian"):
        a = load_file(full / "checkpoints" / "step-000006" / f"{name}.safetensors")
        b = load_file(killed / "checkpoints" / "step-000006" / f"{name}.safetensors")
        # exact by construction, as every resume: the same remaining steps on the same tensors
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), not_exact(name)
    lagrangian = load_file(full / "checkpoints" / "step-000006" / "lagrangian.safetensors")
    assert int(lagrangian["calls"]) == 6 and lagrangian["lambda1"].abs().sum() > 0  # the multipliers moved
    assert torch.equal(read_mask(str(full / "pruned")).heads, read_mask(str(killed / "pruned")).heads)

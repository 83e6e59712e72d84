"""bench/serve_latency.py --quick on tiny models: every model/backend pair of both tasks timed, the
quality column filled for trained models (and equal between PyTorch fp32 and ONNX Runtime fp32,
which compute the same function) and "—" for shape-only ones. Nothing here is timed."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from distill.modules.pruning import PruneMask, save_pruned, write_mask
from tests.distill.conftest import QA_VOCAB, qa_tokenizer, tiny_config, write_dev_tsv, write_squad_json

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("serve_latency", ROOT / "bench" / "serve_latency.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_times_every_pair_and_scores_the_trained_models(tmp_path, teacher_dir, qa_teacher_dir):
    from transformers import BertForQuestionAnswering

    torch.manual_seed(5)
    pruned = BertForQuestionAnswering(tiny_config(layers=2, vocab_size=len(QA_VOCAB))).eval()
    mask = PruneMask(torch.tensor([[1, 1, 0, 1], [0, 1, 0, 0]], dtype=torch.bool), torch.rand(2, 64) > 0.5)
    save_pruned(pruned, mask, str(tmp_path / "pruned-50"), qa_tokenizer())
    (tmp_path / "mask-30").mkdir()
    write_mask(PruneMask(torch.tensor([[1, 0, 0, 0], [0, 0, 1, 0]], dtype=torch.bool), torch.rand(2, 64) > 0.7),
               str(tmp_path / "mask-30"))
    out = tmp_path / "result.json"
    result = _bench().main([
        "--quick", "--tokenizer", str(teacher_dir), "--sst2-teacher", str(teacher_dir),
        "--squad-teacher", str(qa_teacher_dir), "--pruned", f"50={tmp_path / 'pruned-50'}",
        "--pruned", f"30={tmp_path / 'mask-30' / 'pruning.json'}",
        "--sst2-dev", str(write_dev_tsv(tmp_path / "dev.tsv")),
        "--squad-eval", str(write_squad_json(tmp_path / "eval.json", n_paragraphs=2, seed=1)),
        "--squad-tune", str(write_squad_json(tmp_path / "tune.json", n_paragraphs=2, seed=2)),
        "--json", str(out), "--markdown", str(tmp_path / "table.md"), "--workdir", str(tmp_path / "work")])

    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(result["rows"]))
    rows = {(r["task"], r["model"], r["backend"]): r for r in result["rows"]}
    models = {"sst2": ["teacher", "TinyBERT-4"], "squad": ["teacher", "pruned 70%", "pruned 50%", "pruned 30%"]}
    backends = ("PyTorch fp32", "ORT fp32", "ORT int8")
    assert set(rows) == {(t, m, b) for t, ms in models.items() for m in ms for b in backends}
    for (task, model, backend), r in rows.items():
        assert set(r["batches"]) == {1, 4} and all(v["ms"] > 0 and len(v["round_ms"]) == 2 for v in r["batches"].values())
        trained = model in ("teacher", "pruned 50%")
        assert (r["quality"] is not None) == trained, (task, model, backend)
    for task, model in [("sst2", "teacher"), ("squad", "teacher"), ("squad", "pruned 50%")]:
        fp32 = rows[(task, model, "PyTorch fp32")]["quality"]
        assert rows[(task, model, "ORT fp32")]["quality"] == fp32  # the same function, the same scores
        assert all(0 <= v <= 100 for v in fp32.values())
    assert set(rows[("squad", "teacher", "ORT int8")]["quality"]) == {"f1_tuned", "hasans_f1_forced"}
    assert set(rows[("sst2", "teacher", "ORT int8")]["quality"]) == {"accuracy"}  # each task its own teacher
    assert rows[("squad", "pruned 50%", "ORT fp32")]["shape"] == "heads 3-1, FFN " + "-".join(
        str(n) for n in mask.ffn.sum(1).tolist())
    assert rows[("squad", "pruned 30%", "ORT fp32")]["shape"].startswith("heads 1-1, FFN ")
    table = (tmp_path / "table.md").read_text()
    assert "Machine:" in table and "Target: squad batch 1, pruned 50% ORT int8" in table and "—" in table
    assert "Quality target: squad pruned 50% ORT int8, hasans_f1_forced" in table


def test_quality_verdicts_by_hand():
    """Each target's row against the teacher in PyTorch fp32 and against its own PyTorch fp32, with
    the target's limit (2 points of forced HasAns F1 for SQuAD, 1 of accuracy for SST-2)."""
    bench = _bench()
    squad = {("squad", "teacher", "PyTorch fp32"): {"f1_tuned": 52.0, "hasans_f1_forced": 56.0},
             ("squad", "pruned 50%", "PyTorch fp32"): {"f1_tuned": 50.0, "hasans_f1_forced": 54.5},
             ("squad", "pruned 50%", "ORT int8"): {"f1_tuned": 49.0, "hasans_f1_forced": 53.5}}
    (line,) = bench.quality_verdicts(squad)  # SST-2 not scored: no line for it
    # 53.5 - 56.0 = -2.5 (beyond 2); 53.5 - 54.5 = -1.0 (within 2)
    assert line == ("Quality target: squad pruned 50% ORT int8, hasans_f1_forced 53.50: -2.50 points against the "
                    "teacher in PyTorch fp32 (56.00; NOT within 2), -1.00 against itself in PyTorch fp32 (54.50; "
                    "int8 alone: within 2).")
    sst2 = {("sst2", "teacher", "PyTorch fp32"): {"accuracy": 81.0},
            ("sst2", "TinyBERT-4", "PyTorch fp32"): {"accuracy": 80.5}, ("sst2", "TinyBERT-4", "ORT int8"): {"accuracy": 80.0}}
    # both tasks scored, each with its own teacher (the same name in both)
    line = bench.quality_verdicts(squad | sst2)[1]
    assert "-1.00 points against the teacher in PyTorch fp32 (81.00; within 1)" in line  # 80.0 - 81.0
    assert "-0.50 against itself in PyTorch fp32 (80.50; int8 alone: within 1)" in line

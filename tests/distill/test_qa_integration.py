"""`distill finetune` / `prune` / `eval` for SQuAD on MiniLM and the real SQuAD 2.0 splits, at smoke
scale: a few steps on a few training questions, evaluation on 20 questions. Checks the wiring
(windows, counts, outputs), not accuracy."""
import json

import pytest

from tests.distill.test_train import common, run_cli

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def squad_subset(path, out, n_questions: int, start_article: int = 0):
    """The first ``n_questions`` questions (whole paragraphs cut short) of a SQuAD file."""
    data, kept = json.loads(path.read_text())["data"], []
    left = n_questions
    for article in data[start_article:]:
        paragraphs = []
        for para in article["paragraphs"]:
            if left == 0:
                break
            qas = para["qas"][:left]
            left -= len(qas)
            paragraphs.append({**para, "qas": qas})
        if paragraphs:
            kept.append({**article, "paragraphs": paragraphs})
        if left == 0:
            break
    out.write_text(json.dumps({"version": "v2.0", "data": kept}))
    return out, sum(len(p["qas"]) for a in kept for p in a["paragraphs"])


@pytest.mark.integration
def test_minilm_squad_finetune_prune_and_eval_smoke(tmp_path, squad_assets):
    """Fine-tune (dev questions for checkpoint selection come from the train split), prune with the
    gain strategy, and evaluate both on questions of the evaluation holdout (reported, never used
    to choose anything)."""
    split = squad_assets / "squad" / "squad2-train-split.json"
    train, _ = squad_subset(split, tmp_path / "train.json", 8)
    dev, n_dev = squad_subset(split, tmp_path / "dev.json", 20, start_article=11)
    holdout, n_holdout = squad_subset(squad_assets / "squad" / "squad2-eval-split.json", tmp_path / "holdout.json", 20)
    assert n_dev == n_holdout == 20
    gold = json.loads(dev.read_text())["data"]
    n_impossible = sum(q.get("is_impossible", False) for a in gold for p in a["paragraphs"] for q in p["qas"])

    out = tmp_path / "teacher"
    result = run_cli("finetune", "--config", ROOT / "configs" / "squad-cpu" / "teacher.yaml",
                     *common(out, **{"model.teacher": squad_assets / "models" / "minilm-l6-mlm",
                                     "data.train": train, "data.dev": dev, "train.max_steps": 2,
                                     "train.batch_size": 4}))
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["total"] == 20 and metrics["NoAns_total"] == n_impossible
    assert metrics["HasAns_total"] == 20 - n_impossible and metrics["windows"] >= 20
    assert 0 <= metrics["f1"] <= 100 and metrics["exact"] <= metrics["f1"]

    # eval takes the checkpoint's windows (384 tokens, stride 128) from its saved config
    evaluated = json.loads(run_cli("eval", "--model", out / "best", "--task", "squad", "--data", dev).stdout)
    assert evaluated["rows"] == 20 and evaluated["f1"] == pytest.approx(metrics["f1"])
    assert (evaluated["max_seq_length"], evaluated["doc_stride"]) == (384, 128)
    assert evaluated["parameters"] > 20e6  # MiniLM-L6-H384 with a QA head

    pruned = tmp_path / "pruned"
    result = run_cli("prune", "--config", ROOT / "configs" / "squad-cpu" / "prune.yaml",
                     *common(pruned, **{"model.teacher": out / "best", "data.train": train,
                                        "prune.gain_batches": 2, "train.batch_size": 4}))
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["heads_kept"], summary["heads_total"]) == (36, 72)
    assert summary["ffn_kept"] == 6 * 1536 // 2
    on_holdout = json.loads(run_cli("eval", "--model", pruned / "pruned", "--task", "squad",
                                    "--data", holdout).stdout)
    assert on_holdout["rows"] == 20 and on_holdout["parameters"] == summary["parameters"]
    assert on_holdout["parameters"] < evaluated["parameters"] - 5e6

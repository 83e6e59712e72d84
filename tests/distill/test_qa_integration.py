"""`distill finetune` / `distill eval` for SQuAD on MiniLM and the real SQuAD 2.0 splits, at smoke
scale: a few steps on a few training questions, evaluation on 20 held-out questions. Checks the
wiring (windows, counts, outputs), not accuracy."""
import json

import pytest

from tests.distill.test_train import common, run_cli

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _subset(path, out, n_questions: int, start_article: int = 0):
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
def test_minilm_squad_finetune_and_eval_smoke(tmp_path, squad_assets):
    train, _ = _subset(squad_assets / "squad" / "squad2-train-split.json", tmp_path / "train.json", 8)
    dev, n_dev = _subset(squad_assets / "squad" / "squad2-eval-split.json", tmp_path / "dev.json", 20)
    assert n_dev == 20
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

    result = run_cli("eval", "--model", out / "best", "--task", "squad", "--data", dev, "--max-seq-length", 256,
                     "--doc-stride", 96)
    evaluated = json.loads(result.stdout)
    assert evaluated["rows"] == 20 and evaluated["f1"] == pytest.approx(metrics["f1"])
    assert evaluated["parameters"] > 20e6  # MiniLM-L6-H384 with a QA head

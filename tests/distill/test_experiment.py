"""The SST-2 experiment's command, wired end to end on the real assets at smoke scale."""
import json
import os

import pytest
import yaml



@pytest.mark.integration
def test_sst2_experiment_smoke(tmp_path, real_assets):
    """The experiment through the recipe runner at smoke scale: a real corpus of 64 sentences, two
    steps a stage; the baseline shares the corpus, teacher and general student (built once)."""
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "experiments"))
    import sst2_cpu

    argv = ["--out", str(tmp_path / "out"), "--max-records", "64", "--n-aug", "1", "--teacher-steps", "2",
            "--general-steps", "2", "--task-steps", "2", "--latency-sentences", "8", "--dev-rows", "64",
            "--set", "corpus.beam_args=[--runner,DirectRunner]"]
    summary = sst2_cpu.main(argv)
    assert set(summary["rows"]) == {"teacher (MiniLM-L6 fine-tuned)", "TinyBERT-4, augmented",
                                    "TinyBERT-4, no augmentation"}
    tiny = summary["rows"]["TinyBERT-4, augmented"]
    assert tiny["rows"] == 64 and 0.3 < tiny["accuracy"] < 1 and tiny["parameters"] < 20e6
    assert (tmp_path / "out" / "results.md").read_text().startswith("| model |")
    assert json.loads((tmp_path / "out" / "results.json").read_text())["task_steps"] == 2
    folders = [p.name for p in (tmp_path / "out" / "stages").iterdir() if not p.name.startswith(".")]
    # one corpus, teacher, general student and teacher cache; two of each student stage, eval and report
    assert len([f for f in folders if f.startswith("teacher-cache-")]) == 1
    stages = sorted(f.rsplit("-", 1)[0] for f in folders if not f.startswith("teacher-cache-"))
    assert stages == ["corpus", "eval", "eval", "general", "intermediate", "intermediate", "prediction", "prediction",
                      "report", "report", "teacher"]
    base = summary["rows"]["TinyBERT-4, no augmentation"]["model"]
    saved = yaml.safe_load(open(os.path.join(base, "config.yaml"), encoding="utf-8"))
    assert saved["data"]["original_only"] is True and saved["train"]["max_steps"] == 2
    # the same command again reuses everything: the same table
    assert sst2_cpu.main(argv)["rows"]["TinyBERT-4, augmented"]["accuracy"] == tiny["accuracy"]


@pytest.mark.integration
def test_squad_prune_experiment_smoke(tmp_path, squad_assets):
    """The pruning experiment end to end at smoke scale: two articles of the train split (one to
    train on, one to tune the null threshold), 10 holdout questions, one pruning level."""
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "experiments"))
    import squad_prune_cpu

    from tests.distill.test_qa_integration import squad_subset

    split = squad_assets / "squad" / "squad2-train-split.json"
    first, _ = squad_subset(split, tmp_path / "a.json", 8)
    last, _ = squad_subset(split, tmp_path / "b.json", 6, start_article=11)
    train = tmp_path / "train.json"
    train.write_text(json.dumps({"version": "v2.0", "data": json.loads(first.read_text())["data"] +
                                 json.loads(last.read_text())["data"]}))
    holdout, _ = squad_subset(squad_assets / "squad" / "squad2-eval-split.json", tmp_path / "holdout.json", 10)
    argv = ["--out", str(tmp_path / "out"), "--train", str(train), "--eval", str(holdout), "--levels", "0.5",
            "--compare-level", "0.5", "--teacher-steps", "2", "--teacher-continue-steps", "2", "--gain-batches", "2",
            "--l0-steps", "2", "--recover-steps", "2", "--n-aug", "1", "--latency-windows", "4", "--latency-batch", "3"]
    summary = squad_prune_cpu.main(argv)
    rows = summary["rows"]
    assert list(rows) == ["teacher (MiniLM-L6 fine-tuned)", "l0 50%, pruned", "l0 50% + distillation",
                          "gain 50%, pruned", "gain 50% + distillation", "l0 50% + fine-tuning on gold spans",
                          "l0 50% + distillation, originals (corpus)", "l0 50% + distillation, augmented corpus",
                          "more teacher training (2 steps), originals", "more teacher training (2 steps), augmented corpus"]
    teacher = rows["teacher (MiniLM-L6 fine-tuned)"]
    assert teacher["total"] == 10 and teacher["parameters"] > 20e6 and teacher["speedup"] == 1.0
    assert teacher["speedup_batch"] == 1.0 and summary["latency"]["batch"] == [1, 3]
    # the teacher is the continued one, trained from the first stage's model for its 2 steps
    assert teacher["path"].endswith(os.path.join("teacher-continue", "final"))
    continued = yaml.safe_load((tmp_path / "out" / "teacher-continue" / "final" / "config.yaml").read_text())
    assert continued["model"]["teacher"] == str(tmp_path / "out" / "teacher" / "final")
    assert continued["optim"]["lr"] == 5e-5 and continued["data"]["group_by_length"] == 50
    # more teacher training starts from the teacher, on the corpus: its originals, then all its rows
    for which, original_only in (("orig", True), ("aug", False)):
        more = yaml.safe_load((tmp_path / "out" / f"teacher-more-{which}" / "final" / "config.yaml").read_text())
        assert more["model"]["teacher"] == teacher["path"] and more["data"]["original_only"] is original_only
        assert more["data"]["train"] == str(tmp_path / "out" / "corpus-aug") and more["train"]["max_steps"] == 2
    for name, r in rows.items():
        for key in ("f1", "f1_tuned", "hasans_f1_forced", "null_baseline_f1", "speedup", "parameters",
                    "speedup_batch", "latency_ms_batch"):
            assert key in r, (name, key)
        if name.startswith("gain"):
            assert r["parameters"] < teacher["parameters"] - 3e6, name  # half the heads and FFN units gone
        elif name.startswith("more teacher"):
            assert r["parameters"] == teacher["parameters"] and "heads_kept" not in r, name
        elif name != "teacher (MiniLM-L6 fine-tuned)":  # 2 l0 steps: the targets are far, a few gates close
            assert r["parameters"] < teacher["parameters"] and 0.5 < r["reached_heads"] <= 1, name
    assert summary["tune"] == {"articles": 1, "questions": 6} and summary["fit_questions"] == 8
    assert rows["l0 50%, pruned"]["target_heads"] == 0.5 and "reached_heads" in rows["l0 50%, pruned"]
    assert (tmp_path / "out" / "curve.png").stat().st_size > 0 and (tmp_path / "out" / "heads.png").exists()
    assert json.loads((tmp_path / "out" / "results.json").read_text())["curve"] == ["l0 50% + distillation"]
    # rerun: every stage and evaluation is reused, nothing retrains
    again = squad_prune_cpu.main(argv)
    assert again["rows"]["l0 50% + distillation"]["f1"] == rows["l0 50% + distillation"]["f1"]

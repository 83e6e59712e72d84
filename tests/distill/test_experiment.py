"""The SST-2 experiment's command, wired end to end on the real assets at smoke scale."""
import json

import pytest

from distill.shards import ShardWriter, task_schema


@pytest.mark.integration
def test_sst2_experiment_smoke(tmp_path, real_assets):
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "experiments"))
    import sst2_cpu

    from distill.glue import read_tsv
    from pipelines.tasks import get_task

    # a stand-in corpus (64 originals + a copy as variant 1): this checks the wiring, not augmentation
    rows = read_tsv(str(real_assets / "glue" / "SST-2" / "train.tsv"), get_task("sst2"))[:64]
    corpus = tmp_path / "corpus"
    manifest = {"task": "sst2", "text_fields": ["sentence"], "label_names": ["0", "1"]}
    with ShardWriter(str(corpus), task_schema(["sentence"]), 50, manifest) as w:
        for i, r in enumerate(rows):
            for a in range(2):
                w.write({"id": f"s{i}-{a}", "source_id": f"s{i}", "aug_index": a, "sentence": r["sentence"],
                         "label": r["label"]})
    summary = sst2_cpu.main(["--out", str(tmp_path / "out"), "--aug-corpus", str(corpus), "--teacher-steps", "2",
                             "--general-steps", "2", "--task-steps", "2", "--latency-sentences", "8", "--dev-rows", "64"])
    assert set(summary["rows"]) == {"teacher (MiniLM-L6 fine-tuned)", "TinyBERT-4, augmented",
                                    "TinyBERT-4, no augmentation"}
    tiny = summary["rows"]["TinyBERT-4, augmented"]
    assert tiny["rows"] == 64 and 0.3 < tiny["accuracy"] < 1 and tiny["parameters"] < 20e6
    assert (tmp_path / "out" / "results.md").read_text().startswith("| model |")
    assert json.loads((tmp_path / "out" / "results.json").read_text())["task_steps"] == 2


@pytest.mark.integration
def test_squad_prune_experiment_smoke(tmp_path, squad_assets):
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "experiments"))
    import squad_prune_cpu

    from tests.distill.test_qa_integration import _subset

    split = squad_assets / "squad" / "squad2-train-split.json"
    train, _ = _subset(split, tmp_path / "train.json", 12)
    holdout, _ = _subset(squad_assets / "squad" / "squad2-eval-split.json", tmp_path / "holdout.json", 10)
    summary = squad_prune_cpu.main(["--out", str(tmp_path / "out"), "--train", str(train), "--eval", str(holdout),
                                    "--teacher-steps", "2", "--gain-batches", "2", "--l0-steps", "2",
                                    "--recover-steps", "2", "--latency-windows", "8"])
    rows = summary["rows"]
    assert list(rows) == ["teacher (MiniLM-L6 fine-tuned)"] + [f"{s}, pruned{x}" for s in ("random", "gain", "l0")
                                                               for x in ("", " + distillation")]
    teacher = rows["teacher (MiniLM-L6 fine-tuned)"]
    assert teacher["total"] == 10 and teacher["parameters"] > 20e6
    for name, r in rows.items():
        if name != "teacher (MiniLM-L6 fine-tuned)":
            assert r["parameters"] < teacher["parameters"] - 5e6, name  # half the heads and FFN units gone
            assert 0 <= r["f1"] <= 100 and r["latency_ms"] > 0
    assert (tmp_path / "out" / "results.md").read_text().startswith("| model | EM | F1 |")

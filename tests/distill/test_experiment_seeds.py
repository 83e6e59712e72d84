"""experiments/sst2_aug_seeds.py: its statistics by hand, and the command end to end at smoke scale."""
import json
import sys
from pathlib import Path

import pytest
import yaml

from tests.distill.conftest import stand_in_corpus

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
import sst2_aug_seeds  # noqa: E402


def test_summarise_and_compare_by_hand():
    aug = sst2_aug_seeds.summarise([0.80, 0.82, 0.84])
    assert aug["n"] == 3 and aug["mean"] == pytest.approx(0.82)
    assert aug["std"] == pytest.approx(0.02)  # sqrt((0.02^2 + 0 + 0.02^2) / 2)
    base = sst2_aug_seeds.summarise([0.79, 0.80])
    assert base["mean"] == pytest.approx(0.795) and base["std"] == pytest.approx(0.00707107, rel=1e-5)
    g = sst2_aug_seeds.compare(aug, base)
    # SE = sqrt(0.02^2 / 3 + 0.0070711^2 / 2) = sqrt(0.000133333 + 0.000025) = 0.0125831
    assert g["gap"] == pytest.approx(0.025)
    assert g["se"] == pytest.approx(0.0125831, rel=1e-5)
    assert g["gap_over_se"] == pytest.approx(1.98680, rel=1e-5)
    # one seed: no spread, no standard error; equal values: SE 0, no ratio
    one = sst2_aug_seeds.summarise([0.7])
    assert one == {"n": 1, "mean": 0.7, "std": None}
    assert sst2_aug_seeds.compare(aug, one) == {"gap": pytest.approx(0.12), "se": None, "gap_over_se": None}
    flat = sst2_aug_seeds.summarise([0.5, 0.5])
    assert sst2_aug_seeds.compare(flat, flat) == {"gap": 0.0, "se": 0.0, "gap_over_se": None}
    with pytest.raises(ValueError, match="no values"):
        sst2_aug_seeds.summarise([])


def _runs(accuracies):
    return [{"seed": 42 + i, "accuracy": a, "last_step_accuracy": a - 0.01} for i, a in enumerate(accuracies)]


def test_report_by_hand(tmp_path):
    runs = {100: {"augmented": _runs([0.80, 0.82, 0.84]), "no-augmentation": _runs([0.70, 0.71, 0.72])},
            800: {"augmented": _runs([0.87, 0.89]), "no-augmentation": _runs([0.85, 0.85])}}
    counts = {100: {"rows": 640, "originals": 100}, 800: {"rows": 5000, "originals": 800}}
    args = sst2_aug_seeds.parse_args(["--sizes", "100,800", "--seeds", "3,2"])
    steps = {100: {"intermediate": 200, "prediction": 60}, 800: {"intermediate": 157, "prediction": 157}}
    s = sst2_aug_seeds.report(0.90, runs, counts, steps, 32, args, {"teacher": 10.0, "general": 5.5})
    aug, base = s["sizes"]["100"]["conditions"]["augmented"], s["sizes"]["100"]["conditions"]["no-augmentation"]
    assert aug["retention"] == pytest.approx(0.82 / 0.90) and base["retention"] == pytest.approx(0.71 / 0.90)
    # epochs: 200 x 32 / 640 = 10, 60 x 32 / 640 = 3; without augmentation / 100 rows: 64 and 19.2
    assert aug["train_rows"] == 640 and aug["epochs"] == {"intermediate": 10.0, "prediction": 3.0}
    assert base["epochs"] == {"intermediate": 64.0, "prediction": 19.2}
    assert aug["last_step"]["mean"] == pytest.approx(0.81)
    g = s["sizes"]["100"]["augmented_minus_no_augmentation"]
    assert g["gap"] == pytest.approx(0.11) and g["se"] == pytest.approx((0.02 ** 2 / 3 + 0.01 ** 2 / 3) ** 0.5)
    # 8,000-like size: (0.88 / 0.90) = 97.8% >= 97%; small size: gap / SE = 0.11 / 0.0129 > 2
    assert s["targets"] == {"augmented_retention_ge_97pct_at_800": True,
                            "augmented_beats_no_augmentation_by_2se_at_100": True}
    assert s["wall_s"] == 15.5
    lines = sst2_aug_seeds.table(s)
    assert ("| 100 | augmented | 640 | 200 + 60 (10 + 3) | 3 | 80.00, 82.00, 84.00 | 82.00 | 2.00 | 91.1% | 81.00 |"
            in lines)
    assert "| 800 | +3.00 | 1.00 | 3.00 |" in lines  # 0.88 - 0.85; SE sqrt(0.0141421^2 / 2 + 0 / 2)
    assert sst2_aug_seeds.plot(s, str(tmp_path / "a.png")) == "a.png"
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sst2_aug_seeds.plot_curves(s, str(tmp_path / "c.png")) == "c.png"  # runs without curves too
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_schedule_flags_by_hand():
    args = sst2_aug_seeds.parse_args(["--sizes", "1500,8000", "--seeds", "3,2", "--epochs", "1500=10+3",
                                      "--corpus-seeds", "1500=42,43,44", "--aug-corpus", "1500:43=/c43",
                                      "--aug-corpus", "8000=/c8"])
    assert args.epochs == {1500: (10.0, 3.0), 8000: (1.0, 1.0)}  # unnamed sizes: one epoch each step
    assert args.corpus_seeds == {1500: [42, 43, 44], 8000: [42]}
    assert args.aug_corpus == {(1500, 43): "/c43", (8000, 42): "/c8"}  # SIZE= is the first corpus seed
    # 10 and 3 epochs of 10,760 rows at batch 32: ceil(3362.5) and ceil(1008.75)
    assert sst2_aug_seeds.task_steps(10760, 32, (10, 3), None) == {"intermediate": 3363, "prediction": 1009}
    assert sst2_aug_seeds.task_steps(10760, 32, (10, 3), 7) == {"intermediate": 7, "prediction": 7}


def test_learning_curve_reads_the_log(tmp_path):
    """Every evaluation of a run's log.jsonl in order, other records skipped; thinned evenly, the
    last one always kept."""
    import json as _json

    records = [{"step": 10 * i, "loss": 1.0 / i} for i in range(1, 11)]
    records[4]["eval/accuracy"] = 0.6
    records.append({"step": 100, "eval/accuracy": 0.7, "best": 0.7})
    (tmp_path / "log.jsonl").write_text("".join(_json.dumps(r) + "\n" for r in records))
    assert sst2_aug_seeds.learning_curve(str(tmp_path), "eval/accuracy") == [[50, 0.6], [100, 0.7]]
    loss = sst2_aug_seeds.learning_curve(str(tmp_path), "loss", points=4)  # 10 entries, every 3rd + the last
    assert loss == [[10, 1.0], [40, 0.25], [70, 1 / 7], [100, 0.1]]


@pytest.mark.parametrize("argv, message", [
    (["--sizes", "100,800", "--seeds", "3"], "one per size"),
    (["--sizes", "100,x"], "comma-separated integers"),
    (["--sizes", "100,100", "--seeds", "1,1"], "distinct"),
    (["--aug-corpus", "700=/x"], "SIZE one of --sizes"),
    (["--epochs", "1500=10"], "--epochs '1500=10': expected SIZE=I+P"),
    (["--epochs", "1500=0+3"], "expected SIZE=I+P"),
    (["--epochs", "700=1+1"], "SIZE one of --sizes"),
    (["--epochs", "1500=2+1", "--epochs", "1500=3+1"], "given twice"),
    (["--corpus-seeds", "1500=42,42"], "distinct integers"),
    (["--corpus-seeds", "1500=42,43", "--aug-corpus", "1500:44=/x"], "seed 44 is not one of size 1500's"),
])
def test_bad_flags_are_refused_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit):
        sst2_aug_seeds.parse_args(argv)
    assert message in capsys.readouterr().err


def _config(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "final" / "config.yaml").read_text())


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


@pytest.mark.integration
def test_the_augmentation_command_builds_the_first_n_sentences_with_seed_42(tmp_path, real_assets, monkeypatch):
    """The corpus build of a size, checked by the corpus builder's own flag parser (no Beam run)."""
    from pipelines.corpus import parse_args

    calls = []
    monkeypatch.setattr(sst2_aug_seeds, "sh", lambda *argv: calls.append(argv))
    out = tmp_path / "sst2-aug-1500"
    assert sst2_aug_seeds.augmented_corpus(str(out), 1500, 8) == str(out)
    (argv,) = calls
    assert argv[0] == sys.executable and argv[1] == str(Path(sst2_aug_seeds.ROOT) / "pipelines" / "augment.py")
    cfg, beam_args = parse_args(list(argv[2:]))
    assert beam_args == [] and cfg.spec.name == "sst2" and cfg.output == str(out)
    assert [i.path for i in cfg.inputs] == [str(real_assets / "glue" / "SST-2" / "train.tsv")]
    assert cfg.max_records == 1500 and cfg.params["n_aug"] == 8 and cfg.params["seed"] == 42
    assert cfg.teacher == str(real_assets / "models" / "minilm-l6-mlm")
    (out / "manifest.json").parent.mkdir()
    (out / "manifest.json").write_text("{}")
    sst2_aug_seeds.augmented_corpus(str(out), 1500, 8)
    assert len(calls) == 1  # a complete corpus is not rebuilt


@pytest.mark.integration
def test_sst2_aug_seeds_experiment_smoke(tmp_path, real_assets, monkeypatch):
    """The command on the real assets at smoke scale: stand-in corpora of the first 16 and 32
    training sentences (two at 16, as augmentation seeds 42 and 7), 2-step teacher and general
    student, at 16 one epoch of the corpus in the intermediate step and two in the prediction step
    (evaluated every step), at 32 one each, 2 seeds at 16 and 1 at 32; then a rerun that must do
    nothing."""
    import torch

    import runs
    from distill.data.glue import read_tsv
    from pipelines.tasks import get_task

    rows = read_tsv(str(real_assets / "glue" / "SST-2" / "train.tsv"), get_task("sst2"))[:32]
    corpora = {n: stand_in_corpus(tmp_path / f"corpus-{n}", rows[:n]) for n in (16, 32)}
    seven = stand_in_corpus(tmp_path / "corpus-16-seed7", rows[:16])
    out = tmp_path / "out"
    argv = ["--out", str(out), "--sizes", "16,32", "--seeds", "2,1", "--aug-corpus", f"16={corpora[16]}",
            "--aug-corpus", f"32={corpora[32]}", "--teacher-steps", "2", "--general-steps", "2", "--dev-rows", "64",
            "--epochs", "16=1+2", "--corpus-seeds", "16=42,7", "--aug-corpus", f"16:7={seven}", "--eval-every", "1"]
    summary = sst2_aug_seeds.main(argv)

    assert 0.3 < summary["teacher"]["dev_accuracy"] <= 1
    small, large = summary["sizes"]["16"], summary["sizes"]["32"]
    # steps: epochs of the 2n rows at batch 32, rounded up: at 16, 1 and 2 epochs of 32 rows; at 32, 2 and 2
    for n, s, steps in ((16, small, {"intermediate": 1, "prediction": 2}), (32, large, {"intermediate": 2, "prediction": 2})):
        assert s == {**s, "originals": n, "rows": 2 * n, "augmentation_seed": None, "steps": steps}
    for size, n in (("16", 2), ("32", 1)):
        for condition in ("augmented", "no-augmentation"):
            c = summary["sizes"][size]["conditions"][condition]
            assert c["n"] == n and [r["seed"] for r in c["seeds"]] == [42, 43][:n]
            assert all(0 <= r["accuracy"] <= 1 for r in c["seeds"]) and c["retention"] > 0
            assert (c["std"] is None) == (n == 1)
            for r in c["seeds"]:  # learning curves: every evaluation (each step), the last the final model's
                steps = summary["sizes"][size]["steps"]
                assert [x for x, _ in r["curve"]] == list(range(1, steps["prediction"] + 1))
                assert r["curve"][-1][1] == r["last_step_accuracy"]
                assert max(a for _, a in r["curve"]) == r["accuracy"]
                assert [x for x, _ in r["intermediate_loss"]] == [steps["intermediate"]]
        assert summary["sizes"][size]["conditions"]["no-augmentation"]["train_rows"] == int(size)
    # the augmented runs take the corpus seeds in turn; the no-augmentation runs read the first corpus
    assert [r["corpus_seed"] for r in small["conditions"]["augmented"]["seeds"]] == [42, 7]
    assert [r["corpus_seed"] for r in small["conditions"]["no-augmentation"]["seeds"]] == [None, None]
    assert summary["corpus_seeds"] == {"16": [42, 7], "32": [42]}
    assert large["augmented_minus_no_augmentation"]["se"] is None  # one seed: no error bar
    assert set(summary["targets"]) == {"augmented_retention_ge_97pct_at_32",
                                       "augmented_beats_no_augmentation_by_2se_at_16"}

    # what differs between runs: a seed changes train.seed (and here, with two corpus seeds, the
    # corpus and its cache), a condition data.original_only only (same steps, same schedule; a
    # prediction step also starts from its own intermediate student), and both change the students
    run = lambda c, s, step: out / "runs" / "n16" / c / f"seed-{s}" / step  # noqa: E731
    for step in ("intermediate", "prediction"):
        a, b, c = (_flat(_config(run(*x, step))) for x in (("augmented", 42), ("augmented", 43),
                                                             ("no-augmentation", 42)))
        own = {"output_dir"} | ({"model.student"} if step == "prediction" else set())
        assert {k for k in a if a[k] != b[k]} == own | {"train.seed", "data.train"} | (
            {"data.teacher_cache"} if step == "prediction" else set())
        assert b["data.train"] == str(seven)  # seed 43, the second run: the second corpus and its cache
        assert step == "intermediate" or b["data.teacher_cache"] == str(out / "teacher-cache-16-seed7")
        assert {k for k in a if a[k] != c[k]} == own | {"data.original_only"}
        assert a["train.max_steps"] == small["steps"][step] and a["model.teacher"] == str(out / "teacher" / "best")
        wa, wb, wc = (_weights(run(*x, step) / "final") for x in (("augmented", 42), ("augmented", 43),
                                                                  ("no-augmentation", 42)))
        assert not torch.equal(wa["classifier.weight"], wb["classifier.weight"])
        assert any(not torch.equal(wa[k], wc[k]) for k in wa if k.startswith("bert.encoder"))
        assert not (run("augmented", 42, step) / "checkpoints").exists()  # deleted once finished

    assert (out / "augmentation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and summary["plot"] == "augmentation.png"
    assert (out / "learning-curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["curves_plot"] == "learning-curves.png"
    assert (out / "results.md").read_text().startswith("Teacher (MiniLM-L6")
    saved = json.loads((out / "results.json").read_text())
    assert saved["sizes"] == json.loads(json.dumps(summary["sizes"]))
    timings = json.loads((out / "timings.json").read_text())
    assert {"teacher", "general", "corpus: SST-2 train (teacher)", "teacher cache: 32", "teacher cache: 16-seed7",
            "n16 augmented seed 43: prediction",
            "n32 no-augmentation seed 42: intermediate"} <= set(timings)

    # rerun: every stage is skipped (nothing may train, build or run a command), the same report
    def refuse(*args, **kwargs):
        raise AssertionError(f"a finished stage ran again: {args}")

    for module, name in ((runs, "distill"), (runs, "sh"), (sst2_aug_seeds, "distill"), (sst2_aug_seeds, "sh")):
        monkeypatch.setattr(module, name, refuse)
    again = sst2_aug_seeds.main(argv)
    assert again["sizes"] == summary["sizes"] and again["teacher"] == summary["teacher"]
    # a corpus passed for a size it does not have is refused before anything trains
    with pytest.raises(SystemExit, match=r"--aug-corpus 16:42=.*corpus-32: the corpus has 32 originals, not 16"):
        sst2_aug_seeds.main(["--out", str(out), "--sizes", "16", "--seeds", "1", "--aug-corpus", f"16={corpora[32]}"])


def test_committed_results_agree_with_their_statistics_and_the_docs():
    """docs/results/sst2-aug-*.json (issue 25's acceptance): its statistics recomputed from the
    per-seed accuracies, its table rows present in docs/results.md, its means and gap in the README."""
    root = Path(__file__).resolve().parents[2]
    committed = sorted((root / "docs" / "results").glob("sst2-aug-*.json"))
    assert committed, "no committed results under docs/results/"
    docs, readme = (root / "docs" / "results.md").read_text(), (root / "README.md").read_text()
    for path in committed:
        summary = json.loads(path.read_text())
        for s in summary["sizes"].values():
            conditions = s["conditions"]
            for c in conditions.values():
                again = sst2_aug_seeds.summarise([r["accuracy"] for r in c["seeds"]])
                assert (c["n"], c["mean"]) == (again["n"], pytest.approx(again["mean"]))
                assert c["std"] == pytest.approx(again["std"])
                assert c["retention"] == pytest.approx(c["mean"] / summary["teacher"]["dev_accuracy"])
            gap = sst2_aug_seeds.compare(conditions["augmented"], conditions["no-augmentation"])
            assert s["augmented_minus_no_augmentation"] == pytest.approx(gap)
            aug, base = (f"**{100 * conditions[c]['mean']:.2f}**" for c in ("augmented", "no-augmentation"))
            assert aug in readme and base in readme and f"**{100 * gap['gap']:+.2f}**" in readme, path.name
        rows = [line for line in sst2_aug_seeds.table(summary)  # the two tables' data rows
                if line.startswith("| ") and not line.startswith(("| originals", "| ---"))]
        missing = [line for line in rows if line not in docs]
        assert rows and not missing, f"{path.name}: rows not in docs/results.md: {missing}"

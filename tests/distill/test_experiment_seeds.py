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
    s = sst2_aug_seeds.report(0.90, runs, counts, {100: 20, 800: 157}, 32, args, {"teacher": 10.0, "general": 5.5})
    aug, base = s["sizes"]["100"]["conditions"]["augmented"], s["sizes"]["100"]["conditions"]["no-augmentation"]
    assert aug["retention"] == pytest.approx(0.82 / 0.90) and base["retention"] == pytest.approx(0.71 / 0.90)
    assert aug["train_rows"] == 640 and aug["epochs"] == 1.0 and base["epochs"] == 6.4  # 20 x 32 / 100
    assert aug["last_step"]["mean"] == pytest.approx(0.81)
    g = s["sizes"]["100"]["augmented_minus_no_augmentation"]
    assert g["gap"] == pytest.approx(0.11) and g["se"] == pytest.approx((0.02 ** 2 / 3 + 0.01 ** 2 / 3) ** 0.5)
    # 8,000-like size: (0.88 / 0.90) = 97.8% >= 97%; small size: gap / SE = 0.11 / 0.0129 > 2
    assert s["targets"] == {"augmented_retention_ge_97pct_at_800": True,
                            "augmented_beats_no_augmentation_by_2se_at_100": True}
    assert s["wall_s"] == 15.5
    lines = sst2_aug_seeds.table(s)
    assert "| 100 | augmented | 640 | 20 (1.0) | 3 | 80.00, 82.00, 84.00 | 82.00 | 2.00 | 91.1% | 81.00 |" in lines
    assert "| 800 | +3.00 | 1.00 | 3.00 |" in lines  # 0.88 - 0.85; SE sqrt(0.0141421^2 / 2 + 0 / 2)
    assert sst2_aug_seeds.plot(s, str(tmp_path / "a.png")) == "a.png"
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, message", [
    (["--sizes", "100,800", "--seeds", "3"], "one per size"),
    (["--sizes", "100,x"], "comma-separated integers"),
    (["--sizes", "100,100", "--seeds", "1,1"], "distinct"),
    (["--aug-corpus", "700=/x"], "SIZE one of --sizes"),
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
    training sentences, 2-step teacher and general student, one epoch of each corpus per task
    step, 2 seeds at 16 and 1 at 32; then a rerun that must do nothing."""
    import torch

    import runs
    from distill.glue import read_tsv
    from pipelines.tasks import get_task

    rows = read_tsv(str(real_assets / "glue" / "SST-2" / "train.tsv"), get_task("sst2"))[:32]
    corpora = {n: stand_in_corpus(tmp_path / f"corpus-{n}", rows[:n]) for n in (16, 32)}
    out = tmp_path / "out"
    argv = ["--out", str(out), "--sizes", "16,32", "--seeds", "2,1", "--aug-corpus", f"16={corpora[16]}",
            "--aug-corpus", f"32={corpora[32]}", "--teacher-steps", "2", "--general-steps", "2", "--dev-rows", "64"]
    summary = sst2_aug_seeds.main(argv)

    assert 0.3 < summary["teacher"]["dev_accuracy"] <= 1
    small, large = summary["sizes"]["16"], summary["sizes"]["32"]
    for n, s in ((16, small), (32, large)):  # steps: one epoch of the 2n rows at batch 32
        assert s == {**s, "originals": n, "rows": 2 * n, "augmentation_seed": None, "steps": -(-2 * n // 32)}
    for size, n in (("16", 2), ("32", 1)):
        for condition in ("augmented", "no-augmentation"):
            c = summary["sizes"][size]["conditions"][condition]
            assert c["n"] == n and [r["seed"] for r in c["seeds"]] == [42, 43][:n]
            assert all(0 <= r["accuracy"] <= 1 for r in c["seeds"]) and c["retention"] > 0
            assert (c["std"] is None) == (n == 1)
        assert summary["sizes"][size]["conditions"]["no-augmentation"]["train_rows"] == int(size)
    assert large["augmented_minus_no_augmentation"]["se"] is None  # one seed: no error bar
    assert set(summary["targets"]) == {"augmented_retention_ge_97pct_at_32",
                                       "augmented_beats_no_augmentation_by_2se_at_16"}

    # what differs between runs: a seed changes train.seed only, a condition data.original_only only
    # (same steps, same schedule; a prediction step also starts from its own intermediate student),
    # and both change the students they train
    run = lambda c, s, step: out / "runs" / "n16" / c / f"seed-{s}" / step  # noqa: E731
    for step in ("intermediate", "prediction"):
        a, b, c = (_flat(_config(run(*x, step))) for x in (("augmented", 42), ("augmented", 43),
                                                             ("no-augmentation", 42)))
        own = {"output_dir"} | ({"model.student"} if step == "prediction" else set())
        assert {k for k in a if a[k] != b[k]} == own | {"train.seed"}
        assert {k for k in a if a[k] != c[k]} == own | {"data.original_only"}
        assert a["train.max_steps"] == small["steps"] and a["model.teacher"] == str(out / "teacher" / "best")
        wa, wb, wc = (_weights(run(*x, step) / "final") for x in (("augmented", 42), ("augmented", 43),
                                                                  ("no-augmentation", 42)))
        assert not torch.equal(wa["classifier.weight"], wb["classifier.weight"])
        assert any(not torch.equal(wa[k], wc[k]) for k in wa if k.startswith("bert.encoder"))
        assert not (run("augmented", 42, step) / "checkpoints").exists()  # deleted once finished

    assert (out / "augmentation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and summary["plot"] == "augmentation.png"
    assert (out / "results.md").read_text().startswith("Teacher (MiniLM-L6")
    saved = json.loads((out / "results.json").read_text())
    assert saved["sizes"] == json.loads(json.dumps(summary["sizes"]))
    timings = json.loads((out / "timings.json").read_text())
    assert {"teacher", "general", "corpus: SST-2 train (teacher)", "teacher cache: 32", "n16 augmented seed 43: prediction",
            "n32 no-augmentation seed 42: intermediate"} <= set(timings)

    # rerun: every stage is skipped (nothing may train, build or run a command), the same report
    def refuse(*args, **kwargs):
        raise AssertionError(f"a finished stage ran again: {args}")

    for module, name in ((runs, "distill"), (runs, "sh"), (sst2_aug_seeds, "distill"), (sst2_aug_seeds, "sh")):
        monkeypatch.setattr(module, name, refuse)
    again = sst2_aug_seeds.main(argv)
    assert again["sizes"] == summary["sizes"] and again["teacher"] == summary["teacher"]
    # a corpus passed for a size it does not have is refused before anything trains
    with pytest.raises(SystemExit, match=r"--aug-corpus 16=.*corpus-32: the corpus has 32 originals, not 16"):
        sst2_aug_seeds.main(["--out", str(out), "--sizes", "16", "--seeds", "1", "--aug-corpus", f"16={corpora[32]}"])

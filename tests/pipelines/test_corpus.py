"""The command line: flag errors, an end-to-end run([...]) with the fake augmenter, reuse, export."""
import json
import os

import datasets
import pytest

from pipelines.corpus import run
from pipelines.export import export_tsv
from pipelines.manifest import load_corpus
from tests.pipelines.fakes import FakeLoader
from tests.pipelines.helpers import cli_args as args


@pytest.mark.parametrize("change,flag", [
    ({"--task": "sst3"}, "--task"),
    ({"--p-t": "1.5"}, "--p-t"),
    ({"--n-aug": "-1"}, "--n-aug"),
    ({"--input": "/nonexistent/*.tsv"}, "--input"),
    ({"--num-shards": "0"}, "--num-shards"),
    ({"--text-fields": "question"}, "--text-fields"),
    ({"--text-fields": "q,s"}, "--text-fields"),
    ({"--augment-context": None}, "--augment-context"),
    ({"--glove": "/nonexistent.txt"}, "--glove"),
    ({"--n_aug": "3"}, "--n-aug"),
])
def test_flag_errors_stop_before_any_work_naming_the_flag(change, flag, tmp_path, task_files, fake_models, capsys):
    argv = args("qnli", task_files["qnli"], tmp_path / "out", fake_models)
    for key, value in change.items():
        if key in argv:
            argv[argv.index(key) + 1] = value
        else:
            argv += [key] if value is None else [key, value]
    with pytest.raises(SystemExit) as exc:
        run(argv, loader=FakeLoader())
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_input_flag(tmp_path, fake_models, capsys):
    teacher, glove = fake_models
    with pytest.raises(SystemExit):
        run(["--task", "sst2", "--output", str(tmp_path), "--teacher", teacher, "--glove", glove])
    assert "--input" in capsys.readouterr().err


def test_end_to_end_run_reuse_and_overwrite(tmp_path, task_files, fake_models, caplog):
    bad = tmp_path / "more.tsv"
    bad.write_text("index\tquestion\tsentence\tlabel\n0\tWhy?\tBecause.\n1\tEXPLODE?\tNo.\tentailment\n")
    out = tmp_path / "corpus"
    argv = args("QNLI", f"{task_files['qnli']},{bad}", out, fake_models)
    caplog.set_level("INFO")
    manifest = run(argv, loader=FakeLoader())
    assert sorted(os.listdir(out)) == ["dead-letter.jsonl", "manifest.json", "shard-00000-of-00002.arrow",
                                       "shard-00001-of-00002.arrow"]
    counts = manifest["counts"]
    assert counts["read"] == 5 and counts["rejected"] == 2 and counts["accepted"] == 3
    assert counts["read"] == counts["accepted"] + counts["rejected"]
    assert counts["originals"] == 3 and counts["rows"] == counts["originals"] + counts["variants"]
    letters = [json.loads(line) for line in (out / "dead-letter.jsonl").read_text().splitlines()]
    assert {(d["stage"], d["location"]) for d in letters} == {("read", f"{bad}:2"), ("augment", f"{bad}:3")}
    assert all(d["reason"] for d in letters)
    assert manifest["inputs"][0]["sha256"] and manifest["params"]["seed"] == 42
    assert manifest["teacher"]["weights_sha256"] and manifest["glove"]["sha256"]
    assert [s["rows"] for s in manifest["shards"]] and sum(s["rows"] for s in manifest["shards"]) == counts["rows"]

    ds = load_corpus(str(out), expect_fingerprint=manifest["fingerprint"])
    assert len(ds) == counts["rows"] and ds.features["label"].names == ["entailment", "not_entailment"]
    by_arrow = datasets.load_dataset("arrow", data_files=str(out / "shard-*.arrow"), split="train",
                                     cache_dir=str(tmp_path / "hf"))
    assert sorted(by_arrow["id"]) == sorted(ds["id"])
    assert any("texts/s" in r.getMessage() and "ETA" in r.getMessage() for r in caplog.records)
    assert any(r.getMessage().startswith(f"corpus {manifest['fingerprint']}") for r in caplog.records)

    # Same flags: the corpus is reused, not rebuilt.
    mtime = (out / "manifest.json").stat().st_mtime_ns
    assert run(argv, loader=FakeLoader())["created"] == manifest["created"]
    assert (out / "manifest.json").stat().st_mtime_ns == mtime
    # Other parameters: refused without --overwrite, rebuilt with it.
    with pytest.raises(SystemExit):
        run(argv + ["--seed", "7"], loader=FakeLoader())
    rebuilt = run(argv + ["--seed", "7", "--overwrite", "--num-shards", "1"], loader=FakeLoader())
    assert rebuilt["fingerprint"] != manifest["fingerprint"]
    assert sorted(p for p in os.listdir(out) if p.startswith("shard")) == ["shard-00000-of-00001.arrow"]


def test_squad_run_and_tsv_export(tmp_path, task_files, fake_models):
    out = tmp_path / "squad"
    manifest = run(args("squad", task_files["squad"], out, fake_models, "--augment-context"), loader=FakeLoader(4))
    assert manifest["counts"]["rejected"] == 1 and manifest["counts"]["accepted"] == 3
    ds = load_corpus(str(out))
    for row in ds:
        for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"]):
            assert row["context"][start:start + len(text)] == text
    assert {r["source_id"] for r in ds if r["is_impossible"]} == {"q3"}
    with pytest.raises(ValueError, match="no GLUE TSV layout"):
        export_tsv(str(out), str(tmp_path / "x.tsv"))


def test_export_tsv_in_the_authors_layout(tmp_path, task_files, fake_models):
    out = tmp_path / "qnli"
    manifest = run(args("qnli", task_files["qnli"], out, fake_models, "--export-tsv", str(tmp_path / "aug.tsv")),
                   loader=FakeLoader())
    lines = (tmp_path / "aug.tsv").read_text().splitlines()
    assert lines[0] == "index\tquestion\tsentence\tlabel"
    assert lines[1] == "0\tWhat city hosts the festival?\tThe festival is held every summer in Edinburgh.\tentailment"
    assert len(lines) == 1 + manifest["counts"]["rows"]
    assert all(len(line.split("\t")) == 4 for line in lines)


def test_csv_jsonl_and_hf_inputs(tmp_path, fake_models):
    csv_path = tmp_path / "reviews.csv"
    csv_path.write_text("text,stars\n\"good, really\",1\nbad,0\nbroken\n")
    m = run(args("sst2", str(csv_path), tmp_path / "csv", fake_models, "--text-fields", "text",
                 "--label-field", "stars"), loader=FakeLoader())
    assert (m["counts"]["read"], m["counts"]["rejected"]) == (3, 1)
    assert sorted(load_corpus(str(tmp_path / "csv")).filter(lambda r: r["aug_index"] == 0)["sentence"]) == \
        ["bad", "good, really"]

    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text('{"q": "Why?", "s": "Because.", "y": "entailment"}\n{oops\n{"q": "Who?", "s": "", "y": 1}\n')
    m = run(args("qnli", str(jsonl), tmp_path / "jsonl", fake_models, "--text-fields", "q,s", "--label-field", "y"),
            loader=FakeLoader())
    assert (m["counts"]["read"], m["counts"]["accepted"]) == (3, 1)
    reasons = [json.loads(x)["reason"] for x in (tmp_path / "jsonl" / "dead-letter.jsonl").read_text().splitlines()]
    assert reasons[0].startswith("invalid JSON") and reasons[1] == "empty text in field 's'"

    saved = tmp_path / "hf"
    datasets.Dataset.from_dict({"sentence": ["nice one", "awful"], "label": [1, 0]}).save_to_disk(str(saved))
    m = run(args("sst2", str(saved), tmp_path / "from-hf", fake_models), loader=FakeLoader())
    assert m["counts"]["accepted"] == 2 and m["inputs"][0]["format"] == "hf"
    assert m["inputs"][0]["dataset_fingerprint"]


def test_column_flags_are_checked_against_the_input(tmp_path, task_files, fake_models, capsys):
    csv_path = tmp_path / "reviews.csv"
    csv_path.write_text("text,stars\ngood,1\n")
    with pytest.raises(SystemExit):
        run(args("sst2", str(csv_path), tmp_path / "o", fake_models, "--text-fields", "text", "--label-field", "y"),
            loader=FakeLoader())
    assert "argument --label-field" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a GLUE file of another task
        run(args("qnli", task_files["sst2"], tmp_path / "o", fake_models), loader=FakeLoader())
    assert "argument --task" in capsys.readouterr().err


def test_compressed_input(tmp_path, task_files, fake_models):
    import gzip

    packed = tmp_path / "train.tsv.gz"
    packed.write_bytes(gzip.compress(open(task_files["sst2"], "rb").read()))
    m = run(args("sst2", str(packed), tmp_path / "gz", fake_models), loader=FakeLoader())
    assert m["counts"]["accepted"] == 5 and m["inputs"][0]["format"] == "tsv"


def test_keep_special_tokens_is_a_parameter_of_the_corpus(tmp_path, task_files, fake_models):
    from pipelines.corpus import describe, parse_args
    from pipelines.manifest import teacher_identity

    argv = args("sst2", task_files["sst2"], tmp_path / "out", fake_models)
    static = {}
    for keep, extra in ((False, []), (True, ["--keep-special-tokens"])):
        cfg, _ = parse_args(argv + extra)
        assert cfg.params["keep_special_tokens"] is keep  # what the workers' AugmentConfig receives
        static[keep] = describe(cfg, teacher_identity(cfg.teacher))
        assert static[keep]["params"]["keep_special_tokens"] is keep  # stated in the manifest
    assert static[False]["fingerprint"] != static[True]["fingerprint"]


def test_dask_runner_gets_one_task_per_read_split_unless_told_otherwise():
    from pipelines.corpus import runner_defaults

    dask = ["--runner", "apache_beam.runners.dask.dask_runner.DaskRunner"]
    assert runner_defaults(dask) == ["--dask_partition_size=1"]
    assert runner_defaults(dask + ["--dask_npartitions=4"]) == []
    assert runner_defaults(dask + ["--dask_partition_size", "8"]) == []
    assert runner_defaults(["--runner", "DirectRunner", "--direct_num_workers=2"]) == []


def test_direct_runner_runs_in_process_and_never_builds_prism(tmp_path, task_files, fake_models, monkeypatch, caplog):
    """--runner DirectRunner is the in-process FnApiRunner the tests run: Beam's DirectRunner would
    try Prism (a binary downloaded at run time) first."""
    from apache_beam.runners.portability import prism_runner
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    def refuse(*a, **k):
        raise AssertionError("a Prism runner was constructed")

    monkeypatch.setattr(prism_runner.PrismRunner, "__init__", refuse)
    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", refuse)
    ran = []
    real = fn_runner.FnApiRunner.run_pipeline
    monkeypatch.setattr(fn_runner.FnApiRunner, "run_pipeline", lambda self, *a, **k: ran.append(1) or real(self, *a, **k))
    caplog.set_level("INFO")
    for named in (False, True):
        argv = args("SST-2", task_files["sst2"], tmp_path / f"corpus-{named}", fake_models)
        if not named:  # no --runner at all: Beam's default
            i = argv.index("--runner")
            del argv[i:i + 2]
        manifest = run(argv, loader=FakeLoader())
        assert manifest["counts"]["accepted"] > 0 and manifest["compute"]["runner"] == "DirectRunner"
    assert ran == [1, 1]
    assert "prism" not in caplog.text.lower()

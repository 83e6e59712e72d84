"""End to end with the real MiniLM teacher and GloVe on small slices of the shared assets."""
import csv

import datasets
import pyarrow as pa
import pytest

from pipelines.corpus import run
from pipelines.manifest import load_corpus
from pipelines.readers import read_squad
from pipelines.records import Record
from tests.numerics import not_exact
from tests.pipelines.helpers import RUNNER, TWO_PROCESSES

pytestmark = pytest.mark.integration


def build(assets, task, inp, out, *extra):
    return run(["--task", task, "--input", str(inp), "--output", str(out),
                "--teacher", str(assets / "models" / "minilm-l6-mlm"),
                "--glove", str(assets / "glove" / "glove.6B.50d.top100k.txt"),
                "--num-shards", "3", "--torch-threads", "1", *RUNNER, *extra])


def shards_of(out, manifest):
    """Every shard through datasets and pyarrow; the two agree and match the manifest."""
    parts = []
    for shard in manifest["shards"]:
        ds = datasets.Dataset.from_file(str(out / shard["file"]))
        with pa.ipc.open_stream(str(out / shard["file"])) as reader:
            assert reader.read_all().num_rows == len(ds) == shard["rows"]
        parts.append(ds)
    return datasets.concatenate_datasets(parts)


def reconciles(manifest):
    c = manifest["counts"]
    return (c["read"] == c["accepted"] + c["rejected"] and c["originals"] == c["accepted"]
            and c["rows"] == c["originals"] + c["variants"] == sum(s["rows"] for s in manifest["shards"]))


def test_sst2_slice(assets, tmp_path):
    out = tmp_path / "sst2"
    manifest = build(assets, "SST-2", assets / "glue" / "SST-2" / "train.tsv", out, "--max-records", "20",
                     "--n-aug", "4", "--export-tsv", str(tmp_path / "train_aug.tsv"))
    assert reconciles(manifest) and manifest["counts"]["accepted"] == 20 and manifest["counts"]["variants"] > 20
    ds = shards_of(out, manifest)
    with open(assets / "glue" / "SST-2" / "train.tsv", encoding="utf-8") as f:
        source = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:21]
    originals = {r["source_id"]: r for r in ds if r["aug_index"] == 0}
    for i, (sentence, label) in enumerate(source):
        assert originals[f"train-{i:06d}"]["sentence"] == sentence  # verbatim
        assert originals[f"train-{i:06d}"]["label"] == int(label)
    assert (tmp_path / "train_aug.tsv").read_text().count("\n") == 1 + manifest["counts"]["rows"]
    assert manifest["teacher"]["weights_sha256"] and manifest["glove"]["sha256"]
    assert manifest["params"]["keep_special_tokens"] is False
    specials = ("[CLS]", "[SEP]", "[UNK]", "[PAD]", "[MASK]")
    assert not [r["sentence"] for r in ds if r["aug_index"] > 0 and any(t in r["sentence"] for t in specials)]


def test_qnli_dev_pairs(assets, tmp_path):
    out = tmp_path / "qnli"
    manifest = build(assets, "qnli", assets / "glue" / "QNLI" / "dev.tsv", out, "--max-records", "10", "--n-aug", "3")
    assert reconciles(manifest) and manifest["counts"]["accepted"] == 10
    ds = shards_of(out, manifest)
    originals = {r["source_id"]: r for r in ds if r["aug_index"] == 0}
    varied = {"question": 0, "sentence": 0}
    for row in ds:
        orig = originals[row["source_id"]]
        assert row["label"] == orig["label"]
        if row["aug_index"] == 0:
            continue
        changed = [f for f in ("question", "sentence") if row[f] != orig[f]]
        assert len(changed) == 1, row  # one field augmented, the other exactly the original
        varied[changed[0]] += 1
    assert varied["question"] > 0 and varied["sentence"] > 0


def test_squad_train_split_answers_in_place(assets, tmp_path):
    out = tmp_path / "squad"
    path = assets / "squad" / "squad2-train-split.json"
    manifest = build(assets, "squad", path, out, "--max-records", "12", "--n-aug", "2", "--augment-context")
    assert reconciles(manifest) and manifest["counts"]["accepted"] == 12
    ds = load_corpus(str(out))
    records = {r.source_id: r for r in read_squad(path.read_bytes(), str(path)) if isinstance(r, Record)}
    contexts_changed = 0
    for row in ds:
        record = records[row["source_id"]]
        assert row["is_impossible"] == record.qa.is_impossible
        assert row["answers"]["text"] == [a.text for a in record.qa.answers]
        if record.qa.is_impossible:
            assert row["answers"] == {"text": [], "answer_start": []}
        for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"]):
            assert row["context"][start:start + len(text)] == text
        contexts_changed += row["context"] != record.fields["context"]
    assert contexts_changed > 0


def test_same_rows_with_one_or_two_worker_processes(assets, tmp_path):
    # Exact by construction: a record's rows depend on the record alone (its id seeds its sampling;
    # each text's masked-LM rows run in forwards of their own, each GloVe word alone), every worker
    # runs the same torch threads, and shards are sorted: the same operations on the same tensors.
    inp = assets / "glue" / "SST-2" / "train.tsv"
    m1 = build(assets, "sst2", inp, tmp_path / "one", "--max-records", "12", "--n-aug", "3", "--torch-threads", "1")
    m2 = build(assets, "sst2", inp, tmp_path / "two", "--max-records", "12", "--n-aug", "3", "--torch-threads", "1",
               "--records-per-batch", "5", *TWO_PROCESSES)
    assert m1["counts"] == m2["counts"] and m1["fingerprint"] == m2["fingerprint"]
    for s1, s2 in zip(m1["shards"], m2["shards"]):
        assert (tmp_path / "one" / s1["file"]).read_bytes() == (tmp_path / "two" / s2["file"]).read_bytes(), \
            not_exact(f"shards {s1['file']}")

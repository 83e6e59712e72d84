import io

import datasets
import pyarrow as pa
import pytest

from pipelines.records import Answer, QAInfo, Record
from pipelines.rows import build_rows, schema
from pipelines.shards import natural_key, read_shard, shard_name, shard_of, sort_rows, write_shard
from pipelines.tasks import get_task

PAIR = Record("dev-000007", "d.tsv:9", {"question": "Who?", "sentence": "Him."}, 1)


def test_pair_rows_vary_one_field_and_keep_the_other():
    rows = build_rows(PAIR, {"question": ["whom ?", "who ."], "sentence": ["her ."]})
    assert [(r["id"], r["aug_index"], r["question"], r["sentence"], r["label"]) for r in rows] == [
        ("dev-000007-0", 0, "Who?", "Him.", 1),
        ("dev-000007-1", 1, "whom ?", "Him.", 1),
        ("dev-000007-2", 2, "who .", "Him.", 1),
        ("dev-000007-3", 3, "Who?", "her .", 1),
    ]
    assert all(r["source_id"] == "dev-000007" for r in rows)


def test_squad_rows_carry_answers_and_context_variants():
    record = Record("q1", "s#0", {"question": "Where?", "context": "In Paris."}, None,
                    QAInfo("T", (Answer("Paris", 3),), False))
    rows = build_rows(record, {"question": ["where !"]}, [("At Paris.", (Answer("Paris", 3),))])
    assert [(r["question"], r["context"], r["answers"]) for r in rows] == [
        ("Where?", "In Paris.", {"text": ["Paris"], "answer_start": [3]}),
        ("where !", "In Paris.", {"text": ["Paris"], "answer_start": [3]}),
        ("Where?", "At Paris.", {"text": ["Paris"], "answer_start": [3]}),
    ]
    assert [r["aug_index"] for r in rows] == [0, 1, 2] and rows[0]["title"] == "T"


def test_schema_columns_and_types():
    s = schema(get_task("qnli"))
    assert s.names == ["id", "source_id", "aug_index", "question", "sentence", "label"]
    assert s.field("aug_index").type == pa.int32() and s.field("label").type == pa.int64()
    assert schema(get_task("stsb")).field("label").type == pa.float32()
    sq = schema(get_task("squad"))
    assert sq.names == ["id", "source_id", "aug_index", "title", "question", "context", "answers", "is_impossible"]
    assert sq.field("answers").type == pa.struct([("text", pa.list_(pa.string())),
                                                  ("answer_start", pa.list_(pa.int32()))])


def test_shard_is_an_arrow_stream_datasets_loads_with_class_labels(tmp_path):
    rows = build_rows(PAIR, {"question": ["whom ?"]})
    path = tmp_path / shard_name(0, 1)
    with open(path, "wb") as f:
        assert write_shard(rows, schema(get_task("qnli")), f) == 2
    ds = datasets.Dataset.from_file(str(path))
    assert ds.features["label"].names == ["entailment", "not_entailment"]
    assert ds[1] == rows[1]
    assert read_shard(str(path)).to_pylist() == rows
    empty = tmp_path / "empty.arrow"
    with open(empty, "wb") as f:
        write_shard([], schema(get_task("qnli")), f)
    assert len(datasets.Dataset.from_file(str(empty))) == 0


def test_equal_rows_give_equal_bytes():
    rows = build_rows(PAIR, {"question": ["whom ?"]})
    blobs = []
    for _ in range(2):
        buf = io.BytesIO()
        write_shard(rows, schema(get_task("qnli")), buf)
        blobs.append(buf.getvalue())
    assert blobs[0] == blobs[1]


def test_sort_rows_orders_numbers_naturally_and_refuses_duplicate_ids():
    rows = [{"id": f"t-{s}-{a}", "source_id": f"t-{s}", "aug_index": a} for s, a in [(10, 0), (9, 1), (9, 0), (10, 2)]]
    assert [r["id"] for r in sort_rows(rows)] == ["t-9-0", "t-9-1", "t-10-0", "t-10-2"]
    with pytest.raises(ValueError, match="appears twice"):
        sort_rows(rows + rows[:1])
    assert natural_key("train-9") < natural_key("train-10")


def test_shard_of_is_stable_and_spreads():
    assert shard_of("train-000001", 8) == shard_of("train-000001", 8)
    assert len({shard_of(f"train-{i:06d}", 8) for i in range(100)}) == 8
    assert shard_name(3, 8) == "shard-00003-of-00008.arrow"

import io
import json

import pytest

from pipelines.readers import read_csv, read_jsonl, read_rows, read_squad, read_tsv, tsv_header
from pipelines.records import Answer, Record, Reject
from pipelines.tasks import get_task


def lines(text: str, bom: bool = False) -> list[bytes]:
    data = (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")
    return io.BytesIO(data).readlines()


def split(items):
    items = list(items)
    records = [i for i in items if isinstance(i, Record)]
    rejects = [i for i in items if isinstance(i, Reject)]
    return records, rejects


def test_tsv_with_header_reads_fields_labels_and_stable_ids():
    items = list(read_tsv(lines("sentence\tlabel\ngood film \t1\nbad film\t0\n"), get_task("sst2"), "t.tsv", "train"))
    assert items == [Record("train-000000", "t.tsv:2", {"sentence": "good film "}, 1),
                     Record("train-000001", "t.tsv:3", {"sentence": "bad film"}, 0)]


def test_tsv_byte_order_mark_and_crlf():
    text = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n1\t1\t2\tHe said \"hi\".\tShe left.\r\n"
    (record,) = read_tsv(lines(text, bom=True), get_task("MRPC"), "m.tsv", "train")
    assert record.fields == {"sentence1": 'He said "hi".', "sentence2": "She left."}
    assert record.label == 1


def test_tsv_without_header_uses_glue_positions():
    text = "gj04\t1\t\tOur friends won't buy this.\ngj04\t0\t*\tThey drank the pub.\n"
    records, rejects = split(read_tsv(lines(text), get_task("cola"), "c.tsv", "train"))
    assert not rejects
    assert [(r.source_id, r.fields["sentence"], r.label) for r in records] == [
        ("train-000000", "Our friends won't buy this.", 1), ("train-000001", "They drank the pub.", 0)]
    (record,) = read_tsv(lines("nice\t1\n"), get_task("sst2"), "s.tsv", "x")
    assert record.fields == {"sentence": "nice"}


def test_tsv_bad_rows_are_rejected_with_reasons_and_ids_stay_stable():
    text = ("index\tquestion\tsentence\tlabel\n"
            "0\tWhy?\tBecause.\tentailment\n"
            "1\tWhy?\tBecause.\n"                       # wrong column count
            "2\tWhy?\tBecause.\t\n"                     # missing label
            "3\t \tBecause.\tentailment\n"              # empty text
            "4\tWhy?\tBecause.\tmaybe\n"                # unknown label
            "\n"                                         # blank: not a record
            "5\tHow?\tSo.\tnot_entailment\n")
    items = list(read_tsv(lines(text), get_task("qnli"), "q.tsv", "dev"))
    records, rejects = split(items)
    assert len(items) == 6 and len(records) == 2 and len(rejects) == 4
    assert [r.source_id for r in records] == ["dev-000000", "dev-000005"]
    reasons = [r.reason for r in rejects]
    assert "expected 4 tab-separated columns, got 3" in reasons[0]
    assert "missing label" in reasons[1]
    assert "empty text in field 'question'" in reasons[2]
    assert "'maybe'" in reasons[3]
    assert [r.location for r in rejects] == ["q.tsv:3", "q.tsv:4", "q.tsv:5", "q.tsv:6"]
    assert rejects[0].record == "1\tWhy?\tBecause."


def test_tsv_invalid_utf8_line_is_rejected():
    data = [b"sentence\tlabel\n", b"caf\xe9\t1\n", b"ok\t0\n"]
    records, rejects = split(read_tsv(data, get_task("sst2"), "s.tsv", "train"))
    assert len(records) == 1 and "not UTF-8" in rejects[0].reason


def test_tsv_header_of_another_task_is_an_error():
    with pytest.raises(ValueError, match="lacks the qnli column"):
        tsv_header("sentence\tlabel", get_task("qnli"))
    assert tsv_header("0\tWhy?\tBecause.\tentailment", get_task("qnli")) is None


def test_csv_with_named_columns():
    text = "text,gold,extra\n\"a, b\",1,x\nshort,0\n,1,x\n\"two\nlines\",0,y\n"
    items = list(read_csv(lines(text), get_task("sst2"), "s.csv", "train",
                          {"sentence": "text", "label": "gold"}))
    records, rejects = split(items)
    assert records == [Record("train-000000", "s.csv:2", {"sentence": "a, b"}, 1),
                       Record("train-000003", "s.csv:6", {"sentence": "two\nlines"}, 0)]
    assert [r.reason for r in rejects] == ["expected 3 columns, got 2", "empty text in field 'text'"]


def test_jsonl_invalid_lines_and_missing_fields():
    text = ('{"q": "Why?", "s": "Because.", "y": "entailment"}\n'
            '{"q": "Why?", "s": "Because."\n'
            '[1, 2]\n'
            '{"q": "Why?", "y": 0}\n')
    columns = {"question": "q", "sentence": "s", "label": "y"}
    items = list(read_jsonl(lines(text), get_task("qnli"), "q.jsonl", "train", columns))
    records, rejects = split(items)
    assert len(records) == 1 and records[0].label == 0
    assert rejects[0].reason.startswith("invalid JSON")
    assert "must be an object" in rejects[1].reason
    assert rejects[2].reason == "missing field 's'"


def test_hf_rows_integer_labels():
    rows = [{"sentence": "fine", "label": 1, "idx": 0}, {"sentence": "meh", "label": -1, "idx": 1}]
    records, rejects = split(read_rows(rows, get_task("sst2"), "glue", "train", {"sentence": "sentence", "label": "label"}))
    assert records[0].label == 1 and records[0].source_id == "train-000000"
    assert len(rejects) == 1 and rejects[0].location == "glue#1"


def test_squad_answers_checked_unanswerable_kept_and_bad_rejected(task_files):
    data = open(task_files["squad"], "rb").read()
    records, rejects = split(read_squad(data, "s.json"))
    assert [r.source_id for r in records] == ["q1", "q2", "q3"]
    q1, q2, q3 = records
    assert q1.qa.answers == (Answer("Edinburgh", 0), Answer("Edinburgh", 0)) and not q1.qa.is_impossible
    assert q2.qa.answers == (Answer("every August", 71),)
    assert q3.qa.is_impossible and q3.qa.answers == ()
    assert q3.fields["question"] == "Who founded the festival?" and q1.qa.title == "Edinburgh"
    (bad,) = rejects
    assert "answer 'Glasgow' is not at answer_start 5" in bad.reason
    assert bad.location == "s.json#data[0].paragraphs[0].qas[3]"
    assert json.loads(bad.to_json())["record"]["id"] == "q4"


def test_squad_duplicate_ids_contradictions_and_invalid_json():
    squad = {"data": [{"title": "T", "paragraphs": [{"context": "abc def", "qas": [
        {"id": "a", "question": "x?", "answers": [{"text": "abc", "answer_start": 0}]},
        {"id": "a", "question": "y?", "answers": [{"text": "def", "answer_start": 4}]},
        {"id": "b", "question": "z?", "answers": []},
        {"id": "c", "question": "w?", "is_impossible": True, "answers": [{"text": "abc", "answer_start": 0}]},
    ]}]}]}
    records, rejects = split(read_squad(json.dumps(squad).encode(), "s.json"))
    assert [r.source_id for r in records] == ["a"]
    assert [r.reason for r in rejects] == ["duplicate question id 'a'", "answerable question without answers",
                                           "unanswerable question with answers"]
    (reject,) = read_squad(b"{not json", "bad.json")
    assert reject.reason.startswith("not a SQuAD JSON file")


def test_hf_squad_rows():
    rows = [{"id": "x", "title": "T", "context": "abc def", "question": "q?",
             "answers": {"text": ["def"], "answer_start": [4]}},
            {"id": "y", "title": "T", "context": "abc def", "question": "q?",
             "answers": {"text": [], "answer_start": []}}]
    records, rejects = split(read_rows(rows, get_task("squad"), "squad_v2", "train", {}))
    assert not rejects
    assert records[0].qa.answers == (Answer("def", 4),) and records[1].qa.is_impossible


def test_every_record_is_read_once(task_files):
    """read = accepted + rejected: one item per data line."""
    items = list(read_tsv(open(task_files["qnli"], "rb"), get_task("qnli"), "q", "dev"))
    assert len(items) == 3

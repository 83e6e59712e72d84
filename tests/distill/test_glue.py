"""GLUE dev files for evaluation, read by the corpus builder's reader; one corpus format for all."""
import pytest

from distill.glue import read_tsv
from distill.shards import CorpusError, ShardWriter, text_schema
from pipelines.tasks import get_task


def test_rows_and_label_ids(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_bytes("\ufeffindex\tquestion\tsentence\tlabel\n0\tWho?\tHim .\tnot_entailment\n1\tWhat?\tIt .\tentailment\n"
                     .encode("utf-8"))
    rows = read_tsv(str(path), get_task("qnli"))
    assert rows == [{"question": "Who?", "sentence": "Him .", "label": 1},
                    {"question": "What?", "sentence": "It .", "label": 0}]


@pytest.mark.parametrize("body, message", [
    ("sentence\tlabel\ngood film\t1\nbad row\n", r"dev.tsv:3: expected 2 tab-separated columns, got 1"),
    ("sentence\tlabel\ngood film\t7\n", r"dev.tsv:2: .*7"),
    ("sentence\tlabel\n", "no rows"),
])
def test_bad_rows_name_the_line(tmp_path, body, message):
    path = tmp_path / "dev.tsv"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(CorpusError, match=message):
        read_tsv(str(path), get_task("sst2"))


def test_text_shards_are_a_corpus_the_builder_can_load(tmp_path):
    from pipelines.manifest import load_corpus

    with ShardWriter(str(tmp_path), text_schema(), 2, {"task": "text", "text_fields": ["text"]}) as w:
        for i in range(5):
            w.write({"id": f"t{i}", "text": f"line {i}"})
    ds = load_corpus(str(tmp_path))
    assert ds["text"] == [f"line {i}" for i in range(5)]
    assert not list(tmp_path.glob("*.tmp"))

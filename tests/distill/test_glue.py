"""GLUE dev files for evaluation, read by the corpus builder's reader; one corpus format for all."""
import pytest

from distill.data.glue import read_tsv
from distill.data.shards import CorpusError, ShardWriter, text_schema
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


def _corpus_rows(root) -> list[dict]:
    from distill.data.stream import open_corpus

    corpus = open_corpus(str(root), get_task("sst2"))
    corpus.columns = ["id", "source_id", "aug_index", "sentence", "label"]
    return sorted(corpus.stream(shuffle=False).iter_epoch(0), key=lambda r: r["id"])


def test_a_training_tsv_as_a_corpus_equals_the_builders_without_variants(tmp_path):
    """``tsv_corpus`` writes what ``pipelines/augment.py --n-aug 0`` writes (rows, ids, schema), and
    the rows ``read_tsv`` reads, in order."""
    import pyarrow as pa

    from distill.data.glue import tsv_corpus
    from distill.data.shards import read_manifest
    from pipelines.corpus import run
    from tests.pipelines.conftest import SST2_TSV
    from tests.pipelines.fakes import FakeLoader
    from tests.pipelines.helpers import cli_args, write_fake_models

    tsv = tmp_path / "train.tsv"
    tsv.write_text(SST2_TSV, encoding="utf-8")
    built = tmp_path / "built"
    run(cli_args("sst2", str(tsv), built, write_fake_models(tmp_path), "--n-aug", "0"), loader=FakeLoader(0))

    ours = tsv_corpus(str(tsv), str(tmp_path / "ours"), get_task("sst2"), rows_per_shard=2)
    rows = _corpus_rows(ours)
    assert rows == _corpus_rows(built) and len(rows) == 5
    assert rows[0] == {"id": "train-000000-0", "source_id": "train-000000", "aug_index": 0,
                       "sentence": "a gripping , funny film ", "label": 1}
    assert [{"sentence": r["sentence"], "label": r["label"]} for r in rows] == read_tsv(str(tsv), get_task("sst2"))
    m = read_manifest(ours)
    assert list(m.rows) == [2, 2, 1]
    schemas = [pa.ipc.open_stream(open(p, "rb")).schema for p in (m.paths()[0], read_manifest(str(built)).paths()[0])]
    assert schemas[0].equals(schemas[1], check_metadata=True)


def test_a_bad_training_row_names_its_line(tmp_path):
    from distill.data.glue import tsv_corpus

    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\ngood film\t1\nbad row\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"train.tsv:3: expected 2 tab-separated columns"):
        tsv_corpus(str(path), str(tmp_path / "out"), get_task("sst2"))
    assert not (tmp_path / "out" / "manifest.json").exists()

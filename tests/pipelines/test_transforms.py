"""TestPipeline tests of the Beam transforms, with the fake augmenter."""
import json

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.augmentation import augment_records
from pipelines.manifest import CorpusError, read_manifest
from pipelines.readers import read_tsv
from pipelines.records import Batch, InputSpec, Record, Reject, Tally
from pipelines.shards import read_shard
from pipelines.tasks import get_task
from pipelines.transforms import Augment, ReadTask, WriteCorpus, WriteManifest, write_manifest_file
from tests.pipelines.fakes import FakeAugmenter, FakeLoader

QNLI = get_task("qnli")


def qnli_records(path):
    return [r for r in read_tsv(open(path, "rb"), QNLI, path, "dev") if isinstance(r, Record)]


def locations(batch: Batch) -> tuple:
    return batch.input, batch.total, tuple(item.location for item in batch.items)


@pytest.mark.parametrize("splits", [1, 2, 5])
def test_read_task_batches_every_item_once_whatever_the_splits(splits, tmp_path, task_files):
    bad = tmp_path / "bad.tsv"
    bad.write_text("index\tquestion\tsentence\tlabel\n0\tWhy?\tBecause.\n1\tHow?\tSo.\tentailment\n")
    dev = task_files["qnli"]
    inputs = [InputSpec(dev, "tsv", "dev"), InputSpec(str(bad), "tsv", "bad")]
    with test_pipeline.TestPipeline() as p:
        batches = p | "ReadTask" >> ReadTask(QNLI, inputs, batch_size=2, splits=splits)
        # Chunks of 2 consecutive items (a reject counts), each input's total on every batch.
        assert_that(batches | beam.Map(locations), equal_to([
            (0, 3, (f"{dev}:2", f"{dev}:3")), (0, 3, (f"{dev}:4",)), (1, 2, (f"{bad}:2", f"{bad}:3"))]))


def test_read_task_keeps_records_and_rejects_as_read(tmp_path, task_files):
    bad = tmp_path / "bad.tsv"
    bad.write_text("index\tquestion\tsentence\tlabel\n0\tWhy?\tBecause.\n1\tHow?\tSo.\tentailment\n")
    with test_pipeline.TestPipeline() as p:
        batches = p | ReadTask(QNLI, [InputSpec(str(bad), "tsv", "bad")], batch_size=8)
        assert_that(batches | beam.FlatMap(lambda b: [(type(i).__name__, i.location) for i in b.items]),
                    equal_to([("Reject", f"{bad}:2"), ("Record", f"{bad}:3")]))


def test_read_task_max_records_per_input(task_files):
    with test_pipeline.TestPipeline() as p:
        batches = p | ReadTask(QNLI, [InputSpec(task_files["qnli"], "tsv", "dev")], max_records=2, batch_size=1)
        assert_that(batches | beam.Map(lambda b: (b.total, b.items[0].source_id)),
                    equal_to([(2, "dev-000000"), (2, "dev-000001")]))


def test_read_task_refuses_zero_splits():
    with pytest.raises(ValueError, match="splits must be >= 1, got 0"):
        ReadTask(QNLI, [], splits=0)


def kind(item) -> str:
    return type(item).__name__


def test_augment_matches_the_engine_alone_and_tallies_each_batch(task_files):
    records = qnli_records(task_files["qnli"])
    early = Reject("dev.tsv:9", "bad label")
    expected = augment_records(FakeAugmenter(), records, QNLI).rows
    batches = [Batch(0, 4, (records[0], early)), Batch(0, 4, tuple(records[1:]))]
    with test_pipeline.TestPipeline() as p:
        out = p | beam.Create(batches) | "Augment" >> Augment(FakeLoader(), QNLI)
        rows = out | "Rows" >> beam.Filter(lambda x: isinstance(x, dict))
        assert_that(rows | beam.Map(lambda r: tuple(sorted(r.items()))),
                    equal_to([tuple(sorted(r.items())) for r in expected]), label="RowsAsEngine")
        assert_that(out | "Rejects" >> beam.Filter(lambda x: isinstance(x, Reject)), equal_to([early]),
                    label="ReadRejectPassesThrough")
        tallies = out | "Tallies" >> beam.Filter(lambda x: isinstance(x, Tally))
        # The fake's stats count every text it is given as one MLM row.
        assert_that(tallies | beam.Map(lambda t: (t.read, t.texts, t.mlm_rows)),
                    equal_to([(2, 2, 2), (2, 4, 4)]), label="OneTallyPerBatch")


def test_augment_rejects_what_the_engine_cannot_handle():
    spec = get_task("sst2")
    records = (Record("t-0", "t:1", {"sentence": "good"}, 1), Record("t-1", "t:2", {"sentence": "EXPLODE"}, 0))
    with test_pipeline.TestPipeline() as p:
        out = p | beam.Create([Batch(0, 2, records)]) | Augment(FakeLoader(), spec)
        assert_that(out | "Rows" >> beam.Filter(lambda x: isinstance(x, dict)) | beam.Map(lambda r: r["source_id"])
                    | beam.Distinct(), equal_to(["t-0"]), label="Rows")
        assert_that(out | "Rejects" >> beam.Filter(lambda x: isinstance(x, Reject))
                    | beam.Map(lambda r: (r.location, r.stage)), equal_to([("t:2", "augment")]), label="Rejects")


def test_write_corpus_writes_every_shard_and_the_dead_letters(tmp_path, task_files):
    records = qnli_records(task_files["qnli"])
    rows = augment_records(FakeAugmenter(), records, QNLI).rows
    rejects = [Reject("x.tsv:10", "late"), Reject("x.tsv:9", "early")]
    out = str(tmp_path / "out")
    with test_pipeline.TestPipeline() as p:
        summaries = (p | beam.Create(rows + rejects + [Tally(read=5, texts=6)])
                     | WriteCorpus(out, QNLI, num_shards=4))
        assert_that(summaries | beam.Map(lambda s: s if isinstance(s, Tally) else s["file"]),
                    equal_to([f"shard-0000{i}-of-00004.arrow" for i in range(4)]
                             + ["dead-letter.jsonl", Tally(read=5, texts=6)]))
    written = [row for i in range(4) for row in read_shard(f"{out}/shard-0000{i}-of-00004.arrow").to_pylist()]
    assert sorted(written, key=lambda r: r["id"]) == sorted(rows, key=lambda r: r["id"])
    letters = (tmp_path / "out" / "dead-letter.jsonl").read_text().splitlines()
    assert [json.loads(x)["location"] for x in letters] == ["x.tsv:9", "x.tsv:10"]  # natural order


def test_write_corpus_writes_empty_files_too(tmp_path):
    out = tmp_path / "out"
    with test_pipeline.TestPipeline() as p:
        summaries = p | beam.Create([Tally()]) | WriteCorpus(str(out), get_task("sst2"), num_shards=2)
        assert_that(summaries | beam.Filter(lambda s: isinstance(s, dict)), equal_to([
            {"file": "shard-00000-of-00002.arrow", "rows": 0, "originals": 0, "variants": 0},
            {"file": "shard-00001-of-00002.arrow", "rows": 0, "originals": 0, "variants": 0},
            {"file": "dead-letter.jsonl", "rejected": 0}]))
    assert (out / "dead-letter.jsonl").read_text() == ""
    assert read_shard(str(out / "shard-00001-of-00002.arrow")).num_rows == 0


SUMMARIES = [{"file": "shard-00000-of-00002.arrow", "rows": 3, "originals": 1, "variants": 2},
             {"file": "shard-00001-of-00002.arrow", "rows": 2, "originals": 2, "variants": 0},
             {"file": "dead-letter.jsonl", "rejected": 1}, Tally(read=3, texts=2, mlm_rows=5), Tally(read=1, texts=1)]
STATIC = {"format": "bert-compress-augmented-corpus", "format_version": 1, "fingerprint": "f"}


def test_write_manifest_counts_from_the_summaries(tmp_path):
    with test_pipeline.TestPipeline() as p:
        _ = p | beam.Create(SUMMARIES) | WriteManifest(str(tmp_path), STATIC)
    manifest = read_manifest(str(tmp_path))
    assert manifest["counts"] == {"read": 4, "rejected": 1, "accepted": 3, "originals": 3, "variants": 2, "rows": 5}
    assert manifest["engine"] == {"texts": 3, "mlm_rows": 5, "glove_cache_hits": 0, "glove_cache_misses": 0}
    assert manifest["shards"] == [{"file": "shard-00000-of-00002.arrow", "rows": 3},
                                  {"file": "shard-00001-of-00002.arrow", "rows": 2}]


def test_write_manifest_refuses_repeated_or_missing_files(tmp_path):
    with pytest.raises(CorpusError, match="2 summaries of dead-letter.jsonl"):
        write_manifest_file((0, SUMMARIES + [SUMMARIES[2]]), str(tmp_path), STATIC)
    with pytest.raises(CorpusError, match="0 summaries of dead-letter.jsonl"):
        write_manifest_file((0, SUMMARIES[:2] + SUMMARIES[3:]), str(tmp_path), STATIC)
    with pytest.raises(CorpusError, match="summarised more than once"):
        write_manifest_file((0, SUMMARIES + [SUMMARIES[0]]), str(tmp_path), STATIC)
    assert read_manifest(str(tmp_path)) is None

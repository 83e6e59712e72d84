"""TestPipeline tests of the Beam transforms, with the fake augmenter."""
import apache_beam as beam
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.augmentation import augment_records
from pipelines.readers import read_tsv
from pipelines.records import InputSpec, Record
from pipelines.shards import read_shard
from pipelines.tasks import get_task
from pipelines.transforms import Augment, ReadTask, WriteDeadLetters, WriteShards
from tests.pipelines.fakes import FakeAugmenter, FakeLoader

QNLI = get_task("qnli")


def qnli_records(path):
    return [r for r in read_tsv(open(path, "rb"), QNLI, path, "dev") if isinstance(r, Record)]


def test_read_task_splits_records_and_rejects(tmp_path, task_files):
    bad = tmp_path / "bad.tsv"
    bad.write_text("index\tquestion\tsentence\tlabel\n0\tWhy?\tBecause.\n1\tHow?\tSo.\tentailment\n")
    inputs = [InputSpec(task_files["qnli"], "tsv", "dev"), InputSpec(str(bad), "tsv", "bad")]
    with test_pipeline.TestPipeline() as p:
        records, rejects = p | "ReadTask" >> ReadTask(QNLI, inputs)
        assert_that(records | beam.Map(lambda r: r.source_id),
                    equal_to(["dev-000000", "dev-000001", "dev-000002", "bad-000001"]), label="Records")
        assert_that(rejects | beam.Map(lambda r: (r.location, r.reason)),
                    equal_to([(f"{bad}:2", "expected 4 tab-separated columns, got 3")]), label="Rejects")


def test_read_task_max_records_per_input(task_files):
    with test_pipeline.TestPipeline() as p:
        records, _ = p | ReadTask(QNLI, [InputSpec(task_files["qnli"], "tsv", "dev")], max_records=2)
        assert_that(records | beam.Map(lambda r: r.source_id), equal_to(["dev-000000", "dev-000001"]))


def test_augment_matches_the_engine_alone(task_files):
    records = qnli_records(task_files["qnli"])
    expected = augment_records(FakeAugmenter(), records, QNLI).rows
    with test_pipeline.TestPipeline() as p:
        rows, rejects = p | beam.Create(records) | "Augment" >> Augment(FakeLoader(), QNLI, max_batch=2)
        assert_that(rows | beam.Map(lambda r: tuple(sorted(r.items()))),
                    equal_to([tuple(sorted(r.items())) for r in expected]), label="Rows")
        assert_that(rejects, equal_to([]), label="NoRejects")


def test_augment_rejects_what_the_engine_cannot_handle():
    spec = get_task("sst2")
    records = [Record("t-0", "t:1", {"sentence": "good"}, 1), Record("t-1", "t:2", {"sentence": "EXPLODE"}, 0)]
    with test_pipeline.TestPipeline() as p:
        rows, rejects = p | beam.Create(records) | Augment(FakeLoader(), spec, max_batch=8)
        assert_that(rows | beam.Map(lambda r: r["source_id"]) | beam.Distinct(), equal_to(["t-0"]), label="Rows")
        assert_that(rejects | beam.Map(lambda r: r.location), equal_to(["t:2"]), label="Rejects")


def test_write_shards_and_dead_letters(tmp_path, task_files):
    records = qnli_records(task_files["qnli"])
    rows = augment_records(FakeAugmenter(), records, QNLI).rows
    out = str(tmp_path / "out")
    with test_pipeline.TestPipeline() as p:
        summaries = p | "Rows" >> beam.Create(rows) | WriteShards(out, QNLI, num_shards=4)
        assert_that(summaries | beam.Map(lambda s: s["file"]),
                    equal_to([f"shard-0000{i}-of-00004.arrow" for i in range(4)]), label="AllShards")
        count = p | "NoRejects" >> beam.Create([]) | WriteDeadLetters(out)
        assert_that(count, equal_to([0]), label="DeadLetters")
    written = [row for i in range(4) for row in read_shard(f"{out}/shard-0000{i}-of-00004.arrow").to_pylist()]
    assert sorted(written, key=lambda r: r["id"]) == sorted(rows, key=lambda r: r["id"])
    assert (tmp_path / "out" / "dead-letter.jsonl").read_text() == ""

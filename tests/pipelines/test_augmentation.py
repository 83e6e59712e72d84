from pipelines.augmentation import augment_records
from pipelines.readers import read_squad, read_tsv
from pipelines.records import Record
from pipelines.tasks import get_task
from tests.pipelines.fakes import FakeAugmenter


def records_of(items):
    return [r for r in items if isinstance(r, Record)]


def test_pair_records_augment_each_field_alone(task_files):
    spec = get_task("qnli")
    records = records_of(read_tsv(open(task_files["qnli"], "rb"), spec, "q", "dev"))
    result = augment_records(FakeAugmenter(n_aug=3), records, spec)
    assert not result.rejects and result.texts == 2 * len(records)
    for record in records:
        rows = [r for r in result.rows if r["source_id"] == record.source_id]
        assert rows[0]["aug_index"] == 0 and rows[0]["question"] == record.fields["question"]
        assert [r["aug_index"] for r in rows] == list(range(len(rows)))
        for row in rows[1:]:
            changed = [f for f in spec.text_fields if row[f] != record.fields[f]]
            assert len(changed) == 1, row  # exactly one field varies, the other is the original
            assert row["label"] == record.label
    assert result.variants == len(result.rows) - len(records) > 0


def test_variants_do_not_depend_on_the_batch(task_files):
    spec = get_task("qnli")
    records = records_of(read_tsv(open(task_files["qnli"], "rb"), spec, "q", "dev"))
    together = augment_records(FakeAugmenter(), records, spec).rows
    alone = [row for r in records for row in augment_records(FakeAugmenter(), [r], spec).rows]
    assert together == alone


def test_a_record_that_breaks_the_engine_is_rejected_alone():
    spec = get_task("sst2")
    records = [Record("t-0", "t:1", {"sentence": "fine film"}, 1),
               Record("t-1", "t:2", {"sentence": "EXPLODE now"}, 0),
               Record("t-2", "t:3", {"sentence": "bad film"}, 0)]
    result = augment_records(FakeAugmenter(), records, spec)
    assert {r["source_id"] for r in result.rows} == {"t-0", "t-2"}
    (reject,) = result.rejects
    assert reject.location == "t:2" and "augmenter failed" in reject.reason and reject.stage == "augment"


def test_squad_context_variants_keep_every_answer_in_place(task_files):
    spec = get_task("squad")
    records = records_of(read_squad(open(task_files["squad"], "rb").read(), "s"))
    result = augment_records(FakeAugmenter(n_aug=4), records, spec, augment_context=True)
    assert not result.rejects
    contexts = {r["context"] for r in result.rows}
    assert len(contexts) > 1  # some contexts were augmented
    for row in result.rows:
        record = next(r for r in records if r.source_id == row["source_id"])
        assert row["is_impossible"] == record.qa.is_impossible
        assert row["answers"]["text"] == [a.text for a in record.qa.answers]
        for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"]):
            assert row["context"][start:start + len(text)] == text
        assert row["question"] == record.fields["question"] or row["context"] == record.fields["context"]
    impossible = [r for r in result.rows if r["source_id"] == "q3"]
    assert all(r["answers"] == {"text": [], "answer_start": []} for r in impossible)

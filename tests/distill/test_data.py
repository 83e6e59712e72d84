import json
import os
from collections import Counter

import pyarrow as pa
import pytest
import torch

from distill.data.stream import (Collator, buffered_positions, consumer_pieces, length_grouped, loader, make_chunks,
                          open_corpus, skipped_batches, text_length)
from distill.data.shards import CorpusError, read_manifest
from pipelines.tasks import get_task
from tests.distill.conftest import tiny_tokenizer, write_task_corpus, write_text_corpus

SST2 = get_task("sst2")


def _ids(rows):
    return [r["id"] for r in rows]


def test_chunks_and_pieces_tile_the_epoch():
    chunks = make_chunks([25, 0, 7], 10)
    assert chunks == [(0, 0, 10), (0, 10, 20), (0, 20, 25), (2, 0, 7)]
    for n_consumers in (1, 2, 3, 5, 32):
        covered = []
        sizes = []
        for c in range(n_consumers):
            pieces = consumer_pieces(chunks, c, n_consumers)
            rows = [(s, i) for s, a, b in pieces for i in range(a, b)]
            covered += rows
            sizes.append(len(rows))
        assert sorted(covered) == sorted((s, i) for s, a, b in chunks for i in range(a, b))
        assert max(sizes) - min(sizes) <= 1


def test_buffered_positions_is_a_permutation_and_mixes():
    import numpy as np

    out = list(buffered_positions(1000, 64, np.random.default_rng(0)))
    assert sorted(out) == list(range(1000)) and out != list(range(1000))
    assert list(buffered_positions(10, 0, np.random.default_rng(0))) == list(range(10))


def test_dataset_from_file_loads_our_shards(sst2_corpus):
    from datasets import Dataset

    m = read_manifest(str(sst2_corpus))
    ds = Dataset.from_file(m.paths()[0])
    assert len(ds) == m.rows[0] and set(ds.column_names) >= {"id", "source_id", "aug_index", "sentence", "label"}


def test_an_epoch_is_a_shuffled_permutation_that_changes_per_epoch(sst2_corpus):
    corpus = open_corpus(str(sst2_corpus), SST2)
    stream = corpus.stream(seed=3, buffer_size=16, chunk_rows=10)
    e0, e1 = _ids(stream.iter_epoch(0)), _ids(stream.iter_epoch(1))
    assert len(e0) == corpus.total == 120 and len(set(e0)) == 120
    assert sorted(e0) == sorted(e1) and e0 != e1
    assert _ids(corpus.stream(seed=3, buffer_size=16, chunk_rows=10).iter_epoch(0)) == e0  # deterministic
    # shards are mixed: the first 25 rows do not all come from one shard
    assert len({int(i[1:].split("-")[0]) // 9 for i in e0[:25]}) > 1


def test_ranks_and_workers_split_without_loss_or_repeat(sst2_corpus):
    corpus = open_corpus(str(sst2_corpus), SST2)
    seen = []
    for rank in range(2):
        stream = corpus.stream(seed=1, buffer_size=8, chunk_rows=10, rank=rank, world_size=2)
        batches = iter(loader(stream, Collator(tiny_tokenizer(), ["sentence"]), batch_size=1, num_workers=2))
        # 120 rows / (2 ranks x 2 workers) = 30 per worker, 60 per rank; keep ids via the collator's labels
        for _ in range(60):
            seen.append(next(batches))
    assert len(seen) == 120
    ids = Counter()
    stream = corpus.stream(seed=1, buffer_size=8, chunk_rows=10)
    for rank in range(2):
        for worker in range(2):
            ids.update(_ids(stream.iter_epoch(0, rank * 2 + worker, 4)))
    assert len(ids) == 120 and set(ids.values()) == {1}


def test_workers_see_whole_rows_through_the_loader(sst2_corpus):
    corpus = open_corpus(str(sst2_corpus), SST2)
    got = []
    for rank in range(2):
        stream = corpus.stream(seed=1, buffer_size=8, chunk_rows=10, rank=rank, world_size=2)
        dl = torch.utils.data.DataLoader(stream, batch_size=5, num_workers=2, collate_fn=_ids)
        it = iter(dl)
        for _ in range(12):  # 60 rows per rank
            got += next(it)
    assert sorted(got) == sorted(_ids(corpus.stream(shuffle=False).iter_epoch(0)))


@pytest.mark.parametrize("workers, drawn, group", [(0, 7, 0), (2, 7, 0), (2, 30, 0),  # 30: into the next epoch
                                                   (0, 7, 3), (0, 9, 3), (2, 7, 3), (2, 30, 3)])  # 9: a pool's start
def test_resuming_the_stream_continues_exactly(sst2_corpus, workers, drawn, group):
    corpus = open_corpus(str(sst2_corpus), SST2)

    def batches(position, n):
        stream = corpus.stream(seed=5, buffer_size=8, chunk_rows=10, batch_size=4, group_by_length=group)
        stream.set_position(position)
        dl = torch.utils.data.DataLoader(stream, batch_size=4, num_workers=workers, collate_fn=_ids)
        it = iter(dl)
        return [next(it) for _ in range(n)]

    full = batches(0, drawn + 5)
    assert batches(drawn, 5) == full[drawn:]


def test_length_grouped_by_hand():
    import numpy as np

    rows = [{"id": f"r{i}", "sentence": "x" * n, "label": 0} for i, n in enumerate([3, 9, 1, 7, 5, 9, 2])]
    assert text_length({"id": "long id", "question": "ab", "context": "cde", "label": 1}) == 5
    got = _ids(length_grouped(rows, 2, np.random.default_rng(0)))
    # longest first, ties by position: r1 r5 | r3 r4 | r0 r6 | r2 (the remainder stays last)
    batches = {tuple(got[i:i + 2]) for i in range(0, 6, 2)}
    assert batches == {("r1", "r5"), ("r3", "r4"), ("r0", "r6")} and got[6] == "r2"
    orders = {tuple(_ids(length_grouped(rows, 2, np.random.default_rng(s)))) for s in range(20)}
    assert len(orders) > 1  # the batches' order is shuffled, their contents are not


def _padded_tokens(batches):
    return sum(len(b) * max(len(r["sentence"]) for r in b) for b in batches)


def test_group_by_length_permutes_each_epoch_and_cuts_padding(sst2_corpus):
    corpus = open_corpus(str(sst2_corpus), SST2)
    plain = corpus.stream(seed=3, buffer_size=16, chunk_rows=10, batch_size=4)
    grouped = corpus.stream(seed=3, buffer_size=16, chunk_rows=10, batch_size=4, group_by_length=5)
    for epoch in (0, 1):
        a, b = list(plain.iter_epoch(epoch)), list(grouped.iter_epoch(epoch))
        assert sorted(_ids(a)) == sorted(_ids(b)) and _ids(a) != _ids(b)
        # each pool of 20 rows holds the same rows as the plain order's, regrouped
        for p in range(0, 120, 20):
            assert sorted(_ids(a[p:p + 20])) == sorted(_ids(b[p:p + 20]))
            pool = b[p:p + 20]
            for q in range(0, 20, 4):  # every batch is a run of the pool's sorted lengths
                lengths = sorted((len(r["sentence"]) for r in pool), reverse=True)
                batch = sorted((len(r["sentence"]) for r in pool[q:q + 4]), reverse=True)
                assert any(lengths[k:k + 4] == batch for k in range(0, 20, 4))
        cut = lambda rows: [rows[i:i + 4] for i in range(0, 120, 4)]  # noqa: E731
        assert _padded_tokens(cut(b)) < _padded_tokens(cut(a))
    assert _ids(grouped.iter_epoch(0)) == _ids(
        corpus.stream(seed=3, buffer_size=16, chunk_rows=10, batch_size=4, group_by_length=5).iter_epoch(0))
    with pytest.raises(ValueError, match="group_by_length"):
        corpus.stream(group_by_length=-1)


def test_skipped_batches_round_robin():
    assert [skipped_batches(7, w, 3) for w in range(3)] == [3, 2, 2]
    assert [skipped_batches(0, w, 2) for w in range(2)] == [0, 0]


def test_original_only_selects_aug_index_zero(sst2_corpus):
    corpus = open_corpus(str(sst2_corpus), SST2, original_only=True)
    rows = list(corpus.stream(seed=0, chunk_rows=4, buffer_size=4).iter_epoch(0))
    assert corpus.total == 40 and sorted(_ids(rows)) == sorted(f"s{i}-0" for i in range(40))


def test_collator_pads_to_the_longest_row():
    c = Collator(tiny_tokenizer(), ["sentence"], max_length=8)
    batch = c([{"sentence": "a good film", "label": 1}, {"sentence": "the film is dull", "label": 0}])
    assert batch["input_ids"].shape == (2, 6)  # [CLS] 4 words [SEP]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [1] * 6]
    assert batch["labels"].tolist() == [1, 0]
    long = c([{"sentence": "a " * 20, "label": 1}])
    assert long["input_ids"].shape == (1, 8)  # truncated
    pair = Collator(tiny_tokenizer(), ["question", "sentence"], with_labels=False)([{"question": "a", "sentence": "the film"}])
    assert pair["token_type_ids"].tolist() == [[0, 0, 0, 1, 1, 1]] and "labels" not in pair
    reg = Collator(tiny_tokenizer(), ["sentence"], regression=True)([{"sentence": "a", "label": 3.5}])
    assert reg["labels"].dtype == torch.float32


def test_text_corpus_streams(text_corpus):
    corpus = open_corpus(str(text_corpus))
    assert corpus.columns == ["id", "text"] and corpus.total == 60
    assert len(list(corpus.stream(chunk_rows=7).iter_epoch(0))) == 60


def test_fsspec_paths(sst2_corpus):
    import fsspec

    fs = fsspec.filesystem("memory")
    for name in os.listdir(sst2_corpus):
        with open(os.path.join(sst2_corpus, name), "rb") as src, fs.open(f"/corpus/{name}", "wb") as dst:
            dst.write(src.read())
    corpus = open_corpus("memory://corpus", SST2)
    assert sorted(_ids(corpus.stream().iter_epoch(0))) == sorted(_ids(open_corpus(str(sst2_corpus), SST2).stream().iter_epoch(0)))


# ---- bad input is refused before training, naming the problem ------------------------------------


def test_missing_columns(tmp_path):
    schema = pa.schema([("id", pa.string()), ("source_id", pa.string()), ("aug_index", pa.int32()),
                        ("text", pa.string()), ("label", pa.int64())])
    root = tmp_path / "c"
    from distill.data.shards import ShardWriter

    with ShardWriter(str(root), schema, 10, {"task": "sst2", "text_fields": ["sentence"], "label_names": ["0", "1"]}) as w:
        w.write({"id": "a", "source_id": "a", "aug_index": 0, "text": "x", "label": 0})
    with pytest.raises(CorpusError, match=r"missing columns \['sentence'\]"):
        open_corpus(str(root), SST2)


def test_label_set_mismatch(tmp_path):
    root = write_task_corpus(tmp_path / "c", n_source=3, label_names=("neg", "pos", "neutral"))
    with pytest.raises(CorpusError, match="label set .* does not match task sst2"):
        open_corpus(str(root), SST2)


def test_wrong_task(tmp_path, sst2_corpus):
    with pytest.raises(CorpusError, match="corpus is for task 'sst2', not 'cola'"):
        open_corpus(str(sst2_corpus), get_task("cola"))
    with pytest.raises(CorpusError, match="corpus is for task 'text'"):
        open_corpus(str(write_text_corpus(tmp_path / "t", n=3)), SST2)


def test_labels_out_of_range(tmp_path):
    root = write_task_corpus(tmp_path / "c", n_source=3)
    m = json.loads((root / "manifest.json").read_text())
    # rewrite shard 0 with a label 2
    from distill.data.shards import open_table, task_schema
    import pyarrow.ipc as ipc

    path = root / m["shards"][0]["file"]
    table = open_table(str(path)).to_pylist()
    table[0]["label"] = 2
    with pa.OSFile(str(path) + ".new", "wb") as sink, ipc.new_stream(sink, task_schema(["sentence"])) as w:
        w.write_table(pa.Table.from_pylist(table, schema=task_schema(["sentence"])))
    os.replace(str(path) + ".new", path)
    with pytest.raises(CorpusError, match="labels span 0..2, task sst2 has 2 classes"):
        open_corpus(str(root), SST2)


def test_empty_corpus_and_row_count_mismatch(tmp_path):
    root = write_task_corpus(tmp_path / "c", n_source=0)
    with pytest.raises(CorpusError, match="empty"):
        open_corpus(str(root), SST2)
    root = write_task_corpus(tmp_path / "d", n_source=2, n_aug=1)
    m = json.loads((root / "manifest.json").read_text())
    m["shards"][0]["rows"] = 99
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CorpusError, match="4 rows but the manifest says 99"):
        open_corpus(str(root), SST2)
    with pytest.raises(CorpusError, match="no manifest.json"):
        open_corpus(str(tmp_path), SST2)


def test_regression_corpus_needs_float_labels(tmp_path):
    root = write_task_corpus(tmp_path / "s", n_source=2, task="stsb", fields=("sentence1", "sentence2"), label_names=None)
    assert open_corpus(str(root), get_task("stsb")).total == 6
    bad = write_task_corpus(tmp_path / "b", n_source=2, fields=("sentence1", "sentence2"), task="stsb", label_names=None,
                            schema=pa.schema([("id", pa.string()), ("source_id", pa.string()), ("aug_index", pa.int32()),
                                              ("sentence1", pa.string()), ("sentence2", pa.string()), ("label", pa.int64())]))
    with pytest.raises(CorpusError, match="expected float"):
        open_corpus(str(bad), get_task("stsb"))


def test_shard_text_command(tmp_path):
    from click.testing import CliRunner

    from distill.cli import main

    src = tmp_path / "wiki.txt"
    src.write_text(" = Heading = \n\n the film was good and the music was sweet . \n short \n"
                   + " another line of text that is long enough .\n" * 5, encoding="utf-8")
    out = tmp_path / "shards"
    result = CliRunner().invoke(main, ["shard-text", "--output", str(out), "--rows-per-shard", "4", str(src)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"output": str(out), "rows": 6, "shards": 2}
    corpus = open_corpus(str(out))
    rows = list(corpus.stream(shuffle=False).iter_epoch(0))
    assert rows[0] == {"id": "wiki.txt:3", "text": "the film was good and the music was sweet ."}
    assert sorted(os.listdir(out)) == ["manifest.json", "shard-00000-of-00002.arrow", "shard-00001-of-00002.arrow"]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n = H = \n")
    result = CliRunner().invoke(main, ["shard-text", "--output", str(tmp_path / "e"), str(empty)])
    assert result.exit_code != 0 and "no text lines" in result.output

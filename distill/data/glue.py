"""Labelled rows of a GLUE TSV file: evaluation rows (``dev.tsv``, or a corpus directory), and a
training TSV written as a corpus of originals."""
from __future__ import annotations

import os

from pipelines.readers import read_tsv as read_tsv_records
from pipelines.records import Reject
from distill.data.shards import CorpusError


def _records(path: str, task, prefix: str) -> list:
    """The corpus builder's records of a labelled GLUE TSV; ``CorpusError`` on a bad row."""
    if task.tsv_columns is None and task.tsv_positions is None:
        raise CorpusError(f"{path}: task {task.name} has no TSV layout")
    with open(path, "rb") as f:
        records = list(read_tsv_records(f, task, source=path, prefix=prefix))
    for record in records:
        if isinstance(record, Reject):
            raise CorpusError(f"{record.location}: {record.reason}")
    if not records:
        raise CorpusError(f"{path}: no rows")
    return records


def read_tsv(path: str, task) -> list[dict]:
    """Rows ``{field: text, ..., "label": id}`` of a labelled GLUE TSV; ``CorpusError`` on a bad row.

    The file is parsed by the corpus builder's reader (:func:`pipelines.readers.read_tsv`), so
    training and evaluation read GLUE files alike (BOM, header or not, label names or ids); here a
    row it would send to the dead letters is an error naming the line.
    """
    return [{**record.fields, "label": record.label} for record in _records(path, task, "dev")]


def tsv_corpus(path: str, root: str, task, rows_per_shard: int = 100_000) -> str:
    """Write the rows of a labelled GLUE TSV (a training set) as a corpus of originals at ``root``
    (replaced if present): the rows, ids (``train-000123-0``) and schema the corpus builder writes
    for ``--n-aug 0``, without running the masked LM. ``CorpusError`` on a bad row. Returns ``root``.
    """
    import shutil

    from distill.data.shards import ShardWriter
    from pipelines.rows import build_rows, schema

    prefix = os.path.splitext(os.path.basename(path))[0]  # the builder's prefix: the file stem
    records = _records(path, task, prefix)
    shutil.rmtree(root, ignore_errors=True)
    manifest = {"task": task.name, "kind": task.kind, "text_fields": list(task.text_fields),
                "label_names": None if task.label_names is None else list(task.label_names),
                "inputs": [{"path": os.path.abspath(path)}], "counts": {"originals": len(records)}}
    with ShardWriter(root, schema(task), rows_per_shard, manifest) as w:
        for record in records:
            for row in build_rows(record, {}):
                w.write(row)
    return root


def read_eval_rows(path: str, task, split: str = "dev") -> list[dict]:
    """Evaluation rows from a TSV file, a GLUE task directory (``<dir>/<split>.tsv``) or a corpus
    directory (original rows only, in order)."""
    if os.path.isdir(path) and os.path.exists(os.path.join(path, f"{split}.tsv")):
        return read_tsv(os.path.join(path, f"{split}.tsv"), task)
    if os.path.isfile(path):
        return read_tsv(path, task)
    from distill.data.stream import open_corpus

    corpus = open_corpus(path, task, original_only=True)
    stream = corpus.stream(shuffle=False)
    return list(stream.iter_epoch(0))

"""Labelled evaluation rows from a GLUE TSV file (``dev.tsv``) or a corpus directory."""
from __future__ import annotations

import os

from pipelines.readers import read_tsv as read_tsv_records
from pipelines.records import Reject
from distill.shards import CorpusError


def read_tsv(path: str, task) -> list[dict]:
    """Rows ``{field: text, ..., "label": id}`` of a labelled GLUE TSV; ``CorpusError`` on a bad row.

    The file is parsed by the corpus builder's reader (:func:`pipelines.readers.read_tsv`), so
    training and evaluation read GLUE files alike (BOM, header or not, label names or ids); here a
    row it would send to the dead letters is an error naming the line.
    """
    if task.tsv_columns is None and task.tsv_positions is None:
        raise CorpusError(f"{path}: task {task.name} has no TSV layout")
    with open(path, "rb") as f:
        records = list(read_tsv_records(f, task, source=path, prefix="dev"))
    rows = []
    for record in records:
        if isinstance(record, Reject):
            raise CorpusError(f"{record.location}: {record.reason}")
        rows.append({**record.fields, "label": record.label})
    if not rows:
        raise CorpusError(f"{path}: no rows")
    return rows


def read_eval_rows(path: str, task, split: str = "dev") -> list[dict]:
    """Evaluation rows from a TSV file, a GLUE task directory (``<dir>/<split>.tsv``) or a corpus
    directory (original rows only, in order)."""
    if os.path.isdir(path) and os.path.exists(os.path.join(path, f"{split}.tsv")):
        return read_tsv(os.path.join(path, f"{split}.tsv"), task)
    if os.path.isfile(path):
        return read_tsv(path, task)
    from distill.data import open_corpus

    corpus = open_corpus(path, task, original_only=True)
    stream = corpus.stream(shuffle=False)
    return list(stream.iter_epoch(0))

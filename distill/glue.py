"""Labelled evaluation rows from a GLUE TSV file (``dev.tsv``) or a corpus directory.

GLUE TSVs are read without quote handling (their texts contain bare quotes), by the column names in
``TaskSpec.tsv_columns`` (files with a header) or ``tsv_positions`` (CoLA, no header).
"""
from __future__ import annotations

import csv
import os
import sys

from distill.shards import CorpusError


def parse_label(task, raw: str) -> int | float:
    """A TSV label -> a class id in ``task.label_names`` order, or a float score (regression)."""
    raw = raw.strip()
    if task.label_names is None:
        return float(raw)
    if raw in task.label_names:
        return task.label_names.index(raw)
    if raw.isdigit() and int(raw) < task.num_labels:
        return int(raw)
    raise CorpusError(f"label {raw!r} is not one of task {task.name}'s labels {list(task.label_names)}")


def read_tsv(path: str, task) -> list[dict]:
    """Rows ``{field: text, ..., "label": id}`` of a labelled GLUE TSV; ``CorpusError`` on a bad row."""
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8", newline="") as f:
        lines = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if task.tsv_positions is not None:
        positions, body, first = dict(task.tsv_positions), lines, 1
    else:
        if not lines or task.tsv_columns is None:
            raise CorpusError(f"{path}: empty file, or task {task.name} has no TSV layout")
        header = lines[0]
        missing = [c for c in task.tsv_columns.values() if c not in header]
        if missing:
            raise CorpusError(f"{path}: header {header} lacks columns {missing} for task {task.name}")
        positions = {field: header.index(col) for field, col in task.tsv_columns.items()}
        body, first = lines[1:], 2
    rows = []
    for n, cells in enumerate(body, start=first):
        if not cells:
            continue
        if len(cells) <= max(positions.values()):
            raise CorpusError(f"{path}:{n}: {len(cells)} columns, expected at least {max(positions.values()) + 1}")
        row = {f: cells[i] for f, i in positions.items() if f != "label"}
        try:
            row["label"] = parse_label(task, cells[positions["label"]])
        except (CorpusError, ValueError) as e:
            raise CorpusError(f"{path}:{n}: {e}") from None
        rows.append(row)
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

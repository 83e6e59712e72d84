"""Corpus rows: the shard schema and the rows of one augmented record (Beam-free).

Columns, in order: ``id`` (``{source_id}-{aug_index}``), ``source_id``, ``aug_index`` (int32,
0 = the original verbatim), the task's text fields (TaskSpec names), then ``label`` (int64 class id
in ``label_names`` order, as a ``datasets.ClassLabel``; float32 for STS-B). SQuAD instead has
``title``, ``question``, ``context``, ``answers`` {text: list<string>, answer_start: list<int32>}
and ``is_impossible`` (bool), the Hugging Face ``squad_v2`` layout plus ``is_impossible``.

Variants: each text field is augmented on its own; a variant row of one field keeps every other
field as in the original. ``aug_index`` numbers the rows of a record: 0, then the first field's
variants, then the second field's, ...
"""
from __future__ import annotations

from typing import Mapping, Sequence

import pyarrow as pa

from pipelines.records import Answer, Record
from pipelines.tasks import TaskSpec


def row_id(source_id: str, aug_index: int) -> str:
    return f"{source_id}-{aug_index}"


def features(spec: TaskSpec):
    """The ``datasets.Features`` of a task's rows (the label is a ``ClassLabel`` with its names)."""
    import datasets

    cols = {"id": datasets.Value("string"), "source_id": datasets.Value("string"),
            "aug_index": datasets.Value("int32")}
    if spec.kind == "qa":
        cols |= {"title": datasets.Value("string"), "question": datasets.Value("string"),
                 "context": datasets.Value("string"),
                 "answers": {"text": datasets.List(datasets.Value("string")),
                             "answer_start": datasets.List(datasets.Value("int32"))},
                 "is_impossible": datasets.Value("bool")}
    else:
        cols |= {f: datasets.Value("string") for f in spec.text_fields}
        cols["label"] = (datasets.Value("float32") if spec.label_names is None
                         else datasets.ClassLabel(names=list(spec.label_names)))
    return datasets.Features(cols)


def schema(spec: TaskSpec) -> pa.Schema:
    """The Arrow schema of a task's shards, with the ``datasets`` features in its metadata."""
    return features(spec).arrow_schema


def build_rows(record: Record, variants: Mapping[str, Sequence[str]],
               qa_contexts: Sequence[tuple[str, Sequence[Answer]]] = ()) -> list[dict]:
    """All rows of one record: the original, then each field's variants.

    Args:
        record: the accepted record.
        variants: text field -> its variant texts (the original excluded), in the order drawn.
            Fields are taken in the record's field order.
        qa_contexts: SQuAD only: (context, moved answers) of each context variant, written after
            the question variants.
    """
    rows = [_row(record, 0, record.fields, record.qa.answers if record.qa else ())]
    for name in record.fields:
        for text in variants.get(name, ()):
            rows.append(_row(record, len(rows), record.fields | {name: text},
                             record.qa.answers if record.qa else ()))
    for context, answers in qa_contexts:
        rows.append(_row(record, len(rows), record.fields | {"context": context}, answers))
    return rows


def _row(record: Record, aug_index: int, fields: Mapping[str, str], answers: Sequence[Answer]) -> dict:
    row = {"id": row_id(record.source_id, aug_index), "source_id": record.source_id, "aug_index": aug_index}
    if record.qa is None:
        return row | dict(fields) | {"label": record.label}
    return row | {"title": record.qa.title, "question": fields["question"], "context": fields["context"],
                  "answers": {"text": [a.text for a in answers], "answer_start": [a.start for a in answers]},
                  "is_impossible": record.qa.is_impossible}

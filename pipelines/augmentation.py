"""Augmenting a batch of records into corpus rows with the TinyBERT engine (Beam-free).

One :meth:`augment.Augmenter.augment_batch` call per batch of records: every text field of every
record is one text, seeded by the record's stable id (``source_id``; ``source_id/field`` when the
task has several fields), so a record's variants never depend on its batch or worker. SQuAD
questions are augmented as texts; with ``augment_context`` each context too, restricted to the
words outside the question's answers (see :mod:`pipelines.squad`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from augment.client import ServiceError
from pipelines.records import Record, Reject
from pipelines.rows import build_rows
from pipelines.squad import AlignmentError, replaceable_positions, splice_variant, word_spans
from pipelines.tasks import TaskSpec

log = logging.getLogger(__name__)


class Engine(Protocol):
    """What the corpus builder needs of :class:`augment.Augmenter` (fakes in tests provide it)."""

    def words(self, text: str) -> list[str]: ...

    def augment_batch(self, texts: Sequence[str], ids: Sequence[str] | None = None, positions=None) -> list: ...

    def stats(self) -> dict: ...


@dataclass
class _Job:
    record: int  # index in the batch
    field: str
    text: str
    example_id: str
    positions: list[int] | None = None
    spans: list[tuple[int, int]] | None = None
    words: list[str] | None = None


@dataclass
class BatchResult:
    """Rows and rejects of a batch, with the number of texts given to the engine."""

    rows: list[dict] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    texts: int = 0

    @property
    def variants(self) -> int:
        return sum(r["aug_index"] > 0 for r in self.rows)


def example_id(record: Record, field_name: str, spec: TaskSpec) -> str:
    """The engine's seed id of one text: the source id, plus the field when there are several."""
    return record.source_id if len(spec.text_fields) == 1 else f"{record.source_id}/{field_name}"


def augment_records(engine: Engine, records: Sequence[Record], spec: TaskSpec,
                    augment_context: bool = False) -> BatchResult:
    """All rows of ``records``; a record the engine fails on (alone) is rejected, not raised.

    Args:
        engine: an :class:`augment.Augmenter`, an :class:`augment.client.ServiceClient` (whose
            :class:`augment.client.ServiceError` is raised, not a reject), or a fake with the same methods.
        records: accepted records of ``spec``'s task.
        augment_context: SQuAD: also augment contexts outside the answers.
    """
    try:
        return _augment(engine, records, spec, augment_context)
    except ServiceError:  # the service, not the records, failed: fail the build (no manifest over missing rows)
        raise
    except Exception as e:  # isolate the record(s) that break the engine
        if len(records) == 1:
            log.warning("augmenter failed on %s: %r", records[0].location, e)
            return BatchResult(rejects=[Reject.of(records[0], f"augmenter failed: {e!r}")])
    out = BatchResult()
    for record in records:
        one = augment_records(engine, [record], spec, augment_context)
        out.rows += one.rows
        out.rejects += one.rejects
        out.texts += one.texts
    return out


def _augment(engine: Engine, records: Sequence[Record], spec: TaskSpec, augment_context: bool) -> BatchResult:
    jobs, failed = _plan(engine, records, spec, augment_context)
    restricted = any(j.positions is not None for j in jobs)
    augmented = engine.augment_batch([j.text for j in jobs], [j.example_id for j in jobs],
                                     positions=[j.positions for j in jobs] if restricted else None)
    variants: dict[int, dict[str, list[str]]] = {i: {} for i in range(len(records))}
    contexts: dict[int, list] = {}
    for job, aug in zip(jobs, augmented):
        if job.field != "context":
            variants[job.record][job.field] = aug.texts[1:]
            continue
        try:
            contexts[job.record] = _context_variants(records[job.record], job, aug)
        except ValueError as e:
            failed[job.record] = f"context augmentation failed: {e}"
    result = BatchResult(texts=len(jobs))
    for i, record in enumerate(records):
        if i in failed:
            result.rejects.append(Reject.of(record, failed[i]))
        else:
            result.rows += build_rows(record, variants[i], contexts.get(i, ()))
    return result


def _plan(engine: Engine, records: Sequence[Record], spec: TaskSpec,
          augment_context: bool) -> tuple[list[_Job], dict[int, str]]:
    """The engine's texts for a batch, and the records (by index) rejected before augmentation."""
    jobs, failed = [], {}
    aligned: dict[str, tuple[list[str], list[tuple[int, int]]] | str] = {}  # context -> words, spans
    for i, record in enumerate(records):
        if spec.kind != "qa":
            jobs += [_Job(i, f, record.fields[f], example_id(record, f, spec)) for f in spec.text_fields]
            continue
        if augment_context:
            context = record.fields["context"]
            if context not in aligned:  # the questions of a paragraph share their context
                words = engine.words(context)
                try:
                    aligned[context] = (words, word_spans(context, words))
                except AlignmentError as e:
                    aligned[context] = str(e)
            if isinstance(aligned[context], str):
                failed[i] = f"cannot align context words: {aligned[context]}"
                continue
            words, spans = aligned[context]
            jobs.append(_Job(i, "context", context, example_id(record, "context", spec),
                             replaceable_positions(spans, record.qa.answers), spans, words))
        jobs.append(_Job(i, "question", record.fields["question"], example_id(record, "question", spec)))
    return jobs, failed


def _context_variants(record: Record, job: _Job, aug) -> list:
    if list(aug.words) != list(job.words):
        raise ValueError("the engine split the context into other words than the tokenizer")
    return [splice_variant(job.text, job.spans, job.words, v, record.qa.answers) for v in aug.variant_words]

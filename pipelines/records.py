"""What flows through the corpus builder: accepted input records and rejected ones (Beam-free)."""
from __future__ import annotations

import json
from dataclasses import asdict, astuple, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Answer:
    """One SQuAD answer: ``context[start:start + len(text)] == text``."""

    text: str
    start: int


@dataclass(frozen=True)
class QAInfo:
    """The SQuAD part of a record: the article title, the answers, and whether there is none."""

    title: str
    answers: tuple[Answer, ...]
    is_impossible: bool


@dataclass(frozen=True)
class Record:
    """One accepted input record.

    Attributes:
        source_id: stable id of the record (``train-000123``: file stem + record index; SQuAD: the
            question id); the seed of its augmentation and the prefix of its rows' ids.
        location: where it came from (``path:line`` or ``path#record``), for error messages.
        fields: the task's text fields by TaskSpec name (``{"question": ..., "sentence": ...}``).
        label: the class id, the regression score, or ``None`` (SQuAD).
        qa: the SQuAD answers and title; ``None`` for other tasks.
    """

    source_id: str
    location: str
    fields: dict[str, str]
    label: int | float | None = None
    qa: QAInfo | None = None


@dataclass(frozen=True)
class Reject:
    """A record that did not make it into the corpus, with the reason; one dead-letter line."""

    location: str
    reason: str
    record: Any = None
    stage: str = "read"  # read | augment

    def to_json(self) -> str:
        """One JSON line (keys sorted, non-ASCII kept; odd values by ``repr``) for the dead-letter file."""
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True, default=repr)

    @staticmethod
    def of(record: Record, reason: str, stage: str = "augment") -> "Reject":
        """The dead letter of a record that was read but failed later."""
        return Reject(record.location, reason, asdict(record), stage)


@dataclass
class InputSpec:
    """One input of a run, as the readers need it.

    Attributes:
        path: a file path or URL (``gs://``...), or a Hugging Face dataset name / local path.
        format: ``tsv``, ``csv``, ``jsonl``, ``squad`` or ``hf``.
        prefix: the ``source_id`` prefix of its records (the file stem, made unique per run);
            SQuAD ids are the question ids, prefixed (``prefix/id``) only when ``prefix`` is set.
        columns: task field -> input column (``label`` included; TSV: absent = the GLUE names).
        hf_config, split: for ``hf`` inputs.
    """

    path: str
    format: str
    prefix: str
    columns: dict[str, str] = field(default_factory=dict)
    hf_config: str | None = None
    split: str | None = None


@dataclass(frozen=True)
class Batch:
    """The corpus builder's unit of work: consecutive items of one input, in input order.

    Attributes:
        input: the input's index in the run (its position in ``--input``).
        total: how many items that input has in all (after ``--max-records``), for progress ETAs.
        items: the :class:`Record` and :class:`Reject` items, one per record read.
    """

    input: int
    total: int
    items: tuple = ()


@dataclass(frozen=True)
class Tally:
    """What the Augment step did with one batch; summed into the manifest.

    Computed from the data (not with runner metrics, which some runners never report), so every
    runner's manifest has the same counts. ``read`` is the batch's item count; the engine figures
    (``texts``, ``mlm_rows``, GloVe cache hits and misses) say how much work augmenting took.
    """

    read: int = 0
    texts: int = 0
    mlm_rows: int = 0
    glove_cache_hits: int = 0
    glove_cache_misses: int = 0

    def __add__(self, other: "Tally") -> "Tally":
        return Tally(*(a + b for a, b in zip(astuple(self), astuple(other))))

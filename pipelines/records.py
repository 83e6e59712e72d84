"""What flows through the corpus builder: accepted input records and rejected ones (Beam-free)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
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

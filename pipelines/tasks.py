"""Task definitions shared by the corpus builder and the distillation stages (Beam-free).

Field names and label orders follow the Hugging Face ``glue`` / ``squad_v2`` datasets, so a corpus
built from GLUE TSV files and one built from the Hub have the same columns and label ids.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass


@dataclass(frozen=True)
class TaskSpec:
    """One task.

    Attributes:
        name: canonical name (``sst2``); glue_dir: the GLUE directory name (``SST-2``).
        text_fields: the text columns, in model input order (1 or 2 of them).
        label_names: class names in label-id order; ``None`` for a regression task.
        metric: the GLUE metric used to pick checkpoints (``accuracy``, ``f1``, ``matthews``,
            ``pearson_spearman``; ``squad`` for QA).
        tsv_columns: the GLUE TSV column name of each field (``label`` included) when the file has a
            header; tsv_positions: column indices for header-less files (CoLA).
        tsv_layout: every column of the GLUE ``train.tsv``, in order: where a header-less file
            finds its fields, and the layout the authors' ``train_aug.tsv`` export reproduces.
    """

    name: str
    glue_dir: str
    text_fields: tuple[str, ...]
    label_names: tuple[str, ...] | None
    metric: str
    tsv_columns: dict[str, str] | None = None
    tsv_positions: dict[str, int] | None = None
    kind: str = "classification"  # classification | regression | qa
    tsv_layout: tuple[str, ...] | None = None

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def is_pair(self) -> bool:
        return len(self.text_fields) == 2

    def column_positions(self) -> dict[str, int]:
        """Field (``label`` included) -> column index in a header-less GLUE TSV file."""
        if self.tsv_positions is not None:
            return dict(self.tsv_positions)
        if self.tsv_columns is None or self.tsv_layout is None:
            raise ValueError(f"task {self.name!r} has no GLUE TSV layout")
        return {field: self.tsv_layout.index(column) for field, column in self.tsv_columns.items()}

    def parse_label(self, value) -> int | float:
        """A raw label (a class name, a class id, or a score) -> the stored label.

        Classification: the id in ``label_names`` order; a name is looked up first, then an int
        (or an int-valued string) in range is taken as the id. Regression: a float.
        Raises ``ValueError`` naming the value when it is missing or not a label of this task.
        """
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError("missing label")
        if self.kind == "qa":
            raise ValueError(f"task {self.name!r} has no label column")
        if self.label_names is None:
            try:
                score = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"label {value!r} is not a number") from None
            if score != score:  # NaN
                raise ValueError(f"label {value!r} is not a number")
            return score
        names = list(self.label_names)
        if isinstance(value, str):
            value = value.strip()
            if value in names:
                return names.index(value)
            idx = int(value) if value.isdecimal() else None
        elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
            idx = int(value)
        else:
            idx = None
        if idx is None or not 0 <= idx < len(names):
            raise ValueError(f"label {value!r} is neither one of {names} nor a class id below {len(names)}")
        return idx


def _glue(name, glue_dir, fields, labels, metric, columns=None, positions=None, kind="classification",
          layout=None):
    return TaskSpec(name, glue_dir, tuple(fields), None if labels is None else tuple(labels), metric,
                    columns, positions, kind, None if layout is None else tuple(layout))


TASKS: dict[str, TaskSpec] = {t.name: t for t in [
    # CoLA train/dev have no header: source, label, original label, sentence.
    _glue("cola", "CoLA", ["sentence"], ["0", "1"], "matthews", positions={"label": 1, "sentence": 3},
          layout=["source", "label", "original_label", "sentence"]),
    _glue("sst2", "SST-2", ["sentence"], ["0", "1"], "accuracy", {"sentence": "sentence", "label": "label"},
          layout=["sentence", "label"]),
    _glue("mrpc", "MRPC", ["sentence1", "sentence2"], ["0", "1"], "f1",
          {"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"},
          layout=["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]),
    _glue("qqp", "QQP", ["question1", "question2"], ["0", "1"], "f1",
          {"question1": "question1", "question2": "question2", "label": "is_duplicate"},
          layout=["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]),
    _glue("stsb", "STS-B", ["sentence1", "sentence2"], None, "pearson_spearman",
          {"sentence1": "sentence1", "sentence2": "sentence2", "label": "score"}, kind="regression",
          layout=["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1",
                  "sentence2", "score"]),
    _glue("mnli", "MNLI", ["premise", "hypothesis"], ["entailment", "neutral", "contradiction"], "accuracy",
          {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label"},
          layout=["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                  "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]),
    _glue("qnli", "QNLI", ["question", "sentence"], ["entailment", "not_entailment"], "accuracy",
          {"question": "question", "sentence": "sentence", "label": "label"},
          layout=["index", "question", "sentence", "label"]),
    _glue("rte", "RTE", ["sentence1", "sentence2"], ["entailment", "not_entailment"], "accuracy",
          {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"},
          layout=["index", "sentence1", "sentence2", "label"]),
    _glue("wnli", "WNLI", ["sentence1", "sentence2"], ["0", "1"], "accuracy",
          {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"},
          layout=["index", "sentence1", "sentence2", "label"]),
    TaskSpec("squad", "squad", ("question", "context"), None, "squad", kind="qa"),
]}


def normalise_task_name(name: str) -> str:
    """'SST-2', 'sst_2', 'Sst2' -> 'sst2'; 'squad_v2', 'SQuAD2' -> 'squad'."""
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    if key.startswith("squad"):
        return "squad"
    return {"stsb": "stsb", "mnlimatched": "mnli", "mnlimismatched": "mnli"}.get(key, key)


def get_task(name: str) -> TaskSpec:
    """The task named ``name`` (case and punctuation ignored); ``ValueError`` naming the known tasks."""
    key = normalise_task_name(name)
    if key not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[key]

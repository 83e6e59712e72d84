"""Readers: task data files -> :class:`Record` or :class:`Reject`, one per input record (Beam-free).

Every reader yields exactly one item per record it finds, so ``read = accepted + rejected`` holds by
construction; blank lines are not records. Readers take already-opened data (binary lines or bytes)
so they run the same on a local disk, ``gs://`` or ``s3://`` (the Beam side opens the files).

Formats:
    tsv: GLUE ``train.tsv``/``dev.tsv`` of any GLUE task: header or not (CoLA has none), byte-order
        mark, no quoting (GLUE files are read with ``quotechar=None``), fixed column count.
    csv: comma-separated with a header row; jsonl: one JSON object per line.
    squad: a SQuAD 1.1 / 2.0 JSON file. hf: rows of a ``datasets.Dataset``.
"""
from __future__ import annotations

import csv
import json
from typing import Any, Iterable, Iterator, Mapping

from pipelines.records import Answer, InputSpec, QAInfo, Record, Reject
from pipelines.tasks import TaskSpec

BOM = b"\xef\xbb\xbf"
LABEL = "label"
SQUAD_FIELDS = ("id", "title", "context", "question", "answers")


def source_id(prefix: str, index: int) -> str:
    """The stable id of record ``index`` (0-based, rejected records counted) of an input."""
    return f"{prefix}-{index:06d}"


def default_columns(spec: TaskSpec) -> dict[str, str]:
    """Task field -> column name of CSV/JSONL/HF inputs without ``--text-fields``: the field names."""
    return {f: f for f in spec.text_fields} | ({} if spec.kind == "qa" else {LABEL: LABEL})


def make_record(values: Mapping[str, Any], spec: TaskSpec, columns: Mapping[str, str], sid: str,
                location: str, raw: Any) -> Record | Reject:
    """A GLUE-style record from ``values`` (column -> value), or the reason it is rejected.

    Args:
        columns: task field (text fields and ``label``) -> column name in ``values``.
        raw: what the dead letter shows of the record (the line, the row).
    """
    fields = {}
    for name in spec.text_fields:
        value = values.get(columns[name])
        if value is None:
            return Reject(location, f"missing field {columns[name]!r}", raw)
        if not isinstance(value, str):
            return Reject(location, f"field {columns[name]!r} is {type(value).__name__}, not text", raw)
        if not value.strip():
            return Reject(location, f"empty text in field {columns[name]!r}", raw)
        fields[name] = value
    try:
        label = spec.parse_label(values.get(columns[LABEL]))
    except ValueError as e:
        return Reject(location, f"{e} (column {columns[LABEL]!r})", raw)
    return Record(sid, location, fields, label)


# -- GLUE TSV ----------------------------------------------------------------------------------
def tsv_header(first_line: str, spec: TaskSpec, columns: Mapping[str, str] | None = None) -> list[str] | None:
    """The header cells when ``first_line`` is a header of ``spec``'s TSV layout, else ``None``.

    Raises ``ValueError`` naming the missing columns when the line looks like a header (its label
    cell is not a label) but lacks some of the task's columns: the wrong ``--task`` for the file.
    """
    cells = first_line.split("\t")
    wanted = dict(spec.tsv_columns or {}) | dict(columns or {})
    if wanted and all(c in cells for c in wanted.values()):
        return cells
    positions = spec.column_positions()
    label_at = positions[LABEL]
    try:
        spec.parse_label(cells[label_at] if label_at < len(cells) else None)
        return None  # a data row
    except ValueError:
        pass
    if spec.tsv_columns is None:  # header-less task (CoLA): a bad first row is just a bad row
        return None
    missing = [c for c in wanted.values() if c not in cells]
    raise ValueError(f"TSV header {cells} lacks the {spec.name} column(s) {missing}")


def read_tsv(lines: Iterable[bytes], spec: TaskSpec, source: str, prefix: str,
             columns: Mapping[str, str] | None = None) -> Iterator[Record | Reject]:
    """Records of a GLUE TSV file.

    Args:
        lines: the file's raw lines (bytes, with or without line ends).
        spec: the task; its ``tsv_columns`` (header) or ``column_positions()`` (no header) say
            where each field is. columns: field -> header name overrides (``--text-fields``).
    """
    header, positions, width, index = None, None, None, 0
    for lineno, raw in enumerate(lines, start=1):
        if lineno == 1 and raw.startswith(BOM):
            raw = raw[len(BOM):]
        try:
            line = raw.decode("utf-8").rstrip("\n").removesuffix("\r")
        except UnicodeDecodeError as e:
            yield Reject(f"{source}:{lineno}", f"not UTF-8: {e}", raw.decode("utf-8", "replace"))
            index += 1
            continue
        if not line.strip():
            continue
        if positions is None:
            header = tsv_header(line, spec, columns)
            if header is not None:
                names = dict(spec.tsv_columns or {}) | dict(columns or {})
                positions = {field: header.index(col) for field, col in names.items()}
                width = len(header)
                continue
            positions = spec.column_positions()
            width = len(spec.tsv_layout) if spec.tsv_layout else max(positions.values()) + 1
        location, sid = f"{source}:{lineno}", source_id(prefix, index)
        index += 1
        cells = line.split("\t")
        if len(cells) != width:
            yield Reject(location, f"expected {width} tab-separated columns, got {len(cells)}", line)
            continue
        values = {field: cells[pos] for field, pos in positions.items()}
        yield make_record(values, spec, {f: f for f in positions}, sid, location, line)


# -- CSV and JSON Lines ------------------------------------------------------------------------
def read_csv(lines: Iterable[bytes], spec: TaskSpec, source: str, prefix: str,
             columns: Mapping[str, str]) -> Iterator[Record | Reject]:
    """Records of a CSV file with a header row; ``columns``: task field -> CSV column.

    ``lines``: the file's raw lines (quoted fields may span several). A line that is not UTF-8
    ends the file with one reject (the CSV reader cannot resynchronise).
    """
    reader = csv.reader(_decoded(lines))
    index = 0
    try:
        header = next(reader, None)
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            location, sid = f"{source}:{reader.line_num}", source_id(prefix, index)
            index += 1
            if len(row) != len(header):
                yield Reject(location, f"expected {len(header)} columns, got {len(row)}", row)
                continue
            values = dict(zip(header, row))
            yield make_record(values, spec, columns, sid, location, values)
    except (UnicodeDecodeError, csv.Error) as e:
        yield Reject(f"{source}:{reader.line_num}", f"unreadable CSV, rest of file skipped: {e}")


def _decoded(lines: Iterable[bytes]) -> Iterator[str]:
    for n, raw in enumerate(lines):
        yield raw.decode("utf-8-sig" if n == 0 else "utf-8")


def read_jsonl(lines: Iterable[bytes], spec: TaskSpec, source: str, prefix: str,
               columns: Mapping[str, str]) -> Iterator[Record | Reject]:
    """Records of a JSON Lines file (one object per line); ``columns``: task field -> key.

    For SQuAD, each line is one question in the Hugging Face ``squad_v2`` layout.
    """
    index = 0
    for lineno, raw in enumerate(lines, start=1):
        if lineno == 1 and raw.startswith(BOM):
            raw = raw[len(BOM):]
        if not raw.strip():
            continue
        location, sid = f"{source}:{lineno}", source_id(prefix, index)
        index += 1
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        try:
            obj = json.loads(raw)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
            yield Reject(location, f"invalid JSON: {e}", text)
            continue
        if not isinstance(obj, dict):
            yield Reject(location, f"a JSON line must be an object, got {type(obj).__name__}", text)
            continue
        yield hf_squad_record(obj, location, prefix) if spec.kind == "qa" else \
            make_record(obj, spec, columns, sid, location, obj)


# -- Hugging Face datasets ---------------------------------------------------------------------
def read_rows(rows: Iterable[Mapping[str, Any]], spec: TaskSpec, source: str, prefix: str,
              columns: Mapping[str, str]) -> Iterator[Record | Reject]:
    """Records of a ``datasets.Dataset`` (or any iterable of row dicts)."""
    for index, row in enumerate(rows):
        location = f"{source}#{index}"
        yield hf_squad_record(row, location, prefix) if spec.kind == "qa" else \
            make_record(row, spec, columns, source_id(prefix, index), location, dict(row))


# -- SQuAD -------------------------------------------------------------------------------------
def squad_record(qid: Any, title: Any, context: Any, question: Any, answers: Iterable[tuple[Any, Any]],
                 is_impossible: bool, location: str, raw: Any, prefix: str = "") -> Record | Reject:
    """A SQuAD record, with every answer checked to sit at its ``answer_start``.

    ``answers``: (text, answer_start) pairs; an unanswerable question must have none. The record's
    ``source_id`` is the question id, as ``prefix/id`` when a prefix is given.
    """
    answers = list(answers)
    for name, value in (("id", qid), ("context", context), ("question", question)):
        if not isinstance(value, str) or not value.strip():
            return Reject(location, f"empty or missing {name}", raw)
    if is_impossible and answers:
        return Reject(location, "unanswerable question with answers", raw)
    if not is_impossible and not answers:
        return Reject(location, "answerable question without answers", raw)
    checked = []
    for text, start in answers:
        if not isinstance(text, str) or not text or isinstance(start, bool) or not isinstance(start, int):
            return Reject(location, f"malformed answer {text!r} at {start!r}", raw)
        if context[start:start + len(text)] != text:
            return Reject(location, f"answer {text!r} is not at answer_start {start} "
                                    f"(context has {context[start:start + len(text)]!r} there)", raw)
        checked.append(Answer(text, start))
    qa = QAInfo(title if isinstance(title, str) else "", tuple(checked), bool(is_impossible))
    return Record(f"{prefix}/{qid}" if prefix else qid, location, {"question": question, "context": context}, None, qa)


def read_squad(data: bytes, source: str, prefix: str = "") -> Iterator[Record | Reject]:
    """Records of a SQuAD 1.1 / 2.0 JSON file, one per question; ``source_id`` is the question id
    (``prefix/id`` with a prefix: for runs over several files, whose ids might collide).

    A file that is not SQuAD JSON gives a single reject; a repeated question id is rejected.
    """
    try:
        articles = json.loads(data)["data"]
        if not isinstance(articles, list):
            raise TypeError("'data' is not a list")
    except (ValueError, KeyError, TypeError) as e:
        yield Reject(source, f"not a SQuAD JSON file: {e}")
        return
    seen: set[str] = set()
    for a, article in enumerate(articles):
        for p, para in enumerate(_items(article, "paragraphs")):
            context = para.get("context") if isinstance(para, dict) else None
            for q, qa in enumerate(_items(para, "qas")):
                location = f"{source}#data[{a}].paragraphs[{p}].qas[{q}]"
                if not isinstance(qa, dict):
                    yield Reject(location, "a question must be a JSON object", qa)
                    continue
                raw = {"title": article.get("title"), "context": context, **qa}
                answers = qa.get("answers") or []
                if not isinstance(answers, list) or not all(isinstance(x, dict) for x in answers):
                    yield Reject(location, "answers must be a list of objects", raw)
                    continue
                record = squad_record(qa.get("id"), article.get("title"), context, qa.get("question"),
                                      [(x.get("text"), x.get("answer_start")) for x in answers],
                                      bool(qa.get("is_impossible", False)), location, raw, prefix)
                if isinstance(record, Record) and record.source_id in seen:
                    record = Reject(location, f"duplicate question id {record.source_id!r}", raw)
                elif isinstance(record, Record):
                    seen.add(record.source_id)
                yield record


def hf_squad_record(row: Mapping[str, Any], location: str, prefix: str = "") -> Record | Reject:
    """A SQuAD record from a row in the Hugging Face ``squad``/``squad_v2`` layout."""
    missing = [k for k in SQUAD_FIELDS if k not in row]
    if missing:
        return Reject(location, f"missing field(s) {missing}", dict(row))
    answers = row["answers"] or {}
    if not isinstance(answers, Mapping):
        return Reject(location, "answers must be {text: [...], answer_start: [...]}", dict(row))
    texts, starts = list(answers.get("text") or []), list(answers.get("answer_start") or [])
    if len(texts) != len(starts):
        return Reject(location, f"{len(texts)} answer texts but {len(starts)} answer_start", dict(row))
    impossible = row.get("is_impossible", not texts)
    return squad_record(row["id"], row["title"], row["context"], row["question"], zip(texts, starts),
                        bool(impossible), location, dict(row), prefix)


def _items(obj: Any, key: str) -> list:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, list) else []


# -- dispatch ----------------------------------------------------------------------------------
def read_input(spec: TaskSpec, inp: InputSpec, open_fn) -> Iterator[Record | Reject]:
    """All records of one input; ``open_fn(path)`` opens a binary stream (Beam's FileSystems.open)."""
    columns = dict(inp.columns) or default_columns(spec)
    if inp.format == "hf":
        yield from read_rows(load_hf_dataset(inp), spec, inp.path, inp.prefix, columns)
        return
    with open_fn(inp.path) as f:
        lines = iter(f.readline, b"")  # Beam's compressed streams have readline, not iteration
        if inp.format == "squad":
            yield from read_squad(f.read(), inp.path, inp.prefix)
        elif inp.format == "tsv":
            yield from read_tsv(lines, spec, inp.path, inp.prefix, inp.columns or None)
        elif inp.format == "csv":
            yield from read_csv(lines, spec, inp.path, inp.prefix, columns)
        elif inp.format == "jsonl":
            yield from read_jsonl(lines, spec, inp.path, inp.prefix, columns)
        else:
            raise ValueError(f"unknown input format {inp.format!r}")


def load_hf_dataset(inp: InputSpec):
    """The ``datasets.Dataset`` of an ``hf`` input: a ``save_to_disk`` directory or a hub/local name."""
    import datasets

    try:
        loaded = datasets.load_from_disk(inp.path)
    except (FileNotFoundError, ValueError):
        return datasets.load_dataset(inp.path, inp.hf_config, split=inp.split or "train")
    if isinstance(loaded, datasets.DatasetDict):
        split = inp.split or "train"
        if split not in loaded:
            raise ValueError(f"dataset {inp.path} has no split {split!r}; splits: {list(loaded)}")
        return loaded[split]
    return loaded

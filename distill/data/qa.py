"""Extractive question answering data (SQuAD 1.1 / 2.0; Devlin et al., 2019, Sec. 4.2): rows and windows.

- :func:`read_examples`: SQuAD rows (``id``, ``question``, ``context``, ``answers`` {text,
  answer_start}, ``is_impossible``: the corpus builder's row schema) from a SQuAD JSON file or a
  corpus directory; every answer is checked to sit at its ``answer_start``.
- :func:`squad_json_corpus`: a SQuAD JSON file -> a one-shard corpus (originals only), so training
  on a JSON file streams, shuffles and resumes exactly like training on a built corpus.
- :class:`QACollator`: rows -> windows. The question (at most ``max_query_length`` tokens) is paired
  with a sliding window over the context (``max_seq_length`` tokens in all; consecutive windows share
  ``doc_stride`` tokens, the meaning of ``stride`` in the fast tokenizers and in transformers'
  ``run_qa.py``). Start/end token positions come from the answer's character span through the
  offset mapping; an unanswerable question, or an answer not wholly inside a window, points at
  [CLS] (position 0). One row gives one or more windows, so a batch of B rows has >= B windows.

Decoding a model's span logits into answers, and scoring them: :mod:`distill.evaluation.squad`.
"""
from __future__ import annotations

import os
import shutil
from typing import Sequence

import torch

from distill.data.stream import check_answers, open_corpus
from distill.data.encoding import encode_text
from distill.data.shards import CorpusError

QA_COLUMNS = ["id", "question", "context", "answers", "is_impossible"]


# --------------------------------------------------------------------------------------------------
# Examples


def _json_rows(path: str) -> list[dict]:
    """Rows of a SQuAD JSON file (one per question); ``CorpusError`` on the first bad question."""
    from pipelines.readers import read_squad
    from pipelines.records import Reject
    from pipelines.rows import build_rows

    with open(path, "rb") as f:
        data = f.read()
    rows = []
    for item in read_squad(data, path):
        if isinstance(item, Reject):
            raise CorpusError(f"{item.location}: {item.reason}")
        rows += build_rows(item, {})
    if not rows:
        raise CorpusError(f"{path}: no questions")
    return rows


def read_examples(path: str, task=None) -> list[dict]:
    """SQuAD rows from a SQuAD 1.1 / 2.0 JSON file, or the original rows of a ``squad`` corpus
    directory, in file order. Raises ``CorpusError`` naming a bad question or corpus."""
    if os.path.isfile(path):
        return _json_rows(path)
    from pipelines.tasks import get_task

    corpus = open_corpus(path, task or get_task("squad"), original_only=True)
    rows = list(corpus.stream(shuffle=False).iter_epoch(0))
    for row in rows:
        check_answers(row)
    return rows


def squad_json_corpus(path: str, root: str) -> str:
    """Write the questions of a SQuAD JSON file as a one-shard ``squad`` corpus at ``root`` (replaced
    if present; rows as the corpus builder writes them, ``aug_index`` 0); returns ``root``."""
    from distill.data.shards import ShardWriter
    from pipelines.rows import schema
    from pipelines.tasks import get_task

    spec = get_task("squad")
    rows = _json_rows(path)
    shutil.rmtree(root, ignore_errors=True)
    manifest = {"task": spec.name, "kind": spec.kind, "text_fields": list(spec.text_fields), "label_names": None,
                "inputs": [{"path": os.path.abspath(path)}]}
    with ShardWriter(root, schema(spec), max(1, len(rows)), manifest) as w:
        for row in rows:
            w.write(row)
    return root


def gold_answers(row: dict) -> list[str]:
    """The gold answer texts of a row (empty for an unanswerable question)."""
    return [] if row.get("is_impossible") else list((row.get("answers") or {}).get("text") or [])


# --------------------------------------------------------------------------------------------------
# Features


class QACollator:
    """SQuAD rows -> windows (see the module docstring).

    Args:
        tokenizer: a *fast* transformers tokenizer (offset mappings are needed).
        max_seq_length, doc_stride, max_query_length: window size, tokens shared by consecutive
            windows, and the question's token budget.
        pad_to_multiple_of: pad each batch to a multiple of this (training batches).
    Raises ``ValueError`` for a slow tokenizer or a stride that leaves no room for the context.
    Returns (on call): input_ids, attention_mask, token_type_ids, (W, T) long; start_positions,
        end_positions (W,) long, for W >= len(rows) windows.
    """

    def __init__(self, tokenizer, max_seq_length: int = 384, doc_stride: int = 128, max_query_length: int = 64,
                 pad_to_multiple_of: int | None = None):
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer; QA needs offset mappings")
        room = max_seq_length - max_query_length - 3  # [CLS] q [SEP] c [SEP]
        if room <= doc_stride:
            raise ValueError(f"doc_stride {doc_stride} must be smaller than the context room of a window "
                             f"(max_seq_length {max_seq_length} - max_query_length {max_query_length} - 3 = {room})")
        self.tokenizer, self.max_seq_length = tokenizer, max_seq_length
        self.doc_stride, self.max_query_length = doc_stride, max_query_length
        self.pad_to_multiple_of = pad_to_multiple_of

    def _question(self, text: str) -> str:
        """The question cut after its first ``max_query_length`` tokens (whitespace stripped left)."""
        text = text.lstrip()
        enc = encode_text(self.tokenizer, text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        return text if len(offsets) <= self.max_query_length else text[:offsets[self.max_query_length - 1][1]]

    def encode(self, rows: Sequence[dict], padding="longest") -> dict:
        """Windows of ``rows`` as lists: the tokenizer's fields, ``example_index`` (W,) (the row
        of each window), ``offsets`` (W, T, 2) with (-1, -1) outside the context, and
        start/end_positions (W,) (0 = [CLS])."""
        questions = [self._question(r["question"]) for r in rows]
        enc = encode_text(self.tokenizer, questions, [r["context"] for r in rows], truncation="only_second",
                          max_length=self.max_seq_length, stride=self.doc_stride, return_overflowing_tokens=True,
                          return_offsets_mapping=True, padding=padding, return_token_type_ids=True,
                          pad_to_multiple_of=self.pad_to_multiple_of if padding == "longest" else None)
        example_index = list(enc["overflow_to_sample_mapping"])
        offsets, starts, ends = [], [], []
        for w, ex in enumerate(example_index):
            seq = enc.sequence_ids(w)
            window = [tuple(o) if s == 1 else (-1, -1) for o, s in zip(enc["offset_mapping"][w], seq)]
            offsets.append(window)
            start, end = answer_positions(rows[ex], window)
            starts.append(start)
            ends.append(end)
        out = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        return out | {"example_index": example_index, "offsets": offsets, "start_positions": starts,
                      "end_positions": ends}

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        enc = self.encode(rows)
        keys = ("input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions")
        return {k: torch.tensor(enc[k], dtype=torch.long) for k in keys}


def answer_positions(row: dict, offsets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """(start, end) token positions of the row's first answer in one window, or (0, 0) ([CLS]) when
    the question is unanswerable or the answer is not wholly inside the window.

    Args:
        offsets: (T,) character spans of the window's tokens, (-1, -1) for non-context tokens.
    Raises ``CorpusError`` when the answer is not at its ``answer_start``.
    """
    answers = gold_answers(row)
    if not answers:
        return 0, 0
    check_answers(row)
    char_start = row["answers"]["answer_start"][0]
    char_end = char_start + len(answers[0])
    context = [i for i, (a, _) in enumerate(offsets) if a >= 0]
    if not context or offsets[context[0]][0] > char_start or offsets[context[-1]][1] < char_end:
        return 0, 0
    start = max(i for i in context if offsets[i][0] <= char_start)
    end = min(i for i in context if offsets[i][1] >= char_end)
    return start, end


# --------------------------------------------------------------------------------------------------
# Post-processing


def json_to_corpus_dir(output_dir: str) -> str:
    """Where a run converts its SQuAD JSON training file into a corpus."""
    return os.path.join(output_dir, "data", "train-corpus")

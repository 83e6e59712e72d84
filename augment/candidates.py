"""Candidate generation for every eligible word of many texts at once.

For each text: split into words; for each eligible word, a single-piece word is a masked-LM query
and a multi-piece word a GloVe query.

A text's candidates do not depend on the other texts it is given with, to the last bit, by
construction: its masked-LM rows run in forwards of their own (:meth:`CandidateGenerator.generate`)
and each GloVe word is queried alone (:meth:`augment.glove.GloveIndex.nearest`), so whatever texts
share a call (batching, worker count, runner), a text's forwards are the same operations on the
same tensors. Rows of several texts in one forward would make that depend on the matrix library:
it may give rows at different positions of a product different kernels (MKL does on AVX-512), so
a row's logits would move in their last bits with its neighbours.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from augment.glove import GloveIndex
from augment.mlm import MaskedLMTeacher, QueryRow, build_query_row
from augment.words import STOPWORDS, WordPieceTokenizer, is_eligible

MLM, GLOVE, NONE = "mlm", "glove", "none"


@dataclass
class TextCandidates:
    """The words of one text and the candidates of its eligible positions.

    Attributes:
        words: the basic tokenizer's words.
        candidates: eligible position -> candidate words (never empty: a position without any
            candidates lists its own word).
        sources: eligible position -> ``mlm``, ``glove`` or ``none`` (no candidates found).
        mlm_topk: for ``mlm`` positions, the raw top-K (ids, logits) before ``##`` pieces (and
            special tokens) were dropped; kept for exact comparisons against other implementations.
    """

    words: list[str]
    candidates: dict[int, list[str]] = field(default_factory=dict)
    sources: dict[int, str] = field(default_factory=dict)
    mlm_topk: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def record(self, text: str) -> dict:
        """``{"text", "words", "candidates": {position: [words]}}``: the JSON object ``augment
        candidates`` writes (and the service returns); positions are strings, as JSON keys are."""
        return {"text": text, "words": self.words,
                "candidates": {str(p): words for p, words in self.candidates.items()}}


def drop_continuations(tokens: Iterable[str]) -> list[str]:
    """Drop WordPiece continuation pieces (those starting with ``##``), keeping order."""
    return [t for t in tokens if not t.startswith("##")]


def mlm_words(tokenizer: WordPieceTokenizer, ids: Sequence[int], keep_special_tokens: bool = False) -> list[str]:
    """The candidate words of a masked-LM top-K: the pieces of ``ids`` in order, without ``##``
    continuations (as the authors' script) and, unless ``keep_special_tokens``, without the teacher's
    special tokens. Both are dropped *after* taking the top K, so a position can have fewer than K
    candidates, as with ``##`` pieces in the authors' script.

    Why special tokens go: a candidate ``[SEP]`` is written into the variant's text, and a student's
    tokenizer reads that text as its separator (or ``[UNK]``, ``[MASK]``), a structure the model
    never sees at inference. The authors' script keeps them (``keep_special_tokens=True``).
    """
    excluded = frozenset() if keep_special_tokens else tokenizer.special_ids
    return drop_continuations(t for i, t in zip(ids, tokenizer.tokens(ids)) if int(i) not in excluded)


def match_case(word: str, candidates: list[str]) -> list[str]:
    """Title-case GloVe candidates of a title-case word (matters for cased teachers only)."""
    return [c.title() for c in candidates] if word.istitle() else candidates


class CandidateGenerator:
    """Finds candidates for the eligible words of texts.

    Args:
        tokenizer: the teacher's words/WordPiece tokenizer.
        teacher: the masked LM.
        glove: the GloVe index.
        k: K, candidates per word.
        mlm_input: ``pair`` or ``single`` (see :mod:`augment.mlm`).
        stopwords: words never replaced.
        batch_size: masked-LM rows per forward, all of one text. pad_multiple: rows are padded to a
            multiple of it. Both decide float rounding, hence can swap near-tied candidates.
        keep_special_tokens: keep the teacher's special tokens among masked-LM candidates (the
            authors' behaviour; see :func:`mlm_words`).
    """

    def __init__(
        self,
        tokenizer: WordPieceTokenizer,
        teacher: MaskedLMTeacher,
        glove: GloveIndex,
        k: int = 15,
        mlm_input: str = "pair",
        stopwords: frozenset[str] | None = None,
        batch_size: int = 64,
        pad_multiple: int = 8,
        keep_special_tokens: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.teacher = teacher
        self.glove = glove
        self.k = k
        self.mlm_input = mlm_input
        self.stopwords = STOPWORDS if stopwords is None else stopwords
        self.batch_size = batch_size
        self.pad_multiple = pad_multiple
        self.keep_special_tokens = keep_special_tokens
        self._special = (tokenizer.id_of("[CLS]"), tokenizer.id_of("[SEP]"), tokenizer.id_of("[MASK]"))

    def eligible_positions(self, words: Sequence[str]) -> list[int]:
        return [i for i, w in enumerate(words) if is_eligible(w, self.stopwords)]

    def generate(
        self,
        texts: Sequence[str],
        positions: Sequence[Iterable[int] | None] | None = None,
        on_rows: Callable[[int], None] | None = None,
    ) -> list[TextCandidates]:
        """Candidates for each text.

        Args:
            texts: the texts (str).
            positions: optionally, per text, the word positions that may be replaced (others are
                kept, e.g. words inside a QA answer span); ``None`` = all eligible words.
            on_rows: called with the number of masked-LM rows after each teacher batch.
        """
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text {i} is {type(t).__name__}, not str (decode bytes as UTF-8 first)")
        results: list[TextCandidates] = []
        chunks: dict[tuple[QueryRow, ...], list[tuple[int, list[tuple[int, int]]]]] = {}  # -> (text, [(row, pos)])
        glove_jobs: list[tuple[int, int]] = []
        for t, text in enumerate(texts):
            words = self.tokenizer.words(text)
            result = TextCandidates(words=words)
            results.append(result)
            allowed = None if positions is None or positions[t] is None else set(positions[t])
            eligible = self.eligible_positions(words)
            if not any(allowed is None or p in allowed for p in eligible):
                continue
            pieces = [self.tokenizer.ids(self.tokenizer.wordpiece(w)) for w in words]
            mlm_positions, mlm_rows = self._mlm_rows(pieces, eligible)
            queried = set(mlm_positions)
            for pos in eligible:
                if allowed is not None and pos not in allowed:
                    continue
                if len(pieces[pos]) > 1:
                    glove_jobs.append((t, pos))
                elif pos not in queried:  # mask beyond the teacher's positions
                    self._set(result, pos, [], NONE)
            # The text's forwards: its rows, batch_size at a time, whichever of them are wanted; so
            # they are the same operations on the same tensors whatever texts share this call.
            for start in range(0, len(mlm_rows), self.batch_size):
                wanted = [(r, p) for r, p in enumerate(mlm_positions[start:start + self.batch_size])
                          if allowed is None or p in allowed]
                if wanted:  # the same text in several jobs (a SQuAD context) runs each forward once
                    chunks.setdefault(tuple(mlm_rows[start:start + self.batch_size]), []).append((t, wanted))
        for chunk, users in chunks.items():
            ids, vals = self.teacher.topk(list(chunk), self.k, batch_size=len(chunk), pad_multiple=self.pad_multiple,
                                          on_batch=on_rows)
            for t, wanted in users:
                for r, pos in wanted:
                    self._set(results[t], pos, mlm_words(self.tokenizer, ids[r], self.keep_special_tokens), MLM)
                    results[t].mlm_topk[pos] = (ids[r], vals[r])
        if glove_jobs:
            neighbours = self.glove.nearest([results[t].words[p] for t, p in glove_jobs], self.k)
            for (t, pos), found in zip(glove_jobs, neighbours):
                self._set(results[t], pos, match_case(results[t].words[pos], found), GLOVE)
        for r in results:  # positions in increasing order, as sampling visits them
            r.candidates = dict(sorted(r.candidates.items()))
            r.sources = dict(sorted(r.sources.items()))
        return results

    def _mlm_rows(self, pieces: Sequence[Sequence[int]], eligible: Sequence[int]) -> tuple[list[int], list[QueryRow]]:
        """The masked-LM rows of a text: one per eligible single-piece word whose mask falls within
        the teacher's positions, in word order, with their positions. All of them, whichever
        positions a caller allows: they decide the text's forwards."""
        cls_id, sep_id, mask_id = self._special
        out_positions, out_rows = [], []
        for pos in eligible:
            if len(pieces[pos]) == 1:
                row = build_query_row(pieces, pos, cls_id=cls_id, sep_id=sep_id, mask_id=mask_id,
                                      max_length=self.teacher.max_length, mlm_input=self.mlm_input)
                if row is not None:
                    out_positions.append(pos)
                    out_rows.append(row)
        return out_positions, out_rows

    @staticmethod
    def _set(result: TextCandidates, pos: int, found: list[str], source: str) -> None:
        if found:
            result.candidates[pos], result.sources[pos] = list(found), source
        else:  # a position with no candidates keeps its word
            result.candidates[pos], result.sources[pos] = [result.words[pos]], NONE

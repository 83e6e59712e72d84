"""SQuAD context augmentation that keeps every answer in place (Beam-free).

The engine works on the teacher's basic-tokenizer words (lower-cased, accents stripped,
punctuation split off). To augment a context without moving its answers:

1. :func:`word_spans` aligns each word with its characters in the original context;
2. :func:`replaceable_positions` keeps only the words that overlap no answer (of the question);
3. :func:`splice_variant` writes each replaced word over its characters in the *original* context
   (so case, punctuation and spacing outside the replaced words are kept, and every answer text is
   unchanged), shifts each ``answer_start`` by the length changes before it, and checks that
   ``context[start:start + len(text)] == text`` for every answer it returns.
"""
from __future__ import annotations

import unicodedata
from typing import Sequence

from pipelines.records import Answer

Span = tuple[int, int]  # [start, end) character offsets


class AlignmentError(ValueError):
    """The tokenizer's words cannot be found, in order, in the text."""


def _fold(text: str) -> list[tuple[str, int]]:
    """(character, index in ``text``) after lower-casing and stripping accents, as BERT's basic
    tokenizer does for uncased models; a character may fold to several or to none."""
    out = []
    for i, ch in enumerate(text):
        for c in unicodedata.normalize("NFD", ch.lower()):
            if unicodedata.category(c) != "Mn":
                out.append((c, i))
    return out


def _ignorable(ch: str) -> bool:
    """Characters the basic tokenizer drops between words: whitespace, controls, U+FFFD, NUL."""
    return ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") or ch in ("\ufffd", "\0")


def word_spans(text: str, words: Sequence[str]) -> list[Span]:
    """The character span in ``text`` of each basic-tokenizer word.

    Works for cased and uncased tokenizers (both sides are case- and accent-folded before matching).
    Raises :class:`AlignmentError` when a word is not found where the previous one ended (only
    ignorable characters may lie between words).
    """
    folded = _fold(text)
    flat = "".join(c for c, _ in folded)
    spans, cursor = [], 0
    for n, word in enumerate(words):
        key = "".join(c for c, _ in _fold(word))
        at = flat.find(key, cursor) if key else -1
        if at < 0 or not all(_ignorable(c) for c in flat[cursor:at]):
            after = folded[cursor][1] if cursor < len(folded) else len(text)
            raise AlignmentError(f"word {n} {word!r} not found at character {after} or after")
        end = at + len(key)
        spans.append((folded[at][1], folded[end - 1][1] + 1))
        cursor = end
    return spans


def replaceable_positions(spans: Sequence[Span], answers: Sequence[Answer]) -> list[int]:
    """Word positions that overlap no answer span (all words when there are no answers)."""
    blocked = [(a.start, a.start + len(a.text)) for a in answers]
    return [i for i, (s, e) in enumerate(spans) if all(e <= bs or s >= be for bs, be in blocked)]


def match_case(original: str, word: str) -> str:
    """``word`` in the case pattern of the text it replaces (``Paris`` -> ``London``, ``NATO`` -> ``UN``)."""
    if len(original) > 1 and original.isupper():
        return word.upper()
    if original[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def splice_variant(context: str, spans: Sequence[Span], words: Sequence[str], variant: Sequence[str],
                   answers: Sequence[Answer]) -> tuple[str, tuple[Answer, ...]]:
    """The context with the variant's replaced words written in, and the answers moved with it.

    Args:
        context: the original context; spans, words: its words and their spans (:func:`word_spans`).
        variant: the variant's words (same length as ``words``); a word that differs is replaced.
        answers: the original answers; no replaced word may overlap one.
    Raises ``ValueError`` when the variant has another length, a replaced word overlaps an answer,
    or an answer is not at its new ``answer_start`` (a bug, never expected).
    """
    if len(variant) != len(words):
        raise ValueError(f"variant has {len(variant)} words, the context {len(words)}")
    changed = [i for i, (old, new) in enumerate(zip(words, variant)) if old != new]
    pieces, shifts, last = [], [], 0  # shifts: (end of a replaced span, its length change)
    for i in changed:
        start, end = spans[i]
        replacement = match_case(context[start:end], variant[i])
        pieces += [context[last:start], replacement]
        shifts.append((end, len(replacement) - (end - start)))
        last = end
    pieces.append(context[last:])
    new_context = "".join(pieces)
    moved = []
    for a in answers:
        a_end = a.start + len(a.text)
        if any(spans[i][0] < a_end and spans[i][1] > a.start for i in changed):
            raise ValueError(f"a replaced word overlaps the answer {a.text!r} at {a.start}")
        start = a.start + sum(delta for end, delta in shifts if end <= a.start)
        if new_context[start:start + len(a.text)] != a.text:
            raise ValueError(f"answer {a.text!r} not at {start} after splicing")
        moved.append(Answer(a.text, start))
    return new_context, tuple(moved)

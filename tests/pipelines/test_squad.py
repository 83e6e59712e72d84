import pytest

from pipelines.records import Answer
from pipelines.squad import AlignmentError, match_case, replaceable_positions, splice_variant, word_spans
from tests.pipelines.fakes import FakeAugmenter

CONTEXT = "The Normans (Norman: Nourmands) came from Normandy, a region in France."


def test_word_spans_fold_case_and_accents():
    text = "Café  NAÏVE, l'été"
    words = ["cafe", "naive", ",", "l", "'", "ete"]
    spans = word_spans(text, words)
    assert [text[s:e] for s, e in spans] == ["Café", "NAÏVE", ",", "l", "'", "été"]


def test_word_spans_refuses_words_not_in_the_text():
    with pytest.raises(AlignmentError, match="word 1 'dog'"):
        word_spans("a cat sat", ["a", "dog", "sat"])
    with pytest.raises(AlignmentError):  # found later, but with text skipped in between
        word_spans("a cat sat", ["a", "sat"])


def test_replaceable_positions_skip_every_word_touching_an_answer():
    words = FakeAugmenter().words(CONTEXT)
    spans = word_spans(CONTEXT, words)
    answers = [Answer("Normandy", CONTEXT.index("Normandy")), Answer("Norma", 4)]  # a partial word too
    allowed = replaceable_positions(spans, answers)
    assert words.index("normandy") not in allowed and words.index("normans") not in allowed
    assert words.index("france") in allowed
    assert replaceable_positions(spans, []) == list(range(len(words)))


def test_splice_variant_keeps_answers_verbatim_and_moves_their_start():
    words = FakeAugmenter().words(CONTEXT)
    spans = word_spans(CONTEXT, words)
    answers = (Answer("Normandy", CONTEXT.index("Normandy")), Answer("France", CONTEXT.index("France")))
    variant = list(words)
    variant[words.index("normans")] = "northmen"    # before both answers, one longer
    variant[words.index("region")] = "land"         # between them, two shorter
    context, moved = splice_variant(CONTEXT, spans, words, variant, answers)
    assert context == "The Northmen (Norman: Nourmands) came from Normandy, a land in France."
    for a in moved:
        assert context[a.start:a.start + len(a.text)] == a.text
    assert [a.start for a in moved] == [answers[0].start + 1, answers[1].start - 1]


def test_splice_variant_refuses_a_replaced_answer_word():
    words = FakeAugmenter().words(CONTEXT)
    spans = word_spans(CONTEXT, words)
    variant = list(words)
    variant[words.index("france")] = "spain"
    with pytest.raises(ValueError, match="overlaps the answer 'France'"):
        splice_variant(CONTEXT, spans, words, variant, [Answer("France", CONTEXT.index("France"))])


def test_match_case():
    assert [match_case("Paris", "london"), match_case("NATO", "un"), match_case("dog", "cat")] == ["London", "UN", "cat"]

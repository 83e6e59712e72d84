import random

import pytest

from augment import Augmenter, AugmentConfig
from augment.candidates import CandidateGenerator
from tests.augment.per_word_reference import PerWordReference, compare, load_python_tokenizer, tolerances

TEXTS = [
    "The acting is heartfelt and the story is wonderfully dull.",
    "a good film with great music",
    "Boring!",
    "",
    "   ",
    "the and of",  # no eligible word
    "superb performance , terrible script , funny actors , bad plot",
]


@pytest.fixture(scope="module")
def augmenter(tiny_mlm, tiny_glove, tmp_path_factory):
    return Augmenter.from_pretrained(str(tiny_mlm), str(tiny_glove), glove_cache_dir=str(tmp_path_factory.mktemp("c")),
                                     n_aug=10, k=5)


def test_candidates_equal_per_word_reference(augmenter, tiny_mlm, tiny_glove):
    ref = PerWordReference(augmenter.teacher.model, load_python_tokenizer(str(tiny_mlm)), str(tiny_glove), k=5,
                           memoise=True)
    tol_logit, tol_cos = tolerances(augmenter, ref, TEXTS)  # near-ties rounding may swap
    for text, cands in zip(TEXTS, augmenter.candidates(TEXTS)):
        report = compare(ref, cands, text, tol_logit=tol_logit, tol_cos=tol_cos)
        assert report["mismatches"] == [], text
        assert report["positions"] == len(cands.candidates)


SPECIAL = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}


@pytest.mark.parametrize("keep", [False, True])
def test_special_tokens_in_the_top_k_are_dropped_unless_kept(tiny_mlm, tiny_glove, tmp_path, keep):
    # K = the whole vocabulary, so every special token is in every masked-LM top-K.
    k = len((tiny_mlm / "vocab.txt").read_text().split())
    aug = Augmenter.from_pretrained(str(tiny_mlm), str(tiny_glove), glove_cache_dir=str(tmp_path), k=k,
                                    keep_special_tokens=keep)
    ref = PerWordReference(aug.teacher.model, load_python_tokenizer(str(tiny_mlm)), str(tiny_glove), k=k,
                           keep_special_tokens=keep, memoise=True)
    tol_logit, tol_cos = tolerances(aug, ref, TEXTS)  # near-ties rounding may swap
    mlm = 0
    for text, cands in zip(TEXTS, aug.candidates(TEXTS)):
        report = compare(ref, cands, text, tol_logit=tol_logit, tol_cos=tol_cos)
        assert report["mismatches"] == [], text
        for pos, (ids, _) in cands.mlm_topk.items():
            pieces = aug.tokenizer.tokens(ids)  # the raw top-K: the authors' list before filtering
            authors = [t for t in pieces if not t.startswith("##")]
            expected = authors if keep else [t for t in authors if t not in SPECIAL]
            assert cands.candidates[pos] == expected
            assert (SPECIAL <= set(cands.candidates[pos])) == keep
            mlm += 1
    assert mlm >= 10


def test_a_texts_candidates_do_not_depend_on_the_texts_it_is_given_with(augmenter, monkeypatch):
    # Exact by construction: every masked-LM forward holds the rows of one text (checked below) and
    # every GloVe word is queried alone (test_glove), so a text's candidates come from the same
    # operations on the same tensors whichever texts share the call: batches, workers, runners.
    from augment.mlm import MaskedLMTeacher
    from tests.numerics import not_exact

    texts = [t for t in TEXTS if t.strip()] + ["the story of a great film and its funny cast , wonderful music",
                                               "love the plot , hate the script"]
    gen = augmenter.generator
    per_text = {}
    for text in texts:
        words = augmenter.words(text)
        pieces = [augmenter.tokenizer.ids(augmenter.tokenizer.wordpiece(w)) for w in words]
        per_text[text] = set(gen._mlm_rows(pieces, gen.eligible_positions(words))[1])
    forwards = []
    run = MaskedLMTeacher._run
    monkeypatch.setattr(MaskedLMTeacher, "_run", lambda self, rows, length, k: forwards.append(set(rows))
                        or run(self, rows, length, k))
    together = augmenter.candidates(texts)
    assert len(forwards) > len(texts) // 2 and all(any(f <= rows for rows in per_text.values()) for f in forwards)
    assert any(len(f) > 1 for f in forwards)  # rows of a text share forwards
    rng = random.Random(0)
    for _ in range(3):
        order = rng.sample(range(len(texts)), len(texts))
        cut = rng.randrange(1, len(texts))
        for part in (order[:cut], order[cut:]):
            for i, got in zip(part, augmenter.candidates([texts[i] for i in part])):
                assert got.candidates == together[i].candidates, texts[i]
                for pos, (ids, logits) in together[i].mlm_topk.items():
                    assert (got.mlm_topk[pos][0] == ids).all() and (got.mlm_topk[pos][1] == logits).all(), \
                        not_exact(f"logits of {texts[i]!r} at {pos}")


def test_a_squad_context_shared_by_several_questions_runs_its_forwards_once(augmenter):
    # Its jobs allow other positions (each question's answer is kept), yet their forwards are the
    # same: the text's rows, batch_size at a time, whichever of them are wanted.
    text = "the story of a great film and its funny cast , wonderful music and a good plot"
    before = augmenter.teacher.forward_calls
    alone = augmenter.candidates([text])[0]
    once = augmenter.teacher.forward_calls - before
    before = augmenter.teacher.forward_calls
    jobs = augmenter.candidates([text, text, text], positions=[[1, 4], [4, 8, 9], None])
    assert augmenter.teacher.forward_calls - before == once
    assert sorted(jobs[0].candidates) == [1, 4] and sorted(jobs[1].candidates) == [4, 8, 9]
    assert jobs[2].candidates == alone.candidates
    for job in jobs[:2]:
        assert all(job.candidates[p] == alone.candidates[p] for p in job.candidates)


def test_sources_follow_wordpiece_split(augmenter):
    cands = augmenter.candidates(["the heartfelt film"])[0]
    assert cands.words == ["the", "heartfelt", "film"]
    assert cands.sources == {1: "glove", 2: "mlm"}  # "heartfelt" splits into pieces; "the" is a stopword
    assert all(not w.startswith("##") for w in cands.candidates[2])


def test_unknown_multi_piece_word_keeps_itself(augmenter):
    cands = augmenter.candidates(["zqxj film"])[0]  # several pieces and no GloVe vector
    assert cands.candidates[0] == ["zqxj"] and cands.sources[0] == "none"


def test_degenerate_texts_give_the_original_only(augmenter):
    for text in ["", "   ", "the and of", "!!!"]:
        assert augmenter.augment(text) == [text]


def test_original_first_verbatim_then_distinct_variants(augmenter):
    out = augmenter.augment("The Acting is GOOD", example_id="e1")
    assert out[0] == "The Acting is GOOD"
    assert len(out) == len(set(out)) and "the acting is good" not in out[1:]
    assert 1 < len(out) <= 11


def test_same_output_whatever_batch_size_and_order(tiny_mlm, tiny_glove, tmp_path):
    ids = [f"ex-{i}" for i in range(len(TEXTS))]
    results = []
    for bs in (1, 64):
        aug = Augmenter.from_pretrained(str(tiny_mlm), str(tiny_glove), glove_cache_dir=str(tmp_path), batch_size=bs)
        results.append([r.texts for r in aug.augment_batch(TEXTS, ids)])
    order = list(range(len(TEXTS)))
    random.Random(0).shuffle(order)
    shuffled = aug.augment_batch([TEXTS[i] for i in order], [ids[i] for i in order])
    assert results[0] == results[1]
    assert [r.texts for r in sorted(shuffled, key=lambda r: ids.index(r.id))] == results[0]


def test_seed_changes_output(tiny_mlm, tiny_glove, tmp_path):
    a = Augmenter.from_pretrained(str(tiny_mlm), str(tiny_glove), glove_cache_dir=str(tmp_path), seed=1)
    b = Augmenter.from_pretrained(str(tiny_mlm), str(tiny_glove), glove_cache_dir=str(tmp_path), seed=2)
    assert a.augment(TEXTS[0]) != b.augment(TEXTS[0])


def test_positions_restrict_replacements(augmenter):
    words = augmenter.words(TEXTS[6])
    result = augmenter.augment_batch([TEXTS[6]], ["p"], positions=[[0]])[0]
    for variant in result.variant_words:
        assert variant[1:] == words[1:]


def test_single_mode_uses_the_masked_sentence_only(augmenter):
    gen = CandidateGenerator(augmenter.tokenizer, augmenter.teacher, augmenter.glove, k=5, mlm_input="single")
    before = augmenter.teacher.rows_run
    gen.generate(["a good film"])
    assert augmenter.teacher.rows_run - before == 2  # "good", "film"


def test_texts_must_be_str(augmenter):
    with pytest.raises(TypeError, match="text 0 is bytes"):
        augmenter.candidates([b"a film"])


def test_masks_beyond_max_length_get_no_candidates(tiny_glove, tmp_path):
    from tests.conftest import build_tiny_mlm

    model_dir = build_tiny_mlm(tmp_path / "short", max_positions=16)
    aug = Augmenter.from_pretrained(str(model_dir), str(tiny_glove), glove_cache_dir=str(tmp_path), n_aug=5)
    text = " ".join(["film"] * 30)
    cands = aug.candidates([text])[0]
    assert [cands.sources[p] for p in range(14)] == ["mlm"] * 14  # masks at positions 1..14 < 16
    assert all(cands.sources[p] == "none" and cands.candidates[p] == ["film"] for p in range(15, 30))


def test_config_validation():
    for bad in [dict(p_t=1.5), dict(n_aug=-1), dict(k=0), dict(mlm_input="triple"), dict(batch_size=0),
                dict(device="tpu"), dict(dtype="int8"), dict(glove_max_words=0), dict(keep_special_tokens="no")]:
        with pytest.raises(ValueError, match=next(iter(bad))):
            AugmentConfig(**bad)

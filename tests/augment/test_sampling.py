import pytest

from augment.sampling import example_rng, sample_variants

WORDS = ["a", "good", "film", "with", "great", "acting"]
CANDS = {1: ["fine", "bad", "great"], 2: ["movie", "story"], 4: ["superb"], 5: ["cast", "script", "music"]}


def test_p_zero_gives_no_variant_and_p_one_always_replaces():
    assert sample_variants(WORDS, CANDS, 0.0, 20, example_rng(0, "x")) == []
    variants = sample_variants(WORDS, CANDS, 1.0, 50, example_rng(0, "x"))
    for v in variants:
        for pos, options in CANDS.items():
            assert v[pos] in options
        assert [v[i] for i in (0, 3)] == ["a", "with"]  # ineligible positions never change
    # 3*2*1*3 = 18 combinations, all different from the original (position 4 always changes)
    assert len(variants) == len({tuple(v) for v in variants}) <= 18


def test_variants_are_distinct_and_never_the_original():
    variants = sample_variants(WORDS, CANDS, 0.4, 200, example_rng(1, "y"))
    joined = [" ".join(v) for v in variants]
    assert len(joined) == len(set(joined))
    assert " ".join(WORDS) not in joined
    assert len(variants) <= 200


def test_single_candidate_equal_to_word_yields_nothing():
    # a position whose only candidate is its own word (no candidates found) cannot make a variant
    assert sample_variants(["plot"], {0: ["plot"]}, 1.0, 10, example_rng(0, "z")) == []


def test_same_seed_and_id_same_stream_different_id_differs():
    a = sample_variants(WORDS, CANDS, 0.4, 20, example_rng(7, "id-1"))
    b = sample_variants(WORDS, CANDS, 0.4, 20, example_rng(7, "id-1"))
    c = sample_variants(WORDS, CANDS, 0.4, 20, example_rng(7, "id-2"))
    d = sample_variants(WORDS, CANDS, 0.4, 20, example_rng(8, "id-1"))
    assert a == b and a != c and a != d


def test_replacement_frequency_matches_p_t():
    # with one attempt per call and a fresh id each time, each position changes with probability
    # p_t * (1 - 1/|candidates containing the word|); here no candidate equals the word.
    cands = {0: ["x", "y"]}
    n, changed = 4000, 0
    for i in range(n):
        changed += len(sample_variants(["w"], cands, 0.3, 1, example_rng(0, str(i))))
    assert abs(changed / n - 0.3) < 0.03


def test_stream_order_is_choice_then_coin():
    # Hand-computed from the generator: per position, integers(len) then random().
    rng = example_rng(3, "hand")
    draws = [(int(rng.integers(2)), rng.random()) for _ in range(3)]
    expected = ["w"]
    seen = {"w"}
    out = []
    for choice, coin in draws:
        word = ["x", "y"][choice] if coin < 0.5 else "w"
        if word not in seen:
            seen.add(word)
            out.append([word])
    assert sample_variants(expected, {0: ["x", "y"]}, 0.5, 3, example_rng(3, "hand")) == out


def test_bad_candidates_are_refused():
    with pytest.raises(ValueError, match="empty candidate list"):
        sample_variants(["a"], {0: []}, 0.4, 1, example_rng(0, "a"))
    with pytest.raises(ValueError, match="outside"):
        sample_variants(["a"], {3: ["b"]}, 0.4, 1, example_rng(0, "a"))

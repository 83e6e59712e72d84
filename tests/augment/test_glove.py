import numpy as np
import pytest

from augment.glove import GloveFormatError, GloveIndex, parse_glove_text


def brute_force_nearest(words, vectors, word, k):
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    i = words.index(word)
    scores = unit.astype(np.float64) @ unit[i].astype(np.float64)
    scores[i] = -np.inf
    return [words[j] for j in np.argsort(-scores, kind="stable")[:k]]


def test_nearest_matches_brute_force(tiny_glove, tmp_path):
    words, vectors = parse_glove_text(tiny_glove)
    index = GloveIndex.load(tiny_glove, cache_dir=tmp_path)
    queries = ["film", "heartfelt", "superb", "the"]
    got = index.nearest(queries, 5)
    for q, g in zip(queries, got):
        assert g == brute_force_nearest(words, vectors, q, 5)
        assert q not in g


def test_unknown_word_has_no_neighbours_and_cache_counts(tiny_glove, tmp_path):
    index = GloveIndex.load(tiny_glove, cache_dir=tmp_path)
    assert index.nearest(["notaword", "film", "film"], 3)[0] == []
    assert index.cache_misses == 1
    index.nearest(["film"], 3)
    assert index.cache_hits == 1


def test_cache_round_trip_is_memory_mapped(tiny_glove, tmp_path):
    first = GloveIndex.load(tiny_glove, cache_dir=tmp_path)
    second = GloveIndex.load(tiny_glove, cache_dir=tmp_path)
    assert isinstance(second.vectors, np.memmap)
    assert second.words == first.words
    np.testing.assert_array_equal(np.asarray(second.vectors), np.asarray(first.vectors))
    assert len(list(tmp_path.iterdir())) == 1  # one entry, no temporary leftovers
    norms = np.linalg.norm(np.asarray(second.vectors), axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


def test_max_words_is_explicit(tiny_glove, tmp_path):
    index = GloveIndex.load(tiny_glove, max_words=10, cache_dir=tmp_path)
    assert len(index) == 10
    assert len(GloveIndex.load(tiny_glove, cache_dir=tmp_path)) > 10


def test_ties_break_by_row_order(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text("q 1 0\nb 0 1\na 0 1\nc 1 1\n")
    index = GloveIndex.load(path, use_cache=False)
    # b and a tie exactly (cosine 0); c is nearest; then b before a by row order
    assert index.nearest(["q"], 3) == [["c", "b", "a"]]


@pytest.mark.parametrize("content, message", [
    ("a 1 2 3\nb 1 2\n", "line 2 has 2 numbers, expected 3"),
    ("a 1 2 3\nb 1 x 3\n", "line 2 has a value that is not a number"),
    ("", "no vectors"),
    ("a\n", "line 1 has no vector"),
])
def test_malformed_files_name_the_line(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(GloveFormatError, match=message):
        GloveIndex.load(path, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_non_utf8_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"a 1 2\n\xff\xfe 1 2\n")
    with pytest.raises(GloveFormatError, match="line 2 is not valid UTF-8"):
        parse_glove_text(path)


def test_duplicate_word_keeps_first_vector(tmp_path):
    path = tmp_path / "dup.txt"
    path.write_text("a 1 0\nb 0 1\na 0 1\n")
    words, vectors = parse_glove_text(path)
    assert words == ["a", "b"] and vectors[0].tolist() == [1.0, 0.0]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="GloVe file not found"):
        GloveIndex.load(tmp_path / "nope.txt")


def test_every_word_is_queried_alone(tiny_glove, tmp_path, monkeypatch):
    # A word's neighbours must not depend on the words queried with it: each is queried alone, one
    # (1, d) product. So the lists below are exact by construction: every word's scores come from the
    # same operations on the same operands, queried together or one at a time, cached or not.
    from tests.numerics import not_exact

    index = GloveIndex.load(tiny_glove, cache_dir=tmp_path)
    shapes = []
    topk_rows = GloveIndex._topk_rows
    monkeypatch.setattr(GloveIndex, "_topk_rows", lambda self, rows, k: shapes.append(rows.shape) or topk_rows(self, rows, k))
    words = list(index.words)
    together = index.nearest(words, 3)
    assert shapes and set(shapes) == {(1,)} and len(shapes) == len(words)
    alone = [GloveIndex.load(tiny_glove, cache_dir=tmp_path).nearest([w], 3)[0] for w in words]
    assert together == alone, not_exact("neighbour lists")

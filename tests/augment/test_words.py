import pytest

from augment.words import STOPWORDS, WordPieceTokenizer, is_eligible, load_stopwords


def test_authors_stopword_list():
    # NLTK's 179 English stopwords minus the eight wh-words, plus "'s" and "'re".
    assert len(STOPWORDS) == 173
    assert {"the", "not", "don't", "'s", "'re"} <= STOPWORDS
    assert not {"what", "which", "who", "whom", "when", "where", "why", "how"} & STOPWORDS


@pytest.mark.parametrize("word, expected", [
    ("film", True), ("Film", True), ("the", False), ("THE", False), ("don", False),
    ("3d", False), ("co-op", False), (",", False), ("café", False), ("what", True),
])
def test_is_eligible(word, expected):
    assert is_eligible(word) is expected


def test_stopwords_override(tmp_path):
    path = tmp_path / "stop.txt"
    path.write_text("# mine\nFilm\n\nmovie\n")
    stop = load_stopwords(path)
    assert stop == {"film", "movie"}
    assert not is_eligible("film", stop) and is_eligible("the", stop)


def test_wordpiece_matches_python_bert_tokenizer(tiny_mlm):
    from tests.augment.per_word_reference import load_python_tokenizer

    ours = WordPieceTokenizer.from_pretrained(str(tiny_mlm))
    theirs = load_python_tokenizer(str(tiny_mlm))
    texts = ["The acting is heartfelt, and the STORY is wonderfully dull!",
             "Zzzz xylophone's qwerty", "", "   ", "a [MASK] film", "naïve café résumé",
             "x" * 150 + " film"]
    for text in texts:
        # special tokens stay whole, as in the BERT tokenizers the authors used
        assert ours.words(text) == theirs.basic_tokenizer.tokenize(text, never_split=theirs.all_special_tokens)
        assert ours.tokenize(text) == theirs.tokenize(text), text


def test_wordpiece_greedy_longest_match():
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "unaff", "##aff",
                                         "##able", "##a", "##ffable"])}
    tok = WordPieceTokenizer(vocab)
    assert tok.wordpiece("unaffable") == ["unaff", "##able"]  # longest first piece wins
    assert tok.wordpiece("unx") == ["[UNK]"]  # any unmatched rest makes the whole word unknown


def test_vocabulary_without_specials_is_refused():
    with pytest.raises(ValueError, match="MASK"):
        WordPieceTokenizer({"[CLS]": 0, "[SEP]": 1, "[PAD]": 2, "[UNK]": 3})


@pytest.mark.parametrize("where", ["tokenizer_config.json", "special_tokens_map.json"])
def test_special_ids_are_every_special_token_the_teacher_declares(tiny_mlm, tmp_path, where):
    import json
    import shutil

    from tests.augment.per_word_reference import load_python_tokenizer

    plain = WordPieceTokenizer.from_pretrained(str(tiny_mlm))
    assert plain.special_ids == {plain.id_of(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")}
    # A teacher that declares one more special token (a vocabulary word here): it is special too,
    # as transformers' own (Python) tokenizer of that folder says.
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_mlm, teacher)
    path = teacher / where
    config = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps(config | {"additional_special_tokens": ["movie"]}))
    declared = WordPieceTokenizer.from_pretrained(str(teacher))
    assert declared.special_ids == plain.special_ids | {declared.id_of("movie")}
    assert declared.special_ids == set(load_python_tokenizer(str(teacher)).all_special_ids)
    assert declared.words("a movie") == plain.words("a movie")  # splitting is unchanged

"""Words, WordPiece splits and eligibility (TinyBERT, Jiao et al. 2020, Algorithm 1).

The augmentation works on the teacher's *basic* tokens ("words"): lower-cased when the teacher is
uncased, punctuation split off. A word is eligible for replacement when it is made only of the
letters a-z (after lower-casing) and is not a stopword. Its WordPiece split decides where its
candidates come from: one piece -> masked LM, several pieces -> GloVe.

WordPiece is implemented here (greedy longest-match-first, as BERT's Python tokenizer does) so
the splits are identical whichever transformers version or tokenizer backend is installed.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

# The TinyBERT authors' stopword list (173 entries): NLTK's English list without the eight
# wh-words (what which who whom when where why how), plus "'s" and "'re".
STOPWORDS: frozenset[str] = frozenset("""
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves
he him his himself she she's her hers herself it it's its itself they them their theirs themselves
this that that'll these those am is are was were be been being have has had
having do does did doing a an the and but if or because as until while of at by for with about
against between into through during before after above below to from up down in out on off over
under again further then once here there all any both each few more most other
some such no nor not only own same so than too very s t can will just don don't should should've
now d ll m o re ve y ain aren aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn
hasn't haven haven't isn isn't ma mightn mightn't mustn mustn't needn needn't shan shan't shouldn
shouldn't wasn wasn't weren weren't won won't wouldn wouldn't 's 're
""".split())

_LETTERS_ONLY = re.compile(r"[a-z]+")


def is_eligible(word: str, stopwords: frozenset[str] = STOPWORDS) -> bool:
    """True when ``word`` is letters a-z only (after lower-casing) and not a stopword."""
    lowered = word.lower()
    return bool(_LETTERS_ONLY.fullmatch(lowered)) and lowered not in stopwords


def load_stopwords(path: str | Path) -> frozenset[str]:
    """Read a stopword file: one word per line, blank lines and ``#`` comments ignored."""
    words = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                words.append(line.lower())
    return frozenset(words)


@dataclass
class WordPieceTokenizer:
    """BERT's basic tokenizer + WordPiece, with the teacher's vocabulary and casing.

    Args:
        vocab: token -> id, as in the teacher's ``vocab.txt``.
        do_lower_case: lower-case (and strip accents) before splitting, as uncased BERTs do.
        special_tokens: tokens the basic tokenizer must never split (BERT's five, as in the authors'
            tokenizer).
        teacher_special_tokens: every special token the teacher's tokenizer declares (its own names
            for cls, sep, unk..., additional ones, added tokens marked special); with
            ``special_tokens`` they make :attr:`special_ids`.
    """

    vocab: Mapping[str, int]
    do_lower_case: bool = True
    tokenize_chinese_chars: bool = True
    strip_accents: bool | None = None
    special_tokens: tuple[str, ...] = ("[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]")
    unk_token: str = "[UNK]"
    max_input_chars_per_word: int = 100
    teacher_special_tokens: tuple[str, ...] = ()
    _basic: object = field(init=False, repr=False)
    _ids_to_tokens: list[str] = field(init=False, repr=False)
    _special_ids: frozenset[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from transformers import BasicTokenizer  # importable in transformers 4 and 5

        self._basic = BasicTokenizer(
            do_lower_case=self.do_lower_case,
            never_split=list(self.special_tokens),
            tokenize_chinese_chars=self.tokenize_chinese_chars,
            strip_accents=self.strip_accents,
        )
        self._ids_to_tokens = [""] * (max(self.vocab.values()) + 1)
        for token, idx in self.vocab.items():
            self._ids_to_tokens[idx] = token
        for tok in ("[CLS]", "[SEP]", "[MASK]", "[PAD]", self.unk_token):
            if tok not in self.vocab:
                raise ValueError(f"vocabulary has no {tok!r} token: not a BERT WordPiece vocabulary")
        named = (*self.special_tokens, self.unk_token, *self.teacher_special_tokens)
        self._special_ids = frozenset(self.vocab[t] for t in named if t in self.vocab)

    @classmethod
    def from_pretrained(cls, name_or_path: str) -> "WordPieceTokenizer":
        """Build from a local model directory (``vocab.txt`` + ``tokenizer_config.json``) or a hub name."""
        path = Path(name_or_path)
        if path.is_dir() and (path / "vocab.txt").is_file():
            vocab = _read_vocab(path / "vocab.txt")
            config = {}
            if (path / "tokenizer_config.json").is_file():
                config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
            return cls(
                vocab=vocab,
                do_lower_case=config.get("do_lower_case", True),
                tokenize_chinese_chars=config.get("tokenize_chinese_chars", True),
                strip_accents=config.get("strip_accents"),
                teacher_special_tokens=declared_special_tokens(_hf_tokenizer(name_or_path)),
            )
        tok = _hf_tokenizer(name_or_path)
        init = getattr(tok, "init_kwargs", {})
        return cls(
            vocab=dict(tok.get_vocab()),
            do_lower_case=init.get("do_lower_case", getattr(tok, "do_lower_case", True)),
            tokenize_chinese_chars=init.get("tokenize_chinese_chars", True),
            strip_accents=init.get("strip_accents"),
            teacher_special_tokens=declared_special_tokens(tok),
        )

    # -- splitting ---------------------------------------------------------------------------
    def words(self, text: str) -> list[str]:
        """The basic tokenizer's words of ``text`` (lower-cased for an uncased teacher)."""
        return self._basic.tokenize(text)

    def wordpiece(self, word: str) -> list[str]:
        """Greedy longest-match-first WordPiece split of one basic word."""
        if len(word) > self.max_input_chars_per_word:
            return [self.unk_token]
        pieces: list[str] = []
        start = 0
        while start < len(word):
            end = len(word)
            piece = None
            while start < end:
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                if sub in self.vocab:
                    piece = sub
                    break
                end -= 1
            if piece is None:
                return [self.unk_token]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """Word pieces of ``text``, as BERT's ``tokenizer.tokenize``."""
        return [p for w in self.words(text) for p in self.wordpiece(w)]

    # -- ids ---------------------------------------------------------------------------------
    def ids(self, tokens: Iterable[str]) -> list[int]:
        unk = self.vocab[self.unk_token]
        return [self.vocab.get(t, unk) for t in tokens]

    def tokens(self, ids: Iterable[int]) -> list[str]:
        return [self._ids_to_tokens[i] for i in ids]

    def id_of(self, token: str) -> int:
        return self.vocab[token]

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids of every special token of the teacher ([CLS], [SEP], [UNK], [PAD], [MASK] and any
        others its tokenizer declares): control symbols, never words of a text."""
        return self._special_ids


def declared_special_tokens(tokenizer) -> tuple[str, ...]:
    """Every special token a transformers tokenizer declares, whatever the model family calls them:
    ``all_special_tokens`` (cls, sep, unk, pad, mask, bos, eos, additional ones) and the added
    tokens marked special. Sorted, so the order never depends on the loading path."""
    names = set(tokenizer.all_special_tokens)
    names |= {t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special}
    return tuple(sorted(names))


def _hf_tokenizer(name_or_path: str):
    """The teacher's transformers tokenizer (only its special tokens and, for a hub name, its vocabulary
    and casing are read from it; the splitting is this module's)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name_or_path)


def _read_vocab(path: Path) -> dict[str, int]:
    vocab: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for idx, line in enumerate(f):
            token = line.rstrip("\n")
            vocab[token] = idx  # a repeated token takes its last line, as BERT's load_vocab does
    return vocab

"""The TinyBERT augmenter: candidates + sampling, for one text or a batch.

Reference: Jiao et al., "TinyBERT: Distilling BERT for Natural Language Understanding" (Findings of
EMNLP 2020), Algorithm 1.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Callable, Sequence

from augment.candidates import CandidateGenerator, TextCandidates
from augment.config import AugmentConfig
from augment.glove import GloveIndex
from augment.mlm import MaskedLMTeacher
from augment.sampling import example_rng, sample_variants
from augment.words import WordPieceTokenizer

log = logging.getLogger(__name__)


@dataclass
class Augmented:
    """One text's augmentation.

    Attributes:
        id: the example id that seeded its randomness.
        texts: the original (verbatim) first, then the distinct variants (words joined by spaces).
        words: the original's words; variant_words: each variant's words.
    """

    id: str
    texts: list[str]
    words: list[str]
    variant_words: list[list[str]]

    def record(self) -> dict:
        """``{"id", "text", "variants"}``: the JSON object ``augment text`` writes (and the service returns)."""
        return {"id": self.id, "text": self.texts[0], "variants": self.texts[1:]}


class Augmenter:
    """TinyBERT data augmentation with a BERT masked LM and GloVe.

    Build with :meth:`from_pretrained`; call :meth:`augment` for one text or
    :meth:`augment_batch` for many (faster: all masked-LM queries of the batch run together).
    """

    def __init__(self, tokenizer: WordPieceTokenizer, teacher: MaskedLMTeacher, glove: GloveIndex,
                 config: AugmentConfig = AugmentConfig(), teacher_name: str = "") -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.teacher = teacher
        self.glove = glove
        self.teacher_name = teacher_name
        self.generator = CandidateGenerator(
            tokenizer, teacher, glove, k=config.k, mlm_input=config.mlm_input,
            stopwords=config.stopwords, batch_size=config.batch_size, pad_multiple=config.pad_multiple,
            keep_special_tokens=config.keep_special_tokens,
        )

    @classmethod
    def from_pretrained(cls, teacher: str, glove: str, config: AugmentConfig | None = None,
                        glove_cache_dir: str | None = None, **params) -> "Augmenter":
        """Load the teacher (hub name or local path) and GloVe file.

        ``params`` override fields of ``config`` (``p_t=0.3, n_aug=10, ...``).
        """
        config = dataclasses.replace(config or AugmentConfig(), **params)
        tokenizer = WordPieceTokenizer.from_pretrained(teacher)
        model = MaskedLMTeacher.from_pretrained(teacher, device=config.device, dtype=config.dtype)
        index = GloveIndex.load(glove, max_words=config.glove_max_words, cache_dir=glove_cache_dir)
        return cls(tokenizer, model, index, config, teacher_name=teacher)

    def words(self, text: str) -> list[str]:
        """The words of ``text`` as augmentation sees them (the teacher's basic tokenizer)."""
        return self.tokenizer.words(text)

    # -- candidates --------------------------------------------------------------------------
    def candidates(self, texts: Sequence[str], positions=None,
                   on_rows: Callable[[int], None] | None = None) -> list[TextCandidates]:
        """Candidate words for every eligible word of each text (see :class:`TextCandidates`)."""
        return self.generator.generate(texts, positions=positions, on_rows=on_rows)

    # -- augmentation ------------------------------------------------------------------------
    def sample(self, cands: TextCandidates, example_id: str, p_t: float | None = None, n_aug: int | None = None,
               seed: int | None = None) -> list[list[str]]:
        """The distinct variants (as word lists) of a text whose candidates are known.

        ``p_t``, ``n_aug`` and ``seed`` override the config's for this text (sampling only: the
        candidates do not depend on them, which lets the service share one candidate batch between
        requests that sample differently).
        """
        c = self.config
        rng = example_rng(c.seed if seed is None else seed, example_id)
        return sample_variants(cands.words, cands.candidates, c.p_t if p_t is None else p_t,
                               c.n_aug if n_aug is None else n_aug, rng)

    def augmented(self, text: str, example_id: str, cands: TextCandidates, **sampling) -> Augmented:
        """One text's :class:`Augmented` from its candidates (``sampling``: see :meth:`sample`)."""
        variants = self.sample(cands, example_id, **sampling)
        return Augmented(id=example_id, texts=[text] + [" ".join(v) for v in variants],
                         words=cands.words, variant_words=variants)

    def augment_batch(self, texts: Sequence[str], ids: Sequence[str] | None = None,
                      positions=None) -> list[Augmented]:
        """Augment many texts. ``ids`` seed each text's randomness (default: the text itself)."""
        ids = list(texts) if ids is None else [str(i) for i in ids]
        if len(ids) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(ids)} ids")
        return [self.augmented(text, example_id, cands)
                for text, example_id, cands in zip(texts, ids, self.candidates(texts, positions=positions))]

    def augment(self, text: str, example_id: str | None = None) -> list[str]:
        """The original text followed by its distinct variants."""
        return self.augment_batch([text], None if example_id is None else [example_id])[0].texts

    def stats(self) -> dict:
        return {"mlm_rows": self.teacher.rows_run, "mlm_forwards": self.teacher.forward_calls,
                "glove_cache_hits": self.glove.cache_hits, "glove_cache_misses": self.glove.cache_misses}

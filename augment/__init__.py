"""TinyBERT data augmentation (Jiao et al., 2020, Algorithm 1) as a library.

    from augment import Augmenter
    aug = Augmenter.from_pretrained("bert-base-uncased", "glove.6B.300d.txt", n_aug=20)
    aug.augment("a gripping , funny film")   # [original, variant, ...]
"""
from augment.augmenter import Augmented, Augmenter
from augment.candidates import CandidateGenerator, TextCandidates
from augment.config import AUTHORS_N_AUG, AugmentConfig, authors_n_aug
from augment.glove import GloveFormatError, GloveIndex
from augment.mlm import MaskedLMTeacher, TeacherError
from augment.sampling import example_rng, sample_variants
from augment.words import STOPWORDS, WordPieceTokenizer, is_eligible

__version__ = "0.1.0"

__all__ = [
    "AUTHORS_N_AUG", "Augmented", "Augmenter", "AugmentConfig", "CandidateGenerator", "GloveFormatError",
    "GloveIndex", "MaskedLMTeacher", "STOPWORDS", "TeacherError", "TextCandidates", "WordPieceTokenizer",
    "authors_n_aug", "example_rng", "is_eligible", "sample_variants",
]

"""Sampling of augmented variants (TinyBERT, Jiao et al. 2020, Algorithm 1, lines 12-19).

N_a attempts; in each, every eligible position draws one of its candidates uniformly and takes it
with probability p_t. An attempt equal to the original or to an earlier attempt is dropped.

Randomness comes from ``(seed, example_id)`` only, so a text's variants do not depend on which
batch, worker or device it was processed with.
"""
from __future__ import annotations

import hashlib
from typing import Mapping, Sequence

import numpy as np


def example_rng(seed: int, example_id: str) -> np.random.Generator:
    """A generator determined by the global seed and the example's stable id."""
    digest = hashlib.sha256(example_id.encode("utf-8")).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed & 0xFFFFFFFF, *words])))


def sample_variants(
    words: Sequence[str],
    candidates: Mapping[int, Sequence[str]],
    p_t: float,
    n_aug: int,
    rng: np.random.Generator,
) -> list[list[str]]:
    """Distinct variants of ``words``, in the order first drawn (the original excluded).

    Args:
        words: the text's words.
        candidates: position -> non-empty candidate list, for the eligible positions.
        p_t: replacement probability; n_aug: number of attempts.

    Each attempt visits positions in increasing order and, for each, draws the candidate index and
    then the uniform number (as the authors' script does), so the stream is consumed identically
    whatever the outcome.
    """
    positions = sorted(candidates)
    for pos in positions:
        if not candidates[pos]:
            raise ValueError(f"position {pos} has an empty candidate list; give it its own word")
        if not 0 <= pos < len(words):
            raise ValueError(f"candidate position {pos} outside the text's {len(words)} words")
    # Compared as joined text, as written out: two word lists that join alike are one variant.
    seen = {" ".join(words)}
    variants: list[list[str]] = []
    for _ in range(n_aug):
        new = list(words)
        for pos in positions:
            options = candidates[pos]
            choice = options[int(rng.integers(len(options)))]
            if rng.random() < p_t:
                new[pos] = choice
        key = " ".join(new)
        if key not in seen:
            seen.add(key)
            variants.append(new)
    return variants

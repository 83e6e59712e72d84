"""A deterministic stand-in for augment.Augmenter (no model): fast unit and TestPipeline tests.

It has the engine's interface (``words``, ``augment_batch(texts, ids, positions)``,
``stats()``) and its contract: the original verbatim first, variants that depend only on the
example id and the text, replaced positions restricted to ``positions`` when given.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

from augment import Augmented


@dataclass
class FakeAugmenter:
    n_aug: int = 3
    fail_on: str = "EXPLODE"  # a text containing this makes augment_batch raise
    trace: str | None = None  # a file that gets a line (the text count) per augment_batch call

    def __post_init__(self):
        self.calls = 0
        self.texts = 0

    def words(self, text: str) -> list[str]:
        """Lower-cased words and punctuation, like BERT's basic tokenizer on ASCII text."""
        return re.findall(r"\w+|[^\w\s]", text.lower())

    def augment_batch(self, texts, ids=None, positions=None):
        ids = list(texts) if ids is None else list(ids)
        self.calls += 1
        self.texts += len(texts)
        if self.trace:
            with open(self.trace, "a") as f:
                f.write(f"{len(texts)}\n")
        out = []
        for t, (text, example_id) in enumerate(zip(texts, ids)):
            if self.fail_on in text:
                raise RuntimeError(f"cannot augment {text!r}")
            words = self.words(text)
            allowed = None if positions is None or positions[t] is None else set(positions[t])
            eligible = [i for i, w in enumerate(words) if w.isalpha() and (allowed is None or i in allowed)]
            h = int(hashlib.sha256(example_id.encode()).hexdigest(), 16)
            count = 0 if not eligible else h % (self.n_aug + 1)
            variants = []
            for j in range(count):
                v = list(words)
                pos = eligible[(h + j) % len(eligible)]
                v[pos] = f"{v[pos]}{'z' * (j + 1)}"
                variants.append(v)
            out.append(Augmented(example_id, [text] + [" ".join(v) for v in variants], words, variants))
        return out

    def stats(self):
        return {"mlm_rows": self.texts, "mlm_forwards": self.calls, "glove_cache_hits": 0, "glove_cache_misses": 0}


class FakeLoader:
    """Picklable loader for AugmentFn: builds a FakeAugmenter in each worker.

    With ``pid_dir``, the loading process leaves a file named by its pid there, which gets a line
    per engine call it then makes.
    """

    def __init__(self, n_aug: int = 3, pid_dir: str | None = None):
        self.n_aug, self.pid_dir = n_aug, pid_dir

    @property
    def key(self) -> str:  # shared.Shared's cache tag: loaders that differ never share a fake
        return f"fake(n_aug={self.n_aug}, pid_dir={self.pid_dir})"

    def __call__(self):
        trace = None
        if self.pid_dir:
            trace = os.path.join(self.pid_dir, str(os.getpid()))
            open(trace, "w").close()
        return FakeAugmenter(self.n_aug, trace=trace)

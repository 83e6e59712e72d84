"""A straightforward per-word implementation of TinyBERT's candidate generation.

Written independently of ``augment/`` to check it: transformers' Python BERT tokenizer, one
batch-1 full forward of ``BertForMaskedLM`` per masked word (vocabulary logits at every position,
no padding, no cache), GloVe parsed in float64 and searched one word at a time with a full argsort
-- the procedure of the authors' ``data_augmentation.py``. The benchmark uses it as the baseline.
With ``keep_special_tokens=False`` (the engine's default, not the authors') the top-K also loses the
ids in the Python tokenizer's ``all_special_ids``, as it loses ``##`` pieces.
"""
from __future__ import annotations

import re

import numpy as np
import torch

from augment.words import STOPWORDS
from tests.numerics import LAMBDA, U32, float32_bound


def load_python_tokenizer(path: str):
    try:
        from transformers import BertTokenizerLegacy as Tok  # transformers 5: the Python WordPiece
    except ImportError:  # transformers 4
        from transformers import BertTokenizer as Tok
    return Tok.from_pretrained(path)


class PerWordReference:
    def __init__(self, model, tokenizer, glove_path: str, k: int = 15, mlm_input: str = "pair",
                 keep_special_tokens: bool = False, memoise: bool = False):
        """``memoise``: keep each masked word's forward (a vocabulary of logits each), so a test can
        check both ``keep_special_tokens`` settings with one set of forwards; off for benchmarks."""
        self.model = model.eval()
        self.tok = tokenizer
        self.k = k
        self.mlm_input = mlm_input
        self.keep_special_tokens = keep_special_tokens
        self._memo = {} if memoise else None
        words, rows = [], []
        with open(glove_path, encoding="utf-8") as f:
            for line in f:
                items = line.rstrip().split(" ")
                words.append(items[0])
                rows.append([float(x) for x in items[1:]])
        emb = np.array(rows, dtype=np.float64)
        self.emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        self.words = words
        self.vocab = {w: i for i, w in enumerate(words)}

    def eligible(self, word: str) -> bool:
        return re.fullmatch("[a-z]+", word.lower()) is not None and word.lower() not in STOPWORDS

    def glove(self, word: str):
        """(candidates, cosine per candidate, cosine of every row)."""
        if word not in self.vocab:
            return [], None
        i = self.vocab[word]
        dist = self.emb @ self.emb[i]
        dist[i] = -np.inf
        ids = np.argsort(-dist, kind="stable")
        ids = ids[ids != i][: self.k]  # itself excluded, also when K reaches the vocabulary's size
        cands = [self.words[j] for j in ids]
        if word.istitle():
            cands = [c.title() for c in cands]
        return cands, dist

    def mlm(self, text: str, word_index: int):
        """(raw top-K ids, full logits at the mask) or (None, None) beyond the max length."""
        if self._memo is None:
            return self._mlm(text, word_index)
        key = (text, word_index, self.mlm_input, self.k)
        if key not in self._memo:
            self._memo[key] = self._mlm(text, word_index)
        return self._memo[key]

    @torch.inference_mode()
    def _mlm(self, text: str, word_index: int):
        pieces = self.tok.tokenize(text)
        words = self.tok.basic_tokenizer.tokenize(text)
        starts, n = [], 0
        for w in words:
            starts.append(n)
            n += len(self.tok.wordpiece_tokenizer.tokenize(w))
        mask_pos = 1 + starts[word_index]
        max_len = self.model.config.max_position_embeddings
        if mask_pos >= max_len:
            return None, None
        masked = list(pieces)
        masked[mask_pos - 1] = "[MASK]"
        if self.mlm_input == "pair":
            seq = ["[CLS]"] + masked + ["[SEP]"] + pieces + ["[SEP]"]
            seg = [0] * (len(masked) + 2) + [1] * (len(pieces) + 1)
        else:
            seq = ["[CLS]"] + masked + ["[SEP]"]
            seg = [0] * len(seq)
        seq, seg = seq[:max_len], seg[:max_len]
        ids = torch.tensor([self.tok.convert_tokens_to_ids(seq)])
        logits = self.model(input_ids=ids, token_type_ids=torch.tensor([seg])).logits[0, mask_pos]
        top = torch.argsort(logits, descending=True, stable=True)[: self.k]
        return top.numpy(), logits.numpy()

    def candidates(self, text: str) -> dict:
        """position -> (source, candidates, raw detail) for every eligible word."""
        words = self.tok.basic_tokenizer.tokenize(text)
        out = {}
        for i, w in enumerate(words):
            if not self.eligible(w):
                continue
            if len(self.tok.wordpiece_tokenizer.tokenize(w)) == 1:
                top, logits = self.mlm(text, i)
                if top is None:
                    out[i] = ("none", [w], None)
                    continue
                special = set() if self.keep_special_tokens else set(self.tok.all_special_ids)
                cands = [t for j, t in zip(top.tolist(), self.tok.convert_ids_to_tokens(top.tolist()))
                         if not t.startswith("##") and j not in special]
                out[i] = ("mlm", cands or [w], (top, logits)) if cands else ("none", [w], None)
            else:
                cands, dist = self.glove(w)
                out[i] = ("glove", cands, dist) if cands else ("none", [w], None)
        return out


def within_tolerance(a, b, score, tol: float) -> tuple[bool, int]:
    """Are two ranked lists equal up to swaps of near-tied entries?

    ``a``, ``b``: equal-length ranked keys; ``score(key)`` is the reference score. Rank ``r`` may
    differ only if the two keys there score within ``tol``. Returns (ok, number of ranks tolerated).
    """
    if len(a) != len(b):
        return False, 0
    swaps = 0
    for x, y in zip(a, b):
        if x == y:
            continue
        if abs(score(x) - score(y)) > tol:
            return False, swaps
        swaps += 1
    return True, swaps


def tolerances(engine, ref: "PerWordReference", texts) -> tuple[float, float]:
    """How near two candidates must score for the engine and the reference to rank them either
    way. Masked LM: the two compute the same logits by other operations, within float32_bound of
    each other (tests/numerics.py; at the teacher's longest rows) relative to the largest |logit| of
    the texts' rows, so a swap needs reference logits within twice that. GloVe: the reference's
    float64 cosines are exact to float32's eyes; the engine's are sums of d products of float32 unit
    vectors (within lambda sqrt(d) u) stored rounded (2 u), so a swap needs cosines within twice that."""
    scale = max((float(abs(detail[1]).max()) for text in texts for source, _, detail in ref.candidates(text).values()
                 if source == "mlm"), default=0.0)
    dim = engine.glove.dim
    mlm = 2 * float32_bound(engine.teacher.model.config, engine.teacher.max_length) * scale
    return mlm, 2 * (LAMBDA * dim ** 0.5 + 2) * U32


def compare(ref: PerWordReference, engine_cands, text: str, tol_logit: float = 1e-4, tol_cos: float = 1e-5) -> dict:
    """Compare the engine's TextCandidates for ``text`` with the reference's.

    Returns counts: ``positions``, ``exact`` (identical lists), ``tolerated`` (ranks that differ
    only by a near-tie swap) and ``mismatches`` (details of real differences).
    """
    expected = ref.candidates(text)
    report = {"positions": 0, "exact": 0, "tolerated": 0, "mismatches": []}
    if set(engine_cands.candidates) != set(expected):
        report["mismatches"].append(("positions", sorted(engine_cands.candidates), sorted(expected)))
        return report
    for pos, (source, cands, detail) in expected.items():
        report["positions"] += 1
        got = engine_cands.candidates[pos]
        if engine_cands.sources[pos] != source:
            report["mismatches"].append((pos, "source", engine_cands.sources[pos], source))
        elif got == cands:
            report["exact"] += 1
        elif source == "mlm":  # compare the raw top-K ids, scored by the reference's logits
            ref_ids, logits = detail
            ok, n = within_tolerance(list(engine_cands.mlm_topk[pos][0]), list(ref_ids),
                                     lambda j: float(logits[j]), tol_logit)
            ok = ok and n > 0  # the same top-K giving other words: the filtering differs, not rounding
            report["tolerated" if ok else "mismatches"] += n if ok else [(pos, source, got, cands)]
        elif source == "glove":
            ok, n = within_tolerance([w.lower() for w in got], [w.lower() for w in cands],
                                     lambda w: float(detail[ref.vocab[w]]), tol_cos)
            ok = ok and n > 0  # the same neighbours, other casing: not a rounding difference
            report["tolerated" if ok else "mismatches"] += n if ok else [(pos, source, got, cands)]
        else:
            report["mismatches"].append((pos, source, got, cands))
    return report

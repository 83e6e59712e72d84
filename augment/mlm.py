"""Masked-LM candidates, batched (TinyBERT augmentation, single-piece words).

One *query row* per masked word. In ``pair`` mode (the paper's, and the authors' script's) the
teacher sees ``[CLS] sentence-with-the-word-[MASK]ed [SEP] original sentence [SEP]`` with segment
ids 0 then 1; in ``single`` mode only ``[CLS] masked sentence [SEP]`` (about half the compute, not
identical to the paper). Rows are grouped by a canonical padded length (``pad_multiple``), run
through the encoder in inference mode, and only the hidden state at the mask goes through the
vocabulary projection.

Batch invariance: a row's logits are a function of the rows it is given with to :meth:`topk`
(rows of one canonical length run ``batch_size`` at a time, in the order given), and the candidate
generator gives each text's rows alone, so a text's candidates do not depend on which other texts
share a call, to the last bit, on any CPU (the same operations on the same tensors). Equal shapes
would not be enough: the matrix library may compute rows at different positions of one product
with different kernels (MKL's float32 GEMM does on AVX-512), so a row's last bits would move with
its place in a shared batch. A different ``batch_size``, ``pad_multiple``, device, dtype, CPU kind
or thread count changes rounding (~1e-6 here), which can only reorder candidates tied within it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from augment import fast_bert

log = logging.getLogger(__name__)

MLM_INPUTS = ("pair", "single")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TeacherError(ValueError):
    """The teacher cannot serve as the augmentation masked LM."""


@dataclass(frozen=True)
class QueryRow:
    """One masked-LM query: token ids, segment ids and the mask position.  Hashable for dedup."""

    input_ids: tuple[int, ...]
    token_type_ids: tuple[int, ...]
    mask_pos: int


def build_query_row(
    piece_ids: Sequence[Sequence[int]],
    word_index: int,
    *,
    cls_id: int,
    sep_id: int,
    mask_id: int,
    max_length: int,
    mlm_input: str = "pair",
) -> QueryRow | None:
    """The query row that masks word ``word_index`` (a single piece) of a text.

    Args:
        piece_ids: the WordPiece ids of each word of the text.
        max_length: the teacher's maximum positions; the row is truncated to it, and a mask that
            would fall at or beyond it gives ``None`` (no candidates), as in the authors' script.
    """
    if len(piece_ids[word_index]) != 1:
        raise ValueError(f"word {word_index} has {len(piece_ids[word_index])} pieces; only single-piece words are masked")
    flat = [p for word in piece_ids for p in word]
    mask_pos = 1 + sum(len(w) for w in piece_ids[:word_index])  # +1 for [CLS]
    if mask_pos >= max_length:
        return None
    masked = list(flat)
    masked[mask_pos - 1] = mask_id
    if mlm_input == "pair":
        ids = [cls_id] + masked + [sep_id] + flat + [sep_id]
        types = [0] * (len(masked) + 2) + [1] * (len(flat) + 1)
    elif mlm_input == "single":
        ids = [cls_id] + masked + [sep_id]
        types = [0] * len(ids)
    else:
        raise ValueError(f"mlm_input must be one of {MLM_INPUTS}, got {mlm_input!r}")
    return QueryRow(tuple(ids[:max_length]), tuple(types[:max_length]), mask_pos)


def padded_length(n: int, multiple: int, max_length: int) -> int:
    """The canonical length a row of ``n`` tokens is padded to."""
    return min(-(-n // multiple) * multiple, max(max_length, n))


class MaskedLMTeacher:
    """A BERT masked LM that answers batched top-k queries at masked positions.

    Args:
        model: a ``*ForMaskedLM`` model. For BERT (``.bert`` + ``.cls``) only the masked
            position's hidden state is projected onto the vocabulary; other MLMs fall back to the
            full forward.
        device, dtype: where and in what precision to run (``bfloat16``/``float16`` are fast on a
            GPU but can reorder near-tied candidates).
    """

    def __init__(self, model: torch.nn.Module, device: str = "cpu", dtype: str = "float32", pad_id: int = 0) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = model.to(self.device, DTYPES[dtype]).eval()
        self.pad_id = pad_id
        self.max_length = int(getattr(model.config, "max_position_embeddings", 512))
        self.type_vocab_size = int(getattr(model.config, "type_vocab_size", 1) or 1)
        self.rows_run = 0
        self.forward_calls = 0
        # BERT layouts skip the work the mask does not need; other MLMs run the full forward.
        self._fast = fast_bert.supports(model)

    @classmethod
    def from_pretrained(cls, name_or_path: str, device: str = "cpu", dtype: str = "float32") -> "MaskedLMTeacher":
        """Load a masked LM by hub name or local path; refuses a model without an MLM head."""
        from transformers import AutoConfig, AutoModelForMaskedLM

        try:
            config = AutoConfig.from_pretrained(name_or_path)
        except (OSError, ValueError) as e:
            raise TeacherError(f"cannot load teacher config from {name_or_path!r}: {e}") from e
        archs = getattr(config, "architectures", None) or []
        if archs and not any(a.endswith(("ForMaskedLM", "ForPreTraining")) for a in archs):
            raise TeacherError(
                f"teacher {name_or_path!r} is not a masked language model (architectures: {archs}); "
                "augmentation needs a *ForMaskedLM checkpoint such as bert-base-uncased"
            )
        try:
            model = AutoModelForMaskedLM.from_pretrained(name_or_path, config=config)
        except (OSError, ValueError, KeyError) as e:
            raise TeacherError(f"cannot load {name_or_path!r} as a masked language model: {e}") from e
        return cls(model, device=device, dtype=dtype, pad_id=config.pad_token_id or 0)

    @torch.inference_mode()
    def topk(
        self,
        rows: Sequence[QueryRow],
        k: int,
        batch_size: int = 64,
        pad_multiple: int = 8,
        on_batch: Callable[[int], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` vocabulary ids by logit at each row's mask.

        Rows are grouped by canonical length (``pad_multiple``); each group runs ``batch_size`` rows
        at a time in the order given, the last forward holding the rest. So a row's logits depend on
        ``rows`` (which rows share its forward), not on anything else.

        Returns:
            ids (n, k) int64 and logits (n, k) float32, best first; ties broken by lower id.
        """
        n = len(rows)
        out_ids = np.zeros((n, k), dtype=np.int64)
        out_val = np.zeros((n, k), dtype=np.float32)
        if n == 0:
            return out_ids, out_val
        if self.type_vocab_size < 2 and any(1 in r.token_type_ids for r in rows):
            raise TeacherError("teacher has a single segment embedding; use mlm_input='single'")
        lengths = np.array([padded_length(len(r.input_ids), pad_multiple, self.max_length) for r in rows])
        for length in np.unique(lengths):
            group = np.flatnonzero(lengths == length)
            for start in range(0, len(group), batch_size):
                idx = group[start : start + batch_size]
                ids, vals = self._run([rows[i] for i in idx], int(length), k)
                out_ids[idx], out_val[idx] = ids, vals
                self.rows_run += len(idx)
                if on_batch:
                    on_batch(len(idx))
        return out_ids, out_val

    def _run(self, rows: Sequence[QueryRow], length: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        b = len(rows)
        input_ids = torch.full((b, length), self.pad_id, dtype=torch.long)
        types = torch.zeros((b, length), dtype=torch.long)
        mask = torch.zeros((b, length), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r.input_ids)
            input_ids[i, :n] = torch.tensor(r.input_ids)
            types[i, :n] = torch.tensor(r.token_type_ids)
            mask[i, :n] = 1
        mask_pos = torch.tensor([r.mask_pos for r in rows])
        logits = self._masked_logits(input_ids.to(self.device), types.to(self.device), mask.to(self.device), mask_pos.to(self.device))
        self.forward_calls += 1
        return _sorted_topk(logits.float().cpu(), k)

    def _masked_logits(self, input_ids, token_type_ids, attention_mask, mask_pos) -> torch.Tensor:
        """(B, V) logits at each row's mask position."""
        if self._fast:
            return fast_bert.masked_logits(self.model, input_ids, token_type_ids, attention_mask, mask_pos)
        out = self.model(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
        batch = torch.arange(input_ids.shape[0], device=input_ids.device)
        return out.logits[batch, mask_pos]


def _sorted_topk(logits: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each row of (B, V) logits, sorted by (-logit, id) so exact ties are deterministic."""
    k = min(k, logits.shape[1])
    vals, ids = torch.topk(logits, k, dim=1)
    vals, ids = vals.numpy(), ids.numpy()
    for r in range(len(ids)):
        order = np.lexsort((ids[r], -vals[r]))
        ids[r], vals[r] = ids[r][order], vals[r][order]
    return ids.astype(np.int64), vals.astype(np.float32)

"""TinyBERT distillation losses (Jiao et al., 2020, "TinyBERT: Distilling BERT for Natural Language
Understanding", Sec. 3.1) as pure functions ``(student, teacher, mask=None) -> Tensor``.

Every loss is a scalar mean over the positions that ``mask`` keeps, so a batch padded to 64 tokens
gives the same value as the same batch padded to 16 (padding-safe, tested). The authors' script
averages over every position, padding included; with dynamic padding that would make the loss depend
on the longest sentence in the batch.

Shapes: B batch, T tokens, H hidden, nh heads, C classes.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

#: Pre-softmax scores at or below this are treated as masked (the authors' ``<= -1e2`` -> 0 rule),
#: so scores that already carry an additive attention mask are safe too.
MASKED_SCORE = -1e2


def _masked_mean(sq: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``sq`` over the entries ``keep`` selects (broadcast); 0 when nothing is kept."""
    if keep is None:
        return sq.mean()
    keep = keep.to(sq.dtype).expand_as(sq)
    return (sq * keep).sum() / keep.sum().clamp_min(1.0)


def embedding_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between (projected) student and teacher embedding outputs.

    Args:
        student, teacher: (B, T, H) -- the student already projected to the teacher's width.
        mask: (B, T), 1 for real tokens; padding positions are ignored.
    """
    return hidden_mse(student, teacher, mask)


def hidden_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between (projected) student and teacher layer outputs, averaged over real tokens and H.

    Args:
        student, teacher: (B, T, H); mask: (B, T) or None.
    Raises:
        ValueError: on a shape mismatch (project the student first: ``Projector``).
    """
    if student.shape != teacher.shape:
        raise ValueError(f"hidden shapes differ: student {tuple(student.shape)}, teacher {tuple(teacher.shape)}")
    sq = (student.float() - teacher.float()) ** 2  # (B, T, H)
    return _masked_mean(sq, None if mask is None else mask[:, :, None])


def attention_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between pre-softmax attention scores, over (query, key) pairs of real tokens.

    Entries at or below ``MASKED_SCORE`` in either tensor are zeroed first (the authors' rule), so
    scores that already include an additive -inf/-1e4 mask are fine.

    Args:
        student, teacher: (B, nh, T, T) scores Q K^T / sqrt(d); mask: (B, T) or None.
    Raises:
        ValueError: on a shape mismatch (e.g. different head counts).
    """
    if student.shape != teacher.shape:
        raise ValueError(f"attention shapes differ: student {tuple(student.shape)}, teacher {tuple(teacher.shape)}")
    s = student.float()
    t = teacher.float()
    s = torch.where(s <= MASKED_SCORE, torch.zeros_like(s), s)
    t = torch.where(t <= MASKED_SCORE, torch.zeros_like(t), t)
    keep = None
    if mask is not None:
        m = mask.bool()
        keep = (m[:, :, None] & m[:, None, :])[:, None]  # (B, 1, T, T): query and key both real
    return _masked_mean((s - t) ** 2, keep)


def soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy of student logits against the teacher's softened distribution.

    ``mean_b sum_c -softmax(t_b / T)_c * log_softmax(s_b / T)_c``. (The authors' script also divides
    by C, a constant factor.)

    Args:
        student, teacher: (B, C) logits; temperature: T > 0.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if student.shape != teacher.shape:
        raise ValueError(f"logit shapes differ: student {tuple(student.shape)}, teacher {tuple(teacher.shape)}")
    target = F.softmax(teacher.float() / temperature, dim=-1)
    return -(target * F.log_softmax(student.float() / temperature, dim=-1)).sum(-1).mean()


def span_soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor,
                            temperature: float = 1.0) -> torch.Tensor:
    """Soft cross-entropy of QA start and end logits over the tokens of each window, averaged over
    the two ends and the windows. Padding tokens are excluded from both distributions (the QA head
    gives them logits, which no answer can use).

    Args:
        student, teacher: (W, 2, T) start and end logits; mask: (W, T) 1 = real token.
    """
    if student.shape != teacher.shape or student.dim() != 3 or student.shape[1] != 2:
        raise ValueError(f"span logits must both be (W, 2, T); got student {tuple(student.shape)}, "
                         f"teacher {tuple(teacher.shape)}")
    if mask.shape != (student.shape[0], student.shape[2]):
        raise ValueError(f"mask {tuple(mask.shape)} does not match logits {tuple(student.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    pad = (mask == 0)[:, None, :]  # (W, 1, T)
    target = F.softmax(teacher.float().masked_fill(pad, float("-inf")) / temperature, dim=-1)
    log_p = F.log_softmax(student.float().masked_fill(pad, float("-inf")) / temperature, dim=-1)
    # excluded entries: target 0, log_p -inf; zero them rather than form 0 x -inf
    return -(target * log_p.masked_fill(pad, 0.0)).sum(-1).mean()


def logits_mse(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """MSE between student and teacher outputs for regression tasks (STS-B); (B, 1) each.

    ``temperature`` is accepted so both prediction losses share a signature; it is ignored.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"output shapes differ: student {tuple(student.shape)}, teacher {tuple(teacher.shape)}")
    return F.mse_loss(student.float(), teacher.float())


#: Feature losses by name (the ``loss`` of a layer-mapping entry).
FEATURE_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "embedding_mse": embedding_mse,
    "hidden_mse": hidden_mse,
    "attention_mse": attention_mse,
}

#: Prediction losses by name.
PREDICTION_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "soft_cross_entropy": soft_cross_entropy,
    "mse": logits_mse,
}


def get_loss(name: str) -> Callable[..., torch.Tensor]:
    """The loss called ``name``; ``ValueError`` naming the known ones."""
    table = {**FEATURE_LOSSES, **PREDICTION_LOSSES}
    if name not in table:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(sorted(table))}")
    return table[name]

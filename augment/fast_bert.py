"""A BERT encoder forward that computes only what masked-LM candidates need.

Every layer but the last runs on all positions; the last layer needs keys and values at all
positions but queries, attention output and feed-forward only at the mask (one row per sequence),
and the vocabulary projection runs at the mask alone. For a 6-layer teacher this skips about a
seventh of the encoder and all but one row of the (largest) vocabulary projection.

It uses the modules' own weights (``BertForMaskedLM``: ``bert.embeddings``,
``bert.encoder.layer[i]``, ``cls``), so results equal the reference forward up to float rounding
(tested against transformers to 1e-5).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def supports(model: torch.nn.Module) -> bool:
    """True for BERT-structured masked LMs with absolute positions (the layout used below)."""
    bert, head = getattr(model, "bert", None), getattr(model, "cls", None)
    if bert is None or head is None or getattr(model.config, "is_decoder", False):
        return False
    if getattr(model.config, "position_embedding_type", "absolute") != "absolute":
        return False
    try:
        layer = bert.encoder.layer[0]
        layer.attention.self.query, layer.attention.output.LayerNorm, layer.intermediate.dense, layer.output.dense
    except AttributeError:
        return False
    return True


def _heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    b, t, h = x.shape
    return x.view(b, t, n_heads, h // n_heads).transpose(1, 2)  # (B, nh, T, hs)


def _attention(layer, q_in: torch.Tensor, kv_in: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """Self-attention block (with residual + LayerNorm) for queries ``q_in`` over ``kv_in``.

    q_in: (B, Tq, H); kv_in: (B, T, H); key_mask: (B, 1, 1, T) bool, True = attend.
    """
    att = layer.attention.self
    nh = att.num_attention_heads
    q = _heads(att.query(q_in), nh)  # (B, nh, Tq, hs)
    k = _heads(att.key(kv_in), nh)  # (B, nh, T, hs)
    v = _heads(att.value(kv_in), nh)
    ctx = _context(q, k, v, key_mask)  # (B, nh, Tq, hs)
    ctx = ctx.transpose(1, 2).reshape(q_in.shape)  # (B, Tq, H)
    return layer.attention.output(ctx, q_in)  # dense, dropout (off in eval), LayerNorm(x + residual)


def _context(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(hs)) v over the keys ``key_mask`` keeps.

    q: (B, nh, Tq, hs); k, v: (B, nh, T, hs); key_mask: (B, 1, 1, T) bool. Returns (B, nh, Tq, hs).
    """
    if q.shape[2] > 1:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
    # One query per sequence (the last layer, at the mask): plain matmuls. With several threads,
    # SDPA's single-query CPU kernel splits the keys by the batch's shape. (Whether a row's result
    # may depend on the other rows of its forward does not matter for the output: a forward holds
    # one text's rows only, augment/candidates.py.)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, nh, 1, T)
    scores = scores.masked_fill(~key_mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v  # (B, nh, 1, hs)


def _feed_forward(layer, x: torch.Tensor) -> torch.Tensor:
    return layer.output(layer.intermediate(x), x)


@torch.inference_mode()
def masked_logits(model, input_ids, token_type_ids, attention_mask, mask_pos) -> torch.Tensor:
    """Vocabulary logits at one position per sequence.

    Args:
        input_ids, token_type_ids, attention_mask: (B, T) long.
        mask_pos: (B,) long, the position to predict in each sequence.
    Returns:
        (B, V) logits.
    """
    bert = model.bert
    key_mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
    h = bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)  # (B, T, H)
    layers = bert.encoder.layer
    for layer in layers[:-1]:
        h = _feed_forward(layer, _attention(layer, h, h, key_mask))
    batch = torch.arange(h.shape[0], device=h.device)
    q_in = h[batch, mask_pos].unsqueeze(1)  # (B, 1, H)
    last = layers[-1]
    out = _feed_forward(last, _attention(last, q_in, h, key_mask))  # (B, 1, H)
    return model.cls(out[:, 0])  # (B, V)

"""Structured pruning of attention heads and feed-forward units (McCarley et al., 2019).

A ``Gates`` module puts one multiplicative gate on every attention head (on the head's slice of
the context vector, before the attention output projection) and on every feed-forward unit (on
the activated intermediate value, before the FFN output projection). Gates attach to any
BERT-family model with forward pre-hooks, so the model's own code and weights are untouched.

Which gates close is decided by one of three strategies, each a score per gate (higher = keep):

- ``random``: seeded uniform scores (the paper's baseline).
- ``gain``: the expected absolute gradient of the loss with respect to each gate at gate = 1,
  ``E_batch |dL/dg|`` (Michel et al., 2019's head importance, a first-order estimate of the loss
  change when the gate closes; McCarley et al. apply it to FFN units too).
- ``l0``: hard-concrete gates (Louizos et al., 2018) with a learned ``log_alpha`` each, trained with
  the task loss plus ``lambda x`` the expected number of open gates; the score is ``log_alpha``.

``select`` turns scores into a ``PruneMask`` that keeps a fraction of the heads and of the FFN
units, across the whole model or per layer. ``apply_mask`` zeroes the pruned weights: the model
keeps its shapes, so it saves and loads with plain ``transformers`` and computes exactly what the
gated model computes. ``compact`` slices the pruned rows and columns away for the speed-up
(transformers 5 has no ``prune_heads``, and one ``BertConfig`` cannot describe layers of different
widths, so the compact form is rebuilt from a saved ``pruning.json`` by ``load_pruned``).
"""
from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from distill.modules.models import encoder_layers

#: The file ``save_pruned`` writes beside the model.
PRUNING_FILE = "pruning.json"
PRUNING_FORMAT = "bert-compress-pruning"
STRATEGIES = ("random", "gain", "l0")

# Hard-concrete constants (Louizos et al., 2018, Sec. 4): temperature beta, stretch interval (gamma, zeta).
BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1


def model_shape(model: nn.Module) -> tuple[int, int, int, int]:
    """(layers, heads per layer, head size, FFN units per layer) of an unpruned model."""
    c = model.config
    return c.num_hidden_layers, c.num_attention_heads, c.hidden_size // c.num_attention_heads, c.intermediate_size


@dataclass
class PruneMask:
    """What is kept. heads: (L, nh) bool; ffn: (L, I) bool."""

    heads: torch.Tensor
    ffn: torch.Tensor

    def __post_init__(self):
        if self.heads.dim() != 2 or self.ffn.dim() != 2 or self.heads.shape[0] != self.ffn.shape[0]:
            raise ValueError(f"heads (L, nh) and ffn (L, I) must share L; got {tuple(self.heads.shape)} "
                             f"and {tuple(self.ffn.shape)}")
        self.heads, self.ffn = self.heads.bool(), self.ffn.bool()

    @classmethod
    def full(cls, layers: int, heads: int, units: int) -> "PruneMask":
        return cls(torch.ones(layers, heads, dtype=torch.bool), torch.ones(layers, units, dtype=torch.bool))

    def kept_heads(self) -> list[list[int]]:
        return [row.nonzero().flatten().tolist() for row in self.heads]

    def kept_units(self) -> list[list[int]]:
        return [row.nonzero().flatten().tolist() for row in self.ffn]

    def to_dict(self) -> dict:
        return {"format": PRUNING_FORMAT, "format_version": 1, "num_heads": self.heads.shape[1],
                "intermediate_size": self.ffn.shape[1], "heads": self.kept_heads(), "ffn": self.kept_units()}

    @classmethod
    def from_dict(cls, data: dict) -> "PruneMask":
        if data.get("format") != PRUNING_FORMAT:
            raise ValueError(f"not a pruning file (format {data.get('format')!r}, expected {PRUNING_FORMAT!r})")
        layers = len(data["heads"])
        heads = torch.zeros(layers, data["num_heads"], dtype=torch.bool)
        ffn = torch.zeros(layers, data["intermediate_size"], dtype=torch.bool)
        for l, (h, u) in enumerate(zip(data["heads"], data["ffn"])):
            heads[l, h], ffn[l, u] = True, True
        return cls(heads, ffn)

    def summary(self) -> dict:
        return {"heads_kept": int(self.heads.sum()), "heads_total": self.heads.numel(),
                "ffn_kept": int(self.ffn.sum()), "ffn_total": self.ffn.numel(),
                "heads_per_layer": self.heads.sum(1).tolist(), "ffn_per_layer": self.ffn.sum(1).tolist()}


# --------------------------------------------------------------------------------------------------
# Gates


class HardConcrete(nn.Module):
    """A vector of hard-concrete gates z in [0, 1] with parameters ``log_alpha`` (n,).

    Training: z = clamp(sigmoid((log u - log(1 - u) + log_alpha) / beta) (zeta - gamma) + gamma, 0, 1),
    u ~ U(0, 1). Evaluation: the same with the noise term removed. ``expected_open`` is
    P(z != 0) = sigmoid(log_alpha - beta log(-gamma / zeta)), the differentiable L0 penalty.
    """

    def __init__(self, n: int, init_open: float = 0.9):
        super().__init__()
        if not 0 < init_open < 1:
            raise ValueError(f"init_open must be in (0, 1), got {init_open}")
        # Louizos et al. initialise log_alpha so the gates start open with probability ~init_open.
        self.log_alpha = nn.Parameter(torch.full((n,), math.log(init_open) - math.log(1 - init_open)))

    def forward(self) -> torch.Tensor:
        if self.training:
            u = torch.rand_like(self.log_alpha).clamp(1e-6, 1 - 1e-6)
            s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / BETA)
        else:
            s = torch.sigmoid(self.log_alpha)
        return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    def expected_open(self) -> torch.Tensor:
        """() the expected number of non-zero gates."""
        return torch.sigmoid(self.log_alpha - BETA * math.log(-GAMMA / ZETA)).sum()


class Gates(nn.Module):
    """Gates on the heads (L, nh) and FFN units (L, I) of a model, applied by forward pre-hooks.

    mode ``fixed``: gate values are the tensors ``head_values`` / ``ffn_values`` (ones at start; set
    ``requires_grad`` to read dL/dg, or write zeros to close gates). mode ``l0``: one
    ``HardConcrete`` per layer and kind, sampled anew at every forward in training mode.
    """

    def __init__(self, layers: int, heads: int, head_size: int, units: int, mode: str = "fixed",
                 init_open: float = 0.9):
        super().__init__()
        if mode not in ("fixed", "l0"):
            raise ValueError(f"gate mode must be 'fixed' or 'l0', got {mode!r}")
        self.mode, self.layers, self.heads, self.head_size, self.units = mode, layers, heads, head_size, units
        if mode == "fixed":
            self.register_buffer("head_values", torch.ones(layers, heads))
            self.register_buffer("ffn_values", torch.ones(layers, units))
        else:
            self.head_gates = nn.ModuleList(HardConcrete(heads, init_open) for _ in range(layers))
            self.ffn_gates = nn.ModuleList(HardConcrete(units, init_open) for _ in range(layers))
        self._handles: list = []

    @classmethod
    def for_model(cls, model: nn.Module, mode: str = "fixed", init_open: float = 0.9) -> "Gates":
        return cls(*model_shape(model), mode=mode, init_open=init_open)

    @classmethod
    def holding(cls, model: nn.Module, mask: "PruneMask") -> "Gates":
        """Fixed gates holding ``mask`` shut, attached to ``model``: the full-size form of the pruned
        function (what ``compact`` computes with fewer multiplications)."""
        gates = cls.for_model(model)
        gates.head_values.copy_(mask.heads.float())
        gates.ffn_values.copy_(mask.ffn.float())
        return gates.attach(model)

    def head_gate(self, layer: int) -> torch.Tensor:
        """(nh,) the gate values of one layer's heads for this forward."""
        return self.head_values[layer] if self.mode == "fixed" else self.head_gates[layer]()

    def ffn_gate(self, layer: int) -> torch.Tensor:
        """(I,) the gate values of one layer's FFN units for this forward."""
        return self.ffn_values[layer] if self.mode == "fixed" else self.ffn_gates[layer]()

    def scores(self) -> tuple[torch.Tensor, torch.Tensor]:
        """l0 mode: (L, nh) and (L, I) ``log_alpha``, the order in which gates stay open."""
        if self.mode != "l0":
            raise ValueError("scores() reads log_alpha; only l0 gates have it")
        return (torch.stack([g.log_alpha.detach() for g in self.head_gates]),
                torch.stack([g.log_alpha.detach() for g in self.ffn_gates]))

    def expected_open(self) -> tuple[torch.Tensor, torch.Tensor]:
        """l0 mode: the expected number of open head gates and of open FFN gates (differentiable)."""
        return (sum(g.expected_open() for g in self.head_gates), sum(g.expected_open() for g in self.ffn_gates))

    def attach(self, model: nn.Module) -> "Gates":
        """Install the hooks on ``model`` (whose shape must match); returns self."""
        if model_shape(model) != (self.layers, self.heads, self.head_size, self.units):
            raise ValueError(f"gates for {(self.layers, self.heads, self.head_size, self.units)} (layers, heads, "
                             f"head size, FFN units) do not fit a model of {model_shape(model)}")
        self.detach()
        for l, layer in enumerate(encoder_layers(model)):
            self._handles.append(layer.attention.output.dense.register_forward_pre_hook(self._head_hook(l)))
            self._handles.append(layer.output.dense.register_forward_pre_hook(self._ffn_hook(l)))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _head_hook(self, layer: int) -> Callable:
        def hook(module, args):
            context = args[0]  # (B, T, nh * hs), heads side by side
            b, t, _ = context.shape
            gate = self.head_gate(layer).to(context.dtype)  # (nh,)
            gated = context.view(b, t, self.heads, self.head_size) * gate[:, None]
            return (gated.view(b, t, -1), *args[1:])
        return hook

    def _ffn_hook(self, layer: int) -> Callable:
        def hook(module, args):
            return (args[0] * self.ffn_gate(layer).to(args[0].dtype), *args[1:])  # (B, T, I) * (I,)
        return hook


class Lagrangian(nn.Module):
    """Drives the expected density of open gates to a target (Xia et al., 2022, CoFi, Sec. 3.3;
    Wang et al., 2020): the penalty ``sum_k lambda1_k (s_k - t_k) + lambda2_k (s_k - t_k)^2`` over
    k in (heads, ffn), where s_k is the expected fraction of open gates and t_k the target fraction
    kept. The gates descend on it; the multipliers ascend (their gradients are negated by a hook,
    so one optimizer serves both). The target moves linearly from ``start`` to its final value over
    ``warmup`` calls of ``advance`` (one per training forward), then stays.

    Args:
        target: (2,) fractions of heads and of FFN units to keep, each in (0, 1].
        start: (2,) the densities the targets start from (the gates' density at initialisation).
    """

    def __init__(self, target: Sequence[float], start: Sequence[float], warmup: int):
        super().__init__()
        target, start = torch.as_tensor(target, dtype=torch.float), torch.as_tensor(start, dtype=torch.float)
        if target.shape != (2,) or not bool(((target > 0) & (target <= 1)).all()):
            raise ValueError(f"targets are the fractions of heads and FFN units kept, each in (0, 1]; got "
                             f"{target.tolist()}")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        self.warmup = warmup
        self.register_buffer("final", target)
        self.register_buffer("start", start)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.lambda1 = nn.Parameter(torch.zeros(2))
        self.lambda2 = nn.Parameter(torch.zeros(2))
        for p in (self.lambda1, self.lambda2):  # gradient ascent: max over lambda, min over the gates
            p.register_hook(torch.neg)

    def target(self) -> torch.Tensor:
        """(2,) the current targets (heads, ffn)."""
        if self.warmup == 0:
            return self.final
        frac = min(1.0, float(self.calls) / self.warmup)
        return self.start + frac * (self.final - self.start)

    def forward(self, density: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """density: (2,) expected fractions of open heads and FFN units. Returns the penalty () and
        the gap (2,) = density - target."""
        gap = density - self.target()
        return (self.lambda1 * gap + self.lambda2 * gap * gap).sum(), gap.detach()

    def advance(self) -> None:
        self.calls += 1


def l0_density(gates: "Gates") -> torch.Tensor:
    """(2,) the expected fraction of open head gates and of open FFN gates (differentiable)."""
    heads, ffn = gates.expected_open()
    return torch.stack([heads / (gates.layers * gates.heads), ffn / (gates.layers * gates.units)])


def expected_counts(gates: "Gates") -> tuple[int, int]:
    """The expected numbers of open heads and FFN units, rounded: how many an l0 run with targets
    keeps (each layer keeps at least one head)."""
    with torch.no_grad():
        heads, ffn = gates.expected_open()
    return max(gates.layers, round(float(heads))), round(float(ffn))


def deterministic_open(gates: "Gates") -> tuple[int, int]:
    """Open gates of the test-time estimator (Louizos et al.: z = clamp(sigmoid(log_alpha)
    (zeta - gamma) + gamma, 0, 1) > 0), heads and FFN units."""
    was = gates.training
    gates.eval()
    with torch.no_grad():
        heads = sum(int((g() > 0).sum()) for g in gates.head_gates)
        ffn = sum(int((g() > 0).sum()) for g in gates.ffn_gates)
    gates.train(was)
    return heads, ffn


# --------------------------------------------------------------------------------------------------
# Scores


def random_scores(layers: int, heads: int, units: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, nh) and (L, I) uniform scores from ``seed`` (same seed, same scores, on any machine)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(layers, heads, generator=g), torch.rand(layers, units, generator=g)


def gain_scores(model: nn.Module, batches: Iterable[dict], loss_fn: Callable[[nn.Module, dict], torch.Tensor],
                normalize_per_layer: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The mean over ``batches`` of |dL/dg| at g = 1, for every head (L, nh) and FFN unit (L, I).

    ``loss_fn(model, batch)`` returns the scalar loss (the task loss, or the distillation loss
    against the teacher). The model's own gradients are not kept. ``normalize_per_layer`` divides
    each layer's scores by their L2 norm (Michel et al.'s head-importance normalisation).
    Returns (head scores, ffn scores, batches seen).
    """
    gates = Gates.for_model(model).to(next(model.parameters()).device)
    gates.head_values.requires_grad_(True)
    gates.ffn_values.requires_grad_(True)
    heads, ffn, n = torch.zeros_like(gates.head_values), torch.zeros_like(gates.ffn_values), 0
    wanted, was_training = [p.requires_grad for p in model.parameters()], model.training
    model.requires_grad_(False)
    model.eval()  # no dropout: the scores measure the model that will be pruned
    gates.attach(model)
    try:
        for batch in batches:
            loss = loss_fn(model, batch)
            dh, df = torch.autograd.grad(loss, (gates.head_values, gates.ffn_values))
            heads += dh.abs()
            ffn += df.abs()
            n += 1
    finally:
        gates.detach()
        model.train(was_training)
        for p, w in zip(model.parameters(), wanted):
            p.requires_grad_(w)
    if n == 0:
        raise ValueError("gain_scores needs at least one batch")
    heads, ffn = heads / n, ffn / n
    if normalize_per_layer:
        heads = heads / heads.norm(dim=1, keepdim=True).clamp_min(1e-20)
        ffn = ffn / ffn.norm(dim=1, keepdim=True).clamp_min(1e-20)
    return heads.detach(), ffn.detach(), n


# --------------------------------------------------------------------------------------------------
# Selection


def _keep_count(total: int, keep: float | int, name: str) -> int:
    if isinstance(keep, float) and not isinstance(keep, bool):
        if not 0.0 <= keep <= 1.0:
            raise ValueError(f"{name}: a fraction to keep must be in [0, 1], got {keep}")
        return round(keep * total)
    if not 0 <= keep <= total:
        raise ValueError(f"{name}: cannot keep {keep} of {total}")
    return int(keep)


def _order(scores: torch.Tensor) -> torch.Tensor:
    """Indices of a 1-d ``scores`` from highest to lowest, ties to the lower index."""
    return torch.sort(scores.detach().float().cpu(), descending=True, stable=True).indices


def top_mask(scores: torch.Tensor, keep: float | int, scope: str = "global", min_per_row: int = 0,
             name: str = "keep") -> torch.Tensor:
    """Keep the highest ``scores`` (R, N): ``keep`` is a fraction (float) or a count (int) of all
    R x N entries (scope ``global``) or of each row (scope ``layer``). Ties go to the lower index.
    With ``min_per_row``, each row keeps at least that many of its best (global scope; the
    total stays ``keep``, taken from the other rows' weakest). Returns (R, N) bool."""
    rows, n = scores.shape
    mask = torch.zeros(rows, n, dtype=torch.bool)
    if scope == "layer":
        k = _keep_count(n, keep, name)
        for r in range(rows):
            mask[r, _order(scores[r])[:max(k, min_per_row)]] = True
        return mask
    if scope != "global":
        raise ValueError(f"{name}: scope must be 'global' or 'layer', got {scope!r}")
    k = _keep_count(rows * n, keep, name)
    if min_per_row * rows > k:
        raise ValueError(f"{name}: keeping {k} cannot give each of {rows} layers {min_per_row}")
    for r in range(rows):  # the floor first
        mask[r, _order(scores[r])[:min_per_row]] = True
    order = _order(scores.flatten())
    rest = order[~mask.flatten()[order]][:k - int(mask.sum())]  # the best not yet kept
    mask.view(-1)[rest] = True
    return mask


def select(head_scores: torch.Tensor, ffn_scores: torch.Tensor, keep_heads: float | int = 1.0,
           keep_ffn: float | int = 1.0, scope: str = "global") -> PruneMask:
    """A ``PruneMask`` keeping the best-scored heads and FFN units. Every layer keeps at least
    one head (a layer without heads has no attention output to compute; FFN units can all go)."""
    heads = top_mask(head_scores, keep_heads, scope, min_per_row=1, name="keep_heads")
    ffn = top_mask(ffn_scores, keep_ffn, scope, name="keep_ffn")
    return PruneMask(heads, ffn)


# --------------------------------------------------------------------------------------------------
# Applying a mask


def _empty_linear(n_in: int, n_out: int, like: nn.Linear) -> nn.Linear:
    """An uninitialised Linear (the caller fills it). Not initialising also leaves the global RNG
    alone: a checkpoint's ``expand`` in mid-training must not change the next dropout masks."""
    with warnings.catch_warnings():  # a layer whose FFN units all went has zero-element weights
        warnings.filterwarnings("ignore", "Initializing zero-element tensors")
        return torch.nn.utils.skip_init(nn.Linear, n_in, n_out, bias=like.bias is not None,
                                        device=like.weight.device, dtype=like.weight.dtype)


def _rows(linear: nn.Linear, keep: torch.Tensor) -> nn.Linear:
    """A Linear with only the output features ``keep`` (bool)."""
    out = _empty_linear(linear.in_features, int(keep.sum()), linear)
    with torch.no_grad():
        out.weight.copy_(linear.weight[keep])
        if linear.bias is not None:
            out.bias.copy_(linear.bias[keep])
    return out


def _columns(linear: nn.Linear, keep: torch.Tensor) -> nn.Linear:
    """A Linear with only the input features ``keep`` (bool)."""
    out = _empty_linear(int(keep.sum()), linear.out_features, linear)
    with torch.no_grad():
        out.weight.copy_(linear.weight[:, keep])
        if linear.bias is not None:
            out.bias.copy_(linear.bias)
    return out


def _check_fits(model: nn.Module, mask: PruneMask) -> tuple[int, int, int, int]:
    shape = model_shape(model)
    layers, heads, _, units = shape
    if tuple(mask.heads.shape) != (layers, heads) or tuple(mask.ffn.shape) != (layers, units):
        raise ValueError(f"mask of heads {tuple(mask.heads.shape)} and ffn {tuple(mask.ffn.shape)} does not fit a "
                         f"model with {layers} layers, {heads} heads and {units} FFN units")
    if not bool(mask.heads.any(1).all()):
        raise ValueError(f"every layer must keep at least one head; heads kept per layer: "
                         f"{mask.heads.sum(1).tolist()}")
    return shape


@torch.no_grad()
def apply_mask(model: nn.Module, mask: PruneMask) -> nn.Module:
    """Zero the weights of pruned heads (their query/key/value rows and output-projection columns)
    and FFN units (their intermediate rows, bias included, and output columns), in place. Shapes
    stay, so the model saves and loads as usual and equals the gated model with these gates."""
    _, _, hs, _ = _check_fits(model, mask)
    for l, layer in enumerate(encoder_layers(model)):
        drop = (~mask.heads[l]).repeat_interleave(hs)  # (nh * hs,)
        att = layer.attention.self
        for lin in (att.query, att.key, att.value):
            lin.weight[drop] = 0
            if lin.bias is not None:
                lin.bias[drop] = 0
        layer.attention.output.dense.weight[:, drop] = 0
        drop = ~mask.ffn[l]
        layer.intermediate.dense.weight[drop] = 0
        layer.intermediate.dense.bias[drop] = 0
        layer.output.dense.weight[:, drop] = 0
    return model


def _cuts(layer: nn.Module, mask: PruneMask, l: int, hs: int) -> list[tuple[nn.Module, str, torch.Tensor, bool]]:
    """Every Linear of encoder layer ``l`` that ``mask`` cuts: (its parent module, its attribute
    name, the features kept (bool), True where output rows are cut / False where input columns
    are). Heads cut the query, key and value rows and the attention output's columns; FFN units
    the intermediate rows and the FFN output's columns."""
    heads = mask.heads[l].repeat_interleave(hs)  # (nh * hs,)
    att = layer.attention.self
    return [(att, "query", heads, True), (att, "key", heads, True), (att, "value", heads, True),
            (layer.attention.output, "dense", heads, False), (layer.intermediate, "dense", mask.ffn[l], True),
            (layer.output, "dense", mask.ffn[l], False)]


def compact(model: nn.Module, mask: PruneMask) -> nn.Module:
    """Remove the pruned heads and FFN units from ``model`` in place (smaller Linears), so it
    computes the same function as ``apply_mask`` with fewer multiplications. To save it, ``expand``
    it back (``distill.training.trainer.save_pretrained`` saves an expanded copy)."""
    _, _, hs, _ = _check_fits(model, mask)
    for l, layer in enumerate(encoder_layers(model)):
        for parent, name, keep, rows in _cuts(layer, mask, l, hs):
            setattr(parent, name, (_rows if rows else _columns)(getattr(parent, name), keep))
        # BertSelfAttention reshapes with -1 heads, so fewer heads need only the sizes it records.
        att = layer.attention.self
        att.num_attention_heads = int(mask.heads[l].sum())
        att.all_head_size = att.num_attention_heads * hs
    model.pruning_mask = mask
    model.pruning_compacted = True
    return model


def _scatter_rows(linear: nn.Linear, keep: torch.Tensor) -> nn.Linear:
    """The inverse of ``_rows``: a Linear with ``len(keep)`` output features, ``linear``'s at the
    ``keep`` (bool) positions and zeros elsewhere."""
    out = _empty_linear(linear.in_features, len(keep), linear)
    with torch.no_grad():
        out.weight.zero_()
        out.weight[keep] = linear.weight
        if linear.bias is not None:
            out.bias.zero_()
            out.bias[keep] = linear.bias
    return out


def _scatter_columns(linear: nn.Linear, keep: torch.Tensor) -> nn.Linear:
    """The inverse of ``_columns``: ``len(keep)`` input features, zero weights where not ``keep``."""
    out = _empty_linear(len(keep), linear.out_features, linear)
    with torch.no_grad():
        out.weight.zero_()
        out.weight[:, keep] = linear.weight
        if linear.bias is not None:
            out.bias.copy_(linear.bias)
    return out


def expand(model: nn.Module, mask: PruneMask) -> nn.Module:
    """The inverse of ``compact``, in place: full-size Linears again, the pruned heads' and units'
    weights zero (as ``apply_mask`` leaves them), so ``save_pretrained`` writes a model that plain
    ``from_pretrained`` loads. ``model.config`` still holds the unpruned shape."""
    _, heads, hs, _ = _check_fits(model, mask)
    for l, layer in enumerate(encoder_layers(model)):
        cuts = _cuts(layer, mask, l, hs)
        if any((getattr(p, n).out_features if rows else getattr(p, n).in_features) != int(keep.sum())
               for p, n, keep, rows in cuts):
            raise ValueError(f"layer {l} is not compacted by this mask")
        for parent, name, keep, rows in cuts:
            setattr(parent, name, (_scatter_rows if rows else _scatter_columns)(getattr(parent, name), keep))
        layer.attention.self.num_attention_heads, layer.attention.self.all_head_size = heads, heads * hs
    model.pruning_compacted = False
    return model


def compact_state_dict(model: nn.Module, mask: PruneMask, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state``, a state dict of ``model``'s full-size form (as ``expand`` saves it), cut to the
    shapes of ``model`` compacted by ``mask``: what a compacted run loads when it resumes."""
    _, _, hs, _ = _check_fits(model, mask)
    names = {module: name for name, module in model.named_modules()}
    state = dict(state)
    for l, layer in enumerate(encoder_layers(model)):
        for parent, name, keep, rows in _cuts(layer, mask, l, hs):
            weight, bias = f"{names[parent]}.{name}.weight", f"{names[parent]}.{name}.bias"
            keep = keep.to(state[weight].device)
            state[weight] = state[weight][keep] if rows else state[weight][:, keep]
            if rows and bias in state:
                state[bias] = state[bias][keep]
    return state


def effective_parameters(model: nn.Module, mask: PruneMask) -> int:
    """Parameters of ``model`` once ``mask`` is compacted (hand-countable: each pruned head drops
    3 (H hs + hs) + hs H, each pruned FFN unit 2 H + 1)."""
    layers, heads, hs, units = _check_fits(model, mask)
    h = model.config.hidden_size
    total = sum(p.numel() for p in model.parameters())
    pruned_heads = int((~mask.heads).sum())
    pruned_units = int((~mask.ffn).sum())
    return total - pruned_heads * (3 * (h * hs + hs) + hs * h) - pruned_units * (2 * h + 1)


def save_pruned(model: nn.Module, mask: PruneMask, directory: str, tokenizer=None) -> None:
    """Zero the pruned weights and save the model (loads with plain ``from_pretrained``, same
    outputs) with ``pruning.json`` (kept heads and units per layer) for ``load_pruned``."""
    apply_mask(model, mask)
    model.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    write_mask(mask, directory, effective_parameters(model, mask))


def write_mask(mask: PruneMask, directory: str, parameters: int | None = None) -> None:
    """``directory/pruning.json``: the kept heads and units per layer, a summary, and the
    parameter count once compacted."""
    summary = mask.summary() | ({} if parameters is None else {"parameters": parameters})
    tmp = os.path.join(directory, PRUNING_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({**mask.to_dict(), "summary": summary}, f, indent=1)
    os.replace(tmp, os.path.join(directory, PRUNING_FILE))


def read_mask(directory: str) -> PruneMask | None:
    path = os.path.join(directory, PRUNING_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return PruneMask.from_dict(json.load(f))


def load_pruned(directory: str, head: str = "qa") -> nn.Module:
    """A model saved by ``save_pruned``, compacted (the speed-up); a directory without
    ``pruning.json`` loads unchanged."""
    from distill.modules.models import load_model

    model = load_model(directory, head)
    mask = read_mask(directory)
    return model if mask is None else compact(model, mask)

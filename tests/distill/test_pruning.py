"""Gates, scores, selection and pruned models (distill/modules/pruning.py) on tiny random BERTs.

References are independent of the hooks: zeroing a head's columns of the attention output
projection (or a unit's column of the FFN output) by hand, finite differences for gradients, and
hand-computed hard-concrete values and parameter counts."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from distill.modules.pruning import (BETA, GAMMA, ZETA, Gates, HardConcrete, PruneMask, apply_mask, compact,
                             effective_parameters, gain_scores, load_pruned, random_scores, read_mask,
                             save_pruned, select, top_mask)
from tests.distill.conftest import VOCAB, tiny_config, tiny_tokenizer
from tests.numerics import not_exact

L, NH, HS, H, I = 3, 4, 8, 32, 64  # tiny_config(layers=3): hidden 32, 4 heads of 8, FFN 64


@pytest.fixture()
def qa_model():
    from transformers import BertForQuestionAnswering

    torch.manual_seed(0)
    return BertForQuestionAnswering(tiny_config(layers=L)).eval()


def _batch(seed=0, b=3, t=10):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, len(VOCAB), (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[0, 7:] = 0  # padding in one row
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def _logits(model, batch):
    out = model(**batch)
    return torch.cat([out.start_logits, out.end_logits], -1)  # (B, 2T)


def _loss(model, batch):
    return _logits(model, batch).pow(2).mean()


def _zero_by_hand(model, layer, head=None, unit=None):
    """The reference for a closed gate: no contribution through the output projections."""
    ref = copy.deepcopy(model)
    lay = ref.bert.encoder.layer[layer]
    with torch.no_grad():
        if head is not None:
            lay.attention.output.dense.weight[:, head * HS:(head + 1) * HS] = 0
        if unit is not None:
            lay.output.dense.weight[:, unit] = 0
    return ref


def _family_model(family: str, seed: int):
    """A tiny QA model of either layout (RoBERTa positions start after padding_idx, hence 2 more)."""
    from transformers import BertForQuestionAnswering, RobertaConfig, RobertaForQuestionAnswering

    torch.manual_seed(seed)
    if family == "bert":
        return BertForQuestionAnswering(tiny_config(layers=L)).eval()
    return RobertaForQuestionAnswering(RobertaConfig(
        vocab_size=len(VOCAB), hidden_size=H, num_hidden_layers=L, num_attention_heads=NH, intermediate_size=I,
        max_position_embeddings=66, pad_token_id=1)).eval()


def test_open_gates_change_nothing_and_closed_gates_remove_a_head_or_unit(qa_model):
    batch = _batch()
    plain = _logits(qa_model, batch)
    gates = Gates.for_model(qa_model).attach(qa_model)
    # Exact by construction: an open gate multiplies by 1.0, which leaves every float as it is, and
    # the rest are the same operations on the same tensors (detached: the very same operations).
    assert torch.equal(_logits(qa_model, batch), plain), not_exact("logits with open gates and without")

    gates.head_values[1, 2] = 0
    gates.ffn_values[2, 5] = 0
    expected = _logits(_zero_by_hand(_zero_by_hand(qa_model, 1, head=2), 2, unit=5), batch)
    got = _logits(qa_model, batch)
    assert torch.allclose(got, expected, atol=1e-7)
    assert (got - plain).abs().max() > 1e-4  # (init weights are small: std 0.02)

    gates.detach()
    assert torch.equal(_logits(qa_model, batch), plain), not_exact("logits after detaching and before")


def test_gates_refuse_a_model_of_another_shape(qa_model):
    with pytest.raises(ValueError, match="do not fit"):
        Gates(L, NH + 1, HS, I).attach(qa_model)
    with pytest.raises(ValueError, match="gate mode"):
        Gates(L, NH, HS, I, mode="soft")


def test_gain_scores_are_mean_absolute_gradients_by_finite_differences(qa_model):
    batches = [_batch(0), _batch(1)]
    heads, ffn, n = gain_scores(qa_model, batches, _loss)
    assert n == 2 and heads.shape == (L, NH) and ffn.shape == (L, I)
    assert all(p.requires_grad for p in qa_model.parameters()) and not qa_model.training

    qa_model.double()  # central differences in float64: the reference is accurate to ~1e-8
    gates = Gates.for_model(qa_model).double().attach(qa_model)

    def derivative(values, index, batch, eps=1e-4):
        values[index] += eps
        up = _loss(qa_model, batch).item()
        values[index] -= 2 * eps
        down = _loss(qa_model, batch).item()
        values[index] += eps
        return (up - down) / (2 * eps)

    for index in [(0, 0), (1, 3), (2, 1)]:
        fd = sum(abs(derivative(gates.head_values, index, b)) for b in batches) / 2
        assert heads[index].item() == pytest.approx(fd, rel=1e-3, abs=1e-7)
    for index in [(0, 7), (2, 63)]:
        fd = sum(abs(derivative(gates.ffn_values, index, b)) for b in batches) / 2
        assert ffn[index].item() == pytest.approx(fd, rel=1e-3, abs=1e-7)

    normalized, _, _ = gain_scores(qa_model, batches, _loss, normalize_per_layer=True)
    assert torch.allclose(normalized.norm(dim=1), torch.ones(L, dtype=normalized.dtype))
    with pytest.raises(ValueError, match="at least one batch"):
        gain_scores(qa_model, [], _loss)


def test_hard_concrete_values_and_expected_l0_by_hand():
    gate = HardConcrete(3)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([0.0, 5.0, -5.0]))
    gate.eval()
    # deterministic: clamp(sigmoid(a) * 1.2 - 0.1, 0, 1)
    s = [0.5, 1 / (1 + math.exp(-5)), 1 / (1 + math.exp(5))]
    expected = [min(1.0, max(0.0, v * (ZETA - GAMMA) + GAMMA)) for v in s]
    assert gate().tolist() == pytest.approx(expected)
    assert expected == pytest.approx([0.5, 1.0, 0.0], abs=0.01)
    # P(z != 0) = sigmoid(a - beta ln(-gamma/zeta)); at a = 0: sigmoid((2/3) ln 11) = 0.83182...
    p0 = 1 / (1 + math.exp(-BETA * math.log(ZETA / -GAMMA)))
    assert p0 == pytest.approx(0.83182, abs=1e-5)
    pe = [1 / (1 + math.exp(-(a + BETA * math.log(ZETA / -GAMMA)))) for a in (0.0, 5.0, -5.0)]
    assert gate.expected_open().item() == pytest.approx(sum(pe), rel=1e-6)

    # training samples: in [0, 1], exactly 0 or 1 with positive probability, and the fraction
    # non-zero matches P(z != 0)
    gate.train()
    torch.manual_seed(0)
    with torch.no_grad():
        gate.log_alpha.fill_(0.0)
    z = torch.stack([gate() for _ in range(4000)])
    assert z.min() == 0 and z.max() == 1
    assert (z > 0).float().mean().item() == pytest.approx(p0, abs=0.02)


def test_l0_gates_learn_to_close_under_the_penalty(qa_model):
    """With only the L0 penalty as loss, every gate's log_alpha goes down."""
    gates = Gates.for_model(qa_model, mode="l0").attach(qa_model)
    before = [s.clone() for s in gates.scores()]
    optim = torch.optim.SGD(gates.parameters(), lr=1.0)
    heads, ffn = gates.expected_open()
    assert heads.item() == pytest.approx(L * NH * (1 / (1 + math.exp(-(math.log(9) + BETA * math.log(11))))))
    (heads + ffn).backward()
    optim.step()
    after = gates.scores()
    assert all(bool((a < b).all()) for a, b in zip(after, before))
    gates.train()
    out = _logits(qa_model, _batch())
    assert out.requires_grad  # the samples reach the output, so the task loss trains the gates too


def test_random_scores_are_seeded():
    a, b = random_scores(L, NH, I, seed=3), random_scores(L, NH, I, seed=3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # one seed, the same draws
    assert not torch.equal(a[0], random_scores(L, NH, I, seed=4)[0])


def test_top_mask_by_hand():
    scores = torch.tensor([[0.9, 0.1, 0.5],
                           [0.2, 0.8, 0.3]])
    assert top_mask(scores, 3).tolist() == [[True, False, True], [False, True, False]]
    assert top_mask(scores, 0.5).tolist() == [[True, False, True], [False, True, False]]
    assert top_mask(scores, 1, scope="layer").tolist() == [[True, False, False], [False, True, False]]
    # a floor of one per row: row 1 keeps its best, the total stays 2
    assert top_mask(torch.tensor([[0.9, 0.8], [0.1, 0.2]]), 2, min_per_row=1).tolist() == \
        [[True, False], [False, True]]
    # ties go to the lower index
    assert top_mask(torch.zeros(1, 4), 2).tolist() == [[True, True, False, False]]
    with pytest.raises(ValueError, match="fraction to keep"):
        top_mask(scores, 1.5)
    with pytest.raises(ValueError, match="cannot keep 7 of 6"):
        top_mask(scores, 7)
    with pytest.raises(ValueError, match="cannot give each of 2 layers 2"):
        top_mask(scores, 3, min_per_row=2)


def test_select_keeps_a_head_in_every_layer():
    head_scores = torch.tensor([[5.0, 4.0], [3.0, 2.0], [0.1, 0.0]])
    mask = select(head_scores, torch.rand(3, 4), keep_heads=3, keep_ffn=0.0)
    assert mask.heads.tolist() == [[True, False], [True, False], [True, False]]
    assert mask.ffn.sum() == 0


def test_masked_model_saves_loads_and_compacts_to_the_same_outputs(tmp_path, qa_model):
    from transformers import AutoModelForQuestionAnswering

    mask = PruneMask(torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1]]),
                     torch.rand(L, I, generator=torch.Generator().manual_seed(0)) < 0.4)
    mask.ffn[1] = False  # a layer with no FFN units at all
    batch = _batch()
    gated = copy.deepcopy(qa_model)
    Gates.holding(gated, mask)
    reference = _logits(gated, batch)

    save_pruned(qa_model, mask, str(tmp_path / "pruned"), tiny_tokenizer())
    assert torch.allclose(_logits(qa_model, batch), reference, atol=1e-6)  # zeroed in place
    plain = AutoModelForQuestionAnswering.from_pretrained(tmp_path / "pruned").eval()
    assert torch.allclose(_logits(plain, batch), reference, atol=1e-6)
    saved = json.loads((tmp_path / "pruned" / "pruning.json").read_text())
    assert saved["heads"] == [[0, 2], [3], [0, 1, 2, 3]] and saved["ffn"][1] == []
    assert read_mask(str(tmp_path / "pruned")).heads.tolist() == mask.heads.tolist()

    small = load_pruned(str(tmp_path / "pruned")).eval()
    assert torch.allclose(_logits(small, batch), reference, atol=1e-5)
    count = sum(p.numel() for p in small.parameters())
    # hand count: each pruned head drops q, k, v rows with biases (3 x (32 x 8 + 8)) and 8 output
    # columns (32 x 8); each pruned unit an intermediate row with bias (33) and an output column (32)
    pruned_heads, pruned_units = 5, int((~mask.ffn).sum())
    full = sum(p.numel() for p in plain.parameters())
    assert count == full - pruned_heads * (3 * (H * HS + HS) + HS * H) - pruned_units * (2 * H + 1)
    assert count == effective_parameters(plain, mask)
    layer = small.bert.encoder.layer[1]
    assert layer.attention.self.query.out_features == HS and layer.intermediate.dense.out_features == 0


def test_masks_that_cannot_apply_are_refused(qa_model):
    with pytest.raises(ValueError, match="at least one head"):
        apply_mask(qa_model, PruneMask(torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]]),
                                       torch.ones(L, I)))
    with pytest.raises(ValueError, match="does not fit"):
        compact(qa_model, PruneMask.full(L, NH + 1, I))
    with pytest.raises(ValueError, match="not a pruning file"):
        PruneMask.from_dict({"format": "other"})


# --------------------------------------------------------------------------------------------------
# The Lagrangian that drives l0 gates to a target (CoFi)


def test_expected_l0_and_its_gradient_match_the_closed_form():
    from distill.modules.pruning import BETA, GAMMA, ZETA, HardConcrete

    gate = HardConcrete(3)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-1.0, 0.5, 2.0]))
    expected = gate.expected_open()
    expected.backward()
    shift = BETA * math.log(-GAMMA / ZETA)  # 2/3 ln(0.1 / 1.1) = 2/3 (-2.397895) = -1.598597
    assert shift == pytest.approx(-1.598597, abs=1e-6)
    p = [1 / (1 + math.exp(-(a - shift))) for a in (-1.0, 0.5, 2.0)]  # P(z != 0) per gate
    assert float(expected) == pytest.approx(sum(p), abs=1e-6)
    assert gate.log_alpha.grad.tolist() == pytest.approx([q * (1 - q) for q in p], abs=1e-6)


def test_lagrangian_penalty_and_gradients_by_hand():
    from distill.modules.pruning import Lagrangian

    lag = Lagrangian([0.5, 0.25], start=[1.0, 1.0], warmup=0)
    with torch.no_grad():
        lag.lambda1.copy_(torch.tensor([2.0, -1.0]))
        lag.lambda2.copy_(torch.tensor([3.0, 0.5]))
    density = torch.tensor([0.7, 0.2], requires_grad=True)
    penalty, gap = lag(density)
    # gaps 0.2 and -0.05: 2 * 0.2 + 3 * 0.04 + (-1) * (-0.05) + 0.5 * 0.0025
    assert gap.tolist() == pytest.approx([0.2, -0.05])
    assert float(penalty.detach()) == pytest.approx(0.4 + 0.12 + 0.05 + 0.00125)
    penalty.backward()
    # d/d density = lambda1 + 2 lambda2 gap; the multipliers get minus their gradient (ascent)
    assert density.grad.tolist() == pytest.approx([2 + 2 * 3 * 0.2, -1 + 2 * 0.5 * -0.05])
    assert lag.lambda1.grad.tolist() == pytest.approx([-0.2, 0.05])
    assert lag.lambda2.grad.tolist() == pytest.approx([-0.04, -0.0025])


def test_lagrangian_targets_warm_up_linearly():
    from distill.modules.pruning import Lagrangian

    lag = Lagrangian([0.5, 0.2], start=[0.9, 1.0], warmup=4)
    seen = []
    for _ in range(6):
        seen.append(lag.target().tolist())
        lag.advance()
    assert seen[0] == pytest.approx([0.9, 1.0]) and seen[2] == pytest.approx([0.7, 0.6])
    assert seen[4] == pytest.approx([0.5, 0.2]) and seen[5] == pytest.approx([0.5, 0.2])
    for bad in ([0.0, 0.5], [0.5, 1.2], [0.5]):
        with pytest.raises(ValueError, match="fractions of heads and FFN units kept"):
            Lagrangian(bad, start=[1.0] * len(bad), warmup=0)


@pytest.mark.parametrize("target", [(0.5, 0.25), (0.25, 0.75), (0.75, 0.4)])
@pytest.mark.parametrize("strength", [0.1, 3.0])
def test_gates_on_a_toy_model_reach_the_target(target, strength):
    """A toy 3-layer model whose loss pays for open gates (weakly or strongly): the Lagrangian
    brings the expected densities to the targets within 2 points, at the defaults of an l0 run
    (multipliers at 30x the gates' learning rate, Adam betas 0.5 / 0.99, constant rates)."""
    from distill.modules.pruning import Gates, Lagrangian, deterministic_open, expected_counts, l0_density

    torch.manual_seed(0)
    gates = Gates(layers=3, heads=8, head_size=4, units=64, mode="l0")
    steps = 400
    lag = Lagrangian(list(target), l0_density(gates).detach().tolist(), warmup=steps // 2)
    weights = torch.rand(3, 8) + 0.5, torch.rand(3, 64) + 0.5  # a task that pays for open gates
    opt = torch.optim.Adam([{"params": list(gates.parameters())}, {"params": list(lag.parameters()), "lr": 3.0}],
                           lr=0.1, betas=(0.5, 0.99))
    for _ in range(steps):
        task = -sum((weights[0][l] * gates.head_gate(l)).mean() + (weights[1][l] * gates.ffn_gate(l)).mean()
                    for l in range(3)) * strength
        penalty, _ = lag(l0_density(gates))
        opt.zero_grad()
        (task + penalty).backward()
        opt.step()
        lag.advance()
    density = l0_density(gates).detach()
    assert density.tolist() == pytest.approx(list(target), abs=0.02)
    heads, units = expected_counts(gates)
    assert abs(heads / 24 - target[0]) <= 0.02 + 0.5 / 24 and abs(units / 192 - target[1]) <= 0.02 + 0.5 / 192
    det_heads, det_units = deterministic_open(gates)
    assert 0 <= det_heads <= 24 and 0 <= det_units <= 192


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_compact_model_equals_the_gated_model(family):
    """Slicing pruned heads and units away computes what closed gates compute, in both layouts."""
    model = _family_model(family, seed=1)
    mask = PruneMask(torch.tensor([[0, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 1]]),
                     torch.rand(L, I, generator=torch.Generator().manual_seed(3)) < 0.5)
    batch = _batch(seed=2)
    gated = copy.deepcopy(model)
    Gates.holding(gated, mask)
    small = compact(copy.deepcopy(model), mask)
    with torch.no_grad():
        reference, out = _logits(gated, batch), _logits(small, batch)
    assert torch.allclose(out, reference, atol=1e-5)
    assert not torch.allclose(reference, _logits(model, batch), atol=1e-3)  # the mask did change the function
    assert sum(p.numel() for p in small.parameters()) == effective_parameters(model, mask)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_expand_undoes_compact_and_trains_like_the_gated_model(family):
    """Pruned models train compacted (distill/modules/objectives.py) and are saved expanded: expand(compact(m))
    holds exactly apply_mask(m)'s weights, and a compact step's gradients on the kept weights are
    the gated full model's (the same function, fewer multiplications)."""
    from distill.modules.pruning import expand

    model = _family_model(family, seed=4)
    mask = PruneMask(torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 1, 0]]),
                     torch.rand(L, I, generator=torch.Generator().manual_seed(5)) < 0.5)
    batch = _batch(seed=6)

    small = compact(copy.deepcopy(model), mask)
    _loss(small, batch).backward()
    gated = copy.deepcopy(model)
    Gates.holding(gated, mask)
    _loss(gated, batch).backward()
    layers = lambda m: m.base_model.encoder.layer  # noqa: E731
    for l in range(L):
        keep = mask.heads[l].repeat_interleave(HS)
        s, g = layers(small)[l], layers(gated)[l]
        assert torch.allclose(s.attention.self.query.weight.grad, g.attention.self.query.weight.grad[keep], atol=1e-6)
        assert torch.allclose(s.attention.output.dense.weight.grad, g.attention.output.dense.weight.grad[:, keep],
                              atol=1e-6)
        assert torch.allclose(s.output.dense.weight.grad, g.output.dense.weight.grad[:, mask.ffn[l]], atol=1e-6)

    # a training step changes the compact weights; expanding puts them back at their places
    with torch.no_grad():
        for p in small.parameters():
            p.add_(0.01)
    moved = {k: v.clone() for k, v in small.state_dict().items()}
    big = expand(small, mask)
    reference = apply_mask(copy.deepcopy(model), mask).state_dict()
    assert big.state_dict().keys() == reference.keys()
    for k, v in big.state_dict().items():
        assert v.shape == reference[k].shape, k
    layer = layers(big)[0]
    keep = mask.heads[0].repeat_interleave(HS)
    query = f"{model.base_model_prefix}.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(layer.attention.self.query.weight[keep], moved[query])  # moved, not computed: exact
    assert not layer.attention.self.query.weight[~keep].any() and not layer.output.dense.weight[:, ~mask.ffn[0]].any()
    # without the step, expand(compact(m)) is apply_mask(m), bit for bit: exact by construction, as
    # both only move and zero weights, computing none
    again = expand(compact(copy.deepcopy(model), mask), mask)
    assert all(torch.equal(v, reference[k]) for k, v in again.state_dict().items()), not_exact("weights")
    with torch.no_grad():
        assert torch.allclose(_logits(again, batch), _logits(apply_mask(copy.deepcopy(model), mask), batch), atol=1e-6)
    with pytest.raises(ValueError, match="not compacted by this mask"):
        expand(again, mask)

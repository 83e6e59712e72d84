import math

import pytest
import torch

from distill.modules import losses


def test_hidden_mse_hand_computed():
    s = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # (1, 2, 2)
    t = torch.zeros_like(s)
    assert losses.hidden_mse(s, t).item() == pytest.approx((1 + 4 + 9 + 16) / 4)
    assert losses.hidden_mse(s, t, torch.tensor([[1, 0]])).item() == pytest.approx((1 + 4) / 2)
    assert losses.embedding_mse(s, t, torch.tensor([[0, 1]])).item() == pytest.approx((9 + 16) / 2)


def test_attention_mse_hand_computed():
    s = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # (1, 1, 2, 2)
    t = torch.zeros_like(s)
    assert losses.attention_mse(s, t, torch.tensor([[1, 1]])).item() == pytest.approx(7.5)
    # only query 0 and key 0 are real tokens
    assert losses.attention_mse(s, t, torch.tensor([[1, 0]])).item() == pytest.approx(1.0)
    # scores already carrying an additive mask (<= -100) count as 0, as in the authors' script
    masked = torch.tensor([[[[1.0, -1e4], [3.0, 4.0]]]])
    assert losses.attention_mse(masked, t).item() == pytest.approx((1 + 0 + 9 + 16) / 4)


def test_attention_mse_two_heads_two_examples():
    s = torch.arange(16, dtype=torch.float32).view(2, 2, 2, 2)  # (B=2, nh=2, 2, 2)
    t = torch.ones_like(s)
    mask = torch.tensor([[1, 1], [1, 0]])
    # example 0: all 8 entries; example 1: entry (0, 0) of each head -> values 8 and 12
    sq0 = sum((v - 1) ** 2 for v in range(8))
    sq1 = (8 - 1) ** 2 + (12 - 1) ** 2
    assert losses.attention_mse(s, t, mask).item() == pytest.approx((sq0 + sq1) / 10)


def test_losses_do_not_depend_on_padding():
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    h_s, h_t = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    pad = 3  # pad with garbage to length 7
    s2 = torch.nn.functional.pad(s, (0, pad, 0, pad), value=5.0)
    t2 = torch.nn.functional.pad(t, (0, pad, 0, pad), value=-3.0)
    hs2, ht2 = torch.nn.functional.pad(h_s, (0, 0, 0, pad), value=9.0), torch.nn.functional.pad(h_t, (0, 0, 0, pad))
    mask2 = torch.nn.functional.pad(mask, (0, pad))
    assert losses.attention_mse(s2, t2, mask2).item() == pytest.approx(losses.attention_mse(s, t, mask).item())
    assert losses.hidden_mse(hs2, ht2, mask2).item() == pytest.approx(losses.hidden_mse(h_s, h_t, mask).item())


def test_everything_masked_gives_zero():
    s, t = torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3)
    assert losses.attention_mse(s, t, torch.zeros(1, 3)).item() == 0.0
    assert losses.hidden_mse(torch.randn(1, 3, 4), torch.randn(1, 3, 4), torch.zeros(1, 3)).item() == 0.0


def test_soft_cross_entropy_hand_computed():
    student = torch.tensor([[math.log(2.0), 0.0]])  # p_s = [2/3, 1/3]
    teacher = torch.tensor([[0.0, math.log(3.0)]])  # p_t = [1/4, 3/4]
    expected = -(0.25 * math.log(2 / 3) + 0.75 * math.log(1 / 3))
    assert losses.soft_cross_entropy(student, teacher).item() == pytest.approx(expected, rel=1e-6)
    # temperature 2 halves the logits: p_s = [sqrt2, 1] / (1 + sqrt2), p_t = [1, sqrt3] / (1 + sqrt3)
    ps = [math.sqrt(2) / (1 + math.sqrt(2)), 1 / (1 + math.sqrt(2))]
    pt = [1 / (1 + math.sqrt(3)), math.sqrt(3) / (1 + math.sqrt(3))]
    expected_t2 = -(pt[0] * math.log(ps[0]) + pt[1] * math.log(ps[1]))
    assert losses.soft_cross_entropy(student, teacher, 2.0).item() == pytest.approx(expected_t2, rel=1e-6)


def test_soft_cross_entropy_minimum_is_teacher_entropy():
    teacher = torch.tensor([[1.0, -1.0, 0.5]])
    p = torch.softmax(teacher, -1)
    entropy = -(p * p.log()).sum().item()
    assert losses.soft_cross_entropy(teacher.clone(), teacher).item() == pytest.approx(entropy, rel=1e-6)


def test_span_soft_cross_entropy_hand_computed_and_padding_excluded():
    # one window of 3 tokens, the third is padding. start: student [ln2, 0 | pad], teacher [0, ln3 | pad]
    # end: student == teacher == [0, 0 | pad]
    student = torch.tensor([[[math.log(2.0), 0.0, 7.0], [0.0, 0.0, -3.0]]])  # (W=1, 2, T=3)
    teacher = torch.tensor([[[0.0, math.log(3.0), 9.0], [0.0, 0.0, 5.0]]])
    mask = torch.tensor([[1, 1, 0]])
    start = -(0.25 * math.log(2 / 3) + 0.75 * math.log(1 / 3))
    end = math.log(2.0)  # uniform over two tokens: the teacher's entropy
    value = losses.span_soft_cross_entropy(student, teacher, mask)
    assert value.item() == pytest.approx((start + end) / 2, rel=1e-6)
    # whatever the padding logits, nothing changes, and their gradient is 0 (not nan)
    student = student.clone().requires_grad_(True)
    losses.span_soft_cross_entropy(student, teacher, mask).backward()
    assert torch.isfinite(student.grad).all() and student.grad[0, :, 2].abs().max() == 0
    other = student.detach().clone()
    other[0, :, 2] = torch.tensor([-50.0, 50.0])
    assert losses.span_soft_cross_entropy(other, teacher, mask).item() == pytest.approx(value.item(), rel=1e-6)
    with pytest.raises(ValueError, match=r"\(W, 2, T\)"):
        losses.span_soft_cross_entropy(student[:, :1], teacher[:, :1], mask)
    with pytest.raises(ValueError, match="does not match"):
        losses.span_soft_cross_entropy(student, teacher, mask[:, :2])


def test_logits_mse_for_regression():
    assert losses.logits_mse(torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [1.0]])).item() == pytest.approx(2.5)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="attention shapes differ"):
        losses.attention_mse(torch.zeros(1, 12, 3, 3), torch.zeros(1, 4, 3, 3))
    with pytest.raises(ValueError, match="temperature"):
        losses.soft_cross_entropy(torch.zeros(1, 2), torch.zeros(1, 2), 0.0)
    with pytest.raises(ValueError, match="unknown loss 'kl'"):
        losses.get_loss("kl")
    assert losses.get_loss("hidden_mse") is losses.hidden_mse

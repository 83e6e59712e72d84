import numpy as np
import pytest
import torch

from augment import fast_bert
from augment.mlm import MaskedLMTeacher, QueryRow, TeacherError, build_query_row, padded_length
from tests.augment.per_word_reference import within_tolerance
from tests.numerics import assert_within, cpu, float32_bound, not_exact

CLS, SEP, MASK = 2, 3, 4


def test_pair_row_by_hand():
    # words: [10], [11, 12], [13]; mask word 2 (the single piece 13)
    row = build_query_row([[10], [11, 12], [13]], 2, cls_id=CLS, sep_id=SEP, mask_id=MASK, max_length=512)
    assert row == QueryRow((CLS, 10, 11, 12, MASK, SEP, 10, 11, 12, 13, SEP),
                           (0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1), 4)


def test_single_row_by_hand():
    row = build_query_row([[10], [11]], 0, cls_id=CLS, sep_id=SEP, mask_id=MASK, max_length=512, mlm_input="single")
    assert row == QueryRow((CLS, MASK, 11, SEP), (0, 0, 0, 0), 1)


def test_rows_truncate_and_masks_beyond_max_length_get_none():
    words = [[100 + i] for i in range(10)]
    row = build_query_row(words, 2, cls_id=CLS, sep_id=SEP, mask_id=MASK, max_length=8)
    assert len(row.input_ids) == 8 and row.input_ids[:4] == (CLS, 100, 101, MASK)
    assert row.token_type_ids == (0,) * 8  # segment 1 fell off entirely
    assert build_query_row(words, 7, cls_id=CLS, sep_id=SEP, mask_id=MASK, max_length=8) is None
    with pytest.raises(ValueError, match="pieces"):
        build_query_row([[1, 2]], 0, cls_id=CLS, sep_id=SEP, mask_id=MASK, max_length=8)


def test_padded_length():
    assert [padded_length(n, 8, 512) for n in (1, 8, 9, 509, 512)] == [8, 8, 16, 512, 512]
    assert padded_length(13, 1, 512) == 13


@pytest.fixture(scope="module")
def tiny_model(tiny_mlm):
    from transformers import BertForMaskedLM

    return BertForMaskedLM.from_pretrained(tiny_mlm).eval()


def random_rows(n, seed=0, vocab=90, max_len=40):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        words = [[int(x)] for x in rng.integers(40, vocab, size=int(rng.integers(1, max_len // 2)))]
        rows.append(build_query_row(words, int(rng.integers(len(words))), cls_id=CLS, sep_id=SEP, mask_id=MASK,
                                    max_length=128))
    return rows


def test_fast_path_equals_full_forward(tiny_model):
    torch.manual_seed(0)
    ids = torch.randint(5, 80, (6, 20))
    types = torch.zeros_like(ids)
    types[:, 10:] = 1
    mask = torch.ones_like(ids)
    mask[2, 14:] = 0
    pos = torch.tensor([1, 3, 5, 7, 9, 2])
    with torch.inference_mode():
        full = tiny_model(input_ids=ids, token_type_ids=types, attention_mask=mask).logits[torch.arange(6), pos]
    fast = fast_bert.masked_logits(tiny_model, ids, types, mask, pos)
    assert fast_bert.supports(tiny_model)
    # the same function by other operations (SDPA, the last layer at the mask only): rounding apart
    assert_within(fast, full, float32_bound(tiny_model.config, 20), "fast path against the full forward")


def _reference_logits(model, row) -> torch.Tensor:
    """(V,) logits at a row's mask from the model's own forward of the row alone, unpadded."""
    with torch.inference_mode():
        return model(input_ids=torch.tensor([row.input_ids]),
                     token_type_ids=torch.tensor([row.token_type_ids])).logits[0, row.mask_pos]


def _ranked(logits: torch.Tensor, k: int) -> list[int]:
    return sorted(range(len(logits)), key=lambda j: (-float(logits[j]), j))[:k]


def _same_ranking(got_ids, reference: torch.Tensor, allowed: float) -> int:
    """``got_ids`` equal the reference's top ids, up to swaps of ids whose reference logits are
    within ``allowed``; returns the swaps (rounding may order near-ties either way)."""
    ok, swaps = within_tolerance([int(i) for i in got_ids], _ranked(reference, len(got_ids)),
                                 lambda j: float(reference[j]), allowed)
    assert ok, (list(got_ids), _ranked(reference, len(got_ids)), cpu())
    return swaps


def test_topk_equals_brute_force(tiny_model):
    # The engine (mask-only last layer, rows padded, batches of 7) against the model's own forward
    # of each row alone: the same function by other operations, so within float32_bound
    # (tests/numerics.py) of the largest logit, and the same ranking but for near-ties within it.
    teacher = MaskedLMTeacher(tiny_model)
    rows = random_rows(30)
    ids, vals = teacher.topk(rows, 5, batch_size=7)
    rel = float32_bound(tiny_model.config, 128)
    for r, row in enumerate(rows):
        logits = _reference_logits(tiny_model, row)
        assert_within(torch.from_numpy(vals[r]), torch.sort(logits, descending=True).values[:5], rel, f"row {r}")
        _same_ranking(ids[r], logits, 2 * rel * float(logits.abs().max()))


def test_topk_is_independent_of_batch_size_and_order_up_to_rounding(tiny_model):
    # Other batch sizes and orders put rows in forwards of other shapes and neighbours: the logits
    # move by rounding (within float32_bound) and rankings only swap near-ties.
    teacher = MaskedLMTeacher(tiny_model)
    rows = random_rows(64, seed=1)
    rel = float32_bound(tiny_model.config, 128)
    ids64, vals64 = teacher.topk(rows, 8, batch_size=64)
    ids1, vals1 = teacher.topk(rows, 8, batch_size=1)
    perm = np.random.default_rng(0).permutation(len(rows))
    idsp, valsp = teacher.topk([rows[i] for i in perm], 8, batch_size=13)
    assert_within(torch.from_numpy(vals1), torch.from_numpy(vals64), rel, "batch 1 against 64")
    assert_within(torch.from_numpy(valsp), torch.from_numpy(vals64[perm]), rel, "batch 13, permuted, against 64")
    for r, row in enumerate(rows):
        reference = _reference_logits(tiny_model, row)
        allowed = 2 * rel * float(reference.abs().max())
        for got in (ids1[r], ids64[r], idsp[int(np.flatnonzero(perm == r)[0])]):
            _same_ranking(got, reference, allowed)


def test_rows_of_one_length_run_batch_size_at_a_time_in_the_order_given(tiny_model, monkeypatch):
    # What a row's logits depend on: the rows it is given with, cut batch_size at a time per
    # canonical length, no filler. (The candidate generator gives each text's rows alone.)
    teacher = MaskedLMTeacher(tiny_model)
    forwards = []
    run = MaskedLMTeacher._run
    monkeypatch.setattr(MaskedLMTeacher, "_run", lambda self, batch, length, k: forwards.append(
        ([r.mask_pos for r in batch], length)) or run(self, batch, length, k))
    rows = random_rows(40, seed=2)
    lengths = [padded_length(len(r.input_ids), 8, 128) for r in rows]
    ids, vals = teacher.topk(rows, 4, batch_size=3)
    expected = []
    for length in sorted(set(lengths)):
        group = [rows[i].mask_pos for i in range(len(rows)) if lengths[i] == length]
        expected += [(group[s:s + 3], length) for s in range(0, len(group), 3)]
    assert forwards == expected
    assert teacher.rows_run == len(rows) and teacher.forward_calls == len(expected)
    # the same rows given again run the same forwards on the same tensors: exact by construction
    again_ids, again_vals = teacher.topk(rows, 4, batch_size=3)
    assert np.array_equal(again_vals, vals) and np.array_equal(again_ids, ids), not_exact("logits of two calls")


def test_empty_query_list(tiny_model):
    ids, vals = MaskedLMTeacher(tiny_model).topk([], 5)
    assert ids.shape == (0, 5) and vals.shape == (0, 5)


def test_not_a_masked_lm_is_refused(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertForSequenceClassification(config).save_pretrained(tmp_path / "clf")
    with pytest.raises(TeacherError, match="not a masked language model"):
        MaskedLMTeacher.from_pretrained(str(tmp_path / "clf"))
    with pytest.raises(TeacherError, match="cannot load teacher"):
        MaskedLMTeacher.from_pretrained(str(tmp_path / "missing"))


def test_bad_dtype():
    with pytest.raises(ValueError, match="dtype"):
        MaskedLMTeacher(torch.nn.Linear(1, 1), dtype="int8")

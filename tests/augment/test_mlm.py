import numpy as np
import pytest
import torch

from augment import fast_bert
from augment.mlm import MaskedLMTeacher, QueryRow, TeacherError, build_query_row, padded_length

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
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)


def test_topk_equals_brute_force(tiny_model):
    teacher = MaskedLMTeacher(tiny_model)
    rows = random_rows(30)
    ids, vals = teacher.topk(rows, 5, batch_size=7)
    with torch.inference_mode():
        for r, row in enumerate(rows):
            logits = tiny_model(input_ids=torch.tensor([row.input_ids]),
                                token_type_ids=torch.tensor([row.token_type_ids])).logits[0, row.mask_pos]
            np.testing.assert_allclose(vals[r], torch.sort(logits, descending=True).values[:5].numpy(), atol=1e-5)
            assert set(ids[r]) == set(torch.topk(logits, 5).indices.tolist())


def test_topk_is_independent_of_batch_size_and_order(tiny_model):
    # Rows are padded to a canonical length, so batching changes only the BLAS blocking: the
    # ranking is identical and the logits agree to float rounding.
    teacher = MaskedLMTeacher(tiny_model)
    rows = random_rows(64, seed=1)
    ids64, vals64 = teacher.topk(rows, 8, batch_size=64)
    ids1, vals1 = teacher.topk(rows, 8, batch_size=1)
    perm = np.random.default_rng(0).permutation(len(rows))
    idsp, valsp = teacher.topk([rows[i] for i in perm], 8, batch_size=13)
    assert np.array_equal(ids1, ids64) and np.array_equal(idsp, ids64[perm])
    np.testing.assert_allclose(vals1, vals64, atol=1e-6)
    np.testing.assert_allclose(valsp, vals64[perm], atol=1e-6)


def test_logits_are_bit_identical_however_rows_are_grouped(tiny_model):
    # One batch_size: every forward has the same shape, so a row's logits do not depend on which
    # rows share its batch (how texts were batched, worker counts), to the last bit.
    teacher = MaskedLMTeacher(tiny_model)
    rows = random_rows(60, seed=2)
    ids, vals = teacher.topk(rows, 8, batch_size=8)
    rng = np.random.default_rng(0)
    for _ in range(3):
        perm = rng.permutation(len(rows))
        for part in np.array_split(perm, int(rng.integers(2, 7))):
            part_ids, part_vals = teacher.topk([rows[i] for i in part], 8, batch_size=8)
            assert np.array_equal(part_vals, vals[part]) and np.array_equal(part_ids, ids[part])
    assert teacher.rows_run == 4 * len(rows)  # filler rows are not counted


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

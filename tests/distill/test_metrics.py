import math

import numpy as np
import pytest

from distill.evaluation.metrics import compute


def test_accuracy_f1_matthews_hand_computed():
    pred, gold = np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1])  # tp 2, fp 1, fn 1, tn 1
    assert compute("accuracy", pred, gold) == {"accuracy": 0.6, "score": 0.6}
    assert compute("f1", pred, gold)["score"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    mcc = (2 * 1 - 1 * 1) / math.sqrt(3 * 3 * 2 * 2)
    assert compute("matthews", pred, gold)["score"] == pytest.approx(mcc)
    assert compute("matthews", np.zeros(4, int), np.array([0, 1, 0, 1]))["score"] == 0.0  # constant predictions


def test_pearson_spearman_with_ties():
    x, y = np.array([1.0, 2.0, 2.0, 4.0]), np.array([1.0, 3.0, 2.0, 5.0])
    out = compute("pearson_spearman", x, y)
    assert out["pearson"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    # ranks x: 1, 2.5, 2.5, 4; y: 1, 3, 2, 4
    assert out["spearman"] == pytest.approx(np.corrcoef([1, 2.5, 2.5, 4], [1, 3, 2, 4])[0, 1])
    assert out["score"] == pytest.approx((out["pearson"] + out["spearman"]) / 2)


def test_bad_metric_inputs():
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        compute("bleu", np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        compute("accuracy", np.zeros(3), np.zeros(2))

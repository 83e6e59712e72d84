"""GLUE metrics (Wang et al., 2019) as pure numpy functions, and the score that picks checkpoints.

``compute(metric, predictions, labels)`` returns a dict whose ``score`` is what "best" means:
accuracy, F1 of class 1, Matthews correlation, or the mean of Pearson and Spearman.
``squad(predictions, golds)`` is the official SQuAD 2.0 evaluation (EM and F1; ``score`` = F1).
"""
from __future__ import annotations

import collections
import math
import re
import string
from typing import Sequence

import numpy as np

METRICS = ("accuracy", "f1", "matthews", "pearson_spearman")


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float((pred == gold).mean()) if len(gold) else 0.0


def f1(pred: np.ndarray, gold: np.ndarray, positive: int = 1) -> float:
    """F1 of the ``positive`` class; 0 when it is never predicted nor present."""
    tp = np.sum((pred == positive) & (gold == positive))
    fp = np.sum((pred == positive) & (gold != positive))
    fn = np.sum((pred != positive) & (gold == positive))
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0


def matthews(pred: np.ndarray, gold: np.ndarray) -> float:
    """Matthews correlation for binary labels; 0 when a marginal is constant (as sklearn)."""
    tp = float(np.sum((pred == 1) & (gold == 1)))
    tn = float(np.sum((pred == 0) & (gold == 0)))
    fp = float(np.sum((pred == 1) & (gold == 0)))
    fn = float(np.sum((pred == 0) & (gold == 1)))
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / denom) if denom else 0.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, float) - np.mean(x), np.asarray(y, float) - np.mean(y)
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom else 0.0


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties given their average rank (as scipy.stats.rankdata)."""
    x = np.asarray(x, float)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(_ranks(x), _ranks(y))


def compute(metric: str, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's metrics. ``predictions``: class ids (or scores for ``pearson_spearman``).

    Raises ``ValueError`` for an unknown metric or mismatched lengths.
    """
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"{predictions.shape[0] if predictions.ndim else 0} predictions for "
                         f"{labels.shape[0] if labels.ndim else 0} labels")
    if metric == "accuracy":
        out = {"accuracy": accuracy(predictions, labels)}
        out["score"] = out["accuracy"]
    elif metric == "f1":
        out = {"f1": f1(predictions, labels), "accuracy": accuracy(predictions, labels)}
        out["score"] = out["f1"]
    elif metric == "matthews":
        out = {"matthews": matthews(predictions, labels), "accuracy": accuracy(predictions, labels)}
        out["score"] = out["matthews"]
    elif metric == "pearson_spearman":
        out = {"pearson": pearson(predictions, labels), "spearman": spearman(predictions, labels)}
        out["score"] = (out["pearson"] + out["spearman"]) / 2
    else:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    return out


# --------------------------------------------------------------------------------------------------
# SQuAD (Rajpurkar et al., 2016, 2018): the official v2.0 evaluation script's definitions.

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> int:
    return int(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """Token-overlap F1 of normalised answers; 1 when both are empty, 0 when only one is."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """SQuAD v2 EM and F1 in percent (max over each question's gold answers), overall and split
    into answerable (``HasAns``) and unanswerable (``NoAns``) questions, with counts.

    Args:
        predictions: one answer per question ("" = no answer).
        golds: each question's gold answers; those that normalise to "" are dropped, and a question
            left with none is unanswerable (its only gold answer is "").
    Raises ``ValueError`` when the lengths differ.
    """
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} questions")
    em, _, has = _question_scores(predictions, golds, exact_match)
    f1, _, _ = _question_scores(predictions, golds, f1_score)

    def pct(x: np.ndarray) -> float:
        return float(100 * x.mean()) if len(x) else 0.0

    out = {"exact": pct(em), "f1": pct(f1), "total": len(em)}
    for name, sel in (("HasAns", has), ("NoAns", ~has)):
        out |= {f"{name}_exact": pct(em[sel]), f"{name}_f1": pct(f1[sel]), f"{name}_total": int(sel.sum())}
    out["score"] = out["f1"]
    return out


# --------------------------------------------------------------------------------------------------
# SQuAD 2.0 with a null threshold. A QA model gives, per question, its best non-null span and the
# margin ``null_diff`` = null score - best span score; it abstains ("") when null_diff > threshold.


def _question_scores(spans: Sequence[str], golds: Sequence[Sequence[str]], metric) -> tuple[np.ndarray, np.ndarray,
                                                                                              np.ndarray]:
    """Per question (E,): ``metric`` of answering with its span (max over its gold answers), of
    abstaining, and whether it has an answer. Gold answers that normalise to "" are dropped; a
    question left with none is unanswerable (its only gold answer is "")."""
    if len(spans) != len(golds):
        raise ValueError(f"{len(spans)} spans for {len(golds)} questions")
    answered, abstained, has = [], [], []
    for span, answers in zip(spans, golds):
        answers = [a for a in answers if normalize_answer(a)] or [""]
        has.append(answers != [""])
        answered.append(max(metric(span, a) for a in answers))
        abstained.append(float(answers == [""]))
    return np.array(answered, float), np.array(abstained, float), np.array(has, bool)


def best_null_threshold(spans: Sequence[str], null_diff: Sequence[float], golds: Sequence[Sequence[str]],
                        metric: str = "f1") -> tuple[float, float]:
    """The null threshold that maximises ``metric`` (``f1`` or ``exact``) on these questions, and that
    score in percent: the official SQuAD 2.0 script's best-threshold search (``find_best_thresh``).

    Questions are answered in order of rising ``null_diff``; the threshold is the ``null_diff`` of the
    last question answered in the best prefix (the lowest threshold reaching the best score), or
    ``-inf`` when abstaining everywhere is best. Unlike the official script, questions with equal
    ``null_diff`` are answered together, as a threshold cannot separate them.

    Args:
        spans: (E,) the best non-null span of each question ("" when it has none).
        null_diff: (E,) null score - best span score (+inf when there is no span).
        golds: (E,) each question's gold answers (none, or only "", = unanswerable).
    """
    fn = {"f1": f1_score, "exact": exact_match}[metric]
    answered, abstained, _ = _question_scores(spans, golds, fn)
    diff = np.asarray(null_diff, float)
    if diff.shape != answered.shape:
        raise ValueError(f"null_diff has shape {diff.shape}, expected ({len(answered)},)")
    order = np.argsort(diff, kind="stable")
    gain = np.cumsum((answered - abstained)[order])  # score change from answering each prefix
    last = np.r_[diff[order][1:] != diff[order][:-1], True]  # a prefix may end only after a tie group
    total, threshold = abstained.sum(), -np.inf
    best = total
    for i in np.flatnonzero(last & np.isfinite(diff[order])):
        if total + gain[i] > best:
            best, threshold = total + gain[i], float(diff[order][i])
    return threshold, float(100 * best / len(answered)) if len(answered) else 0.0


def ranking_auc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """P(a random ``positive`` score > a random ``negative`` one), ties counting 1/2 (the
    Mann-Whitney U statistic over n_pos x n_neg); None when either side is empty."""
    if not len(positive) or not len(negative):
        return None
    scores = np.concatenate([positive, negative])
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average rank (1-based) over each run of tied scores
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + 1 + b) / 2
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def squad_v2_report(spans: Sequence[str], null_diff: Sequence[float], golds: Sequence[Sequence[str]],
                    tuned_threshold: float | None = None, threshold: float = 0.0) -> dict[str, float]:
    """The honest SQuAD 2.0 figures of one model on one split:

    - ``exact``/``f1`` (and HasAns/NoAns splits): the official metrics at null ``threshold`` (0);
    - ``f1_tuned``/``exact_tuned``: at ``tuned_threshold``, chosen on *other* questions
      (``null_threshold``: that threshold, None for -inf = abstain everywhere);
    - ``hasans_f1_forced``/``hasans_exact_forced``: answerable questions, always answered with the best
      span (span quality, whatever the null decision);
    - ``null_baseline_f1``: the F1 of abstaining on every question (the unanswerable share);
    - ``oracle_threshold``/``oracle_f1``: the best threshold on *these* questions (an upper bound, not a
      result: it is tuned on the data it scores);
    - ``noans_auc``: how well the null margin ranks unanswerable above answerable questions, whatever
      the threshold (the probability that a random unanswerable one has the larger margin, ties
      1/2; 0.5 is chance; None without both kinds).
    """
    diff = np.asarray(null_diff, float)
    at = lambda t: [s if d <= t else "" for s, d in zip(spans, diff)]  # noqa: E731
    out = squad(at(threshold), golds)
    f1s, abstained, has = _question_scores(spans, golds, f1_score)
    ems, _, _ = _question_scores(spans, golds, exact_match)
    pct = lambda x: float(100 * x.mean()) if len(x) else 0.0  # noqa: E731
    out |= {"hasans_f1_forced": pct(f1s[has]), "hasans_exact_forced": pct(ems[has]),
            "null_baseline_f1": pct(abstained)}
    out["noans_auc"] = ranking_auc(diff[~has], diff[has])
    oracle, out["oracle_f1"] = best_null_threshold(spans, diff, golds)
    out["oracle_threshold"] = oracle if math.isfinite(oracle) else None
    if tuned_threshold is not None:
        tuned = squad(at(tuned_threshold), golds)
        # -inf (abstain everywhere) is not JSON: None says the same
        out |= {"null_threshold": tuned_threshold if math.isfinite(tuned_threshold) else None,
                "f1_tuned": tuned["f1"], "exact_tuned": tuned["exact"],
                "HasAns_f1_tuned": tuned["HasAns_f1"], "NoAns_f1_tuned": tuned["NoAns_f1"]}
    return out

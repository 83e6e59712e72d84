"""SQuAD answers from a model's span logits, and their scores (Devlin et al., 2019, Sec. 4.3).

- :func:`postprocess`: pure numpy n-best search over every window of an example (spans of at most
  ``max_answer_length`` tokens inside the context), with the SQuAD 2.0 null-vs-best-span decision.
- :func:`predict_spans`: a model's best span and null-score difference per question.
- :func:`evaluate_qa`: predictions of a model on rows, scored by :func:`distill.evaluation.metrics.squad`
  (SQuAD 2.0: :func:`distill.evaluation.metrics.squad_v2_report`).

The rows and their windows (:class:`distill.data.qa.QACollator`) are data; this module decodes and scores.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from distill.data.qa import QACollator, gold_answers


def postprocess(start_logits: np.ndarray, end_logits: np.ndarray, example_index: Sequence[int],
                offsets: np.ndarray, contexts: Sequence[str], n_best: int = 20, max_answer_length: int = 30,
                allow_null: bool = True, null_threshold: float = 0.0) -> list[str]:
    """The answer text of each example from its windows' logits: its best span (see
    :func:`best_spans`), or "" with ``allow_null`` (SQuAD 2.0) when the null score exceeds the best
    span score by more than ``null_threshold`` or no span is valid. Returns E answer strings."""
    spans, null_diff = best_spans(start_logits, end_logits, example_index, offsets, contexts, n_best,
                                  max_answer_length)
    if not allow_null:
        return spans
    return [s if d <= null_threshold else "" for s, d in zip(spans, null_diff)]


def best_spans(start_logits: np.ndarray, end_logits: np.ndarray, example_index: Sequence[int],
               offsets: np.ndarray, contexts: Sequence[str], n_best: int = 20,
               max_answer_length: int = 30) -> tuple[list[str], np.ndarray]:
    """The best non-null span of each example over all its windows, and its null margin.

    A span's start and end are among a window's ``n_best`` highest logits, both inside the context,
    ``start <= end`` and at most ``max_answer_length`` tokens; its score is start + end logit. The
    null score is the [CLS] start + end logit, the lowest over the example's windows.

    Args:
        start_logits, end_logits: (W, T) per window. example_index: (W,) the example of each window.
        offsets: (W, T, 2) character spans of the tokens, (-1, -1) outside the context.
        contexts: (E,) the context of each example.
    Returns:
        (E,) span texts ("" when no span is valid) and (E,) ``null_diff`` = null score - best span
        score (+inf when no span is valid).
    Raises ``ValueError`` on mismatched shapes, an example index out of range, or an example
    without windows.
    """
    start_logits, end_logits = np.asarray(start_logits, float), np.asarray(end_logits, float)
    example_index, offsets = np.asarray(example_index, int), np.asarray(offsets, int)
    _check_postprocess_inputs(start_logits, end_logits, example_index, offsets, len(contexts))
    best: list[tuple[float, str]] = [(-np.inf, "")] * len(contexts)
    null = np.full(len(contexts), np.inf)
    for w, ex in enumerate(example_index):
        null[ex] = min(null[ex], start_logits[w, 0] + end_logits[w, 0])
        span = _best_span(start_logits[w], end_logits[w], offsets[w], n_best, max_answer_length)
        if span is not None and span[0] > best[ex][0]:
            s, e = span[1], span[2]
            best[ex] = (span[0], contexts[ex][offsets[w, s, 0]:offsets[w, e, 1]])
    scores = np.array([score for score, _ in best])
    return [text for _, text in best], null - scores


def _check_postprocess_inputs(start, end, example_index, offsets, n_examples: int) -> None:
    if start.ndim != 2 or start.shape != end.shape:
        raise ValueError(f"start_logits {start.shape} and end_logits {end.shape} must both be (W, T)")
    if example_index.shape != (start.shape[0],):
        raise ValueError(f"example_index has shape {example_index.shape}, expected ({start.shape[0]},) windows")
    if offsets.shape != (*start.shape, 2):
        raise ValueError(f"offsets has shape {offsets.shape}, expected {(*start.shape, 2)}")
    if len(example_index) and (example_index.min() < 0 or example_index.max() >= n_examples):
        raise ValueError(f"example_index spans {example_index.min()}..{example_index.max()}, "
                         f"but there are {n_examples} contexts")
    missing = sorted(set(range(n_examples)) - set(example_index.tolist()))
    if missing:
        raise ValueError(f"examples {missing[:10]} have no windows")


def _best_span(start: np.ndarray, end: np.ndarray, offsets: np.ndarray, n_best: int,
               max_answer_length: int) -> tuple[float, int, int] | None:
    """(score, start, end) of the best valid span of one window, or None."""
    in_context = offsets[:, 0] >= 0  # (T,)
    starts = [i for i in np.argsort(-start, kind="stable")[:n_best] if in_context[i]]
    ends = [j for j in np.argsort(-end, kind="stable")[:n_best] if in_context[j]]
    found = None
    for i in starts:
        for j in ends:
            if i <= j < i + max_answer_length and (found is None or start[i] + end[j] > found[0]):
                found = (float(start[i] + end[j]), int(i), int(j))
    return found


# --------------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def predict_spans(model, rows: Sequence[dict], collator: QACollator, batch_size: int, device,
                  rows_per_chunk: int = 256) -> tuple[list[str], np.ndarray, int]:
    """The best span and null margin of each row (see :func:`best_spans`) and the number of
    windows. Windows are padded to ``max_seq_length`` and run ``batch_size`` at a time."""
    was_training = model.training
    model.eval()
    spans, null_diff, windows = [], [], 0
    for lo in range(0, len(rows), rows_per_chunk):
        chunk = rows[lo:lo + rows_per_chunk]
        enc = collator.encode(chunk, padding="max_length")
        starts, ends = [], []
        for i in range(0, len(enc["input_ids"]), batch_size):
            batch = {k: torch.tensor(enc[k][i:i + batch_size], dtype=torch.long, device=device)
                     for k in ("input_ids", "attention_mask", "token_type_ids")}
            out = model(**batch)
            starts.append(out.start_logits.float().cpu().numpy())  # (B, T)
            ends.append(out.end_logits.float().cpu().numpy())  # (B, T)
        texts, diff = best_spans(np.concatenate(starts), np.concatenate(ends), enc["example_index"],
                                 np.asarray(enc["offsets"]), [r["context"] for r in chunk])
        spans += texts
        null_diff.append(diff)
        windows += len(enc["input_ids"])
    model.train(was_training)
    return spans, np.concatenate(null_diff) if null_diff else np.zeros(0), windows


def evaluate_qa(model, rows: Sequence[dict], collator: QACollator, batch_size: int, device,
                null_threshold: float = 0.0, tune_rows: Sequence[dict] | None = None) -> dict:
    """SQuAD EM/F1 (``score`` = F1) of ``model`` on ``rows`` at ``null_threshold``, plus ``windows``.
    Null answers are allowed when some row is unanswerable (SQuAD 2.0 data); then the result also
    has the forced-answer HasAns scores, the always-null baseline and the oracle threshold
    (:func:`distill.evaluation.metrics.squad_v2_report`), and, with ``tune_rows`` (other questions, never the
    ones scored), ``f1_tuned`` at the best threshold on ``tune_rows``."""
    from distill.evaluation.metrics import best_null_threshold, squad, squad_v2_report

    spans, null_diff, windows = predict_spans(model, rows, collator, batch_size, device)
    golds = [gold_answers(r) for r in rows]
    if not any(r.get("is_impossible") for r in rows):  # SQuAD 1.1: always answer
        return squad(spans, golds) | {"windows": windows}
    tuned = None
    if tune_rows is not None:
        tune_spans, tune_diff, _ = predict_spans(model, tune_rows, collator, batch_size, device)
        tuned, _ = best_null_threshold(tune_spans, tune_diff, [gold_answers(r) for r in tune_rows])
    report = squad_v2_report(spans, null_diff, golds, tuned, threshold=null_threshold)
    return report | {"threshold": null_threshold, "windows": windows}



"""Evaluation, in one place: a model in memory on rows (:func:`evaluate`, what the Trainer calls at
each evaluation), and ``distill eval``'s any checkpoint with a task head (a pruned one compacted)
on any labelled split (:func:`evaluate_checkpoint`)."""
from __future__ import annotations

import os
import time

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def predict(model: nn.Module, rows: list[dict], collator, batch_size: int, device: torch.device,
            regression: bool) -> np.ndarray:
    """Class ids (or scores for regression) for ``rows``, in order: (N,)."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(rows), batch_size):
        batch = {k: v.to(device) for k, v in collator(rows[i:i + batch_size]).items()}
        batch.pop("labels", None)
        logits = model(**batch).logits.float()  # (B, C)
        out.append(logits[:, 0] if regression else logits.argmax(-1))
    model.train(was_training)
    return torch.cat(out).cpu().numpy()


def evaluate(model, rows, collator, task, batch_size: int, device) -> dict:
    """The task's GLUE metrics on ``rows`` (SQuAD EM/F1 for QA; ``score`` picks the best checkpoint)."""
    from distill.evaluation.metrics import compute

    if task.kind == "qa":
        from distill.evaluation.squad import evaluate_qa

        return evaluate_qa(model, rows, collator, batch_size, device)
    regression = task.kind == "regression"
    preds = predict(model, rows, collator, batch_size, device, regression)
    return compute(task.metric, preds, np.array([r["label"] for r in rows]))


def trained_settings(model_path: str) -> dict:
    """The ``data`` section of the ``config.yaml`` saved beside a checkpoint of ours (``{}`` for a
    hub name or a directory we did not write): the lengths and windows the model was trained with."""
    import yaml

    path = os.path.join(model_path, "config.yaml")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        saved = yaml.safe_load(f) or {}
    return saved.get("data") or {}


def evaluate_checkpoint(model_path: str, task_name: str, data: str, split: str = "dev", batch_size: int = 64,
                        max_seq_length: int | None = None, device: str = "auto", doc_stride: int | None = None,
                        max_query_length: int | None = None, null_threshold: float = 0.0,
                        tune_data: str | None = None) -> dict:
    """GLUE metrics of ``model_path`` on ``data`` (TSV, GLUE directory or corpus), or SQuAD EM/F1 on
    a SQuAD JSON file or corpus; also rows, seconds, parameters. ``max_seq_length``, ``doc_stride``
    and ``max_query_length`` left None take the values the checkpoint was trained with (its saved
    ``config.yaml``), else the task's defaults (128 tokens, or 384/128/64 for SQuAD). SQuAD 2.0:
    ``tune_data`` (other questions than ``data``, e.g. held-out training questions) chooses the null
    threshold reported as ``f1_tuned`` (see ``distill.evaluation.squad.evaluate_qa``). Raises
    ``ModelError``/``CorpusError``/``ValueError`` naming the problem."""
    from transformers import AutoTokenizer

    from distill.config import default_max_seq_length
    from distill.data.stream import Collator
    from distill.data.glue import read_eval_rows
    from distill.modules.models import ModelError, count_parameters
    from distill.modules.pruning import load_pruned
    from distill.devices import resolve_device
    from pipelines.tasks import get_task

    task = get_task(task_name)
    trained = trained_settings(model_path)

    def setting(given, key: str, default: int) -> int:  # the flag, else as trained, else the default
        return given if given is not None else trained.get(key) if trained.get(key) is not None else default

    max_seq_length = setting(max_seq_length, "max_seq_length", default_max_seq_length(task.name))
    doc_stride = setting(doc_stride, "doc_stride", 128)
    max_query_length = setting(max_query_length, "max_query_length", 64)
    if task.kind == "qa":
        return _evaluate_qa(model_path, task, data, batch_size, max_seq_length, device, doc_stride,
                            max_query_length, null_threshold, tune_data)
    if tune_data is not None:
        raise ValueError(f"tune_data chooses a SQuAD 2.0 null threshold; task {task.name} has none")
    model = load_pruned(model_path, "classification")  # compacted when saved pruned: same outputs, less work
    if model.config.num_labels != task.num_labels:
        raise ModelError(f"{model_path} has {model.config.num_labels} outputs; task {task.name} has {task.num_labels}")
    dev = resolve_device(device, 0)
    model.to(dev).eval()
    rows = read_eval_rows(data, task, split)
    collator = Collator(AutoTokenizer.from_pretrained(model_path), task.text_fields, max_seq_length,
                        task.kind == "regression", with_labels=True)
    start = time.perf_counter()
    with torch.no_grad():
        result = evaluate(model, rows, collator, task, batch_size, dev)
    return {"task": task.name, "rows": len(rows), "seconds": round(time.perf_counter() - start, 3),
            "parameters": count_parameters(model), "max_seq_length": max_seq_length, **result}


def _evaluate_qa(model_path, task, data, batch_size, max_seq_length, device, doc_stride, max_query_length,
                 null_threshold, tune_data=None) -> dict:
    from transformers import AutoTokenizer

    from distill.modules.models import ModelError, count_parameters
    from distill.modules.pruning import load_pruned
    from distill.data.qa import QACollator, read_examples
    from distill.evaluation.squad import evaluate_qa
    from distill.devices import resolve_device

    model = load_pruned(model_path, "qa")
    if not any("QuestionAnswering" in a for a in (model.config.architectures or [])):
        raise ModelError(f"{model_path} has no trained QA head (architectures {model.config.architectures}); "
                         f"fine-tune it first: distill finetune task=squad")
    dev = resolve_device(device, 0)
    model.to(dev).eval()
    rows = read_examples(data, task)
    tune_rows = None
    if tune_data is not None:
        tune_rows = read_examples(tune_data, task)
        # the same question on the same context, whatever its id says
        shared = {(r["question"], r["context"]) for r in rows} & {(r["question"], r["context"]) for r in tune_rows}
        if shared:
            raise ValueError(f"tune_data {tune_data} shares {len(shared)} questions with {data} (e.g. "
                             f"{sorted(shared)[0][0]!r}); a threshold tuned on the scored questions is not a result")
    collator = QACollator(AutoTokenizer.from_pretrained(model_path), max_seq_length, doc_stride, max_query_length)
    start = time.perf_counter()
    result = evaluate_qa(model, rows, collator, batch_size, dev, null_threshold, tune_rows)
    return {"task": task.name, "rows": len(rows), "seconds": round(time.perf_counter() - start, 3),
            "parameters": count_parameters(model), "max_seq_length": max_seq_length, "doc_stride": doc_stride,
            "max_query_length": max_query_length, **result}

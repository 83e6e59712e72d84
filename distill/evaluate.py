"""``distill eval``: any checkpoint with a task head, on any labelled split."""
from __future__ import annotations

import time

import torch


def evaluate_checkpoint(model_path: str, task_name: str, data: str, split: str = "dev", batch_size: int = 64,
                        max_seq_length: int = 128, device: str = "auto") -> dict:
    """GLUE metrics of ``model_path`` on ``data`` (TSV, GLUE directory or corpus); also rows, seconds,
    parameters. Raises ``ModelError``/``CorpusError``/``ValueError`` naming the problem."""
    from transformers import AutoTokenizer

    from distill.data import Collator
    from distill.glue import read_eval_rows
    from distill.models import ModelError, count_parameters, load_model
    from distill.train import _device, evaluate
    from pipelines.tasks import get_task

    task = get_task(task_name)
    model = load_model(model_path, "classification")
    if model.config.num_labels != task.num_labels:
        raise ModelError(f"{model_path} has {model.config.num_labels} outputs; task {task.name} has {task.num_labels}")
    dev = _device(device, 0)
    model.to(dev).eval()
    rows = read_eval_rows(data, task, split)
    collator = Collator(AutoTokenizer.from_pretrained(model_path), task.text_fields, max_seq_length,
                        task.kind == "regression", with_labels=True)
    start = time.perf_counter()
    with torch.no_grad():
        result = evaluate(model, rows, collator, task, batch_size, dev)
    return {"task": task.name, "rows": len(rows), "seconds": round(time.perf_counter() - start, 3),
            "parameters": count_parameters(model), **result}

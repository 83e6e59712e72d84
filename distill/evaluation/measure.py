"""What a compressed model costs: its size on disk and its CPU latency.

Used by the recipe runner's eval and latency stages, the experiments and the benchmarks, so every
table in the project measures the same way.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import time


def size_info(model_dir: str) -> dict:
    """``{"parameters", "mb"}``: the model's parameters and its ``model.safetensors`` in MiB. A
    pruned model (``pruning.json``) is stored full size with its cut weights zero: ``parameters``
    counts what its compact form holds (``load_pruned``, ``distill export``), ``stored_parameters``
    what the file holds, and ``mb`` stays the file's size."""
    from safetensors import safe_open

    path = os.path.join(model_dir, "model.safetensors")
    with safe_open(path, "pt") as f:
        params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    out = {"parameters": params, "mb": round(os.path.getsize(path) / 2**20, 1)}
    pruning = os.path.join(model_dir, "pruning.json")
    if os.path.exists(pruning):  # save_pruned records the compact count (distill.modules.pruning.effective_parameters)
        with open(pruning, encoding="utf-8") as f:
            compact = json.load(f)["summary"].get("parameters")
        if compact is not None:
            out |= {"parameters": compact, "stored_parameters": params}
    return out


def median_ms(model, inputs: list[dict], threads: int = 1, warmup: int = 5) -> float:
    """Median milliseconds of ``model(**x)`` over ``inputs`` (each one batch of tensors), after
    ``warmup`` of them, with ``threads`` intra-op threads (restored afterwards)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    times = []
    try:
        with torch.inference_mode():
            for i, x in enumerate(inputs):
                start = time.perf_counter()
                model(**x)
                if i >= warmup:
                    times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    if not times:
        raise ValueError(f"median_ms needs more than warmup={warmup} inputs, got {len(inputs)}")
    return 1000 * statistics.median(times)


def text_latency_ms(model_dir: str, texts: list[str | tuple[str, str]], max_length: int, threads: int = 1) -> float:
    """Median CPU milliseconds per text at batch size 1 of a sequence classifier (a pruned one
    compacted), each text tokenized alone (no padding) to at most ``max_length`` tokens."""
    from transformers import AutoTokenizer

    from distill.modules.pruning import load_pruned

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = load_pruned(model_dir, "classification").eval()
    inputs = [tok(*(t if isinstance(t, tuple) else (t,)), return_tensors="pt", truncation=True, max_length=max_length)
              for t in texts]
    return median_ms(model, inputs, threads)


def qa_latency_ms(model_dirs: dict[str, str], data: str, windows: int = 30, batch: int = 32, rounds: int = 3,
                  seq: int = 384, doc_stride: int = 128, max_query_length: int = 64) -> dict[int, dict[str, float]]:
    """Median CPU ms of one forward of 1 and of ``batch`` ``seq``-token windows, per QA model (each
    compacted when pruned), with the machine's threads: ``{1: {name: ms}, batch: {name: ms}}``.

    Windows: ``seq`` tokens, ``doc_stride`` and ``max_query_length`` as the models were trained.
    Batch 1 times ``windows`` windows of ``data`` (SQuAD JSON or corpus) a round, batch ``batch``
    two batches a round (windows cycled if there are fewer); models take turns input by input so
    machine noise hits all alike, and the median over ``rounds`` rounds is kept."""
    import torch
    from transformers import AutoTokenizer

    from distill.modules.pruning import load_pruned
    from distill.data.qa import QACollator, read_examples
    from pipelines.tasks import get_task

    first = next(iter(model_dirs.values()))
    collator = QACollator(AutoTokenizer.from_pretrained(first), seq, doc_stride, max_query_length)
    enc = collator.encode(read_examples(data, get_task("squad"))[:max(windows, 2 * batch)], padding="max_length")
    keys = ("input_ids", "attention_mask", "token_type_ids")
    n = len(enc["input_ids"])
    inputs = {1: [{k: torch.tensor([enc[k][w]]) for k in keys} for w in range(min(windows, n))],
              batch: [{k: torch.tensor([enc[k][(i * batch + j) % n] for j in range(batch)]) for k in keys}
                      for i in range(2)]}
    models = {name: load_pruned(d, "qa").eval() for name, d in model_dirs.items()}
    result = {}
    for b, xs in inputs.items():
        times: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(rounds):
            for x in xs:
                for name, model in models.items():
                    times[name].append(median_ms(model, [x] * 2, threads=torch.get_num_threads(), warmup=1))
        result[b] = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
    return result


def pruning_summary(model_dir: str, source: str | None = None) -> dict:
    """What a pruned model kept (its ``pruning.json``: heads and FFN units kept of all, heads per
    layer), and for an l0 run the targets and what was reached (the ``metrics.json`` of the pruning
    run ``source``, or of ``model_dir`` itself); ``{}`` for an unpruned model."""
    path = os.path.join(model_dir, "pruning.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        kept = json.load(f)["summary"]
    out = {k: kept[k] for k in ("heads_kept", "heads_total", "ffn_kept", "ffn_total", "heads_per_layer")}
    metrics = os.path.join(source or model_dir, "metrics.json")
    if os.path.exists(metrics):
        with open(metrics, encoding="utf-8") as f:
            m = json.load(f)
        out |= {k: m[k] for k in ("target_heads", "target_ffn", "reached_heads", "reached_ffn") if k in m}
    return out

"""How close a training step comes to the machine's own matmul rate, per stage and precision.

    python bench/train_step.py                                 # the demo's four steps, fp32 and bf16
    python bench/train_step.py --cases general --precision fp32 --steps 10
    python bench/train_step.py --cases bert-base --steps 2     # a BERT-base teacher fine-tune step

For each case the script builds the stage's models the way ``distill`` does (``distill.modules.objectives.build``:
the same loss modules, layer mapping and projector; ``distill.training.trainer.make_optimizer``: the same AdamW
and parameter groups) with random weights of the demo's shapes (speed depends on shapes, not
values), and times whole optimizer steps: the teacher's forward where the stage runs it, the
student's forward and backward under the precision's autocast, gradient clipping and the AdamW step.
Data loading is not in the step (``bench/stream_overhead.py`` measures the stream).

Printed side by side, per case and precision: seconds a step (median), the step's matmul FLOPs
(``torch.utils.flop_counter``: linear layers, attention, the embedding-free rest is not counted),
the achieved matmul GFLOP/s, the machine's measured matmul rate in the same precision (a
(2048 x 384) @ (384 x 1536) product, the demo's FFN shape, best of several), and the fraction.

Cases (batch x tokens):
  teacher       fine-tune MiniLM-L6 (6 x 384, FFN 1536) with a 2-way head, 32 x 64
  general       MiniLM-L6 encoder -> TinyBERT-4 (4 x 312, FFN 1200), 32 x 64 full windows
  intermediate  fine-tuned MiniLM-L6 -> TinyBERT-4, hidden + attention + embedding terms, 32 x 64
  prediction    TinyBERT-4 against cached teacher logits (the demo's cache_teacher), 32 x 64
  bert-base     fine-tune BERT-base (12 x 768, FFN 3072), 8 x 128
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from distill.config import config_from_dict  # noqa: E402
from distill.devices import resolve_precision  # noqa: E402
from distill.modules.objectives import TEACHER_TARGETS, build  # noqa: E402
from distill.training.trainer import make_optimizer  # noqa: E402

MINILM = dict(num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536)
BERT_BASE = dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072)
#: case -> (stage settings, teacher shape, batch, tokens)
CASES = {
    "teacher": ({"stage": "finetune"}, MINILM, 32, 64),
    "general": ({"stage": "general"}, MINILM, 32, 64),
    "intermediate": ({"stage": "task", "step": "intermediate"}, MINILM, 32, 64),
    "prediction": ({"stage": "task", "step": "prediction", "cached": True}, MINILM, 32, 64),
    "bert-base": ({"stage": "finetune"}, BERT_BASE, 8, 128),
}
PEAK_SHAPE = (2048, 384, 1536)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", default="teacher,general,intermediate,prediction",
                   help=f"comma-separated, of {', '.join(CASES)}")
    p.add_argument("--precision", default="fp32,bf16", help="comma-separated: fp32, bf16 (autocast)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per case (after --warmup)")
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error(f"--cases: unknown {unknown}; known: {list(CASES)}")
    precisions = [x.strip() for x in args.precision.split(",") if x.strip()]
    if any(x not in ("fp32", "bf16") for x in precisions):
        p.error(f"--precision: fp32 and/or bf16, got {args.precision!r}")

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # random models: their load reports are noise here
    hf_logging.disable_progress_bar()
    cpu = torch.device("cpu")
    native = resolve_precision("auto", cpu, warn=False)
    print(f"machine: torch {torch.__version__}, {torch.get_num_threads()} threads, {native.reason.removeprefix('auto: ')}"
          f"; ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY', '-')}")
    peaks = {x: peak_rate(x) for x in precisions}
    for x, rate in peaks.items():
        print(f"peak matmul {x}: {rate:.1f} GFLOP/s ({PEAK_SHAPE[0]}x{PEAK_SHAPE[1]} @ {PEAK_SHAPE[1]}x{PEAK_SHAPE[2]})")
    print()
    print("| case | batch x tokens | precision | s/step | matmul GFLOP/step | GFLOP/s | peak GFLOP/s | of peak |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            for x in precisions:
                row = time_case(case, x, args.steps, args.warmup, tmp)
                batch, tokens = CASES[case][2:]
                print(f"| {case} | {batch} x {tokens} | {x} | {row['seconds']:.3f} | {row['gflop']:.1f} | "
                      f"{row['gflop'] / row['seconds']:.1f} | {peaks[x]:.1f} | "
                      f"{row['gflop'] / row['seconds'] / peaks[x]:.0%} |", flush=True)


def peak_rate(precision: str, reps: int = 10, inner: int = 3) -> float:
    """The best GFLOP/s of the reference product in ``precision`` (bf16: bf16 operands, as autocast runs them)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    m, k, n = PEAK_SHAPE
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(inner):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(inner):
            a @ b
        best = min(best, (time.perf_counter() - t) / inner)
    return 2 * m * k * n / best / 1e9


def _models(case: str, tmp: str) -> dict:
    """Random models of the case's shape on disk: the base encoder and a classification teacher."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    shape = CASES[case][1]
    folder = os.path.join(tmp, "bert-base" if shape is BERT_BASE else "minilm")
    if not os.path.isdir(folder):
        torch.manual_seed(0)
        cfg = BertConfig(**shape, num_labels=2)
        BertModel(cfg).save_pretrained(os.path.join(folder, "base"))
        BertForSequenceClassification(cfg).save_pretrained(os.path.join(folder, "classifier"))
    return {"base": os.path.join(folder, "base"), "classifier": os.path.join(folder, "classifier")}


def time_case(case: str, precision: str, steps: int, warmup: int, tmp: str) -> dict:
    """Median seconds of one optimizer step of ``case`` and the step's matmul GFLOP."""
    from torch.utils.flop_counter import FlopCounterMode

    settings, _, batch_size, tokens = CASES[case]
    settings = dict(settings)
    cached = settings.pop("cached", False)
    models = _models(case, tmp)
    teacher = models["base"] if settings["stage"] in ("general", "finetune") else models["classifier"]
    cfg = config_from_dict({**settings, "task": None if settings["stage"] == "general" else "sst2",
                            "model": {"teacher": teacher, "student": "tinybert-4"},
                            "data": {"train": "unused", "max_seq_length": tokens,
                                     "teacher_cache": os.path.join(tmp, "cache") if cached else None},
                            "train": {"precision": precision}})
    torch.manual_seed(0)
    parts = build(cfg)
    module = parts.module.train()
    optimizer = make_optimizer(module, cfg.optim)
    g = torch.Generator().manual_seed(1)
    batch = {"input_ids": torch.randint(1000, 30000, (batch_size, tokens), generator=g),
             "attention_mask": torch.ones(batch_size, tokens, dtype=torch.long),
             "token_type_ids": torch.zeros(batch_size, tokens, dtype=torch.long),
             "labels": torch.randint(0, 2, (batch_size,), generator=g)}
    if cached:
        batch[TEACHER_TARGETS] = torch.randn(batch_size, 2, generator=g)
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step():
        b = dict(batch)  # cached targets are popped off the batch, as the Trainer's collator hands them
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            targets = None
            if parts.teacher_targets is not None:
                with torch.no_grad():
                    targets = parts.teacher_targets(b)
            module(b, targets)["loss"].backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.optim.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step()
    for _ in range(max(0, warmup - 1)):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return {"seconds": statistics.median(times), "gflop": counter.get_total_flops() / 1e9}


if __name__ == "__main__":
    main()

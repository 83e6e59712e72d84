"""What structured pruning buys at inference: a model vs its compact pruned form, side by side.

    python bench/prune_speed.py                              # ~2-4 min on 2 CPU cores
    python bench/prune_speed.py --shape bert-base --keep-heads 0.5 --keep-ffn 0.5 --batch 1,32 --seq 384
    python bench/prune_speed.py --model out/squad-prune-cpu/recover-l0-40/final   # a real pruned model
    python bench/prune_speed.py --train --batch 16 --precision bf16   # a recovery training step

The model is a QA model of the chosen shape (``minilm``: 6 layers, hidden 384, 12 heads, FFN 1536, the
asset's shape; ``bert-base``: 12 layers, 768, 12, 3072) with random weights: speed depends on shapes,
not values. A seeded random mask keeps --keep-heads of the heads and --keep-ffn of the FFN units
(over all layers); ``distill.modules.pruning.compact`` removes the rest. With ``--model`` the pruned model of
``distill prune`` is compared as users run it: loaded plainly (its pruned weights are zeros, the
unpruned model's cost) against ``distill.modules.pruning.load_pruned`` (compacted). Full and compact forwards
alternate within each repetition so machine noise hits both alike; the script prints the medians and
the speed-up per batch size, the parameter counts, the safetensors file sizes, and the largest output
difference between the two forms.

``--train`` times a training step instead (forward, backward of a span loss, AdamW step), as
recovery after pruning runs it: the full-size model with fixed gates holding the mask shut (how
pruned models trained before they trained compacted) against the compact model.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from distill.modules.pruning import Gates, compact, random_scores, select  # noqa: E402

SHAPES = {"minilm": dict(num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536),
          "bert-base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="minilm")
    p.add_argument("--keep-heads", type=float, default=0.5)
    p.add_argument("--keep-ffn", type=float, default=0.5)
    p.add_argument("--model", help="a pruned model directory (distill prune's output, or a recovery of it)")
    p.add_argument("--batch", default="1,32", help="batch sizes, comma-separated")
    p.add_argument("--seq", type=int, default=384)
    p.add_argument("--reps", type=int, default=None, help="timed forwards per form and batch size "
                                                             "(default: 30 at batch 1, fewer for larger batches)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--train", action="store_true", help="time training steps: gated full model vs compact")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="--train: autocast as "
                                                                               "train.precision")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    full, small, mask, label = _models(args)
    full.to(args.device)
    small.to(args.device)
    sizes = {"full": _file_mb(full), "compact": _file_mb(small)}
    count = lambda m: sum(x.numel() for x in m.parameters())  # noqa: E731
    if args.train:  # the full-size form trains with fixed gates holding the mask shut
        Gates.holding(full, mask)
    result = {"model": label, "mode": "train" if args.train else "inference", "seq": args.seq, "device": args.device,
              "threads": torch.get_num_threads(),
              "heads_kept": int(mask.heads.sum()), "heads_total": mask.heads.numel(),
              "ffn_kept": int(mask.ffn.sum()), "ffn_total": mask.ffn.numel(),
              "parameters_full": count(full), "parameters_compact": count(small),
              "file_mb_full": sizes["full"], "file_mb_compact": sizes["compact"], "batches": {}}
    print(f"{label}: {result['heads_kept']}/{result['heads_total']} heads, {result['ffn_kept']}/"
          f"{result['ffn_total']} FFN units kept; {result['threads']} threads, {args.device}, {args.seq} tokens")
    for batch_size in [int(b) for b in args.batch.split(",")]:
        ids = torch.randint(1000, 20000, (batch_size, args.seq), device=args.device)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
        reps = args.reps or max(5, 30 // batch_size)
        if args.train:
            med, diff = _time_train_pair(full, small, batch, reps, args.device, args.precision)
        else:
            med, diff = _time_pair(full, small, batch, reps, args.device)
        result["batches"][batch_size] = {"full_ms": round(med["full"], 2), "compact_ms": round(med["compact"], 2),
                                         "speedup": round(med["full"] / med["compact"], 2), "reps": reps,
                                         "max_abs_output_diff": diff}
        what = " train step" if args.train else ""
        print(f"  batch {batch_size:>3}{what}: full {med['full']:.1f} ms, compact {med['compact']:.1f} ms -> "
              f"{med['full'] / med['compact']:.2f}x   (max |output diff| {diff:.1e})")
    print(f"  parameters {count(full) / 1e6:.1f}M -> {count(small) / 1e6:.1f}M; safetensors "
          f"{sizes['full']:.1f} MB -> {sizes['compact']:.1f} MB")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return result


def _models(args):
    """(full, compact, mask, label): the two forms of one pruned function."""
    from transformers import AutoModelForQuestionAnswering, BertConfig, BertForQuestionAnswering

    from distill.modules.pruning import apply_mask, load_pruned, read_mask

    if args.model:
        mask = read_mask(args.model)
        if mask is None:
            raise SystemExit(f"{args.model} has no pruning.json: not a model written by distill prune")
        full = AutoModelForQuestionAnswering.from_pretrained(args.model).eval()  # zeros: the unpruned cost
        return full, load_pruned(args.model, "qa").eval(), mask, args.model
    config = BertConfig(**SHAPES[args.shape], attn_implementation="sdpa")
    full = BertForQuestionAnswering(config).eval()
    small = BertForQuestionAnswering(config).eval()
    small.load_state_dict(full.state_dict())
    c = config
    mask = select(*random_scores(c.num_hidden_layers, c.num_attention_heads, c.intermediate_size, seed=0),
                  args.keep_heads, args.keep_ffn)
    apply_mask(full, mask)  # the same function as the compact form, at full cost
    compact(small, mask)
    return full, small, mask, f"{args.shape} (random weights, random mask)"


def _file_mb(model) -> float:
    """MB of the model's weights written as safetensors."""
    import tempfile

    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
        return round(os.path.getsize(path) / 2**20, 1)


def _time_pair(full, small, batch: dict, reps: int, device: str) -> tuple[dict, float]:
    """Median ms of each form, alternating, and the largest output difference."""
    def timed(model) -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(**batch)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    times = {"full": [], "compact": []}
    with torch.inference_mode():
        for _ in range(2):  # warm-up
            timed(full), timed(small)
        for _ in range(reps):
            times["full"].append(timed(full))
            times["compact"].append(timed(small))
        a, b = full(**batch), small(**batch)
        diff = max((a.start_logits - b.start_logits).abs().max().item(),
                   (a.end_logits - b.end_logits).abs().max().item())
    return {k: statistics.median(v) * 1000 for k, v in times.items()}, diff


def _time_train_pair(full, small, batch: dict, reps: int, device: str, precision: str) -> tuple[dict, float]:
    """Median ms of a training step of each form, alternating (each with its own AdamW), and the
    largest difference between the two forms' first losses."""
    targets = torch.randint(0, batch["input_ids"].shape[1], (batch["input_ids"].shape[0],), device=device)
    optimizers = {m: torch.optim.AdamW(m.parameters(), lr=1e-5) for m in (full, small)}
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step(model) -> float:
        model.train()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            out = model(**batch, start_positions=targets, end_positions=targets)
        out.loss.backward()
        optimizers[model].step()
        optimizers[model].zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    def dropout_off(model):  # the first losses compare the two forms' functions, not their dropout masks
        model.eval()
        with torch.no_grad(), torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            return model(**batch, start_positions=targets, end_positions=targets).loss.item()

    diff = abs(dropout_off(full) - dropout_off(small))
    times = {"full": [], "compact": []}
    step(full), step(small)  # warm-up
    for _ in range(reps):
        times["full"].append(step(full))
        times["compact"].append(step(small))
    return {k: statistics.median(v) * 1000 for k, v in times.items()}, diff


if __name__ == "__main__":
    main()

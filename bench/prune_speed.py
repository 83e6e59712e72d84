"""What structured pruning buys at inference: a model vs its compact pruned form, side by side.

    python bench/prune_speed.py                              # ~1-2 min on 2 CPU cores
    python bench/prune_speed.py --shape bert-base --keep-heads 0.5 --keep-ffn 0.5 --batch 1 --seq 256

The model is a QA model of the chosen shape (``minilm``: 6 layers, hidden 384, 12 heads, FFN 1536, the
asset's shape; ``bert-base``: 12 layers, 768, 12, 3072) with random weights: speed depends on shapes,
not values. A seeded random mask keeps --keep-heads of the heads and --keep-ffn of the FFN units
(over all layers); ``distill.pruning.compact`` removes the rest. Full and compact forwards alternate
within each repetition so machine noise hits both alike; the script prints the medians, the speed-up,
the parameter counts, and the largest output difference between the two forms.
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

from distill.pruning import compact, random_scores, select  # noqa: E402

SHAPES = {"minilm": dict(num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536),
          "bert-base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="minilm")
    p.add_argument("--keep-heads", type=float, default=0.5)
    p.add_argument("--keep-ffn", type=float, default=0.5)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)

    from transformers import BertConfig, BertForQuestionAnswering

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = BertConfig(**SHAPES[args.shape], attn_implementation="sdpa")
    full = BertForQuestionAnswering(config).eval().to(args.device)
    small = BertForQuestionAnswering(config).eval().to(args.device)
    small.load_state_dict(full.state_dict())
    c = config
    mask = select(*random_scores(c.num_hidden_layers, c.num_attention_heads, c.intermediate_size, seed=0),
                  args.keep_heads, args.keep_ffn)
    compact(small, mask)
    ids = torch.randint(1000, 20000, (args.batch, args.seq), device=args.device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}

    def timed(model) -> float:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(**batch)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    times = {"full": [], "compact": []}
    with torch.inference_mode():
        for _ in range(3):  # warm-up
            timed(full), timed(small)
        for _ in range(args.reps):
            times["full"].append(timed(full))
            times["compact"].append(timed(small))
        # the compact form with a zeroed copy is the reference: same function, fewer multiplications
        from distill.pruning import apply_mask

        apply_mask(full, mask)
        a, b = full(**batch), small(**batch)
        diff = max((a.start_logits - b.start_logits).abs().max().item(), (a.end_logits - b.end_logits).abs().max().item())
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    count = lambda m: sum(x.numel() for x in m.parameters())  # noqa: E731
    result = {"shape": args.shape, "batch": args.batch, "seq": args.seq, "device": args.device,
              "threads": torch.get_num_threads(), "keep_heads": args.keep_heads, "keep_ffn": args.keep_ffn,
              "full_ms": round(med["full"], 2), "compact_ms": round(med["compact"], 2),
              "speedup": round(med["full"] / med["compact"], 2), "parameters_full": count(full),
              "parameters_compact": count(small), "max_abs_output_diff": diff}
    print(f"{args.shape}, batch {args.batch} x {args.seq} tokens, {result['threads']} threads, {args.device}: "
          f"full {med['full']:.1f} ms, compact ({args.keep_heads:.0%} heads, {args.keep_ffn:.0%} FFN) "
          f"{med['compact']:.1f} ms -> {result['speedup']:.2f}x; parameters {count(full) / 1e6:.1f}M -> "
          f"{count(small) / 1e6:.1f}M; max |output diff| {diff:.1e}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()

"""Augmentation throughput: the batched engine vs a faithful per-word baseline, side by side.

    python bench/augment_throughput.py            # 200 SST-2 dev sentences, MiniLM teacher, GloVe 50-d
    python bench/augment_throughput.py --n 50 --device cuda

The baseline is the authors' procedure (one batch-1 full forward per masked word, full argsort
over GloVe per multi-piece word, no cache: tests/augment/per_word_reference.py). Both run on the
same texts, alternating chunk by chunk so machine noise hits both; their candidate lists are
compared (near-tie swaps within 1e-4 logits tolerated and counted) before any figure is printed.
"""
from __future__ import annotations

import argparse
import csv
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from augment import Augmenter  # noqa: E402
from augment.assets import asset  # noqa: E402
from tests.augment.per_word_reference import PerWordReference, compare, load_python_tokenizer  # noqa: E402


def sst2_dev(n: int) -> list[str]:
    with open(asset("glue", "SST-2", "dev.tsv"), encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    return [r[0] for r in rows[:n]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200, help="number of SST-2 dev sentences")
    p.add_argument("--chunk", type=int, default=100, help="texts per alternation (and per engine call)")
    p.add_argument("--teacher", default=str(asset("models", "minilm-l6-mlm")))
    p.add_argument("--glove", default=str(asset("glove", "glove.6B.50d.top100k.txt")))
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=None, help="masked-LM rows per forward (default: the engine's)")
    args = p.parse_args()

    texts = sst2_dev(args.n)
    engine = Augmenter.from_pretrained(args.teacher, args.glove, device=args.device, batch_size=args.batch_size)
    single = Augmenter(engine.tokenizer, engine.teacher, engine.glove,
                       engine.config.__class__(**{**engine.config.__dict__, "mlm_input": "single"}))
    baseline = PerWordReference(engine.teacher.model, load_python_tokenizer(args.teacher), args.glove)
    engine.candidates(texts[:4])  # warm-up (allocator, kernels) for both paths
    baseline.candidates(texts[0])

    times = {"baseline": 0.0, "pair": 0.0, "single": 0.0}
    pair_rows = 0
    totals = {"positions": 0, "exact": 0, "tolerated": 0, "mismatches": 0}
    for start in range(0, len(texts), args.chunk):
        chunk = texts[start : start + args.chunk]
        engine.glove._cache.clear()  # each chunk pays for its own GloVe queries
        rows, t = engine.teacher.rows_run, time.perf_counter()
        found = engine.candidates(chunk)
        times["pair"] += time.perf_counter() - t
        pair_rows += engine.teacher.rows_run - rows
        engine.glove._cache.clear()
        t = time.perf_counter()
        single.candidates(chunk)
        times["single"] += time.perf_counter() - t
        t = time.perf_counter()
        for text in chunk:
            baseline.candidates(text)
        times["baseline"] += time.perf_counter() - t
        for text, cands in zip(chunk, found):  # untimed: the comparison reruns the baseline
            report = compare(baseline, cands, text)
            for key in ("positions", "exact", "tolerated"):
                totals[key] += report[key]
            totals["mismatches"] += len(report["mismatches"])
            for m in report["mismatches"]:
                print("MISMATCH", text, m, file=sys.stderr)

    n = len(texts)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"device {args.device}, torch {torch.__version__}")
    print(f"texts: {n} SST-2 dev sentences; eligible positions: {totals['positions']}; "
          f"masked-LM rows (pair): {pair_rows}")
    print(f"candidate lists identical to the per-word baseline: {totals['exact']}/{totals['positions']} exact, "
          f"{totals['tolerated']} near-tie swaps tolerated, {totals['mismatches']} mismatches")
    base = n / times["baseline"]
    print(f"{'per-word baseline (pair)':28s} {base:8.2f} texts/s   1.00x")
    for mode in ("pair", "single"):
        rate = n / times[mode]
        print(f"{'engine (' + mode + ')':28s} {rate:8.2f} texts/s {rate / base:6.2f}x")
    if totals["mismatches"]:
        sys.exit(1)


if __name__ == "__main__":
    main()

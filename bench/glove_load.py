"""GloVe loading: first load (parse text, write the binary cache) vs later loads (memory-mapped).

    python bench/glove_load.py                       # a synthetic 400,000 x 300 file (~1.3 GB, in a temp dir)
    python bench/glove_load.py --glove glove.840B.300d.txt

Prints seconds for the text parse + cache write, for a cached load, and for a batch of 1,000
nearest-neighbour queries (K=15) on the loaded index.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from augment.glove import GloveIndex  # noqa: E402


def synthesize(path: Path, words: int, dim: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, words, 10000):
            block = rng.normal(size=(min(10000, words - start), dim)).astype(np.float32)
            f.write("".join(f"w{start + i} " + " ".join(f"{x:.5f}" for x in row) + "\n" for i, row in enumerate(block)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--glove", help="an existing GloVe text file (default: synthesize one)")
    p.add_argument("--words", type=int, default=400_000)
    p.add_argument("--dim", type=int, default=300)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.glove) if args.glove else Path(tmp) / f"synthetic.{args.words}x{args.dim}.txt"
        if not args.glove:
            t = time.perf_counter()
            synthesize(path, args.words, args.dim)
            print(f"synthesized {path.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - t:.1f}s")
        cache = Path(tmp) / "cache"
        t = time.perf_counter()
        first = GloveIndex.load(path, cache_dir=cache)
        t_first = time.perf_counter() - t
        t = time.perf_counter()
        second = GloveIndex.load(path, cache_dir=cache)
        t_second = time.perf_counter() - t
        queries = first.words[:1000]
        t = time.perf_counter()
        second.nearest(queries, 15)
        t_query = time.perf_counter() - t
        print(f"{len(first):,} x {first.dim}: first load (parse + cache) {t_first:.1f}s, "
              f"cached load {t_second:.2f}s ({t_first / t_second:.0f}x), 1,000 queries K=15 {t_query:.2f}s")


if __name__ == "__main__":
    main()

"""Throughput of the corpus builder vs the augmentation engine alone, and 1 vs 2 DirectRunner workers.

    python bench/pipeline_throughput.py                  # 800 SST-2 train texts, N_a = 4 (~2 min)
    python bench/pipeline_throughput.py --texts 1000 --workers 1,2,4

Every measurement covers the same texts with the same ids and parameters and includes loading the
teacher and GloVe, so the ratio is the whole cost of running through Beam: start-up, reading the
TSV, batching, building rows, writing shards, dead letters and the manifest.

* engine: ``Augmenter.from_pretrained`` + ``augment_batch`` over batches of ``--records-per-batch``
  (after a small warm-up run, so one-time imports and torch initialisation count for neither side).
* pipeline, W workers: ``pipelines.corpus.run`` with ``--direct_num_workers=W`` (W > 1 runs
  ``--direct_running_mode=multi_processing``, each worker loading its own teacher).

Each process uses ``--torch-threads`` threads (default 1), so 2 workers use 2 cores.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from bench.inputs import add_corpus_inputs, resolve_corpus_inputs  # noqa: E402
from pipelines.transforms import RECORDS_PER_BATCH  # noqa: E402


def engine_alone(args, texts: list[str]) -> tuple[float, float]:
    """(seconds including loading, seconds augmenting) for the engine on ``texts``."""
    import torch

    from augment import Augmenter

    torch.set_num_threads(args.torch_threads)
    start = time.perf_counter()
    aug = Augmenter.from_pretrained(args.teacher, args.glove, n_aug=args.n_aug)
    loaded = time.perf_counter()
    for i in range(0, len(texts), args.records_per_batch):
        batch = texts[i:i + args.records_per_batch]
        aug.augment_batch(batch, [f"train-{j:06d}" for j in range(i, i + len(batch))])
    end = time.perf_counter()
    return end - start, end - loaded


def pipeline(args, workers: int, out: str) -> tuple[float, dict]:
    from pipelines.corpus import run

    argv = ["--task", "sst2", "--input", args.input, "--max-records", str(args.texts), "--output", out,
            "--overwrite", "--teacher", args.teacher, "--glove", args.glove, "--n-aug", str(args.n_aug),
            "--records-per-batch", str(args.records_per_batch), "--torch-threads", str(args.torch_threads),
            "--num-shards", "4", "--progress-seconds", "1000",
            # The Python runner, whose --direct_num_workers we measure (DirectRunner may pick Prism).
            "--runner", "apache_beam.runners.portability.fn_api_runner.FnApiRunner"]
    if workers > 1:
        argv += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    start = time.perf_counter()
    manifest = run(argv)
    return time.perf_counter() - start, manifest


def read_texts(path: str, n: int) -> list[str]:
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")[1:n + 1]  # SST-2 has a header; text is column 0
    return [line.split("\t")[0] for line in lines]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--texts", type=int, default=800)
    p.add_argument("--n-aug", type=int, default=4)
    p.add_argument("--records-per-batch", type=int, default=RECORDS_PER_BATCH)
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--workers", default="1,2", help="comma-separated DirectRunner worker counts")
    add_corpus_inputs(p)
    args = resolve_corpus_inputs(p.parse_args())
    logging.basicConfig(level=logging.WARNING, force=True)

    texts = read_texts(args.input, args.texts)
    engine_alone(args, texts[:8])  # warm-up: imports, torch's first forward, the GloVe cache
    load_before = os.getloadavg()[0]  # other work on the machine skews every figure: report it
    total, augmenting = engine_alone(args, texts)
    results = {"texts": len(texts), "n_aug": args.n_aug, "cpu_count": os.cpu_count(), "loadavg_1m_before": load_before,
               "engine": {"seconds": round(total, 2), "texts_per_s": round(len(texts) / total, 1),
                          "texts_per_s_after_load": round(len(texts) / augmenting, 1)}}
    print(f"engine alone      : {len(texts) / total:7.1f} texts/s ({total:.1f}s, "
          f"{len(texts) / augmenting:.1f} texts/s after loading)")
    with tempfile.TemporaryDirectory() as tmp:
        for workers in [int(w) for w in args.workers.split(",")]:
            seconds, manifest = pipeline(args, workers, os.path.join(tmp, f"w{workers}"))
            assert manifest["counts"]["originals"] == len(texts), manifest["counts"]
            rate = len(texts) / seconds
            overhead = seconds / total - 1
            results[f"pipeline_{workers}_workers"] = {"seconds": round(seconds, 2), "texts_per_s": round(rate, 1),
                                                      "overhead_vs_engine": round(overhead, 3),
                                                      "rows": manifest["counts"]["rows"]}
            print(f"pipeline {workers} worker(s): {rate:7.1f} texts/s ({seconds:.1f}s, "
                  f"{overhead:+.1%} time vs engine alone, {manifest['counts']['rows']} rows)")
    one = results.get("pipeline_1_workers")
    two = results.get("pipeline_2_workers")
    if one and two:
        print(f"2 vs 1 workers    : {two['texts_per_s'] / one['texts_per_s']:.2f}x")
    results["loadavg_1m_after"] = os.getloadavg()[0]
    print(f"1-minute load average: {load_before:.2f} before, {results['loadavg_1m_after']:.2f} after "
          f"({os.cpu_count()} cores)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()

"""Streaming-from-shards overhead (issue 5 targets: step time < 5% over in-memory tensors; peak RSS
flat from 1x to 10x the shards).

    python bench/stream_overhead.py                      # defaults: ~1-2 min on 2 CPU cores
    python bench/stream_overhead.py --rows 20000 --steps 60 --workers 2 --json out/bench.json

Step time: the same TinyBERT-4-shaped student trained for --steps steps on (a) batches streamed
from Arrow shards and tokenised on the fly in DataLoader workers, and (b) the same batches
pre-tokenised into tensors in RAM (the authors' approach). Peak RSS: a fresh process streams one
full epoch of a corpus of --rows rows and of 10x --rows rows (data only), reporting ru_maxrss.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from distill.data.stream import Collator, loader, open_corpus  # noqa: E402
from distill.data.shards import ShardWriter, task_schema  # noqa: E402
from pipelines.tasks import get_task  # noqa: E402

WORDS = ("the a film movie story plot acting good great fine funny sweet bad dull boring awful weak not very so "
         "and but is was it this of to in with music cast scene director script performance heart").split()


def write_corpus(root: str, rows: int, rows_per_shard: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    manifest = {"task": "sst2", "text_fields": ["sentence"], "label_names": ["0", "1"]}
    with ShardWriter(root, task_schema(["sentence"]), rows_per_shard, manifest) as w:
        for i in range(rows):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40)))
            w.write({"id": f"r{i}", "source_id": f"s{i // 10}", "aug_index": i % 10, "sentence": text,
                     "label": rng.randint(0, 1)})
    return root


def tokenizer():
    try:
        from augment.assets import asset
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(asset("models", "minilm-l6-mlm")))
    except (FileNotFoundError, OSError):
        from transformers import BertTokenizer

        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
        return BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})


def student(vocab_size: int):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab_size, num_hidden_layers=4, hidden_size=312, intermediate_size=1200,
                        num_attention_heads=12, num_labels=2)
    return BertForSequenceClassification(config)


def time_steps(model, batches, steps: int, warmup: int) -> float:
    """Mean seconds per training step after ``warmup`` steps; ``batches`` is any iterator."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        batch = next(batches)
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / steps


def step_time(args, corpus_dir: str) -> dict:
    tok = tokenizer()
    task = get_task("sst2")
    corpus = open_corpus(corpus_dir, task)
    collator = Collator(tok, ["sentence"], args.max_length)
    n = args.steps + args.warmup
    stream = corpus.stream(seed=0, buffer_size=args.buffer, chunk_rows=1024)
    # in memory: the very same batches, tokenised up front
    mem_batches = []
    it = iter(loader(corpus.stream(seed=0, buffer_size=args.buffer, chunk_rows=1024), collator, args.batch_size, 0))
    for _ in range(n):
        mem_batches.append(next(it))
    results = {}
    for name in (["memory", "stream"] * args.repeats):
        model = student(tok.vocab_size)
        source = iter(mem_batches) if name == "memory" else iter(loader(stream, collator, args.batch_size, args.workers))
        results.setdefault(name, []).append(time_steps(model, source, args.steps, args.warmup))
    best = {k: min(v) for k, v in results.items()}
    return {"step_s_memory": best["memory"], "step_s_stream": best["stream"],
            "overhead": best["stream"] / best["memory"] - 1}


def epoch_rss(corpus_dir: str, buffer: int, workers: int) -> dict:
    """Child process: stream one full epoch (tokenised, batched); report peak RSS in MiB.

    The data is read in this process (no DataLoader workers): ru_maxrss of a worker that is still
    alive would not be counted anywhere, and the reading code is the same either way.
    """
    corpus = open_corpus(corpus_dir, get_task("sst2"))
    collator = Collator(tokenizer(), ["sentence"], 128)
    batches = iter(loader(corpus.stream(seed=0, buffer_size=buffer, chunk_rows=1024), collator, 32, 0))
    rows = 0
    while rows < corpus.total:
        rows += len(next(batches)["labels"])
    return {"rows": rows, "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=20_000, help="rows in the 1x corpus")
    p.add_argument("--rows-per-shard", type=int, default=5_000)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--buffer", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--_rss", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._rss:
        print(json.dumps(epoch_rss(args._rss, args.buffer, args.workers)))
        return {}
    torch.set_num_threads(max(1, (os.cpu_count() or 2) - args.workers))
    with tempfile.TemporaryDirectory() as tmp:
        one = write_corpus(os.path.join(tmp, "x1"), args.rows, args.rows_per_shard)
        ten = write_corpus(os.path.join(tmp, "x10"), 10 * args.rows, args.rows_per_shard)
        result = {"config": {k: v for k, v in vars(args).items() if not k.startswith("_")}, **step_time(args, one)}
        for name, corpus in (("x1", one), ("x10", ten)):
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--_rss", corpus, "--buffer",
                                  str(args.buffer), "--workers", str(args.workers)],
                                 capture_output=True, text=True, check=True)
            result[f"rss_{name}"] = json.loads(out.stdout.strip().splitlines()[-1])
    result["rss_growth"] = result["rss_x10"]["peak_rss_mib"] / result["rss_x1"]["peak_rss_mib"] - 1
    result["targets_met"] = {"overhead_under_5pct": result["overhead"] < 0.05, "rss_flat_within_10pct": result["rss_growth"] < 0.10}
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()

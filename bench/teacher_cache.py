"""Prediction-step training with the live teacher against the teacher cache (issue 11 target: at
least 2.5x faster with a BERT-base-shaped teacher on CPU, memory flat).

    python bench/teacher_cache.py                                  # full size (see --help for sizes)
    python bench/teacher_cache.py --rows 256 --steps 2 --warmup 1 --repeats 1 --agreement-batches 1
    python bench/teacher_cache.py --recipe configs/squad-cpu/recover.yaml --cache OUT/teacher-cache-fit \
        --set model.teacher=OUT/teacher-continue/final --set model.student=OUT/l0-50/pruned \
        --set data.train=OUT/train-fit.json --steps 10 --warmup 2   # a recovery step, live vs cache

Needs the assets (BERT_COMPRESS_ASSETS): the bert-base-uncased vocabulary, MiniLM-L6 and SST-2.
For each teacher, (a) BERT-base-shaped (12 layers, hidden 768, random weights: speed depends on
shapes only) and (b) MiniLM-L6 with a fresh classification head:

1. the cache of a corpus of --rows SST-2 training sentences, joined until each fills 128 tokens,
   is built (seconds, rows per second, bytes per row, the fill-up share of the forwards);
2. ``distill task --step prediction`` (the Trainer, in a fresh child process each time) trains a
   TinyBERT-4 student, batch 32, sequence 128, with the live teacher and with the cache,
   alternately --repeats times: mean step time after --warmup steps, and the process's peak RSS;
3. agreement: on --agreement-batches batches of SST-2 sentences as they are (batches padded to
   their longest, so the live teacher runs at other shapes than the cache's), the loss from the
   cache against the loss from the live teacher, for each of --dtypes (bfloat16: live under
   autocast, as train.precision=bf16): batches bit-equal, largest relative difference.

Memory flat: a child streams one whole epoch of cached batches (the cache reader and collator, no
model) over a corpus of --rss-rows rows and one of 10x as many, reporting peak RSS. (That cache is
built with a tiny 2-layer teacher: the data path is the same whatever the teacher.)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from augment.assets import asset  # noqa: E402
from distill.data.shards import ShardWriter, task_schema  # noqa: E402

SEQ = 128
BATCH = 32


def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(asset("models", "minilm-l6-mlm")))


def write_corpus(root: str, rows: int, rows_per_shard: int, min_words: int = 140) -> str:
    """``rows`` rows of SST-2 training sentences, each joined with the next ones until it has at
    least ``min_words`` words (140: every row fills max_seq_length = 128 tokens; 0: the sentences
    as they are), cycling through the file."""
    from distill.data.glue import read_tsv
    from pipelines.tasks import get_task

    sentences = [r["sentence"] for r in read_tsv(str(asset("glue", "SST-2", "train.tsv")), get_task("sst2"))]
    manifest = {"task": "sst2", "text_fields": ["sentence"], "label_names": ["0", "1"]}
    at = 0
    with ShardWriter(root, task_schema(["sentence"]), rows_per_shard, manifest) as w:
        for i in range(rows):
            words = sentences[at % len(sentences)].split()
            at += 1
            while len(words) < min_words:
                words += sentences[at % len(sentences)].split()
                at += 1
            w.write({"id": f"r{i}", "source_id": f"r{i}", "aug_index": 0, "sentence": " ".join(words),
                     "label": i % 2})
    return root


def save_teacher(kind: str, out: str) -> str:
    """A teacher directory with a classification head: ``bert-base`` (random, BERT-base shapes,
    the bert-base-uncased vocabulary), ``minilm`` (MiniLM-L6, fresh head) or ``tiny`` (2 x 64)."""
    from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    if kind == "minilm":
        model = AutoModelForSequenceClassification.from_pretrained(str(asset("models", "minilm-l6-mlm")), num_labels=2)
    else:
        shape = {} if kind == "bert-base" else dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                                    intermediate_size=128)
        model = BertForSequenceClassification(BertConfig(vocab_size=30522, num_labels=2, **shape))
    model.save_pretrained(out)
    tokenizer().save_pretrained(out)
    return out


def _overrides(teacher: str, corpus: str, out: str, cache: str | None) -> list[str]:
    overrides = [f"model.teacher={teacher}", "model.student=tinybert-4", f"data.train={corpus}", "task=sst2",
                 f"data.max_seq_length={SEQ}", f"train.batch_size={BATCH}", "train.tensorboard=false",
                 "train.save_every=0", f"output_dir={out}", "train.device=cpu", "stage=task", "step=prediction"]
    return overrides + ([f"data.teacher_cache={cache}"] if cache else [])


def _config(teacher: str, corpus: str, out: str, cache: str | None):
    from distill.config import load_config

    return load_config(None, _overrides(teacher, corpus, out, cache))


def child_steps(config: str, overrides: list[str], steps: int, warmup: int) -> dict:
    """Seconds per step (after ``warmup``) of the Trainer of ``config`` (a YAML path or "") with
    ``overrides``; peak RSS."""
    from distill.config import load_config
    from distill.training.trainer import Trainer

    recipe = Trainer(load_config(config or None, overrides))
    recipe.setup()
    batches = iter(recipe.loader)
    recipe.module.train()
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        recipe.train_step(batches)
    seconds = (time.perf_counter() - start) / steps
    recipe.cleanup()
    return {"step_s": seconds, "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "teacher_loaded": recipe.parts.teacher is not None}


def live_vs_cache(config: str, overrides: list[str], cache: str, args, out: str) -> dict:
    """Step times of the same Trainer with the live teacher and with ``cache``, alternately
    ``args.repeats`` times in fresh child processes (the best of each), and their ratio."""
    runs: dict[str, list[dict]] = {"live": [], "cache": []}
    for r in range(args.repeats):
        for mode in runs:
            extra = [f"output_dir={os.path.join(out, f'{mode}-{r}')}", "train.tensorboard=false", "train.save_every=0"]
            extra += [f"data.teacher_cache={cache}"] if mode == "cache" else []
            runs[mode].append(_child("steps", config, json.dumps(overrides + extra), str(args.steps),
                                     str(args.warmup)))
    result = {mode: {"step_s": round(min(x["step_s"] for x in rs), 4),
                     "peak_rss_mib": max(x["peak_rss_mib"] for x in rs),
                     "teacher_loaded": rs[0]["teacher_loaded"]} for mode, rs in runs.items()}
    result["speedup"] = round(result["live"]["step_s"] / result["cache"]["step_s"], 2)
    return result


def child_epoch_rss(teacher: str, corpus: str, cache: str) -> dict:
    """One epoch of cached batches (no model): peak RSS in MiB."""
    from distill.data.stream import Collator, loader, open_corpus
    from distill.modules.objectives import TEACHER_TARGETS
    from distill.training.teacher_cache import TeacherCache
    from pipelines.tasks import get_task

    task = get_task("sst2")
    cfg = _config(teacher, corpus, "unused", cache)
    c = TeacherCache.open(cache)
    stream = c.attach(open_corpus(corpus, task), cfg, task).stream(seed=0, buffer_size=10_000, chunk_rows=1024)
    batches = iter(loader(stream, c.collator(Collator(tokenizer(), ["sentence"], SEQ, with_labels=False)), BATCH))
    rows = 0
    while rows < stream.total:
        rows += len(next(batches)[TEACHER_TARGETS])
    return {"rows_streamed": rows, "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def agreement(teacher: str, corpus: str, cache: str, dtype: str, batches: int) -> dict:
    """Loss from the cache vs the live teacher's on the same batches (student in eval mode)."""
    from transformers import AutoModelForSequenceClassification

    from distill.data.stream import Collator, loader, open_corpus
    from distill.modules.models import build_student
    from distill.modules.objectives import TEACHER_TARGETS, PredictionLoss
    from distill.training.teacher_cache import TeacherCache
    from pipelines.tasks import get_task

    task = get_task("sst2")
    model = AutoModelForSequenceClassification.from_pretrained(teacher).eval()
    student = build_student("tinybert-4", model.config, "classification", 2).eval()
    loss = PredictionLoss(student, False, 1.0)
    c = TeacherCache.open(cache)
    stream = c.attach(open_corpus(corpus, task), _config(teacher, corpus, "unused", cache), task).stream(seed=1)
    # (the corpus has exactly ``batches`` x BATCH rows: one epoch, each row once)
    it = iter(loader(stream, c.collator(Collator(tokenizer(), ["sentence"], SEQ, with_labels=False)), BATCH))
    exact, rel, logit = 0, 0.0, 0.0
    for _ in range(batches):
        batch = next(it)
        cached = batch.pop(TEACHER_TARGETS)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            live = model(**batch).logits
            a, b = loss(batch, cached)["loss"].item(), loss(batch, live)["loss"].item()
        exact += a == b
        rel = max(rel, abs(a - b) / abs(b))
        logit = max(logit, (cached.float() - live.float()).abs().max().item())
    return {"dtype": dtype, "batches": batches, "loss_bit_equal": exact, "max_rel_loss_diff": rel,
            "max_abs_logit_diff": logit}


def _child(*args: str) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--_child", json.dumps(args)],
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"child {args[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_teacher(kind: str, args, tmp: str, corpus: str, natural: str) -> dict:
    """Build time and size, step times live vs cache (``corpus``: rows of 128 tokens), and the
    loss agreement on ``natural`` (SST-2 sentences as they are: batches padded to their longest,
    so the live teacher runs at other shapes than the cache's)."""
    from distill.training.teacher_cache import build

    teacher = save_teacher(kind, os.path.join(tmp, f"{kind}-teacher"))
    cache = os.path.join(tmp, f"{kind}-cache")
    m = build(teacher, corpus, cache, batch_size=args.build_batch_size, device="cpu")
    result = {"teacher": kind, "build": {"seconds": round(m["seconds"], 2), "rows": m["rows"],
                                         "rows_per_s": round(m["rows"] / m["seconds"], 1),
                                         "bytes_per_row": m["bytes_per_row"],
                                         "fill_fraction": round(m["fill_fraction"], 4)}}
    result |= live_vs_cache("", _overrides(teacher, corpus, "unused", None), cache, args, os.path.join(tmp, kind))
    result["agreement"] = []
    for dtype in args.dtypes.split(","):
        natural_cache = os.path.join(tmp, f"{kind}-natural-{dtype}")
        m = build(teacher, natural, natural_cache, batch_size=args.build_batch_size, device="cpu", dtype=dtype)
        measured = agreement(teacher, natural, natural_cache, dtype, args.agreement_batches)
        result["agreement"].append(measured | {"bytes_per_row": m["bytes_per_row"],
                                               "fill_fraction": round(m["fill_fraction"], 4)})
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1024, help="rows of the benchmark corpus")
    p.add_argument("--rows-per-shard", type=int, default=512)
    p.add_argument("--teachers", default="bert-base,minilm")
    p.add_argument("--dtypes", default="float32,bfloat16", help="cache dtypes whose loss agreement is measured "
                   "(steps are timed with float32)")
    p.add_argument("--build-batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--agreement-batches", type=int, default=8)
    p.add_argument("--rss-rows", type=int, default=2000, help="rows of the 1x corpus of the memory check")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--recipe", metavar="CONFIG", default=None,
                   help="instead: time this training config's steps live against --cache (e.g. a pruning "
                        "recovery: configs/squad-cpu/recover.yaml), with --set KEY=VALUE overrides")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--cache", default=None, help="the teacher cache of --recipe's data.train")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        name, *rest = json.loads(args._child)
        if name == "steps":
            config, overrides, steps, warmup = rest
            print(json.dumps(child_steps(config, json.loads(overrides), int(steps), int(warmup))))
        else:
            print(json.dumps(child_epoch_rss(*rest)))
        return {}
    if args.recipe:
        return recipe_main(args)
    from distill.training.teacher_cache import build

    result = {"config": {k: v for k, v in vars(args).items() if not k.startswith("_")} | {"batch": BATCH, "seq": SEQ},
              "threads": torch.get_num_threads(), "teachers": []}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = write_corpus(os.path.join(tmp, "corpus"), args.rows, args.rows_per_shard)
        natural = write_corpus(os.path.join(tmp, "natural"), args.agreement_batches * BATCH, args.rows_per_shard, 0)
        for kind in args.teachers.split(","):
            result["teachers"].append(bench_teacher(kind, args, tmp, corpus, natural))
            print(json.dumps(result["teachers"][-1]), file=sys.stderr)
        tiny = save_teacher("tiny", os.path.join(tmp, "tiny-teacher"))
        for name, rows in (("x1", args.rss_rows), ("x10", 10 * args.rss_rows)):
            c = write_corpus(os.path.join(tmp, f"rss-{name}"), rows, 5000)
            build(tiny, c, os.path.join(tmp, f"rss-{name}-cache"), device="cpu")
            result[f"rss_{name}"] = _child("rss", tiny, c, os.path.join(tmp, f"rss-{name}-cache"))
    result["rss_growth"] = round(result["rss_x10"]["peak_rss_mib"] / result["rss_x1"]["peak_rss_mib"] - 1, 4)
    base = next((t for t in result["teachers"] if t["teacher"] == "bert-base"), None)
    result["targets_met"] = {"bert_base_speedup_at_least_2.5x": None if base is None else base["speedup"] >= 2.5,
                             "rss_flat_within_10pct": result["rss_growth"] < 0.10}
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return result


def recipe_main(args) -> dict:
    """``--recipe``: one config's step time, live teacher against the cache."""
    if not args.cache:
        raise SystemExit("--recipe needs --cache DIR (the teacher cache of its data.train)")
    with tempfile.TemporaryDirectory() as tmp:
        result = {"recipe": args.recipe, "overrides": args.overrides, "steps": args.steps, "warmup": args.warmup,
                  "repeats": args.repeats, "threads": torch.get_num_threads()}
        result |= live_vs_cache(args.recipe, args.overrides, args.cache, args, tmp)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()

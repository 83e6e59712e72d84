"""The CPU-scale SST-2 experiment of issue 5, one command:

    python experiments/sst2_cpu.py --out out/sst2-cpu            # builds everything it needs
    python experiments/sst2_cpu.py --out out/sst2-cpu --aug-corpus corpora/sst2-aug   # reuse a corpus

1. augmented SST-2 corpus (pipelines/augment.py, TinyBERT augmentation with the MiniLM MLM + GloVe),
   on the first --max-records training sentences with --n-aug attempts each;
2. WikiText-2 shards (distill shard-text);
3. teacher: the MiniLM encoder fine-tuned on the corpus originals (configs/sst2-cpu/teacher.yaml);
4. general distillation MiniLM -> TinyBERT-4 on WikiText-2 (general.yaml);
5. task distillation (intermediate.yaml, then prediction.yaml) on the augmented corpus, and on its
   originals only with the same number of steps (the un-augmented baseline); both prediction steps
   read the teacher's logits from one cache of the corpus (distill cache-teacher, OUT/teacher-cache);
6. dev accuracy, retention (student / teacher), size and CPU latency -> OUT/results.md + .json.

Every stage resumes when rerun (finished stages are skipped). Dev is GLUE SST-2 dev (the checkpoint
selection split, as in the paper); MRPC/RTE are not touched.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from runs import distill, sh, size_info, stage, teacher_cache, write_results  # noqa: E402

from augment.assets import asset  # noqa: E402


def latency_ms(model_dir: str, sentences: list[str], threads: int = 1) -> float:
    """Median CPU milliseconds per sentence at batch size 1 (``threads`` intra-op threads)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from runs import teacher_cache, median_ms

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    return median_ms(model, [tok(s, return_tensors="pt", truncation=True, max_length=64) for s in sentences], threads)


def evaluate(model_dir: str, dev: str) -> dict:
    from distill.evaluate import evaluate_checkpoint

    return evaluate_checkpoint(model_dir, "sst2", dev, device="cpu")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out/sst2-cpu")
    p.add_argument("--aug-corpus", help="an existing augmented SST-2 corpus (skips step 1)")
    p.add_argument("--max-records", type=int, default=8000, help="SST-2 training sentences to use")
    p.add_argument("--n-aug", type=int, default=8, help="augmentation attempts per sentence")
    p.add_argument("--general-steps", type=int, default=None, help="override general.yaml max_steps")
    p.add_argument("--task-steps", type=int, default=None, help="steps of each task step (default: 1 epoch of "
                                                                 "the augmented corpus)")
    p.add_argument("--teacher-steps", type=int, default=None, help="override teacher.yaml (2 epochs)")
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--latency-sentences", type=int, default=105)
    p.add_argument("--dev-rows", type=int, default=None, help="use only the first N dev rows (smoke tests)")
    args = p.parse_args(argv)

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    mlm = str(asset("models", "minilm-l6-mlm"))
    dev = str(asset("glue", "SST-2", "dev.tsv"))
    if args.dev_rows:
        with open(dev, encoding="utf-8") as f:
            head = [next(f) for _ in range(args.dev_rows + 1)]
        dev = os.path.join(out, "dev-head.tsv")
        with open(dev, "w", encoding="utf-8") as f:
            f.writelines(head)
    corpus = args.aug_corpus or os.path.join(out, "corpus", "sst2-aug")
    if not os.path.exists(os.path.join(corpus, "manifest.json")):
        sh(sys.executable, "pipelines/augment.py", "--task", "sst2", "--input", str(asset("glue", "SST-2", "train.tsv")),
           "--output", corpus, "--teacher", mlm, "--glove", str(asset("glove", "glove.6B.50d.top100k.txt")),
           "--n-aug", str(args.n_aug), "--max-records", str(args.max_records))
    wiki = os.path.join(out, "corpus", "wikitext-2")
    if not os.path.exists(os.path.join(wiki, "manifest.json")):
        distill("shard-text", "--output", wiki, str(asset("corpus", "wikitext-2.valid.tokens.txt")),
                str(asset("corpus", "wikitext-2.test.tokens.txt")))

    every = {} if args.eval_every is None else {"train.eval_every": args.eval_every, "train.save_every": args.eval_every}
    teacher = stage(os.path.join(out, "teacher"), ["finetune"], "sst2-cpu/teacher.yaml", **{
        "model.teacher": mlm, "data.train": corpus, "data.dev": dev, **every,
        **({"train.max_steps": args.teacher_steps} if args.teacher_steps else {})})
    general = stage(os.path.join(out, "general"), ["general"], "sst2-cpu/general.yaml", **{
        "model.teacher": mlm, "data.train": wiki,
        **({"train.max_steps": args.general_steps} if args.general_steps else {})})

    from distill.data import open_corpus
    from pipelines.tasks import get_task

    total = open_corpus(corpus, get_task("sst2")).total
    steps = args.task_steps or math.ceil(total / 32)
    # the teacher's logits over the corpus, once, for both prediction steps (the intermediate
    # step matches hidden states and attention, which are not cached)
    cache = teacher_cache(os.path.join(teacher, "best"), corpus, os.path.join(out, "teacher-cache"),
                          "--max-seq-length", "64")
    results = {}
    for name, original_only in (("augmented", False), ("no-augmentation", True)):
        common = {"model.teacher": os.path.join(teacher, "best"), "data.train": corpus,
                  "data.original_only": str(original_only).lower(), "train.max_steps": steps}
        inter = stage(os.path.join(out, f"{name}-intermediate"), ["task", "--step", "intermediate"],
                      "sst2-cpu/intermediate.yaml", **common, **{"model.student": os.path.join(general, "final")})
        pred = stage(os.path.join(out, f"{name}-prediction"), ["task", "--step", "prediction"],
                     "sst2-cpu/prediction.yaml", **common, **every, **{
                         "model.student": os.path.join(inter, "final"), "data.dev": dev, "data.teacher_cache": cache})
        results[name] = os.path.join(pred, "best")

    from distill.glue import read_tsv

    sentences = [r["sentence"] for r in read_tsv(dev, get_task("sst2"))][:args.latency_sentences]
    rows = {}
    for name, model_dir in [("teacher (MiniLM-L6 fine-tuned)", os.path.join(teacher, "best")),
                            ("TinyBERT-4, augmented", results["augmented"]),
                            ("TinyBERT-4, no augmentation", results["no-augmentation"])]:
        rows[name] = {**evaluate(model_dir, dev), **size_info(model_dir), "latency_ms": latency_ms(model_dir, sentences)}
    t_acc = rows["teacher (MiniLM-L6 fine-tuned)"]["accuracy"]
    lines = ["| model | dev accuracy | retention | parameters | size (MB) | CPU latency (ms, batch 1, 1 thread) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        r["retention"] = r["accuracy"] / t_acc
        lines.append(f"| {name} | {100 * r['accuracy']:.2f} | {100 * r['retention']:.1f}% | {r['parameters'] / 1e6:.1f}M "
                     f"| {r['mb']} | {r['latency_ms']:.1f} |")
    aug, base = rows["TinyBERT-4, augmented"], rows["TinyBERT-4, no augmentation"]
    summary = {"corpus_rows": total, "task_steps": steps, "rows": rows,
               "targets": {"augmented_retention_ge_95pct": aug["retention"] >= 0.95,
                           "augmented_beats_unaugmented": aug["accuracy"] > base["accuracy"]}}
    return write_results(out, lines, summary)


if __name__ == "__main__":
    main()

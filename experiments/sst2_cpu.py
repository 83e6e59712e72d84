"""The CPU-scale SST-2 experiment of issue 5, one command, over the recipe runner:

    python experiments/sst2_cpu.py --out out/sst2-cpu

It runs the recipe experiments/sst2_cpu.yaml (augmented corpus of the first --max-records SST-2
training sentences with --n-aug attempts each; MiniLM-L6 teacher on their originals; general
distillation to TinyBERT-4 on WikiText-2; intermediate, then prediction distillation on the
augmented corpus) and again with both task steps on the corpus originals for the same number of
steps (the un-augmented baseline), both into one store: the corpus, teacher, general student and
its stages are built once. Writes OUT/results.md and results.json: dev accuracy, retention,
size, CPU latency of the teacher and both students. Every stage resumes when rerun and a finished
one is reused (``distill run``'s fingerprints). Dev is GLUE SST-2 dev (the checkpoint selection
split, as in the paper); MRPC/RTE are not touched.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from runs import write_results  # noqa: E402

RECIPE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sst2_cpu.yaml")
TEACHER, AUG, BASE = "teacher (MiniLM-L6 fine-tuned)", "TinyBERT-4, augmented", "TinyBERT-4, no augmentation"


def main(argv=None) -> dict:
    from augment.assets import asset
    from distill.run.recipes import load
    from distill.run.plan import make_plan, run_plan

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out/sst2-cpu")
    p.add_argument("--max-records", type=int, default=8000, help="SST-2 training sentences to use")
    p.add_argument("--n-aug", type=int, default=8, help="augmentation attempts per sentence")
    p.add_argument("--general-steps", type=int, default=None, help="override general max_steps (3000)")
    p.add_argument("--task-steps", type=int, default=None, help="steps of each task step (default: 1 epoch of "
                                                                 "the augmented corpus)")
    p.add_argument("--teacher-steps", type=int, default=None, help="override the teacher's 2 epochs")
    p.add_argument("--latency-sentences", type=int, default=105)
    p.add_argument("--dev-rows", type=int, default=None, help="use only the first N dev rows (smoke tests)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more recipe overrides")
    args = p.parse_args(argv)

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    dev = str(asset("glue", "SST-2", "dev.tsv"))
    if args.dev_rows:
        with open(dev, encoding="utf-8") as f:
            head = [next(f) for _ in range(args.dev_rows + 1)]
        dev = os.path.join(out, "dev-head.tsv")
        with open(dev, "w", encoding="utf-8") as f:
            f.writelines(head)
    common = [f"corpus.max_records={args.max_records}", f"corpus.n_aug={args.n_aug}", f"data.dev={dev}",
              f"eval.latency_sentences={args.latency_sentences}", *args.set]
    common += [f"general.train.max_steps={args.general_steps}"] if args.general_steps else []
    common += [f"teacher.train.max_steps={args.teacher_steps}"] if args.teacher_steps else []
    store = os.path.join(out, "stages")
    steps = args.task_steps
    task_steps = [f"{s}.train.max_steps={steps}" for s in ("intermediate", "prediction")] if steps else []
    aug = run_plan(make_plan(load(RECIPE, common + task_steps), os.path.join(out, "augmented"), store))
    rows_in_corpus = aug["corpus"]["counts"]["rows"]
    steps = steps or math.ceil(rows_in_corpus / 32)  # the augmented student's one epoch, for both
    base = run_plan(make_plan(load(RECIPE, common + [
        f"{s}.{k}" for s in ("intermediate", "prediction")
        for k in ("data.original_only=true", f"train.max_steps={steps}")]), os.path.join(out, "no-augmentation"), store))

    rows = {TEACHER: aug["eval"]["models"]["teacher"], AUG: aug["eval"]["models"]["student"],
            BASE: base["eval"]["models"]["student"]}
    t_acc = rows[TEACHER]["accuracy"]
    lines = ["| model | dev accuracy | retention | parameters | size (MB) | CPU latency (ms, batch 1, 1 thread) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        r["retention"] = r["accuracy"] / t_acc
        lines.append(f"| {name} | {100 * r['accuracy']:.2f} | {100 * r['retention']:.1f}% | {r['parameters'] / 1e6:.1f}M "
                     f"| {r['mb']} | {r['latency_ms']:.1f} |")
    summary = {"corpus_rows": rows_in_corpus, "task_steps": steps, "rows": rows,
               "targets": {"augmented_retention_ge_95pct": rows[AUG]["retention"] >= 0.95,
                           "augmented_beats_unaugmented": rows[AUG]["accuracy"] > rows[BASE]["accuracy"]}}
    return write_results(out, lines, json.loads(json.dumps(summary)))


if __name__ == "__main__":
    main()

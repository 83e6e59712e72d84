"""Structured pruning of a SQuAD 2.0 model at CPU scale (McCarley et al., 2019), one command:

    python experiments/squad_prune_cpu.py --out out/squad-prune-cpu

1. teacher: the MiniLM encoder fine-tuned on squad2-train-split.json (configs/squad-cpu/teacher.yaml;
   no dev set: the final model is the teacher, nothing is selected on the holdout);
2. for each strategy (random, gain, l0): `distill prune` keeping --keep-heads of the attention heads
   and --keep-ffn of the FFN units (configs/squad-cpu/prune.yaml; l0 trains its gates for
   --l0-steps), then recovery by distillation from the unpruned teacher
   (configs/squad-cpu/recover.yaml);
3. EM/F1 on squad2-eval-split.json (the evaluation holdout: reported, never used to choose), the
   parameters once compacted, and CPU latency per window (batch 1, 1 thread) -> OUT/results.md + .json.

Every stage resumes when rerun (finished stages are skipped).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from runs import median_ms, stage  # noqa: E402

from augment.assets import asset  # noqa: E402

STRATEGIES = ("random", "gain", "l0")


def latency_ms(model_dir: str, eval_json: str, windows: int) -> float:
    """Median CPU ms of one window (batch 1, 1 thread) of the first ``windows`` eval questions; a
    pruned model runs compacted."""
    from transformers import AutoTokenizer

    from distill.evaluate import trained_settings
    from distill.pruning import load_pruned
    from distill.qa import QACollator, read_examples
    from pipelines.tasks import get_task

    d = trained_settings(model_dir)
    collator = QACollator(AutoTokenizer.from_pretrained(model_dir), d.get("max_seq_length", 384),
                          d.get("doc_stride", 128), d.get("max_query_length", 64))
    keys = ("input_ids", "attention_mask", "token_type_ids")
    inputs = []
    for row in read_examples(eval_json, get_task("squad"))[:windows]:
        batch = collator([row])
        inputs.append({k: batch[k][:1] for k in keys})
    return median_ms(load_pruned(model_dir, "qa").eval(), inputs)


def evaluate(model_dir: str, eval_json: str) -> dict:
    from distill.evaluate import evaluate_checkpoint

    r = evaluate_checkpoint(model_dir, "squad", eval_json, device="cpu")
    return {k: r[k] for k in ("exact", "f1", "HasAns_f1", "NoAns_f1", "parameters", "total")}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out/squad-prune-cpu")
    p.add_argument("--train", help="SQuAD 2.0 JSON to train on (default: the squad2-train-split asset)")
    p.add_argument("--eval", help="SQuAD 2.0 JSON to report on (default: the squad2-eval-split holdout)")
    p.add_argument("--keep-heads", type=float, default=0.5)
    p.add_argument("--keep-ffn", type=float, default=0.5)
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--teacher-epochs", type=float, default=None, help="override teacher.yaml (2 epochs)")
    p.add_argument("--teacher-steps", type=int, default=None)
    p.add_argument("--gain-batches", type=int, default=None, help="override prune.yaml (32)")
    p.add_argument("--l0-steps", type=int, default=200, help="steps of gate training for the l0 strategy")
    p.add_argument("--recover-steps", type=int, default=None, help="override recover.yaml (1 epoch)")
    p.add_argument("--latency-windows", type=int, default=60)
    args = p.parse_args(argv)

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    train = args.train or str(asset("squad", "squad2-train-split.json"))
    holdout = args.eval or str(asset("squad", "squad2-eval-split.json"))
    mlm = str(asset("models", "minilm-l6-mlm"))
    teacher = os.path.join(stage(os.path.join(out, "teacher"), ["finetune"], "squad-cpu/teacher.yaml", **{
        "model.teacher": mlm, "data.train": train,
        **({"train.epochs": args.teacher_epochs} if args.teacher_epochs else {}),
        **({"train.max_steps": args.teacher_steps} if args.teacher_steps else {})}), "final")

    models = {"teacher (MiniLM-L6 fine-tuned)": teacher}
    keep = {"prune.keep_heads": args.keep_heads, "prune.keep_ffn": args.keep_ffn}
    for strategy in args.strategies.split(","):
        extra = {"prune.strategy": strategy, **keep}
        if strategy == "l0":
            extra |= {"train.max_steps": args.l0_steps, "optim.lr": 0.1}
        if strategy == "gain" and args.gain_batches:
            extra["prune.gain_batches"] = args.gain_batches
        pruned = os.path.join(stage(os.path.join(out, f"prune-{strategy}"), ["prune"], "squad-cpu/prune.yaml",
                                    done="pruned", **{"model.teacher": teacher, "data.train": train, **extra}),
                              "pruned")
        recovered = stage(os.path.join(out, f"recover-{strategy}"), ["task", "--step", "prediction"],
                          "squad-cpu/recover.yaml", **{
                              "model.teacher": teacher, "model.student": pruned, "data.train": train,
                              **({"train.max_steps": args.recover_steps} if args.recover_steps else {})})
        models[f"{strategy}, pruned"] = pruned
        models[f"{strategy}, pruned + distillation"] = os.path.join(recovered, "final")

    rows = {}
    for name, model_dir in models.items():
        rows[name] = {**evaluate(model_dir, holdout), "latency_ms": latency_ms(model_dir, holdout, args.latency_windows)}
    base = rows["teacher (MiniLM-L6 fine-tuned)"]
    lines = ["| model | EM | F1 | F1 kept | parameters (compacted) | CPU ms / window (batch 1, 1 thread) | speed-up |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        r["f1_retention"] = r["f1"] / base["f1"] if base["f1"] else float("nan")
        r["speedup"] = base["latency_ms"] / r["latency_ms"]
        lines.append(f"| {name} | {r['exact']:.2f} | {r['f1']:.2f} | {100 * r['f1_retention']:.1f}% | "
                     f"{r['parameters'] / 1e6:.1f}M | {r['latency_ms']:.1f} | {r['speedup']:.2f}x |")
    summary = {"keep_heads": args.keep_heads, "keep_ffn": args.keep_ffn, "rows": rows,
               "eval": os.path.basename(holdout), "questions": base["total"]}
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    print("\n".join(lines))
    return summary


if __name__ == "__main__":
    main()

"""Structured pruning of a SQuAD 2.0 model at CPU scale (McCarley et al., 2019), one command:

    python experiments/squad_prune_cpu.py --out out/squad-prune-cpu

1. data: the train split (squad2-train-split.json) is cut by article into ``train-fit.json`` (all
   but the last --tune-articles articles: everything trains here) and ``train-tune.json`` (the
   null-answer threshold of every model is chosen here). squad2-eval-split.json is the holdout:
   reported, never used to choose anything.
2. teacher: the MiniLM encoder fine-tuned on train-fit (configs/squad-cpu/teacher.yaml, 3 epochs),
   then 3 more epochs at half the learning rate (teacher-continue.yaml; --teacher-continue-epochs).
3. the trade-off curve: for each --levels fraction kept (heads and FFN units alike), l0 gates
   driven to that target by a Lagrangian (configs/squad-cpu/prune-l0.yaml), then recovery by
   distillation from the unpruned teacher on the original questions (configs/squad-cpu/recover.yaml).
4. at --compare-level, with the same recovery steps: the gain strategy (one pass) + distillation;
   recovery by plain fine-tuning on the gold spans; recovery by distillation on an augmented corpus
   of train-fit (``python pipelines/augment.py --task squad --augment-context``).
   Does that corpus help the teacher? From the teacher, the same --teacher-more-steps of
   teacher-continue.yaml on the corpus's original questions and on all its rows (gold spans).
5. every model on the holdout: F1 at null threshold 0, F1 at the threshold tuned on train-tune,
   HasAns F1 with forced answers (span quality), the always-null baseline; parameters and file size
   once compacted; CPU latency at batch 1 x 384 tokens, all models side by side (interleaved) ->
   OUT/results.json, results.md, curve.png (F1 against speed-up), heads.png (heads kept per layer).

Recovery by distillation reads the teacher's start/end logits from a cache built once per corpus
(``distill cache-teacher``: OUT/teacher-cache-fit, -aug) instead of running the teacher at every
step. Every stage resumes when rerun (finished stages are skipped); OUT/timings.json keeps each
stage's wall time across reruns.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from runs import ROOT, Timings, sh, stage, teacher_cache, write_results  # noqa: E402

from augment.assets import asset  # noqa: E402
from distill.evaluation.measure import pruning_summary  # noqa: E402
from distill.evaluation.measure import qa_latency_ms as latencies  # noqa: E402

TEACHER = "teacher (MiniLM-L6 fine-tuned)"
LATENCY_SEQ = 384


def split_by_article(path: str, out: str, tune_articles: int) -> tuple[str, str]:
    """``out/train-fit.json`` (all but the last ``tune_articles`` articles) and ``out/train-tune.json``."""
    fit, tune = os.path.join(out, "train-fit.json"), os.path.join(out, "train-tune.json")
    if not (os.path.exists(fit) and os.path.exists(tune)):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if len(data["data"]) <= tune_articles:
            raise SystemExit(f"{path} has {len(data['data'])} articles; --tune-articles {tune_articles} leaves none "
                             f"to train on")
        for name, articles in ((fit, data["data"][:-tune_articles]), (tune, data["data"][-tune_articles:])):
            with open(name + ".tmp", "w", encoding="utf-8") as f:
                json.dump({**data, "data": articles}, f)
            os.replace(name + ".tmp", name)
    return fit, tune


def questions(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(len(p["qas"]) for a in json.load(f)["data"] for p in a["paragraphs"])


def augmented_corpus(out: str, fit: str, n_aug: int) -> str:
    """An augmented SQuAD corpus of train-fit (questions and the context words outside answers)."""
    corpus = os.path.join(out, "corpus-aug")
    if not os.path.exists(os.path.join(corpus, "manifest.json")):
        sh(sys.executable, os.path.join(ROOT, "pipelines", "augment.py"), "--task", "squad", "--augment-context",
           "--input", fit, "--output", corpus, "--teacher", str(asset("models", "minilm-l6-mlm")),
           "--glove", str(asset("glove", "glove.6B.50d.top100k.txt")), "--n-aug", str(n_aug), "--num-shards", "4")
    return corpus


# --------------------------------------------------------------------------------------------------
# Measuring


def evaluate(model_dir: str, holdout: str, tune: str) -> dict:
    """Holdout metrics with the null threshold chosen on the tune questions."""
    from distill.evaluation.evaluate import evaluate_checkpoint

    r = evaluate_checkpoint(model_dir, "squad", holdout, device="cpu", tune_data=tune)
    keys = ("exact", "f1", "f1_tuned", "exact_tuned", "null_threshold", "HasAns_f1", "NoAns_f1",
            "hasans_f1_forced", "hasans_exact_forced", "null_baseline_f1", "oracle_f1", "noans_auc", "parameters", "total")
    return {k: r[k] for k in keys}


# --------------------------------------------------------------------------------------------------
# Reporting


def table(rows: dict, batch: int) -> list[str]:
    base = rows[TEACHER]
    lines = ["| model | heads / FFN kept | F1 (thr 0) | F1 (tuned thr) | HasAns F1 (forced) | ΔF1 tuned | "
             f"ΔHasAns forced | parameters | MB | ms, batch 1 | speed-up | ms, batch {batch} | speed-up |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        kept = (f"{r['heads_kept']}/{r['heads_total']} / {r['ffn_kept'] / r['ffn_total']:.0%}" if "heads_kept" in r
                else "all")
        lines.append(f"| {name} | {kept} | {r['f1']:.2f} | {r['f1_tuned']:.2f} | {r['hasans_f1_forced']:.2f} | "
                     f"{r['f1_tuned'] - base['f1_tuned']:+.2f} | {r['hasans_f1_forced'] - base['hasans_f1_forced']:+.2f} "
                     f"| {r['parameters'] / 1e6:.1f}M | {r['mb']:.1f} | {r['latency_ms']:.1f} | {r['speedup']:.2f}x "
                     f"| {r['latency_ms_batch']:.0f} | {r['speedup_batch']:.2f}x |")
    lines.append(f"\nAlways-null baseline F1 on the holdout: {base['null_baseline_f1']:.2f} "
                 f"({base['total']} questions).")
    return lines


def plots(rows: dict, curve: list[str], out: str) -> list[str]:
    """curve.png (F1 against speed-up) and heads.png (heads kept per layer), if matplotlib is there."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib)")
        return []
    base = rows[TEACHER]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, label, marker in (("f1_tuned", "F1, threshold tuned on train questions", "o"),
                               ("hasans_f1_forced", "HasAns F1, forced answers", "s")):
        xs = [1.0] + [rows[n]["speedup"] for n in curve]
        ys = [base[key]] + [rows[n][key] for n in curve]
        ax.plot(xs, ys, marker=marker, label=label)
        ax.axhline(base[key] - 1.5, color="grey", lw=0.6, ls=":")
    for n in curve:
        ax.annotate(f"{rows[n]['heads_kept']}/{rows[n]['heads_total']} heads", (rows[n]["speedup"], rows[n]["f1_tuned"]),
                    textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.axvline(1.8, color="grey", lw=0.6, ls="--")
    ax.set_xlabel(f"CPU speed-up, batch 1 x {LATENCY_SEQ} tokens (compacted vs unpruned)")
    ax.set_ylabel("holdout score")
    ax.set_title("MiniLM-L6 SQuAD 2.0: l0 pruning to a target + distillation")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "curve.png"), dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(curve), figsize=(2.2 * len(curve), 2.6), squeeze=False)
    import numpy as np

    from distill.modules.pruning import read_mask
    for ax, n in zip(axes[0], curve):
        mask = read_mask(rows[n]["path"]).heads.numpy()
        ax.imshow(np.where(mask, 1.0, 0.0), cmap="Greens", vmin=0, vmax=1.2, aspect="auto")
        ax.set_title(f"{int(mask.sum())}/{mask.size} heads", fontsize=8)
        ax.set_xlabel("head", fontsize=7)
        ax.set_ylabel("layer", fontsize=7)
        ax.set_xticks(range(mask.shape[1]))
        ax.set_yticks(range(mask.shape[0]))
        ax.tick_params(labelsize=6)
    fig.suptitle("attention heads kept (green) per layer", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "heads.png"), dpi=120)
    plt.close(fig)
    return ["curve.png", "heads.png"]


# --------------------------------------------------------------------------------------------------
# The experiment


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out/squad-prune-cpu")
    p.add_argument("--train", help="SQuAD 2.0 JSON to train on (default: the squad2-train-split asset)")
    p.add_argument("--eval", help="SQuAD 2.0 JSON to report on (default: the squad2-eval-split holdout)")
    p.add_argument("--tune-articles", type=int, default=1, help="last articles of --train held out to tune the "
                                                                "null threshold")
    p.add_argument("--levels", default="0.7,0.5,0.4,0.3", help="fractions of heads and FFN units kept")
    p.add_argument("--compare-level", type=float, default=0.4, help="the level of the strategy/recovery comparisons")
    p.add_argument("--teacher-steps", type=int, default=None, help="override teacher.yaml (3 epochs)")
    p.add_argument("--teacher-continue-epochs", type=float, default=3.0,
                   help="epochs of teacher-continue.yaml after teacher.yaml (0: none)")
    p.add_argument("--teacher-continue-steps", type=int, default=None, help="override them with a step count")
    p.add_argument("--l0-steps", type=int, default=None, help="override prune-l0.yaml (200 steps)")
    p.add_argument("--gain-batches", type=int, default=None, help="override prune.yaml (32)")
    p.add_argument("--recover-steps", type=int, default=None, help="override recover.yaml (1 epoch of train-fit)")
    p.add_argument("--n-aug", type=int, default=2, help="N_a of the augmented corpus")
    p.add_argument("--no-augmented", action="store_true", help="skip the augmented-corpus comparisons")
    p.add_argument("--teacher-more-steps", type=int, default=None,
                   help="steps of more teacher training on the originals and on the augmented corpus "
                        "(default one epoch of train-fit; 0: skip)")
    p.add_argument("--latency-windows", type=int, default=30, help="windows timed one at a time, per round")
    p.add_argument("--latency-batch", type=int, default=32, help="the larger batch timed")
    args = p.parse_args(argv)

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    timings = Timings(out)
    train = args.train or str(asset("squad", "squad2-train-split.json"))
    holdout = args.eval or str(asset("squad", "squad2-eval-split.json"))
    fit, tune = split_by_article(train, out, args.tune_articles)

    teacher = os.path.join(timings.run("teacher", stage, os.path.join(out, "teacher"), ["finetune"],
                                       "squad-cpu/teacher.yaml", **{
                                           "model.teacher": str(asset("models", "minilm-l6-mlm")), "data.train": fit,
                                           **({"train.max_steps": args.teacher_steps} if args.teacher_steps else {})}),
                           "final")
    if args.teacher_continue_epochs > 0 or args.teacher_continue_steps:
        teacher = os.path.join(timings.run("teacher, continued", stage, os.path.join(out, "teacher-continue"),
                                           ["finetune"], "squad-cpu/teacher-continue.yaml", **{
                                               "model.teacher": teacher, "data.train": fit,
                                               "train.epochs": args.teacher_continue_epochs,
                                               **({"train.max_steps": args.teacher_continue_steps}
                                                  if args.teacher_continue_steps else {})}), "final")
    recover_steps = {"train.max_steps": args.recover_steps} if args.recover_steps else {}
    windows = ("--max-seq-length", "384", "--doc-stride", "128", "--max-query-length", "64")  # the configs'

    def cache(corpus: str, name: str) -> str:
        """The teacher's start/end logits over ``corpus``, once for every distillation from it."""
        return timings.run(name, teacher_cache, teacher, corpus, os.path.join(out, name), *windows)

    def l0(level: float) -> str:
        name = f"l0-{round(100 * level)}"
        extra = {"prune.target_heads": level, "prune.target_ffn": level,
                 **({"train.max_steps": args.l0_steps} if args.l0_steps else {})}
        return os.path.join(timings.run(name, stage, os.path.join(out, name), ["prune"], "squad-cpu/prune-l0.yaml",
                                        done="pruned", **{"model.teacher": teacher, "data.train": fit, **extra}),
                            "pruned")

    def recover(name: str, pruned: str, data: str, finetune: bool = False, **extra) -> str:
        command = ["finetune"] if finetune else ["task", "--step", "prediction"]
        models = {"model.teacher": pruned} if finetune else {"model.teacher": teacher, "model.student": pruned}
        if not finetune:
            extra = {"data.teacher_cache": cache(data, "teacher-cache-fit" if data == fit else "teacher-cache-aug"),
                     **extra}
        return os.path.join(timings.run(name, stage, os.path.join(out, name), command, "squad-cpu/recover.yaml",
                                        **{**models, "data.train": data, **recover_steps, **extra}), "final")

    models = {TEACHER: teacher}
    sources = {}  # a recovered model -> the pruning run it started from
    curve = []
    levels = [float(x) for x in args.levels.split(",")]
    for level in levels:
        pruned = l0(level)
        label = f"l0 {level:.0%}"
        models[f"{label}, pruned"] = pruned
        models[f"{label} + distillation"] = recover(f"recover-l0-{round(100 * level)}", pruned, fit)
        sources[f"{label} + distillation"] = pruned
        curve.append(f"{label} + distillation")

    c = args.compare_level
    pruned = l0(c)
    gain = os.path.join(timings.run("gain", stage, os.path.join(out, "prune-gain"), ["prune"], "squad-cpu/prune.yaml",
                                    done="pruned", **{"model.teacher": teacher, "data.train": fit,
                                                      "prune.keep_heads": c, "prune.keep_ffn": c,
                                                      **({"prune.gain_batches": args.gain_batches}
                                                         if args.gain_batches else {})}), "pruned")
    models[f"gain {c:.0%}, pruned"] = gain
    models[f"gain {c:.0%} + distillation"] = recover("recover-gain", gain, fit)
    models[f"l0 {c:.0%} + fine-tuning on gold spans"] = recover("finetune-l0", pruned, fit, finetune=True)
    sources[f"l0 {c:.0%} + fine-tuning on gold spans"] = pruned
    if not args.no_augmented:
        corpus = timings.run("augment", augmented_corpus, out, fit, args.n_aug)
        # the originals of the same corpus and the augmented rows, for the same number of steps
        steps = args.recover_steps or math.ceil(questions(fit) / 16)
        models[f"l0 {c:.0%} + distillation, originals (corpus)"] = recover(
            "recover-orig", pruned, corpus, **{"data.original_only": True, "train.max_steps": steps})
        models[f"l0 {c:.0%} + distillation, augmented corpus"] = recover(
            "recover-aug", pruned, corpus, **{"train.max_steps": steps})
        sources[f"l0 {c:.0%} + distillation, originals (corpus)"] = pruned
        sources[f"l0 {c:.0%} + distillation, augmented corpus"] = pruned
        # the teacher trained on: the same steps from the teacher, originals against augmented rows
        more = steps if args.teacher_more_steps is None else args.teacher_more_steps
        for name, label, original_only in (("teacher-more-orig", "originals", True),
                                           ("teacher-more-aug", "augmented corpus", False)):
            if more:
                models[f"more teacher training ({more} steps), {label}"] = os.path.join(timings.run(
                    name, stage, os.path.join(out, name), ["finetune"], "squad-cpu/teacher-continue.yaml", **{
                        "model.teacher": teacher, "data.train": corpus, "data.original_only": original_only,
                        "train.max_steps": more}), "final")

    rows = {}
    for name, model_dir in models.items():
        cached = os.path.join(model_dir, "holdout-eval.json")
        if os.path.exists(cached):
            with open(cached, encoding="utf-8") as f:
                r = json.load(f)
        else:
            r = timings.run(f"eval {name}", evaluate, model_dir, holdout, tune)
            with open(cached, "w", encoding="utf-8") as f:
                json.dump(r, f)
        rows[name] = {**r, **pruning_summary(model_dir, sources.get(name)), "mb": compact_mb(model_dir),
                      "path": model_dir}
    ms = timings.run("latency", latencies, models, holdout, args.latency_windows, args.latency_batch)
    for name, r in rows.items():
        r["latency_ms"] = round(ms[1][name], 2)
        r["speedup"] = round(ms[1][TEACHER] / ms[1][name], 3)
        r["latency_ms_batch"] = round(ms[args.latency_batch][name], 1)
        r["speedup_batch"] = round(ms[args.latency_batch][TEACHER] / ms[args.latency_batch][name], 3)

    lines = table(rows, args.latency_batch)
    pictures = plots(rows, curve, out)
    import torch

    summary = {"rows": rows, "curve": curve, "levels": levels, "compare_level": c, "holdout": os.path.basename(holdout),
               "tune": {"articles": args.tune_articles, "questions": questions(tune)},
               "fit_questions": questions(fit), "latency": {"batch": [1, args.latency_batch], "seq": LATENCY_SEQ,
                                                            "threads": torch.get_num_threads()},
               "timings_s": timings.data, "wall_s": round(sum(timings.data.values()), 1), "plots": pictures,
               "targets": targets(rows, curve)}
    return write_results(out, lines, summary)


def compact_mb(model_dir: str) -> float:
    """MB of the model's weights once compacted (float32), as saved by ``save_pretrained``."""
    from distill.modules.pruning import load_pruned

    model = load_pruned(model_dir, "qa")
    return round(sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20, 1)


def targets(rows: dict, curve: list[str]) -> dict:
    """The issue's targets on the curve: the fastest model within 1.5 (and 1.0) points of the
    teacher in both tuned F1 and forced HasAns F1, and whether it is >= 1.8x (2.0x)."""
    base = rows[TEACHER]

    def best(points: float) -> dict | None:
        ok = [n for n in curve if base["f1_tuned"] - rows[n]["f1_tuned"] <= points
              and base["hasans_f1_forced"] - rows[n]["hasans_f1_forced"] <= points]
        if not ok:
            return None
        n = max(ok, key=lambda n: rows[n]["speedup"])
        return {"model": n, "speedup": rows[n]["speedup"]}

    loss15, loss10 = best(1.5), best(1.0)
    return {"teacher_beats_null_baseline_by": round(base["f1_tuned"] - base["null_baseline_f1"], 2),
            "fastest_within_1.5": loss15, "fastest_within_1.0": loss10,
            "target_1.8x_at_1.5": bool(loss15 and loss15["speedup"] >= 1.8),
            "goal_2x_at_1.0": bool(loss10 and loss10["speedup"] >= 2.0)}


if __name__ == "__main__":
    main()

"""Does the augmented corpus pay? Seeds, error bars and the small-data regime (issue 13), one command:

    python experiments/sst2_aug_seeds.py --out out/sst2-aug-seeds      # --sizes 1500,8000 --seeds 3,2

TinyBERT-4 students distilled from one teacher with and without the augmented corpus, at several
numbers of original training sentences, several seeds each:

1. corpora: all of SST-2's training set as a corpus of originals (for the teacher); for each of
   --sizes N, the augmented corpus of the first N training sentences (pipelines/augment.py, the
   MiniLM MLM + GloVe, --n-aug attempts each, augmentation seed 42); WikiText-2 shards.
2. teacher: the MiniLM encoder fine-tuned on all 67,349 training sentences, one epoch
   (configs/sst2-cpu/teacher-full.yaml), its best checkpoint on SST-2 dev.
3. general distillation MiniLM -> TinyBERT-4 on WikiText-2 (configs/sst2-cpu/general.yaml), once:
   every student starts from it.
4. per size, the teacher's logits over its corpus, once (distill cache-teacher); both conditions'
   prediction steps read them (the originals-only runs read the originals' rows of the same cache).
5. per size x condition x seed, task distillation: intermediate, then prediction (intermediate.yaml,
   prediction.yaml). ``augmented`` trains on every row of the size's corpus, ``no-augmentation`` on
   its N originals only; both for the same number of steps with the same schedule (default one epoch
   of the augmented corpus, as experiments/sst2_cpu.py; --task-steps overrides). The student kept is
   the best on dev (as in the paper): SST-2 dev is both the selection and the reported split.
6. OUT/results.json, results.md and augmentation.png: the teacher's dev accuracy; per size and
   condition each seed's dev accuracy, mean, sample standard deviation, retention (mean / teacher);
   per size the gap augmented - no-augmentation, its standard error sqrt(s1^2/n1 + s2^2/n2) and
   gap / SE. OUT/timings.json: wall seconds per stage, summed over reruns.

Seeds. A run's seed is ``train.seed`` of both its task steps (--first-seed, --first-seed + 1, ...;
the same seeds in both conditions). In distill/train.py it seeds torch before the models are built
and orders the data stream, so it sets, and nothing else: the initialisation of the parameters new
to the student (the classification head, built in the intermediate step and carried into the
prediction step, and the hidden-state projection of the intermediate loss), the dropout masks of
both steps, and the order of the training rows. The student's starting weights (the general
student), the teacher, the corpora (augmentation seed 42, per sentence), the teacher cache and
evaluation are the same for every seed (tests/distill/test_train.py checks this of train.seed).

Every stage is skipped when done and resumes when interrupted (rerun the same command); a finished
task run's checkpoints are deleted (its best/ and final/ models stay) unless --keep-checkpoints.
MRPC and RTE are never read.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from runs import ROOT, Timings, distill, sh, stage, teacher_cache, write_results  # noqa: E402

from augment.assets import asset  # noqa: E402

#: condition -> data.original_only of its task runs
CONDITIONS = {"augmented": False, "no-augmentation": True}
AUG_SEED = 42  # the augmentation's seed (pipelines/augment.py --seed): fixes the corpora for every run
TEACHER_CONFIG = "sst2-cpu/teacher-full.yaml"
#: every training stage here (teacher-full.yaml states them too): batches of similar length
#: (SST-2 sentences average 13 tokens; random batches of 32 pad to 3x that) and bf16 autocast.
#: Measured here on SST-2 train sentences, seconds a step: intermediate 0.731 -> 0.320 grouped ->
#: 0.241 grouped + bf16; prediction with the live teacher 0.607 -> 0.258 -> 0.203; the teacher
#: 0.59 (bf16) -> 0.30. --fp32: for CPUs without bf16.
FAST = {"data.group_by_length": 50, "train.precision": "bf16"}


# --------------------------------------------------------------------------------------------------
# Statistics


def summarise(values: list[float]) -> dict:
    """n, mean and sample standard deviation (n - 1 in the denominator; None for one value)."""
    if not values:
        raise ValueError("no values to summarise")
    return {"n": len(values), "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else None}


def compare(a: dict, b: dict) -> dict:
    """The gap ``a.mean - b.mean`` of two ``summarise`` results, its standard error
    sqrt(s_a^2 / n_a + s_b^2 / n_b) (unequal variances) and gap / SE; SE needs two values on each
    side, and gap / SE a non-zero SE (else None)."""
    gap = a["mean"] - b["mean"]
    se = None if a["std"] is None or b["std"] is None else math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"])
    return {"gap": gap, "se": se, "gap_over_se": gap / se if se else None}


# --------------------------------------------------------------------------------------------------
# Inputs


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out/sst2-aug-seeds")
    p.add_argument("--sizes", default="1500,8000", help="numbers of original training sentences (the first N)")
    p.add_argument("--seeds", default="3,2", help="seeds per size, one count per --sizes entry")
    p.add_argument("--first-seed", type=int, default=42, help="seeds are FIRST, FIRST + 1, ...")
    p.add_argument("--n-aug", type=int, default=8, help="augmentation attempts per sentence")
    p.add_argument("--aug-corpus", action="append", default=[], metavar="SIZE=PATH",
                   help="an existing augmented corpus of the first SIZE training sentences (skips its build)")
    p.add_argument("--teacher-steps", type=int, default=None, help="override teacher-full.yaml (1 epoch)")
    p.add_argument("--general-steps", type=int, default=None, help="override general.yaml max_steps")
    p.add_argument("--task-steps", type=int, default=None,
                   help="steps of each task step at every size (default: 1 epoch of the size's augmented corpus)")
    p.add_argument("--eval-every", type=int, default=None, help="override the prediction step's eval/save interval")
    p.add_argument("--dev-rows", type=int, default=None, help="use only the first N dev rows (smoke tests)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep finished task runs' checkpoints")
    p.add_argument("--fp32", action="store_true", help="train in float32 (a CPU without bf16)")
    args = p.parse_args(argv)
    try:
        args.sizes = [int(x) for x in args.sizes.split(",")]
        args.seeds = [int(x) for x in args.seeds.split(",")]
    except ValueError:
        p.error(f"--sizes {args.sizes!r} and --seeds {args.seeds!r} must be comma-separated integers")
    if len(args.seeds) != len(args.sizes):
        p.error(f"--seeds gives {len(args.seeds)} counts for {len(args.sizes)} --sizes; give one per size")
    if min(args.sizes) < 1 or min(args.seeds) < 1 or len(set(args.sizes)) != len(args.sizes):
        p.error(f"--sizes {args.sizes} must be distinct and >= 1, --seeds {args.seeds} >= 1")
    corpora = {}
    for item in args.aug_corpus:
        size, sep, path = item.partition("=")
        if not sep or not size.isdigit() or int(size) not in args.sizes:
            p.error(f"--aug-corpus {item!r}: expected SIZE=PATH with SIZE one of --sizes {args.sizes}")
        corpora[int(size)] = os.path.abspath(path)
    args.aug_corpus = corpora
    return args


def dev_file(out: str, rows: int | None) -> str:
    """SST-2 dev, or its first ``rows`` rows written to OUT/dev-head.tsv (smoke tests)."""
    dev = str(asset("glue", "SST-2", "dev.tsv"))
    if not rows:
        return dev
    with open(dev, encoding="utf-8") as f:
        head = [next(f) for _ in range(rows + 1)]
    path = os.path.join(out, "dev-head.tsv")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(head)
    return path


def augmented_corpus(path: str, size: int, n_aug: int) -> str:
    """The augmented corpus of the first ``size`` SST-2 training sentences at ``path`` (built unless
    it is complete)."""
    if not os.path.exists(os.path.join(path, "manifest.json")):
        sh(sys.executable, os.path.join(ROOT, "pipelines", "augment.py"), "--task", "sst2",
           "--input", str(asset("glue", "SST-2", "train.tsv")), "--output", path,
           "--teacher", str(asset("models", "minilm-l6-mlm")), "--glove", str(asset("glove", "glove.6B.50d.top100k.txt")),
           "--n-aug", str(n_aug), "--max-records", str(size), "--seed", str(AUG_SEED))
    return path


def corpus_counts(path: str) -> dict:
    """Rows and originals of an SST-2 corpus, and its augmentation seed (None when unrecorded)."""
    from distill.data import open_corpus
    from pipelines.tasks import get_task

    task = get_task("sst2")
    with open(os.path.join(path, "manifest.json"), encoding="utf-8") as f:
        seed = json.load(f).get("seed")
    return {"rows": open_corpus(path, task).total, "originals": open_corpus(path, task, original_only=True).total,
            "augmentation_seed": seed}


def train_corpus(path: str) -> str:
    """All of SST-2's training set as a corpus of originals (the teacher's data)."""
    if not os.path.exists(os.path.join(path, "manifest.json")):
        from distill.glue import tsv_corpus
        from pipelines.tasks import get_task

        tsv_corpus(str(asset("glue", "SST-2", "train.tsv")), path, get_task("sst2"))
    return path


def batch_size(config: str) -> int:
    import yaml

    with open(os.path.join(ROOT, "configs", config), encoding="utf-8") as f:
        return yaml.safe_load(f)["train"]["batch_size"]


def dev_accuracy(model_dir: str) -> dict:
    """The dev accuracy a stage recorded for ``model_dir`` (``best/`` or ``final/``) and its step."""
    with open(os.path.join(model_dir, "metrics.json"), encoding="utf-8") as f:
        m = json.load(f)
    return {"accuracy": m["accuracy"], "step": m.get("step")}


# --------------------------------------------------------------------------------------------------
# The experiment


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    timings = Timings(out)
    mlm = str(asset("models", "minilm-l6-mlm"))
    dev = dev_file(out, args.dev_rows)

    # 1. corpora, all built first: a failure shows before hours of training
    full = timings.run("corpus: SST-2 train (teacher)", train_corpus, os.path.join(out, "corpus", "sst2-train"))
    corpora, counts = {}, {}
    for size in args.sizes:
        if size in args.aug_corpus:
            corpora[size] = args.aug_corpus[size]
        else:
            corpora[size] = timings.run(f"corpus: {size}", augmented_corpus,
                                        os.path.join(out, "corpus", f"sst2-aug-{size}"), size, args.n_aug)
        counts[size] = corpus_counts(corpora[size])
        if size in args.aug_corpus and counts[size]["originals"] != size:
            raise SystemExit(f"--aug-corpus {size}={corpora[size]}: the corpus has {counts[size]['originals']} "
                             f"originals, not {size}")
    wiki = os.path.join(out, "corpus", "wikitext-2")
    if not os.path.exists(os.path.join(wiki, "manifest.json")):
        timings.run("corpus: wikitext-2", distill, "shard-text", "--output", wiki,
                    str(asset("corpus", "wikitext-2.valid.tokens.txt")), str(asset("corpus", "wikitext-2.test.tokens.txt")))

    # 2-4. the shared teacher, general student and teacher caches
    every = {} if args.eval_every is None else {"train.eval_every": args.eval_every, "train.save_every": args.eval_every}
    fast = FAST | ({"train.precision": "fp32"} if args.fp32 else {})
    teacher = os.path.join(timings.run("teacher", stage, os.path.join(out, "teacher"), ["finetune"], TEACHER_CONFIG, **{
        "model.teacher": mlm, "data.train": full, "data.dev": dev, **fast,
        **({"train.max_steps": args.teacher_steps} if args.teacher_steps else {})}), "best")
    general = os.path.join(timings.run("general", stage, os.path.join(out, "general"), ["general"],
                                       "sst2-cpu/general.yaml", **{
                                           "model.teacher": mlm, "data.train": wiki, **fast,
                                           **({"train.max_steps": args.general_steps} if args.general_steps else {})}),
                           "final")
    caches = {size: timings.run(f"teacher cache: {size}", teacher_cache, teacher, corpora[size],
                                os.path.join(out, f"teacher-cache-{size}"), "--max-seq-length", "64")
              for size in args.sizes}

    # 5. the students: small sizes first, so their (cheaper) comparison is done first
    batch = batch_size("sst2-cpu/intermediate.yaml")
    steps = {size: args.task_steps or math.ceil(counts[size]["rows"] / batch) for size in args.sizes}
    students: dict[int, dict[str, list[dict]]] = {}  # size -> condition -> one record per seed
    for size, n_seeds in sorted(zip(args.sizes, args.seeds)):
        students[size] = {c: [] for c in CONDITIONS}
        for seed in range(args.first_seed, args.first_seed + n_seeds):
            for condition, original_only in CONDITIONS.items():
                root = os.path.join(out, "runs", f"n{size}", condition, f"seed-{seed}")
                common = {"model.teacher": teacher, "data.train": corpora[size],
                          "data.original_only": str(original_only).lower(), "train.max_steps": steps[size],
                          "train.seed": seed, **fast}
                name = f"n{size} {condition} seed {seed}"
                inter = timings.run(f"{name}: intermediate", stage, os.path.join(root, "intermediate"),
                                    ["task", "--step", "intermediate"], "sst2-cpu/intermediate.yaml",
                                    **common, **{"model.student": general})
                pred = timings.run(f"{name}: prediction", stage, os.path.join(root, "prediction"),
                                   ["task", "--step", "prediction"], "sst2-cpu/prediction.yaml", **common, **every,
                                   **{"model.student": os.path.join(inter, "final"), "data.dev": dev,
                                      "data.teacher_cache": caches[size]})
                if not args.keep_checkpoints:
                    for d in (inter, pred):
                        shutil.rmtree(os.path.join(d, "checkpoints"), ignore_errors=True)
                best, last = dev_accuracy(os.path.join(pred, "best")), dev_accuracy(os.path.join(pred, "final"))
                students[size][condition].append({"seed": seed, "accuracy": best["accuracy"], "best_step": best["step"],
                                                  "last_step_accuracy": last["accuracy"],
                                                  "path": os.path.join(pred, "best")})

    # 6. the report
    summary = report(dev_accuracy(teacher)["accuracy"], students, counts, steps, batch, args, timings.data)
    lines = table(summary)
    summary["plot"] = plot(summary, os.path.join(out, "augmentation.png"))
    return write_results(out, lines, summary)


# --------------------------------------------------------------------------------------------------
# The report


def report(teacher_acc: float, students: dict, counts: dict, steps: dict, batch: int, args, timings: dict) -> dict:
    """results.json: the teacher, per size each condition's seeds and statistics, and the gap."""
    sizes = {}
    for size, by_condition in students.items():
        conditions = {}
        for condition, seeds in by_condition.items():
            stats = summarise([r["accuracy"] for r in seeds])
            train_rows = counts[size]["originals"] if CONDITIONS[condition] else counts[size]["rows"]
            conditions[condition] = {
                "seeds": seeds, **stats, "retention": stats["mean"] / teacher_acc,
                "last_step": summarise([r["last_step_accuracy"] for r in seeds]),
                "train_rows": train_rows, "epochs": round(steps[size] * batch / train_rows, 2)}
        sizes[str(size)] = {**counts[size], "steps": steps[size], "conditions": conditions,
                            "augmented_minus_no_augmentation": compare(conditions["augmented"],
                                                                       conditions["no-augmentation"])}
    small, large = str(min(students)), str(max(students))
    z = sizes[small]["augmented_minus_no_augmentation"]["gap_over_se"]
    targets = {f"augmented_retention_ge_97pct_at_{large}": sizes[large]["conditions"]["augmented"]["retention"] >= 0.97,
               f"augmented_beats_no_augmentation_by_2se_at_{small}": z is not None and z > 2}
    return {"teacher": {"model": "MiniLM-L6 fine-tuned on all of SST-2 train", "dev_accuracy": teacher_acc},
            "dev": "GLUE SST-2 dev" + (f", first {args.dev_rows} rows" if args.dev_rows else "")
                   + " (also the checkpoint selection split)",
            "batch_size": batch, "n_aug": args.n_aug, "sizes": sizes, "targets": targets,
            "seeds_change": "train.seed of both task steps: initialisation of the new parameters (classification "
                            "head, hidden-state projection), dropout, training-data order",
            "fixed": f"general student, teacher, corpora (augmentation seed {AUG_SEED}), teacher caches, evaluation",
            "timings_s": dict(timings), "wall_s": round(sum(timings.values()), 1)}


def _pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}"


def table(summary: dict) -> list[str]:
    """results.md: the teacher, one row per size and condition, one row per size for the gap."""
    t = summary["teacher"]["dev_accuracy"]
    lines = [f"Teacher ({summary['teacher']['model']}): dev accuracy {_pct(t)}. Dev: {summary['dev']}; "
             f"each student is the best of its checkpoints on dev, as in the paper.", "",
             "| originals | condition | training rows | steps (epochs) | seeds | dev accuracy per seed | mean | "
             "std | retention | last-step mean |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for size, s in summary["sizes"].items():
        for condition, c in s["conditions"].items():
            per_seed = ", ".join(_pct(r["accuracy"]) for r in c["seeds"])
            lines.append(f"| {int(size):,} | {condition} | {c['train_rows']:,} | {s['steps']:,} ({c['epochs']}) | "
                         f"{c['n']} | {per_seed} | {_pct(c['mean'])} | {_pct(c['std'])} | "
                         f"{100 * c['retention']:.1f}% | {_pct(c['last_step']['mean'])} |")
    lines += ["", "| originals | gap augmented - no augmentation (points) | standard error | gap / SE |",
              "| --- | --- | --- | --- |"]
    for size, s in summary["sizes"].items():
        g = s["augmented_minus_no_augmentation"]
        z = "n/a" if g["gap_over_se"] is None else f"{g['gap_over_se']:.2f}"
        lines.append(f"| {int(size):,} | {100 * g['gap']:+.2f} | {_pct(g['se'])} | {z} |")
    lines += ["", f"Seeds change {summary['seeds_change']}; fixed for every seed: {summary['fixed']}. "
              f"Std: sample standard deviation over seeds; SE = sqrt(s1^2/n1 + s2^2/n2). "
              f"Wall time: {summary['wall_s'] / 3600:.2f} h (OUT/timings.json)."]
    return lines


def plot(summary: dict, path: str) -> str | None:
    """augmentation.png: mean dev accuracy (error bars: std over seeds, dots: the seeds) against the
    number of original sentences, log x, both conditions, the teacher as a line. None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return None
    sizes = sorted(int(s) for s in summary["sizes"])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = (("augmented", "o", "augmented corpus"), ("no-augmentation", "s", "originals only"))
    for (condition, marker, label), shift in zip(styles, (1.02, 1 / 1.02)):
        cs = [summary["sizes"][str(s)]["conditions"][condition] for s in sizes]
        xs = [s * shift for s in sizes]  # side by side, so the error bars do not hide each other
        line = ax.errorbar(xs, [100 * c["mean"] for c in cs], yerr=[100 * (c["std"] or 0) for c in cs],
                           marker=marker, capsize=4, label=f"TinyBERT-4, {label} (mean, std)")
        for x, c in zip(xs, cs):
            ax.scatter([x] * c["n"], [100 * r["accuracy"] for r in c["seeds"]], s=10, alpha=0.5,
                       color=line[0].get_color())
    ax.axhline(100 * summary["teacher"]["dev_accuracy"], color="grey", ls="--", lw=1, label="teacher (MiniLM-L6)")
    ax.set_xscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([f"{s:,}" for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("original SST-2 training sentences")
    ax.set_ylabel("SST-2 dev accuracy (%)")
    ax.set_title("Task distillation with and without the augmented corpus")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return os.path.basename(path)


if __name__ == "__main__":
    main()

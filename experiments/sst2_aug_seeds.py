"""Does the augmented corpus pay? Seeds, error bars and the small-data regime (issues 13 and 25), one command:

    python experiments/sst2_aug_seeds.py --out out/sst2-aug-seeds      # --sizes 1500,8000 --seeds 3,2
    # the paper's schedule at 1,500 (issue 25; docs/results.md says what 8,000 got and why):
    python experiments/sst2_aug_seeds.py --out out/sst2-aug-schedule --sizes 1500,8000 --seeds 3,2 --n-aug 8 \
        --epochs 1500=10+3 --epochs 8000=2+1 --corpus-seeds 1500=42,43,44

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
   its N originals only; both for the same number of steps with the same schedule. --epochs
   SIZE=I+P sets them: I epochs of the size's augmented corpus in the intermediate step and P in the
   prediction step (default 1+1, as experiments/sst2_cpu.py; the paper: 20 (10 in the authors'
   README's example) and 3); --task-steps overrides both with a fixed count. The student kept is
   the best on dev (as in the paper): SST-2 dev is both the selection and the reported split.
6. OUT/results.json, results.md, augmentation.png and learning-curves.png: the teacher's dev
   accuracy; per size and condition each seed's dev accuracy, its learning curves (dev accuracy at
   every evaluation of the prediction step, the intermediate step's loss), mean, sample standard
   deviation, retention (mean / teacher); per size the gap augmented - no-augmentation, its
   standard error sqrt(s1^2/n1 + s2^2/n2) and gap / SE. OUT/timings.json: wall seconds per stage,
   summed over reruns.

Seeds. A run's seed is ``train.seed`` of both its task steps (--first-seed, --first-seed + 1, ...;
the same seeds in both conditions). In distill/training/trainer.py it seeds torch before the models are built
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
AUG_SEED = 42  # the augmentation's default seed (pipelines/augment.py --seed); --corpus-seeds adds others
TEACHER_CONFIG = "sst2-cpu/teacher-full.yaml"
#: every training stage here (teacher-full.yaml states them too): batches of similar length
#: (SST-2 sentences average 13 tokens; random batches of 32 pad to 3x that); precision auto (bf16
#: autocast where the CPU runs bf16 natively).
#: Measured here on SST-2 train sentences, seconds a step: intermediate 0.731 -> 0.320 grouped ->
#: 0.241 grouped + bf16; prediction with the live teacher 0.607 -> 0.258 -> 0.203; the teacher
#: 0.59 (bf16) -> 0.30 (all on the AMX Xeon). --fp32 forces fp32 everywhere.
FAST = {"data.group_by_length": 50}


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
    p.add_argument("--aug-corpus", action="append", default=[], metavar="SIZE[:SEED]=PATH",
                   help="an existing augmented corpus of the first SIZE training sentences, built with "
                        "augmentation seed SEED (default: the size's first corpus seed); skips its build")
    p.add_argument("--epochs", action="append", default=[], metavar="SIZE=I+P",
                   help="epochs of the size's augmented corpus in the intermediate (I) and prediction (P) "
                        "steps, both conditions (default 1+1)")
    p.add_argument("--corpus-seeds", action="append", default=[], metavar="SIZE=S1,S2,...",
                   help=f"augmentation seeds of the size's corpora, one per augmented run in turn (default {AUG_SEED})")
    p.add_argument("--teacher-steps", type=int, default=None, help="override teacher-full.yaml (1 epoch)")
    p.add_argument("--general-steps", type=int, default=None, help="override general.yaml max_steps")
    p.add_argument("--task-steps", type=int, default=None,
                   help="steps of each task step at every size (overrides --epochs)")
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

    def per_size(flag: str, items: list[str], value_form: str, parse) -> dict:
        out = {}
        for item in items:
            size, sep, value = item.partition("=")
            if not sep or not size.isdigit() or int(size) not in args.sizes:
                p.error(f"--{flag} {item!r}: expected SIZE={value_form} with SIZE one of --sizes {args.sizes}")
            if int(size) in out:
                p.error(f"--{flag} {item!r}: size {size} given twice")
            try:
                out[int(size)] = parse(value)
            except ValueError:
                p.error(f"--{flag} {item!r}: expected SIZE={value_form}")
        return out

    def epochs(value: str) -> tuple[float, float]:
        i, sep, pr = value.partition("+")
        e = (float(i), float(pr))
        if not sep or min(e) <= 0:
            raise ValueError(value)
        return e

    def seeds(value: str) -> list[int]:
        out = [int(x) for x in value.split(",")]
        if len(set(out)) != len(out):
            raise ValueError(value)
        return out

    args.epochs = {size: (1.0, 1.0) for size in args.sizes} | per_size("epochs", args.epochs, "I+P (two numbers > 0)",
                                                                       epochs)
    args.corpus_seeds = {size: [AUG_SEED] for size in args.sizes} | per_size(
        "corpus-seeds", args.corpus_seeds, "S1,S2,... (distinct integers)", seeds)
    corpora = {}
    for item in args.aug_corpus:
        key, sep, path = item.partition("=")
        size, _, seed = key.partition(":")
        if not sep or not size.isdigit() or int(size) not in args.sizes or (seed and not seed.isdigit()):
            p.error(f"--aug-corpus {item!r}: expected SIZE[:SEED]=PATH with SIZE one of --sizes {args.sizes}")
        seed = int(seed) if seed else args.corpus_seeds[int(size)][0]
        if seed not in args.corpus_seeds[int(size)]:
            p.error(f"--aug-corpus {item!r}: seed {seed} is not one of size {size}'s --corpus-seeds "
                    f"{args.corpus_seeds[int(size)]}")
        corpora[int(size), seed] = os.path.abspath(path)
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


def augmented_corpus(path: str, size: int, n_aug: int, seed: int = AUG_SEED) -> str:
    """The augmented corpus of the first ``size`` SST-2 training sentences, augmentation seed
    ``seed``, at ``path`` (built unless it is complete)."""
    if not os.path.exists(os.path.join(path, "manifest.json")):
        sh(sys.executable, os.path.join(ROOT, "pipelines", "augment.py"), "--task", "sst2",
           "--input", str(asset("glue", "SST-2", "train.tsv")), "--output", path,
           "--teacher", str(asset("models", "minilm-l6-mlm")), "--glove", str(asset("glove", "glove.6B.50d.top100k.txt")),
           "--n-aug", str(n_aug), "--max-records", str(size), "--seed", str(seed))
    return path


def corpus_counts(path: str) -> dict:
    """Rows and originals of an SST-2 corpus, and its augmentation seed (None when unrecorded)."""
    from distill.data.stream import open_corpus
    from pipelines.tasks import get_task

    task = get_task("sst2")
    with open(os.path.join(path, "manifest.json"), encoding="utf-8") as f:
        seed = json.load(f).get("seed")
    return {"rows": open_corpus(path, task).total, "originals": open_corpus(path, task, original_only=True).total,
            "augmentation_seed": seed}


def train_corpus(path: str) -> str:
    """All of SST-2's training set as a corpus of originals (the teacher's data)."""
    if not os.path.exists(os.path.join(path, "manifest.json")):
        from distill.data.glue import tsv_corpus
        from pipelines.tasks import get_task

        tsv_corpus(str(asset("glue", "SST-2", "train.tsv")), path, get_task("sst2"))
    return path


def batch_size(config: str) -> int:
    import yaml

    with open(os.path.join(ROOT, "configs", config), encoding="utf-8") as f:
        return yaml.safe_load(f)["train"]["batch_size"]


def _suffix(args, size: int, seed: int) -> str:
    """The name suffix of a size's corpus and teacher cache: none for its first corpus seed (the
    names of the single-corpus design), ``-seedS`` for the others."""
    return "" if seed == args.corpus_seeds[size][0] else f"-seed{seed}"


def task_steps(rows: int, batch: int, epochs: tuple[float, float], fixed: int | None) -> dict:
    """Steps of the intermediate and prediction steps: ``epochs`` (I, P) of ``rows`` at ``batch``,
    rounded up, or ``fixed`` for both."""
    if fixed:
        return {"intermediate": fixed, "prediction": fixed}
    return {name: math.ceil(e * rows / batch) for name, e in zip(("intermediate", "prediction"), epochs)}


def learning_curve(run_dir: str, key: str, points: int = 60) -> list[list[float]]:
    """[[step, value], ...] of ``key`` in a stage's log.jsonl (a resumed run's log holds each step
    once), thinned to about ``points`` evenly spaced entries; the last is always kept."""
    rows = []
    with open(os.path.join(run_dir, "log.jsonl"), encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if key in r:
                rows.append([r["step"], r[key]])
    every = max(1, math.ceil(len(rows) / points))
    return [r for i, r in enumerate(rows) if i % every == 0 or i == len(rows) - 1]


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

    # 1. corpora, all built first: a failure shows before hours of training. The first corpus seed's
    # keeps the name it had before --corpus-seeds (reruns of earlier outputs reuse it).
    full = timings.run("corpus: SST-2 train (teacher)", train_corpus, os.path.join(out, "corpus", "sst2-train"))
    corpora, counts = {}, {}  # (size, corpus seed) -> path, counts
    for size in args.sizes:
        for seed in args.corpus_seeds[size]:
            key, suffix = (size, seed), _suffix(args, size, seed)
            if key in args.aug_corpus:
                corpora[key] = args.aug_corpus[key]
            else:
                corpora[key] = timings.run(f"corpus: {size}{suffix}", augmented_corpus,
                                           os.path.join(out, "corpus", f"sst2-aug-{size}{suffix}"), size, args.n_aug, seed)
            counts[key] = corpus_counts(corpora[key])
            given = f"--aug-corpus {size}:{seed}={corpora[key]}" if key in args.aug_corpus else f"corpus {corpora[key]}"
            if counts[key]["originals"] != size:
                raise SystemExit(f"{given}: the corpus has {counts[key]['originals']} originals, not {size}")
            if counts[key]["augmentation_seed"] not in (None, seed):
                raise SystemExit(f"{given}: the corpus was built with augmentation seed "
                                 f"{counts[key]['augmentation_seed']}, not {seed}")
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
    caches = {(size, seed): timings.run(f"teacher cache: {size}{_suffix(args, size, seed)}", teacher_cache, teacher,
                                        path, os.path.join(out, f"teacher-cache-{size}{_suffix(args, size, seed)}"),
                                        "--max-seq-length", "64")
              for (size, seed), path in corpora.items()}

    # 5. the students: small sizes first, so their (cheaper) comparison is done first
    batch = batch_size("sst2-cpu/intermediate.yaml")
    steps = {size: task_steps(counts[size, args.corpus_seeds[size][0]]["rows"], batch, args.epochs[size],
                              args.task_steps) for size in args.sizes}
    students: dict[int, dict[str, list[dict]]] = {}  # size -> condition -> one record per seed
    for size, n_seeds in sorted(zip(args.sizes, args.seeds)):
        students[size] = {c: [] for c in CONDITIONS}
        for k, seed in enumerate(range(args.first_seed, args.first_seed + n_seeds)):
            for condition, original_only in CONDITIONS.items():
                # the augmented runs take the corpus seeds in turn; the originals are in every corpus
                corpus_seed = args.corpus_seeds[size][k % len(args.corpus_seeds[size]) if not original_only else 0]
                key = (size, corpus_seed)
                root = os.path.join(out, "runs", f"n{size}", condition, f"seed-{seed}")
                common = {"model.teacher": teacher, "data.train": corpora[key],
                          "data.original_only": str(original_only).lower(), "train.seed": seed, **fast}
                name = f"n{size} {condition} seed {seed}"
                inter = timings.run(f"{name}: intermediate", stage, os.path.join(root, "intermediate"),
                                    ["task", "--step", "intermediate"], "sst2-cpu/intermediate.yaml",
                                    **common, **{"model.student": general, "train.max_steps": steps[size]["intermediate"]})
                pred = timings.run(f"{name}: prediction", stage, os.path.join(root, "prediction"),
                                   ["task", "--step", "prediction"], "sst2-cpu/prediction.yaml", **common, **every,
                                   **{"model.student": os.path.join(inter, "final"), "data.dev": dev,
                                      "data.teacher_cache": caches[key], "train.max_steps": steps[size]["prediction"]})
                if not args.keep_checkpoints:
                    for d in (inter, pred):
                        shutil.rmtree(os.path.join(d, "checkpoints"), ignore_errors=True)
                best, last = dev_accuracy(os.path.join(pred, "best")), dev_accuracy(os.path.join(pred, "final"))
                students[size][condition].append({
                    "seed": seed, "corpus_seed": None if original_only else corpus_seed,
                    "accuracy": best["accuracy"], "best_step": best["step"], "last_step_accuracy": last["accuracy"],
                    "curve": learning_curve(pred, "eval/accuracy"), "intermediate_loss": learning_curve(inter, "loss"),
                    "path": os.path.join(pred, "best")})

    # 6. the report
    first = {size: counts[size, args.corpus_seeds[size][0]] for size in args.sizes}
    summary = report(dev_accuracy(teacher)["accuracy"], students, first, steps, batch, args, timings.data)
    lines = table(summary)
    summary["plot"] = plot(summary, os.path.join(out, "augmentation.png"))
    summary["curves_plot"] = plot_curves(summary, os.path.join(out, "learning-curves.png"))
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
                "train_rows": train_rows,
                "epochs": {step: round(n * batch / train_rows, 2) for step, n in steps[size].items()}}
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
            "corpus_seeds": {str(size): args.corpus_seeds[size] for size in students},
            "fixed": "general student, teacher, each corpus and its teacher cache, evaluation",
            "timings_s": dict(timings), "wall_s": round(sum(timings.values()), 1)}


def _pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}"


def table(summary: dict) -> list[str]:
    """results.md: the teacher, one row per size and condition, one row per size for the gap."""
    t = summary["teacher"]["dev_accuracy"]
    lines = [f"Teacher ({summary['teacher']['model']}): dev accuracy {_pct(t)}. Dev: {summary['dev']}; "
             f"each student is the best of its checkpoints on dev, as in the paper.", "",
             "| originals | condition | training rows | steps I + P (epochs) | seeds | dev accuracy per seed | mean | "
             "std | retention | last-step mean |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for size, s in summary["sizes"].items():
        for condition, c in s["conditions"].items():
            per_seed = ", ".join(_pct(r["accuracy"]) for r in c["seeds"])
            st, ep = s["steps"], c["epochs"]
            lines.append(f"| {int(size):,} | {condition} | {c['train_rows']:,} | {st['intermediate']:,} + "
                         f"{st['prediction']:,} ({ep['intermediate']:g} + {ep['prediction']:g}) | "
                         f"{c['n']} | {per_seed} | {_pct(c['mean'])} | {_pct(c['std'])} | "
                         f"{100 * c['retention']:.1f}% | {_pct(c['last_step']['mean'])} |")
    lines += ["", "| originals | gap augmented - no augmentation (points) | standard error | gap / SE |",
              "| --- | --- | --- | --- |"]
    for size, s in summary["sizes"].items():
        g = s["augmented_minus_no_augmentation"]
        z = "n/a" if g["gap_over_se"] is None else f"{g['gap_over_se']:.2f}"
        lines.append(f"| {int(size):,} | {100 * g['gap']:+.2f} | {_pct(g['se'])} | {z} |")
    several = {size: seeds for size, seeds in summary.get("corpus_seeds", {}).items() if len(seeds) > 1}
    corpus_note = "".join(f" At {int(size):,}, the augmented runs' corpora have augmentation seeds "
                          f"{', '.join(map(str, seeds))} in turn (seed order), so their spread holds the "
                          f"corpus's variance too." for size, seeds in several.items())
    lines += ["", f"Seeds change {summary['seeds_change']}; fixed for every seed: {summary['fixed']}.{corpus_note} "
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


def plot_curves(summary: dict, path: str) -> str | None:
    """learning-curves.png: per size (columns), every student's dev accuracy at each evaluation of
    its prediction step (top) and its intermediate step's training loss (bottom, log y), coloured by
    condition; the teacher as a line. None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no learning curves (pip install matplotlib)")
        return None
    sizes = sorted(summary["sizes"], key=int)
    fig, axes = plt.subplots(2, len(sizes), figsize=(4.8 * len(sizes), 6.4), squeeze=False)
    colours = {"augmented": "tab:blue", "no-augmentation": "tab:orange"}
    for col, size in enumerate(sizes):
        top, bottom = axes[0][col], axes[1][col]
        for condition, c in summary["sizes"][size]["conditions"].items():
            for i, r in enumerate(c["seeds"]):
                label = f"{condition}" if i == 0 else None
                if r.get("curve"):
                    xs, ys = zip(*r["curve"])
                    top.plot(xs, [100 * y for y in ys], color=colours[condition], alpha=0.7, marker=".", label=label)
                if r.get("intermediate_loss"):
                    xs, ys = zip(*r["intermediate_loss"])
                    bottom.plot(xs, ys, color=colours[condition], alpha=0.7, lw=1, label=label)
        top.axhline(100 * summary["teacher"]["dev_accuracy"], color="grey", ls="--", lw=1, label="teacher")
        top.set_title(f"{int(size):,} original sentences")
        top.set_xlabel("prediction step")
        top.set_ylabel("SST-2 dev accuracy (%)")
        bottom.set_xlabel("intermediate step")
        bottom.set_ylabel("intermediate loss (train)")
        bottom.set_yscale("log")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.path.basename(path)


if __name__ == "__main__":
    main()

"""Serving latency on CPU, as users deploy: the teacher, TinyBERT-4 and the pruned QA models, each as
PyTorch fp32, ONNX Runtime fp32 and ONNX Runtime int8, side by side in one run (issue 23).

    python bench/serve_latency.py --markdown docs/serve-latency.md     # the table (~5 min on 2 cores)
    python bench/serve_latency.py --quick                                # smoke: tiny shapes, seconds
    python bench/serve_latency.py --sst2-teacher out/sst2-teacher/best --tinybert out/pred/best \\
        --squad-teacher out/squad-prune-cpu/teacher-continue/final \\
        --pruned 70=out/squad-prune-cpu/l0-70-distill/final --pruned 50=... --pruned 30=... \\
        --squad-tune out/squad-prune-cpu/train-tune.json               # with the quality column

SST-2 rows run at sequence 64, SQuAD rows at 384, each at batch 1 and 32, on random token ids
without padding. Speed depends on shapes alone, so a model not given by a flag is built with random
weights at its shape: the teacher as the MiniLM-L6 asset (6 layers, hidden 384, 12 heads, FFN 1536),
TinyBERT-4 as the paper's preset (4, 312, 12, 1200), and each pruned level (70/50/30% of heads and
FFN units kept) with the teacher's shape cut by a seeded random mask over the whole model (the
widths then differ from layer to layer, as an l0 run leaves them) or by ``--pruned LEVEL=FILE``'s
pruning.json. Every model goes through ``distill export`` (int8 included) and ``load_pruned``, the
paths users take.

Timing: ``--rounds`` rounds (default 2), one after the other; inside a round all the model/backend
pairs of one (task, batch) take turns, each running its repeats back to back after one untimed
call (the order reversed in every other round). Each measurement prints its median per round and
the spread between rounds; the speed-ups use the
median over all rounds, against the teacher in PyTorch fp32 at the same batch. PyTorch and ONNX
Runtime get the same number of threads (``--threads``, default: all cores).

Quality (the column beside each speed) needs the trained models (flags above): accuracy on SST-2
dev, and on the SQuAD holdout (``squad2-eval-split.json``, reported on, never tuned on) the F1 at
the null threshold tuned on ``--squad-tune`` (other questions) and the forced HasAns F1, each
computed by the backend of its row. Without a trained model the column shows "—".
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from distill.export import INT8_FILE, ONNX_FILE, OrtModel, export  # noqa: E402
from distill.modules.models import PRESETS, load_model  # noqa: E402
from distill.modules.pruning import load_pruned, random_scores, read_mask, save_pruned, select  # noqa: E402

BACKENDS = ("PyTorch fp32", "ORT fp32", "ORT int8")
TEACHER = "teacher"
#: --quick: shapes small enough for a smoke test.
TINY = {"teacher": dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64),
        "tinybert-4": dict(num_hidden_layers=1, hidden_size=16, num_attention_heads=4, intermediate_size=32)}
#: Targets of issue 23: (task, batch, model, backend, minimum speed-up over the teacher in PyTorch fp32, goal).
TARGETS = [("squad", 1, "pruned 50%", "ORT int8", 3.0, 4.0), ("sst2", 1, "TinyBERT-4", "ORT int8", 5.0, 8.0)]
#: Their quality halves: (task, metric, most points the target's row may lose). Read two ways, both
#: printed: against the teacher in PyTorch fp32 (compression and int8 together) and against the same
#: model in PyTorch fp32 (int8 alone).
QUALITY_TARGETS = {"squad": ("hasans_f1_forced", 2.0), "sst2": ("accuracy", 1.0)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    assets = os.environ.get("BERT_COMPRESS_ASSETS", os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                                                  "assets"))
    p.add_argument("--assets", default=assets, help="the assets directory (MiniLM's config and tokenizer, data)")
    p.add_argument("--tokenizer", help="tokenizer of the shape-only models (default: the MiniLM asset's)")
    p.add_argument("--sst2-teacher", help="a trained SST-2 teacher (its shape replaces MiniLM's; quality column)")
    p.add_argument("--tinybert", help="a trained TinyBERT-4 SST-2 student (quality column)")
    p.add_argument("--squad-teacher", help="a trained SQuAD teacher (its shape replaces MiniLM's; quality column)")
    p.add_argument("--pruned", action="append", default=[], metavar="LEVEL=PATH",
                   help="a pruned QA model directory (trained: quality column) or a pruning.json (its widths "
                        "only), for LEVEL in --levels; repeatable")
    p.add_argument("--levels", default="70,50,30", help="pruned levels: percent of heads and FFN units kept")
    p.add_argument("--mask-seed", type=int, default=0, help="seed of the random masks of shape-only levels")
    p.add_argument("--sst2-dev", help="SST-2 dev TSV (default: the assets')")
    p.add_argument("--squad-eval", help="SQuAD 2.0 holdout (default: the assets' squad2-eval-split.json)")
    p.add_argument("--squad-tune", help="questions the null threshold is tuned on (never the holdout's); "
                                        "needed for the SQuAD quality column")
    p.add_argument("--quality-limit", type=int, default=None, help="score only the first N rows/questions")
    p.add_argument("--batch", default="1,32", help="batch sizes, comma-separated")
    p.add_argument("--sst2-seq", type=int, default=64)
    p.add_argument("--squad-seq", type=int, default=384)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--budget", type=float, default=3.0,
                   help="seconds a round gives its slowest pair at each batch size (sets the repeats, 5 to 40)")
    p.add_argument("--threads", type=int, default=None, help="PyTorch and ONNX Runtime threads (default: cores)")
    p.add_argument("--workdir", help="where the exports go (default: a temporary directory)")
    p.add_argument("--quick", action="store_true", help="tiny shapes, short sequences, 1 repeat: a smoke run")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--markdown", help="write the table here")
    args = p.parse_args(argv)
    if args.quick:
        args.sst2_seq, args.squad_seq, args.budget, args.batch = min(args.sst2_seq, 16), min(args.squad_seq, 32), 0.0, \
            "1,4"
    args.threads = args.threads or os.cpu_count()
    args.levels = [int(x) for x in args.levels.split(",")]
    args.pruned = dict(_level(spec, args.levels) for spec in args.pruned)
    return args


def _level(spec: str, levels: list[int]) -> tuple[int, str]:
    level, sep, path = spec.partition("=")
    if not sep or not level.isdigit() or int(level) not in levels or not os.path.exists(path):
        raise SystemExit(f"--pruned {spec!r}: expected LEVEL=PATH with LEVEL in --levels {levels} and an existing "
                         f"PATH (a pruned model directory or a pruning.json)")
    return int(level), path


# --------------------------------------------------------------------------------------------------
# Models: one directory each (trained, or built at its shape), exported, loaded three ways


class Entry:
    """One model of the table: its source directory, its exports, and what quality it can report."""

    def __init__(self, task: str, name: str, directory: str, trained: bool, shape: str):
        self.task, self.name, self.directory, self.trained, self.shape = task, name, directory, trained, shape
        self.backends: dict[str, object] = {}
        self.info: dict = {}


def _shape_text(config, mask=None) -> str:
    c = config
    if mask is None:
        return f"{c.num_hidden_layers}L/{c.hidden_size}H/{c.num_attention_heads}A/{c.intermediate_size}F"
    heads, ffn = mask.heads.sum(1).tolist(), mask.ffn.sum(1).tolist()
    return f"heads {'-'.join(map(str, heads))}, FFN {'-'.join(map(str, ffn))}"


def _tokenizer(args):
    from transformers import AutoTokenizer

    path = args.tokenizer or os.path.join(args.assets, "models", "minilm-l6-mlm")
    if not os.path.isdir(path):
        raise SystemExit(f"no tokenizer at {path}: set --assets or --tokenizer")
    return AutoTokenizer.from_pretrained(path)


def _teacher_config(args, tokenizer, trained: str | None):
    from transformers import AutoConfig, BertConfig

    if trained:
        return AutoConfig.from_pretrained(trained)
    if args.quick:
        return BertConfig(vocab_size=len(tokenizer), max_position_embeddings=64, **TINY["teacher"])
    return AutoConfig.from_pretrained(os.path.join(args.assets, "models", "minilm-l6-mlm"))


def _build(config, head: str, directory: str, tokenizer, seed: int, mask=None) -> None:
    """A random-weight model of ``config`` with ``head`` saved to ``directory`` (pruned by ``mask``)."""
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    cls = AutoModelForQuestionAnswering if head == "qa" else AutoModelForSequenceClassification
    model = cls.from_config(config).eval()
    if mask is None:
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    else:
        save_pruned(model, mask, directory, tokenizer)


def build_entries(args, work: str) -> list[Entry]:
    from transformers import BertConfig

    tokenizer = _tokenizer(args)
    entries = []
    # SST-2: teacher and TinyBERT-4
    sst2_config = _teacher_config(args, tokenizer, args.sst2_teacher)
    sst2_config.num_labels = 2
    entries.append(_entry("sst2", TEACHER, args.sst2_teacher, sst2_config, "classification", work, tokenizer, 1))
    tiny = TINY["tinybert-4"] if args.quick else PRESETS["tinybert-4"]
    student = BertConfig(vocab_size=sst2_config.vocab_size, max_position_embeddings=sst2_config.max_position_embeddings,
                         type_vocab_size=sst2_config.type_vocab_size, num_labels=2, **tiny)
    entries.append(_entry("sst2", "TinyBERT-4", args.tinybert, student, "classification", work, tokenizer, 2))
    # SQuAD: teacher and the pruned levels
    squad_config = _teacher_config(args, tokenizer, args.squad_teacher)
    entries.append(_entry("squad", TEACHER, args.squad_teacher, squad_config, "qa", work, tokenizer, 3))
    for level in args.levels:
        path = args.pruned.get(level)
        name = f"pruned {level}%"
        if path and os.path.isdir(path):
            mask = read_mask(path)
            if mask is None:
                raise SystemExit(f"--pruned {level}={path}: no pruning.json in it")
            entries.append(Entry("squad", name, path, True, _shape_text(None, mask)))
            continue
        c = squad_config
        if path:  # a pruning.json: its widths
            mask = read_mask(os.path.dirname(path) or ".") if os.path.basename(path) == "pruning.json" else None
            if mask is None:
                raise SystemExit(f"--pruned {level}={path}: not a pruning.json or a pruned model directory")
        else:
            mask = select(*random_scores(c.num_hidden_layers, c.num_attention_heads, c.intermediate_size,
                                         args.mask_seed + level), level / 100, level / 100)
        directory = os.path.join(work, f"squad-pruned-{level}")
        _build(c, "qa", directory, tokenizer, 4 + level, mask)
        entries.append(Entry("squad", name, directory, False, _shape_text(None, mask)))
    return entries


def _entry(task, name, trained, config, head, work, tokenizer, seed) -> Entry:
    if trained:
        return Entry(task, name, trained, True, _shape_text(config))
    directory = os.path.join(work, f"{task}-{name.lower()}")
    _build(config, head, directory, tokenizer, seed)
    return Entry(task, name, directory, False, _shape_text(config))


def load_backends(entry: Entry, work: str, threads: int) -> None:
    """Export ``entry`` (fp32 and int8) and open it three ways; record parameters and file sizes."""
    out = os.path.join(work, "onnx", f"{entry.task}-{entry.name.replace(' ', '-').replace('%', '')}")
    manifest = export(entry.directory, out, quantize="int8", overwrite=True)
    head = "qa" if entry.task == "squad" else "classification"
    entry.backends = {"PyTorch fp32": load_pruned(entry.directory, head).eval(),
                      "ORT fp32": OrtModel(os.path.join(out, ONNX_FILE), threads),
                      "ORT int8": OrtModel(os.path.join(out, INT8_FILE), threads)}
    entry.info = {"parameters": manifest["parameters"], "file_mb": manifest["file_mb"],
                  "export_check": manifest["check"]["max_abs_diff_fp32"]}


# --------------------------------------------------------------------------------------------------
# Timing


def inputs(vocab_size: int, batch: int, seq: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(min(1000, vocab_size // 2), vocab_size, (batch, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


def _call(model, batch: dict) -> float:
    """Seconds of one forward (PyTorch under inference_mode; ONNX Runtime on numpy arrays)."""
    if isinstance(model, OrtModel):
        feed = batch["numpy"]
        start = time.perf_counter()
        model.session.run(None, {n: feed[n] for n in model.input_names})
        return time.perf_counter() - start
    with torch.inference_mode():
        start = time.perf_counter()
        model(**batch["torch"])
        return time.perf_counter() - start


def time_group(pairs: list[tuple[str, object]], batch: dict, rounds: int, budget: float) -> dict[str, list[list[float]]]:
    """ms of each (key, model) in ``pairs``: [round][repeat]. In each round every pair runs in turn
    (the order reversed every other round, so drift hits all alike): one untimed call, then its
    repeats back to back, as a server runs one model. Not call by call: ONNX Runtime's and
    OpenMP's worker threads spin-wait for a while after each call (their default, good for a
    server), and on a few cores that spinning would steal the next model's cores. The repeats fill
    ``budget`` seconds of the slowest pair (5 to 40; 1 when 0)."""
    slowest = max(max(_call(m, batch), _call(m, batch)) for _, m in pairs)
    reps = 1 if budget <= 0 else max(5, min(40, int(budget / slowest)))
    times = {k: [] for k, _ in pairs}
    for r in range(rounds):
        for k, m in (pairs if r % 2 == 0 else pairs[::-1]):
            _call(m, batch)
            times[k].append([_call(m, batch) * 1000 for _ in range(reps)])
    return times


def run_timing(entries: list[Entry], args) -> dict:
    """{(task, batch): {(model, backend): [round][repeat] ms}}."""
    results = {}
    for task, seq in (("sst2", args.sst2_seq), ("squad", args.squad_seq)):
        group = [e for e in entries if e.task == task]
        vocab = group[0].backends["PyTorch fp32"].config.vocab_size
        for b in [int(x) for x in args.batch.split(",")]:
            t = inputs(vocab, b, seq)
            batch = {"torch": t, "numpy": {k: v.numpy() for k, v in t.items()}}
            pairs = [((e.name, k), m) for e in group for k, m in e.backends.items()]
            print(f"timing {task} batch {b} x {seq}: {len(pairs)} model/backend pairs ...", file=sys.stderr)
            results[(task, b)] = time_group(pairs, batch, args.rounds, args.budget)
            results[(task, b, "diff")] = {e.name: _fp32_diff(e, batch) for e in group}
    return results


def _fp32_diff(entry: Entry, batch: dict) -> float:
    """max |ORT fp32 - PyTorch fp32| on the timing batch."""
    with torch.inference_mode():
        want = entry.backends["PyTorch fp32"](**batch["torch"])
    got = entry.backends["ORT fp32"].run(batch["numpy"])
    return max(float(np.abs(v - getattr(want, k).numpy()).max()) for k, v in got.items())


# --------------------------------------------------------------------------------------------------
# Quality


def quality(entries: list[Entry], args) -> dict:
    """{(task, model, backend): {"accuracy"} or {"f1_tuned", "hasans_f1_forced"}} for the trained
    models (keyed by task too: both tasks have a "teacher")."""
    from transformers import AutoTokenizer

    from distill.data.stream import Collator
    from distill.data.glue import read_tsv
    from distill.data.qa import QACollator, read_examples
    from distill.evaluation.squad import evaluate_qa
    from distill.evaluation.evaluate import evaluate
    from pipelines.tasks import get_task

    out, n = {}, args.quality_limit
    trained_squad = [e for e in entries if e.trained and e.task == "squad"]
    if trained_squad and not args.squad_tune:
        raise SystemExit("trained SQuAD models given: --squad-tune (questions the null threshold is tuned on, e.g. "
                         "out/squad-prune-cpu/train-tune.json) is needed for their quality column")
    for e in entries:
        if not e.trained:
            continue
        tokenizer = AutoTokenizer.from_pretrained(e.directory)
        for backend, model in e.backends.items():
            print(f"quality: {e.task} {e.name} {backend} ...", file=sys.stderr)
            if e.task == "sst2":
                task = get_task("sst2")
                rows = read_tsv(args.sst2_dev or os.path.join(args.assets, "glue", "SST-2", "dev.tsv"), task)[:n]
                r = evaluate(model, rows, Collator(tokenizer, ["sentence"], 128, with_labels=True), task, 32, "cpu")
                out[(e.task, e.name, backend)] = {"accuracy": 100 * r["accuracy"]}
            else:
                holdout = args.squad_eval or os.path.join(args.assets, "squad", "squad2-eval-split.json")
                rows, tune = read_examples(holdout)[:n], read_examples(args.squad_tune)[:n]
                r = evaluate_qa(model, rows, QACollator(tokenizer, *_windows(e)), 32, "cpu", 0.0, tune)
                out[(e.task, e.name, backend)] = {"f1_tuned": r["f1_tuned"], "hasans_f1_forced": r["hasans_f1_forced"]}
    return out


def _windows(entry: Entry) -> tuple[int, int, int]:
    """(max_seq_length, doc_stride, max_query_length) the model was trained with (its config.yaml),
    else 384/128/64 (cut to 1/3 and 1/6 of a shorter model's positions)."""
    from distill.evaluation.evaluate import trained_settings

    saved = trained_settings(entry.directory)
    length = min(384, entry.backends["PyTorch fp32"].config.max_position_embeddings)
    return (saved.get("max_seq_length") or length, saved.get("doc_stride") or length // 3,
            saved.get("max_query_length") or length // 6)


# --------------------------------------------------------------------------------------------------
# Report


def machine() -> dict:
    import onnxruntime

    cpu = platform.processor() or "unknown"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        cpu = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M")}


def _median(rounds: list[list[float]]) -> float:
    return statistics.median([t for r in rounds for t in r])


def _spread(rounds: list[list[float]]) -> float:
    """Largest relative difference between two rounds' medians (0 with one round)."""
    meds = [statistics.median(r) for r in rounds]
    return (max(meds) - min(meds)) / min(meds) if len(meds) > 1 else 0.0


def _quality_text(q: dict | None) -> str:
    if q is None:
        return "—"
    if "accuracy" in q:
        return f"acc {q['accuracy']:.2f}"
    return f"F1 tuned {q['f1_tuned']:.2f} / HasAns forced {q['hasans_f1_forced']:.2f}"


def report(entries, timing, qual, args, info) -> tuple[str, dict]:
    batches = [int(x) for x in args.batch.split(",")]
    lines = [f"Machine: {info['cpu']}, {info['cores']} cores, {args.threads} threads for PyTorch and ONNX Runtime; "
             f"torch {info['torch']}, onnxruntime {info['onnxruntime']}; {info['date']}.", ""]
    rows_json, ratios = [], {}
    for task, seq in (("sst2", args.sst2_seq), ("squad", args.squad_seq)):
        lines += [f"**{'SST-2' if task == 'sst2' else 'SQuAD 2.0'}, sequence {seq}**", "",
                  "| model | shape | backend | params | MB | quality | "
                  + " | ".join(f"ms, batch {b} (round medians) | spread | x teacher" for b in batches) + " |",
                  "| --- " * (6 + 3 * len(batches)) + "|"]
        for e in [e for e in entries if e.task == task]:
            for backend in BACKENDS:
                mb = e.info["file_mb"]["fp32" if backend == "ORT fp32" else "int8"] if backend != "PyTorch fp32" \
                    else None
                cells = [e.name, e.shape, backend, f"{e.info['parameters'] / 1e6:.1f}M", "" if mb is None else f"{mb:.1f}",
                         _quality_text(qual.get((task, e.name, backend)))]
                row = {"task": task, "model": e.name, "shape": e.shape, "backend": backend, "trained": e.trained,
                       "parameters": e.info["parameters"], "file_mb": mb, "quality": qual.get((task, e.name, backend)),
                       "batches": {}}
                for b in batches:
                    rounds = timing[(task, b)][(e.name, backend)]
                    base = _median(timing[(task, b)][(TEACHER, "PyTorch fp32")])
                    med, spread = _median(rounds), _spread(rounds)
                    ratios[(task, b, e.name, backend)] = base / med
                    cells += [f"{med:.1f} ({' / '.join(f'{statistics.median(r):.1f}' for r in rounds)})",
                              f"{100 * spread:.1f}%", f"{base / med:.2f}x"]
                    row["batches"][b] = {"ms": med, "round_ms": [statistics.median(r) for r in rounds],
                                         "repeats": len(rounds[0]), "spread": spread, "speedup": base / med}
                rows_json.append(row)
                lines.append("| " + " | ".join(cells) + " |")
        diffs = timing[(task, batches[0], "diff")]
        lines += ["", "max |ORT fp32 - PyTorch fp32| on the timed batch: "
                  + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()), ""]
    spreads = [r["batches"][b]["spread"] for r in rows_json for b in batches]
    lines.append(f"Rounds agree within {100 * max(spreads):.1f}% (largest spread); "
                 f"{sum(s > 0.05 for s in spreads)} of {len(spreads)} measurements spread more than 5%.")
    for task, b, model, backend, target, goal in TARGETS:
        r = ratios.get((task, b, model, backend))
        if r is not None:
            verdict = "goal met" if r >= goal else "target met" if r >= target else "target NOT met"
            lines.append(f"Target: {task} batch {b}, {model} {backend} vs teacher PyTorch fp32: {r:.2f}x "
                         f"(target >= {target:g}x, goal {goal:g}x): {verdict}.")
    lines += quality_verdicts(qual)
    if not any(e.trained for e in entries):
        lines.append("Quality: — (no trained model given: random weights at the models' shapes; the speed columns "
                     "need only the shapes).")
    return "\n".join(lines) + "\n", {"machine": info, "threads": args.threads, "rows": rows_json,
                                     "quick": args.quick, "levels": args.levels}


def quality_verdicts(qual: dict) -> list[str]:
    """One line per target whose row and references were scored: the points it loses against the
    teacher in PyTorch fp32 and against its own PyTorch fp32, each against the target's limit."""
    lines = []
    for task, _, model, backend, _, _ in TARGETS:
        key, limit = QUALITY_TARGETS[task]
        row, teacher, own = (qual.get((task, *k)) for k in ((model, backend), (TEACHER, "PyTorch fp32"),
                                                            (model, "PyTorch fp32")))
        if row is None or teacher is None or own is None:
            continue
        vs_teacher, vs_own = row[key] - teacher[key], row[key] - own[key]
        lines.append(f"Quality target: {task} {model} {backend}, {key} {row[key]:.2f}: {vs_teacher:+.2f} points against "
                     f"the teacher in PyTorch fp32 ({teacher[key]:.2f}; {'within' if vs_teacher >= -limit else 'NOT within'}"
                     f" {limit:g}), {vs_own:+.2f} against itself in PyTorch fp32 ({own[key]:.2f}; int8 alone: "
                     f"{'within' if vs_own >= -limit else 'NOT within'} {limit:g}).")
    return lines


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or tmp
        os.makedirs(work, exist_ok=True)
        entries = build_entries(args, work)
        for e in entries:
            print(f"export {e.task} {e.name} ({e.shape}) ...", file=sys.stderr)
            load_backends(e, work, args.threads)
        timing = run_timing(entries, args)
        qual = quality(entries, args)
    text, result = report(entries, timing, qual, args, info)
    print(text)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()

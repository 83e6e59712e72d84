"""A recipe run's report: the table (``report.md``, ``report.json``), a plot, and the compressed
models with a Hugging Face model card (``README.md``) beside their weights.

``write_report`` runs as the recipe's last stage, in its store folder; ``publish`` copies (hard-
links where it can) that folder's report and models into the run's output folder and prints the
table, on every run, so a reused run still ends with its table.
"""
from __future__ import annotations

import json
import os
import shutil
import time

from distill.run.recipes import Recipe

METRIC_NAMES = {"accuracy": "accuracy", "f1": "F1", "matthews": "Matthews corr.", "pearson_spearman":
                "Pearson/Spearman", "squad": "F1"}
METHODS = {"glue": "TinyBERT two-stage distillation (Jiao et al., 2020): general distillation, then task "
                   "distillation of embeddings, hidden states and attention (intermediate) and of the "
                   "teacher's soft labels (prediction) on a TinyBERT-augmented corpus",
           "qa": "structured pruning of attention heads and feed-forward units (McCarley et al., 2019), then "
                 "recovery by distillation from the unpruned model"}


def write_report(recipe: Recipe, results: dict, folder: str, plot: bool = True) -> dict:
    """Write ``report.md``, ``report.json``, ``report.png`` (``plot``) and ``models/NAME/`` (each
    compressed model, with its model card) into ``folder``; returns what :func:`publish` needs."""
    rows, headline = (_qa_rows if recipe.family == "qa" else _glue_rows)(recipe, results)
    lines = _table(recipe, rows)
    summary = {"recipe": recipe.name, "task": recipe.task, "family": recipe.family, "headline": headline,
               "rows": rows, "stage_seconds": {}, "written": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "report.md"), "w", encoding="utf-8") as f:
        f.write(f"# {recipe.name}: {recipe.task}\n\n" + "\n".join(lines) + "\n\n" + _notes(recipe, rows) + "\n")
    with open(os.path.join(folder, "report.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    if plot:
        _plot(recipe, rows, os.path.join(folder, "report.png"))
    models = {}
    for row in rows:
        if row["name"] == "teacher" or not row.get("model"):
            continue
        dest = os.path.join(folder, "models", row["slug"])
        _link_tree(row["model"], dest)
        with open(os.path.join(dest, "README.md"), "w", encoding="utf-8") as f:
            f.write(model_card(recipe, row, rows[0]))
        models[row["slug"]] = dest
    return {"folder": folder, "table": lines, "models": models, "headline": headline}


def publish(report: dict, output: str) -> dict:
    """Put the report stage's files into ``output`` (``report.md``, ``report.json``, ``report.png``,
    ``models/``) and print the table; returns ``report``."""
    os.makedirs(output, exist_ok=True)
    for name in ("report.md", "report.json", "report.png"):
        src = os.path.join(report["folder"], name)
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(output, name))
    if os.path.isdir(os.path.join(report["folder"], "models")):
        _link_tree(os.path.join(report["folder"], "models"), os.path.join(output, "models"))
    print("\n".join(report["table"]))
    for slug in report["models"]:
        print(f"model: {os.path.join(output, 'models', slug)} (transformers from_pretrained; model card README.md)")
    print(f"report: {os.path.join(output, 'report.md')}")
    return report


def _link_tree(src: str, dest: str) -> None:
    """``dest`` becomes a copy of ``src``, files hard-linked when the filesystem allows."""
    def link(s, d):
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest, copy_function=link)


# -- GLUE ------------------------------------------------------------------------------------------
def _glue_rows(recipe: Recipe, results: dict) -> tuple[list[dict], dict]:
    ev = results["eval"]
    metric = ev["metric"]  # the task's metric; "score" is its value (Pearson/Spearman: their mean)
    teacher, student = ev["models"]["teacher"], ev["models"]["student"]
    rows = []
    for name, m in (("teacher", teacher), ("student", student)):
        rows.append({"name": name, "slug": "student" if name == "student" else "teacher", "model": m["model"],
                     "metric": metric, "score": m["score"], "parameters": m["parameters"], "mb": m.get("mb"),
                     "latency_ms": m.get("latency_ms"), "layers": _layers(m["model"]),
                     "retention": m["score"] / teacher["score"] if teacher["score"] else None,
                     "speedup": (teacher["latency_ms"] / m["latency_ms"]) if m.get("latency_ms") and
                     teacher.get("latency_ms") else None})
    return rows, {"metric": metric, "teacher": teacher["score"], "student": student["score"],
                  "retention": rows[1]["retention"], "speedup": rows[1]["speedup"]}


def _layers(model: str) -> int | None:
    try:
        with open(os.path.join(model, "config.json"), encoding="utf-8") as f:
            return json.load(f).get("num_hidden_layers")
    except OSError:
        return None


# -- QA ----------------------------------------------------------------------------------------------
def _qa_rows(recipe: Recipe, results: dict) -> tuple[list[dict], dict]:
    from distill.evaluation.measure import pruning_summary

    ev = results["eval"]
    metric = ev["metric"]
    latency = (results.get("latency") or {}).get("models", {})
    base = ev["models"]["teacher"]
    rows = []
    for name, m in ev["models"].items():
        kept = pruning_summary(m["model"])
        rows.append({"name": name, "slug": name.replace("pruned ", "pruned-").replace("%", ""), "model": m["model"],
                     "metric": metric, "score": m[metric], "f1": m.get("f1"), "f1_tuned": m.get("f1_tuned"),
                     "hasans_f1_forced": m.get("hasans_f1_forced"), "null_baseline_f1": m.get("null_baseline_f1"),
                     "parameters": m["parameters"], "mb": m.get("mb"), "layers": _layers(m["model"]),
                     "heads_kept": kept.get("heads_kept"), "heads_total": kept.get("heads_total"),
                     "ffn_kept": kept.get("ffn_kept"), "ffn_total": kept.get("ffn_total"),
                     "delta": m[metric] - base[metric], **latency.get(name, {})})
    best = [r for r in rows[1:] if r.get("speedup") and r["delta"] >= -1.5]
    headline = {"metric": metric, "teacher": base[metric],
                "fastest_within_1.5": max(best, key=lambda r: r["speedup"])["name"] if best else None}
    return rows, headline


# -- rendering -------------------------------------------------------------------------------------
def _fmt(value, pattern: str = "{:.2f}", none: str = "-") -> str:
    return none if value is None else pattern.format(value)


def _table(recipe: Recipe, rows: list[dict]) -> list[str]:
    if recipe.family == "glue":
        name = METRIC_NAMES.get(rows[0]["metric"], rows[0]["metric"])
        lines = [f"| model | layers | dev {name} | retention | parameters | size (MB) | CPU latency (ms, batch 1, "
                 f"1 thread) | speed-up |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in rows:
            lines.append(f"| {r['name']} | {_fmt(r['layers'], '{}')} | {100 * r['score']:.2f} | "
                         f"{_fmt(r['retention'] and 100 * r['retention'], '{:.1f}%')} | {r['parameters'] / 1e6:.1f}M | "
                         f"{_fmt(r['mb'], '{}')} | {_fmt(r['latency_ms'], '{:.1f}')} | {_fmt(r['speedup'], '{:.2f}x')} |")
        return lines
    batch = next((r.get("latency_ms_batch") is not None for r in rows), False)
    lines = ["| model | heads / FFN kept | F1 (thr 0) | F1 (tuned thr) | HasAns F1 (forced) | Δ | parameters | "
             "latency ms (b1) | speed-up (b1) |" + (" latency ms (b32) | speed-up (b32) |" if batch else ""),
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if batch else "")]
    for r in rows:
        kept = (f"{r['heads_kept']}/{r['heads_total']} / {r['ffn_kept']}/{r['ffn_total']}" if r.get("heads_kept")
                is not None else "all")
        line = (f"| {r['name']} | {kept} | {_fmt(r['f1'])} | {_fmt(r['f1_tuned'])} | {_fmt(r['hasans_f1_forced'])} | "
                f"{r['delta']:+.2f} | {r['parameters'] / 1e6:.1f}M | {_fmt(r.get('latency_ms'), '{:.1f}')} | "
                f"{_fmt(r.get('speedup'), '{:.2f}x')} |")
        if batch:
            line += f" {_fmt(r.get('latency_ms_batch'), '{:.0f}')} | {_fmt(r.get('speedup_batch'), '{:.2f}x')} |"
        lines.append(line)
    return lines


def _notes(recipe: Recipe, rows: list[dict]) -> str:
    if recipe.family == "glue":
        return (f"Dev: {recipe.data['dev']} (also the split the best prediction-step checkpoint was chosen on, as "
                f"in the paper). Latency: median of the first dev sentences one at a time on this machine's CPU. "
                f"Parameters: all weights of the saved model, embeddings included. One run, one seed.")
    return (f"Scored on {recipe.data['dev']}; the null threshold of each model is tuned on other questions "
            f"(stages.split or data.tune), never on the scored ones. Δ: the report metric against the teacher. "
            f"Latency: compacted models, 384-token windows, this machine's CPU. One run, one seed.")


def _plot(recipe: Recipe, rows: list[dict], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional: [plots] extra
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    if recipe.family == "glue":
        xs = [r["latency_ms"] or 0 for r in rows]
        ys = [100 * r["score"] for r in rows]
        ax.scatter(xs, ys, s=[max(20, r["parameters"] / 1e6 * 3) for r in rows], color=["tab:gray", "tab:blue"])
        for r, x, y in zip(rows, xs, ys):
            ax.annotate(f"{r['name']} ({r['parameters'] / 1e6:.0f}M)", (x, y), textcoords="offset points",
                        xytext=(6, 6))
        ax.set_xlabel("CPU latency, ms per sentence (batch 1)")
        ax.set_ylabel(f"dev {METRIC_NAMES.get(rows[0]['metric'], rows[0]['metric'])} (%)")
        ax.set_xlim(0, 1.3 * max(xs + [1e-3]))  # room for the labels
    else:
        pts = [(r.get("speedup") or 1.0, r["score"], r["name"]) for r in rows]
        ax.plot([p[0] for p in pts[1:]], [p[1] for p in pts[1:]], "o-", label="pruned + recovered")
        ax.scatter([pts[0][0]], [pts[0][1]], color="black", label="teacher")
        for x, y, name in pts:
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_xlabel("CPU speed-up, batch 1 x 384 tokens")
        ax.set_ylabel("holdout F1" + (" (threshold tuned)" if rows[0]["metric"] == "f1_tuned" else ""))
        ax.legend()
    ax.set_title(f"{recipe.name} ({recipe.task})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def model_card(recipe: Recipe, row: dict, teacher: dict) -> str:
    """A Hugging Face model card (YAML front matter + markdown) for one compressed model."""
    qa = recipe.family == "qa"
    pipeline_tag = "question-answering" if qa else "text-classification"
    dataset = "squad_v2" if qa else "glue"
    metric = row["metric"]
    value = row["score"] if qa else round(100 * row["score"], 2)
    teacher_stage = recipe.stages["teacher"]
    base = teacher_stage.get("given") or teacher_stage.get("model")
    general = (recipe.stages.get("general") or {}).get("given")
    front = [
        "---", "library_name: transformers", f"pipeline_tag: {pipeline_tag}", "language: en", "tags:",
        "  - bert-compress", "  - distillation" if not qa else "  - structured-pruning",
        *(["  - tinybert"] if not qa else []), f"base_model: {json.dumps(str(general or base))}",
        f"datasets:\n  - {dataset}", "model-index:", f"  - name: {json.dumps(recipe.name + '/' + row['slug'])}",
        "    results:", f"      - task: {{type: {pipeline_tag}}}",
        f"        dataset: {{name: {json.dumps(recipe.task)}, type: {dataset}" + ("" if qa else f", config: {recipe.task}")
        + ", split: validation}", "        metrics:", f"          - type: {json.dumps(metric)}",
        f"            value: {value}", "---", ""]
    corpus = recipe.stages.get("corpus") or {}
    lines = [
        f"# {recipe.name}: {row['name']}", "",
        f"A compressed model for **{recipe.task}**, made by the `bert-compress` recipe `{recipe.name}` "
        f"(`distill run {recipe.name}`).", "",
        "## Method", "", METHODS[recipe.family] + ".", "",
        f"- teacher: `{base}`" + (" (fine-tuned by the recipe)" if teacher_stage.get("model") else " (given)"),
        *([f"- general student: `{general}`"] if general else []),
        f"- training data: `{recipe.data['train']}`" + (
            f", augmented (TinyBERT, N_a {corpus.get('n_aug', 20)}, p_t {corpus.get('p_t', 0.4)})" if corpus else ""),
        f"- evaluation data: `{recipe.data['dev']}`", "",
        "## Results", "",
        "| model | metric | value | parameters |", "| --- | --- | ---: | ---: |",
        f"| teacher | {teacher['metric']} | {_fmt(teacher['score'], '{:.4f}')} | {teacher['parameters'] / 1e6:.1f}M |",
        f"| this model | {metric} | {_fmt(row['score'], '{:.4f}')} | {row['parameters'] / 1e6:.1f}M |", "",
        "One run, one seed; see the recipe's report.md for latency and what was measured how.", "",
        "## Use", "", "```python",
        f"from transformers import {'AutoModelForQuestionAnswering' if qa else 'AutoModelForSequenceClassification'}"
        ", AutoTokenizer",
        "tok = AutoTokenizer.from_pretrained(PATH)",
        f"model = {'AutoModelForQuestionAnswering' if qa else 'AutoModelForSequenceClassification'}"
        ".from_pretrained(PATH)", "```", "",
        *(["A pruned model loads in plain transformers at full size with its pruned weights zero; "
           "`distill export` writes the physically smaller ONNX model.", ""] if qa else []),
        "## Recipe", "", "```yaml", recipe.to_yaml().rstrip(), "```", ""]
    return "\n".join(front + lines)

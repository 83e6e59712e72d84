"""``distill run``: a recipe's stages, each in a folder named by a fingerprint of its inputs.

A stage's *fingerprint* hashes what decides its output: its resolved settings (for a training
stage the whole ``distill`` config it will run, defaults filled in), the fingerprints of the
stages it reads, the contents of the local files it reads (a model folder by its weights,
config and tokenizer files; a Hub name by its name), and :data:`STAGE_VERSIONS` with the package
version. Its folder is ``STORE/<stage>-<fingerprint>``; ``stage.json``, written last, marks it
complete. So a finished stage is reused by any run that would compute the same thing (two
recipes that share a corpus and a teacher build them once when they share a store), a changed
setting reruns that stage and what reads it, and a killed training stage resumes from its newest
checkpoint (the folder, and so the config, is the same).

    plan = make_plan(load("demo/sst2-cpu"), "out/demo")     # hashes inputs, checks every config
    print_plan(plan)                                       # --dry-run stops here
    run_plan(plan)                                         # runs what is not complete

Imports go one way: runner -> recipes, train, prune, evaluate, report; nothing imports runner
but the CLI.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from distill.config import Config, ConfigError, config_from_dict
from distill.devices import Precision, resolve_device, resolve_precision
from distill.recipes import CONFIG_SECTIONS, Recipe, RecipeError

log = logging.getLogger("distill.runner")

DONE = "stage.json"
# Bump a stage's number when its code changes what it writes: every run then redoes it.
STAGE_VERSIONS = {"corpus": 1, "split": 1, "teacher": 1, "general": 1, "intermediate": 1, "prediction": 1,
                  "prune": 1, "recover": 1, "eval": 2, "latency": 1, "report": 1}
# Config keys that change how a run is shown or how fast it goes, not what it computes.
UNHASHED = {("train", "progress"), ("train", "progress_seconds"), ("train", "tensorboard"), ("train", "log_every"), ("data", "num_workers"),
            ("train", "eval_batch_size"), ("output_dir",)}


class StageError(RuntimeError):
    """A stage failed; the message names it and its folder."""


@dataclass
class Step:
    """One stage of a plan. ``name``: its label (``prune-50`` for one target of ``prune``);
    ``status``: reuse | resume | run; ``action(step, results) -> result``."""

    name: str
    kind: str
    fingerprint: str
    folder: str
    status: str
    reads: list[str]
    work: str
    action: Callable[["Step", dict], dict] = field(repr=False)
    identity: dict = field(repr=False, default_factory=dict)


@dataclass
class Plan:
    recipe: Recipe
    output: str
    store: str
    steps: list[Step]


# -- identities ----------------------------------------------------------------------------------
class Hasher:
    """SHA-256 of local files, remembered by (path, size, mtime) in ``STORE/.hashes.json`` so a rerun
    does not reread gigabytes."""

    MODEL_FILES = ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "pruning.json")

    def __init__(self, store: str):
        self.path = os.path.join(store, ".hashes.json")
        try:
            with open(self.path, encoding="utf-8") as f:
                self.known = json.load(f)
        except (OSError, ValueError):
            self.known = {}

    def file(self, path: str) -> str:
        st = os.stat(path)
        key = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"
        if key not in self.known:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            self.known[key] = h.hexdigest()
        return self.known[key]

    def identify(self, value: str | None):
        """What a path-or-name setting contributes to a fingerprint: a file's hash, a model folder's
        weights/config/tokenizer hashes, or a Hub name as given."""
        if value is None:
            return None
        path = os.path.expanduser(value)
        if os.path.isfile(path):
            return {"sha256": self.file(path)}
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if n.endswith((".safetensors", ".bin")) or n in self.MODEL_FILES)
            if not names:
                raise RecipeError(f"{value}: a folder without model files (config.json, weights)")
            return {n: self.file(os.path.join(path, n)) for n in names}
        return {"hub": value}

    def save(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = self.path + f".tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.known, f)
        os.replace(tmp, self.path)


def fingerprint(identity: dict) -> str:
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bert-compress")
    except PackageNotFoundError:  # a source tree that is not installed
        from augment import __version__

        return __version__


# -- building the plan ---------------------------------------------------------------------------
class _Planner:
    """Turns a recipe into steps, in order, each fingerprinted from the ones it reads."""

    def __init__(self, recipe: Recipe, output: str, store: str):
        self.r, self.output, self.store = recipe, output, store
        self.hasher = Hasher(store)
        self.steps: dict[str, Step] = {}

    # paths a step will produce, known before it runs (folders are named by fingerprints)
    def folder(self, kind: str, fp: str) -> str:
        return os.path.join(self.store, f"{kind}-{fp}")

    def add(self, name: str, kind: str, identity: dict, reads: list[str], work: str, action) -> Step:
        identity = {"stage": kind, "version": STAGE_VERSIONS[kind], "package": _package_version(),
                    "reads": {r: self.steps[r].fingerprint for r in reads}, **identity}
        fp = fingerprint(identity)
        folder = self.folder(kind, fp)
        status = "run"
        if os.path.exists(os.path.join(folder, DONE)):
            status = "reuse"
        elif os.path.isdir(folder):
            from distill.train import latest_checkpoint

            status = "resume" if latest_checkpoint(folder) or latest_checkpoint(os.path.join(folder, "run")) else "run"
        step = Step(name, kind, fp, folder, status, reads, work, action, identity)
        self.steps[name] = step
        return step

    def training_config(self, name: str, settings: dict, fixed: dict) -> Config:
        """The distill Config a training stage runs: its recipe sections, then ``fixed`` (models,
        data, stage, task: what the runner wires). Errors name the recipe key."""
        data = {s: copy.deepcopy(settings[s]) for s in CONFIG_SECTIONS if settings.get(s)}
        for dotted, value in fixed.items():
            node = data
            *parents, last = dotted.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = value
        try:
            return config_from_dict(data)
        except ConfigError as e:
            raise RecipeError(f"stages.{name}: {e}") from None

    def config_identity(self, cfg: Config) -> dict:
        """The config as hashed: compute-only keys dropped; model and data paths replaced by what
        they are (a store folder by its name, a user file by its contents)."""
        d = cfg.to_dict()
        for key in UNHASHED:
            node = d
            for k in key[:-1]:
                node = node[k]
            node.pop(key[-1], None)
        for section, key in (("model", "teacher"), ("model", "student"), ("data", "train"), ("data", "dev"),
                             ("data", "teacher_cache")):
            d[section][key] = self.path_identity(d[section][key])
        # auto resolves first: a stage trained in bf16 is not the same stage as one trained in fp32
        d["train"]["precision"] = stage_precision(cfg, warn=False).name
        return d

    def path_identity(self, value):
        if isinstance(value, str) and value.startswith(self.store + os.sep):
            return "@store/" + os.path.relpath(value, self.store)  # named by its fingerprint already
        if isinstance(value, str) and (os.path.exists(os.path.expanduser(value))):
            return self.hasher.identify(value)
        return value

    def steps_text(self, cfg: Config, corpus: str | None = None) -> str:
        t = cfg.train
        if t.max_steps:
            return f"{t.max_steps} steps"
        rows = _corpus_rows(corpus, cfg) if corpus else None
        if rows is None:
            return f"{t.epochs:g} epoch{'s' if t.epochs != 1 else ''} of the training data"
        per_step = t.batch_size * t.grad_accum
        return f"{math.ceil(t.epochs * rows / per_step)} steps ({t.epochs:g} epochs of {rows:,} rows)"


def _corpus_rows(corpus: str, cfg: Config) -> int | None:
    """Training rows of a built corpus (originals only when the config says so), or None."""
    if not corpus or not os.path.exists(os.path.join(corpus, "manifest.json")):
        return None
    with open(os.path.join(corpus, "manifest.json"), encoding="utf-8") as f:
        m = json.load(f)
    counts = m.get("counts") or {}
    if cfg.data.original_only:
        return counts.get("originals") or counts.get("sources")
    return counts.get("rows") or m.get("total_rows")


def make_plan(recipe: Recipe, output: str, store: str | None = None) -> Plan:
    """Every stage of ``recipe`` with its fingerprint, folder and status; reads (hashes) the input
    files and builds every training config, so a bad recipe fails here, before any work. Stage
    folders go under ``store`` (default ``OUTPUT/stages``)."""
    output = os.path.abspath(output)
    store = os.path.abspath(store or os.path.join(output, "stages"))
    p = _Planner(recipe, output, store)
    (_plan_qa if recipe.family == "qa" else _plan_glue)(p)
    p.hasher.save()
    return Plan(recipe, output, store, list(p.steps.values()))


def _result(results: dict, name: str, key: str = "model") -> str:
    return results[name][key]


def _corpus_step(p: _Planner) -> Step | None:
    r = p.r
    c = r.stages.get("corpus")
    if c is None:
        return None
    from augment.config import authors_n_aug

    settings = {"n_aug": 20, "p_t": 0.4, "k": 15, "seed": 42, "max_records": None, "num_shards": 8,
                "augment_context": False} | {k: v for k, v in c.items() if k not in ("beam_args",)}
    if isinstance(settings["n_aug"], str):  # the authors' per-task N_a (`n_aug: sst2`)
        settings["n_aug"] = authors_n_aug(settings["n_aug"])
    identity = {"task": r.task, "input": p.hasher.identify(r.data["train"]),
                "settings": {k: v for k, v in settings.items() if k not in ("teacher", "glove")},
                "teacher": p.hasher.identify(settings.get("teacher")), "glove": p.hasher.identify(settings.get("glove"))}
    beam_args = [str(a) for a in c.get("beam_args") or []]

    def run(step: Step, results: dict) -> dict:
        out = os.path.join(step.folder, "corpus")
        argv = ["--task", r.task, "--input", r.data["train"], "--output", out, "--teacher", str(settings["teacher"]),
                "--glove", str(settings["glove"]), "--n-aug", str(settings["n_aug"]), "--p-t", str(settings["p_t"]),
                "--k", str(settings["k"]), "--seed", str(settings["seed"]), "--num-shards", str(settings["num_shards"])]
        argv += ["--max-records", str(settings["max_records"])] if settings["max_records"] else []
        argv += ["--augment-context"] if settings["augment_context"] else []
        # its own process: Beam's workers and their torch threads stay out of the training process
        cmd = [sys.executable, "-m", "pipelines.corpus", *argv, *beam_args, "--overwrite"]
        proc = subprocess.run(cmd, cwd=os.getcwd())
        if proc.returncode:
            raise StageError(f"stage corpus: the corpus builder exited with status {proc.returncode} "
                             f"({' '.join(cmd)})")
        with open(os.path.join(out, "manifest.json"), encoding="utf-8") as f:
            counts = json.load(f)["counts"]
        return {"corpus": out, "counts": counts}

    work = f"augment {r.data['train']} (N_a {settings['n_aug']}" + (
        f", first {settings['max_records']:,} records" if settings["max_records"] else "") + ")"
    return p.add("corpus", "corpus", identity, [], work, run)


def _train_step(p: _Planner, name: str, kind: str, fixed: dict, reads: list[str], model_out: str,
                corpus: str | None = None, before: Callable[[Step, dict, Config], Config] | None = None,
                identity: dict | None = None) -> Step:
    """A stage that runs ``distill`` training (:func:`train_in`) with its recipe
    sections and the keys ``fixed`` wires (models, data, stage). Upstream models are given by the
    paths they will have: they sit in fingerprinted folders, known before they exist. ``before``
    may change the config at run time (a data path the stage makes first); ``identity`` adds what
    else decides the output."""
    settings = p.r.stages[kind]
    cfg = p.training_config(kind, settings, {**fixed, "output_dir": "@folder"})
    identity = {"config": p.config_identity(cfg), **(identity or {})}
    work = p.steps_text(cfg, corpus)

    def run(step: Step, results: dict) -> dict:
        cfg_run = copy.deepcopy(cfg)
        cfg_run.output_dir = os.path.join(step.folder, "run")
        if before is not None:
            cfg_run = before(step, results, cfg_run) or cfg_run
        if corpus and not cfg_run.train.max_steps and "rows)" not in step.work:  # the corpus exists now
            print(f"      {p.steps_text(cfg_run, corpus)}", flush=True)
        precision = stage_precision(cfg_run)
        print(f"      precision {precision.name} ({precision.reason})", flush=True)
        metrics = train_in(cfg_run)
        out = os.path.join(cfg_run.output_dir, model_out)
        if model_out == "best" and not os.path.isdir(out):
            out = os.path.join(cfg_run.output_dir, "final")
        return {"model": out, "metrics": _jsonable(metrics), **precision.to_dict()}

    return p.add(name, kind, identity, reads, work, run)


def stage_precision(cfg: Config, warn: bool = True) -> Precision:
    """The precision a training config runs in on this machine (``auto`` resolved), with why."""
    return resolve_precision(cfg.train.precision, resolve_device(cfg.train.device), warn=warn)


def train_in(cfg: Config) -> dict:
    """Run a training config to its end in ``cfg.output_dir``, resuming from the newest checkpoint
    there when there is one (``distill.prune`` for the prune stage, ``distill.train`` otherwise).
    The one place that decides to resume: the recipe runner and the experiments' scripts call it."""
    from distill.train import latest_checkpoint

    checkpoint = latest_checkpoint(cfg.output_dir)
    if checkpoint:
        print(f"      resuming from {checkpoint}", flush=True)
    if cfg.stage == "prune":
        from distill import prune

        return prune.main(cfg, resume=checkpoint is not None)
    from distill import train

    return train.main(cfg, resume=checkpoint is not None)


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _teacher_step(p: _Planner, data_train: str, dev: str | None) -> tuple[Step, str]:
    """The GLUE teacher stage and the path its model will have."""
    t = p.r.stages["teacher"]
    if t.get("given") is not None:
        given = t["given"]
        return p.add("teacher", "teacher", {"given": p.hasher.identify(given)}, [], f"use {given} as it is",
                     lambda step, results: {"model": given}), given
    fixed = {"stage": "finetune", "task": p.r.task, "model.teacher": t["model"], "data.train": data_train,
             "data.dev": dev}
    if "original_only" not in (t.get("data") or {}):  # the paper's teachers saw the task's own data
        fixed["data.original_only"] = True
    step = _train_step(p, "teacher", "teacher", fixed, ["corpus"], "best", corpus=data_train)
    return step, os.path.join(step.folder, "run", "best")  # dev is set: the last step always evaluates


def _plan_glue(p: _Planner) -> None:
    r, s = p.r, p.r.stages
    corpus = _corpus_step(p)
    corpus_path = os.path.join(corpus.folder, "corpus")
    _, teacher_model = _teacher_step(p, corpus_path, r.data["dev"])
    student = None
    if "general" in s:
        g = s["general"]
        if g.get("given") is not None:
            student = g["given"]
            p.add("general", "general", {"given": p.hasher.identify(student)}, [], f"use {student} as it is",
                  lambda step, results: {"model": g["given"]})
        else:
            text_files = list(g["text"])

            def shard(step: Step, results: dict, cfg: Config) -> Config:
                from distill.shards import CorpusError, read_manifest, write_text_shards

                root = os.path.join(step.folder, "text")
                try:
                    read_manifest(root)
                except (CorpusError, OSError, ValueError):  # not yet written, or half written
                    shutil.rmtree(root, ignore_errors=True)
                    write_text_shards(text_files, root, min_chars=20, skip_headings=True)
                cfg.data.train = root
                return cfg

            fixed = {"stage": "general", "model.teacher": g.get("teacher") or s["teacher"]["model"],
                     "model.student": g.get("student", "tinybert-4"), "data.train": "@text"}
            step = _train_step(p, "general", "general", fixed, [], "final", before=shard,
                               identity={"text": [p.hasher.identify(f) for f in text_files]})
            student = os.path.join(step.folder, "run", "final")
    if "intermediate" in s:
        fixed = {"stage": "task", "step": "intermediate", "task": r.task, "model.teacher": teacher_model,
                 "model.student": student, "data.train": corpus_path}
        step = _train_step(p, "intermediate", "intermediate", fixed, ["corpus", "teacher", "general"], "final",
                           corpus=corpus_path)
        student = os.path.join(step.folder, "run", "final")
    if "prediction" in s:
        pred = s["prediction"]
        fixed = {"stage": "task", "step": "prediction", "task": r.task, "model.teacher": teacher_model,
                 "model.student": student, "data.train": corpus_path, "data.dev": r.data["dev"]}
        reads = ["corpus", "teacher"] + (["intermediate"] if "intermediate" in s else ["general"])
        cache_before = _cache_builder(p) if pred.get("cache_teacher") else None
        _train_step(p, "prediction", "prediction", fixed, reads, "best", corpus=corpus_path, before=cache_before,
                    identity={"cache_teacher": bool(pred.get("cache_teacher"))})
    if "eval" in s:
        _glue_eval_step(p)
    if "report" in s:
        _report_step(p, ["eval"])


def _cache_builder(p: _Planner):
    """A ``before`` hook: build (or reuse) the teacher's prediction-layer outputs over the training
    data in ``STORE/teacher-cache-<fingerprint>`` and point the run at it. The fingerprint covers
    the teacher, the data and the windows only, so every student of one teacher and corpus (another
    learning rate, another pruned model) reads one cache. Float32 outputs, as the experiments
    measured; resumable by shard."""
    def before(step: Step, results: dict, cfg: Config) -> Config:
        from distill.teacher_cache import build

        d = cfg.data
        key = {"teacher": p.path_identity(cfg.model.teacher), "train": p.path_identity(d.train),
               "windows": [d.max_seq_length, d.doc_stride, d.max_query_length], "dtype": "float32",
               "version": STAGE_VERSIONS["prediction"]}
        out = os.path.join(p.store, f"teacher-cache-{fingerprint(key)}")
        if not os.path.exists(os.path.join(out, "manifest.json")):
            print(f"      caching the teacher's outputs over the training data in {os.path.basename(out)}",
                  flush=True)
            build(cfg.model.teacher, d.train, out, d.max_seq_length, d.doc_stride, d.max_query_length,
                  device=None if cfg.train.device == "auto" else cfg.train.device)
        cfg.data.teacher_cache = out
        return cfg

    return before


def _glue_eval_step(p: _Planner) -> None:
    r, s = p.r, p.r.stages
    e = s["eval"]
    settings = {"latency_sentences": 100, "batch_size": 64} | e
    identity = {"settings": settings, "dev": p.hasher.identify(r.data["dev"])}

    def run(step: Step, results: dict) -> dict:
        from distill.evaluate import evaluate_checkpoint
        from distill.glue import read_eval_rows
        from distill.measure import text_latency_ms
        from pipelines.tasks import get_task

        task = get_task(r.task)
        rows = read_eval_rows(r.data["dev"], task)
        texts = [tuple(row[f] for f in task.text_fields) if task.is_pair else row[task.text_fields[0]]
                 for row in rows[:settings["latency_sentences"]]]
        out = {}
        for label, model in (("teacher", _result(results, "teacher")), ("student", _result(results, "prediction"))):
            print(f"      evaluating the {label} on {len(rows):,} dev rows", flush=True)
            m = evaluate_checkpoint(model, r.task, r.data["dev"], batch_size=settings["batch_size"], device="cpu")
            m |= _model_size(model)
            m["latency_ms"] = round(text_latency_ms(model, texts, m["max_seq_length"]), 2) if len(texts) > 5 else None
            out[label] = {"model": model, **_jsonable(m)}
        return {"metric": task.metric, "models": out}

    p.add("eval", "eval", identity, ["teacher", "prediction"], f"{r.data['dev']} and CPU latency (batch 1)", run)


def _model_size(model: str) -> dict:
    from distill.measure import size_info

    if os.path.isfile(os.path.join(model, "model.safetensors")):
        return size_info(model)
    return {}


def _report_step(p: _Planner, reads: list[str]) -> None:
    r = p.r
    settings = {"plot": True} | p.r.stages["report"]

    def run(step: Step, results: dict) -> dict:
        from distill.report import write_report

        return write_report(r, results, step.folder, plot=settings["plot"])

    p.add("report", "report", {"settings": settings, "recipe": r.name}, reads + _model_steps(p),
          "report.md, report.json, plot, model card", run)


def _model_steps(p: _Planner) -> list[str]:
    return [n for n in p.steps if n == "teacher" or n == "prediction" or n.startswith("recover-")
            or n.startswith("prune-")]


# -- QA -----------------------------------------------------------------------------------------
def _plan_qa(p: _Planner) -> None:
    r, s = p.r, p.r.stages
    corpus = _corpus_step(p)
    train = os.path.join(corpus.folder, "corpus") if corpus else r.data["train"]
    tune = r.data.get("tune")
    if "split" in s:
        n = s["split"].get("tune_articles", 1)

        def split(step: Step, results: dict) -> dict:
            return _split_by_article(r.data["train"], step.folder, n)

        st = p.add("split", "split", {"input": p.hasher.identify(r.data["train"]), "tune_articles": n}, [],
                   f"last {n} article(s) of {r.data['train']} -> tune", split)
        tune = os.path.join(st.folder, "train-tune.json")
        if corpus is None:
            train = os.path.join(st.folder, "train-fit.json")
    upstream = [n for n in ("corpus", "split") if n in p.steps and (n != "split" or corpus is None)]
    teacher = _teacher_step_qa(p, train, upstream)
    teacher_model = s["teacher"].get("given") or os.path.join(teacher.folder, "run", "final")
    pruned = {}
    if "prune" in s:
        strategy = ((s["prune"].get("prune") or {}).get("strategy") or "gain")
        for t in s["prune"]["targets"]:
            label = f"{round(100 * t)}"
            sizing = ({"prune.target_heads": float(t), "prune.target_ffn": float(t)} if strategy == "l0"
                      else {"prune.keep_heads": float(t), "prune.keep_ffn": float(t)})
            fixed = {"stage": "prune", "task": r.task, "model.teacher": teacher_model, "data.train": train, **sizing}
            step = _train_step(p, f"prune-{label}", "prune", fixed, ["teacher"] + upstream, "pruned")
            pruned[label] = os.path.join(step.folder, "run", "pruned")
    recovered = {}
    if "recover" in s:
        rec = s["recover"]
        for label, model in pruned.items():
            fixed = {"stage": "task", "step": "prediction", "task": r.task, "model.teacher": teacher_model,
                     "model.student": model, "data.train": train}
            before = _cache_builder(p) if rec.get("cache_teacher") else None
            _train_step(p, f"recover-{label}", "recover", fixed, ["teacher", f"prune-{label}"] + upstream, "final",
                        before=before)
            recovered[label] = f"recover-{label}"
    finals = recovered or {label: f"prune-{label}" for label in pruned}
    if "eval" in s:
        _qa_eval_step(p, tune, finals)
    if "latency" in s:
        _qa_latency_step(p, finals)
    if "report" in s:
        _report_step(p, ["eval"] + (["latency"] if "latency" in s else []))


def _teacher_step_qa(p: _Planner, train: str, upstream: list[str]) -> Step:
    t = p.r.stages["teacher"]
    if t.get("given") is not None:
        return p.add("teacher", "teacher", {"given": p.hasher.identify(t["given"])}, [], f"use {t['given']} as it is",
                     lambda step, results: {"model": t["given"]})
    # no data.dev: the recipe's dev set is the holdout the report scores, never a selection split
    fixed = {"stage": "finetune", "task": p.r.task, "model.teacher": t["model"], "data.train": train}
    return _train_step(p, "teacher", "teacher", fixed, upstream, "final")


def _split_by_article(path: str, folder: str, tune_articles: int) -> dict:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if len(data["data"]) <= tune_articles:
        raise StageError(f"stage split: {path} has {len(data['data'])} articles; tune_articles {tune_articles} "
                         f"leaves none to train on")
    os.makedirs(folder, exist_ok=True)
    out = {}
    for key, articles in (("train", data["data"][:-tune_articles]), ("tune", data["data"][-tune_articles:])):
        name = os.path.join(folder, "train-fit.json" if key == "train" else "train-tune.json")
        with open(name + ".tmp", "w", encoding="utf-8") as f:
            json.dump({**data, "data": articles}, f)
        os.replace(name + ".tmp", name)
        out[key] = name
    return out


def _qa_eval_step(p: _Planner, tune: str | None, finals: dict) -> None:
    r = p.r
    settings = {"batch_size": 32} | {k: v for k, v in r.stages["eval"].items() if k != "latency_sentences"}
    reads = ["teacher"] + list(finals.values()) + (["split"] if "split" in p.steps else [])
    identity = {"settings": settings, "dev": p.hasher.identify(r.data["dev"]), "tune": p.path_identity(tune)}

    def run(step: Step, results: dict) -> dict:
        from distill.evaluate import evaluate_checkpoint

        out = {}
        models = _qa_models(results, finals)
        for label, model in models.items():
            print(f"      evaluating {label} on {r.data['dev']}", flush=True)
            m = evaluate_checkpoint(model, "squad", r.data["dev"], batch_size=settings["batch_size"], device="cpu",
                                    tune_data=tune)
            out[label] = {"model": model, **_jsonable(m), **_model_size(model)}
        return {"metric": "f1_tuned" if tune else "f1", "models": out}

    p.add("eval", "eval", identity, reads, f"{r.data['dev']}" + (", threshold tuned on the tune questions" if tune
                                                                  else ""), run)


def _qa_models(results: dict, finals: dict) -> dict[str, str]:
    """Label -> model folder of the teacher and each final pruned model (``pruned 50%``...)."""
    return {"teacher": _result(results, "teacher")} | {f"pruned {label}%": _result(results, name)
                                                       for label, name in finals.items()}


def _qa_latency_step(p: _Planner, finals: dict) -> None:
    r = p.r
    settings = {"windows": 30, "batch": 32, "rounds": 2} | r.stages["latency"]

    def run(step: Step, results: dict) -> dict:
        from distill.evaluate import trained_settings
        from distill.measure import qa_latency_ms

        models = _qa_models(results, finals)
        trained = trained_settings(models["teacher"])  # time the windows the models were trained on
        seq = trained.get("max_seq_length") or 384
        ms = qa_latency_ms(models, r.data["dev"], settings["windows"], settings["batch"], settings["rounds"], seq,
                           trained.get("doc_stride") or 128, trained.get("max_query_length") or 64)
        return {"batch": settings["batch"], "seq": seq, "models": {
            name: {"latency_ms": round(ms[1][name], 2), "latency_ms_batch": round(ms[settings["batch"]][name], 1),
                   "speedup": round(ms[1]["teacher"] / ms[1][name], 3),
                   "speedup_batch": round(ms[settings["batch"]]["teacher"] / ms[settings["batch"]][name], 3)}
            for name in models}}

    p.add("latency", "latency", {"settings": settings, "dev": p.hasher.identify(r.data["dev"])},
          ["teacher"] + list(finals.values()), f"batch 1 and {settings['batch']}, the teacher's window length, CPU", run)


# -- running ---------------------------------------------------------------------------------------
def print_plan(plan: Plan, out=None) -> None:
    out = out or sys.stdout
    r = plan.recipe
    print(f"recipe {r.name} ({r.task}): {len(plan.steps)} stages, store {plan.store}", file=out)
    width = max(len(s.name) for s in plan.steps)
    for i, s in enumerate(plan.steps, 1):
        print(f"  [{i}/{len(plan.steps)}] {s.name:<{width}}  {s.status:<6}  {os.path.relpath(s.folder, plan.output)}"
              f"  {s.work}", file=out)


def run_plan(plan: Plan) -> dict:
    """Run every stage that is not complete, in order; returns each stage's result by name. Prints
    each stage as it starts and ends, and the report's table (put into the output folder)."""
    results: dict[str, dict] = {}
    total = len(plan.steps)
    started = time.perf_counter()
    for i, step in enumerate(plan.steps, 1):
        done = os.path.join(step.folder, DONE)
        if os.path.exists(done):
            with open(done, encoding="utf-8") as f:
                results[step.name] = json.load(f)["result"]
            print(f"[{i}/{total}] {step.name}: reused ({os.path.relpath(step.folder, plan.output)})", flush=True)
            continue
        print(f"[{i}/{total}] {step.name}: {'resuming' if step.status == 'resume' else 'running'} -- {step.work}",
              flush=True)
        os.makedirs(step.folder, exist_ok=True)
        with open(os.path.join(step.folder, "identity.json"), "w", encoding="utf-8") as f:
            json.dump(step.identity, f, indent=1, default=str)
        t0 = time.perf_counter()
        try:
            result = step.action(step, results)
        except (RecipeError, StageError):
            raise
        except (ConfigError, ValueError, OSError) as e:
            raise StageError(f"stage {step.name} ({step.folder}): {e}") from e
        seconds = time.perf_counter() - t0
        record = {"stage": step.name, "kind": step.kind, "fingerprint": step.fingerprint, "result": result,
                  "seconds": round(seconds, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        tmp = done + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
        os.replace(tmp, done)
        results[step.name] = result
        print(f"[{i}/{total}] {step.name}: done in {_duration(seconds)}", flush=True)
    print(f"recipe {plan.recipe.name}: {total} stages in {_duration(time.perf_counter() - started)}", flush=True)
    if "report" in results:
        from distill.report import publish

        publish(results["report"], plan.output)
    return results


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"

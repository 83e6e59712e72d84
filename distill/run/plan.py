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
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from distill.config import Config, ConfigError, config_from_dict
from distill.devices import Precision, resolve_device, resolve_precision
from distill.run.recipes import CONFIG_SECTIONS, Cell, Recipe, RecipeError

log = logging.getLogger("distill.run.plan")

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
class Stage:
    """One stage of a plan. ``name``: its label (``prune-50`` for one target of ``prune``);
    ``status``: reuse | resume | run; ``action(stage, results) -> result``."""

    name: str
    kind: str
    fingerprint: str
    folder: str
    status: str
    reads: list[str]
    work: str
    action: Callable[["Stage", dict], dict] = field(repr=False)
    identity: dict = field(repr=False, default_factory=dict)


@dataclass
class Plan:
    recipe: Recipe
    output: str
    store: str
    stages: list[Stage]


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
    """Turns a recipe into stages, in order, each fingerprinted from the ones it reads."""

    def __init__(self, recipe: Recipe, output: str, store: str):
        self.r, self.output, self.store = recipe, output, store
        self.hasher = Hasher(store)
        self.stages: dict[str, Stage] = {}

    # paths a stage will produce, known before it runs (folders are named by fingerprints)
    def folder(self, kind: str, fp: str) -> str:
        return os.path.join(self.store, f"{kind}-{fp}")

    def add(self, name: str, kind: str, identity: dict, reads: list[str], work: str, action) -> Stage:
        identity = {"stage": kind, "version": STAGE_VERSIONS[kind], "package": _package_version(),
                    "reads": {r: self.stages[r].fingerprint for r in reads}, **identity}
        fp = fingerprint(identity)
        folder = self.folder(kind, fp)
        status = "run"
        if os.path.exists(os.path.join(folder, DONE)):
            status = "reuse"
        elif os.path.isdir(folder):
            from distill.training.trainer import latest_checkpoint

            status = "resume" if latest_checkpoint(folder) or latest_checkpoint(os.path.join(folder, "run")) else "run"
        stage = Stage(name, kind, fp, folder, status, reads, work, action, identity)
        self.stages[name] = stage
        return stage

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
        from distill.training.trainer import total_steps

        return f"{total_steps(t, rows)} steps ({t.epochs:g} epochs of {rows:,} rows)"


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
    return Plan(recipe, output, store, list(p.stages.values()))


def _result(results: dict, name: str, key: str = "model") -> str:
    return results[name][key]


def _corpus_stage(p: _Planner) -> Stage | None:
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

    def run(stage: Stage, results: dict) -> dict:
        out = os.path.join(stage.folder, "corpus")
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


def _train_stage(p: _Planner, name: str, kind: str, fixed: dict, reads: list[str], model_out: str,
                corpus: str | None = None, before: Callable[[Stage, dict, Config], Config] | None = None,
                identity: dict | None = None) -> Stage:
    """A stage that runs ``distill`` training (:func:`train_in`) with its recipe
    sections and the keys ``fixed`` wires (models, data, stage). Upstream models are given by the
    paths they will have: they sit in fingerprinted folders, known before they exist. ``before``
    may change the config at run time (a data path the stage makes first); ``identity`` adds what
    else decides the output."""
    settings = p.r.stages[kind]
    cfg = p.training_config(kind, settings, {**fixed, "output_dir": "@folder"})
    identity = {"config": p.config_identity(cfg), **(identity or {})}
    work = p.steps_text(cfg, corpus)

    def run(stage: Stage, results: dict) -> dict:
        cfg_run = copy.deepcopy(cfg)
        cfg_run.output_dir = os.path.join(stage.folder, "run")
        if before is not None:
            cfg_run = before(stage, results, cfg_run) or cfg_run
        if corpus and not cfg_run.train.max_steps and "rows)" not in stage.work:  # the corpus exists now
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
    there when there is one (``distill.training.prune`` for the prune stage, ``distill.training.trainer`` otherwise).
    The one place that decides to resume: the recipe runner and the experiments' scripts call it."""
    from distill.training.trainer import latest_checkpoint

    checkpoint = latest_checkpoint(cfg.output_dir)
    if checkpoint:
        print(f"      resuming from {checkpoint}", flush=True)
    if cfg.stage == "prune":
        from distill.training import prune

        return prune.main(cfg, resume=checkpoint is not None)
    from distill.training import trainer

    return trainer.main(cfg, resume=checkpoint is not None)


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _teacher_stage(p: _Planner, data_train: str, dev: str | None) -> tuple[Stage, str]:
    """The GLUE teacher stage and the path its model will have. It fine-tunes on the corpus
    originals, or on every row of ``train_data`` when given (a labelled TSV, written as a corpus of
    originals in the stage folder first, or a corpus folder)."""
    t = p.r.stages["teacher"]
    if t.get("given") is not None:
        given = t["given"]
        return p.add("teacher", "teacher", {"given": p.hasher.identify(given)}, [], f"use {given} as it is",
                     lambda stage, results: {"model": given}), given
    fixed = {"stage": "finetune", "task": p.r.task, "model.teacher": t["model"], "data.train": data_train,
             "data.dev": dev}
    before, reads = None, ["corpus"]
    if t.get("train_data") is not None:
        fixed["data.train"], reads = t["train_data"], []
        if os.path.isfile(t["train_data"]):
            before = _tsv_corpus_builder(t["train_data"], p.r.task)
            fixed["data.train"] = "@tsv-corpus"  # the stage writes it; its identity is the file's
    elif "original_only" not in (t.get("data") or {}):  # the paper's teachers saw the task's own data
        fixed["data.original_only"] = True
    identity = {"train_data": p.hasher.identify(t["train_data"])} if t.get("train_data") else None
    stage = _train_stage(p, "teacher", "teacher", fixed, reads, "best", corpus=None if before else fixed["data.train"],
                       before=before, identity=identity)
    return stage, os.path.join(stage.folder, "run", "best")  # dev is set: the last step always evaluates


def _tsv_corpus_builder(path: str, task_name: str):
    """A ``before`` hook: ``path`` (a labelled TSV) as a corpus of originals in the stage folder."""
    def before(stage: Stage, results: dict, cfg: Config) -> Config:
        from distill.data.glue import tsv_corpus
        from distill.data.shards import CorpusError, read_manifest
        from pipelines.tasks import get_task

        root = os.path.join(stage.folder, "train-corpus")
        try:
            read_manifest(root)
        except (CorpusError, OSError, ValueError):  # not yet written, or half written
            print(f"      writing {path} as a corpus of originals", flush=True)
            tsv_corpus(path, root, get_task(task_name))
        cfg.data.train = root
        return cfg

    return before


def _all_rows_steps(corpus: str):
    """A ``before`` hook for ``epochs_over_all_rows``: the stage's steps are its epochs over every
    row of ``corpus``, also when ``data.original_only`` trains on the originals alone (so both
    conditions of an augmentation study take the same steps)."""
    def before(stage: Stage, results: dict, cfg: Config) -> Config:
        from distill.training.trainer import total_steps

        if not cfg.train.max_steps:
            every = copy.deepcopy(cfg)
            every.data.original_only = False
            cfg.train.max_steps = total_steps(cfg.train, _corpus_rows(corpus, every))
        return cfg

    return before


def _chain(*hooks):
    """``before`` hooks run in turn (None entries skipped); None when there are none."""
    hooks = [h for h in hooks if h is not None]
    if not hooks:
        return None

    def before(stage: Stage, results: dict, cfg: Config) -> Config:
        for h in hooks:
            cfg = h(stage, results, cfg) or cfg
        return cfg

    return before


def _plan_glue(p: _Planner) -> None:
    r, s = p.r, p.r.stages
    corpus = _corpus_stage(p)
    corpus_path = os.path.join(corpus.folder, "corpus")
    _, teacher_model = _teacher_stage(p, corpus_path, r.data["dev"])
    student = None
    if "general" in s:
        g = s["general"]
        if g.get("given") is not None:
            student = g["given"]
            p.add("general", "general", {"given": p.hasher.identify(student)}, [], f"use {student} as it is",
                  lambda stage, results: {"model": g["given"]})
        else:
            text_files = list(g["text"])

            def shard(stage: Stage, results: dict, cfg: Config) -> Config:
                from distill.data.shards import CorpusError, read_manifest, write_text_shards

                root = os.path.join(stage.folder, "text")
                try:
                    read_manifest(root)
                except (CorpusError, OSError, ValueError):  # not yet written, or half written
                    shutil.rmtree(root, ignore_errors=True)
                    write_text_shards(text_files, root, min_chars=20, skip_headings=True)
                cfg.data.train = root
                return cfg

            fixed = {"stage": "general", "model.teacher": g.get("teacher") or s["teacher"]["model"],
                     "model.student": g.get("student", "tinybert-4"), "data.train": "@text"}
            stage = _train_stage(p, "general", "general", fixed, [], "final", before=shard,
                               identity={"text": [p.hasher.identify(f) for f in text_files]})
            student = os.path.join(stage.folder, "run", "final")
    if "intermediate" in s:
        fixed = {"stage": "task", "step": "intermediate", "task": r.task, "model.teacher": teacher_model,
                 "model.student": student, "data.train": corpus_path}
        over_all = bool(s["intermediate"].get("epochs_over_all_rows"))
        stage = _train_stage(p, "intermediate", "intermediate", fixed, ["corpus", "teacher", "general"], "final",
                           corpus=corpus_path, before=_all_rows_steps(corpus_path) if over_all else None,
                           identity={"epochs_over_all_rows": True} if over_all else None)
        student = os.path.join(stage.folder, "run", "final")
    if "prediction" in s:
        pred = s["prediction"]
        fixed = {"stage": "task", "step": "prediction", "task": r.task, "model.teacher": teacher_model,
                 "model.student": student, "data.train": corpus_path, "data.dev": r.data["dev"]}
        reads = ["corpus", "teacher"] + (["intermediate"] if "intermediate" in s else ["general"])
        over_all = bool(pred.get("epochs_over_all_rows"))
        before = _chain(_all_rows_steps(corpus_path) if over_all else None,
                        _cache_builder(p) if pred.get("cache_teacher") else None)
        _train_stage(p, "prediction", "prediction", fixed, reads, "best", corpus=corpus_path, before=before,
                    identity={"cache_teacher": bool(pred.get("cache_teacher"))}
                    | ({"epochs_over_all_rows": True} if over_all else {}))
    if "eval" in s:
        _glue_eval_stage(p)
    if "report" in s:
        _report_stage(p, ["eval"])


def _cache_builder(p: _Planner):
    """A ``before`` hook: build (or reuse) the teacher's prediction-layer outputs over the training
    data in ``STORE/teacher-cache-<fingerprint>`` and point the run at it. The fingerprint covers
    the teacher, the data and the windows only, so every student of one teacher and corpus (another
    learning rate, another pruned model) reads one cache. Float32 outputs, as the experiments
    measured; resumable by shard."""
    def before(stage: Stage, results: dict, cfg: Config) -> Config:
        from distill.training.teacher_cache import build

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


def _glue_eval_stage(p: _Planner) -> None:
    r, s = p.r, p.r.stages
    e = s["eval"]
    settings = {"latency_sentences": 100, "batch_size": 64} | e
    identity = {"settings": settings, "dev": p.hasher.identify(r.data["dev"])}

    def run(stage: Stage, results: dict) -> dict:
        from distill.evaluation.evaluate import evaluate_checkpoint
        from distill.data.glue import read_eval_rows
        from distill.evaluation.measure import text_latency_ms
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
    from distill.evaluation.measure import size_info

    if os.path.isfile(os.path.join(model, "model.safetensors")):
        return size_info(model)
    return {}


def _report_stage(p: _Planner, reads: list[str]) -> None:
    r = p.r
    settings = {"plot": True} | p.r.stages["report"]

    def run(stage: Stage, results: dict) -> dict:
        from distill.run.report import write_report

        return write_report(r, results, stage.folder, plot=settings["plot"])

    p.add("report", "report", {"settings": settings, "recipe": r.name}, reads + _model_steps(p),
          "report.md, report.json, plot, model card", run)


def _model_steps(p: _Planner) -> list[str]:
    return [n for n in p.stages if n == "teacher" or n == "prediction" or n.startswith("recover-")
            or n.startswith("prune-")]


# -- QA -----------------------------------------------------------------------------------------
def _plan_qa(p: _Planner) -> None:
    r, s = p.r, p.r.stages
    corpus = _corpus_stage(p)
    train = os.path.join(corpus.folder, "corpus") if corpus else r.data["train"]
    tune = r.data.get("tune")
    if "split" in s:
        n = s["split"].get("tune_articles", 1)

        def split(stage: Stage, results: dict) -> dict:
            return _split_by_article(r.data["train"], stage.folder, n)

        st = p.add("split", "split", {"input": p.hasher.identify(r.data["train"]), "tune_articles": n}, [],
                   f"last {n} article(s) of {r.data['train']} -> tune", split)
        tune = os.path.join(st.folder, "train-tune.json")
        if corpus is None:
            train = os.path.join(st.folder, "train-fit.json")
    upstream = [n for n in ("corpus", "split") if n in p.stages and (n != "split" or corpus is None)]
    teacher = _teacher_stage_qa(p, train, upstream)
    teacher_model = s["teacher"].get("given") or os.path.join(teacher.folder, "run", "final")
    pruned = {}
    if "prune" in s:
        strategy = ((s["prune"].get("prune") or {}).get("strategy") or "gain")
        for t in s["prune"]["targets"]:
            label = f"{round(100 * t)}"
            sizing = ({"prune.target_heads": float(t), "prune.target_ffn": float(t)} if strategy == "l0"
                      else {"prune.keep_heads": float(t), "prune.keep_ffn": float(t)})
            fixed = {"stage": "prune", "task": r.task, "model.teacher": teacher_model, "data.train": train, **sizing}
            stage = _train_stage(p, f"prune-{label}", "prune", fixed, ["teacher"] + upstream, "pruned")
            pruned[label] = os.path.join(stage.folder, "run", "pruned")
    recovered = {}
    if "recover" in s:
        rec = s["recover"]
        for label, model in pruned.items():
            fixed = {"stage": "task", "step": "prediction", "task": r.task, "model.teacher": teacher_model,
                     "model.student": model, "data.train": train}
            before = _cache_builder(p) if rec.get("cache_teacher") else None
            _train_stage(p, f"recover-{label}", "recover", fixed, ["teacher", f"prune-{label}"] + upstream, "final",
                        before=before)
            recovered[label] = f"recover-{label}"
    finals = recovered or {label: f"prune-{label}" for label in pruned}
    if "eval" in s:
        _qa_eval_stage(p, tune, finals)
    if "latency" in s:
        _qa_latency_stage(p, finals)
    if "report" in s:
        _report_stage(p, ["eval"] + (["latency"] if "latency" in s else []))


def _teacher_stage_qa(p: _Planner, train: str, upstream: list[str]) -> Stage:
    t = p.r.stages["teacher"]
    if t.get("given") is not None:
        return p.add("teacher", "teacher", {"given": p.hasher.identify(t["given"])}, [], f"use {t['given']} as it is",
                     lambda stage, results: {"model": t["given"]})
    # no data.dev: the recipe's dev set is the holdout the report scores, never a selection split
    fixed = {"stage": "finetune", "task": p.r.task, "model.teacher": t["model"], "data.train": train}
    return _train_stage(p, "teacher", "teacher", fixed, upstream, "final")


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


def _qa_eval_stage(p: _Planner, tune: str | None, finals: dict) -> None:
    r = p.r
    settings = {"batch_size": 32} | {k: v for k, v in r.stages["eval"].items() if k != "latency_sentences"}
    reads = ["teacher"] + list(finals.values()) + (["split"] if "split" in p.stages else [])
    identity = {"settings": settings, "dev": p.hasher.identify(r.data["dev"]), "tune": p.path_identity(tune)}

    def run(stage: Stage, results: dict) -> dict:
        from distill.evaluation.evaluate import evaluate_checkpoint

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


def _qa_latency_stage(p: _Planner, finals: dict) -> None:
    r = p.r
    settings = {"windows": 30, "batch": 32, "rounds": 2} | r.stages["latency"]

    def run(stage: Stage, results: dict) -> dict:
        from distill.evaluation.evaluate import trained_settings
        from distill.evaluation.measure import qa_latency_ms

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
    print(f"recipe {r.name} ({r.task}): {len(plan.stages)} stages, store {plan.store}", file=out)
    width = max(len(s.name) for s in plan.stages)
    for i, s in enumerate(plan.stages, 1):
        print(f"  [{i}/{len(plan.stages)}] {s.name:<{width}}  {s.status:<6}  {os.path.relpath(s.folder, plan.output)}"
              f"  {s.work}", file=out)


def run_plan(plan: Plan) -> dict:
    """Run every stage that is not complete, in order; returns each stage's result by name. Prints
    each stage as it starts and ends, and the report's table (put into the output folder)."""
    results: dict[str, dict] = {}
    total = len(plan.stages)
    started = time.perf_counter()
    for i, stage in enumerate(plan.stages, 1):
        done = os.path.join(stage.folder, DONE)
        if os.path.exists(done):
            with open(done, encoding="utf-8") as f:
                results[stage.name] = json.load(f)["result"]
            print(f"[{i}/{total}] {stage.name}: reused ({os.path.relpath(stage.folder, plan.output)})", flush=True)
            continue
        print(f"[{i}/{total}] {stage.name}: {'resuming' if stage.status == 'resume' else 'running'} -- {stage.work}",
              flush=True)
        os.makedirs(stage.folder, exist_ok=True)
        with open(os.path.join(stage.folder, "identity.json"), "w", encoding="utf-8") as f:
            json.dump(stage.identity, f, indent=1, default=str)
        t0 = time.perf_counter()
        try:
            result = stage.action(stage, results)
        except (RecipeError, StageError):
            raise
        except (ConfigError, ValueError, OSError) as e:
            raise StageError(f"stage {stage.name} ({stage.folder}): {e}") from e
        seconds = time.perf_counter() - t0
        record = {"stage": stage.name, "kind": stage.kind, "fingerprint": stage.fingerprint, "result": result,
                  "seconds": round(seconds, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        tmp = done + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
        os.replace(tmp, done)
        results[stage.name] = result
        print(f"[{i}/{total}] {stage.name}: done in {_duration(seconds)}", flush=True)
    print(f"recipe {plan.recipe.name}: {total} stages in {_duration(time.perf_counter() - started)}", flush=True)
    if "report" in results:
        from distill.run.report import publish

        publish(results["report"], plan.output)
    return results


# -- grids -----------------------------------------------------------------------------------------
GRID_FILE = "grid.json"


def make_grid(recipe: Recipe, output: str, store: str | None = None) -> list[tuple[Cell, Plan]]:
    """A plan per cell of a grid recipe, all in one store (``OUTPUT/stages``), so a stage that two
    cells compute alike (the teacher, a corpus) is one folder, built once. Cell ``i`` writes its
    report under ``OUTPUT/cells/cell-<i>`` (``grid.json`` names its overrides). Every plan is made (and every cell checked) first."""
    output = os.path.abspath(output)
    store = os.path.abspath(store or os.path.join(output, "stages"))
    return [(cell, make_plan(cell.recipe, os.path.join(output, "cells", f"cell-{i:02d}"), store))
            for i, cell in enumerate(recipe.cells)]


def run_grid(recipe: Recipe, plans: list[tuple[Cell, Plan]], output: str) -> dict:
    """Run every cell's plan in turn; writes ``OUTPUT/grid.json``: per cell its overrides, output
    folder, and each stage's folder and result, for the analysis scripts (``experiments/``)."""
    cells = []
    for i, (cell, plan) in enumerate(plans, 1):
        print(f"== cell {i}/{len(plans)}: {cell.name}", flush=True)
        results = run_plan(plan)
        cells.append({"name": cell.name, "overrides": cell.overrides, "output": plan.output,
                      "stages": {s.name: {"kind": s.kind, "folder": s.folder, "fingerprint": s.fingerprint,
                                          "result": results.get(s.name)} for s in plan.stages}})
    grid = {"recipe": recipe.name, "source": recipe.source, "store": plans[0][1].store if plans else None,
            "cells": cells}
    path = os.path.join(os.path.abspath(output), GRID_FILE)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(grid, f, indent=1)
    os.replace(path + ".tmp", path)
    print(f"grid {recipe.name}: {len(plans)} cells; {path}", flush=True)
    return grid


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"

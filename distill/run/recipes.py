"""Recipes: one YAML file from task data to an evaluated, compressed model (``distill run``).

A recipe names the task, its data and its stages; each stage is a section with its settings
(training stages take the sections of a ``distill`` config: ``data``, ``optim``, ``train``,
``distill``, ``prune``). Shipped recipes live beside this module, named by method and task, and
run by name (``distill run tinybert/sst2-4l``) or by path; ``distill cp NAME DEST`` copies one to
edit, ``distill ls`` lists them::

    name: demo/sst2-cpu
    task: sst2
    data: {train: ${assets}/glue/SST-2/train.tsv, dev: ${assets}/glue/SST-2/dev.tsv}
    stages:
      corpus: {teacher: ..., glove: ..., n_aug: 4, max_records: 2000}
      teacher: {model: ..., train: {epochs: 2}}
      general: {text: [...], student: tinybert-4, train: {max_steps: 400}}
      intermediate: {train: {epochs: 1}}
      prediction: {train: {epochs: 1}}
      eval: {}
      report: {}

This module parses and checks recipes without touching models or data: every error names the
key (``stages.prediction.optim.lr``), before any work. :mod:`distill.run.plan` plans and runs them.
"""
from __future__ import annotations

import copy
import os
import re
import shutil
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from distill.config import Config, ConfigError, section_from_dict, known_keys, unknown_keys, merge, parse_override

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"  # YAML only: distill/recipes/
SUFFIX = ".yaml"

# Sections of a distill Config that a training stage may set (the rest the runner decides).
CONFIG_SECTIONS = ("data", "optim", "train", "distill", "prune")


@dataclass(frozen=True)
class StageKind:
    """One kind of stage: the recipe keys it takes (besides CONFIG_SECTIONS when ``training``),
    whether it trains, and the task family it belongs to (``glue``, ``qa`` or ``any``)."""

    name: str
    family: str
    keys: dict[str, Any]
    training: bool = False
    help: str = ""


_MODEL = (str, type(None))
STAGE_KINDS: dict[str, StageKind] = {k.name: k for k in [
    StageKind("corpus", "any", {"teacher": str, "glove": str, "n_aug": (int, str), "p_t": float, "k": int,
                                "seed": int, "max_records": (int, type(None)), "num_shards": int,
                                "augment_context": bool, "beam_args": list},
              help="the Beam corpus builder (pipelines/augment.py) over data.train"),
    StageKind("split", "qa", {"tune_articles": int},
              help="cut the last articles of data.train off as the questions the null threshold is tuned on"),
    StageKind("teacher", "any", {"given": _MODEL, "model": _MODEL, "train_data": (str, type(None))}, training=True,
              help="fine-tune `model` on the corpus originals (GLUE: on every row of `train_data`, a labelled "
                   "TSV or corpus, when given), or take the fine-tuned `given` model"),
    StageKind("general", "glue", {"given": _MODEL, "teacher": _MODEL, "text": (list, type(None)),
                                  "student": str}, training=True,
              help="general distillation of `student` from the pre-trained `teacher` on `text`, or a given "
                   "general student"),
    StageKind("intermediate", "glue", {"epochs_over_all_rows": bool}, training=True,
              help="task distillation step 1: embeddings, hidden states, attention"),
    StageKind("prediction", "glue", {"cache_teacher": bool, "epochs_over_all_rows": bool}, training=True,
              help="task distillation step 2: the teacher's soft labels (best dev checkpoint kept)"),
    StageKind("prune", "qa", {"targets": list}, training=True,
              help="structured pruning of the teacher to each fraction in `targets` (heads and FFN units kept)"),
    StageKind("recover", "qa", {"cache_teacher": bool}, training=True,
              help="distil the unpruned teacher into each pruned model"),
    StageKind("eval", "any", {"latency_sentences": int, "batch_size": int},
              help="dev metrics of the teacher and the compressed models (QA: null threshold tuned on the "
                   "split's tune questions)"),
    StageKind("latency", "qa", {"windows": int, "batch": int, "rounds": int},
              help="CPU latency of every model at batch 1 and `batch`, side by side"),
    StageKind("report", "any", {"plot": bool},
              help="report.md, report.json, a plot, and the final model with its model card"),
]}
GLUE_ORDER = ("corpus", "teacher", "general", "intermediate", "prediction", "eval", "report")
QA_ORDER = ("corpus", "split", "teacher", "prune", "recover", "eval", "latency", "report")
TOP_KEYS = {"name": str, "description": str, "task": str, "data": dict, "stages": dict, "grid": (dict, list)}
GRID_KEYS = ("product", "zip")
DATA_KEYS = {"train": str, "dev": str, "tune": (str, type(None))}


class RecipeError(ConfigError):
    """A recipe that cannot run; the message names the key (``stages.prediction.optim.lr``)."""


@dataclass
class Recipe:
    """A parsed, checked recipe. ``stages``: name -> settings, in run order."""

    name: str
    task: str
    family: str  # glue | qa
    data: dict
    stages: dict[str, dict]
    description: str = ""
    source: str | None = None
    #: a grid recipe's cells, each its own checked Recipe (run as one store); empty otherwise
    cells: list[Cell] = field(default_factory=list)

    def to_yaml(self) -> str:
        return yaml.safe_dump({"name": self.name, "description": self.description, "task": self.task,
                               "data": self.data, "stages": self.stages}, sort_keys=False)


@dataclass
class Cell:
    """One cell of a grid: its ``overrides`` (dotted key -> value, as in ``distill run`` overrides),
    a folder-safe ``name`` made of them, and the recipe they make."""

    name: str
    overrides: dict
    recipe: Recipe


# -- finding recipes ---------------------------------------------------------------------------
def shipped() -> list[str]:
    """Names of the recipes shipped in the package (``tinybert/sst2-4l``, ...), sorted."""
    return sorted(p.relative_to(RECIPES_DIR).with_suffix("").as_posix() for p in RECIPES_DIR.rglob("*" + SUFFIX))


def locate(name_or_path: str) -> Path:
    """A recipe file: a path to a YAML file, or the name of a shipped recipe. Raises ``RecipeError``
    listing the shipped recipes when neither."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    candidate = RECIPES_DIR / (name_or_path.removesuffix(SUFFIX) + SUFFIX)
    if candidate.is_file() and ".." not in Path(name_or_path).parts:
        return candidate
    raise RecipeError(f"no recipe {name_or_path!r}: not a file, nor a shipped recipe (distill ls lists them: "
                      f"{', '.join(shipped())})")


def copy_recipe(name_or_path: str, dest: str) -> Path:
    """Copy a recipe to ``dest`` (a file, or a folder to put it in) to edit; refuses to overwrite."""
    src = locate(name_or_path)
    target = Path(dest)
    if target.is_dir():
        target = target / src.name
    if target.exists():
        raise RecipeError(f"{target} exists; choose another destination")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, target)
    return target


# -- loading and checking ----------------------------------------------------------------------
def load_raw(name_or_path: str) -> dict:
    """The recipe's YAML mapping as written (no overrides, no checks)."""
    path = locate(name_or_path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{name_or_path}: expected a mapping at the top level")
    return raw


def load(name_or_path: str, overrides: Sequence[str] = ()) -> Recipe:
    """The recipe named or found at ``name_or_path`` with ``overrides`` (``prediction.optim.lr=2e-5``,
    ``data.dev=PATH``, ``corpus.n_aug=4``) applied, ``${assets}`` expanded, and every check of
    :func:`check` passed. Raises ``RecipeError`` naming the key."""
    path = locate(name_or_path)
    raw = load_raw(str(path))
    raw.setdefault("name", path.relative_to(RECIPES_DIR).with_suffix("").as_posix()
                   if RECIPES_DIR in path.resolve().parents else path.stem)
    for item in overrides:
        keys, value = parse_override(item)
        merge(raw, _address(raw, keys, f"override {item!r}"), value)
    grid = raw.pop("grid", None)
    recipe = check(_expand(raw))
    recipe.source = str(path)
    if grid is not None:
        recipe.cells = []
        for values in grid_cells(grid):
            cell = copy.deepcopy(raw)
            for dotted, value in values.items():
                merge(cell, _address(cell, dotted.split("."), f"grid key {dotted!r}"), value)
            name = ",".join(f"{k}={_short(v)}" for k, v in values.items())
            try:
                recipe.cells.append(Cell(name, values, check(_expand(cell))))
            except RecipeError as e:
                raise RecipeError(f"grid cell {name}: {e}") from None
    return recipe


def _address(raw: dict, keys: list[str], what: str) -> list[str]:
    """Where a dotted override goes: a top-level key, or ``STAGE.KEY...`` under ``stages``."""
    if keys[0] in TOP_KEYS or keys[0] == "stages":
        return keys
    if keys[0] not in (raw.get("stages") or {}):  # `prediction.optim.lr=...` addresses a stage
        raise RecipeError(f"{what}: {keys[0]!r} is neither a top-level key ({', '.join(TOP_KEYS)}) nor a "
                          f"stage of this recipe ({', '.join(raw.get('stages') or {})})")
    return ["stages", *keys]


def _short(value) -> str:
    """A grid value as it appears in a cell's folder name."""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:40]


def grid_cells(grid) -> list[dict]:
    """The cells of a recipe's ``grid:``, each a dict of dotted key -> value, in order.

    ``grid`` is a block or a list of blocks (their cells are concatenated). In a block, ``product``
    maps keys to lists of values, each key an axis; ``zip`` is a mapping (or a list of mappings) of
    keys to lists of one length, each mapping one axis whose i-th values go together. A block's
    cells are every combination of its axes (zip axes first, in order). Raises ``RecipeError``
    naming the key for an empty or uneven list, an unknown block key, or two equal cells."""
    blocks = grid if isinstance(grid, list) else [grid]
    cells: list[dict] = []
    for i, block in enumerate(blocks):
        where = f"grid[{i}]" if isinstance(grid, list) else "grid"
        if not isinstance(block, dict) or not block:
            raise RecipeError(f"{where}: expected a mapping with product and/or zip, got {block!r}")
        _unknown(f"{where}.", block, GRID_KEYS)
        zips = block.get("zip") or []
        zips = [zips] if isinstance(zips, dict) else zips
        product = block.get("product") or {}
        if not isinstance(product, dict) or not isinstance(zips, list) or not all(isinstance(z, dict) for z in zips):
            raise RecipeError(f"{where}: product is a mapping, zip a mapping or a list of mappings")
        axes = []  # each axis: a list of {key: value} choices
        for j, group in enumerate(zips):
            name = f"{where}.zip" + (f"[{j}]" if isinstance(block.get("zip"), list) else "")
            for key, values in group.items():
                if not isinstance(values, list) or not values:
                    raise RecipeError(f"{name}.{key}: expected a non-empty list of values, got {values!r}")
            if len({len(v) for v in group.values()}) > 1:
                raise RecipeError(f"{name}: the lists must have one length, got "
                                  f"{', '.join(f'{k}: {len(v)}' for k, v in group.items())}")
            axes.append([dict(zip(group, row)) for row in zip(*group.values())])
        for key, values in product.items():
            if not isinstance(values, list) or not values:
                raise RecipeError(f"{where}.product.{key}: expected a non-empty list of values, got {values!r}")
            axes.append([{key: v} for v in values])
        for combo in itertools.product(*axes):
            cells.append({k: v for choice in combo for k, v in choice.items()})
    seen = set()
    for cell in cells:
        key = yaml.safe_dump(cell, sort_keys=True)
        if key in seen:
            raise RecipeError(f"grid: the cell {cell} appears twice")
        seen.add(key)
    return cells


def _expand(obj):
    """``${assets}`` -> the assets folder (``BERT_COMPRESS_ASSETS``, else ../shared/assets), in every
    string; any other ``${...}`` is an error."""
    if isinstance(obj, dict):
        return {k: _expand(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_expand(v) for v in obj]
    if isinstance(obj, str) and "${" in obj:
        from augment.assets import assets_dir

        out = obj.replace("${assets}", str(assets_dir()))
        unknown = re.findall(r"\$\{[^}]*\}", out)
        if unknown:
            raise RecipeError(f"{obj!r}: unknown variable {unknown[0]} (only ${{assets}} is expanded)")
        return out
    return obj


def _type_check(key: str, value, types) -> None:
    types = types if isinstance(types, tuple) else (types,)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        return
    if isinstance(value, bool) and bool not in types:
        raise RecipeError(f"{key}: expected {' or '.join(t.__name__ for t in types)}, got {value!r}")
    if not isinstance(value, types):
        raise RecipeError(f"{key}: expected {' or '.join(t.__name__ for t in types)}, got {value!r}")


def _unknown(where: str, data: dict, known) -> None:
    extra = sorted(set(data) - set(known))
    if extra:
        raise RecipeError(f"unknown key {where}{extra[0]} (known: {', '.join(sorted(known))})")


def check(raw: dict) -> Recipe:
    """A ``Recipe`` from a parsed YAML mapping; ``RecipeError`` naming the key for an unknown stage or
    key, a wrong type, a missing local input file, a stage whose input no stage produces, or a
    stage of the other task family (a QA stage in a GLUE recipe)."""
    from pipelines.tasks import get_task

    _unknown("", raw, TOP_KEYS)
    for key, types in TOP_KEYS.items():
        if key not in raw and key not in ("description", "grid"):
            raise RecipeError(f"missing key {key}")
        if key in raw:
            _type_check(key, raw[key], types)
    try:
        task = get_task(raw["task"])
    except ValueError as e:
        raise RecipeError(f"task: {e}") from None
    family = "qa" if task.kind == "qa" else "glue"
    data = dict(raw["data"])
    _unknown("data.", data, DATA_KEYS)
    for key in ("train", "dev"):
        if key not in data:
            raise RecipeError(f"missing key data.{key}")
    for key, value in data.items():
        _type_check(f"data.{key}", value, DATA_KEYS[key])
        if value is not None:
            _need_input(f"data.{key}", value)
    if data.get("tune") is not None and family != "qa":
        raise RecipeError(f"data.tune: a SQuAD 2.0 null-threshold tuning set; task {task.name} has none")
    order = QA_ORDER if family == "qa" else GLUE_ORDER
    stages = {}
    for name, settings in raw["stages"].items():
        if name not in STAGE_KINDS:
            raise RecipeError(f"unknown stage stages.{name} (stages of a {family.upper()} recipe: {', '.join(order)})")
        if name not in order:
            other = "QA" if family == "glue" else "GLUE"
            raise RecipeError(f"stages.{name} is a {other} stage; task {task.name} takes {', '.join(order)}")
        settings = {} if settings is None else settings
        if not isinstance(settings, dict):
            raise RecipeError(f"stages.{name}: expected a mapping of settings, got {settings!r}")
        stages[name] = _check_stage(name, settings, task.name)
    stages = {n: stages[n] for n in order if n in stages}  # run order, whatever the file's order
    _check_wiring(stages, data, family)
    return Recipe(raw["name"], task.name, family, data, stages, raw.get("description", ""))


def _check_stage(name: str, settings: dict, task: str) -> dict:
    kind = STAGE_KINDS[name]
    known = set(kind.keys) | (set(CONFIG_SECTIONS) if kind.training else set())
    _unknown(f"stages.{name}.", settings, known)
    for key, value in settings.items():
        where = f"stages.{name}.{key}"
        if key in CONFIG_SECTIONS:
            if value is not None and not isinstance(value, dict):
                raise RecipeError(f"{where}: expected a mapping, got {value!r}")
            continue
        if value is not None:
            _type_check(where, value, kind.keys[key])
    if kind.training:  # the distill config's own checks, unknown keys first, named in full
        sections = {s: settings[s] for s in CONFIG_SECTIONS if settings.get(s)}
        unknown = unknown_keys(Config, sections)
        if unknown:
            section = unknown[0].rsplit(".", 1)[0]
            raise RecipeError(f"unknown key stages.{name}.{unknown[0]} (known in {section}: "
                              f"{', '.join(known_keys(Config, section))})")
        try:
            section_from_dict(Config, copy.deepcopy(sections))
        except ConfigError as e:
            raise RecipeError(f"stages.{name}: {e}") from None
    for key in ("teacher", "glove", "given", "model", "train_data"):
        if isinstance(settings.get(key), str):
            _need_input(f"stages.{name}.{key}", settings[key])
    for i, path in enumerate(settings.get("text") or []):
        _need_input(f"stages.{name}.text[{i}]", path, hub=False)
    if name == "prune":
        targets = settings.get("targets")
        if not targets:
            raise RecipeError("stages.prune.targets: give the fractions kept, e.g. [0.7, 0.5, 0.3]")
        for i, t in enumerate(targets):
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 1:
                raise RecipeError(f"stages.prune.targets[{i}]: a fraction kept in (0, 1], got {t!r}")
    if name == "corpus" and isinstance(settings.get("n_aug"), str):
        from augment.config import authors_n_aug

        try:
            authors_n_aug(settings["n_aug"])
        except ValueError as e:
            raise RecipeError(f"stages.corpus.n_aug: {e}") from None
    return settings


def _need_input(key: str, value: str, hub: bool = True) -> None:
    """A value that names a local file or folder must exist; a Hub name (``org/name``) is left to
    the loaders. ``hub=False``: it must be a local file."""
    looks_local = (not hub or value.startswith((".", "/", "~")) or os.sep + os.sep in value
                   or Path(value).suffix in (".tsv", ".json", ".jsonl", ".csv", ".txt", ".yaml")
                   or value.count("/") > 1)
    if looks_local and not Path(os.path.expanduser(value)).exists():
        raise RecipeError(f"{key}: {value} does not exist")


def _check_wiring(stages: dict, data: dict, family: str) -> None:
    """Every stage's inputs come from an earlier stage or from a given setting."""
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise RecipeError(message)

    teacher = stages.get("teacher")
    need(teacher is not None, "stages.teacher is missing: every recipe needs a teacher (`given` or `model`)")
    need((teacher.get("given") is None) != (teacher.get("model") is None),
         "stages.teacher: give exactly one of given (a fine-tuned model) and model (the model to fine-tune)")
    need(teacher.get("train_data") is None or (family == "glue" and teacher.get("model") is not None),
         "stages.teacher.train_data: the data a GLUE teacher is fine-tuned on (with stages.teacher.model)")
    need(teacher.get("given") is not None or "corpus" in stages or family == "qa",
         "stages.teacher.model: fine-tuning reads the corpus; add stages.corpus (n_aug: 0 for originals only)")
    if "corpus" in stages:
        c = stages["corpus"]
        for key in ("teacher", "glove"):
            need(c.get(key) is not None or c.get("n_aug") == 0,
                 f"stages.corpus.{key} is missing (the masked LM and GloVe file of the augmentation)")
        need(family == "qa" or not c.get("augment_context"),
             "stages.corpus.augment_context: SQuAD contexts only")
    if family == "glue":
        need("corpus" in stages, "stages.corpus is missing: GLUE training stages read a corpus of the task "
                                 "(n_aug: 0 builds one of the originals alone)")
        g = stages.get("general")
        if g is not None:
            need((g.get("given") is None) != (g.get("text") is None),
                 "stages.general: give exactly one of given (a general student) and text (files to distil on)")
            if g.get("text") is not None:
                need(g.get("teacher") is not None or teacher.get("model") is not None,
                     "stages.general.teacher is missing: the pre-trained encoder to distil from (default: "
                     "stages.teacher.model, absent when the teacher is given)")
        need("intermediate" not in stages or g is not None,
             "stages.intermediate needs a student: add stages.general (given: a general student, or text)")
        need("prediction" not in stages or "intermediate" in stages or g is not None,
             "stages.prediction needs a student: add stages.intermediate or stages.general")
        need("eval" not in stages or "prediction" in stages,
             "stages.eval scores the student of stages.prediction, which is missing")
    else:
        need("recover" not in stages or "prune" in stages, "stages.recover needs stages.prune (the pruned models)")
        need("latency" not in stages or "prune" in stages, "stages.latency times the pruned models: add stages.prune")
        need(not ("split" in stages and data.get("tune")),
             "data.tune and stages.split both give the tuning questions; keep one")
    need("report" not in stages or "eval" in stages, "stages.report needs stages.eval (the metrics it reports)")

"""Run configuration: YAML files plus ``section.key=value`` overrides, checked strictly.

An unknown key anywhere is an error (nanoGPT habit: a typo must not silently train with a default).
The resolved config is saved as ``config.yaml`` with every checkpoint and output, and ``--resume``
refuses a config that differs from the one the run started with.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import yaml

STAGES = ("finetune", "general", "task", "prune")
PRUNE_STRATEGIES = ("random", "gain", "l0")
PRUNE_SCOPES = ("global", "layer")
STEPS = ("intermediate", "prediction")
SCHEDULES = ("linear", "constant")
#: auto: bf16 autocast where the hardware runs bf16 natively, fp32 elsewhere (distill.devices)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class ConfigError(ValueError):
    """An invalid or unknown configuration value; the message names the key."""


@dataclass
class ModelConfig:
    """teacher: hub name or directory (finetune: the encoder to fine-tune). student: a preset
    (tinybert-4, tinybert-6), a config.json, or a checkpoint directory (e.g. the previous stage)."""

    teacher: str | None = None
    student: str = "tinybert-4"


@dataclass
class DataConfig:
    """train: a corpus directory (shards + manifest.json); for squad also a SQuAD JSON file. dev: a
    GLUE TSV, a GLUE task directory (``dev.tsv`` inside) or a corpus directory; for squad a SQuAD JSON
    file or corpus. original_only: train on aug_index 0 rows only. max_seq_length: null = 128, or
    384 for squad. doc_stride (tokens shared by consecutive context windows) and max_query_length:
    squad only. teacher_cache: a directory written by ``distill cache-teacher`` for this teacher,
    corpus and windows; the prediction step then reads the teacher's outputs from it instead of
    running the teacher (``distill.training.teacher_cache``). group_by_length: N > 0 sorts each run of N
    training batches by text length before batching (less padding; ``distill.data.stream``), 0 = off."""

    train: str | None = None
    dev: str | None = None
    original_only: bool = False
    max_seq_length: int | None = None
    doc_stride: int = 128
    max_query_length: int = 64
    shuffle_buffer: int = 10_000
    chunk_rows: int = 1024
    num_workers: int = 0
    pad_to_multiple_of: int | None = None
    teacher_cache: str | None = None
    group_by_length: int = 0


@dataclass
class OptimConfig:
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    adam_eps: float = 1e-8
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    # linear: warm up, then decay to 0 at the last step (BERT's); constant: warm up, then hold.
    # Default: constant for l0 pruning (gates and Lagrange multipliers must still move at the end
    # to hold a target: with a decaying rate the FFN density of a SQuAD run settled at 0.255 for a
    # target of 0.30), linear for everything else.
    schedule: str | None = None


@dataclass
class TrainConfig:
    """batch_size is per process and micro-step; the global batch is batch_size x processes x
    grad_accum. max_steps (optimizer steps) wins over epochs. eval_every/save_every: in optimizer
    steps, 0 = only at the end. precision: auto (bf16 autocast where the hardware runs bf16
    natively, fp32 elsewhere: distill.devices), fp32, bf16 or fp16. progress: None -> a bar on a
    terminal and a plain line every progress_seconds otherwise; False -> silent."""

    batch_size: int = 32
    grad_accum: int = 1
    max_steps: int | None = None
    epochs: float = 3.0
    eval_every: int = 0
    eval_batch_size: int = 64
    save_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 42
    precision: str = "auto"
    device: str = "auto"
    progress: bool | None = None
    progress_seconds: float = 30.0
    tensorboard: bool = True


@dataclass
class LossConfig:
    """layer_map: uniform | top | bottom | a list of teacher layers, one per student layer.
    Intermediate terms are weighted by *_weight (0 turns a term off). The prediction step uses soft
    cross-entropy at ``temperature`` (MSE for regression), plus hard_label_weight x the gold-label loss."""

    layer_map: str | list[int] = "uniform"
    embedding_weight: float = 1.0
    hidden_weight: float = 1.0
    attention_weight: float = 1.0
    temperature: float = 1.0
    hard_label_weight: float = 0.0


@dataclass
class PruneConfig:
    """``distill prune`` (McCarley et al., 2019): strategy random | gain | l0 decides which heads and
    FFN units of ``model.teacher`` go.

    keep_heads / keep_ffn: the fraction kept, of all heads / units (scope global) or of each layer's
    (scope layer); every layer keeps at least one head; default 0.5 each. gain: |dL/dgate| of the
    gold-label loss averaged over gain_batches training batches. l0: hard-concrete gates trained for
    train.max_steps (weights frozen; optim.lr is the gates' learning rate) on the soft cross-entropy
    against the unpruned model; gates start open with probability l0_init_open. Two ways to size an
    l0 model:

    - target_heads / target_ffn (fractions kept, in (0, 1]; give both): a Lagrangian (CoFi) drives
      the expected fraction of open gates to the targets, which move linearly from the gates'
      initial density over the first target_warmup of the steps; the model keeps the expected
      number of open gates, best log_alpha first. keep_* and l0_lambda are not used. The multipliers
      learn at lagrangian_lr (default 30 x optim.lr: slower multipliers let Adam-driven gates
      overshoot the target and stall, measured on toy problems in tests/distill/test_pruning.py).
    - otherwise: + l0_lambda x the expected fraction of open gates, then keep_heads / keep_ffn.
    """

    strategy: str = "gain"
    keep_heads: float | None = None
    keep_ffn: float | None = None
    scope: str = "global"
    gain_batches: int = 32
    l0_lambda: float = 1.0
    l0_init_open: float = 0.9
    target_heads: float | None = None
    target_ffn: float | None = None
    target_warmup: float = 0.5
    lagrangian_lr: float | None = None


@dataclass
class Config:
    stage: str = "task"
    step: str | None = None
    task: str | None = None
    output_dir: str = "out/run"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: LossConfig = field(default_factory=LossConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _check_type(key: str, value: Any, hint) -> Any:
    """``value`` coerced to ``hint`` where that is lossless (int -> float); else ``ConfigError``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        errors = []
        for option in typing.get_args(hint):
            try:
                return _check_type(key, value, option)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} is not a valid {hint}")
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null")
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_check_type(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    raise ConfigError(f"{key}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def unknown_keys(cls, data, prefix: str = "") -> list[str]:
    """Every key of ``data`` (recursively) that ``cls`` does not define, as dotted names."""
    if not isinstance(data, dict):
        return []
    hints = typing.get_type_hints(cls)
    out = [prefix + k for k in data if k not in hints]
    for k, v in data.items():
        if k in hints and dataclasses.is_dataclass(hints[k]):
            out += unknown_keys(hints[k], v, f"{prefix}{k}.")
    return sorted(out)


def section_from_dict(cls, data: dict, prefix: str = ""):
    """The dataclass ``cls`` built from ``data`` (nested sections too), types checked; errors name
    the dotted key under ``prefix``. Raises ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    unknown = unknown_keys(cls, data, prefix)
    if unknown:
        sections = sorted({k.rsplit(".", 1)[0] if "." in k else "top level" for k in unknown})
        known = "; ".join(f"{s}: {', '.join(known_keys(cls, s))}" for s in sections)
        raise ConfigError(f"unknown config keys: {', '.join(unknown)} (known keys -- {known})")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = section_from_dict(hint, value or {}, f"{prefix}{name}.")
        else:
            kwargs[name] = _check_type(prefix + name, value, hint)
    return cls(**kwargs)


def known_keys(cls, section: str) -> list[str]:
    """The keys the dotted ``section`` of dataclass ``cls`` defines ("top level": ``cls``'s own)."""
    for part in [] if section == "top level" else section.split("."):
        cls = typing.get_type_hints(cls)[part]
    return sorted(f.name for f in dataclasses.fields(cls))


def parse_override(item: str) -> tuple[list[str], Any]:
    """``train.lr=1e-4`` -> (["train", "lr"], 0.0001); values are parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. train.max_steps=100)")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else None
    if isinstance(value, str) and _looks_numeric(value):
        value = float(value)  # YAML 1.1 reads "1e-4" as a string
    return key.strip().split("."), value


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def merge(base: dict, path: Sequence[str], value: Any) -> None:
    node = base
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(path)}: {part} is not a section")
    node[path[-1]] = value


def load_config(path: str | None = None, overrides: Sequence[str] = (), **fixed) -> Config:
    """The config from a YAML file, then ``overrides`` (KEY=VALUE), then ``fixed`` top-level keys
    (the stage and step given by the command). Raises ``ConfigError``."""
    data: dict = {}
    if path:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    for item in overrides:
        merge(data, *parse_override(item))
    for key, value in fixed.items():
        if value is not None:
            data[key] = value
    cfg = section_from_dict(Config, data)
    validate(cfg)
    return cfg


def config_from_dict(data: dict) -> Config:
    cfg = section_from_dict(Config, data)
    validate(cfg)
    return cfg


def default_max_seq_length(task: str | None) -> int:
    """128 tokens (GLUE, text), 384 for SQuAD (BERT's QA setting)."""
    return 384 if task is not None and _task_kind(task) == "qa" else 128


def _task_kind(name: str) -> str:
    from pipelines.tasks import get_task

    try:
        return get_task(name).kind
    except ValueError as e:
        raise ConfigError(str(e)) from None


def validate(cfg: Config) -> None:
    """Value checks that do not need the models or data."""
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    need(cfg.stage in STAGES, f"stage must be one of {STAGES}, got {cfg.stage!r}")
    if cfg.stage == "task":
        need(cfg.step in STEPS, f"the task stage needs step: one of {STEPS}, got {cfg.step!r}")
    need(cfg.stage == "general" or cfg.task is not None, f"stage {cfg.stage} needs task (e.g. task: sst2)")
    need(cfg.model.teacher is not None, "model.teacher is required")
    need(cfg.data.train is not None, "data.train (a corpus directory) is required")
    t, o, d = cfg.train, cfg.optim, cfg.data
    if d.max_seq_length is None:  # resolved here, so the saved config.yaml states it
        d.max_seq_length = default_max_seq_length(cfg.task)
    for key, value in [("train.batch_size", t.batch_size), ("train.grad_accum", t.grad_accum),
                       ("train.eval_batch_size", t.eval_batch_size), ("data.max_seq_length", d.max_seq_length),
                       ("data.chunk_rows", d.chunk_rows), ("train.keep_checkpoints", t.keep_checkpoints),
                       ("train.log_every", t.log_every), ("data.max_query_length", d.max_query_length)]:
        need(value >= 1, f"{key} must be >= 1, got {value}")
    for key, value in [("train.eval_every", t.eval_every), ("train.save_every", t.save_every),
                       ("data.num_workers", d.num_workers), ("data.shuffle_buffer", d.shuffle_buffer),
                       ("data.group_by_length", d.group_by_length),
                       ("optim.weight_decay", o.weight_decay), ("data.doc_stride", d.doc_stride)]:
        need(value >= 0, f"{key} must be >= 0, got {value}")
    need(t.max_steps is None or t.max_steps >= 1, f"train.max_steps must be >= 1, got {t.max_steps}")
    need(t.epochs > 0, f"train.epochs must be > 0, got {t.epochs}")
    need(o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
    need(len(o.adam_betas) == 2 and all(0 <= b < 1 for b in o.adam_betas),
         f"optim.adam_betas must be two numbers in [0, 1), got {o.adam_betas}")
    need(0 <= o.warmup_ratio < 1, f"optim.warmup_ratio must be in [0, 1), got {o.warmup_ratio}")
    if o.schedule is None:  # resolved here, so config.yaml states it
        o.schedule = "constant" if cfg.stage == "prune" and cfg.prune.strategy == "l0" else "linear"
    need(o.schedule in SCHEDULES, f"optim.schedule must be one of {SCHEDULES}, got {o.schedule!r}")
    need(t.precision in PRECISIONS, f"train.precision must be one of {PRECISIONS}, got {t.precision!r}")
    need(cfg.distill.temperature > 0, f"distill.temperature must be > 0, got {cfg.distill.temperature}")
    for key in ("embedding_weight", "hidden_weight", "attention_weight", "hard_label_weight"):
        need(getattr(cfg.distill, key) >= 0, f"distill.{key} must be >= 0, got {getattr(cfg.distill, key)}")
    if cfg.stage == "prune":
        _validate_prune(cfg, need)
    need(d.teacher_cache is None or (cfg.stage == "task" and cfg.step == "prediction"),
         f"data.teacher_cache holds prediction-layer outputs: it serves `distill task --step prediction` only, "
         f"not stage {cfg.stage}" + (f" step {cfg.step}" if cfg.step else ""))
    if cfg.task is not None and _task_kind(cfg.task) == "qa":
        room = d.max_seq_length - d.max_query_length - 3
        need(d.doc_stride < room, f"data.doc_stride {d.doc_stride} must be < data.max_seq_length - "
                                  f"data.max_query_length - 3 = {room} (the context tokens of a window)")


def _validate_prune(cfg: Config, need) -> None:
    p = cfg.prune
    need(p.strategy in PRUNE_STRATEGIES, f"prune.strategy must be one of {PRUNE_STRATEGIES}, got {p.strategy!r}")
    need(p.scope in PRUNE_SCOPES, f"prune.scope must be one of {PRUNE_SCOPES}, got {p.scope!r}")
    targets = {k: getattr(p, k) for k in ("target_heads", "target_ffn")}
    if any(v is not None for v in targets.values()):
        need(p.strategy == "l0", f"prune.target_heads / target_ffn size an l0 run; strategy {p.strategy} takes "
                                 f"prune.keep_heads / keep_ffn")
        for key, value in targets.items():
            need(value is not None, f"prune.{key} is missing: give target_heads and target_ffn together "
                                    f"(1.0 keeps all of a kind)")
            need(0 < value <= 1, f"prune.{key} is the fraction kept: must be in (0, 1], got {value}")
        for key in ("keep_heads", "keep_ffn"):
            need(getattr(p, key) is None, f"prune.{key} and prune.target_* both size the model; give one "
                                          f"(with targets the expected open gates are kept)")
        need(p.scope == "global", "prune.target_* keep the expected open gates across layers (scope global)")
        need(0 <= p.target_warmup <= 1, f"prune.target_warmup is a fraction of the steps: must be in [0, 1], "
                                        f"got {p.target_warmup}")
        p.lagrangian_lr = 30 * cfg.optim.lr if p.lagrangian_lr is None else p.lagrangian_lr
        need(p.lagrangian_lr > 0, f"prune.lagrangian_lr must be > 0, got {p.lagrangian_lr}")
    else:
        p.keep_heads = 0.5 if p.keep_heads is None else p.keep_heads  # resolved here, so config.yaml states it
        p.keep_ffn = 0.5 if p.keep_ffn is None else p.keep_ffn
        need(0 < p.keep_heads <= 1, f"prune.keep_heads is the fraction kept: must be in (0, 1], got {p.keep_heads}")
        need(0 <= p.keep_ffn <= 1, f"prune.keep_ffn is the fraction kept: must be in [0, 1], got {p.keep_ffn}")
    need(p.gain_batches >= 1, f"prune.gain_batches must be >= 1, got {p.gain_batches}")
    need(p.l0_lambda >= 0, f"prune.l0_lambda must be >= 0, got {p.l0_lambda}")
    need(0 < p.l0_init_open < 1, f"prune.l0_init_open must be in (0, 1), got {p.l0_init_open}")


def differences(a: Config, b: Config) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
        return out

    fa, fb = flat(a.to_dict()), flat(b.to_dict())
    return sorted(k for k in fa if fa[k] != fb.get(k))

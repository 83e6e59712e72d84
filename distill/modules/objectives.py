"""What each stage trains and how its loss is computed (TinyBERT, Jiao et al., 2020, Sec. 3.2).

- ``finetune``: a teacher with a task head on gold labels (cross-entropy, or MSE for STS-B; for
  SQuAD, the mean of the start and end position cross-entropies, Devlin et al., 2019, Sec. 4.2).
- ``general``: encoder -> encoder on unlabelled text, intermediate layers only.
- ``task --step intermediate``: fine-tuned teacher -> student on the (augmented) task corpus,
  intermediate layers only.
- ``task --step prediction``: soft cross-entropy against the teacher's logits at a temperature
  (MSE for regression; for SQuAD over the start and end logits of each window), plus optionally
  the gold-label loss. With ``data.teacher_cache`` the logits come with each batch
  (``distill.training.teacher_cache``) and the teacher's weights are never loaded.

Each stage is a small ``nn.Module`` whose ``forward(batch, targets)`` returns every unweighted term
and the weighted ``loss``; the teacher stays outside it (frozen, run under ``no_grad``), so the
module is exactly what DistributedDataParallel wraps.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from distill.modules import losses
from distill.config import Config
from distill.modules.mapping import build_mapping, validate_mapping
from distill.modules.models import (Features, ModelError, Projector, build_student, features, load_architecture,
                           load_model)
from distill.modules.pruning import PRUNING_FILE, Gates, Lagrangian, compact, l0_density, read_mask

#: The batch key under which a teacher cache's collator hands over the teacher's outputs
#: (``data.teacher_cache``, ``distill.training.teacher_cache``): (B, C) logits, or (W, 2, T) span logits for QA.
TEACHER_TARGETS = "teacher_targets"


class FinetuneLoss(nn.Module):
    """Gold-label loss of a model with a task head."""

    def __init__(self, model: nn.Module, regression: bool):
        super().__init__()
        self.model, self.regression = model, regression

    def forward(self, batch: dict, targets=None) -> dict[str, torch.Tensor]:
        logits = features(self.model, batch, need_hidden=False).logits  # (B, C)
        term = _gold_loss(logits, batch["labels"], self.regression)
        return {"loss": term, "gold": term}


class QAFinetuneLoss(nn.Module):
    """Start/end position cross-entropy of a model with a QA head, averaged (BERT's SQuAD loss)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict, targets=None) -> dict[str, torch.Tensor]:
        start, end = _span_gold_losses(span_logits(self.model, batch), batch)
        return {"loss": (start + end) / 2, "start": start, "end": end}


def _span_gold_losses(spans: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of (W, 2, T) start/end logits against the gold positions (W,) each."""
    return (F.cross_entropy(spans[:, 0].float(), batch["start_positions"]),
            F.cross_entropy(spans[:, 1].float(), batch["end_positions"]))


def gold_loss_fn(task) -> Callable[[nn.Module, dict], torch.Tensor]:
    """``(model, batch) -> loss`` on gold labels: start/end cross-entropy for QA, else the task's
    classification (or regression) loss. The pruning gain scores differentiate this."""
    if task.kind == "qa":
        def qa(model, batch):
            return sum(_span_gold_losses(span_logits(model, batch), batch)) / 2
        return qa

    def classify(model, batch):
        return _gold_loss(features(model, batch, need_hidden=False).logits, batch["labels"],
                          task.kind == "regression")
    return classify


def _gold_loss(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    if regression:
        return F.mse_loss(logits.float().squeeze(-1), labels.float())
    return F.cross_entropy(logits.float(), labels)


class IntermediateLoss(nn.Module):
    """Embedding, hidden-state and attention-score terms over a layer mapping (summed over layers,
    as the authors do), each weighted by ``weights[feature]``."""

    def __init__(self, student: nn.Module, projector: nn.Module | None, mapping: list[dict], weights: dict[str, float]):
        super().__init__()
        self.student, self.projector = student, projector
        self.mapping, self.weights = mapping, weights
        self.score_layers = sorted({e["student_layer"] for e in mapping if e["feature"] == "attention"})

    def forward(self, batch: dict, teacher: Features) -> dict[str, torch.Tensor]:
        fs = features(self.student, batch, self.score_layers)
        mask = batch["attention_mask"]
        terms: dict[str, torch.Tensor] = {}
        for e in self.mapping:
            s, t, feature = e["student_layer"], e["teacher_layer"], e["feature"]
            fn = losses.FEATURE_LOSSES[e["loss"]]
            if feature == "attention":
                value = fn(fs.scores[s], teacher.scores[t], mask)
            else:
                value = fn(self.projector(fs.hidden[s]), teacher.hidden[t], mask)
            terms[feature] = terms.get(feature, 0.0) + value
        terms["loss"] = sum(self.weights[k] * v for k, v in terms.items())
        return terms


class QAPredictionLoss(nn.Module):
    """Soft cross-entropy of the student's start/end logits against the teacher's over each window's
    tokens (``losses.span_soft_cross_entropy``) + hard_weight x the gold start/end loss."""

    def __init__(self, student: nn.Module, temperature: float, hard_weight: float = 0.0):
        super().__init__()
        self.student, self.temperature, self.hard_weight = student, temperature, hard_weight

    def forward(self, batch: dict, teacher_spans: torch.Tensor) -> dict[str, torch.Tensor]:
        spans = span_logits(self.student, batch)  # (W, 2, T)
        soft = losses.span_soft_cross_entropy(spans, teacher_spans, batch["attention_mask"], self.temperature)
        terms = {"soft": soft, "loss": soft}
        if self.hard_weight:
            terms["gold"] = sum(_span_gold_losses(spans, batch)) / 2
            terms["loss"] = soft + self.hard_weight * terms["gold"]
        return terms


def span_logits(model: nn.Module, batch: dict) -> torch.Tensor:
    """(W, 2, T) start and end logits of a QA model."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    out = model(**inputs, return_dict=True)
    return torch.stack([out.start_logits, out.end_logits], dim=1)


class PredictionLoss(nn.Module):
    """Soft cross-entropy against teacher logits (MSE for regression) + hard_weight x gold loss."""

    def __init__(self, student: nn.Module, regression: bool, temperature: float, hard_weight: float = 0.0):
        super().__init__()
        self.student, self.regression = student, regression
        self.temperature, self.hard_weight = temperature, hard_weight

    def forward(self, batch: dict, teacher_logits: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = features(self.student, batch, need_hidden=False).logits  # (B, C)
        name = "mse" if self.regression else "soft_cross_entropy"
        soft = losses.PREDICTION_LOSSES[name](logits, teacher_logits, self.temperature)
        terms = {"soft": soft, "loss": soft}
        if self.hard_weight:
            terms["gold"] = _gold_loss(logits, batch["labels"], self.regression)
            terms["loss"] = soft + self.hard_weight * terms["gold"]
        return terms


@dataclass
class StageParts:
    """Everything the training loop needs from a stage.

    module: the trainable ``nn.Module`` (forward(batch, targets) -> terms); model: the HF model to
    save; teacher_targets: batch -> targets under no_grad (None for finetune); task: TaskSpec or None.
    """

    module: nn.Module
    model: nn.Module
    teacher: nn.Module | None
    teacher_targets: Callable[[dict], object] | None
    task: object | None
    evaluates: bool
    find_unused_parameters: bool


def _task(cfg: Config):
    from pipelines.tasks import get_task

    return None if cfg.task is None else get_task(cfg.task)


def _label_config(model: nn.Module, task) -> None:
    """Give the saved config readable labels (``id2label``) for plain-transformers users."""
    if task is not None and task.label_names is not None:
        model.config.id2label = dict(enumerate(task.label_names))
        model.config.label2id = {n: i for i, n in enumerate(task.label_names)}


def build(cfg: Config) -> StageParts:
    """Load or build the models of ``cfg``'s stage and check they fit together.

    Raises ``MappingError``/``ModelError`` (ValueErrors) for pairs that cannot be distilled.
    """
    task = _task(cfg)
    regression = task is not None and task.kind == "regression"
    num_labels = None if task is None else task.num_labels
    if cfg.stage == "finetune":
        if task.kind == "qa":
            model = load_model(cfg.model.teacher, "qa")
            module = QAFinetuneLoss(model)
        else:
            model = load_model(cfg.model.teacher, "classification", num_labels, regression)
            _label_config(model, task)
            module = FinetuneLoss(model, regression)
        _keep_pruned(model, cfg, cfg.model.teacher)  # fine-tuning a pruned model keeps it pruned
        return StageParts(module, model, None, None, task, True, False)

    head = "base" if cfg.stage == "general" else "qa" if task.kind == "qa" else "classification"
    if cfg.stage == "prune":
        return _l0_prune(cfg, task, head, regression)
    cached = cfg.data.teacher_cache is not None  # the teacher's outputs come with each batch
    teacher = load_architecture(cfg.model.teacher, head) if cached else load_model(cfg.model.teacher, head)
    if head != "base":
        trained_head(teacher, head, cfg.model.teacher)
    if head == "classification":
        _check_head(teacher, task, "teacher")
    student = build_student(cfg.model.student, teacher.config, head, num_labels if head != "qa" else None,
                            regression)
    if head == "classification":
        _check_head(student, task, "student")
        _label_config(student, task)
    teacher.eval().requires_grad_(False)
    _keep_pruned(student, cfg, cfg.model.student)

    if cfg.stage == "task" and cfg.step == "prediction":
        validate_mapping([], student.config, teacher.config)  # vocabulary check
        module, targets = _prediction(student, teacher, head == "qa", regression, cfg.distill)
        if cached:  # the teacher never runs: its outputs are read from the cache with the batch
            teacher, targets = None, _cached_targets
        return StageParts(module, student, teacher, targets, task, True, False)

    d = cfg.distill
    weights = {"embedding": d.embedding_weight, "hidden": d.hidden_weight, "attention": d.attention_weight}
    used = [f for f, w in weights.items() if w > 0]
    if not used:
        raise ModelError("all intermediate loss weights are 0 (distill.*_weight); nothing to train")
    layer_map = d.layer_map
    mapping = build_mapping(layer_map, student.config.num_hidden_layers, teacher.config.num_hidden_layers, used)
    validate_mapping(mapping, student.config, teacher.config)
    projector = None
    if "embedding" in used or "hidden" in used:
        projector = Projector(student.config.hidden_size, teacher.config.hidden_size)
    module = IntermediateLoss(student, projector, mapping, weights)
    teacher_layers = sorted({e["teacher_layer"] for e in mapping if e["feature"] == "attention"})

    def targets(batch):
        return features(teacher, batch, teacher_layers)

    return StageParts(module, student, teacher, targets, task, False, True)


def _prediction(student: nn.Module, teacher: nn.Module, qa: bool, regression: bool, d) -> tuple[nn.Module, Callable]:
    """The prediction-distillation loss of ``student`` and the teacher targets it takes: (W, 2, T)
    span logits for QA, else (B, C) logits."""
    if qa:
        return (QAPredictionLoss(student, d.temperature, d.hard_label_weight),
                lambda batch: span_logits(teacher, batch))
    return (PredictionLoss(student, regression, d.temperature, d.hard_label_weight),
            lambda batch: features(teacher, batch, need_hidden=False).logits)


def _cached_targets(batch: dict) -> torch.Tensor:
    """The teacher's outputs that ``distill.training.teacher_cache.TargetCollator`` put in the batch."""
    return batch.pop(TEACHER_TARGETS)


def _keep_pruned(model: nn.Module, cfg: Config, spec: str) -> None:
    """A model saved by ``distill prune`` (``pruning.json`` beside it) trains compacted, its pruned
    heads and units removed (the same function as holding them shut with gates, at the compact
    model's speed), and is saved expanded and pruned again (``train.save_pretrained``): as a
    student in the prediction step (recovery by distillation) or as the model of ``distill
    finetune`` (recovery on gold labels)."""
    mask = read_mask(spec) if os.path.isdir(spec) else None
    if mask is None:
        return
    if cfg.stage not in ("task", "finetune") or (cfg.stage == "task" and cfg.step != "prediction"):
        raise ModelError(f"student {spec} is pruned ({PRUNING_FILE}); it distils with `distill task --step "
                         f"prediction` (its pruned heads have no attention maps to match)")
    try:
        compact(model, mask)
    except ValueError as e:
        raise ModelError(f"model {spec}: its {PRUNING_FILE} was written for another model: {e}") from None


def _l0_prune(cfg: Config, task, head: str, regression: bool) -> StageParts:
    """``distill prune`` with strategy l0: hard-concrete gates on a frozen copy of ``model.teacher``,
    trained against the unpruned model's soft labels (the random and gain strategies need no
    training loop: ``distill.training.prune``)."""
    if cfg.prune.strategy != "l0":
        raise ValueError(f"prune.strategy {cfg.prune.strategy!r} does not train; run it with distill.training.prune.run")
    teacher = load_model(cfg.model.teacher, head, *(() if head == "qa" else (task.num_labels, regression)))
    trained_head(teacher, head, cfg.model.teacher)
    model = copy.deepcopy(teacher)  # the copy that runs under the gates; the teacher stays whole
    teacher.eval().requires_grad_(False)
    model.requires_grad_(False)
    p = cfg.prune
    gates = Gates.for_model(model, "l0", p.l0_init_open).attach(model)
    lagrangian = None
    if p.target_heads is not None:
        with torch.no_grad():
            start = l0_density(gates)
        lagrangian = Lagrangian([p.target_heads, p.target_ffn], start.tolist(), warmup=0)
    inner, targets = _prediction(model, teacher, head == "qa", regression, cfg.distill)
    module = L0PruneLoss(inner, gates, p.l0_lambda, lagrangian, p.target_warmup, p.lagrangian_lr)
    return StageParts(module, model, teacher, targets, task, False, False)


class L0PruneLoss(nn.Module):
    """The prediction loss of a frozen model under hard-concrete gates, plus a sparsity term: with a
    ``lagrangian``, its penalty driving the expected densities of open heads and FFN units to their
    targets; else ``l0_lambda`` x the mean of the two densities. Only the gates (and the multipliers)
    train; the model stays in eval mode (no dropout) while the gates sample."""

    def __init__(self, inner: nn.Module, gates: nn.Module, l0_lambda: float, lagrangian: nn.Module | None = None,
                 target_warmup: float = 0.5, lagrangian_lr: float | None = None):
        super().__init__()
        self.inner, self.gates, self.l0_lambda = inner, gates, l0_lambda
        self.lagrangian, self.target_warmup, self.lagrangian_lr = lagrangian, target_warmup, lagrangian_lr

    def param_groups(self, weight_decay: float) -> list[dict]:
        """The optimizer's groups: the gates at optim.lr, no weight decay (they are scores, not
        weights); the multipliers, if any, at their own ``lagrangian_lr``."""
        groups = [{"params": [p for p in self.gates.parameters() if p.requires_grad], "weight_decay": 0.0}]
        if self.lagrangian is not None:
            groups.append({"params": list(self.lagrangian.parameters()), "weight_decay": 0.0,
                           "lr": self.lagrangian_lr})
        return groups

    def set_total_forwards(self, n: int) -> None:
        """The number of training forwards of the run (steps x micro-batches): the targets move
        over the first ``target_warmup`` of them."""
        if self.lagrangian is not None:
            self.lagrangian.warmup = int(self.target_warmup * n)

    def train(self, mode: bool = True):
        super().train(mode)
        self.inner.eval()
        return self

    def forward(self, batch: dict, targets) -> dict[str, torch.Tensor]:
        terms = self.inner(batch, targets)
        density = l0_density(self.gates)  # (2,) heads, ffn
        if self.lagrangian is None:
            mean = density.mean()
            return terms | {"l0": mean, "loss": terms["loss"] + self.l0_lambda * mean}
        penalty, gap = self.lagrangian(density)
        if self.training:
            self.lagrangian.advance()
        return terms | {"lagrangian": penalty, "density_heads": density[0].detach(),
                        "density_ffn": density[1].detach(), "gap_heads": gap[0], "gap_ffn": gap[1],
                        "loss": terms["loss"] + penalty}


def trained_head(model: nn.Module, head: str, name: str) -> None:
    """Refuse a model whose task head was never trained (its saved architecture has none)."""
    kind = {"classification": "SequenceClassification", "qa": "QuestionAnswering"}[head]
    if not any(kind in a for a in (model.config.architectures or [])):
        raise ModelError(f"teacher {name} has no trained {head} head (architectures "
                         f"{model.config.architectures}); fine-tune it first: distill finetune")


def _check_head(model: nn.Module, task, role: str) -> None:
    n = getattr(model.config, "num_labels", None)
    if n != task.num_labels:
        raise ModelError(f"the {role} has {n} outputs but task {task.name} has {task.num_labels} labels; "
                         f"fine-tune a teacher on {task.name} first (distill finetune)")

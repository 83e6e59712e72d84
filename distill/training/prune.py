"""``distill prune``: choose the heads and FFN units of a fine-tuned model to remove, and save it pruned.

    distill prune --config configs/squad-cpu/prune.yaml model.teacher=out/squad-teacher/best \
        prune.strategy=gain prune.keep_heads=0.5 prune.keep_ffn=0.5 output_dir=out/prune-gain
    distill task --step prediction model.student=out/prune-gain/pruned \
        model.teacher=out/squad-teacher/best ...          # recover with distillation

``random`` and ``gain`` score every gate in one pass (``run``); ``l0`` trains hard-concrete gates
in the ordinary training loop (``L0Trainer``: checkpoints, resume, DDP) and ends in ``finish_l0``;
with ``prune.target_heads`` / ``target_ffn`` a Lagrangian drives the expected open gates to the
targets and the model keeps that many (``distill.modules.pruning.Lagrangian``). Every strategy
writes ``output_dir/pruned``: the model with its pruned weights zeroed (loads with plain
``from_pretrained``), ``pruning.json`` (kept heads and units), ``scores.safetensors`` (every gate's
score), and ``metrics.json`` (dev metrics of the pruned model before any recovery training, when
``data.dev`` is set, and the parameter count once compacted).
"""
from __future__ import annotations

import itertools
import json
import logging
import os

import torch
from torch import nn

from distill.config import Config, ConfigError
from distill.modules.pruning import (PruneMask, apply_mask, deterministic_open, effective_parameters, expected_counts,
                             gain_scores, random_scores, select)
from distill.devices import resolve_device
from distill.evaluation.evaluate import evaluate
from distill.training.trainer import Trainer, eval_rows, make_collator, save_pretrained, train_corpus
from distill.training.trainer import main as train_main

log = logging.getLogger(__name__)

OUTPUT = "pruned"


def run(cfg: Config) -> dict:
    """The random and gain strategies: score, select, save; returns the summary printed by the CLI."""
    if cfg.prune.strategy == "l0":
        raise ValueError("prune.strategy l0 trains gates: run it with distill.training.prune.main")
    from transformers import AutoTokenizer

    from distill.data.stream import loader, open_corpus
    from distill.modules.models import load_model
    from distill.modules.objectives import gold_loss_fn, trained_head
    from pipelines.tasks import get_task

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"prune.strategy {cfg.prune.strategy} is one pass in one process; run it without "
                          f"torchrun (only l0 trains, and runs data-parallel)")
    task = get_task(cfg.task)
    head = "qa" if task.kind == "qa" else "classification"
    model = load_model(cfg.model.teacher, head)
    trained_head(model, head, cfg.model.teacher)
    device = resolve_device(cfg.train.device, 0)
    model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.teacher)
    p = cfg.prune
    layers, heads, units = model.config.num_hidden_layers, model.config.num_attention_heads, \
        model.config.intermediate_size
    seen = 0
    if p.strategy == "random":
        head_scores, ffn_scores = random_scores(layers, heads, units, cfg.train.seed)
    elif p.strategy == "gain":
        corpus = open_corpus(train_corpus(cfg, task), task, cfg.data.original_only)
        stream = corpus.stream(seed=cfg.train.seed, shuffle=True, buffer_size=cfg.data.shuffle_buffer,
                               chunk_rows=cfg.data.chunk_rows, group_by_length=cfg.data.group_by_length)
        batches = loader(stream, make_collator(cfg, tokenizer, task, with_labels=True), cfg.train.batch_size,
                         cfg.data.num_workers)
        on_device = ({k: v.to(device) for k, v in b.items()} for b in itertools.islice(batches, p.gain_batches))
        head_scores, ffn_scores, seen = gain_scores(model, on_device, gold_loss_fn(task))
        if seen < p.gain_batches:
            log.warning("the corpus gave %d batches of the %d prune.gain_batches asked for", seen, p.gain_batches)
    mask = select(head_scores, ffn_scores, p.keep_heads, p.keep_ffn, p.scope)
    return save_result(cfg, model, tokenizer, mask, head_scores, ffn_scores, task, device,
                       extra={"gain_batches": seen} if p.strategy == "gain" else {})


def main(cfg: Config, resume: bool = False) -> dict:
    """``distill prune``: one pass for random and gain, the training loop for l0."""
    if cfg.prune.strategy != "l0":
        if resume:
            log.info("prune.strategy %s is one pass; --resume has nothing to resume", cfg.prune.strategy)
        return run(cfg)
    return train_main(cfg, resume, trainer_class=L0Trainer)


class L0Trainer(Trainer):
    """The training loop over hard-concrete gates; it ends by choosing and saving the mask."""

    def setup(self, resume: bool = False) -> None:
        super().setup(resume)
        self.module.set_total_forwards(self.max_steps * self.cfg.train.grad_accum)

    def finish(self, last_eval: dict) -> dict:
        return finish_l0(self)


def finish_l0(trainer: Trainer) -> dict:
    """After the l0 gates trained: keep the gates with the highest ``log_alpha`` (as many as asked,
    or with targets the expected number of open gates) and save (rank 0)."""
    if not trainer.is_main:
        return {}
    gates = trainer.module.gates
    head_scores, ffn_scores = (s.cpu() for s in gates.scores())
    p = trainer.cfg.prune
    with torch.no_grad():
        open_heads, open_ffn = gates.expected_open()
    extra = {"l0_steps": trainer.step, "l0_expected_open_heads": round(float(open_heads), 2),
             "l0_expected_open_ffn": round(float(open_ffn), 2)}
    if p.target_heads is not None:
        keep_heads, keep_ffn = expected_counts(gates)
        det_heads, det_ffn = deterministic_open(gates)
        total_heads, total_ffn = gates.layers * gates.heads, gates.layers * gates.units
        extra |= {"target_heads": p.target_heads, "target_ffn": p.target_ffn,
                  "reached_heads": round(keep_heads / total_heads, 4), "reached_ffn": round(keep_ffn / total_ffn, 4),
                  "deterministic_open_heads": det_heads, "deterministic_open_ffn": det_ffn}
    else:
        keep_heads, keep_ffn = p.keep_heads, p.keep_ffn
    gates.detach()  # the saved model is judged with its hard mask, not the soft gates
    mask = select(head_scores, ffn_scores, keep_heads, keep_ffn, p.scope)
    return save_result(trainer.cfg, trainer.parts.model, trainer.tokenizer, mask, head_scores, ffn_scores,
                       trainer.parts.task, trainer.device, extra)


def save_result(cfg: Config, model: nn.Module, tokenizer, mask: PruneMask, head_scores: torch.Tensor,
                ffn_scores: torch.Tensor, task, device, extra: dict) -> dict:
    """Zero the pruned weights, evaluate on ``data.dev`` when set, and write ``output_dir/pruned``."""
    from safetensors.torch import save_file

    full = sum(p.numel() for p in model.parameters())
    apply_mask(model, mask)
    model.pruning_mask = mask  # save_pretrained writes pruning.json
    summary = {"strategy": cfg.prune.strategy, **mask.summary(), "parameters_before": full,
               "parameters": effective_parameters(model, mask), **extra}
    rows = eval_rows(cfg, task)
    if rows is not None:
        collator = make_collator(cfg, tokenizer, task, with_labels=True)
        model.eval()
        with torch.no_grad():
            summary |= {f"dev_{k}": v for k, v in evaluate(model, rows, collator, task, cfg.train.eval_batch_size,
                                                           device).items()}
    out = os.path.join(cfg.output_dir, OUTPUT)
    os.makedirs(cfg.output_dir, exist_ok=True)
    with open(os.path.join(cfg.output_dir, "config.yaml"), "w", encoding="utf-8") as f:
        f.write(cfg.to_yaml())
    save_pretrained(model, tokenizer, cfg, out, extra=summary)
    save_file({"heads": head_scores.float().contiguous(), "ffn": ffn_scores.float().contiguous()},
              os.path.join(out, "scores.safetensors"))
    log.info("pruned model written to %s: %s", out, json.dumps(summary))
    return summary

"""The Trainer shared by every training stage: setup, train, save_checkpoint, cleanup.

One loop for finetune / general / task (intermediate, prediction): streamed batches, gradient
accumulation, autocast (bf16/fp16 on GPU), DDP under ``torchrun`` (gloo on CPU, nccl on GPU),
periodic evaluation with the task's GLUE metric (SQuAD F1 for QA), best-checkpoint keeping, a JSON-lines log,
TensorBoard when installed and a tqdm bar.

Layout of ``output_dir``::

    config.yaml  log.jsonl  tb/
    checkpoints/step-000200/   model/ (save_pretrained) projector.safetensors trainer_state.pt
                               rng-rank0.pt ... config.yaml
    best/    the best model by the dev metric (save_pretrained + tokenizer + config.yaml + metrics.json)
    final/   the model at the last step (same layout)

A checkpoint holds model, optimizer, scheduler, grad scaler, every rank's RNG and the data position
(batches drawn), so ``--resume`` continues a killed run and ends exactly where an uninterrupted run
would (tested bitwise on CPU).
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import time
from contextlib import nullcontext

import torch
import torch.distributed as dist
from torch import nn

from distill.config import Config, ConfigError, config_from_dict, differences
from distill.data.stream import Collator, loader, open_corpus
from distill.progress import Progress
from distill.evaluation.evaluate import evaluate
from distill.devices import barrier, distributed, resolve_device, resolve_precision
from distill.modules.objectives import StageParts, build

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE = "trainer_state.pt"
DONE = "COMPLETE"  # written last: a checkpoint without it was interrupted while saving


class ResumeError(ValueError):
    """A checkpoint that this run cannot continue from."""


# --------------------------------------------------------------------------------------------------
# Small helpers


def linear_schedule(total: int, warmup: int, decay: bool = True):
    """LR multiplier: linear warm-up over ``warmup`` steps, then linear decay to 0 at ``total``
    (``decay=False``: 1 after the warm-up)."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup)) if decay else 1.0
    return f


def total_steps(t, rows: int, world: int = 1) -> int:
    """The optimizer steps of a run of ``TrainConfig`` ``t`` over ``rows`` training rows:
    ``max_steps``, else ``epochs`` x steps per epoch (a last short batch counts as a step)."""
    per_step = t.batch_size * world * t.grad_accum
    return t.max_steps or max(1, math.ceil(t.epochs * max(1, math.ceil(rows / per_step))))


def _param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and LayerNorm weights (BERT's recipe)."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(module: nn.Module, o) -> torch.optim.Optimizer:
    """AdamW over ``module``'s trainable parameters (``OptimConfig`` ``o``), BERT's groups: no
    weight decay on biases and LayerNorm weights; a module's own ``param_groups`` when it has one."""
    groups = (module.param_groups(o.weight_decay) if hasattr(module, "param_groups")
              else _param_groups(module, o.weight_decay))
    return torch.optim.AdamW(groups, lr=o.lr, eps=o.adam_eps, betas=tuple(o.adam_betas), foreach=False)


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_pretrained(model: nn.Module, tokenizer, cfg: Config, path: str, extra: dict | None = None) -> None:
    """``path`` loadable with plain ``from_pretrained`` (safetensors), with the resolved config."""
    tmp = path.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    mask = getattr(model, "pruning_mask", None)
    if mask is not None:  # a pruned model: its pruned weights saved as zeros, with pruning.json
        from distill.modules.pruning import apply_mask, expand

        if getattr(model, "pruning_compacted", False):  # trained compact: a full-size copy to save
            model = expand(copy.deepcopy(model), mask)
        else:
            apply_mask(model, mask)
    model.save_pretrained(tmp, safe_serialization=True)
    if mask is not None:
        from distill.modules.pruning import effective_parameters, write_mask

        write_mask(mask, tmp, effective_parameters(model, mask))
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    with open(os.path.join(tmp, "config.yaml"), "w", encoding="utf-8") as f:
        f.write(cfg.to_yaml())
    if extra is not None:
        with open(os.path.join(tmp, "metrics.json"), "w", encoding="utf-8") as f:
            json.dump(extra, f, indent=2)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def latest_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint directory, or None."""
    root = os.path.join(output_dir, CHECKPOINTS)
    if not os.path.isdir(root):
        return None
    done = sorted(d for d in os.listdir(root) if d.startswith("step-") and os.path.exists(os.path.join(root, d, DONE)))
    return os.path.join(root, done[-1]) if done else None


# --------------------------------------------------------------------------------------------------
# Data of a stage


def train_corpus(cfg: Config, task, is_main: bool = True, world: int = 1) -> str:
    """``data.train``; a SQuAD JSON file is first written as a corpus under output_dir (rank 0)."""
    path = cfg.data.train
    if not (task is not None and task.kind == "qa" and os.path.isfile(path)):
        return path
    from distill.data.qa import json_to_corpus_dir, squad_json_corpus

    root = json_to_corpus_dir(cfg.output_dir)
    if is_main:
        squad_json_corpus(path, root)
    barrier(world)
    return root


def make_collator(cfg: Config, tokenizer, task, with_labels: bool):
    """Tokenises on the fly: a ``QACollator`` (windows, answer positions) for QA, else a ``Collator``
    over the task's text fields (``text`` for general distillation)."""
    d = cfg.data
    if task is not None and task.kind == "qa":
        from distill.data.qa import QACollator

        return QACollator(tokenizer, d.max_seq_length, d.doc_stride, d.max_query_length, d.pad_to_multiple_of)
    fields = ["text"] if task is None else list(task.text_fields)
    regression = task is not None and task.kind == "regression"
    return Collator(tokenizer, fields, d.max_seq_length, regression, with_labels, d.pad_to_multiple_of)


def eval_rows(cfg: Config, task) -> list[dict] | None:
    """The dev rows of ``data.dev`` (None when unset)."""
    if cfg.data.dev is None:
        return None
    if task.kind == "qa":
        from distill.data.qa import read_examples

        return read_examples(cfg.data.dev, task)
    from distill.data.glue import read_eval_rows

    return read_eval_rows(cfg.data.dev, task)


# --------------------------------------------------------------------------------------------------
# The trainer


class Trainer:
    """setup() -> train() -> cleanup(); ``main`` below is the whole program."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.rank, self.world, self.local_rank = distributed()
        self.device = resolve_device(cfg.train.device, self.local_rank)
        self.is_main = self.rank == 0
        self.step = 0
        self.batches_drawn = 0
        self.best: float | None = None
        self.log_file = None
        self.tb = None

    # ---- setup -----------------------------------------------------------------------------------

    def setup(self, resume: bool = False) -> None:
        from transformers import AutoTokenizer

        cfg = self.cfg
        checkpoint = latest_checkpoint(cfg.output_dir) if resume else None
        if resume and checkpoint is None:
            raise ResumeError(f"--resume: no complete checkpoint under {cfg.output_dir}/{CHECKPOINTS}")
        if checkpoint:
            self._check_same_config(checkpoint)
        torch.manual_seed(cfg.train.seed)
        self.parts: StageParts = build(cfg)  # models are checked against each other here
        task = self.parts.task
        self.corpus = open_corpus(train_corpus(cfg, task, self.is_main, self.world),
                                  task if cfg.stage != "general" else None, cfg.data.original_only)
        cache = None
        if cfg.data.teacher_cache is not None:  # the teacher's outputs stream beside the rows
            from distill.training.teacher_cache import TeacherCache

            cache = TeacherCache.open(cfg.data.teacher_cache)
            self.corpus = cache.attach(self.corpus, cfg, task)  # refuses a cache that does not match
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model.teacher)
        needs_labels = cfg.stage == "finetune" or (cfg.stage in ("task", "prune")
                                                    and cfg.distill.hard_label_weight > 0)
        self.collator = make_collator(cfg, self.tokenizer, task, needs_labels)
        self.eval_rows = eval_rows(cfg, task) if self.parts.evaluates else None

        t = cfg.train
        per_step = t.batch_size * self.world * t.grad_accum
        self.steps_per_epoch = max(1, math.ceil(self.corpus.total / per_step))
        self.max_steps = total_steps(t, self.corpus.total, self.world)

        module = self.parts.module.to(self.device)
        if self.parts.teacher is not None:
            self.parts.teacher.to(self.device)
        self.module = module
        self.ddp = module
        if self.world > 1:
            self.ddp = nn.parallel.DistributedDataParallel(
                module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.parts.find_unused_parameters)
        o = cfg.optim
        self.optimizer = make_optimizer(module, o)
        warmup = int(o.warmup_ratio * self.max_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, linear_schedule(self.max_steps, warmup,
                                                                                        o.schedule == "linear"))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=t.precision == "fp16")
        self.precision = resolve_precision(t.precision, self.device)
        if self.is_main:
            log.info("precision: %s (%s)", self.precision.name, self.precision.reason)
        dtype = self.precision.autocast_dtype
        self.autocast = torch.autocast(self.device.type, dtype=dtype) if dtype is not None else nullcontext()

        stream = self.corpus.stream(seed=t.seed, shuffle=True, buffer_size=cfg.data.shuffle_buffer,
                                    chunk_rows=cfg.data.chunk_rows, rank=self.rank, world_size=self.world,
                                    group_by_length=cfg.data.group_by_length)
        if checkpoint:
            self._load_checkpoint(checkpoint)
        stream.set_position(self.batches_drawn)
        collate = self.collator if cache is None else cache.collator(self.collator)
        self.loader = loader(stream, collate, t.batch_size, cfg.data.num_workers)
        self._open_logs(resume=checkpoint is not None)

    def _check_same_config(self, checkpoint: str) -> None:
        import yaml

        with open(os.path.join(checkpoint, "config.yaml"), encoding="utf-8") as f:
            saved = config_from_dict(yaml.safe_load(f))
        diff = differences(saved, self.cfg)
        if diff:
            raise ResumeError(f"--resume: the config differs from the checkpoint's in {', '.join(diff)}; "
                              f"resume with the same config (see {checkpoint}/config.yaml)")

    def _open_logs(self, resume: bool) -> None:
        if not self.is_main:
            return
        os.makedirs(self.cfg.output_dir, exist_ok=True)
        with open(os.path.join(self.cfg.output_dir, "config.yaml"), "w", encoding="utf-8") as f:
            f.write(self.cfg.to_yaml())
        path = os.path.join(self.cfg.output_dir, "log.jsonl")
        if resume and os.path.exists(path):
            _truncate_log(path, self.step)
        self.log_file = open(path, "a" if resume else "w", encoding="utf-8")
        if self.cfg.train.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # A resumed run redoes the steps after its checkpoint: TensorBoard hides those
                # (from purge_step on) that the killed run had logged, and keeps the checkpoint's own.
                self.tb = SummaryWriter(os.path.join(self.cfg.output_dir, "tb"),
                                        purge_step=self.step + 1 if resume else None)
            except ImportError:
                log.info("tensorboard not installed; logging to log.jsonl only")

    # ---- train -----------------------------------------------------------------------------------

    def train(self) -> dict:
        """Run to ``max_steps``; returns the last evaluation (empty when the stage does not evaluate)."""
        t = self.cfg.train
        label = f"{self.cfg.stage}" + (f" ({self.cfg.step})" if self.cfg.stage == "task" else "")
        show = None if t.progress is None else t.progress
        bar = Progress(self.max_steps, self.step, label=label, show=show if self.is_main else False,
                       every=t.progress_seconds)
        batches = iter(self.loader)
        self.module.train()
        sums: dict[str, float] = {}
        last_eval: dict = {}
        started, window_start = time.perf_counter(), self.step
        while self.step < self.max_steps:
            terms = self.train_step(batches)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            self.step += 1
            if self.step % t.log_every == 0 or self.step == self.max_steps:
                n = self.step - window_start
                rate = n / max(1e-9, time.perf_counter() - started)
                self._log({k: v / n for k, v in sums.items()} | {"steps_per_s": rate})
                bar.note(loss=f"{sums.get('loss', 0.0) / n:.4f}")
                sums, started, window_start = {}, time.perf_counter(), self.step
            bar.update(1)
            if t.eval_every and self.step % t.eval_every == 0 and self.step < self.max_steps:
                last_eval = self.evaluate()
                self._show_eval(bar, last_eval)
            if t.save_every and self.step % t.save_every == 0 and self.step < self.max_steps:
                self.save_checkpoint()
        bar.close()
        final_eval = self.evaluate()
        self._show_eval(bar, final_eval)
        last_eval = final_eval or last_eval
        self.save_checkpoint()
        last_eval = self.finish(last_eval)
        barrier(self.world)
        return last_eval

    def _show_eval(self, bar: Progress, result: dict) -> None:
        if result:
            figures = ", ".join(f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float) and k != "score")
            bar.line(f"step {self.step:,}: dev {figures or 'score ' + format(result['score'], '.4f')} "
                     f"(best score {self.best:.4f})")

    def finish(self, last_eval: dict) -> dict:
        """After the last step: write ``output_dir/final`` (rank 0); returns the run's result.
        Subclasses that end differently (``distill.training.prune``'s L0 trainer) override this."""
        if self.is_main:
            save_pretrained(self.parts.model, self.tokenizer, self.cfg, os.path.join(self.cfg.output_dir, "final"),
                            extra=last_eval or None)
        return last_eval

    def train_step(self, batches) -> dict[str, float]:
        """One optimizer step over ``grad_accum`` micro-batches; returns the mean of each term."""
        t = self.cfg.train
        totals: dict[str, float] = {}
        for micro in range(t.grad_accum):
            batch = _to(next(batches), self.device)
            self.batches_drawn += 1
            sync = micro == t.grad_accum - 1 or self.world == 1
            with (nullcontext() if sync else self.ddp.no_sync()), self.autocast:
                targets = None
                if self.parts.teacher_targets is not None:
                    with torch.no_grad():
                        targets = self.parts.teacher_targets(batch)
                terms = self.ddp(batch, targets)
                self.scaler.scale(terms["loss"] / t.grad_accum).backward()
            for k, v in terms.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach()) / t.grad_accum
        self._optimizer_step()
        return totals

    def _optimizer_step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        if self.cfg.optim.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.module.parameters(), self.cfg.optim.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def evaluate(self) -> dict:
        """Dev metrics on rank 0 (others wait); keeps ``best/`` when the score improves."""
        if self.eval_rows is None:
            return {}
        result = {}
        if self.is_main:
            result = evaluate(self.parts.model, self.eval_rows, self.collator_for_eval(), self.parts.task,
                              self.cfg.train.eval_batch_size, self.device)
            improved = self.best is None or result["score"] > self.best
            if improved:
                self.best = result["score"]
                save_pretrained(self.parts.model, self.tokenizer, self.cfg,
                                os.path.join(self.cfg.output_dir, "best"), extra={"step": self.step, **result})
            self._log({f"eval/{k}": v for k, v in result.items()} | {"best": self.best})
        barrier(self.world)
        if self.world > 1:  # every rank keeps the same best score, so checkpoints agree
            box = [self.best]
            dist.broadcast_object_list(box, src=0)
            self.best = box[0]
        return result

    def collator_for_eval(self) -> Collator:
        c = self.collator
        if not isinstance(c, Collator):  # QA: the same windows, positions included
            return c
        return Collator(c.tokenizer, c.text_fields, c.max_length, c.regression, True, c.pad_to_multiple_of)

    def _log(self, record: dict) -> None:
        if not self.is_main:
            return
        record = {"step": self.step, "lr": self.scheduler.get_last_lr()[0],
                  "epoch": self.batches_drawn * self.cfg.train.batch_size * self.world / self.corpus.total, **record}
        self.log_file.write(json.dumps(record) + "\n")
        self.log_file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k if "/" in k else f"train/{k}", v, self.step)

    # ---- checkpoints -------------------------------------------------------------------------------

    def save_checkpoint(self) -> str:
        """Write ``checkpoints/step-N`` (all ranks write their RNG; rank 0 the rest), then rotate."""
        from safetensors.torch import save_file

        path = os.path.join(self.cfg.output_dir, CHECKPOINTS, f"step-{self.step:06d}")
        os.makedirs(path, exist_ok=True)
        torch.save(_rng_state(), os.path.join(path, f"rng-rank{self.rank}.pt"))
        if self.is_main:
            save_pretrained(self.parts.model, self.tokenizer, self.cfg, os.path.join(path, "model"))
            for name, sub in self._extras().items():
                save_file(sub.state_dict(), os.path.join(path, f"{name}.safetensors"))
            torch.save({"step": self.step, "batches_drawn": self.batches_drawn, "best": self.best,
                        "world_size": self.world, "num_workers": self.cfg.data.num_workers,
                        "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                        "scaler": self.scaler.state_dict()}, os.path.join(path, STATE))
            with open(os.path.join(path, "config.yaml"), "w", encoding="utf-8") as f:
                f.write(self.cfg.to_yaml())
        barrier(self.world)
        if self.is_main:
            open(os.path.join(path, DONE), "w").close()
            self._rotate()
        barrier(self.world)
        return path

    def _extras(self) -> dict[str, nn.Module]:
        """Trained parts outside the saved model: the hidden-state projector, pruning gates and their
        Lagrange multipliers."""
        return {name: sub for name in ("projector", "gates", "lagrangian") if (sub := getattr(self.module, name, None)) is not None}

    def _rotate(self) -> None:
        root = os.path.join(self.cfg.output_dir, CHECKPOINTS)
        done = sorted(d for d in os.listdir(root) if os.path.exists(os.path.join(root, d, DONE)))
        for old in done[:-self.cfg.train.keep_checkpoints]:
            shutil.rmtree(os.path.join(root, old), ignore_errors=True)

    def _load_checkpoint(self, path: str) -> None:
        from safetensors.torch import load_file

        state = torch.load(os.path.join(path, STATE), map_location="cpu", weights_only=True)
        if state["world_size"] != self.world:
            raise ResumeError(f"{path} was written by {state['world_size']} processes, this run has {self.world}; "
                              f"the data split would differ")
        model_state = load_file(os.path.join(path, "model", "model.safetensors"), device=str(self.device))
        if getattr(self.parts.model, "pruning_compacted", False):  # saved full size, trains compact
            from distill.modules.pruning import compact_state_dict

            model_state = compact_state_dict(self.parts.model, self.parts.model.pruning_mask, model_state)
        missing, unexpected = self.parts.model.load_state_dict(model_state, strict=False)
        tied = set(getattr(self.parts.model, "all_tied_weights_keys", {}) or {})
        if unexpected or set(missing) - tied:
            raise ResumeError(f"{path}: model weights do not match (missing {missing}, unexpected {unexpected})")
        for name, sub in self._extras().items():
            sub.load_state_dict(load_file(os.path.join(path, f"{name}.safetensors"), device=str(self.device)))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.batches_drawn, self.best = state["step"], state["batches_drawn"], state["best"]
        rng = os.path.join(path, f"rng-rank{self.rank}.pt")
        _set_rng_state(torch.load(rng, map_location="cpu", weights_only=True))
        log.info("resumed from %s at step %d", path, self.step)

    # ---- cleanup -----------------------------------------------------------------------------------

    def cleanup(self) -> None:
        if self.log_file is not None:
            self.log_file.close()
        if self.tb is not None:
            self.tb.close()
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _truncate_log(path: str, step: int) -> None:
    """Drop log lines written after ``step`` by the run being resumed (they will be redone)."""
    with open(path, encoding="utf-8") as f:
        keep = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(keep)


def main(cfg: Config, resume: bool = False, trainer_class: type[Trainer] = Trainer) -> dict:
    """Run ``cfg``'s stage to the end (``distill prune`` runs through ``distill.training.prune.main``)."""
    if cfg.stage == "prune" and trainer_class is Trainer:
        raise ConfigError("stage prune runs through distill.training.prune.main (it ends by choosing the mask)")
    trainer = trainer_class(cfg)
    try:
        trainer.setup(resume)
        return trainer.train()
    finally:
        trainer.cleanup()

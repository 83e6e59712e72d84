"""``distill`` command line: TinyBERT's two-stage distillation over streamed shards.

    distill shard-text --output corpus/wiki wikitext-2.valid.tokens.txt
    distill finetune --config configs/sst2-teacher.yaml
    distill general  --config configs/general.yaml train.max_steps=2000
    distill task --step intermediate --config configs/sst2-task.yaml
    distill task --step prediction   --config configs/sst2-task.yaml model.student=out/int/final
    distill eval --model out/pred/best --task sst2 --data glue/SST-2/dev.tsv
    distill prune --config configs/squad-cpu/prune.yaml prune.strategy=gain output_dir=out/prune
    distill finetune --config configs/squad-cpu/teacher.yaml data.train=train.json data.dev=dev.json
    distill eval --model out/squad-teacher/best --task squad --data dev-v2.0.json
    distill cache-teacher --teacher out/teacher/best --corpus corpora/sst2 --output corpora/sst2-teacher
    distill task --step prediction --config configs/sst2-task.yaml data.teacher_cache=corpora/sst2-teacher

Every training command takes ``--config FILE`` and ``KEY=VALUE`` overrides (``train.lr=1e-4``);
unknown keys are errors. ``--resume`` continues from the newest checkpoint in ``output_dir``.
Under ``torchrun --nproc_per_node N`` the same commands run data-parallel.
"""
from __future__ import annotations

import json
import logging
import os

import click

from distill.config import ConfigError, load_config


def _run(stage: str, config: str | None, overrides: tuple[str, ...], resume: bool, step: str | None = None) -> None:
    from distill.training import prune, trainer
    from distill.modules.mapping import MappingError
    from distill.modules.models import ModelError
    from distill.data.shards import CorpusError

    try:
        cfg = load_config(config, overrides, stage=stage, step=step)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    try:
        result = (prune.main if stage == "prune" else trainer.main)(cfg, resume=resume)
    except (CorpusError, MappingError, ModelError, trainer.ResumeError, ConfigError) as e:
        raise click.ClickException(str(e)) from None
    if result:
        click.echo(json.dumps(result))


def _training_command(f):
    f = click.argument("overrides", nargs=-1)(f)
    f = click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in output_dir.")(f)
    f = click.option("--config", "config", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="YAML config (sections: model, data, optim, train, distill).")(f)
    return f


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log details.")
def main(verbose: bool) -> None:
    """TinyBERT distillation (Jiao et al. 2020): fine-tune teachers, general and task distillation."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@_training_command
def finetune(config, resume, overrides) -> None:
    """Fine-tune a teacher on a GLUE task corpus (gold labels), or on SQuAD (corpus or JSON file)."""
    _run("finetune", config, overrides, resume)


@main.command()
@_training_command
def general(config, resume, overrides) -> None:
    """General distillation: teacher encoder -> student on unlabelled text shards."""
    _run("general", config, overrides, resume)


@main.command()
@click.option("--step", type=click.Choice(["intermediate", "prediction"]), required=True,
              help="intermediate: embeddings, hidden states, attention; prediction: soft labels.")
@_training_command
def task(step, config, resume, overrides) -> None:
    """Task distillation on (augmented) task shards."""
    _run("task", config, overrides, resume, step=step)


@main.command()
@_training_command
def prune(config, resume, overrides) -> None:
    """Structured pruning (McCarley et al. 2019): remove attention heads and FFN units of a fine-tuned
    model (model.teacher) chosen by prune.strategy (random, gain or l0); writes output_dir/pruned.
    Recover with `distill task --step prediction model.student=OUTPUT_DIR/pruned`."""
    _run("prune", config, overrides, resume)


@main.command(name="eval")
@click.option("--model", "model_path", required=True, help="A checkpoint directory or hub name with a task head.")
@click.option("--task", "task_name", required=True, help="GLUE task (sst2, cola, mnli, stsb...) or squad.")
@click.option("--data", required=True, help="A GLUE TSV, a GLUE task directory, or a corpus directory; "
                                            "for squad a SQuAD JSON file or corpus.")
@click.option("--split", default="dev", show_default=True, help="The TSV read from a GLUE task directory.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--max-seq-length", type=int, default=None,
              help="Default: the checkpoint's training setting, else 128 (384 for squad).")
@click.option("--device", default="auto", show_default=True)
@click.option("--doc-stride", type=int, default=None,
              help="squad: tokens shared by consecutive context windows (default: as trained, else 128).")
@click.option("--max-query-length", type=int, default=None,
              help="squad: question tokens kept (default: as trained, else 64).")
@click.option("--null-threshold", type=float, default=0.0, show_default=True,
              help="squad 2.0: answer \"\" when the null score beats the best span by more than this.")
@click.option("--tune-data", default=None,
              help="squad 2.0: other questions (held-out training questions, never the scored ones) on which "
                   "the best null threshold is chosen; reported as f1_tuned beside f1 at --null-threshold.")
def eval_(model_path, task_name, data, split, batch_size, max_seq_length, device, doc_stride, max_query_length,
          null_threshold, tune_data) -> None:
    """Evaluate a checkpoint with the task's metric (GLUE, or SQuAD EM/F1); prints one JSON object."""
    from distill.evaluation.evaluate import evaluate_checkpoint
    from distill.modules.models import ModelError
    from distill.data.shards import CorpusError

    try:
        result = evaluate_checkpoint(model_path, task_name, data, split, batch_size, max_seq_length, device,
                                     doc_stride, max_query_length, null_threshold, tune_data)
    except (CorpusError, ModelError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(result))


@main.command(name="cache-teacher")
@click.option("--teacher", required=True, type=click.Path(exists=True, file_okay=False),
              help="The fine-tuned teacher directory (classification or QA head) of the runs the cache serves.")
@click.option("--corpus", required=True, type=click.Path(exists=True),
              help="A corpus directory; for squad also a SQuAD JSON file (written as a corpus under OUTPUT/corpus).")
@click.option("--output", required=True, type=click.Path(file_okay=False), help="The cache directory to write.")
@click.option("--max-seq-length", type=int, default=None,
              help="As data.max_seq_length of the runs (default 128, 384 for squad).")
@click.option("--doc-stride", type=int, default=128, show_default=True, help="squad: as data.doc_stride.")
@click.option("--max-query-length", type=int, default=64, show_default=True, help="squad: as data.max_query_length.")
@click.option("--batch-size", type=int, default=32, show_default=True,
              help="Rows (squad: windows) per teacher forward; changes only float rounding.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="Default: cuda when available.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16"]), default="float32", show_default=True,
              help="The teacher's precision (bfloat16: autocast, as train.precision=bf16) and the stored outputs'.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
def cache_teacher(teacher, corpus, output, max_seq_length, doc_stride, max_query_length, batch_size, device, dtype,
                  progress) -> None:
    """Run the teacher once over a corpus and store its prediction-layer outputs (GLUE logits, SQuAD
    start/end logits per window) beside it, for `distill task --step prediction data.teacher_cache=OUTPUT`.
    Resumable by shard; under `torchrun --nproc_per_node N` the processes share the shards."""
    import os

    from distill.modules.models import ModelError
    from distill.data.shards import CorpusError
    from distill.training.teacher_cache import build

    rank, world, barrier = 0, 1, (lambda: None)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun: one process per device, shards split
        import torch
        import torch.distributed as dist

        dist.init_process_group("nccl" if device != "cpu" and torch.cuda.is_available() else "gloo")
        rank, world, barrier = dist.get_rank(), dist.get_world_size(), dist.barrier
        if device != "cpu" and torch.cuda.is_available():
            device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    try:
        manifest = build(teacher, corpus, output, max_seq_length, doc_stride, max_query_length, batch_size, device,
                         dtype, rank, world, barrier, progress)
    except (CorpusError, ModelError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    if rank == 0:  # "built": the shards this process computed
        click.echo(json.dumps({"output": output, "task": manifest["task"], "rows": manifest["rows"],
                               "shards": len(manifest["shards"]), "built": manifest["built"],
                               "bytes": manifest["bytes"], "bytes_per_row": manifest["bytes_per_row"],
                               "fill_fraction": round(manifest["fill_fraction"], 3),
                               "seconds": round(manifest["seconds"], 2)}))


@main.command(name="shard-text")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--output", required=True, type=click.Path(file_okay=False), help="Corpus directory to write.")
@click.option("--rows-per-shard", type=int, default=100_000, show_default=True)
@click.option("--min-chars", type=int, default=20, show_default=True, help="Drop shorter lines.")
@click.option("--skip-headings/--keep-headings", default=True, show_default=True,
              help="Drop WikiText headings (' = Title = ').")
def shard_text(inputs, output, rows_per_shard, min_chars, skip_headings) -> None:
    """Turn plain text files (one text per line) into unlabelled shards for general distillation."""
    from distill.data.shards import CorpusError, write_text_shards

    try:
        m = write_text_shards(inputs, output, rows_per_shard, min_chars, skip_headings)
    except CorpusError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps({"output": output, "rows": m.total_rows, "shards": len(m.files)}))


@main.command(name="export")
@click.argument("model")
@click.option("--output", required=True, type=click.Path(file_okay=False), help="Directory to write (ONNX, tokenizer, "
                                                                                "config.json, export.json).")
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="Also write model_quantized.onnx (ONNX Runtime dynamic int8 quantization).")
@click.option("--overwrite", is_flag=True, help="Replace --output if it exists.")
def export_(model, output, quantize, overwrite) -> None:
    """Export MODEL (a checkpoint with a task head: GLUE classifier or regressor, SQuAD QA, pruned
    ones compact) to ONNX with dynamic batch and sequence axes, to serve with ONNX Runtime alone."""
    from distill.export import ExportError, export

    try:
        manifest = export(model, output, quantize, overwrite)
    except ExportError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps({"output": output} | {k: manifest[k] for k in ("task", "files", "file_mb", "parameters",
                                                                      "pruned", "check")}))


def _recipe_list() -> str:
    from distill.run.recipes import shipped

    return "\n".join(f"  {name}" for name in shipped())


class _RunCommand(click.Command):
    def format_epilog(self, ctx, formatter) -> None:  # the shipped recipes, read from the package
        formatter.write("\nShipped recipes (run by name, or give a path; `distill cp NAME DEST` copies one):\n")
        formatter.write(_recipe_list() + "\n")


@main.command(name="run", cls=_RunCommand)
@click.argument("recipe")
@click.argument("overrides", nargs=-1)
@click.option("--output", "-o", default=None, help="Output folder: report.md/json/png, models/, stages/ "
                                                    "(default: out/RECIPE-NAME; also output_dir=OUT).")
@click.option("--store", default=None, help="Where stage folders go (default OUTPUT/stages); runs that share a "
                                            "store share every stage they compute alike.")
@click.option("--dry-run", is_flag=True, help="Print the plan (each stage: reused, resumed or to run, its folder, "
                                              "its steps) and stop.")
def run_recipe(recipe, overrides, output, store, dry_run) -> None:
    """Run RECIPE (a shipped recipe's name or a YAML file) from task data to an evaluated, compressed
    model. OVERRIDES are KEY=VALUE: STAGE.KEY=V (prediction.optim.lr=2e-5, corpus.n_aug=4,
    teacher.given=PATH) or data.train=PATH. Finished stages are reused, interrupted ones resume."""
    import time

    from distill.run.recipes import RecipeError, load
    from distill.run.plan import StageError, make_grid, make_plan, print_plan, run_grid, run_plan

    rest = []
    for item in overrides:  # output_dir=OUT is the --output flag
        if item.split("=", 1)[0].strip() == "output_dir":
            output = item.split("=", 1)[1]
        else:
            rest.append(item)
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("distill.training.trainer").setLevel(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # each stage loads models: their load reports are noise here
    hf_logging.disable_progress_bar()
    try:
        r = load(recipe, rest)
        output = output or os.path.join("out", r.name.replace("/", "-"))
        t0 = time.perf_counter()
        if r.cells:  # a grid: every cell's plan over one store
            plans = make_grid(r, output, store)
            for i, (cell, plan) in enumerate(plans, 1):
                click.echo(f"== cell {i}/{len(plans)}: {cell.name}")
                print_plan(plan)
        else:
            plan = make_plan(r, output, store)
            print_plan(plan)
        click.echo(f"(planned in {time.perf_counter() - t0:.1f} s)")
        if dry_run:
            return
        if r.cells:
            run_grid(r, plans, output)
        else:
            run_plan(plan)
    except RecipeError as e:
        raise click.UsageError(str(e)) from None
    except StageError as e:
        raise click.ClickException(str(e)) from None


@main.command(name="cp")
@click.argument("recipe")
@click.argument("dest", type=click.Path())
def cp_recipe(recipe, dest) -> None:
    """Copy a shipped recipe (or any recipe file) to DEST to edit; run it with `distill run DEST`."""
    from distill.run.recipes import RecipeError, copy_recipe

    try:
        click.echo(str(copy_recipe(recipe, dest)))
    except RecipeError as e:
        raise click.UsageError(str(e)) from None


@main.command(name="ls")
def ls_recipes() -> None:
    """List the shipped recipes, one per line with its description."""
    from distill.run.recipes import load_raw, shipped

    for name in shipped():
        description = (load_raw(name).get("description") or "").strip()
        click.echo(f"{name:<24} {description.splitlines()[0] if description else ''}")


if __name__ == "__main__":
    main()

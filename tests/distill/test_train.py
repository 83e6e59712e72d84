"""The stages end to end on tiny models, in-process through the CLI (a few steps each)."""
import json
import os

import pytest
import torch
import yaml
from click.testing import CliRunner

from distill.cli import main
from tests.numerics import not_exact


def run_cli(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def common(out, **extra):
    items = {"output_dir": out, "train.batch_size": 8, "train.log_every": 1, "train.save_every": 0,
             "train.tensorboard": False, "data.shuffle_buffer": 16, "data.chunk_rows": 10, **extra}
    return [f"{k}={v}" for k, v in items.items()]


def kill_then_resume(monkeypatch, args, out, killed_after_step: int) -> None:
    """Run ``distill ARGS`` into ``out``, kill it during the step after ``killed_after_step`` (an
    exception out of the training loop), check it left no output, then run it with ``--resume``."""
    from distill.training import trainer

    original = trainer.Trainer.train_step

    def dies(self, batches):
        if self.step == killed_after_step:
            raise RuntimeError("killed")
        return original(self, batches)

    monkeypatch.setattr(trainer.Trainer, "train_step", dies)
    with pytest.raises(RuntimeError, match="killed"):
        run_cli(*args, ok=False)
    monkeypatch.setattr(trainer.Trainer, "train_step", original)
    assert not any(os.path.exists(os.path.join(out, d)) for d in ("final", "best", "pruned"))
    run_cli(*args, "--resume")


def read_log(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_finetune_evaluates_and_keeps_the_best(tmp_path, encoder_dir, sst2_corpus, dev_tsv):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "teacher"
    result = run_cli("finetune", *common(out, task="sst2", **{"model.teacher": encoder_dir, "data.train": sst2_corpus,
                                                               "data.dev": dev_tsv, "train.max_steps": 4,
                                                               "train.eval_every": 2, "optim.lr": 1e-3}))
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(metrics) == {"accuracy", "score"}
    for sub in ("best", "final"):
        model = AutoModelForSequenceClassification.from_pretrained(out / sub)
        assert model.config.num_labels == 2 and model.config.id2label == {0: "0", 1: "1"}
        assert os.path.exists(out / sub / "model.safetensors") and os.path.exists(out / sub / "config.yaml")
    assert json.load(open(out / "best" / "metrics.json"))["step"] in (2, 4)
    log = read_log(out)
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert sum("eval/accuracy" in r for r in log) == 2
    saved = yaml.safe_load(open(out / "config.yaml"))
    assert saved["stage"] == "finetune" and saved["train"]["max_steps"] == 4


def test_general_then_task_distillation(tmp_path, encoder_dir, teacher_dir, student_config_file, text_corpus,
                                        sst2_corpus, dev_tsv):
    from transformers import AutoModel, AutoModelForSequenceClassification

    general = tmp_path / "general"
    run_cli("general", *common(general, **{"model.teacher": encoder_dir, "model.student": student_config_file,
                                           "data.train": text_corpus, "train.max_steps": 3}))
    student = AutoModel.from_pretrained(general / "final")
    assert student.config.num_hidden_layers == 2 and student.config.hidden_size == 16
    log = read_log(general)
    assert {"embedding", "hidden", "attention", "loss"} <= set(log[0])

    inter = tmp_path / "inter"
    run_cli("task", "--step", "intermediate", *common(inter, task="sst2", **{
        "model.teacher": teacher_dir, "model.student": general / "final", "data.train": sst2_corpus,
        "train.max_steps": 2, "distill.layer_map": "[2, 4]"}))
    assert not os.path.exists(inter / "best")  # the intermediate step does not evaluate

    pred = tmp_path / "pred"
    result = run_cli("task", "--step", "prediction", *common(pred, task="sst2", **{
        "model.teacher": teacher_dir, "model.student": inter / "final", "data.train": sst2_corpus,
        "data.dev": dev_tsv, "train.max_steps": 2, "train.eval_every": 1, "distill.temperature": 2.0,
        "distill.hard_label_weight": 0.5}))
    assert "accuracy" in json.loads(result.stdout.strip().splitlines()[-1])
    model = AutoModelForSequenceClassification.from_pretrained(pred / "best")
    assert model.config.num_hidden_layers == 2
    assert {"soft", "gold", "loss"} <= set(read_log(pred)[0])

    result = run_cli("eval", "--model", pred / "best", "--task", "sst2", "--data", dev_tsv)
    metrics = json.loads(result.stdout)
    assert metrics["rows"] == 24 and 0 <= metrics["accuracy"] <= 1 and metrics["parameters"] > 0


def _intermediate_args(out, teacher_dir, student_config_file, sst2_corpus, **extra):
    return ["task", "--step", "intermediate", *common(out, task="sst2", **{
        "model.teacher": teacher_dir, "model.student": student_config_file, "data.train": sst2_corpus,
        "train.max_steps": 6, "train.save_every": 2, "train.grad_accum": 2, "train.batch_size": 4,
        "train.keep_checkpoints": 5, **extra})]


@pytest.mark.parametrize("workers, group", [(0, 0), (2, 0), (0, 3)])
def test_resume_ends_where_an_uninterrupted_run_would(tmp_path, monkeypatch, teacher_dir, student_config_file,
                                                      sst2_corpus, workers, group):
    from safetensors.torch import load_file

    extra = {"data.num_workers": workers, "data.group_by_length": group}
    full, killed = tmp_path / "full", tmp_path / "killed"
    run_cli(*_intermediate_args(full, teacher_dir, student_config_file, sst2_corpus, **extra))

    # killed after the step-4 checkpoint, during step 5
    kill_then_resume(monkeypatch, _intermediate_args(killed, teacher_dir, student_config_file, sst2_corpus, **extra),
                     killed, killed_after_step=4)

    a, b = load_file(full / "final" / "model.safetensors"), load_file(killed / "final" / "model.safetensors")
    # Exact by construction: the resumed run restores weights, optimizer, RNG and data position, so it
    # runs the uninterrupted run's remaining steps operation for operation, on the same tensors.
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), not_exact(f"{k} of the resumed and the uninterrupted run")
    last = sorted(os.listdir(full / "checkpoints"))[-1]
    pa_, pb = (load_file(d / "checkpoints" / last / "projector.safetensors") for d in (full, killed))
    assert all(torch.equal(pa_[k], pb[k]) for k in pa_)
    strip = lambda log: [{k: v for k, v in r.items() if k != "steps_per_s"} for r in log]
    assert strip(read_log(full)) == strip(read_log(killed))


def test_tensorboard_holds_the_logged_scalars_once_each_after_a_resume(tmp_path, monkeypatch, teacher_dir,
                                                                      student_config_file, sst2_corpus):
    """TensorBoard gets every scalar of log.jsonl, and a resumed run replaces (purges) the steps it
    redoes instead of drawing them twice."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    args = _intermediate_args(out, teacher_dir, student_config_file, sst2_corpus, **{"train.tensorboard": True})
    # checkpoints every 2 steps: killed during step 6, so steps 1-5 were logged, step 5 past the
    # step-4 checkpoint; the resumed run redoes 5 and 6
    kill_then_resume(monkeypatch, args, out, killed_after_step=5)

    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    log = read_log(out)
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "attention", "hidden", "embedding", "lr"):
        scalars = events.Scalars(f"train/{key}")
        assert [s.step for s in scalars] == [1, 2, 3, 4, 5, 6], key
        assert [s.value for s in scalars] == pytest.approx([r[key] for r in log], rel=1e-6), key


def test_resume_refuses_a_different_config(tmp_path, teacher_dir, student_config_file, sst2_corpus):
    out = tmp_path / "run"
    run_cli(*_intermediate_args(out, teacher_dir, student_config_file, sst2_corpus, **{"train.max_steps": 2}))
    result = run_cli(*_intermediate_args(out, teacher_dir, student_config_file, sst2_corpus,
                                         **{"train.max_steps": 2, "optim.lr": 0.1}), "--resume", ok=False)
    assert result.exit_code != 0 and "differs from the checkpoint's in optim.lr" in result.output
    result = run_cli(*_intermediate_args(tmp_path / "none", teacher_dir, student_config_file, sst2_corpus),
                     "--resume", ok=False)
    assert "no complete checkpoint" in result.output


def test_config_file_and_unknown_keys(tmp_path, teacher_dir, student_config_file, sst2_corpus):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"task": "sst2", "model": {"teacher": str(teacher_dir)},
                                   "data": {"train": str(sst2_corpus)}, "train": {"max_step": 3}}))
    result = run_cli("task", "--step", "prediction", "--config", cfg, ok=False)
    assert result.exit_code == 2 and "unknown config keys: train.max_step" in result.output
    result = run_cli("task", "--step", "prediction", "--config", cfg, "train.max_step=3", "optim.lrr=1", ok=False)
    assert "optim.lrr" in result.output
    result = run_cli("task", "--step", "prediction", "train.batch_size=abc", ok=False)
    assert "train.batch_size: expected int" in result.output


@pytest.mark.parametrize("extra, message", [
    ({"distill.layer_map": "[1, 2, 3]"}, "has 3 entries; the student has 2"),
    ({"model.student": "tinybert-9"}, "unknown student 'tinybert-9'"),
])
def test_unmappable_pairs_are_refused(tmp_path, teacher_dir, student_config_file, sst2_corpus, extra, message):
    result = run_cli(*_intermediate_args(tmp_path / "x", teacher_dir, student_config_file, sst2_corpus, **extra), ok=False)
    assert result.exit_code == 1 and message in result.output


def test_head_count_mismatch_is_refused(tmp_path, teacher_dir, sst2_corpus):
    from tests.distill.conftest import tiny_config

    cfg = tmp_path / "student.json"
    cfg.write_text(tiny_config(layers=2, hidden=16, heads=2).to_json_string())
    result = run_cli(*_intermediate_args(tmp_path / "x", teacher_dir, cfg, sst2_corpus), ok=False)
    assert "student has 2 heads, teacher 4" in result.output


def test_untuned_teacher_is_refused(tmp_path, encoder_dir, student_config_file, sst2_corpus):
    result = run_cli(*_intermediate_args(tmp_path / "x", encoder_dir, student_config_file, sst2_corpus), ok=False)
    assert "no trained classification head" in result.output


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_precisions_run(tmp_path, teacher_dir, sst2_corpus, dev_tsv, precision):
    """The autocast path (CPU here; the same code runs bf16/fp16 on GPU, fp16 with a grad scaler)."""
    out = tmp_path / precision
    run_cli("task", "--step", "prediction", *common(out, task="sst2", **{
        "model.teacher": teacher_dir, "model.student": teacher_dir, "data.train": sst2_corpus, "data.dev": dev_tsv,
        "train.max_steps": 2, "train.precision": precision}))
    assert all(r["loss"] == r["loss"] for r in read_log(out) if "loss" in r)  # finite, not NaN


def _seeded_start(out, teacher_dir, general_dir, corpus, seed: int, probe: dict) -> dict:
    """Set up an intermediate run at ``train.seed`` and report what it starts from: its weights,
    its epoch-0 row order, and the student's hidden states on ``probe`` in eval and in train mode
    (dropout), computed right after setup as the first training step would be."""
    from distill.config import load_config
    from distill.modules.models import features
    from distill.training.trainer import Trainer

    cfg = load_config(None, common(out, task="sst2", **{
        "model.teacher": teacher_dir, "model.student": general_dir, "data.train": corpus, "train.max_steps": 2,
        "train.seed": seed}), stage="task", step="intermediate")
    trainer = Trainer(cfg)
    try:
        trainer.setup()
        model = trainer.parts.model
        order = [r["id"] for r in trainer.loader.dataset.iter_epoch(0)]
        first = next(iter(trainer.loader))["input_ids"]
        with torch.no_grad():
            still = features(model.eval(), probe).hidden[-1]
            dropped = features(model.train(), probe).hidden[-1]
        return {"student": {k: v.clone() for k, v in model.state_dict().items()},
                "projector": trainer.module.projector.proj.weight.detach().clone(),
                "teacher": {k: v.clone() for k, v in trainer.parts.teacher.state_dict().items()},
                "order": order, "first": first, "eval": still, "train": dropped}
    finally:
        trainer.cleanup()


def test_train_seed_sets_new_parameters_dropout_and_data_order_and_nothing_else(tmp_path, teacher_dir, sst2_corpus):
    """What experiments/sst2_aug_seeds.py relies on: two seeds start from the same student weights
    (the general student's) and the same teacher and rows, but draw different new parameters (the
    classification head, the projection), dropout masks and data order; one seed twice is identical."""
    from transformers import BertModel

    from tests.distill.conftest import save_model, tiny_config, tiny_tokenizer

    torch.manual_seed(7)
    general = save_model(BertModel(tiny_config(layers=2, hidden=16, heads=4)), tmp_path / "general")
    probe = dict(tiny_tokenizer()(["the film was very good", "a dull and boring plot"], padding=True,
                                  return_tensors="pt"))
    a, again, b = (_seeded_start(tmp_path / f"run{i}", teacher_dir, general, sst2_corpus, seed, probe)
                   for i, seed in enumerate((1, 1, 2)))

    loaded = {f"bert.{k}": v for k, v in BertModel.from_pretrained(general).state_dict().items()}
    new = {k for k in a["student"] if k not in loaded}
    assert new == {"classifier.weight", "classifier.bias"}
    for run in (a, b):  # every weight the general student has is its, whatever the seed
        assert all(torch.equal(run["student"][k], v) for k, v in loaded.items())
        assert all(torch.equal(run["teacher"][k], v) for k, v in a["teacher"].items())
    assert not torch.equal(a["student"]["classifier.weight"], b["student"]["classifier.weight"])
    assert not torch.equal(a["projector"], b["projector"])
    assert sorted(a["order"]) == sorted(b["order"]) and a["order"] != b["order"]  # same rows, another order
    assert not torch.equal(a["first"], b["first"])
    # Exact by construction: the same weights on the same probe batch, the same eval-mode operations.
    assert torch.equal(a["eval"], b["eval"]), not_exact("eval-mode outputs of equal encoders")
    assert not torch.allclose(a["train"], b["train"])  # other dropout masks
    for key in ("projector", "first", "eval", "train"):  # the same seed twice: the same start, the same operations
        assert torch.equal(a[key], again[key]), not_exact(f"{key} of one seed run twice")
    assert all(torch.equal(a["student"][k], again["student"][k]) for k in a["student"])
    assert a["order"] == again["order"]


def test_lr_schedules_by_hand():
    """linear: warm up 2 steps, then down to 0 at step 6; constant: warm up, then 1."""
    from distill.training.trainer import linear_schedule

    assert [linear_schedule(6, 2)(s) for s in range(7)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    assert [linear_schedule(6, 2, decay=False)(s) for s in range(7)] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_schedule_defaults_to_constant_for_l0_pruning_only():
    """l0 gates and multipliers keep their learning rate to the end; every other stage decays it;
    an unknown schedule is refused, naming the key."""
    from distill.config import ConfigError, load_config

    prune = ["model.teacher=t", "data.train=d", "task=squad", "prune.strategy=l0"]
    assert load_config(None, prune, stage="prune").optim.schedule == "constant"
    assert load_config(None, prune + ["prune.target_heads=0.5", "prune.target_ffn=0.5"],
                       stage="prune").optim.schedule == "constant"
    assert load_config(None, ["model.teacher=t", "data.train=d", "task=squad", "prune.strategy=gain"],
                       stage="prune").optim.schedule == "linear"
    assert load_config(None, ["model.teacher=t", "data.train=d", "task=sst2"],
                       stage="task", step="prediction").optim.schedule == "linear"
    assert load_config(None, prune + ["optim.schedule=linear"], stage="prune").optim.schedule == "linear"
    with pytest.raises(ConfigError, match="optim.schedule must be one of"):
        load_config(None, ["model.teacher=t", "data.train=d", "task=sst2", "optim.schedule=cosine"], stage="finetune")

"""``distill run``: recipes parse and are checked before any work, every shipped recipe runs end to
end on tiny models, finished stages are reused, a changed setting reruns what depends on it, and a
killed training stage resumes to the uninterrupted run's result."""
from __future__ import annotations

import re

import json
import random
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from distill.cli import main as cli
from distill.run.recipes import RecipeError, load, load_raw, locate, shipped
from distill.run.plan import make_plan, run_plan
from pipelines.tasks import get_task
from tests.conftest import write_tiny_glove
from tests.distill.conftest import WORDS, save_model, sentence, tiny_config, write_squad_json

FNAPI = "[--runner,DirectRunner]"
TRAINING = ("teacher", "general", "intermediate", "prediction", "prune", "recover")
QA_WINDOWS = {"data.max_seq_length": 48, "data.doc_stride": 16, "data.max_query_length": 12}


def write_glue_tsv(path: Path, task_name: str, n: int, seed: int) -> Path:
    """A GLUE-layout TSV of ``task_name`` (its columns, header unless the task has none) whose text
    fields are random tiny sentences and whose label follows the first field's sentiment."""
    task = get_task(task_name)
    rng = random.Random(seed)
    layout = list(task.tsv_layout)
    positions = task.column_positions()
    lines = [] if task.tsv_positions else ["\t".join(layout)]
    for _ in range(n):
        cells = ["0"] * len(layout)
        label = None
        for f in task.text_fields:
            cells[positions[f]], y = sentence(rng)
            label = y if label is None else label
        cells[positions["label"]] = (f"{label * 4.0 + rng.random():.2f}" if task.label_names is None
                                     else task.label_names[label % len(task.label_names)])
        lines.append("\t".join(cells))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory, encoder_dir, student_config_file, qa_encoder_dir) -> dict:
    """Tiny stand-ins for everything a recipe names: GLUE files of every task, SQuAD files, the
    masked LM (also the teacher's encoder), GloVe, text, a general student."""
    root = tmp_path_factory.mktemp("recipe-world")
    glue = {}
    for i, task in enumerate(("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")):
        d = root / "glue" / task
        d.mkdir(parents=True)
        glue[task] = (write_glue_tsv(d / "train.tsv", task, 24, seed=i), write_glue_tsv(d / "dev.tsv", task, 12, 100 + i))
    import torch
    from transformers import BertModel

    torch.manual_seed(3)
    student = save_model(BertModel(tiny_config(layers=2, hidden=16, heads=4)), root / "general-student")
    text = root / "text.txt"
    rng = random.Random(5)
    text.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(40)) + "\n")
    return {"glue": glue, "mlm": str(encoder_dir), "glove": str(write_tiny_glove(root / "glove.txt", WORDS)),
            "student": str(student), "student_config": str(student_config_file), "text": str(text),
            "squad_train": str(write_squad_json(root / "squad-train.json", n_paragraphs=6, seed=0)),
            "squad_dev": str(write_squad_json(root / "squad-dev.json", n_paragraphs=2, seed=1)),
            "qa_encoder": str(qa_encoder_dir)}


def tiny_overrides(name: str, w: dict, steps: int = 2) -> list[str]:
    """Overrides that swap a recipe's models and data for the tiny ones and cut every training
    stage to ``steps`` steps (the recipe's other settings stay as shipped)."""
    raw = load_raw(name)
    stages = raw["stages"]
    out = []
    if raw["task"] == "squad":
        out += [f"data.train={w['squad_train']}", f"data.dev={w['squad_dev']}", f"teacher.model={w['qa_encoder']}"]
        out += [f"{s}.{k}={v}" for s in TRAINING if s in stages for k, v in QA_WINDOWS.items()]
        out += ["split.tune_articles=1"] if "split" in stages else []
        out += ["latency.windows=3", "latency.batch=2", "latency.rounds=1"] if "latency" in stages else []
    else:
        train, dev = w["glue"][raw["task"]]
        out += [f"data.train={train}", f"data.dev={dev}", f"corpus.teacher={w['mlm']}", f"corpus.glove={w['glove']}",
                "corpus.n_aug=1", "corpus.num_shards=1", "corpus.max_records=null", f"corpus.beam_args={FNAPI}",
                f"teacher.model={w['mlm']}"] + (["eval.latency_sentences=6"] if "eval" in stages else [])
        if stages["general"].get("given"):
            out.append(f"general.given={w['student']}")
        else:
            out += [f"general.text=[{w['text']}]", f"general.student={w['student_config']}"]
        out += [f"{s}.data.max_seq_length=32" for s in TRAINING if s in stages]
    out += [f"{s}.train.max_steps={steps}" for s in TRAINING if s in stages]
    out += [f"{s}.train.save_every=1" for s in TRAINING if s in stages]
    out += ["prediction.train.eval_every=1"] if "prediction" in stages else []
    return out


def statuses(plan) -> dict[str, str]:
    return {s.name: s.status for s in plan.stages}


# -- every shipped recipe ----------------------------------------------------------------------------
def test_the_shipped_recipes_are_there_and_named_by_method_and_task():
    names = shipped()
    tasks = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")
    assert {f"tinybert/{t}-{s}" for t in tasks for s in ("4l", "6l")} <= set(names)
    assert {"mccarley/squad2-bert-base", "demo/sst2-cpu", "demo/squad2-prune-cpu"} <= set(names)


def test_the_tinybert_recipes_are_the_generators_output():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from tinybert_recipes import OUT, STUDENTS, TASKS, render

    for task in TASKS:
        for size in STUDENTS:
            assert (OUT / f"{task}-{size}.yaml").read_text(encoding="utf-8") == render(task, size)


@pytest.mark.parametrize("name", [n for n in shipped() if not n.startswith("studies/")])
def test_every_shipped_recipe_plans_and_runs_on_tiny_models(name, world, tmp_path, capsys):
    """Parses, its plan resolves (--dry-run), and it runs end to end with the tiny models."""
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", name, "--output", str(out), "--dry-run", *tiny_overrides(name, world)])
    assert result.exit_code == 0, result.output
    assert "run " in result.output and not (out / "report.md").exists()
    recipe = load(name, tiny_overrides(name, world))
    report = run_plan(make_plan(recipe, str(out)))["report"]
    summary = json.loads((out / "report.json").read_text())
    assert summary["recipe"] == name and len(summary["rows"]) >= 2
    assert (out / "report.md").read_text().count("\n| ") >= 2
    for slug, folder in report["models"].items():
        card = (out / "models" / slug / "README.md").read_text()
        front = yaml.safe_load(card.split("---")[1])
        row = next(r for r in summary["rows"] if r["slug"] == slug)
        value = front["model-index"][0]["results"][0]["metrics"][0]["value"]
        assert value == (row["score"] if recipe.family == "qa" else round(100 * row["score"], 2))
        assert front["pipeline_tag"] == ("question-answering" if recipe.family == "qa" else "text-classification")
        from transformers import AutoConfig

        assert AutoConfig.from_pretrained(out / "models" / slug).num_hidden_layers >= 1


@pytest.mark.parametrize("name", [n for n in shipped() if n.endswith("-6l")])
def test_the_tinybert_6_recipes_plan_like_their_4_layer_twins(name, world, tmp_path):
    twin = name.replace("-6l", "-4l")
    a = load(name, tiny_overrides(name, world))
    b = load(twin, tiny_overrides(twin, world))
    assert a.stages["general"]["given"] == b.stages["general"]["given"]  # both swapped for the tiny student
    assert {k: v for k, v in a.stages.items()} == {k: v for k, v in b.stages.items()}
    assert [s.name for s in make_plan(a, str(tmp_path)).stages] == [s.name for s in make_plan(b, str(tmp_path)).stages]
    shipped_a, shipped_b = load_raw(name), load_raw(twin)
    assert shipped_a["stages"]["general"]["given"].endswith("6L_768D")
    assert shipped_b["stages"]["general"]["given"].endswith("4L_312D")


def test_the_recipes_are_package_data(tmp_path):
    """A wheel of the project carries every shipped recipe (so `pip install` users have them)."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(root)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("bert_compress-*.whl")
    inside = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("distill/recipes/") and n.endswith(".yaml")}
    assert inside == {f"distill/recipes/{n}.yaml" for n in shipped()}


# -- reuse, reruns, resume ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_run(world, tmp_path_factory) -> dict:
    """The SST-2 demo recipe run once on tiny models: its output folder and overrides."""
    out = tmp_path_factory.mktemp("demo") / "out"
    overrides = tiny_overrides("demo/sst2-cpu", world, steps=4)
    run_plan(make_plan(load("demo/sst2-cpu", overrides), str(out)))
    return {"out": out, "overrides": overrides}


def copied_store(demo_run: dict, tmp_path: Path) -> Path:
    """A copy of the demo run's stage folders, for a test to add to or break."""
    store = tmp_path / "store"
    shutil.copytree(demo_run["out"] / "stages", store)
    return store


def _no_training(monkeypatch):
    from distill.training import trainer

    def refuse(self, batches):
        raise AssertionError("a training step ran")

    monkeypatch.setattr(trainer.Trainer, "train_step", refuse)


def test_the_same_run_again_reuses_every_stage_and_trains_nothing(demo_run, monkeypatch, capsys):
    _no_training(monkeypatch)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("the corpus builder ran"))
    result = CliRunner().invoke(cli, ["run", "demo/sst2-cpu", "--output", str(demo_run["out"]),
                                      *demo_run["overrides"]])
    assert result.exit_code == 0, result.output
    for stage in ("corpus", "teacher", "general", "intermediate", "prediction", "eval", "report"):
        assert f"{stage}: reused" in result.output
    assert "running" not in result.output and "| student |" in result.output


def test_a_changed_prediction_setting_reruns_only_prediction_and_what_reads_it(demo_run, tmp_path, monkeypatch):
    store = copied_store(demo_run, tmp_path)
    plan = make_plan(load("demo/sst2-cpu", [*demo_run["overrides"], "prediction.optim.lr=2.0e-5"]),
                     str(tmp_path / "out"), str(store))
    assert statuses(plan) == {"corpus": "reuse", "teacher": "reuse", "general": "reuse", "intermediate": "reuse",
                              "prediction": "run", "eval": "run", "report": "run"}
    steps_run = []
    from distill.training import trainer

    original = trainer.Trainer.train_step

    def counting(self, batches):
        steps_run.append(self.cfg.stage + (f"/{self.cfg.step}" if self.cfg.step else ""))
        return original(self, batches)

    monkeypatch.setattr(trainer.Trainer, "train_step", counting)
    run_plan(plan)
    assert set(steps_run) == {"task/prediction"} and len(steps_run) == 4
    again = make_plan(load("demo/sst2-cpu", [*demo_run["overrides"], "prediction.optim.lr=2.0e-5"]),
                      str(tmp_path / "out"), str(store))
    assert set(statuses(again).values()) == {"reuse"}


def test_two_recipes_sharing_a_store_build_shared_stages_once(demo_run, tmp_path):
    """A second recipe (another student schedule) over the same corpus and teacher reuses them."""
    store = copied_store(demo_run, tmp_path)
    other = make_plan(load("demo/sst2-cpu", [*demo_run["overrides"], "intermediate.train.max_steps=3"]),
                      str(tmp_path / "other"), str(store))
    assert statuses(other) == {"corpus": "reuse", "teacher": "reuse", "general": "reuse", "intermediate": "run",
                               "prediction": "run", "eval": "run", "report": "run"}


def test_a_killed_training_stage_resumes_to_the_uninterrupted_result(demo_run, tmp_path, monkeypatch):
    """Kill the prediction stage after its third step (checkpoints every step); the rerun resumes
    it from step 3 and ends with the uninterrupted run's weights and dev metrics."""
    store = copied_store(demo_run, tmp_path)
    for p in store.glob("prediction-*"):
        shutil.rmtree(p)
    for p in list(store.glob("eval-*")) + list(store.glob("report-*")):
        shutil.rmtree(p)
    from distill.training import trainer

    original, calls = trainer.Trainer.train_step, []

    def dies_at_step_4(self, batches):
        if self.cfg.step == "prediction" and self.step == 3:
            raise KeyboardInterrupt("killed")
        calls.append(self.step)
        return original(self, batches)

    monkeypatch.setattr(trainer.Trainer, "train_step", dies_at_step_4)
    plan = make_plan(load("demo/sst2-cpu", demo_run["overrides"]), str(tmp_path / "out"), str(store))
    with pytest.raises(KeyboardInterrupt):
        run_plan(plan)
    monkeypatch.setattr(trainer.Trainer, "train_step", original)
    plan = make_plan(load("demo/sst2-cpu", demo_run["overrides"]), str(tmp_path / "out"), str(store))
    assert statuses(plan)["prediction"] == "resume"
    monkeypatch.setattr(trainer.Trainer, "train_step", lambda self, b: (calls.append(self.step), original(self, b))[1])
    calls.clear()
    run_plan(plan)
    assert calls == [3]  # only the fourth step ran again
    ref, got = demo_run["out"] / "report.json", tmp_path / "out" / "report.json"
    rows = lambda p: {r["name"]: (r["score"], r["parameters"]) for r in json.loads(p.read_text())["rows"]}  # noqa: E731
    assert rows(got) == rows(ref)
    (pred_ref,) = (demo_run["out"] / "stages").glob("prediction-*")
    (pred_got,) = store.glob("prediction-*")
    assert pred_ref.name == pred_got.name
    for name in ("best", "final"):
        assert (pred_got / "run" / name / "model.safetensors").read_bytes() == \
            (pred_ref / "run" / name / "model.safetensors").read_bytes()


# -- bad recipes ---------------------------------------------------------------------------------------
def _recipe_file(tmp_path: Path, world: dict, change) -> Path:
    raw = load_raw("demo/sst2-cpu")
    train, dev = world["glue"]["sst2"]
    raw["data"] = {"train": str(train), "dev": str(dev)}
    raw["stages"]["corpus"].update(teacher=world["mlm"], glove=world["glove"])
    raw["stages"]["teacher"]["model"] = world["mlm"]
    raw["stages"]["general"]["text"] = [world["text"]]
    change(raw)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.mark.parametrize("change, key", [
    (lambda r: r["stages"].update(distil={}), "stages.distil"),
    (lambda r: r["stages"]["prediction"]["optim"].update(lrr=1e-4), "stages.prediction.optim.lrr"),
    (lambda r: r["stages"]["corpus"].update(n_agu=4), "stages.corpus.n_agu"),
    (lambda r: r["data"].update(train="/nonexistent/train.tsv"), "data.train"),
    (lambda r: r["stages"]["general"].update(text=["/nonexistent/wiki.txt"]), "stages.general.text[0]"),
    (lambda r: r["stages"].pop("general"), "stages.intermediate"),
    (lambda r: r["stages"].pop("prediction"), "stages.eval"),
    (lambda r: r["stages"].update(prune={"targets": [0.5]}), "stages.prune"),
    (lambda r: r["stages"]["teacher"].update(given="x/y"), "stages.teacher"),
    (lambda r: r["stages"]["prediction"]["train"].update(batch_size=0), "train.batch_size"),
    (lambda r: r.update(tasks="sst2"), "tasks"),
])
def test_bad_recipes_are_refused_before_any_work_naming_the_key(change, key, world, tmp_path):
    path = _recipe_file(tmp_path, world, change)
    with pytest.raises(RecipeError, match=key.replace("[", r"\[").replace("]", r"\]")):
        make_plan(load(str(path)), str(tmp_path / "out"))
    result = CliRunner().invoke(cli, ["run", str(path), "--output", str(tmp_path / "out")])
    assert result.exit_code == 2 and key in result.output
    assert not (tmp_path / "out" / "stages").exists() or not any((tmp_path / "out" / "stages").glob("*-*"))


def test_a_qa_stage_in_a_glue_recipe_is_named():
    with pytest.raises(RecipeError, match="stages.recover is a QA stage; task sst2"):
        load("demo/sst2-cpu", ["stages.recover={}"])


def test_an_override_of_a_stage_the_recipe_lacks_is_refused():
    with pytest.raises(RecipeError, match="'prune' is neither a top-level key"):
        load("demo/sst2-cpu", ["prune.targets=[0.5]"])


# -- the command line ----------------------------------------------------------------------------------
def test_ls_lists_help_names_and_cp_copies_a_recipe_that_runs_from_its_copy(world, tmp_path):
    runner = CliRunner()
    listed = runner.invoke(cli, ["ls"]).output
    assert all(name in listed for name in shipped())
    assert all(name in runner.invoke(cli, ["run", "--help"]).output for name in shipped())
    copied = runner.invoke(cli, ["cp", "demo/sst2-cpu", str(tmp_path)])
    assert copied.exit_code == 0
    dest = tmp_path / "sst2-cpu.yaml"
    assert dest.read_text() == locate("demo/sst2-cpu").read_text()
    again = runner.invoke(cli, ["cp", "demo/sst2-cpu", str(tmp_path)])
    assert again.exit_code == 2 and "exists" in again.output
    plan = runner.invoke(cli, ["run", str(dest), "--dry-run", "--output", str(tmp_path / "o"),
                               *tiny_overrides("demo/sst2-cpu", world)])
    assert plan.exit_code == 0 and "[7/7] report" in plan.output
    unknown = runner.invoke(cli, ["run", "tinybert/sst2-5l"])
    assert unknown.exit_code == 2 and "tinybert/sst2-4l" in unknown.output


# -- grids (studies) -----------------------------------------------------------------------------------
def _study(world, tmp_path, text: str | None = None):
    """The SST-2 seeds study on the tiny world (written to a file when ``text`` edits it)."""
    name = "studies/sst2-aug-seeds"
    overrides = tiny_overrides(name, world) + [f"teacher.train_data={world['glue']['sst2'][0]}"]
    overrides = [o for o in overrides if not o.startswith(("corpus.max_records=", "intermediate.train.max_steps",
                                                           "prediction.train.max_steps"))]
    if text is not None:
        path = tmp_path / "study.yaml"
        path.write_text(text, encoding="utf-8")
        name = str(path)
    return load(name, overrides)


def _stage_runs(monkeypatch) -> list[str]:
    """Records the folder of every training run that takes a step."""
    from distill.training import trainer

    ran, original = [], trainer.Trainer.train_step

    def counting(self, batches):
        if self.cfg.output_dir not in ran:
            ran.append(self.cfg.output_dir)
        return original(self, batches)

    monkeypatch.setattr(trainer.Trainer, "train_step", counting)
    return ran


def test_a_grid_runs_its_cells_in_one_store_and_computes_shared_stages_once(world, tmp_path, monkeypatch):
    from distill.run.plan import make_grid, run_grid

    recipe = _study(world, tmp_path)
    assert len(recipe.cells) == 10
    ran = _stage_runs(monkeypatch)
    grid = run_grid(recipe, make_grid(recipe, str(tmp_path / "out")), str(tmp_path / "out"))
    assert json.loads((tmp_path / "out" / "grid.json").read_text()) == grid
    cells = grid["cells"]
    folders = {k: {c["stages"][k]["folder"] for c in cells} for k in cells[0]["stages"]}
    assert len(folders["teacher"]) == 1 and len(folders["general"]) == 1  # shared by every cell
    assert len(folders["corpus"]) == 3 + 1  # seeds 42-44 at 1,500 (42 shared with the others) and 8,000's
    assert len(folders["prediction"]) == 10  # every cell its own student
    # one teacher, one general student, 10 x (intermediate + prediction): nothing trained twice
    assert len(ran) == 2 + 20 == len(set(ran))
    # both conditions of a size take the same steps: epochs of the augmented corpus
    def max_steps(cell, stage):
        saved = yaml.safe_load((Path(cell["stages"][stage]["folder"]) / "run" / "config.yaml").read_text())
        return saved["train"]["max_steps"]

    for size, epochs in ((1500, (10, 3)), (8000, (2, 1))):
        for stage, e in zip(("intermediate", "prediction"), epochs):
            runs = {(c["overrides"]["prediction.data.original_only"], c["overrides"]["corpus.seed"]
                     if "corpus.seed" in c["overrides"] else 42): max_steps(c, stage)
                    for c in cells if c["overrides"]["corpus.max_records"] == size}
            rows = json.loads((Path(cells[0]["stages"]["corpus"]["folder"]) / "corpus" / "manifest.json").read_text())
            assert runs[True, 42] == runs[False, 42] > 0, (size, stage, runs)
            if size == 1500:
                assert runs[True, 42] == e * -(-rows["counts"]["rows"] // 32), (stage, rows["counts"])
    # the teacher trained on every row of train_data, not on the corpus originals
    teacher = yaml.safe_load((Path(next(iter(folders["teacher"]))) / "run" / "config.yaml").read_text())
    assert teacher["data"]["train"].endswith("train-corpus") and not teacher["data"]["original_only"]

    # a rerun computes nothing
    ran.clear()
    run_grid(recipe, make_grid(recipe, str(tmp_path / "out")), str(tmp_path / "out"))
    assert ran == []

    # one cell's value changed in the file: that cell reruns (its new corpus and students), only it
    text = (Path(recipe.source)).read_text(encoding="utf-8").replace("corpus.seed: [42, 43, 44]",
                                                                   "corpus.seed: [42, 43, 45]")
    changed = _study(world, tmp_path, text)
    plans = make_grid(changed, str(tmp_path / "out"))
    to_run = {i for i, (_, plan) in enumerate(plans) for s in plan.stages if s.status != "reuse"}
    assert to_run == {2}
    assert {s.name for s in plans[2][1].stages if s.status != "reuse"} == {"corpus", "intermediate", "prediction"}
    run_grid(changed, plans, str(tmp_path / "out"))
    assert len(ran) == 2


def test_grid_blocks_are_checked_naming_the_key(world, tmp_path):
    from distill.run.recipes import grid_cells

    assert grid_cells({"product": {"a": [1, 2]}, "zip": {"b": [3, 4], "c": [5, 6]}}) == [
        {"b": 3, "c": 5, "a": 1}, {"b": 3, "c": 5, "a": 2}, {"b": 4, "c": 6, "a": 1}, {"b": 4, "c": 6, "a": 2}]
    assert grid_cells([{"product": {"a": [1]}}, {"zip": [{"a": [2, 3]}, {"b": [4]}]}]) == [
        {"a": 1}, {"a": 2, "b": 4}, {"a": 3, "b": 4}]
    for bad, key in [({"zip": {"b": [1, 2], "c": [1]}}, "grid.zip"), ({"product": {"a": []}}, "grid.product.a"),
                     ({"prodcut": {"a": [1]}}, "grid.prodcut"), ([{"product": {"a": [1]}}, {"product": {"a": [1]}}],
                                                                 "appears twice")]:
        with pytest.raises(RecipeError, match=re.escape(key)):
            grid_cells(bad)
    text = load_raw("studies/sst2-aug-seeds")
    text["grid"][0]["product"]["prediction.optim.lrr"] = [1.0]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(text), encoding="utf-8")
    with pytest.raises(RecipeError, match=r"grid cell .*stages.prediction.optim.lrr"):
        _study(world, tmp_path, path.read_text())

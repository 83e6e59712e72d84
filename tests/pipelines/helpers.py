"""Helpers shared by the corpus-builder tests."""
from __future__ import annotations

# The builder's DirectRunner is Beam's in-process FnApiRunner (pipelines.corpus.pipeline_runner:
# never Prism), so the tests run the runner users get by default.
RUNNER = ["--runner", "DirectRunner"]

TWO_PROCESSES = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


def cli_args(task: str, inp: str, out, models: tuple[str, str], *extra: str) -> list[str]:
    """Flags of a small run: 2 shards, progress logged at every batch, the Python runner."""
    teacher, glove = models
    return ["--task", task, "--input", inp, "--output", str(out), "--teacher", teacher, "--glove", glove,
            "--num-shards", "2", "--progress-seconds", "0", *RUNNER, *extra]


def write_fake_models(root) -> tuple[str, str]:
    """(teacher folder, GloVe file) under ``root`` that the run's hashing accepts; a fake loader
    ignores them."""
    teacher = root / "teacher"
    teacher.mkdir()
    (teacher / "model.safetensors").write_bytes(b"not really weights")
    (teacher / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    glove = root / "glove.txt"
    glove.write_text("film 0.1 0.2\nmovie 0.1 0.3\n")
    return str(teacher), str(glove)

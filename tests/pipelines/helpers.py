"""Helpers shared by the corpus-builder tests."""
from __future__ import annotations

# Beam's DirectRunner first tries Prism (downloading it when it can) and falls back to this Python
# runner; naming it keeps the tests hermetic and the --direct_num_workers flags meaningful.
RUNNER = ["--runner", "apache_beam.runners.portability.fn_api_runner.FnApiRunner"]

TWO_PROCESSES = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


def cli_args(task: str, inp: str, out, models: tuple[str, str], *extra: str) -> list[str]:
    """Flags of a small run: 2 shards, progress logged at every batch, the Python runner."""
    teacher, glove = models
    return ["--task", task, "--input", inp, "--output", str(out), "--teacher", teacher, "--glove", glove,
            "--num-shards", "2", "--progress-seconds", "0", *RUNNER, *extra]

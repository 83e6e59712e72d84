"""What the experiment scripts share: running commands and resumable ``distill`` stages, and their
wall times (a model's size and latency: ``distill.evaluation.measure``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)



class Timings:
    """Wall seconds per stage in OUT/timings.json, summed over reruns (a resumed stage adds its rest)."""

    def __init__(self, out: str):
        self.path = os.path.join(out, "timings.json")
        self.data = json.load(open(self.path, encoding="utf-8")) if os.path.exists(self.path) else {}

    def run(self, name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.data[name] = round(self.data.get(name, 0.0) + time.perf_counter() - start, 1)
            with open(self.path, "w", encoding="utf-8") as f:
                json.dump(self.data, f, indent=1)


def write_results(out: str, lines: list[str], summary: dict) -> dict:
    """An experiment's report: ``lines`` to OUT/results.md, ``summary`` to OUT/results.json, both
    printed (the table, then ``summary["targets"]``). Returns ``summary``."""
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    print("\n".join(lines))
    print(json.dumps(summary["targets"]))
    return summary


def sh(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(list(args), check=True, cwd=ROOT)


def distill(*args: str):
    """``distill ARGS`` in this process (one import of torch/transformers for every stage); returns
    what the command returns."""
    from distill.cli import main as cli

    print("+ distill", " ".join(args), flush=True)
    return cli(list(args), standalone_mode=False)


def stage(out: str, command: list[str], config: str, done: str = "final", **overrides) -> str:
    """Run a distill stage into ``out`` unless it finished (``out/DONE/config.yaml`` exists); resume
    it if it was interrupted. ``config``: a path under ``configs/``."""
    if os.path.exists(os.path.join(out, done, "config.yaml")):
        return out
    from distill.config import load_config
    from distill.run.plan import train_in

    step = command[command.index("--step") + 1] if "--step" in command else None
    cfg = load_config(os.path.join(ROOT, "configs", config),
                      [f"{k}={v}" for k, v in {"output_dir": out, **overrides}.items()], stage=command[0], step=step)
    print("+ distill", " ".join(command), "--config", config, flush=True)
    train_in(cfg)  # resumes from the newest checkpoint in out, as distill run does
    return out


def teacher_cache(teacher: str, corpus: str, output: str, *flags: str) -> str:
    """``distill cache-teacher`` of ``teacher`` over ``corpus`` into ``output`` unless it holds a
    complete cache (``manifest.json``); an interrupted build resumes by shard. ``flags``: the
    windows of the runs it serves (``--max-seq-length 64``, ...). Returns ``output``."""
    if not os.path.exists(os.path.join(output, "manifest.json")):
        distill("cache-teacher", "--teacher", teacher, "--corpus", corpus, "--output", output, *flags)
    return output

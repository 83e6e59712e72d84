"""torchrun with 2 CPU processes (gloo): a run, then a resume that ends where the run did."""
import json
import os
import shutil
import subprocess
import sys

import torch
from safetensors.torch import load_file

from tests.distill.test_train import common
from tests.numerics import not_exact


def torchrun(*args, cwd):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "distill.cli", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_two_process_gloo_run_and_resume(tmp_path, teacher_dir, student_config_file, sst2_corpus):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = tmp_path / "ddp"
    args = ["task", "--step", "intermediate", *common(out, task="sst2", **{
        "model.teacher": teacher_dir, "model.student": student_config_file, "data.train": sst2_corpus,
        "train.max_steps": 4, "train.save_every": 2, "train.batch_size": 4, "train.grad_accum": 2,
        "train.keep_checkpoints": 3})]
    torchrun(*args, cwd=root)
    ckpt = out / "checkpoints"
    assert sorted(os.listdir(ckpt)) == ["step-000002", "step-000004"]
    assert {"rng-rank0.pt", "rng-rank1.pt"} <= set(os.listdir(ckpt / "step-000002"))
    log = [json.loads(line) for line in open(out / "log.jsonl")]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    # 4 steps x 2 micro-batches x 4 rows x 2 ranks = 64 rows of 120
    assert abs(log[-1]["epoch"] - 64 / 120) < 1e-9
    state = torch.load(ckpt / "step-000004" / "trainer_state.pt", weights_only=True)
    assert state["world_size"] == 2 and state["batches_drawn"] == 8
    reference = load_file(out / "final" / "model.safetensors")

    # simulate a kill after step 2: drop what came later, then resume with 2 processes
    shutil.rmtree(ckpt / "step-000004")
    shutil.rmtree(out / "final")
    torchrun(*args, "--resume", cwd=root)
    resumed = load_file(out / "final" / "model.safetensors")
    # Exact by construction: each rank restores its weights, optimizer, RNG and data position, the
    # all-reduce sums the two ranks' gradients in a fixed order, and both runs had 2 ranks of the
    # same threads: the remaining steps are the same operations on the same tensors.
    for k in reference:
        assert torch.equal(reference[k], resumed[k]), not_exact(f"{k} of the resumed and the uninterrupted run")

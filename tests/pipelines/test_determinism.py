"""Same seed, same rows, whatever the runner's parallelism (fake augmenter: fast)."""
import os

from pipelines.corpus import run
from tests.pipelines.fakes import FakeLoader
from tests.pipelines.helpers import TWO_PROCESSES
from tests.pipelines.helpers import cli_args as args


def shard_bytes(out, manifest) -> dict[str, bytes]:
    return {s["file"]: (out / s["file"]).read_bytes() for s in manifest["shards"]}


def test_one_vs_two_worker_processes_give_identical_shards(tmp_path, fake_models):
    tsv = tmp_path / "train.tsv"
    tsv.write_text("sentence\tlabel\n" + "".join(f"film number {i} is good and long\t{i % 2}\n" for i in range(60)))
    one, two = tmp_path / "one", tmp_path / "two"
    m1 = run(args("sst2", str(tsv), one, fake_models, "--records-per-batch", "4"), loader=FakeLoader())
    pids = tmp_path / "pids"
    pids.mkdir()
    m2 = run(args("sst2", str(tsv), two, fake_models, "--records-per-batch", "7", *TWO_PROCESSES),
             loader=FakeLoader(pid_dir=str(pids)))
    loaded_in = os.listdir(pids)
    assert loaded_in and str(os.getpid()) not in loaded_in  # augmented in worker processes
    assert m1["fingerprint"] == m2["fingerprint"] and m1["counts"] == m2["counts"]
    assert m1["counts"]["variants"] > 0
    # Exact by construction: the fake augmenter is pure Python on each record alone, shards are sorted.
    assert shard_bytes(one, m1) == shard_bytes(two, m2)

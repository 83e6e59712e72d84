"""Beam's Dask runner on a real dask.distributed cluster (a scheduler and two single-thread worker
processes on loopback) writes the corpus DirectRunner writes: same shard bytes, same dead letters,
same counts. The cluster is started once for the module and stopped even when a test fails."""
import concurrent.futures
import json
import os
from pathlib import Path

import pytest

from pipelines.corpus import run
from tests.numerics import not_exact
from tests.pipelines.fakes import FakeLoader
from tests.pipelines.helpers import RUNNER
from tests.pipelines.helpers import cli_args as args

if not os.environ.get("CI"):  # CI installs the [dask] extra: there a missing dask is a failure
    pytest.importorskip("distributed", reason="the [dask] extra is not installed")
from pipelines.dask_cluster import DASK_RUNNER, LoopbackCluster  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 300  # seconds: a hung cluster fails the test instead of blocking the run

# SST-2 lines: good ones, and bad ones of every kind with the stage that rejects each.
GOOD = [f"film number {i} is good and long\t{i % 2}\n" for i in range(40)]
BAD = {"the plot has no label\n": "read", "sentiment unknown\t7\n": "read", "\t1\n": "read",
       "EXPLODE on purpose\t1\n": "augment"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # The scheduler unpickles the job's graph and the workers run it: both import this checkout
    # (pipelines, augment and the test fakes, which Beam pickles by reference).
    with LoopbackCluster(tmp_path_factory.mktemp("dask"), workers=2, threads=1, pythonpath=[ROOT],
                         timeout=90, idle_timeout=600) as c:
        yield c


def on_dask(cluster, argv, loader):
    """``run(argv + the Dask runner flags)`` with a deadline."""
    dask = ["--runner", DASK_RUNNER, "--dask_client_address", cluster.address, "--dask_connection_timeout", "60"]
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        return pool.submit(run, [a for a in argv if a not in RUNNER] + dask, loader).result(timeout=BUILD_TIMEOUT)
    except concurrent.futures.TimeoutError:
        pytest.fail(f"the Dask build took over {BUILD_TIMEOUT}s\n{cluster.logs()}")
    finally:
        pool.shutdown(wait=False)  # a hung build ends when the fixture stops the cluster


def same_corpus(a: Path, ma: dict, b: Path, mb: dict) -> None:
    """Exact by construction: a record's rows depend on the record alone (per-record seeds; the
    engine runs each text's forwards alone, at the same --torch-threads), and shards are sorted."""
    assert ma["fingerprint"] == mb["fingerprint"] and ma["counts"] == mb["counts"]
    assert ma["shards"] == mb["shards"], not_exact("shard hashes")
    for shard in ma["shards"]:
        assert (a / shard["file"]).read_bytes() == (b / shard["file"]).read_bytes(), not_exact(shard["file"])
    assert (a / "dead-letter.jsonl").read_bytes() == (b / "dead-letter.jsonl").read_bytes()
    assert sorted(os.listdir(a)) == sorted(os.listdir(b))


def test_dask_runner_writes_the_direct_runners_corpus(cluster, tmp_path, fake_models):
    tsv = tmp_path / "train.tsv"
    lines = list(GOOD)
    for i, bad in enumerate(BAD):  # spread through the file, so that several batches hold one
        lines.insert(7 + 9 * i, bad)
    tsv.write_text("sentence\tlabel\n" + "".join(lines))
    argv = args("sst2", str(tsv), tmp_path / "direct", fake_models, "--num-shards", "3", "--records-per-batch", "3")
    m1 = run(argv, loader=FakeLoader())
    pids = tmp_path / "pids"
    pids.mkdir()
    argv[argv.index("--output") + 1] = str(tmp_path / "dask")
    m2 = on_dask(cluster, argv, FakeLoader(pid_dir=str(pids)))

    same_corpus(tmp_path / "direct", m1, tmp_path / "dask", m2)
    assert m2["compute"]["runner"] == DASK_RUNNER
    # Both worker processes augmented batches; this process none.
    calls = {int(p.name): p.read_text().split() for p in pids.iterdir()}
    assert sorted(calls) == sorted(cluster.worker_pids) and all(calls.values())
    # The counts against the input itself, not only against DirectRunner.
    assert m2["counts"]["read"] == len(GOOD) + len(BAD) and m2["counts"]["rejected"] == len(BAD)
    assert m2["counts"]["originals"] == len(GOOD) and m2["counts"]["variants"] > 0
    assert m2["engine"]["texts"] == len(GOOD)  # texts augmented (not the one the engine fails on)
    line_of = {line: n + 2 for n, line in enumerate(lines)}  # the header is line 1
    letters = [json.loads(x) for x in (tmp_path / "dask" / "dead-letter.jsonl").read_text().splitlines()]
    assert [(d["location"], d["stage"]) for d in letters] == [
        (f"{tsv}:{n}", stage) for n, stage in sorted((line_of[line], stage) for line, stage in BAD.items())]


@pytest.mark.parametrize("task", ["qnli", "squad"])
def test_pairs_and_squad_contexts_on_dask(task, cluster, tmp_path, task_files, fake_models):
    extra = ["--augment-context"] if task == "squad" else []
    inputs = task_files[task]
    if task == "qnli":  # a second input, with a malformed row and a row the engine fails on
        more = tmp_path / "more.tsv"
        more.write_text("index\tquestion\tsentence\tlabel\n0\tWhy?\tBecause.\n1\tEXPLODE?\tNo.\tentailment\n")
        inputs += f",{more}"
    argv = args(task, inputs, tmp_path / "direct", fake_models, "--records-per-batch", "1", *extra)
    m1 = run(argv, loader=FakeLoader(4))
    argv[argv.index("--output") + 1] = str(tmp_path / "dask")
    m2 = on_dask(cluster, argv, FakeLoader(4))
    same_corpus(tmp_path / "direct", m1, tmp_path / "dask", m2)
    assert m2["counts"]["rejected"] == 2 if task == "qnli" else 1  # hand-counted in the inputs


@pytest.mark.integration
def test_real_teacher_on_dask(cluster, assets, tmp_path):
    inp = assets / "glue" / "SST-2" / "train.tsv"
    argv = ["--task", "sst2", "--input", str(inp), "--output", str(tmp_path / "direct"),
            "--teacher", str(assets / "models" / "minilm-l6-mlm"),
            "--glove", str(assets / "glove" / "glove.6B.50d.top100k.txt"), "--max-records", "12", "--n-aug", "3",
            "--num-shards", "3", "--torch-threads", "1", *RUNNER]
    m1 = run(argv)
    argv[argv.index("--output") + 1] = str(tmp_path / "dask")
    m2 = on_dask(cluster, argv + ["--records-per-batch", "4"], None)
    same_corpus(tmp_path / "direct", m1, tmp_path / "dask", m2)
    assert m2["counts"]["accepted"] == 12 and m2["counts"]["variants"] > 12


def test_loopback_cluster_stops_every_process(tmp_path):
    with LoopbackCluster(tmp_path, workers=1, threads=1, timeout=90) as c:
        procs = [c.scheduler, *c.worker_procs]
        assert c.address.startswith("tcp://127.0.0.1:") and all(p.poll() is None for p in procs)
    assert all(p.poll() is not None for p in procs)
    with pytest.raises(ValueError, match="got 0 and 1"):
        LoopbackCluster(tmp_path, workers=0)

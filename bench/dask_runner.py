"""The corpus builder on DirectRunner (2 worker processes) vs Beam's Dask runner (2 workers), side by side.

    python bench/dask_runner.py                     # the README's corpus: 8,000 SST-2 sentences, N_a 8
    python bench/dask_runner.py --max-records 100   # a quick check

Both build the same corpus (the MiniLM teacher and GloVe 50d from the assets, one torch thread per
worker) into separate folders, and the bench checks the two are the same corpus: byte-identical
shards and dead letters, equal counts and fingerprints.

* DirectRunner: the FnApiRunner with ``--direct_num_workers=2 --direct_running_mode=multi_processing``.
* Dask: a loopback cluster started by the bench (``dask scheduler`` + 2 ``dask worker`` processes of
  one thread, :class:`pipelines.dask_cluster.LoopbackCluster`), ``--runner DaskRunner``. Starting
  the cluster is timed apart: a real cluster is started once for many jobs.

Each build's seconds include Beam start-up, every worker loading its own teacher, reading, and
writing shards, dead letters and the manifest.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from bench.inputs import add_corpus_inputs, resolve_corpus_inputs  # noqa: E402
from pipelines.dask_cluster import DASK_RUNNER, LoopbackCluster  # noqa: E402

FN_API_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"


def build(args, out: str, runner_flags: list[str]) -> tuple[float, dict]:
    """(seconds, manifest) of one build into ``out``."""
    from pipelines.corpus import run

    argv = ["--task", "sst2", "--input", args.input, "--max-records", str(args.max_records), "--output", out,
            "--overwrite", "--teacher", args.teacher, "--glove", args.glove, "--n-aug", str(args.n_aug),
            "--torch-threads", str(args.torch_threads), "--num-shards", str(args.num_shards),
            "--progress-seconds", "1000", *runner_flags]
    start = time.perf_counter()
    manifest = run(argv)
    return time.perf_counter() - start, manifest


def same_corpus(a: str, ma: dict, b: str, mb: dict) -> list[str]:
    """What differs between two corpora (empty when they are the same)."""
    problems = [f"{key} differ: {ma[key]} vs {mb[key]}" for key in ("fingerprint", "counts", "shards")
                if ma[key] != mb[key]]
    for name in [s["file"] for s in ma["shards"]] + ["dead-letter.jsonl"]:
        if Path(a, name).read_bytes() != Path(b, name).read_bytes():
            problems.append(f"{name} differs")
    return problems


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--max-records", type=int, default=8000, help="first N SST-2 train sentences (default 8000)")
    p.add_argument("--n-aug", type=int, default=8)
    p.add_argument("--num-shards", type=int, default=8)
    p.add_argument("--torch-threads", type=int, default=1, help="torch threads per worker process")
    add_corpus_inputs(p)
    args = resolve_corpus_inputs(p.parse_args())
    logging.basicConfig(level=logging.WARNING, force=True)

    results = {"max_records": args.max_records, "n_aug": args.n_aug, "cpu_count": os.cpu_count(),
               "loadavg_1m_before": os.getloadavg()[0]}  # other work on the machine skews every figure
    with tempfile.TemporaryDirectory() as tmp:
        direct_out, dask_out = os.path.join(tmp, "direct"), os.path.join(tmp, "dask")
        direct_s, direct_m = build(args, direct_out, [
            "--runner", FN_API_RUNNER, "--direct_num_workers=2", "--direct_running_mode=multi_processing"])
        print(f"DirectRunner, 2 processes : {direct_s:7.1f}s  {direct_m['counts']['rows']} rows")
        start = time.perf_counter()
        with LoopbackCluster(os.path.join(tmp, "cluster"), workers=2, threads=1, pythonpath=[ROOT]) as cluster:
            cluster_s = time.perf_counter() - start
            dask_s, dask_m = build(args, dask_out, ["--runner", DASK_RUNNER, "--dask_client_address", cluster.address])
        print(f"Dask runner, 2 workers    : {dask_s:7.1f}s  {dask_m['counts']['rows']} rows "
              f"(starting the cluster: {cluster_s:.1f}s more)")
        problems = same_corpus(direct_out, direct_m, dask_out, dask_m)
    identical = not problems
    print(f"Dask / DirectRunner time  : {dask_s / direct_s:.2f}x; output "
          f"{'identical (shards, dead letters, counts)' if identical else 'DIFFERS: ' + '; '.join(problems)}")
    results |= {"direct_2_processes_s": round(direct_s, 2), "dask_2_workers_s": round(dask_s, 2),
                "dask_cluster_start_s": round(cluster_s, 2), "dask_over_direct": round(dask_s / direct_s, 3),
                "identical": identical, "counts": direct_m["counts"], "fingerprint": direct_m["fingerprint"],
                "loadavg_1m_after": os.getloadavg()[0]}
    print(f"1-minute load average: {results['loadavg_1m_before']:.2f} before, {results['loadavg_1m_after']:.2f} "
          f"after ({os.cpu_count()} cores)")
    print(json.dumps(results))
    if not identical:
        sys.exit(1)


if __name__ == "__main__":
    main()

"""A dask.distributed cluster on this machine's loopback: ``dask scheduler`` and ``dask worker``
processes, for the Dask-runner test, ``bench/dask_runner.py`` and trying the runner locally.

    with LoopbackCluster(tmp_dir, workers=2, threads=1, pythonpath=[repo_root]) as cluster:
        run([..., "--runner", DASK_RUNNER, "--dask_client_address", cluster.address])

The processes are the real command-line ones (``python -m distributed.cli.dask_scheduler`` and
``... dask_worker --no-nanny``, so each worker is one process whose pid is known), with the ports
chosen by the OS. A multi-machine cluster is started the same way by hand (docs/pipeline.md).
The scheduler unpickles the job's task graph and the workers run it, so both import this
project (and anything the job pickles by reference, such as test fakes): ``pythonpath``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


class ClusterError(RuntimeError):
    """The cluster did not start (the message ends with the processes' logs)."""


class LoopbackCluster:
    """A scheduler and ``workers`` single-process workers of ``threads`` threads on 127.0.0.1.

    Args:
        directory: for the scheduler file, the logs and the workers' scratch space.
        workers, threads: worker processes, and threads in each (tasks run at once per worker).
        pythonpath: folders put first on the processes' ``PYTHONPATH``.
        timeout: seconds to wait for the scheduler and every worker to be ready.
        idle_timeout: seconds after which an idle scheduler exits (its workers follow), so a
            cluster whose owner died without stopping it does not linger; ``None`` = never.
    """

    def __init__(self, directory: str | os.PathLike, workers: int = 2, threads: int = 1,
                 pythonpath: Sequence[str | os.PathLike] = (), timeout: float = 60.0,
                 idle_timeout: float | None = None):
        if workers < 1 or threads < 1:
            raise ValueError(f"workers and threads must be >= 1, got {workers} and {threads}")
        self.directory = Path(directory)
        self.workers, self.threads, self.timeout, self.idle_timeout = workers, threads, timeout, idle_timeout
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join([str(p) for p in pythonpath]
                                                 + [p for p in [os.environ.get("PYTHONPATH")] if p])
        self.scheduler: subprocess.Popen | None = None
        self.worker_procs: list[subprocess.Popen] = []
        self.address: str | None = None

    @property
    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.worker_procs]

    def start(self) -> "LoopbackCluster":
        """Start the processes and wait until every worker is registered; on failure stop them
        and raise :class:`ClusterError`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        scheduler_file = self.directory / "scheduler.json"
        scheduler_file.unlink(missing_ok=True)
        try:
            args = ["--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(scheduler_file)]
            if self.idle_timeout is not None:
                args += ["--idle-timeout", f"{self.idle_timeout}s"]
            self.scheduler = self._spawn("dask_scheduler", args, "scheduler.log")
            self.address = self._wait_for_address(scheduler_file)
            for i in range(self.workers):
                self.worker_procs.append(self._spawn("dask_worker", [
                    self.address, "--host", "127.0.0.1", "--nthreads", str(self.threads), "--no-nanny",
                    "--no-dashboard", "--name", f"worker-{i}", "--death-timeout", "60",
                    "--local-directory", str(self.directory / f"worker-{i}")], f"worker-{i}.log"))
            self._wait_for_workers()
        except ClusterError:
            self.stop()
            raise
        except Exception as e:  # a client that cannot connect, a file we cannot write...
            self.stop()
            raise ClusterError(f"the cluster did not start: {e!r}\n{self.logs()}") from e
        except BaseException:  # Ctrl-C: leave nothing running
            self.stop()
            raise
        return self

    def _spawn(self, module: str, args: list[str], log_name: str) -> subprocess.Popen:
        log = open(self.directory / log_name, "wb")
        try:
            return subprocess.Popen([sys.executable, "-m", f"distributed.cli.{module}", *args], env=self.env,
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()  # the child holds its own descriptor

    def _wait_for_address(self, scheduler_file: Path) -> str:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.scheduler.poll() is not None:
                raise ClusterError(f"the scheduler exited with status {self.scheduler.returncode}:\n{self.logs()}")
            try:  # written once the scheduler listens; a half-written file is not JSON yet
                return json.loads(scheduler_file.read_text())["address"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.1)
        raise ClusterError(f"no scheduler address after {self.timeout:.0f}s:\n{self.logs()}")

    def _wait_for_workers(self) -> None:
        from distributed import Client

        with Client(self.address, timeout=self.timeout) as client:
            deadline = time.monotonic() + self.timeout
            while len(client.nthreads()) < self.workers:
                dead = [p.pid for p in self.worker_procs if p.poll() is not None]
                if dead:
                    raise ClusterError(f"worker process(es) {dead} exited:\n{self.logs()}")
                if time.monotonic() > deadline:
                    raise ClusterError(f"fewer than {self.workers} workers after {self.timeout:.0f}s:\n{self.logs()}")
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop the workers, then the scheduler (the other order leaves workers trying to reach
        it): SIGTERM, then SIGKILL after 10 s. Idempotent."""
        for group in (self.worker_procs, [self.scheduler] if self.scheduler else []):
            for proc in group:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in group:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)

    def logs(self, lines: int = 30) -> str:
        """The last ``lines`` lines of every process's log."""
        out = []
        for path in sorted(self.directory.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(out)

    def __enter__(self) -> "LoopbackCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

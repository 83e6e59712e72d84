"""The augmentation service under load: throughput against the in-process engine, overload, faults.

    python bench/augment_service.py            # 256 SST-2 dev sentences, 60 s overload, 200-record builds
    python bench/augment_service.py --quick    # a smoke run (~1 min)

1. Throughput: the in-process engine (``Augmenter.augment_batch`` on chunks of ``--max-batch-texts``)
   and then ``augment serve`` (a separate process on loopback) with 1, 4 and 16 concurrent clients,
   each sending 8-text requests, on the same texts. Both warm (one untimed pass each, so both have
   the same GloVe cache). Every answer is checked against the engine's (same ids and parameters).
2. Overload: 4x more clients than the queue holds (``--max-queue``) for ``--overload-seconds``;
   clients wait the ``Retry-After`` they are given. Every answer must be 200 or 503, the service
   alive after; its peak RSS (VmHWM) is reported.
3. Fault: the corpus builder with ``--augment-service``, the service killed (SIGKILL) and restarted
   mid-build: its shards against an in-process build's; then killed and not restarted: the build
   must fail without a manifest.
"""
from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from augment.assets import asset  # noqa: E402

RUNNER = "--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner"
TEXTS_PER_REQUEST = 8


def sst2_dev(n: int) -> list[str]:
    with open(asset("glue", "SST-2", "dev.tsv"), encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    return [r[0] for r in rows[:n]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """``augment serve`` in a child process."""

    def __init__(self, teacher: str, glove: str, port: int, *flags: str):
        self.port, self.url = port, f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "augment.cli", "serve", "--teacher", teacher, "--glove", glove,
               "--port", str(port), *flags]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while True:
            try:
                if request(self.port, "GET", "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"augment serve did not start: {self.proc.stderr.read()[-2000:]}")
            time.sleep(0.2)

    def peak_rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def request(port: int, method: str, path: str, body=None, conn: http.client.HTTPConnection | None = None):
    """(status, headers, JSON) of one request (on ``conn`` when given: kept alive)."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), json.loads(r.read())
    finally:
        if own:
            conn.close()


def run_clients(port: int, bodies: list[dict], clients: int, until: float | None = None):
    """``clients`` threads sending ``bodies`` (each once; or round and round until ``until``).
    Returns (seconds, [(status, latency s, body index, answer)])."""
    lock, out, nxt = threading.Lock(), [], [0]

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if until is None and i >= len(bodies):
                break
            if until is not None and time.monotonic() >= until:
                break
            t = time.perf_counter()
            try:
                status, headers, answer = request(port, "POST", "/v1/augment", bodies[i % len(bodies)], conn)
            except (OSError, http.client.HTTPException) as e:
                status, headers, answer = f"error: {type(e).__name__}", {}, None
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            latency = time.perf_counter() - t
            with lock:
                out.append((status, latency, i % len(bodies), answer))
            if status == 503:  # a well-behaved client waits as told
                wait = float(headers.get("retry-after") or headers.get("Retry-After") or 1)
                time.sleep(min(wait, max(0.0, (until or time.monotonic()) - time.monotonic())))
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, out


def load() -> str:
    """The 1-minute load average (other work on the machine shows here)."""
    return f"{os.getloadavg()[0]:.2f}"


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


# -- 1. throughput -----------------------------------------------------------------------------
def throughput(args, texts: list[str]) -> list[dict]:
    import torch

    from augment import Augmenter

    ids = [f"t{i}" for i in range(len(texts))]
    bodies = [{"texts": texts[i:i + TEXTS_PER_REQUEST], "ids": ids[i:i + TEXTS_PER_REQUEST]}
              for i in range(0, len(texts), TEXTS_PER_REQUEST)]
    engine = Augmenter.from_pretrained(args.teacher, args.glove)
    step = args.max_batch_texts

    def engine_pass():
        return [a for s in range(0, len(texts), step) for a in engine.augment_batch(texts[s:s + step], ids[s:s + step])]

    expected = {a.id: a.record() for a in engine_pass()}  # the warm-up pass, untimed
    t = time.perf_counter()
    engine_pass()
    engine_rate = len(texts) / (time.perf_counter() - t)
    rows = [{"setting": f"in-process engine ({step}-text batches)", "texts/s": engine_rate, "vs engine": 1.0,
             "p50 ms": None, "p99 ms": None, "errors": 0}]
    print(f"engine: {engine_rate:.1f} texts/s ({torch.get_num_threads()} torch threads); load average {load()}",
          flush=True)
    del engine
    service = Service(args.teacher, args.glove, free_port(), "--max-batch-texts", str(step), "--max-queue", "64")
    try:
        run_clients(service.port, bodies, 16)  # warm-up, untimed
        for clients in args.clients:
            before = request(service.port, "GET", "/healthz")[2]
            seconds, out = run_clients(service.port, bodies, clients)
            wrong = sum(1 for status, _, i, a in out
                        if status != 200 or a["results"] != [expected[x] for x in bodies[i]["ids"]])
            lat = [o[1] for o in out]
            rate = len(texts) / seconds
            health = request(service.port, "GET", "/healthz")[2]
            rows.append({"setting": f"service, {clients} client(s) x {TEXTS_PER_REQUEST}-text requests",
                         "texts/s": rate, "vs engine": rate / engine_rate, "p50 ms": 1000 * percentile(lat, 0.5),
                         "p99 ms": 1000 * percentile(lat, 0.99), "errors": wrong,
                         "texts per engine batch": (health["texts"] - before["texts"])
                         / max(1, health["batches"] - before["batches"])})
            print(f"{clients} clients: {rate:.1f} texts/s, errors {wrong}; load average {load()}", flush=True)
        rows[-1]["service peak RSS MB"] = service.peak_rss_mb()
    finally:
        service.stop()
    return rows


# -- 2. overload -------------------------------------------------------------------------------
def overload(args, texts: list[str]) -> dict:
    queue = args.overload_queue
    bodies = [{"texts": texts[i:i + TEXTS_PER_REQUEST]} for i in range(0, len(texts), TEXTS_PER_REQUEST)]
    service = Service(args.teacher, args.glove, free_port(), "--max-queue", str(queue))
    try:
        seconds, out = run_clients(service.port, bodies, 4 * queue, until=time.monotonic() + args.overload_seconds)
        alive = service.proc.poll() is None and request(service.port, "GET", "/healthz")[0] == 200
        statuses: dict = {}
        for status, *_ in out:
            statuses[status] = statuses.get(status, 0) + 1
        ok = [o[1] for o in out if o[0] == 200]
        return {"clients": 4 * queue, "queue": queue, "seconds": round(seconds, 1), "statuses": statuses,
                "only 200 or 503": set(statuses) <= {200, 503}, "alive after": alive,
                "p50 ms (200)": round(1000 * percentile(ok, 0.5)), "p99 ms (200)": round(1000 * percentile(ok, 0.99)),
                "max ms (any)": round(1000 * max(o[1] for o in out)), "peak RSS MB": round(service.peak_rss_mb())}
    finally:
        service.stop()


# -- 3. fault ----------------------------------------------------------------------------------
def builder(args, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "pipelines/augment.py", "--task", "sst2", "--input", args.input, "--output", str(out),
           "--max-records", str(args.records), "--n-aug", "4", "--records-per-batch", "8", "--num-shards", "4",
           "--progress-seconds", "1000", RUNNER, *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def shards(out: Path) -> dict[str, bytes] | None:
    if not (out / "manifest.json").exists():
        return None
    manifest = json.loads((out / "manifest.json").read_text())
    return {s["file"]: (out / s["file"]).read_bytes() for s in manifest["shards"]}


def fault(args, work: Path) -> dict:
    t = time.perf_counter()
    ref = builder(args, work / "local", "--teacher", args.teacher, "--glove", args.glove)
    _, err = ref.communicate()
    if ref.returncode:
        raise RuntimeError(f"in-process build failed: {err[-2000:]}")
    result = {"records": args.records, "in-process build s": round(time.perf_counter() - t, 1)}
    port = free_port()
    service = Service(args.teacher, args.glove, port)
    t = time.perf_counter()
    build = builder(args, work / "served", "--augment-service", service.url)
    while request(port, "GET", "/healthz")[2]["requests"] < args.kill_after:
        time.sleep(0.05)
    service.kill()
    time.sleep(args.down_seconds)
    service = Service(args.teacher, args.glove, port)
    _, err = build.communicate()
    service_requests_after = request(port, "GET", "/healthz")[2]["requests"]
    service.stop()
    local, served = shards(work / "local"), shards(work / "served")
    result |= {"killed after requests": args.kill_after, "down s (+ restart)": args.down_seconds,
               "build exit": build.returncode, "build s": round(time.perf_counter() - t, 1),
               "retries logged": err.count("retrying in"), "requests to the restarted service": service_requests_after,
               "shards identical to in-process": served is not None and served == local}
    # Killed and not restarted: the build must fail, leaving no manifest.
    service = Service(args.teacher, args.glove, port)
    build = builder(args, work / "dead", "--augment-service", service.url, "--augment-service-retry-seconds", "5")
    while request(port, "GET", "/healthz")[2]["requests"] < args.kill_after:
        time.sleep(0.05)
    service.kill()
    _, err = build.communicate()
    result |= {"never restarted: build exit": build.returncode,
               "never restarted: manifest written": (work / "dead" / "manifest.json").exists(),
               "never restarted: error": next((line.strip()[:160] for line in reversed(err.splitlines())
                                               if "no answer after" in line), "?")}
    return result


def table(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    fmt = lambda v: "" if v is None else (f"{v:.2f}" if isinstance(v, float) and v < 10 else  # noqa: E731
                                          f"{v:.1f}" if isinstance(v, float) else str(v))
    lines = ["| " + " | ".join(keys) + " |", "| " + " | ".join("---" for _ in keys) + " |"]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def machine() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True,
                     text=True).stdout.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} CPUs"


def main() -> None:
    import tempfile

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke run: 64 texts, 10 s overload, 40-record builds")
    p.add_argument("--texts", type=int, default=256, help="SST-2 dev sentences (throughput)")
    p.add_argument("--clients", default="1,4,16", help="concurrent clients to measure")
    p.add_argument("--max-batch-texts", type=int, default=128)
    p.add_argument("--overload-queue", type=int, default=8, help="the overload service's --max-queue")
    p.add_argument("--overload-seconds", type=float, default=60.0)
    p.add_argument("--records", type=int, default=200, help="SST-2 train records per fault build")
    p.add_argument("--kill-after", type=int, default=8, help="requests the service answers before it is killed")
    p.add_argument("--down-seconds", type=float, default=3.0)
    p.add_argument("--skip", default="", help="comma-separated: throughput, overload, fault")
    p.add_argument("--teacher", default=str(asset("models", "minilm-l6-mlm")))
    p.add_argument("--glove", default=str(asset("glove", "glove.6B.50d.top100k.txt")))
    p.add_argument("--input", default=str(asset("glue", "SST-2", "train.tsv")))
    args = p.parse_args()
    if args.quick:
        args.texts, args.overload_seconds, args.records, args.kill_after = 64, 10.0, 40, 2
    args.clients = [int(c) for c in args.clients.split(",")]
    skip = set(args.skip.split(","))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts = sst2_dev(args.texts)
    print(f"machine: {machine()}; {time.strftime('%Y-%m-%d')}; python {platform.python_version()}", flush=True)
    if "throughput" not in skip:
        print("\n## Throughput (loopback)\n\n" + table(throughput(args, texts)), flush=True)
    if "overload" not in skip:
        print("\n## Overload\n\n" + table([overload(args, texts)]), flush=True)
    if "fault" not in skip:
        with tempfile.TemporaryDirectory() as work:
            print("\n## Fault\n\n" + table([fault(args, Path(work))]), flush=True)


if __name__ == "__main__":
    main()

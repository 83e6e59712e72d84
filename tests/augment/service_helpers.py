"""Helpers of the service tests: a service in a thread with a gate on its engine, raw HTTP calls."""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

from augment.serve import Limits, RunningService, create_app, run_jobs, service_info

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class GatedEngine:
    """The service's engine function, held at a gate: batches wait until :meth:`open` (or run
    freely when opened at the start). Records the requests (jobs) of every batch it ran."""

    def __init__(self, augmenter, max_batch_texts: int, opened: bool = True):
        self.augmenter, self.max_batch_texts = augmenter, max_batch_texts
        self.gate = threading.Event()
        if opened:
            self.gate.set()
        self.batches: list[int] = []  # requests per batch, in order

    def __call__(self, jobs):
        self.gate.wait(timeout=60)
        self.batches.append(len(jobs))
        return run_jobs(self.augmenter, jobs, self.max_batch_texts)


def start_service(augmenter, teacher: str, glove: str, limits: Limits = Limits(), token: str | None = None,
                  gate: GatedEngine | None = None) -> tuple[RunningService, object]:
    """(running service, its app) for ``augmenter`` loaded from ``teacher`` and ``glove``."""
    info = service_info(teacher, glove, augmenter.config, limits)
    app = create_app(augmenter, info, limits, token, run=gate)
    return RunningService(app), app


def call(url: str, path: str, body=None, raw: bytes | None = None, headers: dict | None = None,
         method: str | None = None) -> tuple[int, dict, object]:
    """(status, headers (names lower-cased), JSON answer) of one request; ``raw`` sends bytes as they are."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url + path, data=data, headers=headers or {}, method=method)
    try:
        with NO_PROXY.open(request, timeout=120) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, json.loads(e.read())


def wait_until(predicate, what: str, seconds: float = 60) -> None:
    """Poll ``predicate`` until true (an ordering condition, never a timing assertion)."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.01)

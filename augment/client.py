"""A client of the augmentation service (``augment serve``) with the engine's batch interface.

    from augment.client import ServiceClient
    client = ServiceClient("http://127.0.0.1:8080", n_aug=4, seed=42)
    client.augment_batch(["a gripping , funny film"], ["s1"])  # [Augmented], as Augmenter.augment_batch

Standard library only (no server packages needed where it runs). Requests that fail for the
service's sake (connection refused or reset, timeouts, 502/503/504) are retried with exponential
backoff (``Retry-After`` honoured) until ``retry_seconds`` have passed; then :class:`ServiceError`.
A request the service refuses for its content (400, 413, 422, or 500: the engine failed on these
texts) raises :class:`RequestRefused` at once. Every answer names the service's engine (its
``/v1/info`` fingerprint): an answer from another engine (a service restarted with other files or
parameters) is a :class:`ServiceError`, never a silent change of output.
"""
from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any, Sequence

from augment.augmenter import Augmented

log = logging.getLogger(__name__)

ENGINE_HEADER = "X-Augment-Engine"  # as augment.serve sets it (that module needs the server packages)
RETRIABLE = (502, 503, 504)
REFUSED = (400, 413, 422, 500)


class ServiceError(RuntimeError):
    """The service cannot be used: unreachable past the retry deadline, token refused, not an
    augmentation service, or its engine changed. Fatal for a corpus build."""


class RequestRefused(ValueError):
    """The service refused a request for its content: ``status`` and the ``field`` it names."""

    def __init__(self, status: int, field: str | None, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.field = status, field


class ServiceClient:
    """The augmentation service behind :class:`augment.Augmenter`'s batch methods.

    Args:
        url: the service, ``http://HOST:PORT``.
        token: the bearer token, when the service requires one.
        n_aug, p_t, seed: the sampling parameters sent with every request (None: the service's).
        retry_seconds: how long to keep retrying a request the service could not answer.
        timeout: seconds one HTTP request may take (a queued batch included).
        expect_engine: the engine fingerprint answers must carry (default: the one ``/v1/info``
            gives on first use).
    Environment proxies are not used: the service is reached directly.
    """

    def __init__(self, url: str, token: str | None = None, *, n_aug: int | None = None, p_t: float | None = None,
                 seed: int | None = None, retry_seconds: float = 300.0, timeout: float = 600.0,
                 expect_engine: str | None = None):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.token, self.retry_seconds, self.timeout = token, retry_seconds, timeout
        self.sampling = {k: v for k, v in (("n_aug", n_aug), ("p_t", p_t), ("seed", seed)) if v is not None}
        self.expect_engine = expect_engine
        self.retries = 0  # requests sent again after a failure (for logs and benchmarks)
        self._info: dict | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # -- the engine's interface ------------------------------------------------------------------
    def info(self) -> dict:
        """The service's ``GET /v1/info`` (fetched once)."""
        if self._info is None:
            info = self._call("GET", "/v1/info")
            if not isinstance(info, dict) or "engine" not in info:
                raise ServiceError(f"{self.url} is not an augmentation service (/v1/info has no engine)")
            if self.expect_engine is None:
                self.expect_engine = info["engine"]
            elif info["engine"] != self.expect_engine:
                raise ServiceError(self._changed(info["engine"]))
            self._info = info
        return self._info

    def words(self, text: str) -> list[str]:
        """The words of ``text`` as the service's engine sees them."""
        return self._call("POST", "/v1/words", {"texts": [text]})["results"][0]["words"]

    def augment_batch(self, texts: Sequence[str], ids: Sequence[str] | None = None, positions=None) -> list[Augmented]:
        """As :meth:`augment.Augmenter.augment_batch`: ``ids`` default to the texts themselves;
        ``positions``, per text, the word positions that may be replaced (None = all)."""
        texts = list(texts)
        ids = list(texts) if ids is None else [str(i) for i in ids]
        if len(ids) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(ids)} ids")
        step = self.info()["limits"]["max_texts"]
        out = []
        for start in range(0, len(texts), step):
            body = {"texts": texts[start:start + step], "ids": ids[start:start + step], "return_words": True,
                    **self.sampling}
            if positions is not None:
                body["positions"] = [None if p is None else sorted(int(x) for x in p)
                                     for p in positions[start:start + step]]
            for r in self._call("POST", "/v1/augment", body)["results"]:
                out.append(Augmented(id=r["id"], texts=[r["text"], *r["variants"]], words=r["words"],
                                     variant_words=r["variant_words"]))
        return out

    def candidates(self, texts: Sequence[str]) -> list[dict]:
        """``augment candidates``' objects {text, words, candidates} for ``texts``."""
        step = self.info()["limits"]["max_texts"]
        texts = list(texts)
        return [r for start in range(0, len(texts), step)
                for r in self._call("POST", "/v1/candidates", {"texts": texts[start:start + step]})["results"]]

    def stats(self) -> dict:
        """Nothing: the service counts its own work (``GET /healthz``)."""
        return {}

    # -- HTTP ------------------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None) -> Any:
        """The JSON answer of one request, retried while the service cannot answer."""
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        deadline = time.monotonic() + self.retry_seconds
        delay, attempts = 0.5, 0
        while True:
            attempts += 1
            try:
                status, headers, payload = self._once(method, path, data)
            except (OSError, http.client.HTTPException, ValueError) as e:  # refused, reset, timed out, cut short
                problem, wait = f"{type(e).__name__}: {e}", delay
            else:
                if status == 200:
                    engine = headers.get(ENGINE_HEADER)
                    if self.expect_engine is not None and engine != self.expect_engine:
                        raise ServiceError(self._changed(engine))
                    return payload
                message = payload.get("error") if isinstance(payload, dict) else str(payload)[:200]
                if status in REFUSED:
                    raise RequestRefused(status, payload.get("field") if isinstance(payload, dict) else None, message)
                if status not in RETRIABLE:
                    raise ServiceError(f"{method} {self.url}{path}: HTTP {status}: {message}")
                problem = f"HTTP {status}: {message}"
                retry_after = headers.get("Retry-After", "")
                wait = max(delay, float(retry_after)) if retry_after.isdigit() else delay
            if time.monotonic() + wait > deadline:
                raise ServiceError(f"{method} {self.url}{path}: no answer after {attempts} attempt(s) over "
                                   f"{self.retry_seconds:g} s; last: {problem}")
            log.warning("%s %s%s: %s; retrying in %.1f s", method, self.url, path, problem, wait)
            self.retries += 1
            time.sleep(wait)
            delay = min(delay * 2, 10.0)

    def _once(self, method: str, path: str, data: bytes | None) -> tuple[int, Any, Any]:
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return response.status, response.headers, json.loads(response.read())
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = raw.decode("utf-8", "replace")
            return e.code, e.headers, payload

    def _changed(self, engine: str | None) -> str:
        return (f"the service at {self.url} now answers with engine {engine}, not {self.expect_engine} "
                "(restarted with another teacher, GloVe file or parameters?)")

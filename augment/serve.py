"""The augmentation service: ``augment serve`` (TinyBERT augmentation, Jiao et al. 2020, over HTTP).

One process loads the teacher and GloVe once and answers JSON requests (see docs/service.md)::

    POST /v1/augment     {"texts": [...], "ids"?, "n_aug"?, "p_t"?, "seed"?, "positions"?, "return_words"?}
                         -> {"results": [{"id", "text", "variants"}, ...]}   (what `augment text` writes)
    POST /v1/candidates  {"texts": [...]} -> {"results": [{"text", "words", "candidates"}, ...]}
    POST /v1/words       {"texts": [...]} -> {"results": [{"text", "words"}, ...]}
    GET  /healthz        200 {"status": "ok", counters...}
    GET  /v1/info        teacher and GloVe identity, engine parameters, limits, package version

**Batching across requests.** Requests are queued; one engine thread takes the first waiting
request, waits up to ``max_wait_ms`` for more, and runs the texts of all it took (at most
``max_batch_texts``) through one candidate search (:meth:`augment.Augmenter.candidates`): the
masked LM and GloVe, the expensive part. The engine is batch-invariant (see
:mod:`augment.candidates`), so a text's candidates are the same whatever texts share its batch. Sampling is per text and cheap:
each text then draws its variants with its own request's ``n_aug``, ``p_t`` and ``seed`` and its
id, exactly as ``augment text`` would. So requests with different sampling parameters share one
batch, and the answer never depends on which requests were merged.

**Limits.** A bounded queue (``max_queue`` requests admitted, waiting or being augmented): past it
the answer is 503 with ``Retry-After``. Every request is validated before it is queued; a bad one
gets a 4xx JSON error ``{"error": message, "field": name}``. Requests choose only texts, ids and
sampling parameters, never the model or a file.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from augment.config import authors_n_aug
from augment.identity import fingerprint, glove_identity, package_version, teacher_identity

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
ENGINE_HEADER = "X-Augment-Engine"  # every answer names the engine (its /v1/info "engine" fingerprint)
BODY_SECONDS = 60  # how long a request that holds a place in the queue may take to send its body
SEED_MAX = 2**32 - 1  # the engine uses a seed's low 32 bits: larger seeds would alias smaller ones


@dataclass(frozen=True)
class Limits:
    """What one request may ask and how much the service holds at once.

    Attributes:
        max_texts: texts per request. max_text_chars: characters per text (and per id).
        max_n_aug: the largest ``n_aug`` a request may ask.
        max_queue: requests admitted at once (waiting or being augmented); past it, 503.
        max_batch_texts: texts per engine batch (texts of several requests merged).
        max_wait_ms: how long a batch's first request waits for others to join it.
    """

    max_texts: int = 256
    max_text_chars: int = 20_000
    max_n_aug: int = 1_000
    max_queue: int = 32
    max_batch_texts: int = 128
    max_wait_ms: float = 5.0

    def __post_init__(self) -> None:
        for name in ("max_texts", "max_text_chars", "max_n_aug", "max_queue", "max_batch_texts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.max_wait_ms <= 10_000:
            raise ValueError(f"max_wait_ms must be in [0, 10000], got {self.max_wait_ms}")

    @property
    def max_body_bytes(self) -> int:
        """The largest request body read: every text and id at its limit, each character written
        as a 6-byte JSON escape, plus room for positions (1 KiB per text) and the rest."""
        return self.max_texts * (12 * self.max_text_chars + 1024) + 65536


class RequestError(ValueError):
    """A request the service refuses: HTTP ``status``, the ``field`` at fault and why."""

    def __init__(self, status: int, field: str | None, message: str):
        super().__init__(message)
        self.status, self.field, self.message = status, field, message

    def body(self) -> dict:
        return {"error": self.message, "field": self.field}


# -- requests ----------------------------------------------------------------------------------
@dataclass
class Job:
    """One request's work: ``kind`` augment, candidates or words; its answer arrives on ``future``."""

    kind: str
    texts: list[str]
    ids: list[str] = field(default_factory=list)
    positions: list[list[int] | None] | None = None
    sampling: dict = field(default_factory=dict)  # p_t, n_aug, seed
    return_words: bool = False
    future: Any = None


_FIELDS = {"augment": {"texts", "ids", "n_aug", "p_t", "seed", "positions", "return_words"},
           "candidates": {"texts"}, "words": {"texts"}}


def parse_json(body: bytes) -> Any:
    """The JSON value of a request body; :class:`RequestError` (400) when it is not UTF-8 JSON."""
    def no_constants(name):
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(body.decode("utf-8"), parse_constant=no_constants)
    except UnicodeDecodeError as e:
        raise RequestError(400, "body", f"the body is not UTF-8 ({e.reason} at byte {e.start})") from None
    except ValueError as e:
        raise RequestError(400, "body", f"malformed JSON: {e}") from None


def parse_request(kind: str, obj: Any, limits: Limits, defaults: dict) -> Job:
    """A validated :class:`Job` from a request's JSON value.

    Args:
        kind: ``augment``, ``candidates`` or ``words``.
        obj: the parsed body. defaults: {p_t, n_aug, seed} of the service (its flags).
    Raises :class:`RequestError`: 400 for a body that is not an object, 422 for a missing, unknown,
    mistyped or out-of-range field, 413 for too many texts or a text over the length limit.
    """
    if not isinstance(obj, dict):
        raise RequestError(400, "body", f"the body must be a JSON object, got {_json_type(obj)}")
    unknown = sorted(set(obj) - _FIELDS[kind])
    if unknown:
        raise RequestError(422, unknown[0], f"{unknown[0]}: unknown field (allowed: {', '.join(sorted(_FIELDS[kind]))}; "
                                            "the model and files are fixed when the service starts)")
    texts = _texts(obj, limits)
    job = Job(kind, texts, ids=[f"text-{i}" for i in range(len(texts))])  # `augment text --text`'s ids
    if kind != "augment":
        return job
    if obj.get("ids") is not None:
        job.ids = _ids(obj["ids"], len(texts), limits)
    job.sampling = {"n_aug": _n_aug(obj.get("n_aug", defaults["n_aug"]), limits),
                    "p_t": _p_t(obj.get("p_t", defaults["p_t"])),
                    "seed": _seed(obj.get("seed", defaults["seed"]))}
    if obj.get("positions") is not None:
        job.positions = _positions(obj["positions"], len(texts))
    return_words = obj.get("return_words", False)
    if not isinstance(return_words, bool):
        raise RequestError(422, "return_words", f"return_words must be true or false, got {_json_type(return_words)}")
    job.return_words = return_words
    return job


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
             dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _texts(obj: dict, limits: Limits) -> list[str]:
    if "texts" not in obj:
        raise RequestError(422, "texts", "texts: missing (an array of strings)")
    texts = obj["texts"]
    if not isinstance(texts, list):
        raise RequestError(422, "texts", f"texts must be an array of strings, got {_json_type(texts)}")
    if not texts:
        raise RequestError(422, "texts", "texts is empty")
    if len(texts) > limits.max_texts:
        raise RequestError(413, "texts", f"texts has {len(texts)} items, more than the limit of {limits.max_texts} "
                                         "per request; split it")
    _check_strings("texts", texts, limits.max_text_chars)
    return texts


def _check_strings(field: str, items: list, max_chars: int) -> None:
    """Each ``items[i]`` a string of at most ``max_chars`` characters; else a 4xx naming ``field[i]``."""
    for i, x in enumerate(items):
        if not isinstance(x, str):
            raise RequestError(422, f"{field}[{i}]", f"{field}[{i}] must be a string, got {_json_type(x)}")
        if len(x) > max_chars:
            raise RequestError(413, f"{field}[{i}]", f"{field}[{i}] has {len(x)} characters, more than the limit "
                                                     f"of {max_chars}")


def _ids(ids: Any, n: int, limits: Limits) -> list[str]:
    if not isinstance(ids, list) or len(ids) != n:
        got = f"{len(ids)} items" if isinstance(ids, list) else _json_type(ids)
        raise RequestError(422, "ids", f"ids must be an array of {n} strings (one per text), got {got}")
    _check_strings("ids", ids, limits.max_text_chars)
    return ids


def _n_aug(value: Any, limits: Limits) -> int:
    if isinstance(value, str):  # a GLUE task name, as `augment text --n-aug sst2`
        try:
            value = authors_n_aug(value)
        except ValueError as e:
            raise RequestError(422, "n_aug", f"n_aug: {e}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(422, "n_aug", f"n_aug must be an integer or a GLUE task name, got {_json_type(value)}")
    if not 0 <= value <= limits.max_n_aug:
        raise RequestError(422, "n_aug", f"n_aug must be in [0, {limits.max_n_aug}], got {value}")
    return value


def _p_t(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(422, "p_t", f"p_t must be a number, got {_json_type(value)}")
    if not 0.0 <= value <= 1.0:
        raise RequestError(422, "p_t", f"p_t must be in [0, 1], got {value}")
    return float(value)


def _seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(422, "seed", f"seed must be an integer, got {_json_type(value)}")
    if not 0 <= value <= SEED_MAX:
        raise RequestError(422, "seed", f"seed must be in [0, {SEED_MAX}], got {value}")
    return value


def _positions(value: Any, n: int) -> list[list[int] | None]:
    if not isinstance(value, list) or len(value) != n:
        got = f"{len(value)} items" if isinstance(value, list) else _json_type(value)
        raise RequestError(422, "positions", f"positions must be an array of {n} items (null or an array of word "
                                             f"positions, one per text), got {got}")
    for i, p in enumerate(value):
        if p is None:
            continue
        if not isinstance(p, list) or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in p):
            raise RequestError(422, f"positions[{i}]", f"positions[{i}] must be null or an array of word positions "
                                                       "(integers >= 0)")
    return value


# -- the engine side ---------------------------------------------------------------------------
def run_jobs(augmenter, jobs: Sequence[Job], max_batch_texts: int) -> list:
    """Answer ``jobs`` with one candidate search over all their texts (chunks of
    ``max_batch_texts``), each text then sampled with its own job's parameters.

    Returns one item per job: its ``results`` list, or the exception that failed it. A failure of
    the merged search is retried job by job, so one bad request fails only itself.
    """
    try:
        return _run_merged(augmenter, jobs, max_batch_texts)
    except Exception as e:
        if len(jobs) == 1:
            log.warning("engine failed on a request of %d texts: %r", len(jobs[0].texts), e)
            return [e]
    return [run_jobs(augmenter, [job], max_batch_texts)[0] for job in jobs]


def _run_merged(augmenter, jobs: Sequence[Job], max_batch_texts: int) -> list:
    searching = [j for j in jobs if j.kind != "words"]
    texts = [t for j in searching for t in j.texts]
    restricted = any(j.positions is not None for j in searching)
    positions = [p for j in searching for p in (j.positions or [None] * len(j.texts))] if restricted else None
    cands = []
    for start in range(0, len(texts), max_batch_texts):
        end = start + max_batch_texts
        cands += augmenter.candidates(texts[start:end], positions=None if positions is None else positions[start:end])
    out, at = [], 0
    for job in jobs:
        if job.kind == "words":
            out.append([{"text": t, "words": augmenter.words(t)} for t in job.texts])
            continue
        mine, at = cands[at:at + len(job.texts)], at + len(job.texts)
        if job.kind == "candidates":
            out.append([c.record(t) for t, c in zip(job.texts, mine)])
            continue
        results = []
        for text, example_id, c in zip(job.texts, job.ids, mine):
            aug = augmenter.augmented(text, example_id, c, **job.sampling)
            record = aug.record()
            if job.return_words:
                record |= {"words": aug.words, "variant_words": aug.variant_words}
            results.append(record)
        out.append(results)
    return out


class Batcher:
    """The bounded request queue and the engine thread that serves it in merged batches.

    Args:
        run: ``(jobs) -> one result or exception per job`` (run in the engine thread).
        limits: the queue and batch bounds.
    """

    def __init__(self, run: Callable[[list[Job]], list], limits: Limits):
        self.run, self.limits = run, limits
        self.admitted = 0  # requests holding a place (from admission until answered)
        self.queued_texts = 0
        self.counters = {"requests": 0, "texts": 0, "batches": 0, "largest_batch_texts": 0,
                         "largest_batch_requests": 0, "refused_queue_full": 0, "engine_errors": 0}
        self.seconds_per_text = 0.0  # running estimate, for Retry-After
        self._queue: asyncio.Queue[Job] | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="augment-engine")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop(), name="augment-batcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def admit(self) -> bool:
        """Take a place in the queue; False when it is full (the caller answers 503)."""
        if self.admitted >= self.limits.max_queue:
            self.counters["refused_queue_full"] += 1
            return False
        self.admitted += 1
        return True

    def release(self) -> None:
        self.admitted -= 1

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained (1 to 60): what it holds at the measured rate."""
        return int(min(60, max(1, math.ceil(self.queued_texts * self.seconds_per_text))))

    async def submit(self, job: Job) -> list:
        """The job's results, once its batch has run (the caller holds a place: :meth:`admit`)."""
        job.future = asyncio.get_running_loop().create_future()
        self.queued_texts += len(job.texts)
        self._queue.put_nowait(job)
        return await job.future

    async def _loop(self) -> None:
        carry: Job | None = None
        while True:
            first = carry or await self._queue.get()
            batch, carry = await self._collect(first)
            try:
                await self._process(batch)
            except Exception as e:  # never let the loop die: fail this batch, serve the next
                log.exception("batch failed")
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(e)

    async def _collect(self, first: Job) -> tuple[list[Job], Job | None]:
        """``first`` and the requests that arrive within ``max_wait_ms`` while the batch has room;
        returns the batch and the request that did not fit (it opens the next batch)."""
        loop = asyncio.get_running_loop()
        batch, n = [first], len(first.texts)
        deadline = loop.time() + self.limits.max_wait_ms / 1000
        while n < self.limits.max_batch_texts:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), left)
                except asyncio.TimeoutError:
                    break
            if n + len(job.texts) > self.limits.max_batch_texts:
                return batch, job
            batch.append(job)
            n += len(job.texts)
        return batch, None

    async def _process(self, batch: list[Job]) -> None:
        n = sum(len(j.texts) for j in batch)
        start = time.monotonic()
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self.run, batch)
        finally:
            self.queued_texts -= n
        per_text = (time.monotonic() - start) / max(n, 1)
        self.seconds_per_text = per_text if not self.seconds_per_text else 0.8 * self.seconds_per_text + 0.2 * per_text
        c = self.counters
        c["batches"] += 1
        c["requests"] += len(batch)
        c["texts"] += n
        c["largest_batch_texts"] = max(c["largest_batch_texts"], n)
        c["largest_batch_requests"] = max(c["largest_batch_requests"], len(batch))
        for job, result in zip(batch, results):
            if job.future.done():  # the client went away
                continue
            if isinstance(result, Exception):
                c["engine_errors"] += 1
                job.future.set_exception(result)
            else:
                job.future.set_result(result)


# -- identity ----------------------------------------------------------------------------------
def service_info(teacher: str, glove: str, config, limits: Limits) -> dict:
    """What ``GET /v1/info`` answers: what a corpus manifest records of its engine.

    Args:
        teacher, glove: the paths (or hub name) the service loaded. config: its
            :class:`augment.AugmentConfig`. limits: its :class:`Limits`.
    ``engine`` fingerprints everything that decides an answer (teacher and GloVe hashes, engine
    parameters, compute settings, package version): every answer carries it in ``X-Augment-Engine``,
    so a client notices a service restarted with another model.
    """
    params = config.algorithm_params()
    defaults = {k: params.pop(k) for k in ("p_t", "n_aug", "seed")}  # a request may choose these
    info = {"service": "bert-compress augmentation", "package": {"name": "bert-compress", "version": package_version()},
            "teacher": teacher_identity(teacher), "glove": glove_identity(glove), "params": params,
            "defaults": defaults,
            "compute": {"batch_size": config.batch_size, "pad_multiple": config.pad_multiple, "device": config.device},
            "limits": asdict(limits) | {"max_body_bytes": limits.max_body_bytes, "seed_max": SEED_MAX}}
    decides = {k: info[k] for k in ("params", "compute", "package")}
    decides |= {"teacher": {k: info["teacher"][k] for k in ("weights_sha256", "tokenizer_sha256")},
                "glove_sha256": info["glove"]["sha256"]}
    info["engine"] = fingerprint(decides)
    return info


def check_binding(host: str, token: str | None) -> None:
    """Refuse (``ValueError``) to bind beyond loopback without a bearer token."""
    if host not in LOOPBACK_HOSTS and not token:
        raise ValueError(f"--host {host} is reachable from other machines: give --token-file with a bearer token "
                         "(requests must then send 'Authorization: Bearer TOKEN'), or bind 127.0.0.1")


def read_token(path: str) -> str:
    """The bearer token in a file (surrounding whitespace dropped); ``ValueError`` when empty."""
    with open(path, encoding="utf-8") as f:
        token = f.read().strip()
    if not token or any(c.isspace() for c in token):
        raise ValueError(f"token file {path} must hold one token (no spaces), got "
                         f"{'nothing' if not token else 'whitespace inside'}")
    return token


# -- the HTTP app ------------------------------------------------------------------------------
def create_app(augmenter, info: dict, limits: Limits = Limits(), token: str | None = None,
               run: Callable[[list[Job]], list] | None = None):
    """The Starlette app of the service.

    Args:
        augmenter: a loaded :class:`augment.Augmenter` (its config's p_t, n_aug, seed are the
            requests' defaults).
        info: :func:`service_info` of it. limits: :class:`Limits`.
        token: when given, ``/v1/*`` requires ``Authorization: Bearer TOKEN``.
        run: the engine function (default :func:`run_jobs` on ``augmenter``; tests wrap it).
    """
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    run = run or (lambda jobs: run_jobs(augmenter, jobs, limits.max_batch_texts))
    batcher = Batcher(run, limits)
    defaults = info["defaults"]
    engine_header = {ENGINE_HEADER: info["engine"]}
    started = time.time()

    def error(e: RequestError, headers: dict | None = None) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status, headers=engine_header | (headers or {}))

    def authorised(request: Request) -> bool:
        if token is None:
            return True
        given = request.headers.get("authorization", "")
        return given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), token.encode())

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
            raise RequestError(413, "body", f"the body has {declared} bytes, more than the limit of "
                                            f"{limits.max_body_bytes}")
        chunks, size = [], 0
        async for chunk in request.stream():  # read up to the limit, never more
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise RequestError(413, "body", f"the body is over the limit of {limits.max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def endpoint(kind: str):
        async def handle(request: Request) -> JSONResponse:
            if not authorised(request):
                return error(RequestError(401, "authorization", "missing or wrong bearer token "
                                                                "(send 'Authorization: Bearer TOKEN')"),
                             {"WWW-Authenticate": "Bearer"})
            if not batcher.admit():  # before reading the body: a full queue holds no more bodies
                wait = batcher.retry_after()
                return error(RequestError(503, None, f"the queue is full ({limits.max_queue} requests); retry after "
                                                     f"{wait} s"), {"Retry-After": str(wait)})
            try:
                try:  # a client that holds its place without sending the body loses it
                    body = await asyncio.wait_for(read_body(request), BODY_SECONDS)
                except asyncio.TimeoutError:
                    raise RequestError(408, "body", f"the body did not arrive within {BODY_SECONDS} s") from None
                job = parse_request(kind, parse_json(body), limits, defaults)
                results = await batcher.submit(job)
            except RequestError as e:
                return error(e)
            except ClientDisconnect:
                return error(RequestError(400, "body", "the client disconnected"))
            except Exception as e:  # the engine failed on this request (others are unaffected)
                return error(RequestError(500, None, f"the engine failed on this request: {e!r}"))
            finally:
                batcher.release()
            return JSONResponse({"results": results}, headers=engine_header)
        return handle

    async def healthz(request: Request) -> JSONResponse:
        body = {"status": "ok", "uptime_s": round(time.time() - started, 1), "queue": batcher.admitted,
                **batcher.counters, "mlm_rows": getattr(augmenter.teacher, "rows_run", 0)}
        return JSONResponse(body, headers=engine_header)

    async def get_info(request: Request) -> JSONResponse:
        if not authorised(request):
            return error(RequestError(401, "authorization", "missing or wrong bearer token"),
                         {"WWW-Authenticate": "Bearer"})
        return JSONResponse(info, headers=engine_header)

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    async def http_error(request: Request, exc) -> JSONResponse:  # 404, 405: JSON like every other error
        return JSONResponse({"error": exc.detail, "field": None}, status_code=exc.status_code,
                            headers=dict(exc.headers or {}))

    app = Starlette(exception_handlers={HTTPException: http_error}, routes=[
        Route("/v1/augment", endpoint("augment"), methods=["POST"]),
        Route("/v1/candidates", endpoint("candidates"), methods=["POST"]),
        Route("/v1/words", endpoint("words"), methods=["POST"]),
        Route("/v1/info", get_info, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ], lifespan=lifespan)
    app.state.batcher = batcher
    return app


def serve(app, host: str, port: int, log_level: str = "warning") -> None:
    """Run ``app`` with uvicorn until interrupted (SIGINT/SIGTERM)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level in ("info", "debug"),
                timeout_graceful_shutdown=10)


class RunningService:
    """A service running in a background thread of this process (tests, notebooks): ``url``, ``stop()``.

    Args:
        app: :func:`create_app`'s app. host: loopback by default. port: 0 = a free port.
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import socket
        import threading

        import uvicorn

        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        self.port = sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True,
                                       name=f"augment-serve-{self.port}")
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the service on {self.url} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __enter__(self) -> "RunningService":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

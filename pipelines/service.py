"""The corpus builder on an augmentation service (``--augment-service URL``; Beam-free).

Instead of loading a teacher in every worker, each worker sends its batches to ``augment serve``
(:class:`augment.client.ServiceClient`: retries with backoff while the service is down or full).
The service fixes the engine (teacher, GloVe, K, masked-LM input, stopwords, precision, compute);
the run chooses the sampling (``--n-aug``, ``--p-t``, ``--seed``), sent with every request. The
candidates are batch-invariant and the sampling per text, so the shards are byte-identical to an
in-process build with the same parameters.

Failure is never silent: a service that stays unreachable past the retry deadline, refuses the
token, or answers with another engine than the run started with (restarted with other files)
raises :class:`augment.client.ServiceError`, which fails the build before its manifest is written.
"""
from __future__ import annotations

from augment.client import ServiceClient, ServiceError
from pipelines.manifest import canonical_json

# AugmentConfig fields the service decides (its /v1/info "params" and "compute").
SERVICE_PARAMS = ("k", "mlm_input", "glove_max_words", "stopwords", "keep_special_tokens", "dtype")
SERVICE_COMPUTE = ("batch_size", "pad_multiple", "device")


class ServiceLoader:
    """Builds a :class:`ServiceClient` on a worker (picklable; ``key`` names the service and engine).

    Args:
        url: the service. token: its bearer token (travels with the pipeline).
        sampling: {n_aug, p_t, seed} of the run. engine: the ``/v1/info`` engine fingerprint the
            run started with; answers from another engine fail the build.
        retry_seconds: how long a request is retried while the service cannot answer.
    """

    def __init__(self, url: str, token: str | None, sampling: dict, engine: str, retry_seconds: float = 300.0):
        self.url, self.token, self.sampling = url, token, dict(sampling)
        self.engine, self.retry_seconds = engine, retry_seconds

    @property
    def key(self) -> str:
        return canonical_json(["service", self.url, self.engine, sorted(self.sampling.items())])

    def __call__(self) -> ServiceClient:
        return ServiceClient(self.url, self.token, retry_seconds=self.retry_seconds, expect_engine=self.engine,
                             **self.sampling)


def service_info(url: str, token: str | None, retry_seconds: float) -> dict:
    """The service's ``/v1/info``; ``ValueError`` (for a flag error naming ``--augment-service``)
    when it cannot be had."""
    try:
        return ServiceClient(url, token, retry_seconds=retry_seconds).info()
    except (ServiceError, ValueError) as e:
        raise ValueError(str(e)) from None


class ServiceFlagError(ValueError):
    """A flag of the run that the service cannot honour; ``flag`` names it."""

    def __init__(self, flag: str, message: str):
        super().__init__(message)
        self.flag = flag


def service_params(info: dict, url: str, params: dict, explicit: set[str], flags: dict[str, str]) -> dict:
    """The run's engine parameters on a service: the service's engine and compute settings, the
    run's sampling parameters.

    Args:
        info: the service's ``/v1/info`` (from ``url``). params: the flags' AugmentConfig fields.
        explicit: the fields whose flag the command line set. flags: field -> flag name.
    Raises :class:`ServiceFlagError` for a flag set to another value than the service runs, or a
    sampling parameter outside the service's limits.
    """
    served = dict(info["params"]) | dict(info["compute"])
    served["stopwords"] = None if served["stopwords"] == "authors" else frozenset(served["stopwords"])
    for name in SERVICE_PARAMS + SERVICE_COMPUTE:
        mine = params.get(name)
        if name == "stopwords" and mine is not None:
            mine = frozenset(mine)
        if name in explicit and mine != served[name]:
            shown = sorted(served[name]) if isinstance(served[name], frozenset) else served[name]
            raise ServiceFlagError(flags[name], f"the service at {url} runs {name}={shown!r}, not "
                                                f"{params.get(name)!r}: drop the flag, or start the service with it")
    limits = info["limits"]
    if not 0 <= params["n_aug"] <= limits["max_n_aug"]:
        raise ServiceFlagError(flags["n_aug"], f"must be in [0, {limits['max_n_aug']}] for the service at {url} "
                                               f"(its --max-n-aug), got {params['n_aug']}")
    if not 0 <= params["seed"] <= limits["seed_max"]:
        raise ServiceFlagError(flags["seed"], f"must be in [0, {limits['seed_max']}] for the service, got {params['seed']}")
    return dict(params) | {name: served[name] for name in SERVICE_PARAMS + SERVICE_COMPUTE}

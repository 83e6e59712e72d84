"""The augmentation service (``augment serve``) on a tiny random BERT: answers equal ``augment text``
and ``augment candidates`` however concurrent requests were merged; bad requests, the queue limit
and the token."""
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from click.testing import CliRunner

from augment import Augmenter
from augment.cli import main
from augment.client import RequestRefused, ServiceClient, ServiceError
from augment.serve import Job, Limits, check_binding, run_jobs
from tests.augment.service_helpers import GatedEngine, call, start_service, wait_until

K = "4"
LIMITS = Limits(max_texts=8, max_text_chars=200, max_n_aug=50, max_queue=16, max_batch_texts=64)

# Requests of different texts, ids and sampling parameters; merged into one engine batch below.
REQUESTS = [
    {"texts": ["a good film with great music", "boring plot"]},
    {"texts": ["The acting is heartfelt and the story is wonderfully dull.", ""], "n_aug": 7, "seed": 3},
    {"texts": ["superb performance , terrible script", "the and of"], "p_t": 0.9, "ids": ["line-1", "line-2"]},
    {"texts": ["a good film with great music"], "n_aug": "sst2", "p_t": 0.2, "seed": 11},
    {"texts": ["funny actors , bad plot", "sweet smart comedy", "dull drama"], "n_aug": 3,
     "ids": ["line-1", "line-2", "line-3"]},
]


@pytest.fixture(scope="module")
def augmenter(tiny_mlm, tiny_glove, tmp_path_factory):
    return Augmenter.from_pretrained(str(tiny_mlm), str(tiny_glove), glove_cache_dir=str(tmp_path_factory.mktemp("c")),
                                     k=int(K))


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BERT_COMPRESS_CACHE", str(tmp_path / "cache"))


def cli(command, tiny_mlm, tiny_glove, tmp_path, texts, ids=None, n_aug=None, p_t=None, seed=None):
    """The JSON objects the CLI writes for ``texts``: ``--text`` each (ids text-N), or, when ids
    are line-N, the lines of an input file."""
    args = [command, "--teacher", str(tiny_mlm), "--glove", str(tiny_glove), "--k", K]
    for flag, value in (("--n-aug", n_aug), ("--p-t", p_t), ("--seed", seed)):
        if value is not None:
            args += [flag, str(value)]
    if ids is None:
        args += [a for t in texts for a in ("--text", t)]
    else:
        assert ids == [f"line-{i + 1}" for i in range(len(texts))]
        path = tmp_path / "input.txt"
        path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
        args += ["--input", str(path)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_concurrent_requests_merged_into_one_batch_equal_augment_text(augmenter, tiny_mlm, tiny_glove, tmp_path,
                                                                     cache):
    gate = GatedEngine(augmenter, LIMITS.max_batch_texts, opened=False)
    service, app = start_service(augmenter, str(tiny_mlm), str(tiny_glove), LIMITS, gate=gate)
    batcher = app.state.batcher
    with service, ThreadPoolExecutor(len(REQUESTS) + 1) as pool:
        # One request holds the engine at the gate; the others all queue behind it, then form one batch.
        first = pool.submit(call, service.url, "/v1/augment", {"texts": ["hold the engine"]})
        wait_until(lambda: batcher.counters["requests"] == 0 and batcher.admitted == 1, "the first request in")
        futures = [pool.submit(call, service.url, "/v1/augment", body) for body in REQUESTS]
        wait_until(lambda: batcher._queue.qsize() == len(REQUESTS), "every other request queued")
        gate.gate.set()
        answers = [f.result() for f in futures]
        assert first.result()[0] == 200
    assert gate.batches == [1, len(REQUESTS)]  # the requests were merged into one engine batch
    for body, (status, headers, answer) in zip(REQUESTS, answers):
        assert status == 200, answer
        expected = cli("text", tiny_mlm, tiny_glove, tmp_path, body["texts"], body.get("ids"), body.get("n_aug"),
                       body.get("p_t"), body.get("seed"))
        assert answer["results"] == expected
    assert any(r["variants"] for _, _, a in answers for r in a["results"])  # not vacuous


def test_candidates_and_words_equal_the_cli(augmenter, tiny_mlm, tiny_glove, tmp_path, cache):
    texts = ["The heartfelt film", "the and", "a good film with great music"]
    service, _ = start_service(augmenter, str(tiny_mlm), str(tiny_glove), LIMITS)
    with service:
        status, _, answer = call(service.url, "/v1/candidates", {"texts": texts})
        assert status == 200
        assert answer["results"] == cli("candidates", tiny_mlm, tiny_glove, tmp_path, texts)
        status, _, words = call(service.url, "/v1/words", {"texts": texts})
        assert status == 200 and [w["words"] for w in words["results"]] == [r["words"] for r in answer["results"]]


def test_client_equals_the_engine_with_positions(augmenter, tiny_mlm, tiny_glove):
    texts = ["a good film with great music", "superb performance , terrible script", "boring plot"]
    positions = [[1, 2], None, []]
    service, _ = start_service(augmenter, str(tiny_mlm), str(tiny_glove), LIMITS)
    with service:
        client = ServiceClient(service.url)
        got = client.augment_batch(texts, ["a", "b", "c"], positions=positions)
        assert client.words(texts[1]) == augmenter.words(texts[1])
    assert got == augmenter.augment_batch(texts, ["a", "b", "c"], positions=positions)
    assert got[0].texts[1:] and got[2].texts == ["boring plot"]


def test_info_states_the_engine(augmenter, tiny_mlm, tiny_glove):
    from pipelines.manifest import glove_identity, teacher_identity  # the corpus builder's identity

    service, _ = start_service(augmenter, str(tiny_mlm), str(tiny_glove), LIMITS)
    with service:
        status, headers, info = call(service.url, "/v1/info")
    assert status == 200 and headers["x-augment-engine"] == info["engine"]
    assert info["teacher"] == teacher_identity(str(tiny_mlm))
    assert info["glove"] == glove_identity(str(tiny_glove))
    assert info["params"]["k"] == 4 and info["defaults"] == {"p_t": 0.4, "n_aug": 20, "seed": 42}
    assert info["limits"]["max_texts"] == 8 and info["package"]["version"]


BAD = [
    (b"{not json", 400, "body", "malformed JSON"),
    (b'{"texts": ["a"], "p_t": NaN}', 400, "body", "malformed JSON"),
    (b"\xff\xfe", 400, "body", "not UTF-8"),
    (b"[1, 2]", 400, "body", "must be a JSON object"),
    ({}, 422, "texts", "texts: missing"),
    ({"texts": "a film"}, 422, "texts", "must be an array of strings, got a string"),
    ({"texts": []}, 422, "texts", "texts is empty"),
    ({"texts": ["ok", 3]}, 422, "texts[1]", "texts[1] must be a string, got a number"),
    ({"texts": ["ok", None]}, 422, "texts[1]", "got null"),
    ({"texts": ["a"] * 9}, 413, "texts", "9 items, more than the limit of 8"),
    ({"texts": ["ok", "x" * 201]}, 413, "texts[1]", "201 characters, more than the limit of 200"),
    ({"texts": ["a"], "p_t": 1.5}, 422, "p_t", "p_t must be in [0, 1], got 1.5"),
    ({"texts": ["a"], "p_t": "0.5"}, 422, "p_t", "p_t must be a number"),
    ({"texts": ["a"], "n_aug": -1}, 422, "n_aug", "n_aug must be in [0, 50], got -1"),
    ({"texts": ["a"], "n_aug": 51}, 422, "n_aug", "got 51"),
    ({"texts": ["a"], "n_aug": 2.5}, 422, "n_aug", "n_aug must be an integer"),
    ({"texts": ["a"], "n_aug": "mnli2"}, 422, "n_aug", "no authors' N_a for task 'mnli2'"),
    ({"texts": ["a"], "seed": -1}, 422, "seed", "seed must be in [0, 4294967295], got -1"),
    ({"texts": ["a"], "seed": True}, 422, "seed", "seed must be an integer"),
    ({"texts": ["a", "b"], "ids": ["x"]}, 422, "ids", "array of 2 strings (one per text), got 1 items"),
    ({"texts": ["a"], "ids": [7]}, 422, "ids[0]", "ids[0] must be a string"),
    ({"texts": ["a"], "positions": [[-1]]}, 422, "positions[0]", "integers >= 0"),
    ({"texts": ["a"], "return_words": "yes"}, 422, "return_words", "true or false"),
    ({"texts": ["a"], "teacher": "bert-base-uncased"}, 422, "teacher", "teacher: unknown field"),
    ({"texts": ["a"], "glove": "/etc/passwd"}, 422, "glove", "the model and files are fixed"),
]


@pytest.mark.parametrize("body, status, field, message", BAD, ids=[f"{s}-{f}-{i}" for i, (_, s, f, _) in enumerate(BAD)])
def test_bad_request_names_the_field_and_the_service_keeps_serving(augmenter, tiny_mlm, tiny_glove, body, status,
                                                                  field, message):
    service, _ = start_service(augmenter, str(tiny_mlm), str(tiny_glove), LIMITS)
    with service:
        raw = body if isinstance(body, bytes) else None
        got_status, _, answer = call(service.url, "/v1/augment", body=None if raw else body, raw=raw)
        assert (got_status, answer["field"]) == (status, field)
        assert message in answer["error"]
        ok, _, good = call(service.url, "/v1/augment", {"texts": ["a good film"], "n_aug": 2})
        assert ok == 200 and good["results"][0]["text"] == "a good film"


def test_other_refusals_are_json(augmenter, tiny_mlm, tiny_glove):
    service, _ = start_service(augmenter, str(tiny_mlm), str(tiny_glove), LIMITS)
    with service:
        assert call(service.url, "/v1/candidates", {"texts": ["a"], "n_aug": 3})[2]["field"] == "n_aug"
        status, _, answer = call(service.url, "/v1/augment", method="GET")
        assert status == 405 and answer["field"] is None
        assert call(service.url, "/v1/models", {"texts": ["a"]})[0] == 404
        too_big = b" " * (LIMITS.max_body_bytes + 1)
        status, _, answer = call(service.url, "/v1/augment", raw=too_big)
        assert status == 413 and answer["field"] == "body"


def test_full_queue_answers_503_with_retry_after(augmenter, tiny_mlm, tiny_glove):
    limits = Limits(max_texts=8, max_queue=2, max_batch_texts=64)
    gate = GatedEngine(augmenter, limits.max_batch_texts, opened=False)
    service, app = start_service(augmenter, str(tiny_mlm), str(tiny_glove), limits, gate=gate)
    with service, ThreadPoolExecutor(2) as pool:
        held = [pool.submit(call, service.url, "/v1/augment", {"texts": [f"good film {i}"], "n_aug": 2})
                for i in range(2)]
        wait_until(lambda: app.state.batcher.admitted == 2, "two requests held")
        status, headers, answer = call(service.url, "/v1/augment", {"texts": ["one too many"]})
        assert status == 503 and "queue is full (2 requests)" in answer["error"]
        assert int(headers["retry-after"]) >= 1
        assert call(service.url, "/healthz")[0] == 200  # health is not queued
        gate.gate.set()
        assert [f.result()[0] for f in held] == [200, 200]
        assert call(service.url, "/v1/augment", {"texts": ["room again"]})[0] == 200
        assert app.state.batcher.counters["refused_queue_full"] == 1


def test_token_required_off_loopback(tiny_mlm, tiny_glove, tmp_path):
    with pytest.raises(ValueError, match="--token-file"):
        check_binding("0.0.0.0", None)
    check_binding("0.0.0.0", "s3cret")
    check_binding("127.0.0.1", None)
    base = ["serve", "--teacher", str(tiny_mlm), "--glove", str(tiny_glove)]
    result = CliRunner().invoke(main, [*base, "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "--token-file" in result.output  # refused before loading anything
    empty = tmp_path / "token"
    empty.write_text("\n")
    result = CliRunner().invoke(main, [*base, "--host", "0.0.0.0", "--token-file", str(empty)])
    assert result.exit_code == 2 and "'--token-file'" in result.output and "must hold one token" in result.output
    result = CliRunner().invoke(main, [*base, "--max-queue", "0"])
    assert result.exit_code == 2 and "'--max-queue'" in result.output


def test_bearer_token(augmenter, tiny_mlm, tiny_glove):
    service, _ = start_service(augmenter, str(tiny_mlm), str(tiny_glove), LIMITS, token="s3cret")
    with service:
        body = {"texts": ["a good film"]}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            status, got, answer = call(service.url, "/v1/augment", body, headers=headers)
            assert status == 401 and answer["field"] == "authorization" and got["www-authenticate"] == "Bearer"
        assert call(service.url, "/v1/info")[0] == 401
        assert call(service.url, "/healthz")[0] == 200
        assert call(service.url, "/v1/augment", body, headers={"Authorization": "Bearer s3cret"})[0] == 200
        with pytest.raises(ServiceError, match="401"):
            ServiceClient(service.url).info()
        assert ServiceClient(service.url, token="s3cret").augment_batch(["a good film"])[0].texts[0] == "a good film"


def test_a_failing_request_fails_alone(augmenter):
    """The merged search fails (one request's text breaks the engine): each request is then run
    alone, so only that one fails."""
    real = augmenter.candidates

    def candidates(texts, positions=None):
        if any("EXPLODE" in t for t in texts):
            raise RuntimeError("engine broke")
        return real(texts, positions=positions)

    good = Job("augment", ["a good film"], ids=["g"], sampling={"n_aug": 5, "p_t": 0.4, "seed": 1})
    bad = Job("augment", ["EXPLODE now"], ids=["b"], sampling={"n_aug": 5, "p_t": 0.4, "seed": 1})
    augmenter.candidates = candidates
    try:
        out = run_jobs(augmenter, [good, bad], 64)
    finally:
        del augmenter.candidates
    assert isinstance(out[1], RuntimeError)
    assert out[0] == [augmenter.augmented("a good film", "g", real(["a good film"])[0], n_aug=5, p_t=0.4,
                                          seed=1).record()]


def test_client_refuses_another_engine_and_reports_refusals(augmenter, tiny_mlm, tiny_glove):
    service, _ = start_service(augmenter, str(tiny_mlm), str(tiny_glove), LIMITS)
    with service:
        with pytest.raises(ServiceError, match="not deadbeef"):
            ServiceClient(service.url, expect_engine="deadbeef").augment_batch(["a good film"])
        with pytest.raises(RequestRefused, match="p_t must be in") as e:
            ServiceClient(service.url, p_t=2.0).augment_batch(["a good film"])
        assert e.value.status == 422 and e.value.field == "p_t"
    with pytest.raises(ServiceError, match="no answer after"):
        ServiceClient(service.url, retry_seconds=0.5).augment_batch(["a good film"])  # stopped: refused


@pytest.mark.integration
def test_real_teacher_merged_requests_equal_augment_text(assets, tmp_path, monkeypatch):
    """MiniLM and GloVe 50-d from the assets: four concurrent requests of SST-2 dev sentences with
    two sampling settings, merged into one batch, answer exactly what `augment text` writes."""
    import csv

    monkeypatch.setenv("BERT_COMPRESS_CACHE", str(tmp_path / "cache"))
    teacher, glove = assets / "models" / "minilm-l6-mlm", assets / "glove" / "glove.6B.50d.top100k.txt"
    with open(assets / "glue" / "SST-2" / "dev.tsv", encoding="utf-8") as f:
        sentences = [r[0] for r in list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:17]]
    settings = [{"n_aug": 6, "p_t": 0.4, "seed": 42}, {"n_aug": 3, "p_t": 0.7, "seed": 5}]
    # Each setting's 8 sentences in two requests, ids as `augment text` numbers its 8 --text texts.
    requests = [{"texts": sentences[i:i + 4], "ids": [f"text-{j % 8}" for j in range(i, i + 4)], **settings[i // 8]}
                for i in range(0, 16, 4)]
    real = Augmenter.from_pretrained(str(teacher), str(glove))
    gate = GatedEngine(real, 128, opened=False)
    service, app = start_service(real, str(teacher), str(glove), Limits(), gate=gate)
    with service, ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(call, service.url, "/v1/augment", body) for body in requests]
        wait_until(lambda: app.state.batcher.admitted == len(requests), "every request in")
        gate.gate.set()
        answers = [f.result() for f in futures]
    assert sum(gate.batches) == len(requests) and len(gate.batches) < len(requests)  # some were merged
    for i, s in enumerate(settings):
        texts = sentences[8 * i:8 * i + 8]
        args = ["text", "--teacher", str(teacher), "--glove", str(glove), "--n-aug", str(s["n_aug"]),
                "--p-t", str(s["p_t"]), "--seed", str(s["seed"]), *[a for t in texts for a in ("--text", t)]]
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        expected = [json.loads(line) for line in result.stdout.splitlines()]
        got = [r for status, _, a in answers[2 * i:2 * i + 2] for r in a["results"]]
        assert got == expected and all(status == 200 for status, _, _ in answers)
    assert sum(len(r["variants"]) for _, _, a in answers for r in a["results"]) > 16


def test_serve_command_builds_the_service_from_its_flags(tiny_mlm, tiny_glove, monkeypatch, cache):
    """`augment serve` loads the engine from the engine flags, takes --n-aug/--p-t/--seed as the
    requests' defaults and the limits from its own flags (uvicorn replaced by a service in a thread)."""
    import augment.serve

    seen = {}

    def fake_serve(app, host, port, log_level="warning"):
        seen["host"], seen["port"] = host, port
        with augment.serve.RunningService(app) as service:
            seen["info"] = call(service.url, "/v1/info")[2]
            seen["answer"] = call(service.url, "/v1/augment", {"texts": ["a good film with great music"]})[2]

    monkeypatch.setattr(augment.serve, "serve", fake_serve)
    args = ["serve", "--teacher", str(tiny_mlm), "--glove", str(tiny_glove), "--k", K, "--n-aug", "6", "--seed", "9",
            "--port", "9999", "--max-texts", "5", "--max-queue", "3"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (seen["host"], seen["port"]) == ("127.0.0.1", 9999)
    assert seen["info"]["defaults"] == {"p_t": 0.4, "n_aug": 6, "seed": 9} and seen["info"]["params"]["k"] == 4
    assert seen["info"]["limits"]["max_texts"] == 5 and seen["info"]["limits"]["max_queue"] == 3
    expected = CliRunner().invoke(main, ["text", "--teacher", str(tiny_mlm), "--glove", str(tiny_glove), "--k", K,
                                         "--n-aug", "6", "--seed", "9", "--text", "a good film with great music"])
    assert seen["answer"]["results"] == [json.loads(expected.stdout)]

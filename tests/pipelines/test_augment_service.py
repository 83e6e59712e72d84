"""The corpus builder on an augmentation service (``--augment-service``), tiny random BERT: shards
byte-identical to the in-process build; a service restarted mid-build gives the same shards; one
that stays down fails the build without a manifest; flags the service cannot honour are errors."""
import threading

import pytest

from augment import Augmenter
from augment.serve import Limits, RunningService, create_app, run_jobs, service_info
from pipelines.corpus import run
from tests.augment.service_helpers import wait_until
from tests.pipelines.helpers import RUNNER, TWO_PROCESSES

SAMPLING = ["--n-aug", "5", "--p-t", "0.5", "--seed", "7"]
K = 4


@pytest.fixture()
def models(tiny_mlm, tiny_glove, tmp_path, monkeypatch):
    monkeypatch.setenv("BERT_COMPRESS_CACHE", str(tmp_path / "cache"))  # the in-process build's GloVe cache
    return str(tiny_mlm), str(tiny_glove)


@pytest.fixture(scope="module")
def augmenter(tiny_mlm, tiny_glove, tmp_path_factory):
    return Augmenter.from_pretrained(str(tiny_mlm), str(tiny_glove), k=K,
                                     glove_cache_dir=str(tmp_path_factory.mktemp("service-cache")))


def app_of(augmenter, models, run_fn=None):
    limits = Limits(max_texts=16)  # the builder's batches are split to fit
    return create_app(augmenter, service_info(*models, augmenter.config, limits), limits, run=run_fn)


@pytest.fixture()
def sst2(tmp_path):
    words = "good bad funny dull film movie story acting plot music heart".split()
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\n" + "".join(
        f"the {words[i % 11]} {words[(i * 3) % 11]} is {words[(i * 7) % 11]} and {words[(i + 5) % 11]}\t{i % 2}\n"
        for i in range(24)))
    return str(path)


@pytest.fixture()
def squad(tmp_path):
    """A SQuAD file in the tiny teacher's words (so contexts and questions get variants)."""
    import json

    context = "the film was funny and the acting was great . the music made the story sweet and smart ."
    qas = [{"id": f"q{i}", "question": q, "is_impossible": False,
            "answers": [{"text": a, "answer_start": context.index(a)}]}
           for i, (q, a) in enumerate([("what was the film ?", "funny"), ("what was the acting ?", "great"),
                                       ("what made the story sweet ?", "the music")])]
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"version": "v2.0", "data": [{"title": "t", "paragraphs": [
        {"context": context, "qas": qas}]}]}))
    return str(path)


def build(task, inp, out, *extra):
    return run(["--task", task, "--input", inp, "--output", str(out), "--num-shards", "2", "--progress-seconds", "0",
                *RUNNER, *SAMPLING, *extra])


def in_process(task, inp, out, models, *extra):
    return build(task, inp, out, "--teacher", models[0], "--glove", models[1], "--k", str(K), *extra)


def shard_bytes(out, manifest) -> dict[str, bytes]:
    return {s["file"]: (out / s["file"]).read_bytes() for s in manifest["shards"]}


@pytest.mark.parametrize("task, extra", [
    ("sst2", ["--records-per-batch", "3", *TWO_PROCESSES]),  # two workers' requests, merged by the service
    ("qnli", []),
    ("squad", ["--augment-context"]),  # words, positions and variant words over the service
])
def test_service_build_is_byte_identical_to_in_process(task, extra, models, augmenter, task_files, sst2, squad,
                                                       tmp_path):
    inp = {"sst2": sst2, "squad": squad}.get(task) or task_files[task]
    local = in_process(task, inp, tmp_path / "local", models, *extra)
    with RunningService(app_of(augmenter, models)) as service:
        served = build(task, inp, tmp_path / "served", "--augment-service", service.url, *extra)
    assert local["counts"]["variants"] > 0 and local["counts"]["rejected"] == 0
    assert served["counts"] == local["counts"]
    assert served["fingerprint"] == local["fingerprint"]  # same teacher, GloVe and parameters
    assert shard_bytes(tmp_path / "served", served) == shard_bytes(tmp_path / "local", local)
    assert served["service"]["url"] == service.url
    assert served["service"]["info"]["teacher"] == local["teacher"] and served["params"]["k"] == K


def test_service_restarted_mid_build_gives_the_same_shards(models, augmenter, sst2, tmp_path):
    local = in_process("sst2", sst2, tmp_path / "local", models, "--records-per-batch", "2")
    app = app_of(augmenter, models)
    first = RunningService(app)
    box, batches = {}, []

    def restart():  # the old service stops listening at once, ends, and a new one starts on its port
        first.server.should_exit = True
        first.thread.join()
        box["second"] = RunningService(app_of(augmenter, models), port=first.port)

    def engine(jobs):
        batches.append(len(jobs))
        if len(batches) == 3:  # answer this request, then go: every later request must reach the new one
            threading.Thread(target=restart).start()
            wait_until(lambda: first.server.servers and not any(s.is_serving() for s in first.server.servers),
                       "the old service closed its port")
        return run_jobs(augmenter, jobs, 64)

    app.state.batcher.run = engine
    try:
        served = build("sst2", sst2, tmp_path / "served", "--records-per-batch", "2",
                       "--augment-service", first.url, "--augment-service-retry-seconds", "60")
    finally:
        first.stop()
        wait_until(lambda: "second" in box, "the new service started")
        box["second"].stop()
    assert len(batches) == 3  # the old service answered three requests; the new one the rest
    assert box["second"].server.config.app.state.batcher.counters["requests"] == local["counts"]["read"] / 2 - 3
    assert shard_bytes(tmp_path / "served", served) == shard_bytes(tmp_path / "local", local)


def test_service_down_mid_build_fails_without_a_manifest(models, augmenter, sst2, tmp_path):
    app = app_of(augmenter, models)
    service = RunningService(app)
    batches = []

    def engine(jobs):
        batches.append(len(jobs))
        if len(batches) == 2:
            threading.Thread(target=service.stop).start()  # and never back
        return run_jobs(augmenter, jobs, 64)

    app.state.batcher.run = engine
    out = tmp_path / "served"
    try:
        with pytest.raises(Exception, match="no answer after"):
            build("sst2", sst2, out, "--records-per-batch", "2", "--augment-service", service.url,
                  "--augment-service-retry-seconds", "1")
    finally:
        service.stop()
    assert not (out / "manifest.json").exists()


def test_flags_the_service_cannot_honour(models, augmenter, sst2, tmp_path, capsys):
    with RunningService(app_of(augmenter, models)) as service:
        url = service.url
        cases = [
            (["--k", "5"], "argument --k: the service at"),
            (["--mlm-input", "single"], "argument --mlm-input: the service at"),
            (["--teacher", models[0]], "argument --teacher: not with --augment-service"),
            (["--n-aug", "5000"], "argument --n-aug: must be in [0, 1000]"),
        ]
        for extra, message in cases:
            with pytest.raises(SystemExit) as e:
                build("sst2", sst2, tmp_path / "x", "--augment-service", url, *extra)
            assert e.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build("sst2", sst2, tmp_path / "x", "--augment-service", url, "--augment-service-retry-seconds", "0")
    assert "argument --augment-service: " in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build("sst2", sst2, tmp_path / "x")
    assert "argument --teacher: required (or --augment-service URL)" in capsys.readouterr().err

"""Precision by capability (issue 36): ``auto`` resolves from what the device runs natively; a
forced bf16 on a CPU that emulates it warns; the runner fingerprints the resolved precision and a
training stage records it in its results."""
import io
import json
import warnings

import pytest
import torch

from distill import devices
from distill.devices import SlowPrecisionWarning, resolve_precision
from distill.progress import Progress, duration
from tests.distill.test_recipes import tiny_overrides, world  # noqa: F401 (world: a fixture)

CPU = torch.device("cpu")
TRAINING = ("teacher", "general", "intermediate", "prediction")
AVX2 = {"capability": "AVX2", "amx": False, "avx512_bf16": False}
AMX = {"capability": "AVX512", "amx": True, "avx512_bf16": True}
AVX512_BF16 = {"capability": "AVX512", "amx": False, "avx512_bf16": True}
AVX512_ONLY = {"capability": "AVX512", "amx": False, "avx512_bf16": False}


@pytest.fixture
def cpu_is(monkeypatch):
    def inject(features: dict):
        monkeypatch.setattr(devices, "cpu_features", lambda: dict(features))
    return inject


@pytest.mark.parametrize("features, expected", [(AVX2, "fp32"), (AVX512_ONLY, "fp32"), (AMX, "bf16"),
                                                (AVX512_BF16, "bf16")])
def test_auto_is_bf16_only_where_the_cpu_runs_it_natively(cpu_is, features, expected):
    cpu_is(features)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto never warns
        p = resolve_precision("auto", CPU)
    assert p.name == expected
    assert p.reason.startswith("auto: CPU capability " + features["capability"])
    assert p.autocast_dtype == (torch.bfloat16 if expected == "bf16" else None)


def test_forced_bf16_on_an_emulating_cpu_runs_but_warns_with_the_slowdown(cpu_is):
    cpu_is(AVX2)
    with pytest.warns(SlowPrecisionWarning, match=r"emulated.*slower than in fp32"):
        p = resolve_precision("bf16", CPU)
    assert p.name == "bf16" and "emulated" in p.reason


def test_named_precisions_on_native_hardware_stay_silent(cpu_is):
    cpu_is(AMX)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16", CPU).name == "bf16"
        assert resolve_precision("fp32", CPU).name == "fp32"
    with pytest.raises(ValueError, match="'fp8'"):
        resolve_precision("fp8", CPU)


def test_this_machines_features_are_read():
    f = devices.cpu_features()
    assert f["capability"] == torch.backends.cpu.get_cpu_capability()
    assert isinstance(f["amx"], bool) and isinstance(f["avx512_bf16"], bool)


def test_the_default_precision_is_auto():
    from distill.config import TrainConfig

    assert TrainConfig().precision == "auto"


# -- the runner: auto resolved before fingerprinting, recorded in the stage's results -------------------
def _demo_plan(tmp_path, world, out="out", extra=()):
    from distill.run.recipes import load
    from distill.run.plan import make_plan

    overrides = tiny_overrides("demo/sst2-cpu", world, steps=2) + list(extra)
    return make_plan(load("demo/sst2-cpu", overrides), str(tmp_path / out))


def test_auto_resolves_before_fingerprinting(cpu_is, world, tmp_path):
    cpu_is(AVX2)
    fp32 = {s.name: s for s in _demo_plan(tmp_path, world).stages}
    cpu_is(AMX)
    bf16 = {s.name: s for s in _demo_plan(tmp_path, world).stages}
    assert fp32["teacher"].identity["config"]["train"]["precision"] == "fp32"
    assert bf16["teacher"].identity["config"]["train"]["precision"] == "bf16"
    for name in ("teacher", "general", "intermediate", "prediction"):  # a store is not reused across them
        assert fp32[name].fingerprint != bf16[name].fingerprint, name
    assert fp32["corpus"].fingerprint == bf16["corpus"].fingerprint  # the corpus does not train


def test_a_training_stage_prints_and_records_its_precision(cpu_is, world, tmp_path, capsys):
    from distill.run.plan import DONE, run_plan

    cpu_is(AVX2)
    plan = _demo_plan(tmp_path, world, extra=[f"{s}.train.progress_seconds=0" for s in TRAINING])
    run_plan(plan)
    out = capsys.readouterr()
    assert "precision fp32 (auto: CPU capability AVX2 without AMX or AVX-512 BF16)" in out.out
    steps = {s.name: s for s in plan.stages}
    for name in TRAINING:
        with open(f"{steps[name].folder}/{DONE}") as f:
            result = json.load(f)["result"]
        assert result["precision"] == "fp32" and result["reason"].startswith("auto: CPU capability AVX2"), name
    # captured stderr is not a terminal: each training stage printed its plain progress lines
    for label in ("finetune: step", "general: step", "task (intermediate): step", "task (prediction): step"):
        assert label in out.err, label


# -- progress ----------------------------------------------------------------------------------------
class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_prints_a_plain_line_every_period_when_not_a_terminal():
    clock, stream = Clock(), io.StringIO()
    bar = Progress(100, label="general", show=None, every=30, stream=stream, clock=clock)
    for _ in range(10):  # 10 steps in 20 s: no line yet
        clock.now += 2
        bar.update()
    assert stream.getvalue() == ""
    bar.note(loss="1.2500")
    for _ in range(10):  # 20 steps in 40 s -> one line at 30 s (step 15)
        clock.now += 2
        bar.update()
    bar.line("step 20: dev accuracy 0.7500 (best score 0.7500)")
    bar.close()
    lines = stream.getvalue().splitlines()
    # step 15 at 30 s: 0.50 steps/s, 85 left -> 170 s
    assert lines == ["general: step 15/100 (15%), 0.50 steps/s, elapsed 0m30s, ETA 2m50s, loss 1.2500",
                     "general: step 20: dev accuracy 0.7500 (best score 0.7500)"]


def test_progress_is_silent_when_disabled_and_resumed_rates_count_new_steps_only():
    clock, stream = Clock(), io.StringIO()
    silent = Progress(10, show=False, every=1, stream=stream, clock=clock)
    clock.now = 5
    silent.update()
    silent.line("x")
    assert stream.getvalue() == ""
    resumed = Progress(100, initial=50, label="t", every=10, stream=stream, clock=clock)
    clock.now += 10
    resumed.update(5)
    assert stream.getvalue() == "t: step 55/100 (55%), 0.50 steps/s, elapsed 0m10s, ETA 1m30s\n"


def test_duration():
    assert (duration(75), duration(3725), duration(float("inf"))) == ("1m15s", "1h02m05s", "unknown")

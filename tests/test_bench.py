"""The benchmarker on this machine: statistics, interleaving, accuracy from the artifacts' own metadata,
reports, and one-line errors."""

import itertools
import json
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edgecnn.bench.benchmark import BenchConfig, bench, evaluate
from edgecnn.bench.device import Job, accuracy
from edgecnn.bench.measure import (
    WARMUP_WINDOW,
    WARMUP_WINDOW_S,
    DeviceState,
    governors,
    latency_stats,
    parallel_throughput,
    throttle_flags,
    time_interleaved,
    warm_up,
)
from edgecnn.bench.report import condition_notes, markdown, pareto_front, write_report
from edgecnn.errors import EdgeCNNError
from tests.conftest import artifact_path, run_cli


def test_statistics_on_known_samples():
    stats = latency_stats([ms / 1000 for ms in range(1, 101)])  # 1 … 100 ms
    assert stats.runs == 100
    assert (stats.min_ms, stats.p50_ms, stats.mean_ms) == pytest.approx((1.0, 50.5, 50.5))
    assert (stats.p90_ms, stats.p99_ms) == pytest.approx((90.1, 99.01))  # linear interpolation
    assert stats.std_ms == pytest.approx(math.sqrt((100**2 - 1) / 12))  # population std of 1 … n
    with pytest.raises(ValueError):
        latency_stats([])


def test_calls_are_interleaved_after_warmup():
    order: list[str] = []
    calls = [lambda name=name: order.append(name) for name in "ABC"]
    assert warm_up(calls, minimum=2, max_seconds=0).stable is None
    samples = time_interleaved(calls, runs=3, min_time=None)
    assert "".join(order) == "ABC" * 5
    assert [len(s) for s in samples] == [3, 3, 3]
    assert all(t >= 0 for s in samples for t in s)


def test_min_time_runs_rounds_for_that_long():
    started = time.perf_counter()
    samples = time_interleaved([lambda: None, lambda: threading.Event().wait(0.002)], None, 0.1)
    assert 0.1 <= time.perf_counter() - started < 0.5
    assert len(samples[0]) == len(samples[1]) >= 10
    assert sum(samples[1]) >= 0.08  # the timed calls are nearly all of it


def test_bootstrap_interval_holds_the_percentile_narrows_with_more_calls_and_is_reproducible():
    calls = np.random.default_rng(7).gamma(4, 0.5e-3, 5000)  # skewed, as latency is
    few, many = latency_stats(calls[:50]), latency_stats(calls)
    for stats in (few, many):
        assert stats.p50_ci_ms[0] < stats.p50_ms < stats.p50_ci_ms[1]
        assert stats.p90_ci_ms[0] < stats.p90_ms < stats.p90_ci_ms[1]
    width = [stats.p50_ci_ms[1] - stats.p50_ci_ms[0] for stats in (few, many)]
    assert width[1] < width[0] / 4  # a hundred times the calls: about a tenth of the width
    assert latency_stats(calls[:50]) == few  # a fixed seed: the same calls, the same interval


def test_run_to_run_variation_sees_drift_that_the_interval_does_not():
    steady = [1e-3 * (1 + 0.01 * (i % 7)) for i in range(100)]
    drifting = [1e-3 * (1 + i // 20 * 0.1) for i in range(100)]  # each fifth of the run 10% slower
    assert latency_stats(steady).run_to_run_cv_pct < 1
    assert latency_stats(drifting).run_to_run_cv_pct > 10
    assert latency_stats(steady[:9]).run_to_run_cv_pct is None  # under two calls per block


def sleeper(milliseconds: Callable[[int], float]) -> Callable[[], None]:
    """A call that takes ``milliseconds(i)`` on its i-th call."""
    count = itertools.count()
    return lambda: time.sleep(milliseconds(next(count)) / 1e3)


#: a call this long makes every warm-up window exactly WARMUP_WINDOW calls (its time floor is then passed)
SLOWEST_MS = 1.2 * WARMUP_WINDOW_S / WARMUP_WINDOW * 1e3


def test_warm_up_goes_on_until_the_latency_settles():
    window = WARMUP_WINDOW
    decaying = sleeper(lambda i: SLOWEST_MS * max(1, 8 / 2 ** (i // window)))  # windows of 8, 4, 2, 1, 1 … × SLOWEST
    warmup = warm_up([decaying], minimum=0, max_seconds=5)
    assert warmup.stable is True
    assert 5 * window <= warmup.calls <= 8 * window  # not before the drop has ended


def test_warm_up_that_never_settles_stops_at_its_limit_and_says_so():
    alternating = sleeper(lambda i: SLOWEST_MS * (1 if i // WARMUP_WINDOW % 2 else 3))
    warmup = warm_up([alternating], minimum=3, max_seconds=0.3)
    assert warmup.stable is False and 0.3 <= warmup.seconds < 1.5
    assert (warmup.calls - 3) % WARMUP_WINDOW == 0 and warmup.calls > 3


def test_warm_up_windows_of_fast_calls_last_long_enough_for_a_steady_median():
    warmup = warm_up([lambda: None], minimum=0, max_seconds=1)
    assert warmup.calls > 10 * WARMUP_WINDOW  # 50 ms of calls that take well under a microsecond


def test_throttle_bits_in_words():
    assert throttle_flags("0x0") == []
    assert throttle_flags("0x50005") == [
        "under-voltage now",
        "throttled now",
        "under-voltage since boot",
        "throttled since boot",
    ]
    assert throttle_flags("0x80008") == ["soft temperature limit now", "soft temperature limit since boot"]
    assert throttle_flags("0x20000") == ["ARM frequency capped since boot"]
    assert throttle_flags(None) == throttle_flags("error") == []


def test_governors_of_every_cpu_from_sysfs(tmp_path):
    assert governors(tmp_path) is None  # no cpufreq: a container or a VM
    (tmp_path / "cpuidle").mkdir()
    for cpu, governor in (("cpu0", "ondemand"), ("cpu1", "ondemand"), ("cpu4", "performance")):
        (tmp_path / cpu / "cpufreq").mkdir(parents=True)
        (tmp_path / cpu / "cpufreq" / "scaling_governor").write_text(governor + "\n")
    assert governors(tmp_path) == "ondemand,performance"


def conditions(before: DeviceState, after: DeviceState, stable: bool | None = True) -> dict:
    warmup = {"calls": 40, "seconds": 10.0, "stable": stable}
    return {"state_before": before.to_dict(), "state_after": after.to_dict(), "warmup": warmup}


def test_condition_notes_say_what_makes_figures_untrustworthy_and_nothing_unknown():
    unknown = DeviceState(None, None, None)
    assert condition_notes(conditions(unknown, unknown, None)) == []
    assert condition_notes({}) == []  # a result from before these were recorded
    pinned = DeviceState("performance", 45.0, "0x50000")  # throttled once, before this run
    assert condition_notes(conditions(pinned, DeviceState("performance", 49.0, "0x50000"))) == []
    (governor,) = condition_notes(conditions(DeviceState("ondemand", None, None), unknown))
    assert "ondemand, not performance" in governor and "cpupower frequency-set -g performance" in governor
    (throttled,) = condition_notes(conditions(DeviceState(None, None, "0x0"), DeviceState(None, None, "0x50004")))
    assert "throttled now, under-voltage during the run, throttled during the run" in throttled
    assert "0x0 → 0x50004" in throttled
    (hot,) = condition_notes(conditions(DeviceState(None, 45.0, None), DeviceState(None, 52.5, None)))
    assert "from 45 to 52.5 °C" in hot
    (unsettled,) = condition_notes(conditions(unknown, unknown, False))
    assert "not settled after 40 warm-up calls" in unsettled and "--max-warmup" in unsettled


def test_bench_cools_down_then_reports_the_state_warm_up_and_intervals(lenet_artifacts):
    path = artifact_path(lenet_artifacts, "onnx", "int8")
    started = time.perf_counter()
    report = bench(BenchConfig([path], runs=30, warmup=2, max_warmup=3, cooldown=2.0))
    assert time.perf_counter() - started >= 2.0  # LeNet's 30 calls and warm-up take a fraction of that
    environment, (result,) = report.hosts[0].environment, report.hosts[0].results
    assert environment["cooldown_s"] == report.method["cooldown_s"] == 2.0
    assert set(environment["state_before"]) == set(environment["state_after"]) >= {"governor", "throttling"}
    assert environment["warmup"]["calls"] >= 2 + WARMUP_WINDOW and environment["warmup"]["stable"] in (True, False)
    stats = result["latency"]
    assert stats["p50_ci_ms"][0] <= stats["p50_ms"] <= stats["p50_ci_ms"][1] and stats["run_to_run_cv_pct"] >= 0
    assert "cool-down 2 s" in markdown(report) and "±95%" in markdown(report)


def test_parallel_throughput_counts_every_worker():
    counts = [0, 0]

    def make(index: int):
        def call() -> None:
            counts[index] += 1
            threading.Event().wait(0.001)

        return call

    completed, seconds = parallel_throughput([make(0), make(1)], 0.2)
    assert completed == sum(counts) and counts[0] > 10 and counts[1] > 10
    assert seconds == pytest.approx(0.2, abs=0.1)


def test_accuracy_and_pareto_front():
    logits = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.5, 0.4]])
    assert accuracy(logits, np.array([0, 1, 1])) == {"images": 3, "top1": pytest.approx(200 / 3), "top5": 100.0}
    points = [(1.0, 90.0), (2.0, 95.0), (3.0, 94.0), (0.5, 80.0), (2.0, 90.0)]
    assert pareto_front(points) == [0, 1, 3]


def test_job_rejects_bad_settings():
    with pytest.raises(EdgeCNNError, match="unknown mode"):
        Job([], mode="fast")
    with pytest.raises(EdgeCNNError, match="not both"):
        Job([], runs=10, min_time=1.0)


def test_eval_reads_preprocessing_from_the_artifacts_and_matches_pytorch(lenet_artifacts, trained_lenet):
    """Every fp32 artifact, fed by its own metadata only, scores what PyTorch scored on the held-out split."""
    paths = [trained_lenet] + [artifact_path(lenet_artifacts, f, "fp32") for f in ("onnx", "openvino", "tflite")]
    results = evaluate(paths, "digits")
    assert {r["runtime"] for r in results} == {"pytorch", "onnxruntime", "openvino", "litert"}
    for result in results:
        assert result["images"] == 269 and "held-out" in result["data"]
        assert result["top1"] == pytest.approx(lenet_artifacts.reference_accuracy)
        assert result["top5"] >= result["top1"]


def test_bench_measures_interleaved_artifacts_with_accuracy(lenet_artifacts, trained_lenet, tmp_path):
    paths = [artifact_path(lenet_artifacts, "onnx", p) for p in ("fp32", "int8")] + [
        artifact_path(lenet_artifacts, f, "int8") for f in ("openvino", "tflite")
    ]
    report = bench(BenchConfig([*paths, trained_lenet], threads=1, runs=20, warmup=2, data="digits"))
    (host,) = report.hosts
    assert host.host == "local" and host.environment["threads"] == 1 and host.environment["cores"] >= 1
    assert [r["artifact"] for r in host.results] == [str(p) for p in [*paths, trained_lenet]]
    exported = {Path(a.path).name: a for a in lenet_artifacts.artifacts}
    for result in host.results:
        assert result["latency"]["runs"] == 20 and len(result["samples_ms"]) == 20
        stats = result["latency"]
        assert 0 < stats["min_ms"] <= stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"]
        assert result["size_bytes"] > 0 and result["load_seconds"] > 0
        if result["runtime"] != "pytorch":  # the same images as the export's verification, the same score
            assert result["accuracy"]["top1"] == pytest.approx(
                exported[Path(result["artifact"]).name].verification["accuracy"]
            )
    assert host.results[2]["effective_precision"].startswith("int8+")  # OpenVINO says what computed the rest
    files = write_report(report, tmp_path / "report")
    assert {f.name for f in files} == {
        "bench.json",
        "bench.md",
        "bench.csv",
        "latency_distribution.png",
        "latency_vs_accuracy.png",
    }
    assert all(f.stat().st_size > 0 for f in files)
    stored = json.loads((tmp_path / "report" / "bench.json").read_text())
    assert stored["schema_version"] == 1 and "p50_ms" in stored["hosts"][0]["results"][0]["latency"]
    assert "interleaved" in markdown(report)
    assert len((tmp_path / "report" / "bench.csv").read_text().splitlines()) == 1 + len(paths) + 1


def test_throughput_mode_adds_parallel_requests(lenet_artifacts):
    path = artifact_path(lenet_artifacts, "tflite", "int8")
    report = bench(BenchConfig([path], runs=5, warmup=1, mode="throughput"))
    parallel = report.hosts[0].results[0]["parallel"]
    assert parallel["workers"] == os.cpu_count() and parallel["throughput_ips"] > 0


def test_cli_bench_prints_a_table_within_80_columns(lenet_artifacts, tmp_path):
    paths = [str(artifact_path(lenet_artifacts, f, "int8")) for f in ("onnx", "openvino", "tflite")]
    done = run_cli("bench", *paths, "--runs", "10", "--threads", "1", "--report", str(tmp_path / "r"))
    assert done.returncode == 0, done.stderr
    assert "lenet5_int8.onnx" in done.stdout and "×1st" in done.stdout and "1.00×" in done.stdout
    assert max(len(line) for line in done.stdout.splitlines()) <= 80
    assert (tmp_path / "r" / "bench.md").exists()
    as_json = run_cli("bench", paths[0], "--runs", "5", "--json")
    assert json.loads(as_json.stdout)["hosts"][0]["results"][0]["latency"]["runs"] == 5


def test_cli_eval_json(lenet_artifacts):
    done = run_cli("eval", str(artifact_path(lenet_artifacts, "onnx", "int8")), "--data", "digits", "--json")
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)["results"]
    assert result["images"] == 269 and 0 < result["top1"] <= result["top5"] <= 100


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda a, t: ["bench", str(t / "missing.onnx")], "artifact not found"),
        (lambda a, t: ["bench", str(a), "--runtime", "tensorrt"], "unknown runtime 'tensorrt'"),
        (lambda a, t: ["bench", str(a), "--runtime", "openvino"], "openvino cannot run .onnx files"),
        (lambda a, t: ["bench", str(a), "--batch", "4"], "onnxruntime failed to run"),
        (lambda a, t: ["bench", str(a), "--device", "gpu"], "no GPU provider"),
        (lambda a, t: ["bench", str(a), "--precision", "bf16"], "runs the precision stored in the artifact"),
        (lambda a, t: ["bench", str(a), "--fleet", str(t / "none.txt")], "cannot read fleet file"),
        (lambda a, t: ["eval", str(a), "--data", str(t)], "no readable images"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(lenet_artifacts, tmp_path, make_args, message):
    done = run_cli(*make_args(artifact_path(lenet_artifacts, "onnx", "int8"), tmp_path))
    assert done.returncode == 1, done.stdout
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    assert re.search(message, lines[0]), lines[0]


@pytest.mark.parametrize("suffix", [".onnx", ".xml", ".tflite"])
def test_truncated_artifact_is_a_clear_error(lenet_artifacts, tmp_path, suffix):
    fmt = {".onnx": "onnx", ".xml": "openvino", ".tflite": "tflite"}[suffix]
    source = artifact_path(lenet_artifacts, fmt, "fp32")
    damaged = tmp_path / source.name
    damaged.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    if suffix == ".xml":
        damaged.with_suffix(".bin").write_bytes(source.with_suffix(".bin").read_bytes())
    done = run_cli("bench", str(damaged), "--runs", "3")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "cannot load" in done.stderr and str(damaged.name) in done.stderr


def test_missing_runtime_names_the_install_line(lenet_artifacts, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # what an environment without the package sees
    with pytest.raises(EdgeCNNError, match=r"openvino is not installed: pip install openvino"):
        bench(BenchConfig([artifact_path(lenet_artifacts, "openvino", "fp32")], runs=1))


def test_bench_leaves_the_process_thread_count_as_it_was(trained_lenet):
    import torch

    before = torch.get_num_threads()
    bench(BenchConfig([trained_lenet], threads=1, warmup=1, runs=2))
    assert torch.get_num_threads() == before

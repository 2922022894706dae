"""Are edgecnn's latency figures right? Side by side with the runtimes' own tools, a bare loop, and SSH.

1. OpenVINO: ``edgecnn bench`` p50 against ``benchmark_app`` (sync API, 1 stream, 1 request, same
   threads and iterations) on the same IR, both pinned to f32: left to their defaults on a CPU with AMX and
   AVX512-BF16, edgecnn's p50 was 0.72× benchmark_app's for fp32 and 1.13× for int8.  target: within ±5%
2. LiteRT: against ``litert-benchmark`` (ai-edge-litert's own tool) on the same .tflite.  target: ±5%
3. Harness overhead: ``edgecnn bench`` against a bare ``perf_counter`` loop around the runtime's own call
   (onnxruntime), blocks alternated in one process.               target: <= 2% or <= 20 µs
4. Remote: the same runner through SSH on 127.0.0.1 (a real sshd; numpy<2 + tflite-runtime 2.14 as the
   "device") against that runner started directly.        target: p50 within ±10%, overhead <= 2 s

Artifacts: MobileNetV2 at 224 from ``benchmarks/int8_latency.py`` (run it first).

    .venv/bin/python benchmarks/fidelity.py [--runs 300]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the loopback sshd helper lives in tests/

from _provenance import provenance

from edgecnn._io import write_json
from edgecnn.bench.benchmark import BenchConfig, artifact_metadata, bench
from edgecnn.bench.measure import latency_stats
from edgecnn.bench.remote import RUNNER_NAME, runner_archive
from edgecnn.runtime import open_runner
from tests.loopback_ssh import device_python, loopback_ssh

ARTIFACTS = Path("runs/bench_int8_latency/mobilenet_v2/edgecnn")
RESULTS = Path(__file__).parent / "results" / "fidelity.json"
REMOTE_RUNS = 60  # tflite-runtime 2.14's int8 kernels take ~80 ms a call here
TOOLS = Path(sys.executable).parent  # benchmark_app and litert-benchmark install beside this Python


def edgecnn_p50(path: Path, runs: int, **settings: object) -> float:
    report = bench(BenchConfig([path], threads=1, runs=runs, warmup=50, **settings))
    return report.hosts[0].results[0]["latency"]["p50_ms"]


def benchmark_app_p50(path: Path, runs: int) -> float:
    command = [
        str(TOOLS / "benchmark_app"),
        "-m",
        str(path),
        "-d",
        "CPU",
        "-api",
        "sync",
        "-nstreams",
        "1",
        "-nireq",
        "1",
    ]
    command += ["-nthreads", "1", "-niter", str(runs), "-hint", "none", "-infer_precision", "f32"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return float(re.search(r"Median:\s+([\d.]+) ms", output).group(1))


def litert_benchmark(path: Path, runs: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        result = Path(scratch) / "result.json"
        command = [
            str(TOOLS / "litert-benchmark"),
            "--model",
            str(path),
            "--num_runs",
            str(runs),
            "--warmup_runs",
            "50",
        ]
        subprocess.run([*command, "--num_threads", "1", "--result_json", str(result)], check=True, capture_output=True)
        return json.loads(result.read_text())


def bare_loop_overhead(path: Path, runs: int, rounds: int = 5) -> dict:
    """p50 of a bare loop and of edgecnn's harness around the same onnxruntime call, alternating blocks."""
    runner = open_runner(path, threads=1)
    batch = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    feed = {runner.input_name: batch}
    bare, harness = [], []
    for _ in range(rounds):
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            runner.session.run(None, feed)
            samples.append(time.perf_counter() - started)
        bare.append(latency_stats(samples).p50_ms)
        harness.append(edgecnn_p50(path, runs))
    bare_p50, harness_p50 = float(np.median(bare)), float(np.median(harness))
    return {
        "bare_p50_ms": bare_p50,
        "edgecnn_p50_ms": harness_p50,
        "ratio": harness_p50 / bare_p50,
        "difference_us": (harness_p50 - bare_p50) * 1e3,
    }


def remote_against_local(path: Path, runs: int, rounds: int = 3) -> dict:
    """The same runner (tflite-runtime on numpy<2) started directly and through SSH on 127.0.0.1,
    alternated ``rounds`` times so that drift of this shared machine hits both alike; medians reported."""
    python = device_python(Path(".venv-device").resolve())
    job = {
        "artifacts": [{"path": "artifact_0.tflite", "metadata": artifact_metadata(path).to_dict()}],
        "threads": 1,
        "runs": runs,
        "warmup": 20,
    }
    local, remote, local_seconds, remote_seconds = [], [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / RUNNER_NAME).write_bytes(runner_archive())
        (folder / "job.json").write_text(json.dumps(job))
        (folder / "artifact_0.tflite").write_bytes(path.read_bytes())
        with loopback_ssh(folder / "sshd") as ssh:
            config = BenchConfig(
                [path],
                threads=1,
                runs=runs,
                warmup=20,
                remote=ssh.alias,
                remote_python=str(python),
                ssh_config=ssh.config,
            )
            for _ in range(rounds):
                started = time.perf_counter()
                done = subprocess.run(
                    [str(python), RUNNER_NAME, "job.json"], cwd=folder, capture_output=True, check=True
                )
                local_seconds.append(time.perf_counter() - started)
                local.append(json.loads(done.stdout)["results"][0]["latency"]["p50_ms"])
                started = time.perf_counter()
                report = bench(config)
                remote_seconds.append(time.perf_counter() - started)
                remote.append(report.hosts[0].results[0]["latency"]["p50_ms"])
    median = lambda values: float(np.median(values))  # noqa: E731
    return {
        "local_p50_ms": local,
        "remote_p50_ms": remote,
        "ratio": median(remote) / median(local),
        "local_seconds": local_seconds,
        "remote_seconds": remote_seconds,
        "overhead_seconds": median(remote_seconds) - median(local_seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--artifacts", type=Path, default=ARTIFACTS)
    args = parser.parse_args()
    rows = {}
    for precision in ("int8", "fp32"):
        xml = args.artifacts / f"mobilenet_v2_{precision}.xml"
        ours, theirs = edgecnn_p50(xml, args.runs, precision="f32"), benchmark_app_p50(xml, args.runs)
        rows[f"openvino_{precision}"] = {
            "edgecnn_p50_ms": ours,
            "benchmark_app_median_ms": theirs,
            "ratio": ours / theirs,
        }
        print(precision, "openvino", rows[f"openvino_{precision}"], flush=True)
        tflite = args.artifacts / f"mobilenet_v2_{precision}.tflite"
        ours, theirs_json = edgecnn_p50(tflite, args.runs), litert_benchmark(tflite, args.runs)
        rows[f"litert_{precision}"] = {"edgecnn_p50_ms": ours, "litert_benchmark": theirs_json}
        print(precision, "litert", rows[f"litert_{precision}"], flush=True)
    rows["overhead_onnxruntime_int8"] = bare_loop_overhead(args.artifacts / "mobilenet_v2_int8.onnx", args.runs)
    print("overhead", rows["overhead_onnxruntime_int8"], flush=True)
    rows["remote_litert_int8"] = remote_against_local(args.artifacts / "mobilenet_v2_int8.tflite", REMOTE_RUNS)
    print("remote", rows["remote_litert_int8"], flush=True)
    write_json(
        RESULTS, {**provenance("fidelity", threads=1), "runs": args.runs, "remote_runs": REMOTE_RUNS, "rows": rows}
    )


if __name__ == "__main__":
    main()

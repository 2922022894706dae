"""``bench --profile`` and the int8 diagnosis: each cause on a constructed case, and real per-op profiles from
each runtime's own profiler on an exported LeNet-5."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecnn.bench.benchmark import BenchConfig, BenchReport, HostResult, bench
from edgecnn.bench.device import ArtifactJob, Job
from edgecnn.bench.diagnosis import diagnose, diagnose_host
from edgecnn.bench.profile import OpRecord, Profile, profile_artifact, summarize
from edgecnn.bench.remote import RUNNER_NAME, runner_archive
from edgecnn.bench.report import markdown, notes
from edgecnn.runtime.base import open_runner
from tests.conftest import artifact_path

VNNI_X86 = ["avx2", "fma", "avx512f", "avx512_vnni"]
AVX2_X86 = ["avx2", "fma"]
#: an int8 graph that runs in int8 end to end: the conversions only at its ends
CLEAN_INT8 = [
    OpRecord("input_quantize", "QuantizeLinear", 0.05, "fp32"),
    OpRecord("conv1", "QLinearConv", 4.0, "int8"),
    OpRecord("conv2", "QLinearConv", 3.0, "int8"),
    OpRecord("pool", "MaxPool", 0.5, "int8"),
    OpRecord("output_dequantize", "DequantizeLinear", 0.05, "int8"),
]


def causes(findings) -> str:
    return " | ".join(finding.cause for finding in findings)


def test_x86_without_vnni_is_a_cause_and_with_vnni_is_not():
    (found,) = diagnose("x86_64", AVX2_X86, None)
    assert "without VNNI" in found.cause and "avx512_vnni" in found.evidence and "fp32" in found.fix
    (found,) = diagnose("x86_64", VNNI_X86, None)
    assert found.cause == "no cause found" and "--profile" in found.fix


def test_arm_without_the_dot_product_is_a_cause():
    (found,) = diagnose("aarch64", ["fp", "asimd", "crc32"], None)
    assert "dot product" in found.cause and "no asimddp" in found.evidence and "Raspberry Pi 5" in found.fix
    assert causes(diagnose("aarch64", ["asimd", "asimddp", "i8mm"], None)) == "no cause found"


def test_unknown_cpu_flags_are_no_cause():
    """A machine without /proc/cpuinfo reports no flags: that is not 'no VNNI'."""
    assert causes(diagnose("x86_64", [], None)) == "no cause found"


def test_a_clean_int8_profile_shows_no_cause():
    summary = summarize(CLEAN_INT8)
    assert summary.total_ms == pytest.approx(7.6) and summary.qdq_ops == 2
    assert summary.qdq_share == pytest.approx(0.1 / 7.6) and summary.float_share == pytest.approx(0)
    (found,) = diagnose("x86_64", VNNI_X86, summary)
    assert found.cause == "the profile shows no cause" and "Q/DQ 1%" in found.evidence


def test_a_high_quantize_dequantize_share_is_a_cause():
    weights_dequantized = [OpRecord(f"w{i}_DequantizeLinear", "DequantizeLinear", 1.0, "int8") for i in range(3)]
    summary = summarize([*CLEAN_INT8, *weights_dequantized])
    assert summary.qdq_share == pytest.approx(3.1 / 10.6) and summary.qdq_ops == 5
    (found,) = diagnose("x86_64", VNNI_X86, summary)
    assert "conversions between float and int8 take 29%" in found.cause and "5 Quantize/Dequantize" in found.evidence


def test_float_activations_between_int8_layers_are_a_cause():
    silu = [OpRecord("act1", "Sigmoid", 1.5, "fp32"), OpRecord("act1_mul", "Mul", 1.0, "fp32")]
    summary = summarize([*CLEAN_INT8, *silu])
    assert summary.float_types == ["Sigmoid", "Mul"] and summary.float_share == pytest.approx(2.5 / 10.1)
    (found,) = diagnose("x86_64", VNNI_X86, summary)
    assert "left in float" in found.cause and "Sigmoid, Mul" in found.evidence
    assert "ReLU/ReLU6 variant" in found.fix
    other = summarize([*CLEAN_INT8, OpRecord("t", "Transpose", 3.0, "fp32")])
    assert "quantize these ops too" in diagnose("x86_64", VNNI_X86, other)[0].fix


def test_xnnpack_partitions_and_ops_outside_are_a_cause():
    ops = [
        OpRecord("CONV_2D #0", "CONV_2D", None, "int8", True),
        OpRecord("PADV2 #1", "PADV2", None, "int8", False),
        OpRecord("CONV_2D #2", "CONV_2D", None, "int8", True),
    ]
    summary = summarize(ops, partitions=2)
    assert not summary.timed and summary.qdq_share is None and summary.outside_types == ["PADV2"]
    (found,) = diagnose("aarch64", ["asimd", "asimddp"], summary)
    assert "2 partition(s)" in found.cause and "1 ops outside XNNPACK: PADV2" in found.evidence
    assert "ai-edge-litert" in found.fix
    whole = summarize([ops[0], ops[2]], partitions=1)
    (found,) = diagnose("aarch64", ["asimd", "asimddp"], whole)
    assert found.cause == "the profile shows no cause" and "one XNNPACK partition" in found.evidence


def test_every_cause_is_said_at_once():
    ops = [*CLEAN_INT8, OpRecord("dq", "DequantizeLinear", 3.0, "int8"), OpRecord("s", "HardSwish", 4.0, "fp32")]
    found = diagnose("x86_64", AVX2_X86, summarize(ops))
    assert len(found) == 3 and "no cause" not in causes(found)


def _result(precision: str, p50: float, profile: Profile | None = None) -> dict:
    return {
        "artifact": f"m_{precision}.onnx",
        "model": "m",
        "runtime": "onnxruntime",
        "notes": [],
        "artifact_precision": precision,
        "latency": {"p50_ms": p50},
        "profile": profile and profile.to_dict(),
    }


def test_only_int8_slower_than_its_fp32_sibling_is_diagnosed_and_the_notes_say_why():
    profile = Profile("onnxruntime", "test", 10, [*CLEAN_INT8, OpRecord("dq", "DequantizeLinear", 5.0, "int8")])
    results = [_result("fp32", 10.0), _result("int8", 12.0, profile)]
    diagnose_host(results, {"machine": "x86_64", "cpu_flags": VNNI_X86})
    assert "diagnosis" not in results[0] and results[1]["diagnosis"]["fp32_p50_ms"] == 10.0
    lines = notes(BenchReport({}, [HostResult("pi", results=results)]))
    (line,) = [line for line in lines if "int8 is not faster" in line]
    assert "(12.000 vs 10.000 ms): conversions between float and int8" in line and "fix:" in line
    assert "gains nothing" not in line
    faster = [_result("fp32", 10.0), _result("int8", 4.0)]
    diagnose_host(faster, {"machine": "x86_64", "cpu_flags": AVX2_X86})
    assert notes(BenchReport({}, [HostResult("pi", results=faster)])) == []


def _batch(runner) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((1, *runner.metadata.input.shape[1:]), dtype=np.float32)


def _profile(path: Path, runs: int = 5) -> Profile:
    runner = open_runner(path, threads=1)
    return profile_artifact(runner, path, _batch(runner), threads=1, runs=runs)


def test_onnxruntime_profile_times_every_op(lenet_artifacts):
    for precision in ("fp32", "int8"):
        found = _profile(artifact_path(lenet_artifacts, "onnx", precision))
        assert found.ops and all(op.ms is not None and op.ms > 0 for op in found.ops), found.ops
        assert found.summary.timed and found.summary.total_ms == pytest.approx(sum(op.ms for op in found.ops))
        assert 0 <= found.summary.qdq_share <= 1 and 0 <= found.summary.float_share <= 1
        types = {op.op_type for op in found.ops}
        quantized = found.summary.qdq_ops > 0 or any(t.startswith("QLinear") for t in types)
        assert quantized == (precision == "int8"), types
    assert any(op.precision == "int8" for op in found.ops)


def test_openvino_profile_shows_int8_execution_for_an_int8_artifact(lenet_artifacts):
    int8 = _profile(artifact_path(lenet_artifacts, "openvino", "int8"))
    assert int8.ops and all(op.ms is not None and op.ms >= 0 for op in int8.ops) and int8.summary.total_ms > 0
    convolutions = [op for op in int8.ops if op.op_type in ("Convolution", "FullyConnected")]
    assert convolutions and any(op.precision == "int8" for op in convolutions), convolutions
    path = artifact_path(lenet_artifacts, "openvino", "fp32")
    runner = open_runner(path, threads=1, precision="f32")
    fp32 = profile_artifact(runner, path, _batch(runner), threads=1, runs=3)
    assert fp32.ops and not any(op.precision == "int8" for op in fp32.ops)


def test_litert_profile_reports_xnnpack_partitions_without_inventing_times(lenet_artifacts):
    found = _profile(artifact_path(lenet_artifacts, "tflite", "int8"))
    assert found.partitions is not None and found.partitions >= 1 and "no op profiler" in found.source
    assert found.ops and all(op.ms is None and op.accelerated is not None for op in found.ops)
    assert not found.summary.timed and found.summary.total_ms is None and found.summary.top_ops == []
    assert found.summary.outside_ops == sum(not op.accelerated for op in found.ops)
    assert any(op.accelerated for op in found.ops)  # a partition replaced some of the model's ops
    whole = _profile(artifact_path(lenet_artifacts, "tflite", "fp32"))  # XNNPACK takes all of fp32 LeNet
    assert whole.partitions == 1 and whole.ops and all(op.accelerated for op in whole.ops)


def test_bench_profile_reaches_json_and_markdown(lenet_artifacts):
    paths = [artifact_path(lenet_artifacts, "onnx", p) for p in ("fp32", "int8")]
    report = bench(BenchConfig(paths, threads=1, runs=5, warmup=1, max_warmup=0, profile=True))
    (host,) = report.hosts
    assert report.method["profile"] is True
    for result in host.results:
        assert result["profile"]["summary"]["total_ms"] > 0 and result["profile"]["ops"]
    json.dumps(report.to_dict())
    text = markdown(report)
    assert "### Profiles" in text and "lenet5_int8.onnx" in text and "Q/DQ" in text
    int8 = host.results[1]
    assert ("diagnosis" in int8) == (int8["latency"]["p50_ms"] >= host.results[0]["latency"]["p50_ms"])


def test_the_device_runner_returns_the_profile(lenet_artifacts, tmp_path):
    """What a remote device runs: the shipped archive alone, a job asking for a profile, JSON back."""
    source = artifact_path(lenet_artifacts, "tflite", "int8")
    (tmp_path / "artifact_0.tflite").write_bytes(source.read_bytes())
    (tmp_path / RUNNER_NAME).write_bytes(runner_archive())
    job = Job([ArtifactJob("artifact_0.tflite")], threads=1, runs=3, warmup=1, profile=True)
    assert Job.from_dict(job.to_dict()).profile is True
    (tmp_path / "job.json").write_text(json.dumps(job.to_dict()))
    done = subprocess.run(
        [sys.executable, RUNNER_NAME, "job.json"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (result,) = json.loads(done.stdout)["results"]
    assert result["profile"]["partitions"] >= 1 and result["profile"]["ops"]

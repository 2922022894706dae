"""``--target``: the CPU an artifact is for, what it changes, and the benchmarker's word when it runs elsewhere."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from edgecnn.errors import EdgeCNNError
from edgecnn.export import ExportConfig, export
from edgecnn.runtime.metadata import ArtifactMetadata, Quantization
from edgecnn.runtime.targets import TARGETS, resolve_target, target_mismatch, this_cpu


def test_this_cpu_is_named_by_its_int8_instructions():
    assert this_cpu({"avx2", "avx512_vnni"}, "x86_64").name == "x86-vnni"
    assert this_cpu({"avx2", "amx_int8"}, "AMD64").name == "x86-vnni"
    assert this_cpu({"avx2", "fma"}, "x86_64").name == "x86-avx2"
    arm = this_cpu({"asimd", "asimddp"}, "aarch64")
    assert (arm.name, arm.arch, arm.int8_dot_product, arm.saturates) == ("arm64", "aarch64", True, False)
    assert this_cpu({"asimd"}, "aarch64").int8_dot_product is False
    assert resolve_target("auto") == this_cpu()
    assert [t.name for t in TARGETS.values() if t.saturates] == ["x86-avx2"]
    with pytest.raises(EdgeCNNError, match="unknown target 'pi'"):
        resolve_target("pi")


def _int8(target: str, seven_bit: bool) -> ArtifactMetadata:
    return ArtifactMetadata(
        precision="int8", target=target, quantization=Quantization("s", seven_bit_weights=seven_bit)
    )


def test_what_running_an_artifact_on_another_cpu_means():
    avx2, vnni = TARGETS["x86-avx2"], TARGETS["x86-vnni"]
    saturating = target_mismatch(_int8("x86-vnni", False), "onnxruntime", avx2)
    assert saturating and "can saturate" in saturating and "--target x86-avx2" in saturating
    assert "can saturate" in str(target_mismatch(_int8("x86-vnni", False), "openvino", avx2))
    assert target_mismatch(_int8("x86-vnni", False), "litert", avx2) is None  # XNNPACK does not saturate
    assert target_mismatch(_int8("x86-avx2", True), "onnxruntime", avx2) is None
    needless = target_mismatch(_int8("x86-avx2", True), "onnxruntime", vnni)
    assert needless and "--target x86-vnni" in needless
    assert target_mismatch(ArtifactMetadata(precision="fp32", target="x86-vnni"), "onnxruntime", avx2) is None
    elsewhere = target_mismatch(ArtifactMetadata(target="rpi4"), "litert", vnni)
    assert elsewhere and "made for rpi4" in elsewhere and "latency here says little" in elsewhere
    assert target_mismatch(ArtifactMetadata(), "onnxruntime", avx2) is None  # another tool's model: no target


@pytest.mark.needs("onnx")
def test_the_benchmarker_says_when_an_artifact_runs_on_a_cpu_unlike_its_target(trained_lenet, tmp_path):
    other = "rpi4" if this_cpu().arch == "x86_64" else "x86-vnni"
    config = ExportConfig(str(trained_lenet), "onnx", int8=True, calib_size=16, output=tmp_path, target=other)
    int8 = export(config).artifacts[1]
    assert json.loads((tmp_path / "lenet5_int8.onnx.json").read_text())["target"] == other
    done = run_cli("bench", int8.path, "--runs", "5", "--json")
    assert done.returncode == 0, done.stderr
    notes = json.loads(done.stdout)["hosts"][0]["results"][0]["notes"]
    assert any(f"made for {other}" in note for note in notes)

"""ONNX export: fp32 equals PyTorch, int8 holds int8 kernels, metadata travels inside, errors are clear."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from edgecnn.errors import EdgeCNNError
from edgecnn.export import ExportConfig, export, resolve_formats
from edgecnn.export import _formats as formats_module
from edgecnn.models import create_model
from edgecnn.models.checkpoint import save_checkpoint
from edgecnn.runtime import open_runner
from edgecnn.train import TrainConfig, train


@pytest.fixture(scope="module")
def trained_lenet(tmp_path_factory):
    """A LeNet-5 trained for two epochs on digits: a real model with real held-out data."""
    output = tmp_path_factory.mktemp("lenet")
    train(TrainConfig("lenet5", epochs=2, output=output), progress=False)
    return output / "best.pt"


@pytest.mark.parametrize(
    "name", ["lenet5", "mobilenet_v3_small", "resnet18", "googlenet", "efficientnet_lite0", "mobilenet_v1"]
)
def test_fp32_onnx_equals_pytorch(name, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, input_size=32 if name != "lenet5" else None)
    path = tmp_path / f"{name}.pt"
    save_checkpoint(path, model)
    report = export(ExportConfig(str(path), output=tmp_path / "out"))
    (artifact,) = report.artifacts
    assert report.verification_inputs == "random"
    assert artifact.verification["max_abs_diff_over_range"] <= 1e-4
    assert artifact.verification["top1_agreement"] == 100.0
    assert "BatchNormalization" not in artifact.ops  # folded before export


def test_int8_artifact_holds_int8_kernels_and_tracks_fp32(trained_lenet, tmp_path):
    report = export(ExportConfig(str(trained_lenet), int8=True, calib_size=64, output=tmp_path))
    fp32, int8 = report.artifacts
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    assert "QuantizeLinear" not in fp32.ops
    assert int8.ops["QuantizeLinear"] >= 4 and int8.ops["DequantizeLinear"] >= 8
    weights = [i for i in onnx.load(int8.path).graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(weights) >= 5  # every conv and linear weight stored as int8
    assert int8.size_bytes < 0.5 * fp32.size_bytes
    assert int8.verification["top1_agreement"] >= 90
    assert report.verification_images == 269 and "accuracy" in int8.verification
    assert fp32.verification["accuracy"] == pytest.approx(report.reference_accuracy)


def test_metadata_travels_inside_and_beside_the_artifact(trained_lenet, tmp_path):
    report = export(ExportConfig(str(trained_lenet), int8=True, calib_size=32, output=tmp_path))
    runner = open_runner(report.artifacts[1].path)
    metadata = runner.metadata
    assert metadata["model"] == "lenet5" and metadata["precision"] == "int8"
    assert metadata["classes"] == [str(i) for i in range(10)]
    assert metadata["preprocessing"]["crop"] == 32 and metadata["preprocessing"]["mean"]
    assert metadata["quantization"]["calibration"]["size"] == 32
    assert len(metadata["weights_sha256"]) == 16
    sidecar = json.loads((tmp_path / "lenet5_int8.json").read_text())
    assert {k: v for k, v in sidecar.items() if k != "report"} == metadata
    summary = json.loads((tmp_path / "export.json").read_text())
    assert summary["schema_version"] == 1 and len(summary["artifacts"]) == 2


def test_dynamic_batch(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, create_model("mobilenet_v3_small", num_classes=4, input_size=32))
    report = export(ExportConfig(str(path), batch="dynamic", output=tmp_path / "out"))
    runner = open_runner(report.artifacts[0].path)
    assert runner.run(np.zeros((5, 3, 32, 32), np.float32)).shape == (5, 4)
    assert runner.metadata["input"]["shape"][0] == "batch"


def test_failed_export_leaves_no_artifact(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    save_checkpoint(path, create_model("lenet5"))

    def refuse(_model):
        raise onnx.checker.ValidationError("injected failure")

    monkeypatch.setattr(onnx.checker, "check_model", refuse)
    with pytest.raises(onnx.checker.ValidationError):
        export(ExportConfig(str(path), output=tmp_path / "out"))
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"formats": "coreml"}, "unknown format 'coreml'; valid: onnx"),
        ({"fp16": True}, "onnx cannot be exported as fp16"),
        ({"int8": True}, "int8 needs calibration images"),
        ({"batch": "0"}, "batch must be a positive number or 'dynamic'"),
        ({"calib_method": "kl"}, "unknown calibration method 'kl'"),
    ],
)
def test_bad_options_fail_before_any_work(settings, message, tmp_path):
    with pytest.raises(EdgeCNNError, match=message):
        export(ExportConfig("lenet5", output=tmp_path, **settings))
    assert not tmp_path.joinpath("export.json").exists()


def test_missing_extra_names_the_install_line(monkeypatch):
    monkeypatch.setattr(formats_module.Format, "missing_modules", lambda self: ["onnxruntime"])
    with pytest.raises(EdgeCNNError, match=r"pip install 'edgecnn\[onnx\]'"):
        resolve_formats("onnx", int8=False, fp16=False)


def test_corrupt_artifact_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x01garbage")
    with pytest.raises(EdgeCNNError, match="onnxruntime cannot load"):
        open_runner(path)


def test_cli_export_prints_the_verification_table(trained_lenet, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "edgecnn.cli", "export", str(trained_lenet), "--int8", "--calib-size", "32"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={"COLUMNS": "120", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "lenet5_int8.onnx" in result.stdout and "top-1 agree" in result.stdout
    assert "Warning" not in result.stderr and "warning" not in result.stderr.lower()
    bad = subprocess.run(
        [sys.executable, "-m", "edgecnn.cli", "export", "lenet5", "--int8"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        "error: int8 needs calibration images: pass --calib digits|DIR (never random data)"
    ]

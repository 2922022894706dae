"""Export to ONNX, OpenVINO and TFLite: fp32 equals PyTorch, int8 holds int8 kernels, metadata travels
inside, errors are clear."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgecnn.errors import EdgeCNNError
from edgecnn.export import ExportConfig, changed_top1_line, export, resolve_formats
from edgecnn.export import _formats as formats_module
from edgecnn.export.pipeline import verify
from edgecnn.models import create_model, get_model_meta
from edgecnn.models.checkpoint import save_checkpoint
from edgecnn.runtime import open_runner
from edgecnn.train import TrainConfig, train


@pytest.mark.parametrize(
    "name", ["lenet5", "mobilenet_v3_small", "resnet18", "googlenet", "efficientnet_lite0", "mobilenet_v1"]
)
def test_fp32_artifacts_equal_pytorch(name, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, input_size=32 if name != "lenet5" else None)
    path = tmp_path / f"{name}.pt"
    save_checkpoint(path, model)
    report = export(ExportConfig(str(path), output=tmp_path / "out"))
    assert [a.format for a in report.artifacts] == ["onnx", "openvino", "tflite"]
    assert report.verification_inputs == "random"
    for artifact in report.artifacts:
        assert artifact.verification["max_abs_diff_over_range"] <= 1e-4, artifact.format
        assert open_runner(artifact.path).input_shape == [1, *get_model_meta(model).preprocessing.input_shape]
        assert artifact.verification["top1_agreement"] == 100.0
        assert not any("batchnorm" in op.lower() for op in artifact.ops)


def test_int8_onnx_holds_int8_kernels_and_tracks_fp32(trained_lenet, tmp_path):
    report = export(ExportConfig(str(trained_lenet), formats="onnx", int8=True, calib_size=64, output=tmp_path))
    fp32, int8 = report.artifacts
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    assert "QuantizeLinear" not in fp32.ops
    assert int8.ops["QuantizeLinear"] >= 4 and int8.ops["DequantizeLinear"] >= 8
    weights = [i for i in onnx.load(int8.path).graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(weights) >= 5  # every conv and linear weight stored as int8
    assert int8.size_bytes < 0.5 * fp32.size_bytes
    assert int8.verification["top1_agreement"] >= 90
    assert report.verification_images == 269 and "accuracy" in int8.verification
    changed = int8.verification["changed_top1_margins"]
    assert len(changed) == round((100 - int8.verification["top1_agreement"]) * 269 / 100)
    assert 0 < int8.verification["median_max_abs_logit_diff"] <= int8.verification["max_abs_logit_diff"]
    assert fp32.verification["accuracy"] == pytest.approx(report.reference_accuracy)


def test_verification_lists_each_changed_top1_by_its_reference_margin():
    reference = np.array([[5.0, 1.0, 0.0], [2.0, 1.9, 0.0], [0.0, 3.0, 2.5], [1.0, 0.0, 4.0]])
    candidate = reference + np.array([[0.0, 0.0, 0.0], [0.0, 0.2, 0.0], [0.0, -0.6, 0.0], [0.0, 0.0, -0.1]])
    checks = verify(reference, candidate, labels=np.array([0, 0, 2, 2]))
    assert checks["top1_agreement"] == 50.0
    assert checks["changed_top1_margins"] == pytest.approx([0.1, 0.5])
    assert checks["median_max_abs_logit_diff"] == pytest.approx(0.15)
    assert checks["accuracy"] == 75.0  # image 1 turned wrong, image 2 turned right: 3 of 4, as before
    line = changed_top1_line("m.tflite", checks, shown=1)
    assert line == "m.tflite: top-1 changed on 2 image(s), fp32 margin (top-1 − top-2 logit) 0.10, …"
    assert changed_top1_line("m.tflite", verify(reference, reference, None)) is None


def test_int8_openvino_holds_fake_quantize_and_int8_weights(trained_lenet, tmp_path):
    report = export(ExportConfig(str(trained_lenet), formats="openvino", int8=True, calib_size=64, output=tmp_path))
    fp32, int8 = report.artifacts
    assert "FakeQuantize" not in fp32.ops and int8.ops["FakeQuantize"] >= 4
    import openvino as ov

    constants = [op for op in ov.Core().read_model(int8.path).get_ops() if op.get_type_name() == "Constant"]
    # LeNet-5's 2 convolutions and 3 linears are int8, except the classifier, kept float on purpose
    weights = [op.get_data() for op in constants if op.get_element_type() == ov.Type.i8]
    assert len(weights) == 4
    # in a 7-bit range in every layer (NNCF's overflow fix), not only in the first
    assert all(np.abs(w).max() <= 64 for w in weights) and max(np.abs(w).max() for w in weights) >= 60
    assert int8.size_bytes < 0.5 * fp32.size_bytes
    assert int8.verification["top1_agreement"] >= 90


def test_int8_tflite_is_full_integer_without_layout_transposes(trained_lenet, tmp_path):
    report = export(ExportConfig(str(trained_lenet), formats="tflite", int8=True, calib_size=64, output=tmp_path))
    fp32, int8 = report.artifacts
    runner = open_runner(int8.path)
    assert runner.input["dtype"] == np.int8 and runner.output["dtype"] == np.int8
    assert int8.ops.get("TRANSPOSE", 0) <= 1  # at most the one NCHW→NHWC at the input
    assert "QUANTIZE" not in fp32.ops and int8.ops["CONV_2D"] >= 2
    assert int8.size_bytes < 0.5 * fp32.size_bytes
    assert int8.verification["top1_agreement"] >= 90


def test_openvino_fp16_stores_half_weights(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, create_model("resnet18", num_classes=10, input_size=32))
    report = export(ExportConfig(str(path), formats="all", fp16=True, output=tmp_path / "out"))
    assert [(a.format, a.precision) for a in report.artifacts] == [
        ("onnx", "fp32"),
        ("openvino", "fp32"),
        ("openvino", "fp16"),
        ("tflite", "fp32"),
    ]
    fp32, fp16 = report.artifacts[1:3]
    assert fp16.size_bytes < 0.6 * fp32.size_bytes
    assert fp16.verification["cosine"] > 0.999


@pytest.mark.parametrize("suffix", ["onnx", "xml", "tflite"])
def test_metadata_travels_inside_and_beside_the_artifact(trained_lenet, tmp_path, suffix):
    formats = {"onnx": "onnx", "xml": "openvino", "tflite": "tflite"}[suffix]
    export(ExportConfig(str(trained_lenet), formats=formats, int8=True, calib_size=32, output=tmp_path))
    metadata = open_runner(tmp_path / f"lenet5_int8.{suffix}").metadata
    assert metadata["model"] == "lenet5" and metadata["precision"] == "int8"
    assert metadata["classes"] == [str(i) for i in range(10)]
    assert metadata["preprocessing"]["crop"] == 32 and metadata["preprocessing"]["mean"]
    assert metadata["quantization"]["calibration"]["size"] == 32
    assert len(metadata["weights_sha256"]) == 16
    sidecar = json.loads((tmp_path / "lenet5_int8.json").read_text())
    assert {k: v for k, v in sidecar.items() if k != "report"} == metadata
    summary = json.loads((tmp_path / "export.json").read_text())
    assert summary["schema_version"] == 1 and len(summary["artifacts"]) == 2
    assert summary["peak_memory_mb"] > 100  # at least PyTorch's own footprint


def test_calibrating_on_the_training_data_keeps_its_held_out_split(tmp_path):
    train(TrainConfig("lenet5", epochs=1, seed=5, output=tmp_path / "run"), progress=False)
    checkpoint = tmp_path / "run" / "best.pt"
    own = export(ExportConfig(str(checkpoint), formats="onnx", output=tmp_path / "a"))
    explicit = export(ExportConfig(str(checkpoint), formats="onnx", calib="digits", output=tmp_path / "b"))
    assert own.artifacts[0].verification == explicit.artifacts[0].verification
    assert own.reference_accuracy == explicit.reference_accuracy


def test_dynamic_batch(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, create_model("mobilenet_v3_small", num_classes=4, input_size=32))
    report = export(ExportConfig(str(path), formats="onnx,openvino", batch="dynamic", output=tmp_path / "out"))
    for artifact in report.artifacts:
        runner = open_runner(artifact.path)
        assert runner.run(np.zeros((5, 3, 32, 32), np.float32)).shape == (5, 4)
        assert runner.metadata["input"]["shape"][0] == "batch"
        assert runner.input_shape == [None, 3, 32, 32]  # only the batch is dynamic


def test_failed_export_leaves_no_artifact(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    save_checkpoint(path, create_model("lenet5"))

    def refuse(_model):
        raise onnx.checker.ValidationError("injected failure")

    monkeypatch.setattr(onnx.checker, "check_model", refuse)
    with pytest.raises(EdgeCNNError, match=r"onnx fp32 export failed \(ValidationError\): injected failure"):
        export(ExportConfig(str(path), formats="onnx", output=tmp_path / "out"))
    assert list((tmp_path / "out").iterdir()) == []


def test_a_failure_in_the_tflite_worker_process_is_a_one_line_error(tmp_path):
    """With other formats asked too, TFLite converts in a worker process: its errors come back whole."""
    path = tmp_path / "m.pt"
    save_checkpoint(path, create_model("lenet5"))
    (tmp_path / "out" / "lenet5_fp32.tflite").mkdir(parents=True)  # the rename onto it fails
    with pytest.raises(EdgeCNNError, match=r"^tflite fp32 export failed \(IsADirectoryError\)"):
        export(ExportConfig(str(path), output=tmp_path / "out"))
    assert (tmp_path / "out" / "lenet5_fp32.onnx").is_file()  # the other formats went on beside it
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary left


def _spawned_children(pid: int) -> list[int]:
    """Child processes of ``pid`` started by multiprocessing's spawn (the TFLite worker); a process that
    ends while being looked at is skipped."""
    found = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        children = {int(c) for task in tasks for c in (task / "children").read_text().split()}
    except OSError:
        return []
    for child in children:
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
    return found


def test_a_killed_worker_process_is_a_one_line_error_and_leaves_no_temporary(tmp_path):
    """The TFLite worker killed from outside (as the OOM killer would): the export says so and
    removes the half-written file the worker could not."""
    path = tmp_path / "m.pt"
    save_checkpoint(path, create_model("lenet5"))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "edgecnn.cli", "export", str(path), "--output", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while not workers and process.poll() is None and time.monotonic() < deadline:
        workers = _spawned_children(process.pid)
        time.sleep(0.02)
    assert workers, "the TFLite worker never started"
    out.mkdir(exist_ok=True)
    half_written = out / f".lenet5_fp32.tflite.{workers[0]}.tmp"
    half_written.write_bytes(b"TFL3")
    os.kill(workers[0], signal.SIGKILL)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1
    assert stderr.strip().splitlines() == ["error: the tflite worker process died (exit code -9)"]
    assert not half_written.exists()
    assert not (out / "lenet5_fp32.tflite").exists()


def test_failed_openvino_save_leaves_no_artifact(tmp_path, monkeypatch):
    import openvino as ov

    path = tmp_path / "m.pt"
    save_checkpoint(path, create_model("lenet5"))
    real_save = ov.save_model

    def half_write(model, target, compress_to_fp16):
        real_save(model, target, compress_to_fp16=compress_to_fp16)
        raise OSError("disk full (injected)")

    monkeypatch.setattr(ov, "save_model", half_write)
    with pytest.raises(EdgeCNNError, match=r"openvino fp32 export failed \(OSError\): disk full \(injected\)"):
        export(ExportConfig(str(path), formats="openvino", output=tmp_path / "out"))
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"formats": "coreml"}, "unknown format 'coreml'; valid: onnx, openvino, tflite"),
        ({"batch": "dynamic"}, r"tflite artifacts have a fixed batch; pass --batch N"),
        ({"formats": "onnx", "fp16": True}, "onnx cannot be exported as fp16; formats with fp16: openvino"),
        ({"int8": True}, "int8 needs calibration images"),
        ({"batch": "0"}, "batch must be a positive number or 'dynamic'"),
        ({"calib_method": "kl"}, "unknown calibration method 'kl'"),
        (
            {"int8": True, "calib": "digits", "calib_method": "entropy"},
            r"openvino has no entropy calibration \(valid: auto\); formats with it: onnx",
        ),
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


@pytest.mark.parametrize(("suffix", "runtime"), [(".onnx", "onnxruntime"), (".xml", "openvino"), (".tflite", "litert")])
def test_corrupt_artifact_is_a_clear_error(tmp_path, suffix, runtime):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"\x08\x01garbage")
    with pytest.raises(EdgeCNNError, match=f"{runtime} cannot load"):
        open_runner(path)


def test_a_model_a_converter_cannot_take_is_a_one_line_error(tmp_path):
    path = tmp_path / "m.pt"
    model = create_model("alexnet", num_classes=3, input_size=64)
    get_model_meta(model).preprocessing = get_model_meta(model).preprocessing.with_input_size(32)  # pools below 1×1
    save_checkpoint(path, model)
    result = subprocess.run(
        [sys.executable, "-m", "edgecnn.cli", "export", str(path), "--format", "onnx"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: AlexNet cannot take 3×32×32 inputs (Given input size: (256x1x1). Calculated output size: "
        "(256x0x0). Output size is too small); use a larger input size"
    ]


def test_unknown_artifact_type(tmp_path):
    (tmp_path / "model.pb").write_bytes(b"x")
    with pytest.raises(EdgeCNNError, match=r"no runner for \.pb artifacts"):
        open_runner(tmp_path / "model.pb")


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
    assert all(f"lenet5_int8.{suffix}" in result.stdout for suffix in ("onnx", "xml", "tflite"))
    assert "Δ/range" in result.stdout and "top-1 agreement" in result.stdout
    assert "Warning" not in result.stderr and "warning" not in result.stderr.lower()
    assert "Traceback" not in result.stderr  # nor from the TFLite worker's exit
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

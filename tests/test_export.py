"""Export to ONNX, OpenVINO and TFLite: fp32 equals PyTorch, int8 holds int8 kernels, metadata travels
inside, errors are clear."""

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import EACH_FORMAT, needs_every_format, run_cli

from edgecnn.errors import EdgeCNNError
from edgecnn.export import ExportConfig, changed_top1_line, export, resolve_formats
from edgecnn.export import _formats as formats_module
from edgecnn.export.pipeline import verify
from edgecnn.models import create_model, get_model_meta
from edgecnn.models.checkpoint import save_checkpoint
from edgecnn.runtime import ArtifactMetadata, open_runner
from edgecnn.runtime.base import sidecar_path
from edgecnn.runtime.targets import this_cpu
from edgecnn.train import TrainConfig, train


@needs_every_format
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


@pytest.mark.needs("onnx")
@pytest.mark.parametrize("target", ["x86-avx2", "x86-vnni"])
def test_int8_onnx_holds_int8_kernels_and_tracks_fp32(trained_lenet, tmp_path, target):
    import onnx

    config = ExportConfig(str(trained_lenet), formats="onnx", int8=True, calib_size=64, output=tmp_path, target=target)
    report = export(config)
    fp32, int8 = report.artifacts
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    assert "QuantizeLinear" not in fp32.ops
    assert int8.ops["QuantizeLinear"] >= 4 and int8.ops["DequantizeLinear"] >= 8
    weights = [i for i in onnx.load(int8.path).graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(weights) >= 5  # every conv and linear weight stored as int8
    peak = max(int(np.abs(onnx.numpy_helper.to_array(w)).max()) for w in weights if np.prod(w.dims) > 1)
    stored = json.loads(sidecar_path(Path(int8.path)).read_text())
    scheme = stored["quantization"]
    assert stored["target"] == target and scheme["chosen_for"].startswith(target)
    if target == "x86-avx2":  # u8×s8 pairs add in saturating 16 bits there: 7-bit weights (reduce_range)
        assert peak <= 64 and scheme["weights_range"] == "7-bit (reduce_range)" and scheme["seven_bit_weights"]
    else:
        assert peak == 127 and scheme["weights_range"] == "8-bit" and not scheme["seven_bit_weights"]
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


@pytest.mark.needs("openvino")
@pytest.mark.parametrize("target", ["x86-avx2", "rpi5"])
def test_int8_openvino_holds_fake_quantize_and_int8_weights(trained_lenet, tmp_path, target):
    config = ExportConfig(str(trained_lenet), "openvino", int8=True, calib_size=64, output=tmp_path, target=target)
    report = export(config)
    fp32, int8 = report.artifacts
    assert "FakeQuantize" not in fp32.ops and int8.ops["FakeQuantize"] >= 4
    import openvino as ov

    constants = [op for op in ov.Core().read_model(int8.path).get_ops() if op.get_type_name() == "Constant"]
    # LeNet-5's 2 convolutions and 3 linears are int8, except the classifier, kept float on purpose
    weights = [op.get_data() for op in constants if op.get_element_type() == ov.Type.i8]
    assert len(weights) == 4
    peaks = sorted(int(np.abs(w).max()) for w in weights)
    scheme = json.loads(sidecar_path(Path(int8.path)).read_text())["quantization"]
    if target == "x86-avx2":  # u8×s8 pairs add in saturating 16 bits there: 7-bit weights in every layer
        assert peaks[-1] <= 64 and peaks[0] >= 60 and scheme["weights_range"] == "7-bit in every layer"
    else:  # NNCF's default: only the first layer keeps 7 bits
        assert peaks[0] <= 64 and peaks[1] >= 100 and scheme["weights_range"].startswith("7-bit in the first layer")
    assert int8.size_bytes < 0.5 * fp32.size_bytes
    assert int8.verification["top1_agreement"] >= 90


@pytest.mark.needs("tflite")
def test_int8_tflite_is_integer_between_a_float_stem_and_classifier(trained_lenet, tmp_path):
    from ai_edge_litert import schema_py_generated as schema

    report = export(ExportConfig(str(trained_lenet), formats="tflite", int8=True, calib_size=64, output=tmp_path))
    fp32, int8 = report.artifacts
    runner = open_runner(int8.path)
    assert runner.input["dtype"] == np.float32 and runner.output["dtype"] == np.float32
    model = schema.Model.GetRootAsModel(Path(int8.path).read_bytes(), 0)
    graph = model.Subgraphs(0)
    codes = {
        schema.BuiltinOperator.CONV_2D: "conv",
        schema.BuiltinOperator.DEPTHWISE_CONV_2D: "conv",  # the one-channel stem
        schema.BuiltinOperator.FULLY_CONNECTED: "linear",
    }
    weights = [
        (codes[code], graph.Tensors(op.Inputs(1)).Type())
        for op in (graph.Operators(i) for i in range(graph.OperatorsLength()))
        if (code := model.OperatorCodes(op.OpcodeIndex()).BuiltinCode()) in codes
    ]
    float32, int8_type = schema.TensorType.FLOAT32, schema.TensorType.INT8
    # LeNet-5: three convolutions, two linear layers; the first and the last stay float
    assert weights == [
        ("conv", float32),
        ("conv", int8_type),
        ("conv", int8_type),
        ("linear", int8_type),
        ("linear", float32),
    ]
    assert int8.ops.get("TRANSPOSE", 0) <= 1  # at most the one NCHW→NHWC at the input
    assert "QUANTIZE" not in fp32.ops and int8.ops["CONV_2D"] >= 2
    assert int8.size_bytes < 0.5 * fp32.size_bytes
    assert int8.verification["top1_agreement"] >= 90


@needs_every_format
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


def test_each_artifact_of_one_model_keeps_its_own_sidecar(lenet_artifacts):
    paths = [Path(a.path) for a in lenet_artifacts.artifacts]
    assert len({p.parent for p in paths}) == 1 and len({p.stem for p in paths}) == 2  # lenet5_fp32, lenet5_int8
    for artifact, path in zip(lenet_artifacts.artifacts, paths, strict=True):
        sidecar = json.loads(sidecar_path(path).read_text())
        assert (sidecar["report"]["path"], sidecar["report"]["format"]) == (artifact.path, artifact.format)
        assert sidecar["precision"] == artifact.precision


@pytest.mark.parametrize("fmt", EACH_FORMAT)
def test_metadata_travels_inside_and_beside_the_artifact(trained_lenet, tmp_path, fmt):
    export(ExportConfig(str(trained_lenet), formats=fmt.name, int8=True, calib_size=32, output=tmp_path))
    metadata = open_runner(tmp_path / f"lenet5_int8{fmt.suffix}").metadata
    assert metadata.model == "lenet5" and metadata.precision == "int8"
    assert metadata.classes == tuple(str(i) for i in range(10))
    assert metadata.preprocessing and metadata.preprocessing["crop"] == 32 and metadata.preprocessing["mean"]
    assert metadata.quantization and metadata.quantization.calibration
    assert metadata.quantization.calibration.size == 32
    assert metadata.weights_sha256 and len(metadata.weights_sha256) == 16
    sidecar = json.loads((tmp_path / f"lenet5_int8{fmt.suffix}.json").read_text())
    assert ArtifactMetadata.from_dict(sidecar) == metadata
    summary = json.loads((tmp_path / "export.json").read_text())
    assert summary["schema_version"] == 1 and len(summary["artifacts"]) == 2
    assert summary["peak_memory_mb"] > 100  # at least PyTorch's own footprint


@pytest.mark.needs("onnx")
def test_calibrating_on_the_training_data_keeps_its_held_out_split(tmp_path):
    train(TrainConfig("lenet5", epochs=1, seed=5, output=tmp_path / "run"), progress=False)
    checkpoint = tmp_path / "run" / "best.pt"
    own = export(ExportConfig(str(checkpoint), formats="onnx", output=tmp_path / "a"))
    explicit = export(ExportConfig(str(checkpoint), formats="onnx", calib="digits", output=tmp_path / "b"))
    assert own.artifacts[0].verification == explicit.artifacts[0].verification
    assert own.reference_accuracy == explicit.reference_accuracy


@pytest.mark.needs("onnx", "openvino")
def test_dynamic_batch(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, create_model("mobilenet_v3_small", num_classes=4, input_size=32))
    report = export(ExportConfig(str(path), formats="onnx,openvino", batch="dynamic", output=tmp_path / "out"))
    for artifact in report.artifacts:
        runner = open_runner(artifact.path)
        assert runner.run(np.zeros((5, 3, 32, 32), np.float32)).shape == (5, 4)
        assert runner.metadata.input and runner.metadata.input.shape[0] == "batch"
        assert runner.input_shape == [None, 3, 32, 32]  # only the batch is dynamic


@pytest.mark.needs("onnx")
def test_failed_export_leaves_no_artifact(tmp_path, monkeypatch):
    import onnx

    path = tmp_path / "m.pt"
    save_checkpoint(path, create_model("lenet5"))

    def refuse(_model):
        raise onnx.checker.ValidationError("injected failure")

    monkeypatch.setattr(onnx.checker, "check_model", refuse)
    with pytest.raises(EdgeCNNError, match=r"onnx fp32 export failed \(ValidationError\): injected failure"):
        export(ExportConfig(str(path), formats="onnx", output=tmp_path / "out"))
    assert list((tmp_path / "out").iterdir()) == []


@needs_every_format
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


@needs_every_format
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


@pytest.mark.needs("openvino")
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
        # formats are checked one by one in the table's order, each for its extra as well: these errors need
        # the extras of the formats checked before
        pytest.param(
            {"batch": "dynamic"},
            r"tflite artifacts have a fixed batch; pass --batch N",
            marks=pytest.mark.needs("onnx", "openvino"),
        ),
        ({"formats": "onnx", "fp16": True}, "onnx cannot be exported as fp16; formats with fp16: openvino"),
        pytest.param({"int8": True}, "int8 needs calibration images", marks=needs_every_format),
        ({"batch": "0"}, "batch must be a positive number or 'dynamic'"),
        ({"min_agreement": 0.99}, r"--min-agreement bounds .* it needs --int8"),
        ({"int8": True, "min_agreement": 99}, r"a fraction in \[0, 1\], got 99"),
        ({"calib_method": "kl"}, "unknown calibration method 'kl'"),
        pytest.param(
            {"int8": True, "calib": "digits", "calib_method": "entropy"},
            r"openvino has no entropy calibration \(valid: auto\); formats with it: onnx",
            marks=pytest.mark.needs("onnx"),
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


@pytest.mark.parametrize("fmt", EACH_FORMAT)
def test_corrupt_artifact_is_a_clear_error(tmp_path, fmt):
    path = tmp_path / f"broken{fmt.suffix}"
    path.write_bytes(b"\x08\x01garbage")
    with pytest.raises(EdgeCNNError, match=f"{fmt.runtime} cannot load"):
        open_runner(path)


@pytest.mark.needs("onnx")
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


@needs_every_format
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


def test_int8_saturates_on_x86_without_vnni_only():
    assert this_cpu({"avx2", "fma"}, "x86_64").saturates
    assert not this_cpu({"avx2", "avx512_vnni"}, "x86_64").saturates
    assert not this_cpu({"avx2", "avx_vnni"}, "AMD64").saturates
    assert not this_cpu({"asimd"}, "aarch64").saturates  # ARM's int8 dot products accumulate in 32 bits


def test_an_unknown_target_is_refused_before_any_work(trained_lenet, tmp_path):
    with pytest.raises(EdgeCNNError, match="unknown target 'rpi3'; valid: auto, x86-vnni, x86-avx2, arm64, rpi4"):
        ExportConfig(str(trained_lenet), target="rpi3")
    done = run_cli("export", str(trained_lenet), "--target", "rpi3", "--output", str(tmp_path))
    assert done.returncode == 1 and done.stderr.strip().startswith("error: unknown target 'rpi3'")
    assert not any(tmp_path.iterdir())


@pytest.mark.needs("openvino")
def test_openvino_verifies_fp32_in_f32_and_records_the_runtime_default(tmp_path):
    import openvino as ov

    path = tmp_path / "m.pt"
    save_checkpoint(path, create_model("resnet18", num_classes=10, input_size=32))
    report = export(ExportConfig(str(path), formats="openvino", output=tmp_path / "out"))
    (artifact,) = report.artifacts
    default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()
    assert artifact.verification["precision"] == "fp32"  # pinned, read back from the compiled model
    assert artifact.verification["runtime_default"] == {"f32": "fp32", "f16": "fp16"}.get(default, default)
    assert artifact.verification["max_abs_diff_over_range"] <= 1e-4 and artifact.status == "ok"
    assert open_runner(artifact.path, precision="f32").precision == "fp32"


def test_status_says_which_target_an_artifact_misses():
    from edgecnn.export.pipeline import judge

    good = {"cosine": 0.99, "top1_agreement": 99.5, "accuracy": 90.0, "max_abs_diff_over_range": 1e-2}
    assert judge("int8", good, 90.2) == ("ok", "")
    status, reason = judge("int8", {**good, "top1_agreement": 97.0, "accuracy": 89.0}, 90.2)
    assert status == "degraded" and "agreement 97.0% < 99%" in reason and "drop 1.20 > 0.5" in reason
    assert judge("int8", {**good, "cosine": 0.74}, None)[0] == "broken"
    assert judge("fp32", {**good, "cosine": 1.0, "max_abs_diff_over_range": 3e-2}, None)[0] == "degraded"
    assert judge("fp32", {**good, "cosine": 0.99}, None)[0] == "broken"


@pytest.fixture
def broken_tflite_int8(monkeypatch):
    """TFLite int8 calibrated to a fixed activation step of 8 (real PT2E, real converter): a broken artifact."""
    from torchao.quantization.pt2e import FixedQParamsObserver

    from edgecnn.export import tflite

    original = tflite._quantization_config

    def coarse(method, per_channel):
        config = original(method, per_channel)
        observer = FixedQParamsObserver.with_args(scale=8.0, zero_point=0, quant_min=-128, quant_max=127)
        activation = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=observer)
        return dataclasses.replace(config, input_activation=activation, output_activation=activation)

    monkeypatch.setattr(tflite, "_quantization_config", coarse)


@pytest.mark.needs("tflite")
def test_export_refuses_an_artifact_its_verification_calls_broken(trained_lenet, tmp_path, broken_tflite_int8):
    config = ExportConfig(str(trained_lenet), formats="tflite", int8=True, calib_size=16, output=tmp_path)
    with pytest.raises(EdgeCNNError, match=r"lenet5_int8\.tflite is broken: mean cosine .* --keep-degraded"):
        export(config)
    recorded = json.loads((tmp_path / "export.json").read_text())["artifacts"]
    assert [(a["precision"], a["status"]) for a in recorded] == [("fp32", "ok"), ("int8", "broken")]
    sidecar = json.loads((tmp_path / "lenet5_int8.tflite.json").read_text())
    assert sidecar["report"]["status"] == "broken" and Path(recorded[1]["path"]).exists()  # kept to inspect
    kept = export(dataclasses.replace(config, keep_degraded=True))
    assert kept.artifacts[1].status == "broken"


@pytest.mark.needs("tflite")
def test_cli_export_exits_1_naming_the_broken_artifact(
    trained_lenet, tmp_path, broken_tflite_int8, monkeypatch, capsys
):
    from edgecnn.cli import main

    arguments = ["edgecnn", "export", str(trained_lenet), "--format", "tflite", "--int8", "--calib-size", "16"]
    monkeypatch.setattr(sys, "argv", [*arguments, "--output", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: lenet5_int8.tflite is broken: mean cosine with PyTorch fp32")
    monkeypatch.setattr(sys, "argv", [*arguments, "--output", str(tmp_path), "--keep-degraded"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0  # kept on request, said so
    assert "warning: lenet5_int8.tflite is broken: mean cosine" in capsys.readouterr().err


def test_peers_call_an_int8_artifact_far_below_the_others_broken(tmp_path):
    from edgecnn.export.pipeline import ArtifactReport, _judge_against_peers, _Run

    def run(name, agreement):
        artifact = ArtifactReport("f", "int8", str(tmp_path / name), 1, 0.0, {"top1_agreement": agreement})
        artifact.status = "degraded"
        return _Run(artifact, ArtifactMetadata(), np.zeros((1, 1)))

    runs = [run("a.onnx", 85.0), run("b.xml", 83.0), run("c.tflite", 48.7)]
    _judge_against_peers(runs)
    assert [r.artifact.status for r in runs] == ["degraded", "degraded", "broken"]
    assert "36.3 points below a.onnx's 85.0%" in runs[2].artifact.status_reason
    assert json.loads((tmp_path / "c.tflite.json").read_text())["report"]["status"] == "broken"  # the sidecar says so

"""Cross-layer equalization and bias correction: exact in fp32, what they fix in simulated int8, and the export
that carries them into every format."""

import json

import numpy as np
import pytest
import torch
from conftest import artifact_path, needs_every_format, run_cli
from test_sensitivity import digits_images

from edgecnn import create_model
from edgecnn.export import ExportConfig, export
from edgecnn.models.checkpoint import load_checkpoint
from edgecnn.optimize import fold_batchnorm
from edgecnn.optimize.int8_correction import (
    CorrectionReport,
    correct_for_int8,
    equalization_pairs,
    equalize,
    recipe_float_layers,
    simulated_error,
)
from edgecnn.optimize.sensitivity import (
    fake_quantize_weight,
    input_ranges,
    layer_hooks,
    logits,
    quantizable_layers,
    quantized,
)
from edgecnn.runtime import open_runner


def spread_resnet() -> torch.nn.Module:
    """A folded ResNet-18 whose first block's channels are rescaled 100× apart between its two convolutions
    (through the ReLU, so the fp32 function is the same): the range spread per-tensor int8 cannot hold."""
    torch.manual_seed(0)
    model = fold_batchnorm(create_model("resnet18", num_classes=10).eval())
    first, second = model.layer1[0].conv1, model.layer1[0].conv2
    factors = torch.logspace(-2, 2, first.out_channels)
    with torch.no_grad():
        first.weight *= factors.reshape(-1, 1, 1, 1)
        first.bias *= factors
        second.weight /= factors.reshape(1, -1, 1, 1)
    return model


def test_equalization_is_exact_in_fp32_and_evens_each_pairs_channel_ranges():
    model = spread_resnet()
    pairs, skipped = equalization_pairs(model)
    blocks = [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert pairs == [(f"{block}.conv1", f"{block}.conv2") for block in blocks] and skipped == {}
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    before = logits(model, images)
    equalize(model, pairs)
    after = logits(model, images)
    assert float((after - before).abs().max() / (before.max() - before.min())) <= 1e-5
    first, second = model.layer1[0].conv1, model.layer1[0].conv2
    out_range = first.weight.reshape(first.out_channels, -1).abs().amax(1)
    in_range = second.weight.transpose(0, 1).reshape(second.in_channels, -1).abs().amax(1)
    assert torch.allclose(out_range, in_range, rtol=1e-2)


def test_auto_equalizes_where_per_tensor_int8_would_lose_the_small_channels():
    model = spread_resnet()
    generator = torch.Generator().manual_seed(2)
    calibration, held_out = (
        torch.rand(32, 3, 32, 32, generator=generator),
        torch.rand(32, 3, 32, 32, generator=generator),
    )
    before = {key: value.clone() for key, value in model.state_dict().items()}
    corrected = correct_for_int8(model, calibration.numpy(), held_out.numpy(), "auto", per_channel=False)
    report = corrected.report
    assert "cle" in report.applied and report.equalized_pairs == 8 and report.fp32_change <= 1e-5
    assert report.simulated_error["cle"] < 0.5 * report.simulated_error["none"]
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())  # a copy changed
    int8 = [name for name in quantizable_layers(model) if name not in recipe_float_layers(model)]
    reference = logits(model, held_out)
    alone = simulated_error(corrected.model, int8, calibration, held_out, reference, per_channel=False)[0]
    assert alone == pytest.approx(report.simulated_error[report.applied], rel=1e-4)  # what it chose is what it gave


def test_relu6_pairs_are_left_alone_and_counted():
    model = fold_batchnorm(create_model("mobilenet_v2", num_classes=10).eval())
    pairs, skipped = equalization_pairs(model)
    # 17 blocks: the first (no expansion) has one pair through ReLU6, the others two; one more from the stem.
    # Equalized: the projections of blocks without a residual into the next layer that has none either
    assert skipped == {"ReLU6": 34}
    assert pairs == [("features.1.conv.1", "features.2.conv.0.0"), ("features.17.conv.2", "features.18.0")]


def test_bias_correction_brings_int8_means_back_and_lowers_the_held_out_error(trained_lenet):
    model = fold_batchnorm(load_checkpoint(trained_lenet).model.eval())
    images = torch.from_numpy(digits_images(model, 320))
    calibration, held_out = images[:64], images[64:]
    layers = quantizable_layers(model)
    int8 = {name: layers[name] for name in layers if name not in recipe_float_layers(model)}
    reference = logits(model, held_out)
    plain = simulated_error(model, list(int8), calibration, held_out, reference, per_channel=False)[0]
    corrected = correct_for_int8(model, calibration.numpy(), held_out.numpy(), "bias", per_channel=False)
    assert corrected.report.corrected_layers == len(int8) == 3 and corrected.model is not model
    fixed = corrected.model
    fixed_layers = quantizable_layers(fixed)
    chosen = {name: fixed_layers[name] for name in int8}
    means: dict[str, dict[str, torch.Tensor]] = {"fp32": {}, "int8": {}}

    def record(precision):
        def hook_for(name):
            def hook(_, __, output):
                means[precision][name] = output.mean(dim=[d for d in range(output.dim()) if d != 1])

            return hook

        return hook_for

    with layer_hooks(int8, record("fp32"), after=True):
        model(calibration)
    ranges = input_ranges(model, int8, calibration)  # the inputs' ranges the correction rounded to
    with quantized(chosen, list(chosen), ranges, per_channel=False), layer_hooks(chosen, record("int8"), after=True):
        fixed(calibration)
    for name in int8:  # on the images it was fitted to, the corrected int8 mean is the fp32 model's
        assert torch.allclose(means["int8"][name], means["fp32"][name], atol=1e-4), name
    assert not all(torch.equal(fixed_layers[name].bias, layers[name].bias) for name in int8)
    after = simulated_error(fixed, list(int8), calibration, held_out, reference, per_channel=False)[0]
    assert after < plain


def test_per_tensor_weights_share_one_scale():
    weight = torch.randn(4, 3, 3, 3) * torch.tensor([1.0, 10.0, 100.0, 1000.0]).reshape(-1, 1, 1, 1)
    rounded = fake_quantize_weight(weight, per_channel=False)
    step = weight.abs().max() / 127
    assert torch.allclose(rounded / step, (rounded / step).round(), atol=1e-3)
    assert rounded[0].abs().max() == 0  # the smallest channel is under half a step of the largest's scale


@needs_every_format
def test_export_carries_the_correction_into_every_format_and_per_tensor_weights(trained_lenet, tmp_path):
    config = dict(int8=True, calib_size=32, per_tensor=True, keep_degraded=True)
    corrected = export(ExportConfig(str(trained_lenet), int8_correction="bias", output=tmp_path / "bias", **config))
    plain = export(
        ExportConfig(
            str(trained_lenet), formats="onnx,tflite", int8_correction="none", output=tmp_path / "none", **config
        )
    )
    assert corrected.int8_correction["applied"] == "bias" and corrected.int8_correction["corrected_layers"] == 3
    recorded = json.loads((tmp_path / "bias" / "export.json").read_text())["int8_correction"]
    assert recorded["granularity"] == "per-tensor" and plain.int8_correction["applied"] == "none"
    for fmt in ("onnx", "openvino", "tflite"):
        metadata = open_runner(artifact_path(corrected, fmt, "int8")).metadata
        assert metadata.quantization.corrections == "bias correction (edgecnn)"
        assert metadata.quantization.weights_per_channel is False
        assert "per-channel" not in metadata.quantization.scheme
        assert open_runner(artifact_path(corrected, fmt, "fp32")).metadata.quantization is None
    assert _onnx_weight_scales(artifact_path(corrected, "onnx", "int8")) == {1}
    assert _tflite_weight_scales(artifact_path(corrected, "tflite", "int8")) == {1}
    for fmt in ("onnx", "tflite"):  # the corrected int8 is closer to fp32 on the held-out images
        ours = next(a for a in corrected.artifacts if (a.format, a.precision) == (fmt, "int8")).verification
        theirs = next(a for a in plain.artifacts if (a.format, a.precision) == (fmt, "int8")).verification
        assert ours["cosine"] > theirs["cosine"], fmt
    assert all(a.verification["max_abs_diff_over_range"] < 1e-4 for a in corrected.artifacts if a.precision == "fp32")


@needs_every_format
def test_auto_leaves_openvino_its_own_bias_correction(trained_lenet, tmp_path, monkeypatch):
    """Where ``auto`` chooses bias correction, NNCF goes on correcting OpenVINO's biases in OpenVINO's own
    arithmetic: its int8 IR is the one an export without edgecnn's correction makes; the others get edgecnn's.
    ``raw`` switches NNCF's off too, and the metadata says which correction each artifact had."""
    # bias correction lowers this LeNet's simulated per-tensor error by a few percent: any gain is chosen
    monkeypatch.setattr("edgecnn.optimize.int8_correction.AUTO_GAIN", 1.0)
    config = dict(int8=True, calib_size=32, per_tensor=True)
    auto = export(ExportConfig(str(trained_lenet), output=tmp_path / "auto", **config))
    plain, raw = (
        export(
            ExportConfig(str(trained_lenet), formats="openvino", int8_correction=name, output=tmp_path / name, **config)
        )
        for name in ("none", "raw")
    )
    assert auto.int8_correction["applied"] == "bias" and auto.int8_correction["own_bias_correction"] == ["openvino"]
    assert "openvino: its own instead" in CorrectionReport(**auto.int8_correction).summary()
    assert raw.int8_correction["applied"] == "none"
    assert "own bias correction off" in CorrectionReport(**raw.int8_correction).summary()

    def corrections(report, fmt: str) -> str | None:
        return open_runner(artifact_path(report, fmt, "int8")).metadata.quantization.corrections

    assert corrections(auto, "onnx") == corrections(auto, "tflite") == "bias correction (edgecnn)"
    assert corrections(auto, "openvino") == corrections(plain, "openvino") == "bias correction (NNCF)"
    assert corrections(raw, "openvino") is None
    weights = [
        artifact_path(report, "openvino", "int8").with_suffix(".bin").read_bytes() for report in (auto, plain, raw)
    ]
    assert weights[0] == weights[1] != weights[2]


def _onnx_weight_scales(path) -> set[int]:
    """The sizes of the scales that dequantize the convolutions' weights."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    initializers = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    sizes = set()
    for node in graph.node:
        if node.op_type == "Conv" and node.input[1] in producers:
            dequantize = producers[node.input[1]]
            if dequantize.op_type == "DequantizeLinear" and dequantize.input[0] in initializers:
                sizes.add(int(np.size(initializers[dequantize.input[1]])))
    return sizes


def _tflite_weight_scales(path) -> set[int]:
    """The sizes of the int8 convolutions' weight scales."""
    from ai_edge_litert import schema_py_generated as schema

    from edgecnn.export.tflite import operators

    graph = schema.Model.GetRootAsModel(path.read_bytes(), 0).Subgraphs(0)
    sizes = set()
    for name, op in operators(path):
        weights = graph.Tensors(op.Inputs(1)) if name in ("CONV_2D", "DEPTHWISE_CONV_2D") else None
        if weights is not None and weights.Type() == schema.TensorType.INT8:
            sizes.add(weights.Quantization().ScaleLength())
    return sizes


def test_bad_correction_options_are_one_line_errors(tmp_path):
    result = run_cli("export", "lenet5", "--int8", "--calib", "digits", "--int8-correction", "sideways")
    assert result.returncode != 0 and "unknown int8 correction 'sideways'" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = run_cli("export", "lenet5", "--per-tensor", "--output", str(tmp_path))
    assert result.returncode != 0 and "--per-tensor" in result.stderr and "needs --int8" in result.stderr

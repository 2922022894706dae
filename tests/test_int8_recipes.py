"""The int8 recipes' own choices: squeeze-excite branches stay float in every format, and the
calibration methods do what they say."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import needs_every_format

from edgecnn.export import ExportConfig, export
from edgecnn.export._graph import GraphNode, float_followers, squeeze_excite_nodes
from edgecnn.export.onnx import _MagnitudeHistogram
from edgecnn.export.tflite import _observers
from edgecnn.models import create_model
from edgecnn.models.checkpoint import save_checkpoint
from edgecnn.models.layers import SqueezeExcitation
from edgecnn.runtime import ArtifactMetadata, Runner, open_runner
from edgecnn.runtime.targets import this_cpu


def test_squeeze_excite_branch_runs_from_the_pool_to_the_rescaling_multiply():
    nodes = [
        GraphNode("stem", "Conv", ("image",), ("x",)),
        GraphNode("pool", "ReduceMean", ("x",), ("p",)),
        GraphNode("fc1", "Conv", ("p",), ("h",)),
        GraphNode("gate1", "Sigmoid", ("h",), ("g1",)),
        GraphNode("silu", "Mul", ("h", "g1"), ("s",)),  # inside the branch: both inputs are its own
        GraphNode("fc2", "Conv", ("s",), ("e",)),
        GraphNode("scaled", "Mul", ("e", "const"), ("e2",)),  # a constant factor is not the features
        GraphNode("gate2", "Sigmoid", ("e2",), ("g2",)),
        GraphNode("rescale", "Mul", ("x", "g2"), ("y",)),
        GraphNode("project", "Conv", ("y",), ("z",)),
        GraphNode("head_pool", "GlobalAveragePool", ("z",), ("q",)),  # the classifier's pool: no branch
        GraphNode("flatten", "Flatten", ("q",), ("f",)),
        GraphNode("classifier", "Gemm", ("f",), ("logits",)),
    ]
    assert squeeze_excite_nodes(nodes) == sorted(["pool", "fc1", "gate1", "silu", "fc2", "scaled", "gate2", "rescale"])
    assert squeeze_excite_nodes([n for n in nodes if n.name != "rescale"]) == []


def test_a_float_layers_activations_stay_float_up_to_the_next_layer_or_an_int8_input():
    nodes = [
        GraphNode("const", "Constant", (), ("c",)),
        GraphNode("expand", "Conv", ("image", "w1"), ("x",)),  # the float layer
        GraphNode("gate", "Sigmoid", ("x",), ("g",)),
        GraphNode("silu", "Mul", ("x", "g"), ("s",)),  # both inputs float: follows
        GraphNode("scaled", "Mul", ("s", "c"), ("t",)),  # a constant factor does not count
        GraphNode("depthwise", "Conv", ("t", "w2"), ("d",)),  # the next layer: the walk stops
        GraphNode("after", "Relu", ("d",), ("r",)),
        GraphNode("residual", "Add", ("t", "r"), ("sum",)),  # one input from an int8 layer
        GraphNode("pool", "ReduceMean", ("s",), ("p",)),
    ]
    followers = ["gate", "pool", "scaled", "silu"]
    assert float_followers(nodes, ["expand"], ("Conv", "Gemm", "MatMul")) == followers
    both = float_followers(nodes, ["expand", "depthwise"], ("Conv",))
    assert both == sorted([*followers, "after", "residual"])
    assert float_followers(nodes, [], ("Conv",)) == []


@pytest.fixture(scope="module")
def squeeze_excite_artifacts(tmp_path_factory):
    """MobileNetV3-Small (nine squeeze-excite blocks) exported int8 to all three formats."""
    folder = tmp_path_factory.mktemp("mnv3")
    torch.manual_seed(0)
    model = create_model("mobilenet_v3_small", num_classes=10, input_size=32)
    save_checkpoint(folder / "m.pt", model)
    # random weights give logits of about 1e-9, which int8 cannot represent: the export calls such artifacts
    # broken, and this test looks only at which layers are float
    config = ExportConfig(
        str(folder / "m.pt"), int8=True, calib="digits", calib_size=16, output=folder / "out", keep_degraded=True
    )
    report = export(config)
    blocks = sum(isinstance(m, SqueezeExcitation) for m in model.modules())
    return {a.format: a.path for a in report.artifacts if a.precision == "int8"}, blocks


# the tests on squeeze_excite_artifacts (an export to every format) need every format's extra
@needs_every_format
def test_squeeze_excite_stays_float_in_onnx(squeeze_excite_artifacts):
    import onnx

    paths, blocks = squeeze_excite_artifacts
    graph = onnx.load(paths["onnx"]).graph
    float_weights = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    float_convs = [n for n in convs if n.input[1] in float_weights]
    assert len(float_convs) == 2 * blocks + 1  # fc1 and fc2 of each block, and the first convolution
    assert len(convs) > len(float_convs) + 10  # the rest is int8


@needs_every_format
def test_squeeze_excite_stays_float_in_openvino(squeeze_excite_artifacts):
    import openvino as ov

    paths, blocks = squeeze_excite_artifacts
    convs = [
        op for op in ov.Core().read_model(paths["openvino"]).get_ordered_ops() if op.get_type_name() == "Convolution"
    ]

    def int8_weights(conv):
        node = conv.input_value(1).get_node()
        while node.get_type_name() != "Constant":  # Convert / Subtract / Multiply of the decompressed weights
            node = node.input_value(0).get_node()
        return node.get_element_type() == ov.Type.i8

    assert sum(not int8_weights(c) for c in convs) == 2 * blocks
    assert sum(int8_weights(c) for c in convs) > 10


@needs_every_format
def test_squeeze_excite_stays_float_in_tflite(squeeze_excite_artifacts):
    from ai_edge_litert import schema_py_generated as schema

    paths, blocks = squeeze_excite_artifacts
    model = schema.Model.GetRootAsModel(Path(paths["tflite"]).read_bytes(), 0)
    graph = model.Subgraphs(0)
    conv_code = schema.BuiltinOperator.CONV_2D
    filters = [
        graph.Tensors(graph.Operators(i).Inputs(1)).Type()
        for i in range(graph.OperatorsLength())
        if model.OperatorCodes(graph.Operators(i).OpcodeIndex()).BuiltinCode() == conv_code
    ]
    assert filters.count(schema.TensorType.FLOAT32) == 2 * blocks + 1  # and the stem, as in every recipe
    assert filters.count(schema.TensorType.INT8) > 10


@pytest.mark.needs("tflite")
def test_sampled_histogram_keeps_the_exact_range_and_percentile_cuts_outliers():
    from torchao.quantization.pt2e import MinMaxObserver

    histogram_observer, percentile_observer = _observers()
    chunks = [torch.rand(64, 32, 16, 16) for _ in range(8)]  # a calibration run: 4 million values
    chunks[3][3, 5, 7, 9] = 50.0  # one outlier, outside every sampled position
    histogram, percentile, minmax = histogram_observer(), percentile_observer(), MinMaxObserver()
    for chunk in chunks:
        histogram(chunk)
        percentile(chunk)
        minmax(chunk)
    assert histogram.max_val.item() == 50.0  # the range stays exact
    assert histogram.histogram.sum() < sum(c.numel() for c in chunks) / 10  # from a sample
    _, high = percentile._non_linear_param_search()
    assert 0.99 < high.item() < 1.1  # the outlier is cut off; the uniform values are kept
    assert percentile.calculate_qparams()[0].item() < minmax.calculate_qparams()[0].item() / 20


@pytest.mark.needs("tflite")
@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_tflite_calibration_method_is_applied_and_recorded(trained_lenet, tmp_path, method):
    def exported(chosen: str) -> Runner:
        settings = {"formats": "tflite", "int8": True, "calib_size": 32, "calib_method": chosen}
        report = export(ExportConfig(str(trained_lenet), **settings, output=tmp_path / chosen))
        return open_runner(report.artifacts[1].path)

    def scales(runner: Runner) -> list[float]:
        return [float(d["quantization"][0]) for d in runner.interpreter.get_tensor_details()]

    chosen, auto = exported(method), exported("auto")
    assert str(chosen.metadata.quantization.method).startswith(method)
    assert "histogram" in str(auto.metadata.quantization.method)
    assert scales(chosen) != scales(auto)  # other observers, other activation ranges


@pytest.mark.needs("onnx")  # its ranges are onnxruntime's TensorData
def test_onnx_percentile_histogram_cuts_outliers_and_keeps_counts_when_it_widens():
    histogram = _MagnitudeHistogram()
    generator = np.random.default_rng(0)
    chunks = [generator.random((4, 32, 32, 32), dtype=np.float32) * (1 + i) for i in range(4)]  # each one wider
    chunks[2][1, 2, 3, 5] = 50.0  # one outlier, outside every sampled position
    for chunk in chunks:
        histogram.add(chunk)
    assert histogram.high == 50.0 and histogram.top == 50.0  # the range seen stays exact
    assert histogram.counts.sum() == sum(c.size for c in chunks) / 16  # re-binning loses no count
    ranges = histogram.range()
    assert 3.9 < ranges.highest < 4.1  # the outlier is cut off; the widest uniform chunk (0..4) is kept
    assert ranges.lowest == pytest.approx(histogram.low) and ranges.lowest >= 0  # never below what was seen

    signed = _MagnitudeHistogram()
    signed.add(generator.standard_normal(100_000).astype(np.float32))
    ranges = signed.range()
    assert ranges.lowest == pytest.approx(-ranges.highest) and 3.5 < ranges.highest < 5  # ±(99.999th of |x|)


@pytest.mark.needs("onnx")
def test_onnx_auto_calibration_is_the_streamed_percentile(trained_lenet, tmp_path):
    import onnx

    def calibrated(method: str) -> tuple[str, list[float]]:
        settings = {"formats": "onnx", "int8": True, "calib_size": 32, "calib_method": method}
        artifact = export(ExportConfig(str(trained_lenet), **settings, output=tmp_path / method)).artifacts[1]
        graph = onnx.load(artifact.path).graph
        values = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
        scales = sorted(float(values[n.input[1]]) for n in graph.node if n.op_type == "QuantizeLinear")
        return str(open_runner(artifact.path).metadata.quantization.method), scales

    (auto_method, auto), (minmax_method, minmax) = calibrated("auto"), calibrated("minmax")
    assert auto_method.startswith("percentile") and minmax_method.startswith("minmax")
    assert len(auto) == len(minmax) >= 4 and auto != minmax  # the same activations, other ranges


class _WideConvThenReLU6(torch.nn.Module):
    """After a stem (the first convolution stays float), a convolution whose BatchNorm scales half its
    channels to ±100 before ReLU6 (as an ImageNet model's folded BatchNorm does), then a 1×1 convolution
    that reads the other half, whose values stay inside [0, 6]."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Conv2d(3, 3, 1)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8).eval()
        with torch.no_grad():
            self.bn.weight.copy_(torch.tensor([1.0] * 4 + [100.0] * 4))
        self.act = torch.nn.ReLU6()
        self.head = torch.nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            self.head.weight[:, 4:] = 0  # the logits depend on the channels that stay inside [0, 6]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.bn(self.conv(self.stem(x))))).mean((2, 3))


@pytest.mark.needs("tflite")
def test_tflite_relu6_is_quantized_with_its_clamped_range_not_its_input_range(tmp_path):
    from edgecnn.export._formats import Int8Job
    from edgecnn.export.tflite import quantize_int8
    from edgecnn.optimize import fold_batchnorm

    model = fold_batchnorm(_WideConvThenReLU6().eval())
    images = torch.randn(40, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    calibration = [images[i : i + 1].numpy() for i in range(32)]
    path = tmp_path / "relu6.tflite"
    metadata = ArtifactMetadata(precision="int8")
    quantize_int8(Int8Job(model, images[:1], tmp_path / "unused", path, calibration, "auto", metadata, this_cpu()))
    runner = open_runner(path)
    test = images[32:].numpy()
    int8 = np.concatenate([runner.run(image[None]) for image in test])
    with torch.no_grad():
        fp32 = model(torch.from_numpy(test)).numpy()
    # sharing the convolution's ±300 range leaves ReLU6 a step of ~2.4: the logits then err by about their
    # own size; with its own [0, 6] range the step is 6/255
    assert np.abs(int8 - fp32).max() < 0.05 * np.abs(fp32).max()
    interpreter = runner.interpreter
    scales = [d["quantization"][0] for d in interpreter.get_tensor_details() if d["dtype"] == np.int8]
    assert any(0 < scale <= 6.5 / 255 for scale in scales)

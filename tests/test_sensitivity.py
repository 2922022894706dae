"""Per-layer int8 sensitivity: the simulation's arithmetic, a fault it must find, and the export's report."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import needs_every_format, run_cli

from edgecnn import create_model
from edgecnn.data.datasets import open_source, preprocess_images
from edgecnn.models import get_model_meta
from edgecnn.models.checkpoint import load_checkpoint, save_checkpoint
from edgecnn.optimize.sensitivity import (
    fake_quantize_input,
    fake_quantize_weight,
    groups,
    layer_sensitivity,
    quantizable_layers,
    quantized,
)


def digits_images(model: torch.nn.Module, count: int = 64) -> np.ndarray:
    source = open_source("digits")
    return preprocess_images(source, list(range(count)), get_model_meta(model).preprocessing)


def test_weights_round_to_their_channels_int8_grid_and_inputs_to_uint8():
    weight = torch.randn(4, 3, 3, 3)
    quantized_weight = fake_quantize_weight(weight)
    scale = weight.reshape(4, -1).abs().amax(1) / 127
    assert ((quantized_weight - weight).reshape(4, -1).abs().amax(1) <= scale / 2 + 1e-7).all()
    steps = quantized_weight.reshape(4, -1) / scale[:, None]
    assert torch.allclose(steps, steps.round(), atol=1e-4) and steps.abs().max() <= 127 + 1e-4
    values = fake_quantize_input(torch.linspace(-1, 3, 1000), -1.0, 2.0)
    assert values.max() == pytest.approx(2.0, abs=3 / 255) and len(values.unique()) <= 256  # 3 clipped to 2


def test_a_layer_with_outlier_weights_ranks_first_and_the_model_is_left_as_it_was(trained_lenet):
    model = load_checkpoint(trained_lenet).model.eval()
    images = digits_images(model)
    reference = model(torch.from_numpy(images)).detach()
    faulty = plant_outliers(model)
    agreement = (model(torch.from_numpy(images)).argmax(1) == reference.argmax(1)).float().mean()
    assert agreement >= 0.8  # fp32 without the first layer's zeroed channel: mostly the same answers
    layers = quantizable_layers(model)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    report = layer_sensitivity(model, images)
    assert report.ranked()[0].name == faulty
    assert report.ranked()[0].relative_error > 3 * report.ranked()[1].relative_error
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    again = layer_sensitivity(model, images)
    assert [(r.name, r.relative_error) for r in again.rows] == [(r.name, r.relative_error) for r in report.rows]
    assert report.forward_passes == len(layers) + 3 and report.seconds > 0 and report.images == 64


def test_every_layer_alone_errs_less_than_the_whole_int8_model(trained_lenet):
    model = load_checkpoint(trained_lenet).model.eval()
    report = layer_sensitivity(model, digits_images(model))
    assert max(r.relative_error for r in report.rows) <= report.all_int8_relative_error
    assert 0 < report.all_int8_relative_error < 0.2 and report.all_int8_agreement > 90


def test_blocks_and_kinds_group_the_layers_of_mobilenet_v2():
    model = create_model("mobilenet_v2", num_classes=10, input_size=32).eval()
    layers = quantizable_layers(model)
    kinds = groups(layers, "kind")
    assert set(kinds) == {"conv 3×3", "depthwise conv", "pointwise conv", "linear"}
    assert len(kinds["depthwise conv"]) == 17 and kinds["linear"] == ["classifier.1"]
    blocks = groups(layers, "block")
    assert blocks["features.1"] == ["features.1.conv.0.0", "features.1.conv.1"]
    assert sum(map(len, blocks.values())) == len(layers)
    with quantized(layers, kinds["depthwise conv"], {name: (-1.0, 1.0) for name in layers}):
        changed = layers[kinds["depthwise conv"][0]].weight.clone()
    assert not torch.equal(changed, layers[kinds["depthwise conv"][0]].weight)  # restored on leaving


@pytest.mark.needs("onnx")
def test_export_writes_the_ranking_and_prints_the_most_sensitive(trained_lenet, tmp_path):
    args = ["export", str(trained_lenet), "--formats", "onnx", "--int8", "--calib-size", "32"]
    done = run_cli(*args, "--sensitivity", "kind", "--output", str(tmp_path))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "export.json").read_text())["sensitivity"]
    assert report["grouping"] == "kind" and report["images"] == 32
    assert {row["name"] for row in report["rows"]} == {"conv 5×5", "linear"}
    assert "most int8-sensitive (kind" in done.stdout
    assert (tmp_path / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    assert "| rank | kind |" in (tmp_path / "sensitivity.md").read_text()


def test_sensitivity_without_int8_is_a_one_line_error(tmp_path):
    done = run_cli("export", "lenet5", "--sensitivity", "layer", "--output", str(tmp_path))
    assert done.returncode == 1 and "needs --int8" in done.stderr and "Traceback" not in done.stderr


def _onnx_layer_is_int8(path, module: str) -> bool:
    """Whether ``module``'s node in the int8 graph at ``path`` takes dequantized weights."""
    import onnx

    graph = onnx.load(str(path)).graph
    producers = {output: node.op_type for node in graph.node for output in node.output}
    return producers.get(_onnx_layer_node(path, module).input[1]) == "DequantizeLinear"


def _onnx_layer_node(path, module: str):
    """``module``'s node in the int8 graph at ``path``, found by its name in the fp32 graph beside it, which
    keeps the module paths that quantization's pre-processing may drop."""
    import ast

    import onnx

    fp32 = onnx.load(str(path).replace("_int8.onnx", "_fp32.onnx")).graph
    name = next(
        node.name
        for node in fp32.node
        for p in node.metadata_props
        if p.key == "pkg.torch.onnx.name_scopes" and ast.literal_eval(p.value)[-2:-1] == [module]
    )
    return next(node for node in onnx.load(str(path)).graph.node if node.name == name)


def _onnx_quantizations_after(path, module: str) -> int:
    """How many QuantizeLinear nodes ``module``'s output meets before the next layer takes it."""
    import onnx

    graph = onnx.load(str(path)).graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)
    seen, frontier = {}, [_onnx_layer_node(path, module)]  # by output: not every node has a name
    while frontier:
        for tensor in frontier.pop().output:
            for consumer in consumers.get(tensor, []):
                if consumer.output[0] not in seen and consumer.op_type not in ("Conv", "Gemm", "MatMul"):
                    seen[consumer.output[0]] = consumer
                    frontier.append(consumer)
    return sum(node.op_type == "QuantizeLinear" for node in seen.values())


def _openvino_layer_is_int8(path, position: int) -> bool:
    import openvino as ov

    from edgecnn.export.openvino import LAYER_OPS

    ops = [op for op in ov.Core().read_model(str(path)).get_ordered_ops() if op.get_type_name() in LAYER_OPS]
    source, seen = ops[position].input_value(1).get_node(), set()
    while source.get_type_name() != "Constant" and source.get_friendly_name() not in seen:  # up the weight's chain
        if source.get_type_name() == "FakeQuantize":
            return True
        seen.add(source.get_friendly_name())
        source = source.input_value(0).get_node()
    return source.get_element_type().get_type_name() in ("i8", "u8", "i4", "u4")


def _tflite_layer_is_int8(path, position: int) -> bool:
    from edgecnn.runtime.litert import LiteRtRunner

    interpreter = LiteRtRunner(Path(path)).interpreter
    kinds = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] in kinds]
    weight = ops[position]["inputs"][1]
    return np.dtype(interpreter.get_tensor_details()[weight]["dtype"]) == np.int8


@needs_every_format
def test_float_layers_stay_float_in_every_format_and_the_rest_stays_int8(trained_lenet, tmp_path):
    from edgecnn.export import ExportConfig, export

    model = load_checkpoint(trained_lenet).model.eval()
    order = list(quantizable_layers(model, torch.from_numpy(digits_images(model, 1))))
    kept, control = order[1], order[2]  # the second convolution; the first linear layer, int8 in every recipe
    report = export(ExportConfig(str(trained_lenet), int8=True, calib_size=32, float_layers=[kept], output=tmp_path))
    paths = {a.format: a.path for a in report.artifacts if a.precision == "int8"}
    assert not _onnx_layer_is_int8(paths["onnx"], kept) and _onnx_layer_is_int8(paths["onnx"], control)
    assert not _openvino_layer_is_int8(paths["openvino"], 1) and _openvino_layer_is_int8(paths["openvino"], 2)
    assert not _tflite_layer_is_int8(paths["tflite"], 1) and _tflite_layer_is_int8(paths["tflite"], 2)
    sidecar = json.loads((tmp_path / "lenet5_int8.onnx.json").read_text())
    assert sidecar["quantization"]["float_layers"].endswith(f"; also {kept}")


@pytest.mark.needs("onnx")
def test_onnx_keeps_a_layer_float_where_onnxruntime_rewrites_the_graph(tmp_path):
    """onnxruntime's pre-processing turns MobileNetV3's HardSwish into HardSigmoid and Mul and drops every
    node's module path on the way: the layer is still found, by its node's name, and its activation stays
    float with it: one quantization is left after it, at the next (int8) layer's input."""
    from edgecnn.export import ExportConfig, export

    with torch.random.fork_rng():  # random weights whose activations calibrate the same in every run
        torch.manual_seed(0)
        model = create_model("mobilenet_v3_small", num_classes=10, input_size=32)
    checkpoint = save_checkpoint(tmp_path / "v3.pt", model)
    kept, control = "features.4.block.0.0", "features.5.block.0.0"  # 1×1 expansions before a hardswish
    report = export(
        ExportConfig(
            str(checkpoint),
            formats="onnx",
            int8=True,
            calib="digits",
            calib_size=16,
            float_layers=[kept],
            output=tmp_path,
        )
    )
    path = next(a.path for a in report.artifacts if a.precision == "int8")
    assert not _onnx_layer_is_int8(path, kept) and _onnx_layer_is_int8(path, control)
    assert _onnx_quantizations_after(path, kept) == 1 and _onnx_quantizations_after(path, control) > 1


def test_an_unknown_float_layer_is_named_with_the_valid_ones(trained_lenet, tmp_path):
    done = run_cli("export", str(trained_lenet), "--int8", "--float-layers", "features.99", "--output", str(tmp_path))
    assert done.returncode == 1 and "no convolution or linear layer named features.99" in done.stderr
    assert "Traceback" not in done.stderr


def plant_outliers(model: torch.nn.Module) -> str:
    """Give the second layer huge weights on an input channel the first layer no longer feeds (its filter and
    bias zeroed, so the channel is always 0): the fp32 model computes as before without that channel, but
    int8's per-channel scale grows a thousandfold and rounds the layer's real weights to zero. Returns it."""
    order = list(quantizable_layers(model, torch.from_numpy(digits_images(model, 1))))
    modules = dict(model.named_modules())
    first, second = modules[order[0]], modules[order[1]]
    with torch.no_grad():
        first.weight[0] = 0
        first.bias[0] = 0
        second.weight[:, 0] = 1000 * second.weight.abs().max()
    return order[1]


def _with_outliers(checkpoint, folder) -> tuple[str, str]:
    """A copy of ``checkpoint`` with ``plant_outliers``: the copy's path and the faulty layer's name."""
    loaded = load_checkpoint(checkpoint)
    faulty = plant_outliers(loaded.model.eval())
    extra = {key: value for key, value in loaded.metadata.items() if key not in ("schema_version", "model")}
    return str(save_checkpoint(folder / "outlier.pt", loaded.model, **extra)), faulty


@needs_every_format
def test_max_drop_keeps_the_faulty_layer_float_and_only_it_in_every_format(trained_lenet, tmp_path):
    checkpoint, faulty = _with_outliers(trained_lenet, tmp_path)
    output = tmp_path / "export"
    args = ["export", checkpoint, "--int8", "--calib-size", "32", "--keep-degraded"]
    done = run_cli(*args, "--max-drop", "1", "--output", str(output))
    assert done.returncode == 0, done.stderr
    report = json.loads((output / "export.json").read_text())
    int8 = [a for a in report["artifacts"] if a["precision"] == "int8"]
    assert {a["format"] for a in int8} == {"onnx", "openvino", "tflite"}
    for artifact in int8:
        tries = artifact["max_drop_search"]
        assert tries[0]["kept_float"] == 0 and tries[0]["loss"] > 1  # plain int8 missed the budget
        assert artifact["kept_float"] == [faulty]  # the fewest: one layer, the one with the fault
        assert list(artifact["kept_float_errors"]) == [faulty] and artifact["kept_float_errors"][faulty] > 0
        cost = artifact["float_latency"]  # both measured here, in the artifact's own runtime
        assert cost["full_int8_p50_ms"] > 0 and cost["with_float_p50_ms"] > 0 and cost["cpu_flags"] is not None
        assert cost["ratio"] == pytest.approx(cost["with_float_p50_ms"] / cost["full_int8_p50_ms"], rel=1e-2)
        if artifact["format"] == "openvino":  # float layers timed in the precision they were verified in
            assert cost["computed_in"] == "int8+fp32"
        assert report["reference_accuracy"] - artifact["verification"]["accuracy"] <= 1
        sidecar = json.loads(Path(artifact["path"] + ".json").read_text())
        assert sidecar["quantization"]["float_layers"].endswith(f"; also {faulty}")
    assert f"1 layer(s) kept float for --max-drop 1 ({faulty} " in done.stdout
    assert "interleaved, this machine" in done.stdout


@pytest.mark.needs("onnx")
def test_min_agreement_alone_keeps_layers_float_until_top1_agrees(trained_lenet, tmp_path):
    checkpoint, faulty = _with_outliers(trained_lenet, tmp_path)
    output = tmp_path / "export"
    args = ["export", checkpoint, "--int8", "--formats", "onnx", "--calib-size", "32", "--keep-degraded"]
    done = run_cli(*args, "--min-agreement", "0.99", "--output", str(output))
    assert done.returncode == 0, done.stderr
    (artifact,) = [a for a in json.loads((output / "export.json").read_text())["artifacts"] if a["precision"] == "int8"]
    tries = artifact["max_drop_search"]
    assert tries[0]["kept_float"] == 0 and tries[0]["agreement"] < 99  # plain int8 changed too many answers
    assert artifact["kept_float"][0] == faulty and artifact["verification"]["top1_agreement"] >= 99
    fewer = [t for t in tries if t["kept_float"] < len(artifact["kept_float"])]
    assert fewer and all(t["agreement"] < 99 for t in fewer)  # no smaller number of float layers held it
    assert f"kept float for --min-agreement 0.99 ({faulty} " in done.stdout

"""``edgecnn diff --layers``: each layer of each format against PyTorch, and a fault found where it was put."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import artifact_path, run_cli

from edgecnn.bench.diff import DiffConfig, diff
from edgecnn.bench.layers import JUMP_DB, LayerError, _landmarks, sqnr_db
from edgecnn.errors import EdgeCNNError

LAYERS = ["features.0", "features.3", "features.6", "classifier.1", "classifier.3"]  # LeNet-5's, as they run
FAULTY = 2  # features.6: int8 in every format's recipe


def _scale_onnx(path: Path, layer: int, factor: float, out: Path) -> Path:
    """The ``layer``-th Conv/Gemm's weight scale (its DequantizeLinear's) multiplied by ``factor``."""
    import onnx

    model = onnx.load(str(path))
    nodes = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    dequantize = next(n for n in model.graph.node if n.output[0] == nodes[layer].input[1])
    scale = next(i for i in model.graph.initializer if i.name == dequantize.input[1])
    scaled = onnx.numpy_helper.to_array(scale) * np.float32(factor)
    scale.CopyFrom(onnx.numpy_helper.from_array(scaled.astype(np.float32), scale.name))
    onnx.save(model, str(out))
    return out


def _scale_openvino(path: Path, layer: int, factor: float, out: Path) -> Path:
    """The ``layer``-th Convolution/MatMul's int8 weights' dequantization scale multiplied by ``factor``."""
    import openvino as ov
    import openvino.opset13 as ops

    model = ov.Core().read_model(str(path))
    nodes = [
        op for op in model.get_ordered_ops() if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul")
    ]
    multiply = nodes[layer].input_value(1).get_node()
    assert multiply.get_type_name() == "Multiply"  # int8 weights → Convert (→ Subtract) → Multiply by the scale
    port = next(p for p in (0, 1) if multiply.input_value(p).get_node().get_type_name() == "Constant")
    scale = multiply.input_value(port).get_node().get_data()
    multiply.input(port).replace_source_output(ops.constant((scale * factor).astype(scale.dtype)).output(0))
    ov.save_model(model, str(out), compress_to_fp16=False)
    return out


def _scale_tflite(path: Path, layer: int, factor: float, out: Path) -> Path:
    """The ``layer``-th CONV_2D/DEPTHWISE_CONV_2D/FULLY_CONNECTED's filter scales multiplied by ``factor``."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(path.read_bytes(), 0))
    kinds = {schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.DEPTHWISE_CONV_2D}
    kinds.add(schema.BuiltinOperator.FULLY_CONNECTED)
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    graph = model.subgraphs[0]
    nodes = [op for op in graph.operators if codes[op.opcodeIndex] in kinds]
    quantization = graph.tensors[nodes[layer].inputs[1]].quantization
    quantization.scale = np.asarray(quantization.scale, dtype=np.float32) * np.float32(factor)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    out.write_bytes(builder.Output())
    return out


INJECT = {"onnx": _scale_onnx, "openvino": _scale_openvino, "tflite": _scale_tflite}


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "tflite"])
def test_a_weight_scale_times_8_is_named_as_the_first_divergence(lenet_artifacts, trained_lenet, tmp_path, fmt):
    int8 = artifact_path(lenet_artifacts, fmt, "int8")
    for part in int8.parent.glob(f"{int8.stem}.*"):  # the sidecar too, so the copy evaluates like the original
        shutil.copy(part, tmp_path / part.name.replace(int8.stem, "faulty", 1))
    faulty = INJECT[fmt](int8, FAULTY, 8.0, tmp_path / f"faulty{int8.suffix}")
    report = diff(DiffConfig([trained_lenet, int8, faulty], "digits", layers=True, layer_images=16))
    clean, broken = report.layers
    assert [layer.layer for layer in clean.layers] == LAYERS == [layer.layer for layer in broken.layers]
    assert clean.first_divergence is None and clean.error is None
    assert broken.first_divergence == LAYERS[FAULTY], [(x.layer, round(x.sqnr_db, 1)) for x in broken.layers]
    for before_fault, same in zip(clean.layers[:FAULTY], broken.layers[:FAULTY], strict=True):
        assert same.sqnr_db == pytest.approx(before_fault.sqnr_db, abs=0.5)  # untouched up to the fault
    assert broken.layers[FAULTY].sqnr_db < clean.layers[FAULTY].sqnr_db - JUMP_DB
    assert all(layer.sqnr_db > 25 for layer in clean.layers)  # int8 LeNet-5 stays close to fp32 layer by layer


def test_fp32_artifacts_match_pytorch_in_every_layer(lenet_artifacts, trained_lenet):
    paths = [trained_lenet, *(artifact_path(lenet_artifacts, fmt, "fp32") for fmt in ("onnx", "openvino", "tflite"))]
    report = diff(DiffConfig(paths, "digits", layers=True, layer_images=8))
    assert report.layer_images == 8 and len(report.layers) == 3
    for item in report.layers:
        assert item.first_quantized is None and item.first_divergence is None, item.artifact
        assert min(layer.sqnr_db for layer in item.layers) > 100  # float rounding only


def test_int8_error_starts_where_each_recipe_starts_quantizing(lenet_artifacts, trained_lenet):
    paths = [trained_lenet, *(artifact_path(lenet_artifacts, fmt, "int8") for fmt in ("onnx", "openvino", "tflite"))]
    onnx_int8, openvino_int8, tflite_int8 = diff(DiffConfig(paths, "digits", layers=True, layer_images=8)).layers
    # onnx and tflite keep the first convolution float, OpenVINO quantizes it (with 7-bit weights)
    assert onnx_int8.first_quantized == tflite_int8.first_quantized == "features.3"
    assert openvino_int8.first_quantized == "features.0"


def test_layers_need_the_checkpoint_and_cli_writes_the_plot(lenet_artifacts, trained_lenet, tmp_path):
    int8 = [str(artifact_path(lenet_artifacts, fmt, "int8")) for fmt in ("onnx", "tflite")]
    with pytest.raises(EdgeCNNError, match="add its checkpoint"):
        DiffConfig([Path(p) for p in int8], "digits", layers=True)
    done = run_cli("diff", str(trained_lenet), *int8, "--data", "digits", "--layers", "--report", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "first divergence" in done.stdout
    stored = json.loads((tmp_path / "diff.json").read_text())
    assert [layer["layer"] for layer in stored["layers"][0]["layers"]] == LAYERS
    assert (tmp_path / "layers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| features.3 |" in (tmp_path / "diff.md").read_text()
    refused = run_cli("diff", *int8, "--data", "digits", "--layers")
    assert refused.returncode == 1 and refused.stderr.strip().count("\n") == 0


def test_landmarks_and_sqnr():
    reference = np.array([3.0, 4.0])
    assert sqnr_db(reference, reference) == 200.0
    assert sqnr_db(reference, reference * 1.1) == pytest.approx(20.0)

    def layers(*sqnr: float) -> list[LayerError]:
        return [LayerError(f"layer{k}", db, 0.0) for k, db in enumerate(sqnr)]

    assert _landmarks(layers(200, 40, 35, 12)) == ("layer1", "layer3")  # float → int8 starts, does not diverge
    assert _landmarks(layers(200, 40, 35, 30)) == ("layer1", None)  # a slow decline
    assert _landmarks(layers(40, 28, 35, 20, 33, 19)) == ("layer0", "layer1")  # after one dip, its kind is known
    assert _landmarks(layers(38, 35, 36, 26, 34, 25)) == ("layer0", None)
    assert _landmarks(layers(200, 150)) == (None, None)

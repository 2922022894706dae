"""Per-layer error of artifacts against their fp32 PyTorch model: where each format's int8 error comes from.

Every convolution and fully connected layer is a tap: PyTorch's (BatchNorm folded, as exported) through
forward hooks, in the order they run; each artifact's through its runtime, in graph order — ONNX graph
outputs added at Conv/Gemm/MatMul, OpenVINO outputs added at Convolution/MatMul (after their bias Add),
TFLite tensors kept with ``experimental_preserve_all_tensors`` at CONV_2D/DEPTHWISE_CONV_2D/FULLY_CONNECTED
(already through the activation TFLite fused into them, which is then applied to the reference too).
The k-th tap of an artifact is matched with the k-th of PyTorch, checked by size; an artifact whose taps
do not match is reported as such, not compared.

Error per layer is the SQNR of the artifact's tensor against PyTorch's, in dB: it stays high (over
``FLOAT_DB``) through layers that compute in float, falls where quantization starts and then declines
slowly with depth. ``first_divergence`` is the first layer that falls ``JUMP_DB`` or more below every
quantized layer before it: one layer that adds much more error than any before it.

Outputs are added to a copy of each graph, which can keep a runtime from fusing what it fuses without them
(onnxruntime then runs a quantized Conv in float on its dequantized inputs): the error is the
quantization's, not a kernel's own rounding or saturation — ``diff`` without ``--layers`` measures those.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecnn.errors import EdgeCNNError

FLOAT_DB = 60.0  # above this, a layer's output is float rounding away from PyTorch's: it computes in float
JUMP_DB = 10.0  # a fall this large from one layer to the next: this layer adds much more error
LIMIT_DB = 200.0
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "relu_n1_to_1": lambda x: np.clip(x, -1, 1),
}


@dataclass
class Tap:
    """One layer's output on every image; ``activation``: what the runtime fused into the layer."""

    values: np.ndarray
    activation: str | None = None


@dataclass
class LayerError:
    layer: str  # the PyTorch module's path
    sqnr_db: float
    relative_error: float  # ‖artifact − PyTorch‖ / ‖PyTorch‖


@dataclass
class LayerTrace:
    artifact: str
    layers: list[LayerError]
    first_quantized: str | None  # the first layer under FLOAT_DB
    first_divergence: str | None  # the first layer JUMP_DB under the one before it, after quantization starts
    error: str | None = None  # why its layers could not be matched

    @property
    def lowest(self) -> LayerError | None:
        """The layer with the lowest SQNR."""
        return min(self.layers, key=lambda layer: layer.sqnr_db, default=None)

    def lowest_text(self) -> str:
        lowest = self.lowest
        return "–" if lowest is None else f"{lowest.sqnr_db:.1f} dB ({lowest.layer})"


def sqnr_db(reference: np.ndarray, values: np.ndarray) -> float:
    """Signal to noise in dB, within ±``LIMIT_DB`` (identical tensors, all-zero references) so JSON can hold it."""
    noise = float(np.sum((values.astype(np.float64) - reference) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    if noise == 0 or signal == 0:
        return LIMIT_DB if noise == 0 else -LIMIT_DB
    return max(-LIMIT_DB, min(LIMIT_DB, 10 * math.log10(signal / noise)))


def reference_taps(checkpoint: Path, images: np.ndarray) -> tuple[list[str], list[np.ndarray]]:
    """Every Conv2d and Linear output of the BatchNorm-folded PyTorch model, in the order they run."""
    import torch
    from torch import nn

    from edgecnn.models.checkpoint import load_checkpoint
    from edgecnn.optimize.fold_bn import fold_batchnorm

    model = fold_batchnorm(load_checkpoint(checkpoint).model.eval())
    names = {module: name for name, module in model.named_modules()}
    order: list[str] = []
    outputs: dict[str, list[np.ndarray]] = {}

    def record(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        name = names[module]
        if name not in outputs:
            order.append(name)
        outputs.setdefault(name, []).append(output.detach().numpy())

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    try:
        with torch.no_grad():
            for image in images:
                model(torch.from_numpy(image[None]))
    finally:
        for hook in hooks:
            hook.remove()
    return order, [np.concatenate(outputs[name]) for name in order]


def _onnx_taps(path: Path, images: np.ndarray) -> list[Tap]:
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    graph = model.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    constants = {i.name for i in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}
    constants |= {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in constants}
    tapped = []
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        output = node.output[0]
        after = consumers.get(output, [])
        bias = len(after) == 1 and after[0].op_type == "Add" and any(i in constants for i in after[0].input)
        if node.op_type == "MatMul" and bias:
            output = after[0].output[0]  # a Linear exported as MatMul + bias Add
        tapped.append(output)
    outputs = {o.name for o in graph.output}
    graph.output.extend(
        onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in tapped if n not in outputs
    )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    rows = [session.run(tapped, {name: image[None]}) for image in images]
    return [Tap(np.concatenate([row[k] for row in rows])) for k in range(len(tapped))]


def _openvino_taps(path: Path, images: np.ndarray) -> list[Tap]:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    tapped = []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in ("Convolution", "GroupConvolution", "MatMul"):
            continue
        output = op.output(0)
        after = list(output.get_target_inputs())
        if len(after) == 1 and after[0].get_node().get_type_name() == "Add":
            add = after[0].get_node()
            if _constant(add.input(1 - after[0].get_index()).get_source_output().get_node()):
                output = add.output(0)  # the layer's bias
        tapped.append(output)
    model.add_outputs(tapped)
    # each tap's place among the model's results: a Result reads the output it reports
    results = [(r.get_node().input_value(0).get_node(), r.get_node().input_value(0).get_index()) for r in model.outputs]
    places = [
        next(i for i, (node, port) in enumerate(results) if node == o.get_node() and port == o.get_index())
        for o in tapped
    ]
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    rows = []
    for image in images:
        result = compiled(image[None])
        rows.append([result[compiled.outputs[place]] for place in places])
    return [Tap(np.concatenate([row[k] for row in rows])) for k in range(len(tapped))]


def _constant(node: object) -> bool:
    """Whether an OpenVINO node computes from constants only (a bias, maybe decompressed: Convert, Multiply)."""
    kind = node.get_type_name()  # type: ignore[attr-defined]
    if kind == "Constant":
        return True
    inputs = [port.get_source_output().get_node() for port in node.inputs()]  # type: ignore[attr-defined]
    return kind in ("Convert", "Multiply", "Subtract") and all(_constant(source) for source in inputs)


def _tflite_taps(path: Path, images: np.ndarray) -> list[Tap]:
    from ai_edge_litert import schema_py_generated as schema

    from edgecnn.export.tflite import operators
    from edgecnn.runtime.litert import LiteRtRunner

    fused = {getattr(schema.ActivationFunctionType, name): name.lower() for name in ("RELU", "RELU6", "RELU_N1_TO_1")}
    options_of = {
        "CONV_2D": schema.Conv2DOptions,
        "DEPTHWISE_CONV_2D": schema.DepthwiseConv2DOptions,
        "FULLY_CONNECTED": schema.FullyConnectedOptions,
    }
    layers: list[tuple[int, str | None]] = []
    for kind, op in operators(path):
        if kind not in options_of:
            continue
        options = options_of[kind]()
        table = op.BuiltinOptions()
        activation = None
        if table is not None:
            options.Init(table.Bytes, table.Pos)
            activation = fused.get(options.FusedActivationFunction())
        layers.append((op.Outputs(0), activation))
    runner = LiteRtRunner(path, preserve_all_tensors=True)
    details = {d["index"]: d for d in runner.interpreter.get_tensor_details()}
    rows = []
    for image in images:
        runner.run(image[None])
        row = []
        for tensor, _ in layers:
            value = runner.interpreter.get_tensor(tensor)
            if np.issubdtype(value.dtype, np.integer):
                scale, zero_point = details[tensor]["quantization"]
                value = (value.astype(np.float32) - zero_point) * scale
            row.append(value)
        rows.append(row)
    return [Tap(np.concatenate([row[k] for row in rows]), activation) for k, (_, activation) in enumerate(layers)]


#: how each runtime's intermediate tensors are read, by artifact suffix
TAPS: dict[str, Callable[[Path, np.ndarray], list[Tap]]] = {
    ".onnx": _onnx_taps,
    ".xml": _openvino_taps,
    ".tflite": _tflite_taps,
}


def _aligned(reference: np.ndarray, values: np.ndarray) -> np.ndarray | None:
    """``reference`` in the layout of ``values`` (TFLite keeps NHWC), or None when they cannot be one tensor."""
    if reference.shape == values.shape:
        return reference
    if reference.ndim == 4 and reference.transpose(0, 2, 3, 1).shape == values.shape:
        return reference.transpose(0, 2, 3, 1)
    if reference.size == values.size:  # a (N, C, 1, 1) against a flattened (N, C)
        return reference.reshape(values.shape)
    return None


def trace(path: Path, images: np.ndarray, names: list[str], reference: list[np.ndarray]) -> LayerTrace:
    """Each tapped layer of ``path`` on ``images`` against PyTorch's ``reference`` taps."""
    taps_of = TAPS.get(path.suffix)
    if taps_of is None:
        return LayerTrace(str(path), [], None, None, f"no layer taps for {path.suffix or 'this'} files")
    try:
        taps = taps_of(path, images)
    except EdgeCNNError:
        raise
    except Exception as exc:  # each runtime raises its own types
        first = str(exc).strip().splitlines()
        return LayerTrace(str(path), [], None, None, f"cannot read its layers: {first[0] if first else exc!r}")
    if len(taps) != len(reference):
        return LayerTrace(
            str(path), [], None, None, f"{len(taps)} layers in the artifact, {len(reference)} in PyTorch: not matched"
        )
    layers = []
    for name, expected, tap in zip(names, reference, taps, strict=True):
        if tap.activation:
            expected = ACTIVATIONS[tap.activation](expected)
        aligned = _aligned(expected, tap.values)
        if aligned is None:
            return LayerTrace(
                str(path), [], None, None, f"{name}: shape {tap.values.shape} against {expected.shape}: not matched"
            )
        sqnr = sqnr_db(aligned, tap.values)
        norm = float(np.linalg.norm(aligned))
        relative = float(np.linalg.norm(tap.values - aligned)) / norm if norm else 0.0
        layers.append(LayerError(name, sqnr, relative))
    return LayerTrace(str(path), layers, *_landmarks(layers))


def _landmarks(layers: list[LayerError]) -> tuple[str | None, str | None]:
    """The first layer under ``FLOAT_DB``, and the first after it ``JUMP_DB`` under every layer before it:
    error that a layer adds at once, not the slow decline with depth (nor a dip that layers of one kind
    share, such as the linear projections of inverted residual blocks, once the first has been seen)."""
    quantized = [layer for layer in layers if layer.sqnr_db < FLOAT_DB]
    if not quantized:
        return None, None
    lowest = quantized[0].sqnr_db
    for layer in quantized[1:]:
        if layer.sqnr_db <= lowest - JUMP_DB:
            return quantized[0].layer, layer.layer
        lowest = min(lowest, layer.sqnr_db)
    return quantized[0].layer, None


def plot(traces: list[LayerTrace], path: Path) -> Path:
    """SQNR by depth, one line per artifact, written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgecnn._io import atomic_path

    figure, axes = plt.subplots(figsize=(9, 4.5), layout="constrained")
    ceiling = FLOAT_DB + 5  # layers that compute in float are drawn here, so the int8 range stays legible
    lowest = FLOAT_DB
    for item in traces:
        if not item.layers:
            continue
        values = [min(layer.sqnr_db, ceiling) for layer in item.layers]
        lowest = min(lowest, *values)
        (line,) = axes.plot(range(len(values)), values, marker="o", markersize=3, label=Path(item.artifact).name)
        names = [layer.layer for layer in item.layers]
        if item.first_divergence:
            at = names.index(item.first_divergence)
            axes.plot(at, values[at], marker="X", markersize=11, color=line.get_color(), linestyle="none")
    axes.axhline(FLOAT_DB, color="grey", linewidth=0.8, linestyle=":")
    label = f"computes in float (≥ {FLOAT_DB:g} dB)"
    axes.text(
        0.99, FLOAT_DB + 1, label, color="grey", fontsize="small", ha="right", transform=axes.get_yaxis_transform()
    )
    axes.set_ylim(max(lowest - 5, -LIMIT_DB), ceiling + 5)
    axes.set_xlabel("layer (convolution or fully connected, in execution order)")
    axes.set_ylabel("SQNR against PyTorch fp32 (dB)")
    axes.set_title("Each layer's output against the fp32 model (X: first divergence)")
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120)
    plt.close(figure)
    return path

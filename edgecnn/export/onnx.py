"""ONNX: ``torch.onnx.export`` (opset 18), checked with ``onnx.checker``; int8 with onnxruntime's
``quantize_static`` (QDQ, per-channel int8 weights, int8 activations: onnxruntime's defaults) after
``quant_pre_process``.

Departures from onnxruntime's defaults, measured on models trained on digits (269 held-out images,
``benchmarks/int8_accuracy.py``): the first convolution and the classifier stay float (int8 there alone
cost MobileNetV2 0.75 points and LeNet-5 0.74), squeeze-excite branches stay float (see ``_graph``), and
``auto`` ranges are onnxruntime's percentile rule, computed while streaming (``_percentile_ranges``):
its min/max ranges, averaged or not, left MobileNetV2 or EfficientNet-B0 below 99% top-1 agreement.

The weights' range follows the CPU that exports, as in the OpenVINO recipe: on x86 without VNNI
onnxruntime's int8 kernels add pairs of u8×s8 products in saturating 16-bit registers, so there the
weights keep 7 bits (``reduce_range``, onnxruntime's own remedy). On such a CPU (AVX2) it lowered the
median max |Δlogit| per image from 0.168 to 0.021 on LeNet-5 and from 0.35 to 0.167 on MobileNetV2
(digits, 269 held-out images).
"""

from __future__ import annotations

import ast
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgecnn._io import atomic_path
from edgecnn.errors import EdgeCNNError
from edgecnn.export._formats import HISTOGRAM_STRIDE, PERCENTILE_TAIL, Int8Job
from edgecnn.export._graph import GraphNode, float_followers, squeeze_excite_nodes
from edgecnn.export._quiet import quiet
from edgecnn.runtime.base import METADATA_KEY
from edgecnn.runtime.metadata import ArtifactMetadata, Quantization
from edgecnn.runtime.targets import Target

OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
HISTOGRAM_BINS = 2048  # onnxruntime's percentile calibrator's default
LAYER_OPS = ("Conv", "Gemm", "MatMul")  # the ops that hold a layer's weights


def export_float(
    model: nn.Module, example: torch.Tensor, path: Path, metadata: ArtifactMetadata, dynamic_batch: bool, half: bool
) -> Path:
    """Export ``model`` (eval mode) with ``metadata`` stored in the graph's ``metadata_props``."""
    if half:
        raise ValueError("the ONNX exporter writes fp32 only, as the formats table says")
    import onnx

    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=1024)},) if dynamic_batch else None
    with atomic_path(path) as temporary, quiet("torch.onnx"):
        torch.onnx.export(
            model.eval(),
            (example,),
            str(temporary),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            external_data=False,
            verbose=False,
        )
        proto = onnx.load(str(temporary))
        onnx.checker.check_model(proto)
        _set_metadata(proto, metadata)
        onnx.save(proto, str(temporary))
    return path


def quantize_int8(job: Int8Job) -> Path:
    """Static int8 quantization in QDQ form, calibrated on ``calibration`` batches."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as scratch, atomic_path(job.path) as temporary, quiet("onnxruntime"):
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(job.fp32_path), str(prepared))
        proto = onnx.load(str(prepared))
        _name_every_node(proto.graph.node)
        onnx.save(proto, str(prepared))
        nodes = proto.graph.node
        graph = [GraphNode(n.name, n.op_type, tuple(n.input), tuple(n.output)) for n in nodes]
        first_conv = [n.name for n in nodes if n.op_type == "Conv"][:1]
        classifier = [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")][-1:]
        float_layers = _nodes_of(job.fp32_path, job.float_layers, {n.name for n in nodes})
        float_layers += float_followers(graph, float_layers, LAYER_OPS)
        if job.method in ("auto", "percentile"):  # ranges computed here, handed over as onnxruntime's cache
            ranges = Path(scratch) / "ranges.json"
            percentile = CalibrationMethod.Percentile
            save_tensors_data(TensorsData(percentile, _percentile_ranges(prepared, job.calibration)), ranges)
            calibration: dict[str, Any] = {
                "calibration_data_reader": None,
                "calibrate_method": percentile,
                "calibration_cache_path": ranges,
            }
        else:
            methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy}
            calibration = {
                "calibration_data_reader": _Reader(job.calibration),
                "calibrate_method": methods[job.method],
                "extra_options": {"CalibMovingAverage": True},
            }
        quantize_static(
            str(prepared),
            str(temporary),
            quant_format=QuantFormat.QDQ,
            per_channel=job.per_channel,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            reduce_range=job.target.saturates,
            nodes_to_exclude=first_conv + classifier + squeeze_excite_nodes(graph) + float_layers,
            **calibration,
        )
        proto = onnx.load(str(temporary))
        _set_metadata(proto, job.metadata)
        onnx.save(proto, str(temporary))
    return job.path


def _name_every_node(nodes: Any) -> None:
    """Names the nodes that have none, by their place (a prefix neither torch nor onnxruntime writes): the
    pre-processing leaves the nodes it makes unnamed (the HardSigmoid and Mul of each MobileNetV3
    HardSwish), and ``nodes_to_exclude`` can keep a node float only by its name."""
    for index, node in enumerate(nodes):
        if not node.name:
            node.name = f"edgecnn_{node.op_type}_{index}"


def _nodes_of(fp32_path: Path, modules: tuple[str, ...], prepared: set[str]) -> list[str]:
    """The Conv/Gemm/MatMul nodes of ``modules`` (PyTorch module names), by node name: torch's exporter
    records each node's module path as its name scopes (``['', 'features', 'features.3', …, 'conv2d_5']``:
    the module is the one before the op's own name). They are read from the fp32 graph, since
    onnxruntime's pre-processing drops every node's scopes when its optimizer rewrites the graph
    (MobileNetV3's HardSwish becomes HardSigmoid and Mul), and matched by name in the ``prepared`` graph."""
    if not modules:  # most exports: no need to read the fp32 graph again
        return []
    import onnx

    found, matched = [], set()
    for node in onnx.load(str(fp32_path)).graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "[]")
        module = set(ast.literal_eval(scopes)[-2:-1]) & set(modules)
        if node.op_type in LAYER_OPS and module and node.name in prepared:
            found.append(node.name)
            matched |= module
    if missing := [name for name in modules if name not in matched]:
        raise EdgeCNNError(
            f"no Conv/Gemm/MatMul node in the ONNX graph for the layer(s) to keep float: {', '.join(missing)}"
        )
    return found


def _percentile_ranges(prepared: Path, calibration: list[np.ndarray]) -> dict[str, Any]:
    """Every float activation's range by onnxruntime's percentile rule: ±(the 99.999th percentile of
    |x|), clipped to the values seen. Its own calibrator keeps every activation of every image until
    the end; here each image's activations are folded into histograms as they come, from every
    ``HISTOGRAM_STRIDE``-th value (MobileNetV2 at 224, 128 images, the whole int8 step: 6.6 s and
    0.53 GB against 37.6 s and 8.3 GB; ``benchmarks/onnx_calibration.py``)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(prepared))
    graph = model.graph
    typed = {v.name: v for v in (*graph.value_info, *graph.input, *graph.output)}
    constants = {i.name for i in graph.initializer}
    activations = {
        name
        for node in graph.node
        for name in (*node.input, *node.output)
        if name in typed and name not in constants and typed[name].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    }
    outputs = {o.name for o in graph.output}
    graph.output.extend(typed[name] for name in sorted(activations - outputs))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    histograms = [_MagnitudeHistogram() for _ in session.get_outputs()]
    for batch in calibration:
        for histogram, values in zip(histograms, session.run(None, {INPUT_NAME: batch}), strict=True):
            histogram.add(values)
    return {o.name: h.range() for o, h in zip(session.get_outputs(), histograms, strict=True)}


class _MagnitudeHistogram:
    """Counts of |x| over [0, the largest |x| seen]; a larger value re-bins what was counted."""

    def __init__(self) -> None:
        self.counts = np.zeros(HISTOGRAM_BINS)
        self.top = 0.0
        self.low, self.high = np.inf, -np.inf

    def add(self, values: np.ndarray) -> None:
        flat = values.ravel()
        low, high = float(flat.min()), float(flat.max())
        self.low, self.high = min(self.low, low), max(self.high, high)
        top = max(-low, high)
        if top > self.top:
            centers = (np.arange(HISTOGRAM_BINS) + 0.5) * (self.top / HISTOGRAM_BINS)
            self.counts = np.histogram(centers, HISTOGRAM_BINS, range=(0, top), weights=self.counts)[0]
            self.top = top
        if flat.size > HISTOGRAM_STRIDE * HISTOGRAM_BINS:  # the range above took every value
            flat = flat[::HISTOGRAM_STRIDE]
        self.counts += np.histogram(np.abs(flat), HISTOGRAM_BINS, range=(0, self.top))[0]

    def range(self) -> Any:
        from onnxruntime.quantization.calibrate import TensorData

        cdf = np.cumsum(self.counts) / self.counts.sum()
        threshold = self.top / HISTOGRAM_BINS * int(np.searchsorted(cdf, 1 - PERCENTILE_TAIL))
        return TensorData(lowest=np.float32(max(-threshold, self.low)), highest=np.float32(min(threshold, self.high)))


class _Reader:
    """onnxruntime's CalibrationDataReader protocol: input dicts, then None."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self._batches: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def _set_metadata(proto: Any, metadata: ArtifactMetadata) -> None:
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata.to_json()


def int8_scheme(method: str, target: Target) -> Quantization:
    return Quantization(
        scheme="onnxruntime quantize_static, QDQ: per-channel int8 weights, int8 activations",
        method={
            "auto": "percentile (99.999th of |x|, streamed)",
            "percentile": "percentile (99.999th of |x|, streamed)",
            "minmax": "minmax (per-image min/max, averaged)",
        }.get(method, method),
        float_layers="first convolution, classifier, squeeze-excite branches",
        weights_range="7-bit (reduce_range)" if target.saturates else "8-bit",
        seven_bit_weights=target.saturates,
        chosen_for=target.weights_choice,
    )


def count_ops(path: Path) -> dict[str, int]:
    """How many nodes of each type the graph holds (QuantizeLinear/DequantizeLinear prove int8)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts

"""ONNX: ``torch.onnx.export`` (opset 18), checked with ``onnx.checker``; int8 with onnxruntime's
``quantize_static`` (QDQ, per-channel int8 weights, int8 activations: onnxruntime's defaults) after
``quant_pre_process``.

Departures from onnxruntime's defaults, measured on models trained on digits (269 held-out images,
``benchmarks/int8_accuracy.py``): the first convolution and the classifier stay float (int8 there alone
cost MobileNetV2 0.75 points and LeNet-5 0.74), squeeze-excite branches stay float (see ``_graph``), and
min/max ranges are averaged over calibration batches (``CalibMovingAverage``), as NNCF's default
estimator does.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgecnn._io import atomic_path
from edgecnn.export._formats import Int8Job
from edgecnn.export._graph import GraphNode, squeeze_excite_nodes
from edgecnn.export._quiet import quiet
from edgecnn.runtime.base import METADATA_KEY

OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_float(
    model: nn.Module, example: torch.Tensor, path: Path, metadata: dict[str, Any], dynamic_batch: bool, half: bool
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
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "auto": CalibrationMethod.MinMax,
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    with tempfile.TemporaryDirectory() as scratch, atomic_path(job.path) as temporary, quiet("onnxruntime"):
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(job.fp32_path), str(prepared))
        nodes = onnx.load(str(prepared)).graph.node
        first_conv = [n.name for n in nodes if n.op_type == "Conv"][:1]
        classifier = [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")][-1:]
        squeeze_excite = squeeze_excite_nodes(
            GraphNode(n.name, n.op_type, tuple(n.input), tuple(n.output)) for n in nodes
        )
        quantize_static(
            str(prepared),
            str(temporary),
            _Reader(job.calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[job.method],
            nodes_to_exclude=first_conv + classifier + squeeze_excite,
            extra_options={"CalibMovingAverage": True},
        )
        proto = onnx.load(str(temporary))
        _set_metadata(proto, job.metadata)
        onnx.save(proto, str(temporary))
    return job.path


class _Reader:
    """onnxruntime's CalibrationDataReader protocol: input dicts, then None."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self._batches: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def _set_metadata(proto: Any, metadata: dict[str, Any]) -> None:
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)


def int8_scheme(method: str) -> dict[str, str]:
    return {
        "scheme": "onnxruntime quantize_static, QDQ: per-channel int8 weights, int8 activations",
        "method": "minmax (per-image min/max, averaged)" if method in ("auto", "minmax") else method,
        "float_layers": "first convolution, classifier, squeeze-excite branches",
    }


def count_ops(path: Path) -> dict[str, int]:
    """How many nodes of each type the graph holds (QuantizeLinear/DequantizeLinear prove int8)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts

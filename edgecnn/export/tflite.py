"""TFLite (LiteRT): ``litert-torch`` from the PyTorch model; int8 as PT2E quantization (per-channel
symmetric weights, int8 activations, int8 input and output; integer everywhere but squeeze-excite
branches), NCHW input kept as is."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgecnn._io import atomic_path
from edgecnn.export._formats import HISTOGRAM_STRIDE, PERCENTILE_TAIL, Int8Job
from edgecnn.export._quiet import quiet
from edgecnn.models.layers import SqueezeExcitation
from edgecnn.runtime.base import METADATA_KEY

# The converter's C++ side logs through TensorFlow's and glog's channels, read once at import.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GLOG_minloglevel", "2")
_LOGGERS = ("litert_torch", "absl", "torchao", "jax")
CALIBRATION_CHUNK = 16


def export_float(
    model: nn.Module, example: torch.Tensor, path: Path, metadata: dict[str, Any], dynamic_batch: bool, half: bool
) -> Path:
    if half or dynamic_batch:
        raise ValueError("the TFLite exporter writes fixed-batch fp32 only, as the formats table says")
    with atomic_path(path) as temporary, quiet(*_LOGGERS):
        import litert_torch

        litert_torch.convert(model.eval(), (example,)).export(str(temporary))
        _embed(temporary, metadata)
    return path


def quantize_int8(job: Int8Job) -> Path:
    """PT2E post-training quantization in PyTorch, then conversion (litert-torch quantizes before it
    converts, so it starts from ``job.model``, not from the fp32 artifact). ``auto`` ranges come from
    histogram observers (least quantization error), as litert-torch's own config chooses."""
    with atomic_path(job.path) as temporary, quiet(*_LOGGERS), torch.no_grad():
        import litert_torch
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e import move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = PT2EQuantizer().set_global(_quantization_config(job.method))
        # squeeze-excite stays float, as in the other formats (see _graph); torch.export records module
        # types by qualified name, and that is what the quantizer's filter compares
        quantizer.set_module_type(f"{SqueezeExcitation.__module__}.{SqueezeExcitation.__qualname__}", None)
        images = torch.from_numpy(np.concatenate(job.calibration))
        # calibrate in chunks through a batch-dynamic graph: 2.7× faster than image by image at 224. The
        # histogram observers re-bin when a chunk widens the range, so ranges can move slightly against
        # image-by-image calibration. The converter then traces the artifact's own batch.
        sample = images[:CALIBRATION_CHUNK]
        if len(sample) == 1:  # torch.export specialises a batch of one instead of keeping it dynamic
            sample = sample.repeat(2, 1, 1, 1)
        batch = torch.export.Dim("batch", min=1, max=max(len(images), 2))
        exported = torch.export.export(job.model.eval(), (sample,), dynamic_shapes=({0: batch},))
        prepared = prepare_pt2e(exported.module(), quantizer)
        for chunk in torch.split(images, CALIBRATION_CHUNK):
            prepared(chunk)
        quantized = move_exported_model_to_eval(convert_pt2e(prepared, fold_quantize=False))
        quantized.training = False  # the graph is in eval form now; the flag is what litert-torch reads
        converted = litert_torch.convert(quantized, (job.example,), quant_config=QuantConfig(pt2e_quantizer=quantizer))
        converted.export(str(temporary))
        _embed(temporary, job.metadata)
    return job.path


def _quantization_config(method: str) -> Any:
    """litert-torch's symmetric per-channel config, with the activation observer ``method`` names."""
    from litert_torch.quantize.pt2e_quantizer import get_symmetric_quantization_config
    from torchao.quantization.pt2e import MinMaxObserver

    histogram, percentile = _observers()
    observer = {"auto": histogram, "minmax": MinMaxObserver, "percentile": percentile}[method]
    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    activation = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=observer.with_args(eps=2**-12))
    return dataclasses.replace(config, input_activation=activation, output_activation=activation)


@functools.cache
def _observers() -> tuple[type, type]:
    """Histogram observers (torchao's, the one litert-torch chooses) that histogram every
    ``HISTOGRAM_STRIDE``-th value plus the extremes: the range stays exact, and ``torch.histc`` over
    every activation had been 7 of the 11 s that calibrating MobileNetV2 at 224 took. The second
    cuts the range at percentiles instead of searching for the least quantization error."""
    from torchao.quantization.pt2e import HistogramObserver

    class SampledHistogramObserver(HistogramObserver):
        def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
            values = x_orig.detach().flatten()
            if values.numel() > HISTOGRAM_STRIDE * self.bins:
                low, high = torch.aminmax(values)
                values = torch.cat([values[::HISTOGRAM_STRIDE], low[None], high[None]])
            super().forward(values)
            return x_orig

    class PercentileObserver(SampledHistogramObserver):
        def _non_linear_param_search(self) -> tuple[torch.Tensor, torch.Tensor]:
            cdf = torch.cumsum(self.histogram, 0) / self.histogram.sum()
            tails = torch.tensor([PERCENTILE_TAIL, 1 - PERCENTILE_TAIL], dtype=cdf.dtype)
            low, high = torch.searchsorted(cdf, tails).clamp(max=self.bins - 1)
            width = (self.max_val - self.min_val) / self.bins
            return self.min_val + width * low, self.min_val + width * (high + 1)

    return SampledHistogramObserver, PercentileObserver


def _embed(path: Path, metadata: dict[str, Any]) -> None:
    """Add ``metadata`` as a named metadata buffer of the flatbuffer (TFLite's own metadata table)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(path.read_bytes(), 0))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_KEY, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_KEY.encode()] + [entry]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(builder.Output())


def int8_scheme(method: str) -> dict[str, str]:
    return {
        "scheme": "PT2E: per-channel symmetric int8 weights, int8 activations, int8 input/output",
        "float_layers": "squeeze-excite branches",
        "method": {"auto": "histogram (least quantization error)", "minmax": "minmax (global)"}.get(method, method),
        "input_output": "int8, with the tensors' own scale and zero point (float images are quantized on input)",
    }


def count_ops(path: Path) -> dict[str, int]:
    """Builtin operator types, one count per use (QUANTIZE and int8 convolutions prove an int8 model)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(path.read_bytes(), 0)
    names = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    codes = []
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        codes.append(names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM"))
    counts: dict[str, int] = {}
    graph = model.Subgraphs(0)
    for index in range(graph.OperatorsLength()):
        name = codes[graph.Operators(index).OpcodeIndex()]
        counts[name] = counts.get(name, 0) + 1
    return counts

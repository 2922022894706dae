"""TFLite (LiteRT): ``litert-torch`` from the PyTorch model; int8 as PT2E quantization (per-channel
symmetric weights, int8 activations; integer everywhere but the first convolution, the classifier and
squeeze-excite branches, as in the ONNX recipe), NCHW input kept as is.

The first convolution and the classifier stay float because int8 there cost the ImageNet-trained
EfficientNet-Lite1 3 points of top-1 agreement with fp32 on natural photos (``benchmarks/real_int8.py``:
77.4% with them int8, 80.4% float; onnxruntime, whose recipe keeps them float, 81.1%), for about 2% of
its multiply-accumulates. The artifact's input and output are float32.
"""

from __future__ import annotations

import dataclasses
import functools
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
from edgecnn.optimize.int8_correction import recipe_float_layers
from edgecnn.runtime.base import METADATA_KEY, third_party_output_wanted
from edgecnn.runtime.metadata import ArtifactMetadata, Quantization
from edgecnn.runtime.targets import Target

# The converter's C++ side logs through TensorFlow's and glog's channels, read once at import. Importing
# litert-torch also logs, past TF_CPP_MIN_LOG_LEVEL, that TensorFlow's oneDNN custom operations are on;
# with them off it does not (the artifacts are verified either way).
if not third_party_output_wanted():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# torch.utils._pytree warns, on torchao's import, about how torchao registers one of its types
_LOGGERS = ("litert_torch", "absl", "torchao", "jax", "torch.utils._pytree")
CALIBRATION_CHUNK = 16


def export_float(
    model: nn.Module, example: torch.Tensor, path: Path, metadata: ArtifactMetadata, dynamic_batch: bool, half: bool
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
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e import move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = _clamp_aware_quantizer()(float_modules=(*recipe_float_layers(job.model), *job.float_layers))
        quantizer.set_global(_quantization_config(job.method, job.per_channel))
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


@functools.cache
def _clamp_aware_quantizer() -> type:
    """litert-torch's PT2E quantizer with two changes: a clamp (ReLU6 is ``hardtanh(0, 6)``) is quantized
    with its own, clamped range, and the modules named in ``float_modules`` stay float.

    litert-torch fuses only ReLU into the convolution before it; a hardtanh shares the observer of its
    input, so ReLU6's [0, 6] output got the convolution's unclamped range (±100 after a folded
    BatchNorm of an ImageNet model) and kept a handful of levels. Here a clamp fed only by a
    convolution or a linear layer is fused with it, as ReLU is (the layer's output is observed after
    the clamp, and the converter folds the clamp into the int8 kernel's fused activation, as
    TensorFlow's converter does with ReLU6); any other clamp observes its own output. litert-torch's
    own ``set_module_name`` cannot do the second: it parses module names out of ``nn_module_stack``
    keys in a form torch.export no longer writes, so it matches nothing.
    """
    from litert_torch.quantize import pt2e_quantizer_utils as utils
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer
    from torch.fx import Node
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    aten = torch.ops.aten
    clamps = (aten.hardtanh.default, aten.hardtanh_.default, aten.clamp.default, aten.clamp_.default)
    layers = (aten.conv1d.default, aten.conv2d.default, aten.convolution.default, aten.linear.default)

    class ClampAwareQuantizer(PT2EQuantizer):
        def __init__(self, float_modules: tuple[str, ...] = ()) -> None:
            super().__init__()
            self.float_modules = frozenset(float_modules)

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            config = self.global_config
            if config is None or config.input_activation is None:  # weights only: nothing to observe
                return super().annotate(model)
            clamp_nodes = [n for n in model.graph.nodes if n.op == "call_function" and n.target in clamps]
            for clamp in clamp_nodes:
                self._fuse(clamp, config)
            self._annotate_for_static_quantization_config(model)
            for node in model.graph.nodes:
                if self._in_float_module(node):
                    node.meta.pop("quantization_annotation", None)
            utils.propagate_annotation(model)
            for clamp in clamp_nodes:  # the clamps left to propagate_annotation share their input's range
                annotation = clamp.meta.get("quantization_annotation")
                if annotation is not None and isinstance(annotation.output_qspec, SharedQuantizationSpec):
                    annotation.output_qspec = utils.get_output_act_qspec(config)
            return model

        def _fuse(self, clamp: Node, config: Any) -> None:
            """Annotate ``clamp`` and the layer feeding it as one int8 kernel with a fused activation."""
            layer = clamp.args[0]
            if not isinstance(layer, Node) or layer.target not in layers or len(layer.users) != 1:
                return
            inputs = {layer.args[0]: utils.get_input_act_qspec(config), layer.args[1]: utils.get_weight_qspec(config)}
            partition = [clamp, layer, layer.args[1]]
            if len(layer.args) > 2 and isinstance(layer.args[2], Node):
                inputs[layer.args[2]] = utils.get_bias_qspec(config)
                partition.append(layer.args[2])
            if utils._is_annotated(partition) or any(self._configured_apart(n) for n in partition):
                return
            layer.meta["quantization_annotation"] = QuantizationAnnotation(input_qspec_map=inputs, _annotated=True)
            clamp.meta["quantization_annotation"] = QuantizationAnnotation(
                output_qspec=utils.get_output_act_qspec(config), _annotated=True
            )
            utils._mark_nodes_as_annotated(partition)

        def _configured_apart(self, node: Node) -> bool:
            """From a module type given its own configuration (squeeze-excite: float) or a float module."""
            types = {module_type for _, module_type in node.meta.get("nn_module_stack", {}).values()}
            return bool(types & set(self.module_type_config)) or self._in_float_module(node)

        def _in_float_module(self, node: Node) -> bool:
            paths = {path for path, _ in node.meta.get("nn_module_stack", {}).values()}
            return bool(paths & self.float_modules)

    return ClampAwareQuantizer


def _quantization_config(method: str, per_channel: bool) -> Any:
    """litert-torch's symmetric config (per-channel weights unless ``per_channel`` is False), with the
    activation observer ``method`` names."""
    from litert_torch.quantize.pt2e_quantizer import get_symmetric_quantization_config
    from torchao.quantization.pt2e import MinMaxObserver

    histogram, percentile = _observers()
    observer = {"auto": histogram, "minmax": MinMaxObserver, "percentile": percentile}[method]
    config = get_symmetric_quantization_config(is_per_channel=per_channel, is_dynamic=False)
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


def _embed(path: Path, metadata: ArtifactMetadata) -> None:
    """Add ``metadata`` as a named metadata buffer of the flatbuffer (TFLite's own metadata table)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(path.read_bytes(), 0))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata.to_json().encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_KEY, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_KEY.encode()] + [entry]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(builder.Output())


def int8_scheme(method: str, target: Target) -> Quantization:
    """The same for every target: XNNPACK's x86 int8 kernels sign-extend to 16 bits and multiply-add pairs
    into 32 bits (VPMADDWD), with no saturating u8×s8 step, and ARM accumulates in 32 bits."""
    return Quantization(
        scheme="PT2E: per-channel symmetric int8 weights, int8 activations; ReLU6 quantized after its clamp",
        float_layers="first convolution, classifier, squeeze-excite branches",
        method={"auto": "histogram (least quantization error)", "minmax": "minmax (global)"}.get(method, method),
        input_output="float32 (the first convolution and the classifier are float)",
    )


def count_ops(path: Path) -> dict[str, int]:
    """Builtin operator types, one count per use (QUANTIZE and int8 convolutions prove an int8 model)."""
    counts: dict[str, int] = {}
    for name, _ in operators(path):
        counts[name] = counts.get(name, 0) + 1
    return counts


def operators(path: Path) -> list[tuple[str, Any]]:
    """The main graph's operators in execution order: each one's builtin name (``CUSTOM`` for others) and
    its flatbuffer ``Operator``."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(path.read_bytes(), 0)
    names = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    codes = []
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        codes.append(names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM"))
    graph = model.Subgraphs(0)
    return [(codes[op.OpcodeIndex()], op) for op in map(graph.Operators, range(graph.OperatorsLength()))]

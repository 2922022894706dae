"""OpenVINO IR: ``openvino.convert_model`` of the ``torch.export`` program, ``save_model``; int8 with ``nncf.quantize``
(NNCF's min/max ranges with its full bias correction; 7-bit weights where the exporting CPU needs them: see
``quantize_int8``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgecnn.errors import EdgeCNNError
from edgecnn.export._formats import Int8Job
from edgecnn.export._graph import GraphNode, squeeze_excite_nodes
from edgecnn.export._quiet import quiet
from edgecnn.runtime.base import METADATA_KEY
from edgecnn.runtime.metadata import ArtifactMetadata, Quantization
from edgecnn.runtime.targets import Target


def export_float(
    model: nn.Module, example: torch.Tensor, path: Path, metadata: ArtifactMetadata, dynamic_batch: bool, half: bool
) -> Path:
    """Convert ``model``; ``half`` stores the weights as fp16 (compute precision is the device's choice)."""
    import openvino as ov

    shape = list(example.shape)
    dynamic_shapes = None
    if dynamic_batch:  # an example batch of 1 would be specialised to a constant by torch.export
        example = example[:1].repeat(2, 1, 1, 1)
        dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=1024)},)
        shape[0] = -1
    with quiet("torch.export"):
        converted = ov.convert_model(torch.export.export(model.eval(), (example,), dynamic_shapes=dynamic_shapes))
    # convert_model leaves an exported program's input as [?,C,?,?]: pin what was exported, so OpenVINO
    # compiles static-shape kernels and tools such as benchmark_app take the IR as it is
    converted.reshape({converted.inputs[0]: ov.PartialShape(shape)})
    _save(converted, path, metadata, half)
    return path


def quantize_int8(job: Int8Job) -> Path:
    """NNCF post-training quantization of the fp32 IR, calibrated on ``calibration`` batches.

    NNCF keeps its own range estimators (``auto``, the only method the formats table allows here): its
    MEAN_MINMAX and MEAN_QUANTILE estimators gave EfficientNet-B0 trained on digits 91% and 83% against
    97% with the default. The classifier (the last MatMul) stays float: int8 there cost LeNet-5 trained
    on digits 0.7 points, and it is a sliver of the work; so do squeeze-excite branches (see ``_graph``).

    The full bias correction instead of NNCF's default fast one: on the ImageNet-trained EfficientNet-Lite1
    (``benchmarks/real_int8.py``, AVX-512 VNNI CPU) the fast one lost 6.3 points of top-1 agreement
    (84.8% → 78.5%), and on the digits it was what kept LeNet-5 within 0.5 points. Where edgecnn has corrected
    the biases already (``--int8-correction bias`` or ``cle+bias`` by name) NNCF's is off, and under ``raw``
    (no correction at all); under ``auto`` the model comes without edgecnn's and NNCF's stays on (the export's
    ``_Work.correction_for`` says why).

    The weights' range follows the target CPU (``Target.saturates``, recorded in the metadata): x86
    CPUs without VNNI (AVX2) add pairs of u8×s8 products in saturating 16-bit registers, so there every
    layer keeps 7-bit weights (``OverflowFix.ENABLE``; on such a CPU EfficientNet-B0 trained on digits
    agreed 92.9% with fp32 without the fix, 98.5% with NNCF's default, 99.3% with it in every layer).
    CPUs with VNNI do not saturate and keep NNCF's default (7 bits in the first layer only): 7-bit
    weights everywhere cost Lite1 3.7 points of agreement there (84.8% → 81.1%) and no latency
    (MobileNetV2 at 224, one thread, interleaved: 2.66 against 2.70 ms; a one-off comparison on the images
    of ``benchmarks/real_int8.py``).
    """
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
        QuantizationParameters,
    )

    overflow_fix = OverflowFix.ENABLE if job.target.saturates else OverflowFix.FIRST_LAYER
    model = ov.Core().read_model(str(job.fp32_path))
    classifier = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"][-1:]
    squeeze_excite = squeeze_excite_nodes(_graph_nodes(model))
    with quiet("nncf"):
        quantized = nncf.quantize(
            model,
            nncf.Dataset(job.calibration),
            subset_size=sum(len(b) for b in job.calibration),
            ignored_scope=nncf.IgnoredScope(names=classifier + squeeze_excite + _ops_at(model, job.float_positions)),
            fast_bias_correction=False,
            advanced_parameters=AdvancedQuantizationParameters(
                overflow_fix=overflow_fix,
                disable_bias_correction=not job.own_bias_correction,
                weights_quantization_params=None if job.per_channel else QuantizationParameters(per_channel=False),
            ),
        )
    _save(quantized, job.path, job.metadata, half=False)
    return job.path


#: the IR's operations that a PyTorch convolution or linear layer becomes
LAYER_OPS = ("Convolution", "GroupConvolution", "MatMul")


def _ops_at(model: Any, positions: tuple[int, ...]) -> list[str]:
    """The names of the convolutions and matrix products at ``positions`` in the order they run: the IR
    converted from PyTorch holds one per layer in that order, but no module names."""
    if not positions:
        return []
    ops = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in LAYER_OPS]
    if max(positions) >= len(ops):
        raise EdgeCNNError(f"the IR holds {len(ops)} convolutions and matrix products: fewer than the layers")
    return [ops[position] for position in positions]


def _graph_nodes(model: Any) -> list[GraphNode]:
    """The IR's operations as dataflow nodes; constants and parameters are left out, so a multiply by a
    constant is not mistaken for one fed from outside a branch."""
    nodes = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Constant", "Parameter"):
            continue
        name = op.get_friendly_name()
        sources = (i.get_source_output() for i in op.inputs())
        inputs = tuple(f"{s.get_node().get_friendly_name()}:{s.get_index()}" for s in sources)
        nodes.append(
            GraphNode(name, op.get_type_name(), inputs, tuple(f"{name}:{k}" for k in range(op.get_output_size())))
        )
    return nodes


def _save(model: Any, path: Path, metadata: ArtifactMetadata, half: bool) -> None:
    """Write the .xml and its .bin atomically: the .bin first, the .xml (what users open) last."""
    import openvino as ov

    model.set_rt_info(metadata.to_json(), [METADATA_KEY])
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".staging-") as staging:
        staged = Path(staging) / path.name
        ov.save_model(model, str(staged), compress_to_fp16=half)
        os.replace(staged.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(staged, path)


def int8_scheme(method: str, target: Target) -> Quantization:
    return Quantization(
        scheme="NNCF post-training: FakeQuantize, int8 activations, int8 weights",
        method="nncf min/max",
        float_layers="classifier, squeeze-excite branches",
        weights_range="7-bit in every layer" if target.saturates else "7-bit in the first layer, 8-bit elsewhere",
        seven_bit_weights=target.saturates,
        chosen_for=target.weights_choice,
    )


def count_ops(path: Path) -> dict[str, int]:
    """Operation types in the IR (FakeQuantize and int8 constants prove an int8 model)."""
    import openvino as ov

    counts: dict[str, int] = {}
    for op in ov.Core().read_model(str(path)).get_ops():
        counts[op.get_type_name()] = counts.get(op.get_type_name(), 0) + 1
    return counts

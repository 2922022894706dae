"""The formats table: one row per artifact format drives option validation before any work is done.

A combination a format cannot do, or a backend whose extra is not installed, fails with the
``pip install`` line that fixes it.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from edgecnn.errors import EdgeCNNError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from edgecnn.runtime.metadata import ArtifactMetadata, Quantization
    from edgecnn.runtime.targets import Target


# percentile calibration cuts this share of the values off (onnxruntime's 99.999 default)
PERCENTILE_TAIL = 1e-5
# histogram calibration counts every HISTOGRAM_STRIDE-th value of a large tensor (its range still comes
# from every value): histogramming every activation was most of the calibration time at 224
HISTOGRAM_STRIDE = 16


class Exporter(Protocol):
    """What a format's exporter module provides; ``Format.exporter`` names the module. A new format is one
    such module and one row of ``FORMATS`` (a test checks every row's module against this protocol)."""

    def export_float(
        self,
        model: nn.Module,
        example: torch.Tensor,
        path: Path,
        metadata: ArtifactMetadata,
        dynamic_batch: bool,
        half: bool,
    ) -> Path:
        """Write the fp32 (or fp16 where ``half``) artifact of ``model`` with ``metadata`` stored inside."""
        ...

    def quantize_int8(self, job: Int8Job) -> Path:
        """Write the int8 artifact ``job`` describes, calibrated on its images."""
        ...

    def int8_scheme(self, method: str, target: Target) -> Quantization:
        """How ``quantize_int8`` quantizes with calibration ``method`` for ``target``, recorded in the metadata."""
        ...

    def count_ops(self, path: Path) -> dict[str, int]:
        """Operation types in the artifact and their counts (the int8 kernels prove an int8 model)."""
        ...


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    fp16: bool
    int8: bool
    dynamic_batch: bool
    runtime: str
    extra: str
    modules: tuple[str, ...]
    exporter: str  # the module that implements ``Exporter``
    calibration_methods: tuple[str, ...]  # "auto": the toolchain's own recommended ranges
    # the compute precision fp32 and int8 artifacts are verified in, for runtimes that choose their own:
    # OpenVINO computes an "fp32" model in bf16 on CPUs with AVX512-BF16 or AMX unless told f32
    verify_precision: str | None = None
    # converted in a worker process beside the other formats asked for (given a second core): for a
    # converter so slow, and so much in Python, that the others would otherwise wait for it
    in_worker: bool = False
    # its int8 quantizer reads the fp32 artifact (onnxruntime, NNCF), not the PyTorch model (litert-torch's
    # PT2E): a corrected model needs an fp32 artifact of its own first
    quantizes_fp32_artifact: bool = True
    # the toolchain whose int8 quantizer corrects biases itself, in its own arithmetic (NNCF's full bias
    # correction), if any: where ``--int8-correction auto`` chose bias correction, the format keeps its own in
    # place of edgecnn's
    bias_corrector: str | None = None

    def load_exporter(self) -> Exporter:
        return cast("Exporter", importlib.import_module(self.exporter))

    def missing_modules(self) -> list[str]:
        return [m for m in self.modules if importlib.util.find_spec(m) is None]


@dataclass(frozen=True)
class Int8Job:
    """One int8 conversion; each quantizer starts from what its toolchain takes."""

    model: nn.Module  # BN-folded PyTorch model, corrected for int8: litert-torch quantizes before it converts
    example: torch.Tensor
    fp32_path: Path  # the fp32 artifact of ``model``: onnxruntime and NNCF quantize it
    path: Path
    calibration: list[np.ndarray]
    method: str
    metadata: ArtifactMetadata
    target: Target  # the CPU the artifact is for: where u8×s8 pairs saturate, weights keep 7 bits
    #: more layers to keep float (PyTorch module names), beside the recipe's own, and each one's position
    #: among the convolutions and linear layers as they run: how a graph without module names finds them
    float_layers: tuple[str, ...] = ()
    float_positions: tuple[int, ...] = ()
    per_channel: bool = True  # the weights' scales: one per output channel, or one per tensor (--per-tensor)
    #: the toolchain's own bias correction (NNCF's) stays on: off where edgecnn corrected the model's biases
    #: (it would correct them twice) or ``--int8-correction raw`` asked for none at all
    own_bias_correction: bool = True


FORMATS: dict[str, Format] = {
    "onnx": Format(
        "onnx",
        ".onnx",
        fp16=False,
        int8=True,
        dynamic_batch=True,
        runtime="onnxruntime",
        extra="onnx",
        modules=("onnx", "onnxruntime", "onnxscript"),
        exporter="edgecnn.export.onnx",
        calibration_methods=("auto", "minmax", "entropy", "percentile"),
    ),
    "openvino": Format(
        "openvino",
        ".xml",
        fp16=True,
        int8=True,
        dynamic_batch=True,
        runtime="openvino",
        extra="openvino",
        modules=("openvino", "nncf"),
        exporter="edgecnn.export.openvino",
        calibration_methods=("auto",),
        verify_precision="f32",
        bias_corrector="NNCF",
    ),
    "tflite": Format(
        "tflite",
        ".tflite",
        fp16=False,
        int8=True,
        dynamic_batch=False,
        runtime="litert",
        extra="tflite",
        modules=("litert_torch", "ai_edge_litert"),
        exporter="edgecnn.export.tflite",
        calibration_methods=("auto", "minmax", "percentile"),
        # LiteRT's converter is the slowest of the three and traces the model mostly in Python, where a thread
        # would hold the others' Python up too: a process converts it beside them
        in_worker=True,
        quantizes_fp32_artifact=False,
    ),
}


def resolve_formats(
    names: str, int8: bool, fp16: bool, dynamic_batch: bool = False, calibration_method: str = "auto"
) -> list[Format]:
    """Formats from a comma-separated list (or ``all``), checked against the options and the install.

    With ``all``, ``fp16`` applies to the formats that have it; a format named explicitly must
    support every precision asked for.
    """
    explicit = names.strip() != "all"
    requested = [n.strip() for n in names.split(",") if n.strip()] if explicit else list(FORMATS)
    if not requested:
        raise EdgeCNNError(f"no format given; valid: {', '.join(FORMATS)}, all")
    formats = []
    for name in requested:
        if name not in FORMATS:
            raise EdgeCNNError(f"unknown format {name!r}; valid: {', '.join(FORMATS)}, all")
        fmt = FORMATS[name]
        if int8 and not fmt.int8:
            raise EdgeCNNError(f"{name} cannot be exported as int8")
        if fp16 and explicit and not fmt.fp16:
            with_fp16 = ", ".join(f.name for f in FORMATS.values() if f.fp16)
            raise EdgeCNNError(f"{name} cannot be exported as fp16; formats with fp16: {with_fp16}")
        if int8 and calibration_method not in fmt.calibration_methods:
            having = ", ".join(f.name for f in FORMATS.values() if calibration_method in f.calibration_methods)
            raise EdgeCNNError(
                f"{name} has no {calibration_method} calibration (valid: {', '.join(fmt.calibration_methods)}); "
                f"formats with it: {having}"
            )
        if dynamic_batch and not fmt.dynamic_batch:
            raise EdgeCNNError(f"{name} artifacts have a fixed batch; pass --batch N (or leave {name} out)")
        missing = fmt.missing_modules()
        if missing:
            raise EdgeCNNError(f"{name} export needs {', '.join(missing)}: pip install 'edgecnn[{fmt.extra}]'")
        formats.append(fmt)
    return formats

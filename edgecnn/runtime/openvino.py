"""OpenVINO on CPU or GPU, with the runtime's defaults unless a precision is pinned.

On CPUs with AMX/AVX512-BF16 OpenVINO computes an "fp32" model in bf16 unless told otherwise; the
runner reports the precision that really ran (``INFERENCE_PRECISION_HINT`` after compilation).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.errors import EdgeCNNError
from edgecnn.runtime.base import METADATA_KEY, import_runtime, load_error
from edgecnn.runtime.metadata import ArtifactMetadata

OPENVINO_PRECISION = {"f32": "f32", "bf16": "bf16", "fp16": "f16"}


def read_metadata(model: Any) -> ArtifactMetadata:
    if not model.has_rt_info([METADATA_KEY]):
        return ArtifactMetadata()
    return ArtifactMetadata.from_json(model.get_rt_info([METADATA_KEY]).astype(str))


def _precision_name(hint: Any) -> str:
    """edgecnn's name for an OpenVINO element type ("f32" -> "fp32")."""
    name = hint.to_string()
    return {"f32": "fp32", "f16": "fp16"}.get(name, name)


class OpenVinoRunner:
    name = "openvino"

    def __init__(
        self, path: Path, threads: int | None = None, device: str = "cpu", precision: str | None = None
    ) -> None:
        ov = import_runtime("openvino", "openvino  (or 'edgecnn[openvino]')")
        self._ov = ov
        self.version = ov.get_version()
        self.device = device
        core = ov.Core()
        target = device.upper()
        if target not in core.available_devices:
            available = ", ".join(core.available_devices)
            raise EdgeCNNError(f"OpenVINO sees no {target} device here (available: {available})")
        #: the compile properties, kept for the profiler (``edgecnn.bench.profile``) to compile alike
        self.config: dict[str, Any] = {}
        if threads and target == "CPU":
            self.config["INFERENCE_NUM_THREADS"] = threads
        if precision:
            self.config["INFERENCE_PRECISION_HINT"] = OPENVINO_PRECISION[precision]
        try:
            model = core.read_model(str(path))
            self.compiled = core.compile_model(model, target, self.config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses for bad files
            raise load_error(self.name, path, exc) from exc
        self.metadata = read_metadata(model)
        #: the precision OpenVINO computes the non-int8 parts in (it may pick bf16 for an fp32 model)
        self.inference_precision = _precision_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        #: what the device computes in when nothing is pinned (bf16 on CPUs with AVX512-BF16 or AMX)
        default = _precision_name(core.get_property(target, "INFERENCE_PRECISION_HINT"))
        stored = self.metadata.precision
        self.precision = f"int8+{self.inference_precision}" if stored == "int8" else self.inference_precision
        self.default_precision = f"int8+{default}" if stored == "int8" else default
        self.notes: list[str] = []
        self.input_shape = [d.get_length() if d.is_static else None for d in self.compiled.input(0).get_partial_shape()]
        if stored == "fp32" and self.inference_precision != "fp32":
            self.notes.append(f"fp32 artifact computed in {self.inference_precision}; --precision f32 pins f32")

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.compiled(batch)[0]

    def bind(self, batch: np.ndarray) -> Callable[[], object]:
        """A dedicated infer request per binding: bindings may run in parallel (throughput mode)."""
        request = self.compiled.create_infer_request()
        request.set_input_tensor(self._ov.Tensor(np.ascontiguousarray(batch)))
        return request.infer

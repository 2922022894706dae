"""onnxruntime: CPU, or the CUDA / TensorRT execution providers for ``device="gpu"``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.errors import EdgeCNNError
from edgecnn.runtime.base import (
    METADATA_KEY,
    artifact_precision,
    import_runtime,
    int8_saturates,
    load_error,
    pinned_precision_unsupported,
)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


class OnnxRuntimeRunner:
    name = "onnxruntime"

    def __init__(
        self, path: Path, threads: int | None = None, device: str = "cpu", precision: str | None = None
    ) -> None:
        ort = import_runtime("onnxruntime", "onnxruntime  (or 'edgecnn[onnx]')")
        pinned_precision_unsupported(self.name, precision)
        self.version = ort.__version__
        self.device = device
        providers = ["CPUExecutionProvider"]
        if device == "gpu":
            available = [p for p in GPU_PROVIDERS if p in ort.get_available_providers()]
            if not available:
                raise EdgeCNNError(
                    "onnxruntime has no GPU provider here (CUDA/TensorRT): pip install onnxruntime-gpu on a GPU machine"
                )
            providers = [*available, "CPUExecutionProvider"]
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise load_error(self.name, path, exc) from exc
        stored = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        self.metadata: dict[str, Any] = json.loads(stored) if stored else {}
        self.precision = self.default_precision = artifact_precision(self.metadata)
        self.providers: list[str] = self.session.get_providers()
        self.notes: list[str] = [f"providers: {', '.join(self.providers)}"] if device == "gpu" else []
        seven_bit = str((self.metadata.get("quantization") or {}).get("weights_range", "")).startswith("7-bit")
        if device == "cpu" and self.precision == "int8" and int8_saturates() and not seven_bit:
            self.notes.append(
                "this CPU has no VNNI: onnxruntime's int8 kernels (VPMADDUBSW) can saturate with this artifact's "
                "8-bit weights; export it on (or for) a CPU like this one to get 7-bit weights"
            )
        self.input_name = self.session.get_inputs()[0].name
        self.input_shape = [d if isinstance(d, int) else None for d in self.session.get_inputs()[0].shape]

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]

    def bind(self, batch: np.ndarray) -> Callable[[], object]:
        feed = {self.input_name: np.ascontiguousarray(batch)}
        return lambda: self.session.run(None, feed)

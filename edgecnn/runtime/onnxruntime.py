"""onnxruntime: CPU, or the CUDA / TensorRT execution providers for ``device="gpu"``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgecnn.errors import EdgeCNNError
from edgecnn.runtime.base import (
    METADATA_KEY,
    import_runtime,
    load_error,
    pinned_precision_unsupported,
)
from edgecnn.runtime.metadata import ArtifactMetadata

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
        self.metadata = ArtifactMetadata.from_json(stored)
        self.precision = self.default_precision = self.metadata.precision
        self.providers: list[str] = self.session.get_providers()
        self.notes: list[str] = [f"providers: {', '.join(self.providers)}"] if device == "gpu" else []
        self.input_name = self.session.get_inputs()[0].name
        self.input_shape = [d if isinstance(d, int) else None for d in self.session.get_inputs()[0].shape]

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]

    def bind(self, batch: np.ndarray) -> Callable[[], object]:
        feed = {self.input_name: np.ascontiguousarray(batch)}
        return lambda: self.session.run(None, feed)

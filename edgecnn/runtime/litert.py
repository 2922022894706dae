"""LiteRT / TFLite interpreters: ai-edge-litert, else tflite-runtime (e.g. a Pi on numpy<2), else TensorFlow.

Int8 artifacts take and give int8 tensors; the runner quantizes the float input with the input
tensor's own scale and zero point and dequantizes the output, so callers always pass float images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.errors import EdgeCNNError


def _interpreter_class() -> tuple[type, str]:
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite-runtime"
    except ImportError:
        pass
    try:
        from tensorflow.lite import Interpreter

        return Interpreter, "tensorflow"
    except ImportError:
        raise EdgeCNNError("no TFLite interpreter is installed: pip install 'edgecnn[tflite]'") from None


class LiteRtRunner:
    name = "litert"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        interpreter_class, self.interpreter_package = _interpreter_class()
        try:
            self.interpreter = interpreter_class(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise EdgeCNNError(f"litert cannot load {path}: {str(exc).strip().splitlines()[0]}") from exc
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.metadata: dict[str, Any] = _metadata(path)

    def run(self, batch: np.ndarray) -> np.ndarray:
        if tuple(batch.shape) != tuple(self.input["shape"]):
            self.interpreter.resize_tensor_input(self.input["index"], list(batch.shape))
            self.interpreter.allocate_tensors()
            self.input = self.interpreter.get_input_details()[0]
            self.output = self.interpreter.get_output_details()[0]
        dtype = self.input["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero_point = self.input["quantization"]
            limits = np.iinfo(dtype)
            batch = np.clip(np.round(batch / scale + zero_point), limits.min, limits.max).astype(dtype)
        self.interpreter.set_tensor(self.input["index"], batch)
        self.interpreter.invoke()
        result = self.interpreter.get_tensor(self.output["index"])
        if np.issubdtype(result.dtype, np.integer):
            scale, zero_point = self.output["quantization"]
            result = (result.astype(np.float32) - zero_point) * scale
        return result


def _metadata(path: Path) -> dict[str, Any]:
    try:
        from edgecnn.export.tflite import read_metadata

        return read_metadata(path)
    except ImportError:  # an interpreter without ai-edge-litert has no flatbuffer schema to read it with
        return {}

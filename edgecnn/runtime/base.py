"""The runner interface and the registry that picks a runner from an artifact's file suffix."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgecnn.errors import EdgeCNNError


class Runner(Protocol):
    """Loads one artifact in its own runtime; ``metadata`` is what the artifact carries inside."""

    name: str
    metadata: dict[str, Any]

    def run(self, batch: np.ndarray) -> np.ndarray: ...


def open_runner(path: str | Path, threads: int | None = None) -> Runner:
    path = Path(path)
    if not path.is_file():
        raise EdgeCNNError(f"artifact not found: {path}")
    if path.suffix == ".onnx":
        from edgecnn.runtime.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, threads)
    if path.suffix == ".xml":
        from edgecnn.runtime.openvino import OpenVinoRunner

        return OpenVinoRunner(path, threads)
    if path.suffix == ".tflite":
        from edgecnn.runtime.litert import LiteRtRunner

        return LiteRtRunner(path, threads)
    raise EdgeCNNError(
        f"no runner for {path.suffix or 'files without a suffix'} artifacts; supported: .onnx, .xml, .tflite"
    )

"""OpenVINO on CPU, with the runtime's default settings (what a deployment gets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.errors import EdgeCNNError


class OpenVinoRunner:
    name = "openvino"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise EdgeCNNError("openvino is not installed: pip install 'edgecnn[openvino]'") from None
        from edgecnn.export.openvino import read_metadata

        core = ov.Core()
        try:
            model = core.read_model(str(path))
            config = {"INFERENCE_NUM_THREADS": threads} if threads else {}
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses for bad files
            raise EdgeCNNError(f"openvino cannot load {path}: {str(exc).strip().splitlines()[0]}") from exc
        self.metadata: dict[str, Any] = read_metadata(model)
        #: the precision OpenVINO really computes in (it may pick bf16 for an fp32 model)
        self.inference_precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.compiled(batch)[0]

"""PyTorch eager: the fp32 reference, from an edgecnn checkpoint, on CPU or CUDA."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from edgecnn.errors import EdgeCNNError
from edgecnn.models._registry import get_model_meta
from edgecnn.models.checkpoint import held_out_images, load_checkpoint
from edgecnn.runtime.metadata import ArtifactMetadata

TORCH_DTYPES = {None: torch.float32, "f32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class TorchRunner:
    name = "pytorch"

    def __init__(
        self, path: Path, threads: int | None = None, device: str = "cpu", precision: str | None = None
    ) -> None:
        if device == "gpu" and not torch.cuda.is_available():
            raise EdgeCNNError("PyTorch sees no CUDA GPU here; a CUDA build of torch on a GPU machine is needed")
        if threads:
            torch.set_num_threads(threads)
        self.version = torch.__version__
        self.device = device
        self._device = torch.device("cuda" if device == "gpu" else "cpu")
        self._dtype = TORCH_DTYPES[precision]
        checkpoint = load_checkpoint(path)
        self.model = checkpoint.model.eval().to(self._device, self._dtype)
        meta = get_model_meta(checkpoint.model)
        self.precision = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self._dtype]
        self.default_precision = "fp32"
        self.metadata = ArtifactMetadata(
            model=meta.name,
            classes=tuple(meta.class_names),
            preprocessing=meta.preprocessing.to_dict(),
            held_out=held_out_images(checkpoint.metadata),
        )
        self.notes: list[str] = []
        self.input_shape: list[int | None] = [None, *meta.preprocessing.input_shape]

    @torch.inference_mode()
    def run(self, batch: np.ndarray) -> np.ndarray:
        inputs = torch.from_numpy(batch).to(self._device, self._dtype)
        return self.model(inputs).float().cpu().numpy()

    def bind(self, batch: np.ndarray) -> Callable[[], object]:
        inputs = torch.from_numpy(np.ascontiguousarray(batch)).to(self._device, self._dtype)
        synchronize = torch.cuda.synchronize if self._device.type == "cuda" else lambda: None

        def call() -> object:
            with torch.inference_mode():
                result = self.model(inputs)
            synchronize()
            return result

        return call

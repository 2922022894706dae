"""What every artifact carries: one dataclass that the exporters write and bench, eval, check and diff read.

Standard library only: ``edgecnn bench --remote`` ships this package to a device that has no torch. The
JSON form is what each format stores under ``METADATA_KEY`` (ONNX ``metadata_props``, OpenVINO
``rt_info``, a TFLite metadata buffer) and what the sidecar ``NAME.SUFFIX.json`` repeats beside it.
Keys a newer edgecnn may add are ignored when read, so older tools still read newer artifacts.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from edgecnn.errors import EdgeCNNError

METADATA_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Calibration:
    """The images int8 ranges were computed on: which source, how many, and a hash of their pixels."""

    source: str
    size: int
    sha256: str | None = None


@dataclass(frozen=True)
class Quantization:
    """How an int8 artifact was quantized, in words a person can compare across formats."""

    scheme: str
    method: str | None = None
    float_layers: str | None = None
    weights_range: str | None = None  # in words: "8-bit", "7-bit in every layer", …
    seven_bit_weights: bool = False  # every int8 layer: what keeps u8×s8 pairs from saturating in 16 bits
    chosen_for: str | None = None  # the target that weights_range was chosen for, and why
    weights_per_channel: bool = True  # one scale per output channel, or one per tensor
    # what corrected the int8 model: edgecnn's equalization or bias correction of the PyTorch model, or the
    # quantizer's own bias correction (NNCF's)
    corrections: str | None = None
    input_output: str | None = None
    calibration: Calibration | None = None


@dataclass(frozen=True)
class InputSpec:
    name: str = "input"
    layout: str = "NCHW"
    dtype: str = "float32"
    shape: tuple[int | str, ...] = ()  # the first dimension is "batch" where the batch is dynamic

    @property
    def fixed_batch(self) -> int | None:
        return self.shape[0] if self.shape and isinstance(self.shape[0], int) else None


@dataclass(frozen=True)
class HeldOut:
    """The images of the training data a model never trained on, so ``eval`` scores only those."""

    source: str
    fingerprint: str
    test_indices: tuple[int, ...]


@dataclass(frozen=True)
class ArtifactMetadata:
    """edgecnn's description of one artifact. Empty (``known`` False) for models from other tools."""

    model: str | None = None
    precision: str = "fp32"
    classes: tuple[str, ...] = ()
    preprocessing: dict[str, Any] | None = None  # ``Preprocessing.to_dict()``; parsed by the data stage
    input: InputSpec | None = None
    quantization: Quantization | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    weights_sha256: str | None = None
    held_out: HeldOut | None = None
    target: str | None = None  # the CPU it was made for (``edgecnn.runtime.targets``)
    schema_version: int = METADATA_SCHEMA_VERSION
    edgecnn_version: str | None = None

    @property
    def known(self) -> bool:
        """Whether edgecnn wrote it: without preprocessing and classes no image can be prepared for it."""
        return self.preprocessing is not None

    @property
    def fixed_batch(self) -> int | None:
        return self.input.fixed_batch if self.input else None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ArtifactMetadata:
        """Parse stored metadata; unknown keys are ignored, a malformed entry is one line of error."""
        if not data:
            return cls()
        try:
            return _build(cls, data)
        except (TypeError, ValueError, AttributeError) as exc:
            raise EdgeCNNError(f"edgecnn metadata that cannot be read: {exc}") from None

    @classmethod
    def from_json(cls, text: str | None) -> ArtifactMetadata:
        if not text:
            return cls()
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise EdgeCNNError(f"edgecnn metadata that is not JSON: {exc}") from None


# nested dataclass fields and how to build them from their JSON form
_NESTED: dict[str, Any] = {
    "input": InputSpec,
    "quantization": Quantization,
    "calibration": Calibration,
    "held_out": HeldOut,
}
_TUPLES = {"classes", "shape", "test_indices"}


def _build(cls: type, data: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            continue
        if key in _NESTED and value is not None:
            value = _build(_NESTED[key], value)
        elif key in _TUPLES and value is not None:
            value = tuple(value)
        values[key] = value
    return cls(**values)

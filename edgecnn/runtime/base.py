"""The runner interface and the registry that picks a runner for an artifact.

This package, ``edgecnn.errors`` and ``edgecnn.bench.measure`` import nothing but the standard library,
numpy and the runtime itself: they are what ``edgecnn bench --remote`` ships to a device.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgecnn.errors import EdgeCNNError
from edgecnn.runtime.metadata import ArtifactMetadata

METADATA_KEY = "edgecnn"  # the name under which every format stores edgecnn's metadata
DEVICES = ("cpu", "gpu")
PRECISIONS = ("f32", "bf16", "fp16")
#: ``edgecnn --verbose`` sets it (as does EDGECNN_DEBUG=1): the converters' and runtimes' own log lines then
#: reach the terminal. An environment variable, so worker processes and the device runner see it too.
VERBOSE_ENV = "EDGECNN_VERBOSE"


def third_party_output_wanted() -> bool:
    """Whether the user asked to see the converters' and runtimes' own log lines."""
    return os.environ.get(VERBOSE_ENV) == "1" or os.environ.get("EDGECNN_DEBUG") == "1"


class Runner(Protocol):
    """One artifact loaded in its own runtime.

    ``metadata`` is what the artifact carries inside; ``precision`` is what really computes (OpenVINO
    may run an fp32 model in bf16), ``default_precision`` what would compute had none been pinned;
    ``notes`` say where an optimisation did not apply; ``input_shape``
    lets models from other tools, without edgecnn's metadata, be benchmarked too.
    """

    name: str
    version: str
    device: str
    metadata: ArtifactMetadata
    precision: str
    default_precision: str
    notes: list[str]
    input_shape: list[int | None]  # as the runtime declares it (None: a dynamic dimension)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Float images in (NCHW, preprocessed), float logits out, whatever the artifact's own dtype."""
        ...

    def bind(self, batch: np.ndarray) -> Callable[[], object]:
        """The runtime's own inference call on ``batch`` already placed in its input: what latency times."""
        ...


@dataclass(frozen=True)
class RuntimeSpec:
    name: str
    suffixes: tuple[str, ...]
    runner: str  # "module:Class", imported only when used

    def load(self) -> type:
        module, cls = self.runner.split(":")
        return getattr(importlib.import_module(module), cls)


RUNTIMES: dict[str, RuntimeSpec] = {
    spec.name: spec
    for spec in (
        RuntimeSpec("onnxruntime", (".onnx",), "edgecnn.runtime.onnxruntime:OnnxRuntimeRunner"),
        RuntimeSpec("openvino", (".xml",), "edgecnn.runtime.openvino:OpenVinoRunner"),
        RuntimeSpec("litert", (".tflite",), "edgecnn.runtime.litert:LiteRtRunner"),
        RuntimeSpec("pytorch", (".pt", ".pth"), "edgecnn.runtime.torch:TorchRunner"),
    )
}


def runtime_for(path: str | Path, runtime: str = "auto") -> RuntimeSpec:
    """The runtime that runs ``path``: ``auto`` picks it from the suffix; a named one must accept it."""
    suffix = Path(path).suffix
    if runtime != "auto":
        if runtime not in RUNTIMES:
            raise EdgeCNNError(f"unknown runtime {runtime!r}; valid: auto, {', '.join(RUNTIMES)}")
        spec = RUNTIMES[runtime]
        if suffix not in spec.suffixes:
            raise EdgeCNNError(f"{runtime} cannot run {suffix or 'suffix-less'} files ({Path(path).name})")
        return spec
    for spec in RUNTIMES.values():
        if suffix in spec.suffixes:
            return spec
    known = ", ".join(s for spec in RUNTIMES.values() for s in spec.suffixes)
    raise EdgeCNNError(f"no runner for {suffix or 'files without a suffix'} artifacts; supported: {known}")


def open_runner(
    path: str | Path,
    threads: int | None = None,
    runtime: str = "auto",
    device: str = "cpu",
    precision: str | None = None,
) -> Runner:
    """Load ``path`` in its runtime on ``device`` (cpu|gpu); ``precision`` pins the compute precision."""
    path = Path(path)
    if device not in DEVICES:
        raise EdgeCNNError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    if precision is not None and precision not in PRECISIONS:
        raise EdgeCNNError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    spec = runtime_for(path, runtime)
    if not path.is_file():
        raise EdgeCNNError(f"artifact not found: {path}")
    return spec.load()(path, threads=threads, device=device, precision=precision)


def artifact_files(path: str | Path) -> list[Path]:
    """The files an artifact is made of: OpenVINO IR keeps its weights in a .bin beside the .xml."""
    path = Path(path)
    return [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]


def artifact_size(path: str | Path) -> int:
    return sum(file.stat().st_size for file in artifact_files(path) if file.exists())


def run_in_batches(runner: Runner, images: np.ndarray, batch: int) -> np.ndarray:
    """Logits for all ``images``, ``batch`` at a time; the last chunk is padded for fixed-batch artifacts."""
    outputs = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        if len(chunk) < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), 0)])
        outputs.append(runner.run(chunk)[: len(images) - start])
    return np.concatenate(outputs)


def import_runtime(module: str, install: str) -> Any:
    """Import a runtime package, or fail with the line that installs it (on a host or on a device)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise EdgeCNNError(f"{module} is not installed: pip install {install}") from None


def one_line_error(what: str, exc: BaseException) -> EdgeCNNError:
    """A runtime's own exception (each raises its own types) as one line after ``what`` happened."""
    lines = str(exc).strip().splitlines()
    return EdgeCNNError(f"{what}: {lines[0] if lines else type(exc).__name__}")


def load_error(runtime: str, path: Path, exc: BaseException) -> EdgeCNNError:
    """A file the runtime cannot load, as one line that names the file."""
    return one_line_error(f"{runtime} cannot load {path}", exc)


def pinned_precision_unsupported(runtime: str, precision: str | None) -> None:
    """Runtimes that run exactly what the artifact stores cannot be told another precision."""
    if precision is not None:
        raise EdgeCNNError(
            f"{runtime} runs the precision stored in the artifact; --precision applies to openvino and pytorch"
        )


def sidecar_path(artifact: Path) -> Path:
    """The JSON beside an artifact: its metadata and export report. Named after the whole file name, so the
    ONNX, OpenVINO and TFLite artifacts of one model in one folder keep one each."""
    return artifact.with_name(f"{artifact.name}.json")


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()

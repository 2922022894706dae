"""LiteRT / TFLite interpreters: ai-edge-litert, else tflite-runtime (e.g. a Pi on numpy<2), else TensorFlow.

XNNPACK is the interpreters' default CPU delegate. Int8 artifacts take and give int8 tensors; the runner
quantizes the float input with the input tensor's own scale and zero point and dequantizes the output,
so callers always pass float images.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.errors import EdgeCNNError
from edgecnn.runtime.base import METADATA_KEY, load_error, pinned_precision_unsupported, third_party_output_wanted
from edgecnn.runtime.metadata import ArtifactMetadata

INTERPRETERS = (
    ("ai-edge-litert", "ai_edge_litert.interpreter"),
    ("tflite-runtime", "tflite_runtime.interpreter"),
    ("tensorflow", "tensorflow.lite"),
)


def _interpreter_class() -> tuple[type, str, str]:
    import importlib

    for package, module in INTERPRETERS:
        try:
            imported = importlib.import_module(module)
        except ImportError:
            continue
        version = getattr(imported, "__version__", None) or _distribution_version(package)
        return imported.Interpreter, package, version
    raise EdgeCNNError(
        "no TFLite interpreter is installed: pip install ai-edge-litert  (or tflite-runtime, or 'edgecnn[tflite]')"
    )


def _distribution_version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def read_metadata(path: Path) -> ArtifactMetadata:
    """edgecnn's metadata entry, read with the flatbuffer schema that ai-edge-litert ships (empty without it)."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # tflite-runtime has no schema module; remote runs get the metadata from the host
        return ArtifactMetadata()
    model = schema.Model.GetRootAsModel(path.read_bytes(), 0)
    for index in range(model.MetadataLength()):
        entry = model.Metadata(index)
        if entry.Name() == METADATA_KEY.encode():
            return ArtifactMetadata.from_json(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes().decode())
    return ArtifactMetadata()


class LiteRtRunner:
    name = "litert"

    def __init__(
        self,
        path: Path,
        threads: int | None = None,
        device: str = "cpu",
        precision: str | None = None,
        preserve_all_tensors: bool = False,
    ) -> None:
        """``preserve_all_tensors`` keeps every intermediate tensor readable (and so runs without XNNPACK)."""
        if device != "cpu":
            raise EdgeCNNError("the LiteRT runner runs on CPU (XNNPACK); no GPU delegate ships for this platform")
        pinned_precision_unsupported(self.name, precision)
        self._interpreter_class, self.interpreter_package, self.version = _interpreter_class()
        self.device = device
        self.path = path
        self.threads = threads
        self._preserve = {"experimental_preserve_all_tensors": True} if preserve_all_tensors else {}
        self.interpreter = self._new_interpreter()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.input_shape: list[int | None] = [int(d) for d in self.input["shape"]]
        self.metadata = read_metadata(path)
        self.precision = self.metadata.precision if self.metadata.known else _stored_precision(self.interpreter)
        self.default_precision = self.precision
        self.notes: list[str] = _delegate_notes(self.interpreter)
        self._bound = False

    def _new_interpreter(self) -> Any:
        try:
            # asked for: the "for debugging purposes only" warning says nothing new
            with native_log_without(NATIVE_NOISE), warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Warning: Enabling `experimental_preserve_all_tensors`")
                interpreter = self._interpreter_class(
                    model_path=str(self.path), num_threads=self.threads, **self._preserve
                )
                interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise load_error(self.name, self.path, exc) from exc
        return interpreter

    def _to_input(self, interpreter: Any, batch: np.ndarray) -> None:
        """Place ``batch`` in the interpreter's input, resized and quantized as its input tensor needs."""
        details = interpreter.get_input_details()[0]
        if tuple(batch.shape) != tuple(details["shape"]):
            interpreter.resize_tensor_input(details["index"], list(batch.shape))
            interpreter.allocate_tensors()
            details = interpreter.get_input_details()[0]
        dtype = details["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero_point = details["quantization"]
            limits = np.iinfo(dtype)
            batch = np.clip(np.round(batch / scale + zero_point), limits.min, limits.max).astype(dtype)
        interpreter.set_tensor(details["index"], np.ascontiguousarray(batch, dtype=dtype))

    def run(self, batch: np.ndarray) -> np.ndarray:
        self._to_input(self.interpreter, batch)
        self.interpreter.invoke()
        self.output = self.interpreter.get_output_details()[0]
        result = self.interpreter.get_tensor(self.output["index"])
        if np.issubdtype(result.dtype, np.integer):
            scale, zero_point = self.output["quantization"]
            result = (result.astype(np.float32) - zero_point) * scale
        return result

    def bind(self, batch: np.ndarray) -> Callable[[], object]:
        """The first binding uses the loaded interpreter; later ones (parallel requests) get their own."""
        interpreter = self._new_interpreter() if self._bound else self.interpreter
        self._bound = True
        self._to_input(interpreter, batch)
        return interpreter.invoke


#: what the interpreter's C++ side logs that is for no user: it says so once per process, on every load
NATIVE_NOISE = ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)


@contextlib.contextmanager
def native_log_without(noise: tuple[str, ...]) -> Iterator[None]:
    """The runtime's C++ log goes to file descriptor 2, past Python's ``sys.stderr``: catch it there and
    pass on every line but ``noise`` (errors and warnings still reach the user, after the block)."""
    if third_party_output_wanted():
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no file behind sys.stderr: nothing native to catch
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            lines = sink.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if line.strip() not in noise)
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def _stored_precision(interpreter: Any) -> str:
    """int8 when the graph holds int8 tensors: the answer for artifacts whose metadata cannot be read here."""
    return "int8" if any(np.dtype(t["dtype"]) == np.int8 for t in interpreter.get_tensor_details()) else "fp32"


@dataclass
class DelegatePlan:
    """What XNNPACK took: the graph's own ops, which of them a DELEGATE node runs, and how many such nodes."""

    ops: list[dict[str, Any]]  # the interpreter's op details of the model's own ops (DELEGATE nodes left out)
    delegated: set[int]  # indices of the ops inside a partition
    partitions: int


def delegate_plan(interpreter: Any) -> DelegatePlan | None:
    """The interpreter's execution plan as far as Python sees it (None where it cannot be read).

    The node list holds the model's ops and, after them, one DELEGATE node per partition, whose inputs and
    outputs are the partition's boundary tensors: walking back from a partition's outputs through the ops
    that produce them, up to its inputs, finds the ops it replaced. The others run on the built-in kernels.
    """
    try:
        details = interpreter._get_ops_details()  # the interpreters' only view of the execution plan
    except AttributeError:
        return None
    ops = [op for op in details if op["op_name"] != "DELEGATE"]
    producer = {int(tensor): op["index"] for op in ops for tensor in op["outputs"]}
    by_index = {op["index"]: op for op in ops}
    delegated: set[int] = set()
    partitions = [op for op in details if op["op_name"] == "DELEGATE"]
    for partition in partitions:
        boundary = {int(tensor) for tensor in partition["inputs"]}
        pending = [int(tensor) for tensor in partition["outputs"]]
        while pending:
            index = producer.get(pending.pop())
            if index is None or index in delegated:
                continue
            delegated.add(index)
            pending += [int(t) for t in by_index[index]["inputs"] if int(t) >= 0 and int(t) not in boundary]
    return DelegatePlan(ops, delegated, len(partitions))


def _delegate_notes(interpreter: Any) -> list[str]:
    """Whether XNNPACK took the graph in one piece: each DELEGATE node is one partition it runs."""
    plan = delegate_plan(interpreter)
    if plan is None:
        return []
    partitions = plan.partitions
    if partitions == 0:
        return ["XNNPACK took no part of the graph: every op runs on the reference kernels"]
    if partitions > 1:
        return [f"XNNPACK split the graph into {partitions} partitions; ops between them run on reference kernels"]
    return []

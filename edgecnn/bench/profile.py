"""Per-op profiles from each runtime's own profiler: where an artifact's time goes (``edgecnn bench --profile``).

Each profile runs after the timed calls, on its own session, compiled model or interpreter, so profiling
never slows what latency measured. onnxruntime writes its profiling JSON (one "Node" event per kernel
call); OpenVINO reports per-layer performance counters with the precision each layer executed in
(``exec_type``); LiteRT's Python interpreter has no op profiler, so its profile lists the ops and whether
XNNPACK took them, without times.

Standard library, numpy and the runtimes only: this module runs on the device for remote benchmarks.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.runtime.base import Runner, import_runtime

#: inferences a profile averages over, after one untimed call
PROFILE_RUNS = 20
#: the ops that convert between float and int8: ONNX's Q/DQ, TFLite's, and OpenVINO's where not fused away
QDQ_TYPES = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QUANTIZE", "DEQUANTIZE", "FakeQuantize", "Convert"}
)
FLOAT_PRECISIONS = ("fp32", "fp16", "bf16")
#: ops kept in float in an int8 graph because quantizers leave them so: smooth activations (SiLU exported as
#: Sigmoid·Mul, hard-swish) and the multiplications of squeeze-excitation blocks
FLOAT_ACTIVATIONS = frozenset(
    {
        *("Sigmoid", "HardSigmoid", "HardSwish", "Swish", "SiLU", "Mish", "Gelu", "Tanh", "Softplus", "Elu", "Mul"),
        *("LOGISTIC", "HARD_SWISH", "TANH", "GELU", "MUL"),  # TFLite
        *("HSwish", "HSigmoid", "Multiply"),  # OpenVINO
    }
)
TOP_OPS = 5


@dataclass
class OpRecord:
    """One op of the executed graph. ``ms``: mean time per inference, None where the runtime times no op;
    ``precision``: what it computed in (int8, fp32, fp16, bf16), None where unknown; ``accelerated``: whether
    it ran in the runtime's accelerated path (XNNPACK, a GPU provider), None where there is only one path."""

    name: str
    op_type: str
    ms: float | None
    precision: str | None = None
    accelerated: bool | None = None


@dataclass
class ProfileSummary:
    """What a diagnosis reads from a profile. Shares are of the profiled time, None for an untimed profile."""

    timed: bool
    total_ms: float | None
    qdq_share: float | None  # in conversions between float and int8
    qdq_ops: int
    float_share: float | None  # in other ops that computed in float
    float_types: list[str]  # those ops' types, most time (or, untimed, most ops) first
    outside_types: list[str]  # types of the ops left out of the accelerated path (LiteRT: XNNPACK)
    outside_ops: int
    partitions: int | None  # LiteRT: XNNPACK partitions
    top_ops: list[dict[str, Any]]  # the slowest ops: name, op_type, ms, share

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProfileSummary:
        return cls(**data)


def _by_weight(weights: dict[str, float]) -> list[str]:
    return sorted(weights, key=lambda key: -weights[key])


def summarize(ops: list[OpRecord], partitions: int | None = None) -> ProfileSummary:
    """Total time, the shares a diagnosis checks, and the top ops."""
    timed = bool(ops) and all(op.ms is not None for op in ops)
    total = sum(op.ms or 0.0 for op in ops) if timed else None
    float_ops = [op for op in ops if op.precision in FLOAT_PRECISIONS and op.op_type not in QDQ_TYPES]
    qdq = [op for op in ops if op.op_type in QDQ_TYPES]
    weights: dict[str, float] = {}
    for op in float_ops:
        weights[op.op_type] = weights.get(op.op_type, 0.0) + (op.ms if timed and op.ms is not None else 1.0)
    outside = [op for op in ops if op.accelerated is False]

    def share(selected: list[OpRecord]) -> float | None:
        return sum(op.ms or 0.0 for op in selected) / total if total else None

    top = sorted(ops, key=lambda op: -(op.ms or 0.0))[:TOP_OPS] if timed else []
    return ProfileSummary(
        timed=timed,
        total_ms=total,
        qdq_share=share(qdq),
        qdq_ops=len(qdq),
        float_share=share(float_ops),
        float_types=_by_weight(weights),
        outside_types=list(dict.fromkeys(op.op_type for op in outside)),
        outside_ops=len(outside),
        partitions=partitions,
        top_ops=[{"name": op.name, "op_type": op.op_type, "ms": op.ms, "share": share([op])} for op in top if op.ms],
    )


@dataclass
class Profile:
    runtime: str
    source: str  # which profiler, and what it cannot see
    runs: int
    ops: list[OpRecord]
    partitions: int | None = None
    summary: ProfileSummary = field(init=False)

    def __post_init__(self) -> None:
        self.summary = summarize(self.ops, self.partitions)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: type names (onnxruntime's input types, numpy's dtypes) and the precision each is
TYPE_PRECISIONS = {
    **{"float": "fp32", "float32": "fp32", "float16": "fp16", "bfloat16": "bf16"},
    **{"int8": "int8", "uint8": "int8"},
}


def _precision(name: str) -> str | None:
    """edgecnn's precision for a type name (``float``, ``uint8``) or a kernel's (OpenVINO: ``jit_avx512_I8``)."""
    name = name.lower()
    if name in TYPE_PRECISIONS:
        return TYPE_PRECISIONS[name]
    for found, precision in (("i8", "int8"), ("u8", "int8"), ("bf16", "bf16"), ("f16", "fp16"), ("f32", "fp32")):
        if found in name:
            return precision
    return None


def _onnxruntime(runner: Any, path: Path, batch: np.ndarray, runs: int, threads: int | None) -> Profile:
    """A second session with profiling on; the first call's events are left out, as timing leaves its warm-up."""
    ort = import_runtime("onnxruntime", "onnxruntime")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="edgecnn-profile-") as scratch:
        options.profile_file_prefix = str(Path(scratch) / "onnxruntime")
        session = ort.InferenceSession(str(path), options, providers=runner.providers)
        feed = {session.get_inputs()[0].name: np.ascontiguousarray(batch)}
        for _ in range(runs + 1):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    first = min((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    after_first = first["ts"] + first["dur"]
    ops: dict[str, OpRecord] = {}
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time") or event["ts"] < after_first:
            continue
        args = event["args"]
        name = event["name"][: -len("_kernel_time")]
        inputs = args.get("input_type_shape") or [{}]
        provider = args.get("provider", "CPUExecutionProvider")
        record = ops.setdefault(
            name,
            OpRecord(
                name,
                args.get("op_name", "?"),
                0.0,
                _precision(next(iter(inputs[0]), "")),
                provider != "CPUExecutionProvider" if runner.device == "gpu" else None,
            ),
        )
        record.ms = (record.ms or 0.0) + event["dur"] / 1e3 / runs
    return Profile(runner.name, "onnxruntime's profiler (SessionOptions.enable_profiling)", runs, list(ops.values()))


def _openvino(runner: Any, path: Path, batch: np.ndarray, runs: int, threads: int | None) -> Profile:
    """The artifact compiled again with PERF_COUNT; each call's counters (they hold the last call) are summed."""
    ov = import_runtime("openvino", "openvino")
    compiled = ov.Core().compile_model(str(path), runner.device.upper(), {**runner.config, "PERF_COUNT": True})
    request = compiled.create_infer_request()
    request.set_input_tensor(ov.Tensor(np.ascontiguousarray(batch)))
    request.infer()
    ops: dict[str, OpRecord] = {}
    for _ in range(runs):
        request.infer()
        for info in request.profiling_info:
            if info.status.name != "EXECUTED":  # fused into another node, or not run
                continue
            record = ops.setdefault(
                info.node_name, OpRecord(info.node_name, info.node_type, 0.0, _precision(info.exec_type))
            )
            record.ms = (record.ms or 0.0) + info.real_time.total_seconds() * 1e3 / runs
    return Profile(runner.name, "OpenVINO's per-layer performance counters (PERF_COUNT)", runs, list(ops.values()))


def _litert(runner: Any, path: Path, batch: np.ndarray, runs: int, threads: int | None) -> Profile:
    """The runner's own interpreter's plan: no call is made, there is nothing to time per op."""
    from edgecnn.runtime.litert import delegate_plan

    plan = delegate_plan(runner.interpreter)
    if plan is None:
        return Profile(runner.name, f"{runner.interpreter_package} shows no execution plan", 0, [])
    ops = [
        OpRecord(
            f"{op['op_name']} #{op['index']}",
            op["op_name"],
            None,
            _precision(np.dtype(op["result_types"][0]).name) if op.get("result_types") else None,
            op["index"] in plan.delegated,
        )
        for op in plan.ops
    ]
    source = f"{runner.interpreter_package}'s plan: ops and XNNPACK partitions (its Python API has no op profiler)"
    return Profile(runner.name, source, 0, ops, plan.partitions)


PROFILERS: dict[str, Callable[[Any, Path, np.ndarray, int, int | None], Profile]] = {
    "onnxruntime": _onnxruntime,
    "openvino": _openvino,
    "litert": _litert,
}
#: runtimes whose profile makes no inference call (it reads the execution plan): taken with every benchmark,
#: so that the diagnosis of an int8 artifact sees XNNPACK's partitions without --profile
FREE_PROFILES = frozenset({"litert"})


def profile_artifact(
    runner: Runner, path: Path, batch: np.ndarray, threads: int | None, runs: int = PROFILE_RUNS
) -> Profile:
    """``runner``'s artifact (at ``path``) profiled on ``batch``; runtimes without a profiler say so."""
    profiler = PROFILERS.get(runner.name)
    if profiler is None:
        return Profile(runner.name, f"no per-op profiler for {runner.name}", 0, [])
    return profiler(runner, path, batch, runs, threads)

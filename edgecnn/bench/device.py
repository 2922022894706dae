"""One benchmark job on the machine that runs the artifacts: local, or a remote device over SSH.

A job is JSON in, JSON out. Standard library, numpy and the runtimes only, so that the same code
measures on this machine and, packed into one runnable file, on a Raspberry Pi:
``python3 edgecnn-runner.pyz job.json`` prints the result.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.bench.measure import (
    device_state,
    environment,
    latency_stats,
    parallel_throughput,
    peak_resident_mb,
    resident_mb,
    time_interleaved,
    warm_up,
)
from edgecnn.bench.profile import FREE_PROFILES, profile_artifact
from edgecnn.errors import EdgeCNNError
from edgecnn.runtime.base import Runner, artifact_size, one_line_error, open_runner, run_in_batches
from edgecnn.runtime.metadata import ArtifactMetadata
from edgecnn.runtime.targets import target_mismatch

SCHEMA_VERSION = 1
MODES = ("latency", "throughput")


@dataclass
class ArtifactJob:
    path: str
    runtime: str = "auto"
    inputs: str | None = None  # .npy of preprocessed float images, for accuracy
    labels: str | None = None  # .npy of their class indices
    metadata: dict[str, Any] | None = None  # read on the host, for runtimes that cannot read it on the device


@dataclass
class Job:
    artifacts: list[ArtifactJob]
    device: str = "cpu"
    threads: int | None = None
    precision: str | None = None
    batch: int = 1
    warmup: int = 10
    max_warmup: float = 10.0  # seconds of warm-up windows past ``warmup`` until the latency settles
    cooldown: float = 0.0  # seconds idle between loading and warming up, for a board to cool down
    runs: int | None = 100
    min_time: float | None = None
    mode: str = "latency"
    workers: int | None = None  # parallel requests in throughput mode (default: one per core)
    throughput_seconds: float = 3.0
    keep_samples: bool = True
    profile: bool = False  # a per-op profile of each artifact, after the timed calls, on its own session

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise EdgeCNNError(f"unknown mode {self.mode!r}; valid: {', '.join(MODES)}")
        if self.batch < 1 or min(self.warmup, self.max_warmup, self.cooldown) < 0:
            raise EdgeCNNError("batch must be ≥ 1 and warmup, max_warmup and cooldown ≥ 0")
        if (self.runs is None) == (self.min_time is None):
            raise EdgeCNNError("give either a number of runs or a minimum time, not both")
        if self.runs is not None and self.runs < 1:
            raise EdgeCNNError(f"runs must be at least 1, got {self.runs}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        artifacts = [ArtifactJob(**item) for item in data["artifacts"]]
        return cls(**{**data, "artifacts": artifacts})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def input_shape(metadata: ArtifactMetadata, runner: Runner, path: str) -> list[int]:
    """One image's shape: from edgecnn's metadata, else as the runtime declares the input."""
    shape = metadata.input.shape if metadata.input else ()
    if shape:
        return [int(size) for size in shape[1:]]
    declared = runner.input_shape[1:]
    if declared and all(isinstance(size, int) for size in declared):
        return [int(size) for size in declared if size is not None]
    raise EdgeCNNError(f"{Path(path).name} has no edgecnn metadata and a dynamic input shape {runner.input_shape}")


def accuracy(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    top5 = np.argsort(-logits, axis=1)[:, :5]
    return {
        "images": len(labels),
        "top1": float((top5[:, 0] == labels).mean() * 100),
        "top5": float((top5 == labels[:, None]).any(1).mean() * 100),
    }


@dataclass
class _Loaded:
    """One artifact ready to time: its runner, the bound call and what loading it cost."""

    item: ArtifactJob
    runner: Runner
    metadata: ArtifactMetadata
    batch: np.ndarray
    call: Any
    load_seconds: float
    first_inference_ms: float
    rss_growth_mb: float


def _call_checked(runner: Runner, path: str, call: Any) -> None:
    try:
        call()
    except Exception as exc:  # each runtime raises its own types for a shape it cannot take
        raise one_line_error(f"{runner.name} failed to run {Path(path).name}", exc) from exc


def run_job(job: Job, base: Path = Path(".")) -> dict[str, Any]:
    """Load every artifact, idle ``cooldown`` s, warm up, time them interleaved, then measure throughput and
    accuracy. The device's state is read before the warm-up and after the timed calls."""
    rng = np.random.default_rng(0)
    loaded: list[_Loaded] = []
    for item in job.artifacts:
        path = base / item.path
        before = resident_mb()
        started = time.perf_counter()
        runner = open_runner(path, job.threads, item.runtime, job.device, job.precision)
        load_seconds = time.perf_counter() - started
        metadata = runner.metadata if runner.metadata.known else ArtifactMetadata.from_dict(item.metadata)
        batch = rng.standard_normal((job.batch, *input_shape(metadata, runner, item.path)), dtype=np.float32)
        call = runner.bind(batch)
        started = time.perf_counter()
        _call_checked(runner, item.path, call)
        first_ms = (time.perf_counter() - started) * 1e3
        loaded.append(_Loaded(item, runner, metadata, batch, call, load_seconds, first_ms, resident_mb() - before))
    calls = [entry.call for entry in loaded]
    time.sleep(job.cooldown)
    state_before = device_state()
    warmup = warm_up(calls, job.warmup, job.max_warmup)
    samples = time_interleaved(calls, job.runs, job.min_time)
    state_after = device_state()
    results = [_result(job, entry, times, base) for entry, times in zip(loaded, samples, strict=True)]
    conditions = {
        "cooldown_s": job.cooldown,
        "warmup": asdict(warmup),
        "state_before": state_before.to_dict(),
        "state_after": state_after.to_dict(),
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "environment": {**environment(job.threads, state_after), **conditions},
        "results": results,
        "process_peak_rss_mb": peak_resident_mb(),
    }


def _result(job: Job, entry: _Loaded, times: list[float], base: Path) -> dict[str, Any]:
    runner, item, metadata = entry.runner, entry.item, entry.metadata
    stats = latency_stats(times)
    result: dict[str, Any] = {
        "artifact": Path(item.path).name,
        "model": metadata.model,
        "artifact_precision": metadata.precision if metadata.known else runner.precision,
        "runtime": runner.name,
        "runtime_version": runner.version,
        "interpreter": getattr(runner, "interpreter_package", None),
        "device": runner.device,
        "effective_precision": runner.precision,
        "notes": [*runner.notes, *filter(None, [target_mismatch(metadata, runner.name)])],
        "batch": job.batch,
        "size_bytes": artifact_size(base / item.path),
        "load_seconds": entry.load_seconds,
        "first_inference_ms": entry.first_inference_ms,
        "rss_growth_mb": entry.rss_growth_mb,
        "latency": stats.to_dict(),
        "throughput_ips": job.batch * 1e3 / stats.mean_ms,
        "samples_ms": [t * 1e3 for t in times] if job.keep_samples else None,
    }
    if job.mode == "throughput":
        workers = job.workers or os.cpu_count() or 1
        calls = [entry.call] + [runner.bind(entry.batch) for _ in range(workers - 1)]
        completed, elapsed = parallel_throughput(calls, job.throughput_seconds)
        result["parallel"] = {"workers": workers, "throughput_ips": completed * job.batch / elapsed}
    if item.inputs and item.labels:
        images = np.load(base / item.inputs)
        labels = np.load(base / item.labels)
        result["accuracy"] = accuracy(run_in_batches(runner, images, job.batch), labels)
    if job.profile or runner.name in FREE_PROFILES:
        result["profile"] = profile_artifact(runner, base / item.path, entry.batch, job.threads).to_dict()
    return result


@dataclass
class OutputsJob:
    """Run each artifact on its inputs and keep its outputs: a correctness check, nothing timed. What
    ``edgecnn verify`` runs under emulation, where loading can fail per artifact (an op the interpreter
    lacks) and that is the answer, not an error of the whole job."""

    artifacts: list[ArtifactJob]  # each with ``inputs``; its outputs go to outputs_<index>.npy
    precision: str | None = None  # pinned where the runtime chooses its own (OpenVINO: f32)
    kind: str = "outputs"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OutputsJob:
        return cls([ArtifactJob(**item) for item in data["artifacts"]], data.get("precision"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_outputs(job: OutputsJob, base: Path = Path(".")) -> dict[str, Any]:
    results = []
    for index, item in enumerate(job.artifacts):
        result: dict[str, Any] = {"artifact": Path(item.path).name, "loaded": False, "error": None}
        try:
            runner = open_runner(base / item.path, 1, item.runtime, precision=job.precision)
            result.update(
                loaded=True,
                runtime=runner.name,
                runtime_version=runner.version,
                interpreter=getattr(runner, "interpreter_package", None),
                precision=runner.precision,
            )
            images = np.load(base / str(item.inputs))
            batch = runner.metadata.fixed_batch or 1
            outputs = f"outputs_{index}.npy"
            np.save(base / outputs, run_in_batches(runner, images, batch))
            result["outputs"] = outputs
        except Exception as exc:  # the answer for this artifact: the runtime's own words, in one line
            lines = str(exc).strip().splitlines()
            result["error"] = lines[0] if lines else type(exc).__name__
        results.append(result)
    return {"schema_version": SCHEMA_VERSION, "environment": environment(1), "results": results}


def main(argv: list[str] | None = None) -> int:
    """``python3 runner.pyz job.json``: print the result as JSON, or ``{"error": …}`` with exit code 1."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(json.dumps({"error": "usage: runner job.json"}))
        return 2
    job_path = Path(args[0])
    try:
        data = json.loads(job_path.read_text())
        if data.get("kind") == "outputs":
            print(json.dumps(run_outputs(OutputsJob.from_dict(data), job_path.parent)))
        else:
            print(json.dumps(run_job(Job.from_dict(data), job_path.parent)))
    except EdgeCNNError as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``edgecnn bench`` and ``edgecnn eval`` on the host: prepare data, run jobs here or over SSH, collect.

Accuracy images are preprocessed here, from each artifact's own metadata, and shipped as arrays, so a
device needs no image library. When the data is the set a checkpoint was trained on, only its held-out
split is used (the split travels in the artifact's metadata).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn import __version__
from edgecnn._threads import torch_threads
from edgecnn.bench.device import ArtifactJob, Job, accuracy, run_job
from edgecnn.bench.diagnosis import diagnose_host
from edgecnn.bench.measure import (
    BLOCKS,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CONFIDENCE,
    STABLE_WITHIN,
    WARMUP_WINDOW,
    WARMUP_WINDOW_S,
)
from edgecnn.bench.remote import Host, read_fleet, run_remote
from edgecnn.data.datasets import open_source, preprocess_images
from edgecnn.data.preprocessing import Preprocessing
from edgecnn.errors import EdgeCNNError
from edgecnn.runtime.base import (
    Runner,
    artifact_files,
    one_line_error,
    open_runner,
    run_in_batches,
    runtime_for,
    sidecar_path,
)
from edgecnn.runtime.metadata import ArtifactMetadata

SCHEMA_VERSION = 1
LOCAL = "local"


@dataclass
class BenchConfig:
    artifacts: list[Path]
    runtime: str = "auto"
    device: str = "cpu"
    threads: int | None = None
    precision: str | None = None
    batch: int = 1
    warmup: int = 10
    max_warmup: float = 10.0
    cooldown: float = 0.0
    runs: int | None = None  # neither runs nor min_time: 100 runs
    min_time: float | None = None
    mode: str = "latency"
    profile: bool = False
    data: str | None = None
    remote: str | None = None
    remote_python: str = "python3"
    fleet: Path | None = None
    ssh_config: Path | None = None
    timeout: float = 600.0

    def __post_init__(self) -> None:
        self.artifacts = [Path(a) for a in self.artifacts]
        if not self.artifacts:
            raise EdgeCNNError("no artifact given")
        if self.remote and self.fleet:
            raise EdgeCNNError("give --remote or --fleet, not both")
        if self.runs is None and self.min_time is None:
            self.runs = 100
        if self.remote or self.fleet:
            checkpoints = [str(a) for a in self.artifacts if runtime_for(a, self.runtime).name == "pytorch"]
            if checkpoints:
                raise EdgeCNNError(
                    f"PyTorch checkpoints run on this machine only ({', '.join(checkpoints)}); "
                    "export them (`edgecnn export`) to benchmark on a device"
                )
        for path in self.artifacts:
            runtime_for(path, self.runtime)
            missing = [str(f) for f in artifact_files(path) if not f.is_file()]
            if missing:
                raise EdgeCNNError(f"artifact not found: {', '.join(missing)}")

    @functools.cached_property
    def hosts(self) -> list[Host]:
        """Where to measure: [] for this machine; the fleet file is read once."""
        if self.fleet:
            return read_fleet(self.fleet, self.remote_python)
        return [Host(self.remote, self.remote_python)] if self.remote else []


@dataclass
class HostResult:
    host: str
    environment: dict[str, Any] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)
    process_peak_rss_mb: float | None = None
    error: str | None = None


@dataclass
class BenchReport:
    method: dict[str, Any]
    hosts: list[HostResult]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "edgecnn_version": __version__,
            "method": self.method,
            "hosts": [vars(host) for host in self.hosts],
        }


def artifact_metadata(path: Path, runtime: str = "auto") -> ArtifactMetadata:
    """The metadata an artifact carries, read with its runtime here, else from the sidecar JSON export wrote."""
    try:
        metadata = open_runner(path, runtime=runtime).metadata
    except EdgeCNNError:
        sidecar = sidecar_path(path)
        if path.suffix in (".pt", ".pth") or not sidecar.is_file():
            raise
        try:
            stored = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise EdgeCNNError(f"cannot read {sidecar}: {exc}") from None
        metadata = ArtifactMetadata.from_dict(stored)
    return metadata


def images_key(metadata: ArtifactMetadata) -> str:
    """What ``eval_images`` prepares depends on: artifacts with equal keys get the same images."""
    return json.dumps([metadata.preprocessing, metadata.classes, metadata.held_out], default=vars, sort_keys=True)


@dataclass
class EvalImages:
    images: np.ndarray
    labels: np.ndarray | None  # None where ``eval_images`` was told labels are optional and there are none
    description: str
    indices: list[int]  # which images of the source, so two evaluations can be matched image by image
    fingerprint: str  # of the source's contents


def eval_images(data: str, metadata: ArtifactMetadata, labels_required: bool = True) -> EvalImages:
    """``data`` preprocessed for the artifact; only the held-out split when it is the training data.

    Without ``labels_required``, a folder without class folders (or with other classes) gives images
    without labels: enough to compare artifacts with each other, not to score them."""
    if metadata.preprocessing is None:
        raise EdgeCNNError("the artifact carries no edgecnn metadata: its preprocessing and classes are unknown")
    source = open_source(data)
    classes = list(metadata.classes)
    if labels_required and not source.labelled:
        raise EdgeCNNError(f"{source.name} has no class folders: accuracy needs ROOT/CLASS/IMAGE.jpg")
    if labels_required and classes != source.classes:
        raise EdgeCNNError(
            f"the artifact's {len(classes)} classes are not the {len(source.classes)} classes of {source.name}"
        )
    labelled = source.labelled and classes == source.classes
    held_out = metadata.held_out
    fingerprint = source.fingerprint()
    if held_out and held_out.fingerprint == fingerprint:
        indices = list(held_out.test_indices)
        description = f"{source.name}: the {len(indices)} held-out test images of the training split"
    elif source.official_test is not None:
        indices = list(source.official_test)
        description = f"{source.name}: its {len(indices)} published test images"
    else:
        indices = list(range(len(source.labels)))
        description = f"{source.name}: all {len(indices)} images"
    preprocessing = Preprocessing.from_dict(metadata.preprocessing)
    source.check_min_size(preprocessing.crop)
    images = preprocess_images(source, indices, preprocessing)
    labels = np.array([source.labels[i] for i in indices]) if labelled else None
    return EvalImages(images, labels, description, indices, fingerprint)


@dataclass
class Predictions:
    """One artifact's logits on ``data``, computed in its own runtime."""

    runner: Runner
    images: EvalImages
    logits: np.ndarray


def predict(
    path: Path, data: str, runtime: str = "auto", device: str = "cpu", labels_required: bool = True
) -> Predictions:
    runner = open_runner(path, runtime=runtime, device=device)
    prepared = eval_images(data, runner.metadata, labels_required)
    batch = runner.metadata.fixed_batch or 32
    try:
        logits = run_in_batches(runner, prepared.images, batch)
    except Exception as exc:  # each runtime raises its own types for an artifact it cannot run
        raise one_line_error(f"{runner.name} failed to run {path}", exc) from exc
    return Predictions(runner, prepared, logits)


def evaluate(artifacts: list[Path], data: str, runtime: str = "auto", device: str = "cpu") -> list[dict[str, Any]]:
    """Top-1/top-5 of each artifact in its own runtime."""
    results = []
    for path in artifacts:
        predicted = predict(path, data, runtime, device)
        scores = accuracy(predicted.logits, predicted.images.labels)
        description = predicted.images.description
        results.append({"artifact": str(path), "runtime": predicted.runner.name, "data": description, **scores})
    return results


def bench(config: BenchConfig) -> BenchReport:
    """Measure every artifact (interleaved) here, on one remote host, or on a fleet in parallel."""
    with tempfile.TemporaryDirectory(prefix="edgecnn-bench-") as scratch:
        files, items = _stage(config, Path(scratch))
        job = Job(
            items,
            device=config.device,
            threads=config.threads,
            precision=config.precision,
            batch=config.batch,
            warmup=config.warmup,
            max_warmup=config.max_warmup,
            cooldown=config.cooldown,
            runs=config.runs,
            min_time=config.min_time,
            mode=config.mode,
            profile=config.profile,
        )
        hosts = config.hosts
        if not hosts:  # here the artifacts are read where they are; only a device needs the staged names
            local = [dataclasses.replace(item, path=str(files[item.path].resolve())) for item in items]
            with torch_threads():
                outcome = run_job(dataclasses.replace(job, artifacts=local), Path(scratch))
            results = [_host_result(LOCAL, outcome, config.artifacts)]
        else:
            with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
                futures = [pool.submit(_on_host, host, job.to_dict(), files, config) for host in hosts]
                results = [future.result() for future in futures]
    if len(results) == 1 and results[0].error:
        raise EdgeCNNError(results[0].error)
    return BenchReport(_method(config), results)


def _on_host(host: Host, job: dict[str, Any], files: dict[str, Path], config: BenchConfig) -> HostResult:
    try:
        outcome = run_remote(host, job, files, config.ssh_config, config.timeout)
    except EdgeCNNError as exc:  # one unreachable board must not cost the fleet's other results
        message = str(exc)
        for staged, path in files.items():  # say "model.onnx", not the device's "artifact_0.onnx"
            message = message.replace(staged, path.name)
        return HostResult(host.destination, error=message)
    return _host_result(host.destination, outcome, config.artifacts)


def _host_result(host: str, outcome: dict[str, Any], artifacts: list[Path]) -> HostResult:
    """A job's outcome under the user's artifact paths (the job itself only knew artifact_0, artifact_1, …), with
    a diagnosis on each int8 result that is not faster than its fp32 sibling."""
    for result, path in zip(outcome["results"], artifacts, strict=True):
        result["artifact"] = str(path)
    diagnose_host(outcome["results"], outcome["environment"])
    return HostResult(host, outcome["environment"], outcome["results"], outcome["process_peak_rss_mb"])


def _stage(config: BenchConfig, scratch: Path) -> tuple[dict[str, Path], list[ArtifactJob]]:
    """Name every file the job needs (artifact_0.onnx, inputs_0.npy, …) and write the accuracy arrays."""
    files: dict[str, Path] = {}
    items = []
    prepared: dict[str, tuple[str, str]] = {}
    remote = bool(config.hosts)
    for index, path in enumerate(config.artifacts):
        name = f"artifact_{index}{path.suffix}"
        for part in artifact_files(path):
            files[f"artifact_{index}{part.suffix}"] = part
        metadata = artifact_metadata(path, config.runtime) if (config.data or remote) else None
        inputs = labels = None
        if config.data and metadata is not None:
            key = images_key(metadata)
            if key not in prepared:
                data = eval_images(config.data, metadata)
                number = len(prepared)
                prepared[key] = (f"inputs_{number}.npy", f"labels_{number}.npy")
                np.save(scratch / prepared[key][0], data.images)
                np.save(scratch / prepared[key][1], data.labels)
                files.update({name: scratch / name for name in prepared[key]})
            inputs, labels = prepared[key]
        items.append(ArtifactJob(name, config.runtime, inputs, labels, metadata and metadata.to_dict()))
    return files, items


def _method(config: BenchConfig) -> dict[str, Any]:
    return {
        "artifacts": [str(a) for a in config.artifacts],
        "order": "interleaved: one call of each artifact per round (A B C A B C …)",
        "timer": "time.perf_counter around the runtime's own inference call on a prepared input",
        "device": config.device,
        "threads": config.threads,
        "precision": config.precision or "runtime default",
        "batch": config.batch,
        "warmup": config.warmup,
        "max_warmup_s": config.max_warmup,
        "warmup_until": (
            f"each artifact's median over a window (≥ {WARMUP_WINDOW} rounds, ≥ {WARMUP_WINDOW_S:g} s) "
            f"is within {STABLE_WITHIN:.0%} of the last"
        ),
        "cooldown_s": config.cooldown,
        "intervals": f"{CONFIDENCE:.0%} percentile bootstrap, {BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}",
        "run_to_run": f"CV of the medians of {BLOCKS} consecutive blocks of the timed calls",
        "runs": config.runs,
        "min_time_s": config.min_time,
        "mode": config.mode,
        "profile": config.profile,
        "data": config.data,
    }

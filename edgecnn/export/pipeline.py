"""``edgecnn export``: fold BatchNorm, export, quantize, then verify each artifact in its own runtime.

One calibration set, drawn once (class-balanced, from the training split), feeds every quantizer; the
verification images are the held-out test split, never seen by training or calibration.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from edgecnn import __version__
from edgecnn._io import write_json
from edgecnn._threads import torch_threads
from edgecnn.bench.benchmark import BenchConfig, bench
from edgecnn.data.datasets import (
    DataError,
    ImageSource,
    Split,
    balanced_sample,
    make_split,
    open_source,
    preprocess_images,
    split_for,
)
from edgecnn.errors import EdgeCNNError
from edgecnn.export._formats import FORMATS, Exporter, Format, Int8Job, resolve_formats
from edgecnn.export._worker import Worker
from edgecnn.models._registry import ModelMeta, get_model_meta
from edgecnn.models.checkpoint import held_out_images, resolve_model
from edgecnn.models.complexity import check_input_size
from edgecnn.optimize import fold_batchnorm
from edgecnn.optimize.int8_correction import CORRECTIONS, CorrectedModel, correct_for_int8, without_bias_correction
from edgecnn.optimize.sensitivity import GROUPINGS, layer_sensitivity, quantizable_layers
from edgecnn.optimize.sensitivity import write as write_sensitivity
from edgecnn.runtime import open_runner
from edgecnn.runtime.base import artifact_files, artifact_size, one_line_error, run_in_batches, sidecar_path
from edgecnn.runtime.metadata import ArtifactMetadata, Calibration, HeldOut, InputSpec, Quantization
from edgecnn.runtime.targets import AUTO, Target, resolve_target

SCHEMA_VERSION = 1
CALIBRATION_METHODS = ("auto", "minmax", "entropy", "percentile")
#: where ImageNet weights calibrate without --calib: the smallest Imagenette whose photos cover a 224 crop
IMAGENET_CALIBRATION = "imagenette-320"
# small chunks: at 224, 269 MobileNetV2 images took 11 s in chunks of 32 (activations spill the caches),
# 4-5 s in chunks of 1-4, and one batch of 269 would hold gigabytes
REFERENCE_BATCH = 4
#: timed calls of each artifact when --max-drop measures what its float layers cost
FLOAT_LATENCY_RUNS = 200
# What each precision is held to. Targets: fp32 within 1e-4 of the logit range; fp16 within 1e-2; int8
# 99% top-1 agreement and at most 0.5 points of accuracy lost. Broken, from measured artifacts: good int8
# of a real ImageNet-trained EfficientNet-Lite1 keeps a mean cosine of 0.98 with the fp32 logits
# (benchmarks/real_int8.py; the digits models 0.998+), broken ones had 0.61-0.83 and agreed 20-50 points
# less than the other formats' int8 on the same images.
TARGET_DIFF_OVER_RANGE = {"fp32": 1e-4, "fp16": 1e-2}
BROKEN_COSINE = {"fp32": 0.999, "fp16": 0.99, "int8": 0.95}
INT8_TARGET_AGREEMENT = 99.0
INT8_TARGET_DROP = 0.5
BROKEN_AGREEMENT_GAP = 15.0  # points below the best other int8 artifact of the same export
STATUS_RULE = (
    "degraded: misses its target (fp32: max |Δlogit| ≤ 1e-4 of the logit range; fp16: ≤ 1e-2; int8: top-1 "
    "agreement ≥ 99% and accuracy drop ≤ 0.5 point); broken: mean cosine with PyTorch fp32 below 0.999 (fp32), "
    "0.99 (fp16) or 0.95 (int8), or int8 agreement 15+ points below another format's int8"
)
_USAGE = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
console = Console(stderr=True)


@dataclass
class ExportConfig:
    model: str
    formats: str = "all"
    int8: bool = False
    fp16: bool = False
    calib: str | None = None
    calib_size: int = 128
    calib_method: str = "auto"
    weights: str | None = None
    input_size: int | None = None
    batch: str = "1"
    output: Path = Path("runs/export")
    keep_degraded: bool = False
    target: str = AUTO  # the CPU the artifacts are for; auto: the machine that exports
    sensitivity: str | None = None  # rank the layers (or blocks, kinds) by their int8 error, before converting
    float_layers: list[str] = field(default_factory=list)  # PyTorch module names kept float in every format
    max_drop: float | None = None  # int8 within this many points (or of disagreement): fewest layers kept float
    min_agreement: float | None = None  # and int8 top-1 agreeing with fp32 on at least this fraction, likewise
    int8_correction: str = "auto"  # cross-layer equalization and/or bias correction before quantizing
    per_tensor: bool = False  # one weight scale per tensor instead of per output channel

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        self.float_layers = list(self.float_layers)
        if self.int8_correction not in CORRECTIONS:
            raise EdgeCNNError(f"unknown int8 correction {self.int8_correction!r}; valid: {', '.join(CORRECTIONS)}")
        if self.per_tensor and not self.int8:
            raise EdgeCNNError("--per-tensor chooses how int8 weights are scaled: it needs --int8")
        if self.float_layers and not self.int8:
            raise EdgeCNNError("--float-layers says which layers int8 leaves float: it needs --int8")
        if self.max_drop is not None and (not self.int8 or self.max_drop < 0):
            raise EdgeCNNError("--max-drop bounds the int8 artifacts' loss: it needs --int8 and a value ≥ 0")
        if self.min_agreement is not None and (not self.int8 or not 0 <= self.min_agreement <= 1):
            raise EdgeCNNError(
                "--min-agreement bounds the int8 artifacts' top-1 agreement with fp32: it needs --int8 and a "
                f"fraction in [0, 1], got {self.min_agreement}"
            )
        if self.sensitivity is not None:
            if self.sensitivity not in GROUPINGS:
                raise EdgeCNNError(f"unknown sensitivity grouping {self.sensitivity!r}; valid: {', '.join(GROUPINGS)}")
            if not self.int8:
                raise EdgeCNNError("--sensitivity simulates int8 on the calibration images: it needs --int8")
        resolve_target(self.target)  # an unknown name fails before any work
        if self.calib_method not in CALIBRATION_METHODS:
            raise EdgeCNNError(
                f"unknown calibration method {self.calib_method!r}; valid: {', '.join(CALIBRATION_METHODS)}"
            )
        if self.calib_size < 1:
            raise EdgeCNNError(f"calibration size must be at least 1, got {self.calib_size}")
        if self.batch != "dynamic" and not (self.batch.isdigit() and int(self.batch) >= 1):
            raise EdgeCNNError(f"batch must be a positive number or 'dynamic', got {self.batch!r}")

    def accuracy_budget(self) -> str:
        """What int8 must hold, as the command line asks it: '--max-drop 0.5 --min-agreement 0.99'."""
        bounds = {"--max-drop": self.max_drop, "--min-agreement": self.min_agreement}
        return " ".join(f"{option} {value:g}" for option, value in bounds.items() if value is not None)


@dataclass
class ArtifactReport:
    format: str
    precision: str
    path: str
    size_bytes: int
    export_seconds: float
    verification: dict[str, Any]
    ops: dict[str, int] = field(default_factory=dict)
    status: str = "ok"  # ok | degraded (misses its target) | broken (see STATUS_RULE)
    status_reason: str = ""
    kept_float: list[str] = field(default_factory=list)  # layers --max-drop kept float, most sensitive first
    max_drop_search: list[dict[str, Any]] = field(default_factory=list)  # each try: layers float, loss, agreement
    # why each was kept: its relative logit error quantized alone (the sensitivity ranking --max-drop follows)
    kept_float_errors: dict[str, float] = field(default_factory=dict)
    float_latency: dict[str, Any] | None = None  # what they cost: full int8 against this, measured interleaved


@dataclass
class ExportReport:
    model: str
    weights: str
    verification_images: int
    verification_inputs: str
    reference_accuracy: float | None
    artifacts: list[ArtifactReport]
    warnings: list[str]
    seconds: float
    # the process's peak plus its largest child's (the TFLite worker): an upper bound on both at once. Both
    # are peaks over the process's life, so inside a longer run (a recipe) they include what ran before
    peak_memory_mb: float
    sensitivity: dict[str, Any] | None = None  # the ranking, when asked for (sensitivity.json/.md/.png beside)
    int8_correction: dict[str, Any] | None = None  # what was applied before quantizing, and the simulation's why

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "edgecnn_version": __version__, **dataclasses.asdict(self)}


@dataclass
class _Data:
    """Calibration and verification images, preprocessed once."""

    source: str
    calibration: np.ndarray | None
    verification: np.ndarray
    labels: np.ndarray | None
    calibration_hash: str | None
    held_out: HeldOut | None  # the training data's test split, recorded so `eval` can reuse it


def _load_model(config: ExportConfig, warnings: list[str]) -> tuple[nn.Module, dict[str, Any] | None]:
    resolved = resolve_model(config.model, config.weights, config.input_size)
    if get_model_meta(resolved.model).weights == "random":
        why = "" if config.weights == "none" else f" ({config.model} publishes no ImageNet weights)"
        warnings.append(f"random weights{why}: the artifacts are for testing the pipeline, not for deployment")
    return resolved.model, resolved.metadata or None


def _gather_data(
    config: ExportConfig, meta: ModelMeta, checkpoint: dict[str, Any] | None, warnings: list[str]
) -> _Data:
    """Calibration from the training split, verification from the held-out split (checkpoint's own data)."""
    trained_on = checkpoint.get("data") if checkpoint else None
    if config.calib is not None:
        source = open_source(config.calib)
        split = split_for(source, trained_on)
    elif trained_on:
        source = open_source(trained_on["source"])
        if source.fingerprint() != trained_on["fingerprint"]:
            raise EdgeCNNError(
                f"the data at {trained_on['source']} changed since training; pass --calib to choose images"
            )
        split = Split.from_dict(trained_on["split"])
    elif config.int8 and meta.weights.startswith("imagenet:"):
        source = _imagenet_calibration()
        split = make_split(source)
    else:
        if config.int8:
            raise EdgeCNNError("int8 needs calibration images: pass --calib digits|DIR (never random data)")
        generator = torch.Generator().manual_seed(0)
        random = torch.randn((32, *meta.preprocessing.input_shape), generator=generator).numpy()
        warnings.append("no data given: fp32 verified on 32 random inputs")
        return _Data("random", None, random, None, None, None)
    source.check_min_size(meta.preprocessing.crop)
    if not source.labelled:
        warnings.append(f"{source.name} has no class folders: verified by agreement only (accuracy needs them)")
    labelled = source.labelled and source.classes == meta.class_names
    calibration = None
    digest = None
    if config.int8:
        chosen = balanced_sample(source.labels, split.train, config.calib_size, seed=0)
        if not chosen:
            raise EdgeCNNError(
                f"{source.name} has too few images to calibrate: {len(source.labels)} in all, "
                f"{len(split.test)} held out to verify on; add images"
            )
        calibration = preprocess_images(source, chosen, meta.preprocessing)
        digest = hashlib.sha256(calibration.tobytes()).hexdigest()[:16]
    verification = preprocess_images(source, list(split.test), meta.preprocessing)
    labels = np.array([source.labels[i] for i in split.test]) if labelled else None
    return _Data(source.name, calibration, verification, labels, digest, held_out_images(checkpoint))


def _imagenet_calibration() -> ImageSource:
    """Imagenette's photos (real ImageNet classes): its training images calibrate, its validation
    images verify, with ImageNet labels, so accuracy is real ImageNet top-1 on those ten classes."""
    try:
        return open_source(IMAGENET_CALIBRATION)
    except DataError as exc:
        raise DataError(f"{exc}; or pass --calib DIR (any folder of images)") from None


def _artifact_metadata(
    meta: ModelMeta,
    precision: str,
    data: _Data,
    config: ExportConfig,
    weights_hash: str,
    int8_scheme: Quantization,
    target: Target,
) -> ArtifactMetadata:
    preprocessing = meta.preprocessing
    calibration = Calibration(
        data.source, 0 if data.calibration is None else len(data.calibration), data.calibration_hash
    )
    return ArtifactMetadata(
        model=meta.name,
        precision=precision,
        classes=tuple(meta.class_names),
        preprocessing=preprocessing.to_dict(),
        input=InputSpec(
            layout=preprocessing.layout,
            shape=("batch" if config.batch == "dynamic" else int(config.batch), *preprocessing.input_shape),
        ),
        quantization=dataclasses.replace(int8_scheme, calibration=calibration) if precision == "int8" else None,
        model_kwargs=meta.kwargs,
        weights=meta.weights,
        weights_sha256=weights_hash,
        held_out=data.held_out,
        target=target.name,
        edgecnn_version=__version__,
    )


def _state_hash(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def top1_accuracy(logits: np.ndarray, labels: np.ndarray | None) -> float | None:
    """Top-1 accuracy in percent, or None without labels."""
    return None if labels is None else float((logits.argmax(1) == labels).mean() * 100)


def verify(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    """Agreement of ``candidate`` logits with ``reference``: max |Δ|, its ratio to the logit range,
    the median image's max |Δ|, mean cosine similarity, top-1 agreement, and accuracy where labels
    exist. Each changed top-1 is listed by the reference's margin (top-1 minus top-2 logit), so a
    reader can tell near-ties flipped by rounding from confident predictions gone wrong."""
    per_image = np.abs(candidate - reference).max(1)
    difference = per_image.max()
    spread = float(reference.max() - reference.min()) or 1.0
    # in float64 and without an epsilon: a random model's logits can be 1e-9 small; all-zero rows that
    # agree count as identical
    ours, theirs = candidate.astype(np.float64), reference.astype(np.float64)
    norms = np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1)
    cosine = np.where(
        norms > 0, np.sum(ours * theirs, 1) / np.where(norms > 0, norms, 1), np.all(ours == theirs, 1).astype(float)
    )
    changed = candidate.argmax(1) != reference.argmax(1)
    top_two = np.sort(reference[changed], 1)[:, -2:]
    result: dict[str, Any] = {
        "max_abs_logit_diff": float(difference),
        "max_abs_diff_over_range": float(difference / spread),
        "median_max_abs_logit_diff": float(np.median(per_image)),
        "cosine": float(cosine.mean()),
        "top1_agreement": float((1 - changed.mean()) * 100),
        "changed_top1_margins": sorted(round(float(m), 4) for m in top_two[:, 1] - top_two[:, 0]),
    }
    if labels is not None:
        result["accuracy"] = top1_accuracy(candidate, labels)
    return result


def judge(precision: str, verification: dict[str, Any], reference_accuracy: float | None) -> tuple[str, str]:
    """(status, reason) of one artifact by its own verification (see ``STATUS_RULE``)."""
    cosine = verification["cosine"]
    if cosine < BROKEN_COSINE[precision]:
        return "broken", f"mean cosine with PyTorch fp32 {cosine:.3f} < {BROKEN_COSINE[precision]}"
    misses = []
    if precision in TARGET_DIFF_OVER_RANGE:
        ratio, target = verification["max_abs_diff_over_range"], TARGET_DIFF_OVER_RANGE[precision]
        if ratio > target:
            misses.append(f"max |Δlogit| {ratio:.1e} of the logit range > {target:.0e}")
    else:
        if verification["top1_agreement"] < INT8_TARGET_AGREEMENT:
            misses.append(f"top-1 agreement {verification['top1_agreement']:.1f}% < {INT8_TARGET_AGREEMENT:.0f}%")
        if reference_accuracy is not None and reference_accuracy - verification["accuracy"] > INT8_TARGET_DROP:
            misses.append(f"accuracy drop {reference_accuracy - verification['accuracy']:.2f} > {INT8_TARGET_DROP}")
    return ("degraded", "; ".join(misses)) if misses else ("ok", "")


def _judge_against_peers(runs: list[_Run]) -> None:
    """An int8 artifact far below the other formats' int8 on the same images is broken, not unlucky."""
    int8 = [run for run in runs if run.artifact.precision == "int8"]
    for run in int8:
        artifact = run.artifact
        others = [r.artifact for r in int8 if r is not run and r.artifact.status != "broken"]
        if artifact.status == "broken" or not others:
            continue
        best = max(others, key=lambda a: a.verification["top1_agreement"])
        gap = best.verification["top1_agreement"] - artifact.verification["top1_agreement"]
        if gap >= BROKEN_AGREEMENT_GAP:
            artifact.status = "broken"
            artifact.status_reason = (
                f"top-1 agreement {artifact.verification['top1_agreement']:.1f}%, {gap:.1f} points below "
                f"{Path(best.path).name}'s {best.verification['top1_agreement']:.1f}% on the same images"
            )
            run.write_sidecar()


def changed_top1_line(name: str, verification: dict[str, Any], shown: int = 8) -> str | None:
    """One readable line on the images whose top-1 changed, or None when none did."""
    margins = verification.get("changed_top1_margins") or []
    if not margins:
        return None
    listed = ", ".join(f"{m:.2f}" for m in margins[:shown]) + (", …" if len(margins) > shown else "")
    return f"{name}: top-1 changed on {len(margins)} image(s), fp32 margin (top-1 − top-2 logit) {listed}"


def export(config: ExportConfig) -> ExportReport:
    """Run the whole export for ``config``; writes the artifacts, their sidecars and export.json."""
    started = time.perf_counter()
    formats = resolve_formats(config.formats, config.int8, config.fp16, config.batch == "dynamic", config.calib_method)
    warnings: list[str] = []
    model, checkpoint = _load_model(config, warnings)
    model.eval()
    meta = get_model_meta(model)
    check_input_size(model, meta.preprocessing.input_shape)
    data = _gather_data(config, meta, checkpoint, warnings)
    example = torch.from_numpy(data.verification[:1]).repeat(
        1 if config.batch == "dynamic" else int(config.batch), 1, 1, 1
    )
    folded = fold_batchnorm(model)
    order = list(quantizable_layers(folded, example)) if config.int8 else []
    positions = _float_positions(order, config.float_layers, meta.name)
    work = _Work(folded, example, meta, data, config, _state_hash(model), positions)
    config.output.mkdir(parents=True, exist_ok=True)
    correction = _correct_for_int8(work, formats) if config.int8 else None
    sensitivity = _sensitivity(work) if config.sensitivity else None
    in_worker = [f for f in formats if f.in_worker]
    alongside = in_worker if len(in_worker) < len(formats) and _cores() > 1 else []
    here = [f for f in formats if f not in alongside]
    if not alongside:
        reference = _reference_logits(model, data.verification)
        runs = _export_formats(here, work, reference)
    else:
        # the formats table's in_worker formats convert in a worker process beside the other formats, both
        # on one thread so neither waits on the other's spinning thread pool. The worker starts first and
        # returns its logits, so the PyTorch reference is computed while it starts.
        convert = functools.partial(_export_formats, reference=None, threads=1, worker=True)
        with tempfile.TemporaryDirectory() as scratch, Worker(alongside, work, model, Path(scratch), convert) as worker:
            with torch_threads(1):
                reference = _reference_logits(model, data.verification)
                runs = _export_formats(here, work, reference, threads=1)
            with console.status(f"{', '.join(f.name for f in alongside)}: converting in a worker process"):
                for run in worker.result():  # converted and run there, compared here
                    run.compare_with(reference, data.labels)
                    runs.append(run)
        runs.sort(key=lambda run: [f.name for f in formats].index(run.artifact.format))
    if config.accuracy_budget():
        _hold_accuracy_budget(runs, work, reference, order, warnings)
    _judge_against_peers(runs)
    reports = [run.artifact for run in runs]
    for artifact in reports:
        if artifact.status == "degraded" or (artifact.status == "broken" and config.keep_degraded):
            kept = ", kept as --keep-degraded asks" if artifact.status == "broken" else ""
            warnings.append(f"{Path(artifact.path).name} is {artifact.status}: {artifact.status_reason}{kept}")
    reference_accuracy = top1_accuracy(reference, data.labels)
    report = ExportReport(
        model=meta.name,
        weights=meta.weights,
        verification_images=len(data.verification),
        verification_inputs=data.source,
        reference_accuracy=reference_accuracy,
        artifacts=reports,
        warnings=warnings,
        seconds=time.perf_counter() - started,
        peak_memory_mb=sum(resource.getrusage(who).ru_maxrss for who in _USAGE) / 1024,
        sensitivity=sensitivity,
        int8_correction=None if correction is None else correction.report.to_dict(),
    )
    write_json(config.output / "export.json", report.to_dict())
    broken = [a for a in reports if a.status == "broken"]
    if broken and not config.keep_degraded:
        worst = broken[0]
        others = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        raise EdgeCNNError(
            f"{Path(worst.path).name} is broken: {worst.status_reason}{others}; the artifacts and "
            f"{config.output / 'export.json'} are kept for inspection, --keep-degraded accepts them"
        )
    return report


def _float_positions(order: list[str], layers: list[str], model_name: str) -> tuple[int, ...]:
    """Where each of ``layers`` runs among the convolutions and linear layers (``order``): a graph that
    keeps no module names (OpenVINO's) holds them in that order."""
    unknown = [name for name in layers if name not in order]
    if unknown:
        shown = ", ".join([*order[:4], "…", *order[-2:]]) if len(order) > 6 else ", ".join(order)
        raise EdgeCNNError(
            f"no convolution or linear layer named {', '.join(unknown)} in {model_name}: "
            f"--float-layers takes module names ({shown}; `edgecnn export --sensitivity layer` lists them all)"
        )
    return tuple(order.index(name) for name in layers)


def _hold_accuracy_budget(
    runs: list[_Run], work: _Work, reference: np.ndarray, order: list[str], warnings: list[str]
) -> None:
    """--max-drop and --min-agreement: an int8 artifact that loses more than --max-drop allows, or whose
    top-1 agrees with PyTorch fp32 on fewer held-out images than --min-agreement asks, is exported again with
    the layers most sensitive to int8 kept float, the fewest that bring it within both
    (``_fewest_float_layers``). The loss is the accuracy drop against PyTorch fp32 on the held-out images
    where they have labels, else the share that disagrees: a drop can stay small while many answers change,
    which only the agreement bound sees. What the float layers cost is measured too: the full-int8 artifact
    and the result, interleaved."""
    config, data = work.config, work.data
    assert work.model is not None and data.calibration is not None
    reference_accuracy = top1_accuracy(reference, data.labels)

    def loss(run: _Run) -> float:
        checks = run.artifact.verification
        return (
            reference_accuracy - checks["accuracy"]
            if reference_accuracy is not None
            else 100 - checks["top1_agreement"]
        )

    def holds(run: _Run) -> bool:
        agreement = run.artifact.verification["top1_agreement"] / 100
        return (config.max_drop is None or loss(run) <= config.max_drop) and (
            config.min_agreement is None or agreement >= config.min_agreement - 1e-12
        )

    missing = [run for run in runs if run.artifact.precision == "int8" and not holds(run)]
    if not missing:
        return
    with console.status("int8 sensitivity by layer: which layers to keep float first"):
        errors = {row.name: row.relative_error for row in layer_sensitivity(work.model, data.calibration).ranked()}
    candidates = [name for name in errors if name not in config.float_layers]
    with tempfile.TemporaryDirectory(prefix="edgecnn-full-int8-") as scratch:
        for run in missing:
            fmt = FORMATS[run.artifact.format]
            full_int8 = Path(scratch) / fmt.name / Path(run.artifact.path).name
            full_int8.parent.mkdir()
            for part in artifact_files(run.artifact.path):  # the search overwrites it where it is
                shutil.copy2(part, full_int8.parent / part.name)
            final = _fewest_float_layers(run, work, reference, order, candidates, loss, holds, warnings)
            final.artifact.kept_float_errors = {name: round(errors[name], 6) for name in final.artifact.kept_float}
            with console.status(f"{fmt.name}: latency of full int8 against the float layers, interleaved"):
                final.artifact.float_latency = float_layers_latency(
                    full_int8, Path(final.artifact.path), fmt.verify_precision
                )
            final.write_sidecar()
            runs[runs.index(run)] = final


def _fewest_float_layers(
    run: _Run,
    work: _Work,
    reference: np.ndarray,
    order: list[str],
    candidates: list[str],
    loss: Callable[[_Run], float],
    holds: Callable[[_Run], bool],
    warnings: list[str],
) -> _Run:
    """``run``'s format exported again with the first ``candidates`` kept float, the fewest with which it
    ``holds`` the budget: doubling their number until it does, then bisecting (more layers float lose less,
    as a rule, not a law). Every try is recorded in the result's ``max_drop_search``."""
    config, data = work.config, work.data
    fmt = FORMATS[run.artifact.format]

    def measured(tried: _Run, count: int) -> dict[str, Any]:
        return {"kept_float": count, "loss": loss(tried), "agreement": tried.artifact.verification["top1_agreement"]}

    tries = [measured(run, 0)]

    def attempt(count: int) -> _Run:
        layers = [*config.float_layers, *candidates[:count]]
        trial = dataclasses.replace(
            work,
            config=dataclasses.replace(config, float_layers=layers),
            float_positions=_float_positions(order, layers, work.meta.name),
        )
        tried = _export_and_run(fmt, "int8", trial, None, console.status)
        tried.compare_with(reference, data.labels)
        tries.append(measured(tried, count))
        return tried

    held: dict[int, _Run] = {}
    missed, count, last = 0, 1, run
    while count <= len(candidates) and not held:
        last = attempt(count)
        if holds(last):
            held[count] = last
        else:
            missed = count
            count = len(candidates) + 1 if count == len(candidates) else min(2 * count, len(candidates))
    while held and min(held) - missed > 1:
        middle = (min(held) + missed) // 2
        last = attempt(middle)
        if holds(last):
            held[middle] = last
        else:
            missed = middle
    if held:
        fewest = min(held)
        final = last if last is held[fewest] else attempt(fewest)  # later tries overwrote its files
    else:
        fewest, final = len(candidates), last
        warnings.append(
            f"{Path(final.artifact.path).name}: {config.accuracy_budget()} not held even with every layer float "
            f"(loss {loss(final):.2f}, agreement {final.artifact.verification['top1_agreement']:.2f}%)"
        )
    final.artifact.kept_float = candidates[:fewest]
    final.artifact.max_drop_search = tries
    return final


def float_layers_latency(full_int8: Path, with_float: Path, precision: str | None = None) -> dict[str, Any]:
    """What keeping layers float costs on this machine: the p50 latency of the full-int8 artifact and of the
    one with float layers, one image at a time, measured interleaved (A B A B …) so that drift hits both,
    the float layers computed in ``precision`` (the one their accuracy was verified in)."""
    config = BenchConfig([full_int8, with_float], runs=FLOAT_LATENCY_RUNS, precision=precision)
    host = bench(config).hosts[0]
    full, kept = (result["latency"]["p50_ms"] for result in host.results)
    return {
        "full_int8_p50_ms": round(full, 4),
        "with_float_p50_ms": round(kept, 4),
        "ratio": round(kept / full, 3),
        "runs": FLOAT_LATENCY_RUNS,
        "computed_in": host.results[1]["effective_precision"],
        "cpu": host.environment["cpu_model"],
        "cpu_flags": host.environment["cpu_flags"],
    }


def _correct_for_int8(work: _Work, formats: list[Format]) -> CorrectedModel:
    """Cross-layer equalization and bias correction of the folded model as ``--int8-correction`` asks (``auto``:
    where they measurably lower the simulated int8 error); the int8 exports start from the result."""
    config, data = work.config, work.data
    assert work.model is not None and data.calibration is not None
    with console.status(f"int8 correction ({config.int8_correction}): simulating int8 on the calibration images"):
        corrected = correct_for_int8(
            work.model,
            data.calibration,
            data.verification,
            config.int8_correction,
            per_channel=not config.per_tensor,
            float_layers=config.float_layers,
        )
    applied = work.int8_correction = corrected.report.applied
    models = {applied: corrected.model, without_bias_correction(applied): corrected.without_bias}
    needed = {work.correction_for(fmt) for fmt in formats if fmt.int8}  # only these travel to a worker
    work.int8_states = {
        correction: {key: value.detach().clone() for key, value in models[correction].state_dict().items()}
        for correction in needed
        if models[correction] is not work.model
    }
    corrected.report.own_bias_correction = [
        fmt.name for fmt in formats if fmt.int8 and work.correction_for(fmt) != applied
    ]
    return corrected


def _sensitivity(work: _Work) -> dict[str, Any]:
    """The folded model's layers ranked by the int8 error each alone causes on the calibration images; the
    files are written beside the artifacts, the ranking goes into export.json."""
    assert work.model is not None and work.data.calibration is not None and work.config.sensitivity
    with console.status(f"int8 sensitivity by {work.config.sensitivity}: one simulation per unit"):
        report = layer_sensitivity(work.model, work.data.calibration, work.config.sensitivity)
    write_sensitivity(report, work.config.output)
    return report.to_dict()


@dataclass
class _Work:
    """What every format's export needs; picklable, so a worker process can take its share."""

    model: nn.Module | None  # BatchNorm folded; None on its way to a worker process
    example: torch.Tensor
    meta: ModelMeta
    data: _Data
    config: ExportConfig
    weights_hash: str
    float_positions: tuple[int, ...] = ()  # config.float_layers' places among the layers as they run
    int8_correction: str = "none"  # what --int8-correction applied
    # the folded model's weights after each correction a format gets (state dicts pickle into the worker
    # process); a correction not here left the model unchanged
    int8_states: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    def correction_for(self, fmt: Format) -> str:
        """What edgecnn corrects in ``fmt``'s int8 model: what it applied, less bias correction where ``auto``
        chose it and the format's quantizer corrects biases itself. ``auto``'s simulation weighs bias
        correction against none at all; such a format (NNCF) corrects them already, in its own arithmetic,
        which edgecnn's only simulates: on the Fashion-MNIST MobileNetV2, edgecnn's in NNCF's place lost
        0.26 point more per channel and 0.42 per tensor (10,000 images; on the ImageNet Lite1 it agreed on
        2 and 4 more of 270 crops). Asked for by name, edgecnn's replaces NNCF's."""
        if fmt.bias_corrector and self.config.int8_correction == "auto":
            return without_bias_correction(self.int8_correction)
        return self.int8_correction

    def own_bias_correction(self, fmt: Format) -> bool:
        """Whether ``fmt``'s quantizer corrects biases itself: where it can, unless edgecnn corrected them
        (twice would overshoot) or ``raw`` asked for int8 with no correction at all."""
        return (
            bool(fmt.bias_corrector) and "bias" not in self.correction_for(fmt) and self.config.int8_correction != "raw"
        )

    def int8_model(self, fmt: Format) -> nn.Module:
        """The model ``fmt``'s int8 quantizer starts from."""
        assert self.model is not None
        state = self.int8_states.get(self.correction_for(fmt))
        if state is None:
            return self.model
        corrected = copy.deepcopy(self.model)
        corrected.load_state_dict(state)
        return corrected


@dataclass
class _Run:
    """An artifact and its logits on the verification images, as its runtime gave them."""

    artifact: ArtifactReport
    runtime_metadata: ArtifactMetadata
    logits: np.ndarray
    computed_in: dict[str, str] = field(default_factory=dict)

    def compare_with(self, reference: np.ndarray, labels: np.ndarray | None) -> None:
        """Compare with ``reference`` into the artifact's report, judge it alone, write its sidecar."""
        self.artifact.verification = {**verify(reference, self.logits, labels), **self.computed_in}
        self.artifact.status, self.artifact.status_reason = judge(
            self.artifact.precision, self.artifact.verification, top1_accuracy(reference, labels)
        )
        self.write_sidecar()

    def write_sidecar(self) -> None:
        sidecar = sidecar_path(Path(self.artifact.path))
        write_json(sidecar, {**self.runtime_metadata.to_dict(), "report": dataclasses.asdict(self.artifact)})


def _reference_logits(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """The PyTorch fp32 model's logits, what every artifact is compared with."""
    with torch.no_grad():
        chunks = np.split(images, range(REFERENCE_BATCH, len(images), REFERENCE_BATCH))
        return np.concatenate([model(torch.from_numpy(chunk)).numpy() for chunk in chunks])


def _export_formats(
    formats: list[Format],
    work: _Work,
    reference: np.ndarray | None,
    threads: int | None = None,
    worker: bool = False,
) -> list[_Run]:
    """Export, then run in its own runtime on the verification images, every precision of each of
    ``formats``; each run is verified at once against ``reference`` if there is one yet (a worker
    process's are verified by its caller). ``threads`` is what the runtimes run on (None: every core);
    PyTorch's count is the caller's to set. A worker process shows no progress of its own (the caller's
    line says it is working)."""
    config, data = work.config, work.data
    status = (lambda _: contextlib.nullcontext()) if worker else console.status
    runs = []
    for fmt in formats:
        precisions = ["fp32"] + (["fp16"] if config.fp16 and fmt.fp16 else []) + (["int8"] if config.int8 else [])
        for precision in precisions:
            run = _export_and_run(fmt, precision, work, threads, status)
            if reference is not None:
                run.compare_with(reference, data.labels)
            runs.append(run)
    return runs


def _export_and_run(fmt: Format, precision: str, work: _Work, threads: int | None, status: Any) -> _Run:
    """One artifact exported, then run in its own runtime on the verification images."""
    data = work.data
    batch = len(data.verification) if work.config.batch == "dynamic" else int(work.config.batch)
    with status(f"{fmt.name} {precision}: exporting"):
        artifact = _export_one(fmt, precision, work)
    with status(f"{fmt.name} {precision}: verifying in {fmt.runtime}"):
        pinned = fmt.verify_precision if precision in ("fp32", "int8") else None
        runner = open_runner(artifact.path, threads=threads or _cores(), precision=pinned)  # LiteRT: 1
        run = _Run(artifact, runner.metadata, run_in_batches(runner, data.verification, batch))
        run.computed_in = {"precision": runner.precision, "runtime_default": runner.default_precision}
    return run


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _int8_scheme(fmt: Format, exporter: Exporter, work: _Work, target: Target) -> Quantization:
    """The format's int8 scheme as its metadata records it, with the layers the user kept float, the weights'
    granularity and the corrections its model had."""
    config = work.config
    scheme = exporter.int8_scheme(config.calib_method, target)
    if config.float_layers:
        scheme = dataclasses.replace(
            scheme, float_layers=f"{scheme.float_layers}; also {', '.join(config.float_layers)}"
        )
    correction = work.correction_for(fmt)
    words = {"cle": "cross-layer equalization", "bias": "bias correction"}
    applied = [f"{words[name]} (edgecnn)" for name in correction.split("+") if name != "none"]
    own = [f"bias correction ({fmt.bias_corrector})"] if work.own_bias_correction(fmt) else []
    return dataclasses.replace(
        scheme,
        scheme=scheme.scheme.replace("per-channel", "per-tensor") if config.per_tensor else scheme.scheme,
        weights_per_channel=not config.per_tensor,
        corrections=", ".join(applied + own) or None,
    )


def _export_one(fmt: Format, precision: str, work: _Work) -> ArtifactReport:
    config, meta, data, model, example = work.config, work.meta, work.data, work.model, work.example
    assert model is not None
    exporter = fmt.load_exporter()
    started = time.perf_counter()
    target = resolve_target(config.target)
    metadata = _artifact_metadata(
        meta, precision, data, config, work.weights_hash, _int8_scheme(fmt, exporter, work, target), target
    )
    stem = config.output / f"{meta.name}_{precision}"
    fp32_path = stem.with_name(f"{meta.name}_fp32{fmt.suffix}")
    path = stem.with_suffix(fmt.suffix)
    dynamic = config.batch == "dynamic"
    try:
        with tempfile.TemporaryDirectory() as scratch:
            if precision in ("fp32", "fp16"):
                exporter.export_float(model, example, path, metadata, dynamic, half=precision == "fp16")
            else:
                assert data.calibration is not None
                int8_model = work.int8_model(fmt)
                if int8_model is not model and fmt.quantizes_fp32_artifact:
                    fp32_path = Path(scratch) / fp32_path.name
                    exporter.export_float(int8_model, example, fp32_path, metadata, dynamic, half=False)
                size = 16 if dynamic else int(config.batch)
                batches = [data.calibration[i : i + size] for i in range(0, len(data.calibration) - size + 1, size)]
                job = Int8Job(
                    int8_model,
                    example,
                    fp32_path,
                    path,
                    batches,
                    config.calib_method,
                    metadata,
                    target,
                    tuple(config.float_layers),
                    work.float_positions,
                    per_channel=not config.per_tensor,
                    own_bias_correction=work.own_bias_correction(fmt),
                )
                exporter.quantize_int8(job)
    except Exception as exc:  # each converter raises its own types; the user needs which step failed and why
        raise one_line_error(f"{fmt.name} {precision} export failed ({type(exc).__name__})", exc) from exc
    seconds = time.perf_counter() - started
    return ArtifactReport(fmt.name, precision, str(path), artifact_size(path), seconds, {}, exporter.count_ops(path))

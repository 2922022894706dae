"""``edgecnn check``: the accuracy-regression gate CI runs after quantization.

Every candidate is evaluated in its own runtime on the same images as the baseline and compared with
it image by image (paired). Pairing is what lets the gate tell a real drop from the noise of a small
test set (an exact McNemar test and a confidence interval of the drop), name the classes that lost
most and list the images that flipped. A baseline can be a model (evaluated now) or a stored
``baseline.json`` of its answers, so CI can compare against the last release without its model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn import __version__
from edgecnn._io import atomic_path, write_json
from edgecnn.bench.benchmark import predict
from edgecnn.errors import EdgeCNNError

SCHEMA_VERSION = 1
BASELINE_FORMAT = "edgecnn-baseline"
METRICS = ("top1", "top5")
Z95 = 1.959964  # two-sided 95% normal quantile
SIGNIFICANCE = 0.05
SHOWN_FLIPS = 10  # per candidate in the Markdown summary; the JSON keeps them all
RESOLVING_IMAGES = 3  # fewer images than this between pass and fail: luck decides


class GateError(EdgeCNNError):
    """The gate could not evaluate (exit code 2): a broken input never passes."""


@dataclass
class Answers:
    """What one model answered on a fixed image set: all the gate needs, and what baseline.json stores."""

    source: str  # the artifact or checkpoint evaluated
    runtime: str
    data: str  # which images, in words
    fingerprint: str  # of the image source's contents
    classes: list[str]
    indices: list[int]  # of the images in the source
    labels: list[int]
    top5: list[list[int]]  # per image, the five highest-scoring classes, best first

    def correct(self, metric: str) -> np.ndarray:
        ranked = np.array(self.top5)
        labels = np.array(self.labels)
        return ranked[:, 0] == labels if metric == "top1" else (ranked == labels[:, None]).any(1)

    def accuracy(self, metric: str) -> float:
        return float(self.correct(metric).mean() * 100)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": BASELINE_FORMAT,
            "schema_version": SCHEMA_VERSION,
            "edgecnn_version": __version__,
            **dataclasses.asdict(self),
        }

    @classmethod
    def from_file(cls, path: Path) -> Answers:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise GateError(f"cannot read the baseline {path}: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT:
            raise GateError(f"{path} is not an edgecnn baseline (write one with `edgecnn check … --update-baseline`)")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise GateError(
                f"{path} has baseline schema {data.get('schema_version')}; this edgecnn reads {SCHEMA_VERSION}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


def answers(path: Path, data: str, runtime: str = "auto", device: str = "cpu") -> Answers:
    """Evaluate ``path`` in its own runtime on ``data`` (the held-out split when it trained on it)."""
    predicted = predict(path, data, runtime, device)
    ranked = np.argsort(-predicted.logits, axis=1, kind="stable")[:, :5]
    images = predicted.images
    return Answers(
        source=str(path),
        runtime=predicted.runner.name,
        data=images.description,
        fingerprint=images.fingerprint,
        classes=list(predicted.runner.metadata.classes),
        indices=[int(i) for i in images.indices],
        labels=[int(label) for label in images.labels],
        top5=ranked.tolist(),
    )


@dataclass
class GateConfig:
    candidates: list[Path]
    baseline: Path
    data: str
    max_drop: float = 1.0  # accuracy points
    min_agreement: float = 0.99  # fraction of images whose top-1 equals the baseline's
    metric: str = "top1"
    runtime: str = "auto"  # for the candidates; the baseline always runs in its own
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.candidates = [Path(c) for c in self.candidates]
        self.baseline = Path(self.baseline)
        if not self.candidates:
            raise GateError("no candidate given")
        if self.metric not in METRICS:
            raise GateError(f"unknown metric {self.metric!r}; valid: {', '.join(METRICS)}")
        if not 0 <= self.min_agreement <= 1:
            raise GateError(f"min agreement is a fraction in [0, 1], got {self.min_agreement}")
        if self.max_drop < 0:
            raise GateError(f"max drop is in accuracy points and ≥ 0, got {self.max_drop}")


@dataclass
class ClassChange:
    name: str
    images: int
    baseline_correct: int
    candidate_correct: int


@dataclass
class Flip:
    index: int  # of the image in the data source
    label: str
    baseline: str  # top-1 class
    candidate: str
    lost: bool  # True: the baseline was right and the candidate is not; False: the other way round


@dataclass
class Verdict:
    artifact: str
    status: str  # pass | fail | error
    reasons: list[str] = field(default_factory=list)
    runtime: str | None = None
    accuracy: float | None = None
    drop: float | None = None  # points below the baseline (negative: better)
    drop_ci95: tuple[float, float] | None = None
    p_value: float | None = None  # exact McNemar test on the flipped images
    noise: str | None = None  # the drop in words: within the test set's noise or not
    agreement: float | None = None
    classes: list[ClassChange] = field(default_factory=list)  # classes whose correct count changed
    flips: list[Flip] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class GateReport:
    baseline: str
    baseline_runtime: str
    baseline_accuracy: float
    data: str
    images: int
    metric: str
    max_drop: float
    min_agreement: float
    verdicts: list[Verdict]
    seconds: float
    timestamp: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    resolution: str | None = None  # why these images cannot resolve the thresholds, if they cannot

    @property
    def exit_code(self) -> int:
        """2 when any candidate could not be evaluated, else 1 when any failed, else 0."""
        statuses = {verdict.status for verdict in self.verdicts}
        return 2 if "error" in statuses else 1 if "fail" in statuses else 0

    def count(self, status: str) -> int:
        return sum(verdict.status == status for verdict in self.verdicts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "edgecnn_version": __version__,
            "exit_code": self.exit_code,
            **dataclasses.asdict(self),
        }


def resolution_warning(images: int, max_drop: float, min_agreement: float) -> str | None:
    """Why ``images`` cannot resolve the thresholds, or None: a threshold worth fewer than
    ``RESOLVING_IMAGES`` images is decided by which near-ties happen to flip, not by the model."""
    point = 100 / images
    short = []
    if max_drop / point < RESOLVING_IMAGES:
        short.append(f"--max-drop {max_drop:g} is {max_drop / point:.1f} image(s)")
    if (1 - min_agreement) * images < RESOLVING_IMAGES:
        short.append(f"--min-agreement {min_agreement:.1%} allows {(1 - min_agreement) * images:.1f} changed image(s)")
    if not short:
        return None
    return (
        f"{images} images cannot resolve these thresholds: one image is {point:.2f} points, so "
        f"{' and '.join(short)}; which near-ties flip decides the verdict (use more images)"
    )


def mcnemar_p(lost: int, gained: int) -> float:
    """Exact two-sided McNemar p-value: how likely this split of the flipped images is by chance alone."""
    flipped = lost + gained
    if flipped == 0:
        return 1.0
    tail = sum(math.comb(flipped, k) for k in range(min(lost, gained) + 1)) / 2**flipped
    return min(1.0, 2 * tail)


def paired_drop(baseline_correct: np.ndarray, candidate_correct: np.ndarray) -> tuple[float, tuple[float, float]]:
    """The drop in points and its 95% interval, from the per-image differences (paired, so the images'
    own difficulty cancels out and only the flipped images carry uncertainty)."""
    differences = baseline_correct.astype(float) - candidate_correct.astype(float)
    mean = float(differences.mean())
    half_width = Z95 * float(differences.std()) / math.sqrt(len(differences))
    return mean * 100, ((mean - half_width) * 100, (mean + half_width) * 100)


def compare(baseline: Answers, candidate: Answers, config: GateConfig) -> Verdict:
    """The verdict on one candidate: the thresholds decide; the statistics say how much to trust it."""
    verdict = Verdict(candidate.source, "error", runtime=candidate.runtime)
    if candidate.classes != baseline.classes:
        verdict.reasons.append("its classes are not the baseline's")
        return verdict
    if (candidate.fingerprint, candidate.indices) != (baseline.fingerprint, baseline.indices):
        verdict.reasons.append(
            f"evaluated on other images than the baseline ({candidate.data}; the baseline: {baseline.data})"
        )
        return verdict
    was_right, is_right = baseline.correct(config.metric), candidate.correct(config.metric)
    lost, gained = int((was_right & ~is_right).sum()), int((~was_right & is_right).sum())
    verdict.accuracy = candidate.accuracy(config.metric)
    verdict.drop, verdict.drop_ci95 = paired_drop(was_right, is_right)
    verdict.p_value = mcnemar_p(lost, gained)
    verdict.agreement = float(np.mean(np.array(candidate.top5)[:, 0] == np.array(baseline.top5)[:, 0]))
    verdict.noise = _noise(verdict, lost, gained, len(baseline.labels))
    verdict.classes = _class_changes(baseline, was_right, is_right)
    names = baseline.classes
    verdict.flips = [
        Flip(
            baseline.indices[i],
            names[baseline.labels[i]],
            names[baseline.top5[i][0]],
            names[candidate.top5[i][0]],
            bool(was_right[i]),
        )
        for i in np.flatnonzero(was_right != is_right)
    ]
    if verdict.drop > config.max_drop + 1e-9:
        verdict.reasons.append(
            f"{config.metric} fell {verdict.drop:.2f} points (more than --max-drop {config.max_drop:g})"
        )
    if verdict.agreement < config.min_agreement - 1e-12:
        verdict.reasons.append(
            f"top-1 agreement {verdict.agreement:.1%} is under --min-agreement {config.min_agreement:.1%}"
        )
    verdict.status = "fail" if verdict.reasons else "pass"
    return verdict


def _noise(verdict: Verdict, lost: int, gained: int, images: int) -> str:
    assert verdict.drop is not None and verdict.drop_ci95 is not None and verdict.p_value is not None
    low, high = verdict.drop_ci95
    flips = f"{lost} image(s) lost, {gained} gained of {images}; 95% CI of the drop {low:+.2f} … {high:+.2f} points"
    if lost == gained == 0:
        return f"no image changed its answer ({images} images)"
    if verdict.p_value >= SIGNIFICANCE:
        return f"within noise (McNemar p = {verdict.p_value:.2f}): {flips}"
    direction = "a real drop" if lost > gained else "a real gain"
    return f"{direction} (McNemar p = {verdict.p_value:.3f}): {flips}"


def _class_changes(baseline: Answers, was_right: np.ndarray, is_right: np.ndarray) -> list[ClassChange]:
    """Classes whose number of correct images changed, the largest losses first."""
    labels = np.array(baseline.labels)
    changes = []
    for index, name in enumerate(baseline.classes):
        members = labels == index
        before, after = int(was_right[members].sum()), int(is_right[members].sum())
        if before != after:
            changes.append(ClassChange(name, int(members.sum()), before, after))
    return sorted(changes, key=lambda change: change.candidate_correct - change.baseline_correct)


def load_baseline(config: GateConfig) -> Answers:
    if config.baseline.suffix == ".json":
        return Answers.from_file(config.baseline)
    try:
        return answers(config.baseline, config.data, device=config.device)
    except EdgeCNNError as exc:
        raise GateError(f"cannot evaluate the baseline: {exc}") from exc


def run_gate(config: GateConfig, baseline: Answers | None = None) -> GateReport:
    """Evaluate every candidate against the baseline; an unreadable candidate is an ``error`` verdict."""
    started = time.perf_counter()
    baseline = baseline or load_baseline(config)
    verdicts = []
    for path in config.candidates:
        began = time.perf_counter()
        try:
            verdict = compare(baseline, answers(path, config.data, config.runtime, config.device), config)
        except EdgeCNNError as exc:
            verdict = Verdict(str(path), "error", [str(exc)])
        verdict.seconds = time.perf_counter() - began
        verdicts.append(verdict)
    return GateReport(
        baseline=baseline.source,
        baseline_runtime=baseline.runtime,
        baseline_accuracy=baseline.accuracy(config.metric),
        data=baseline.data,
        images=len(baseline.labels),
        metric=config.metric,
        max_drop=config.max_drop,
        min_agreement=config.min_agreement,
        verdicts=verdicts,
        seconds=time.perf_counter() - started,
        resolution=resolution_warning(len(baseline.labels), config.max_drop, config.min_agreement),
    )


STATUS_MARK = {"pass": "✅ pass", "fail": "❌ fail", "error": "⚠️ not evaluated"}


def markdown(report: GateReport) -> str:
    """A summary for a person or a CI job page: the verdicts, then what drives each change."""
    metric = "top-1" if report.metric == "top1" else "top-5"
    title = (
        f"## edgecnn check: {report.count('pass')} passed, {report.count('fail')} failed, "
        f"{report.count('error')} not evaluated"
    )
    parts = [
        title,
        "",
        f"Baseline `{Path(report.baseline).name}` ({report.baseline_runtime}): {metric} "
        f"{report.baseline_accuracy:.2f}% on {report.data}. One image is {100 / report.images:.2f} points.",
        f"A candidate fails when its {metric} falls more than {report.max_drop:g} point(s) below the baseline "
        f"or its top-1 agreement with the baseline is under {report.min_agreement:.1%}.",
        *(["", f"⚠️ {report.resolution}."] if report.resolution else []),
        "",
        f"| artifact | runtime | {metric} | drop (95% CI) | agreement | lost / gained | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in report.verdicts:
        if v.status == "error":
            parts.append(
                f"| `{Path(v.artifact).name}` | {v.runtime or '–'} | – | – | – | – | {STATUS_MARK[v.status]} |"
            )
            continue
        low, high = v.drop_ci95 or (0.0, 0.0)
        lost = sum(flip.lost for flip in v.flips)
        parts.append(
            f"| `{Path(v.artifact).name}` | {v.runtime} | {v.accuracy:.2f}% | {v.drop:+.2f} ({low:+.2f} … {high:+.2f}) "
            f"| {v.agreement:.1%} | {lost} / {len(v.flips) - lost} | {STATUS_MARK[v.status]} |"
        )
    for v in report.verdicts:
        parts += ["", f"### `{Path(v.artifact).name}`: {STATUS_MARK[v.status]}", ""]
        parts += [f"- {reason}" for reason in v.reasons]
        if v.noise:
            parts.append(f"- drop: {v.noise}")
        if v.classes:
            parts += ["", "| class | images | baseline | candidate | change |", "|---|---|---|---|---|"]
            parts += [
                f"| {c.name} | {c.images} | {c.baseline_correct} | {c.candidate_correct} "
                f"| {c.candidate_correct - c.baseline_correct:+d} |"
                for c in v.classes
            ]
        if v.flips:
            shown = v.flips[:SHOWN_FLIPS]
            more = f" (first {len(shown)} of {len(v.flips)}; all in the JSON)" if len(v.flips) > len(shown) else ""
            parts += [
                "",
                f"Flipped images{more}:",
                "",
                "| image | label | baseline | candidate | |",
                "|---|---|---|---|---|",
            ]
            parts += [
                f"| {f.index} | {f.label} | {f.baseline} | {f.candidate} | {'lost' if f.lost else 'gained'} |"
                for f in shown
            ]
    return "\n".join(parts) + "\n"


def junit_xml(report: GateReport) -> str:
    """JUnit XML, one test case per candidate: a failure for a regression, an error for no evaluation."""
    counts = {
        "tests": str(len(report.verdicts)),
        "failures": str(report.count("fail")),
        "errors": str(report.count("error")),
    }
    suites = ET.Element("testsuites", name="edgecnn check", time=f"{report.seconds:.3f}", **counts)
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"edgecnn check ({report.metric})",
        skipped="0",
        time=f"{report.seconds:.3f}",
        timestamp=report.timestamp,
        hostname=platform.node() or "localhost",
        **counts,
    )
    properties = ET.SubElement(suite, "properties")
    settings = {
        "baseline": report.baseline,
        "baseline_accuracy": f"{report.baseline_accuracy:.2f}",
        "data": report.data,
        "metric": report.metric,
        "max_drop": f"{report.max_drop:g}",
        "min_agreement": f"{report.min_agreement:g}",
        **({"resolution": report.resolution} if report.resolution else {}),
    }
    for name, value in settings.items():
        ET.SubElement(properties, "property", name=name, value=value)
    for v in report.verdicts:
        case = ET.SubElement(
            suite, "testcase", classname="edgecnn.check", name=Path(v.artifact).name, time=f"{v.seconds:.3f}"
        )
        message = "; ".join(v.reasons)
        if v.status == "fail":
            ET.SubElement(case, "failure", message=message, type="AccuracyRegression").text = v.noise or message
        elif v.status == "error":
            ET.SubElement(case, "error", message=message, type="NotEvaluated").text = message
        if v.accuracy is not None:
            ET.SubElement(case, "system-out").text = (
                f"{report.metric} {v.accuracy:.2f}% (baseline {report.baseline_accuracy:.2f}%), "
                f"agreement {v.agreement:.1%}; {v.noise}"
            )
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def write_outputs(
    report: GateReport, junit: Path | None = None, summary: Path | None = None, json_path: Path | None = None
) -> list[Path]:
    """Each output written atomically; returns what was written."""
    written = []
    for path, text in ((junit, junit_xml), (summary, markdown)):
        if path is not None:
            with atomic_path(path) as temporary:
                temporary.write_text(text(report), encoding="utf-8")
            written.append(path)
    if json_path is not None:
        write_json(json_path, report.to_dict())
        written.append(json_path)
    return written

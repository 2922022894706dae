"""``edgecnn diff``: artifacts of any format and precision, and checkpoints, compared on the same images.

Each artifact runs in its own runtime on the images its own metadata prepares (the held-out split of its
training data where it has one); all must land on the same images of the same source. Every pair gets
its top-1 agreement and the median and largest |Δlogit|, and the images where their top-1 answers differ,
each with both sides' margin (top-1 minus top-2 logit): a disagreement at a margin near zero is a near-tie
that any rounding can flip, one at a large margin is a real error of one side.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn import __version__
from edgecnn._io import atomic_path, write_json
from edgecnn.bench.benchmark import Predictions, predict
from edgecnn.bench.layers import LayerTrace, plot, reference_taps, trace
from edgecnn.errors import EdgeCNNError
from edgecnn.export.pipeline import top1_accuracy

SCHEMA_VERSION = 1
SHOWN_DISAGREEMENTS = 10  # per pair in the table and the Markdown; the JSON keeps them all


@dataclass
class DiffConfig:
    artifacts: list[Path]
    data: str
    runtime: str = "auto"
    device: str = "cpu"
    layers: bool = False  # also compare every layer's output with the PyTorch checkpoint's
    layer_images: int = 32  # the first this many of the images, for the layers

    def __post_init__(self) -> None:
        if len(self.artifacts) < 2:
            raise EdgeCNNError("diff needs at least two artifacts or checkpoints to compare")
        if self.layer_images < 1:
            raise EdgeCNNError(f"layer images must be at least 1, got {self.layer_images}")
        if self.layers and self.reference is None:
            raise EdgeCNNError(
                "--layers compares every layer with the fp32 PyTorch model: add its checkpoint (.pt) to the inputs"
            )

    @property
    def reference(self) -> Path | None:
        """The PyTorch checkpoint among the inputs: what each layer is compared with."""
        return next((p for p in self.artifacts if p.suffix in (".pt", ".pth")), None)


@dataclass
class Side:
    """One artifact as diff ran it."""

    path: str
    runtime: str
    precision: str  # what computed, as the runtime reports it
    accuracy: float | None  # top-1 in percent, where the images have labels


@dataclass
class Disagreement:
    image: int  # index of the image in the source
    label: int | None
    answers: tuple[int, int]  # top-1 of the pair's first and second artifact
    margins: tuple[float, float]  # each side's top-1 minus top-2 logit


@dataclass
class PairDiff:
    first: int  # indices into DiffReport.artifacts
    second: int
    agreement: float  # top-1 agreement in percent
    median_abs_diff: float  # of the logits, over every image and class
    max_abs_diff: float
    disagreements: list[Disagreement] = field(default_factory=list)


@dataclass
class DiffReport:
    data: str
    images: int
    artifacts: list[Side]
    pairs: list[PairDiff]
    layers: list[LayerTrace] = field(default_factory=list)  # with --layers: each artifact against PyTorch
    layer_images: int = 0

    def pair(self, first: int, second: int) -> PairDiff:
        return next(p for p in self.pairs if {p.first, p.second} == {first, second})

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "edgecnn_version": __version__, **dataclasses.asdict(self)}


def margins(logits: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 logit per image: how far each answer is from flipping."""
    top2 = np.sort(logits, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def compare_pair(first: int, second: int, a: Predictions, b: Predictions) -> PairDiff:
    answers_a, answers_b = a.logits.argmax(1), b.logits.argmax(1)
    difference = np.abs(a.logits.astype(np.float64) - b.logits.astype(np.float64))
    margins_a, margins_b = margins(a.logits), margins(b.logits)
    labels = a.images.labels
    disagreements = [
        Disagreement(
            image=int(a.images.indices[i]),
            label=None if labels is None else int(labels[i]),
            answers=(int(answers_a[i]), int(answers_b[i])),
            margins=(float(margins_a[i]), float(margins_b[i])),
        )
        for i in np.flatnonzero(answers_a != answers_b)
    ]
    return PairDiff(
        first,
        second,
        agreement=float((answers_a == answers_b).mean() * 100),
        median_abs_diff=float(np.median(difference)),
        max_abs_diff=float(difference.max()),
        disagreements=disagreements,
    )


def diff(config: DiffConfig, progress: Any = None) -> DiffReport:
    """Run every artifact on the same images and compare every pair. ``progress(message)`` is told each step."""
    runs: list[Predictions] = []
    for path in config.artifacts:
        if progress:
            progress(f"running {path.name}")
        runs.append(predict(path, config.data, config.runtime, config.device, labels_required=False))
    first = runs[0]
    for path, run in zip(config.artifacts[1:], runs[1:], strict=True):
        if run.images.fingerprint != first.images.fingerprint or run.images.indices != first.images.indices:
            raise EdgeCNNError(
                f"{path.name} runs on other images than {config.artifacts[0].name} "
                f"({run.images.description} vs {first.images.description}): diff compares the same images only"
            )
        if run.logits.shape != first.logits.shape:
            raise EdgeCNNError(
                f"{path.name} gives {run.logits.shape[1]} outputs, {config.artifacts[0].name} {first.logits.shape[1]}"
            )
    sides = [
        Side(str(path), run.runner.name, run.runner.precision, top1_accuracy(run.logits, run.images.labels))
        for path, run in zip(config.artifacts, runs, strict=True)
    ]
    pairs = [compare_pair(i, j, runs[i], runs[j]) for i in range(len(runs)) for j in range(i + 1, len(runs))]
    report = DiffReport(first.images.description, len(first.logits), sides, pairs)
    if config.layers:
        report.layers = _layer_traces(config, runs, progress)
        report.layer_images = min(config.layer_images, len(first.logits))
    return report


def _layer_traces(config: DiffConfig, runs: list[Predictions], progress: Any) -> list[LayerTrace]:
    reference_path = config.reference
    assert reference_path is not None
    images = runs[config.artifacts.index(reference_path)].images.images[: config.layer_images]
    if progress:
        progress(f"tapping {reference_path.name}'s layers")
    names, reference = reference_taps(reference_path, images)
    traces = []
    for path, run in zip(config.artifacts, runs, strict=True):
        if path == reference_path:
            continue
        if progress:
            progress(f"tapping {path.name}'s layers")
        if not np.array_equal(run.images.images[: len(images)], images):
            traces.append(LayerTrace(str(path), [], None, None, "its preprocessing differs from the checkpoint's"))
            continue
        traces.append(trace(path, images, names, reference))
    return traces


def markdown(report: DiffReport) -> str:
    names = [Path(side.path).name for side in report.artifacts]
    lines = [
        f"# edgecnn diff: {len(names)} artifacts on {report.images} images",
        "",
        f"Images: {report.data}.",
        "",
        "| artifact | runtime | computed in | top-1 |",
        "|---|---|---|---|",
    ]
    for name, side in zip(names, report.artifacts, strict=True):
        accuracy = "–" if side.accuracy is None else f"{side.accuracy:.2f}%"
        lines.append(f"| {name} | {side.runtime} | {side.precision} | {accuracy} |")
    lines += ["", "Top-1 agreement (median / max |Δlogit|):", ""]
    lines += ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for i, name in enumerate(names):
        cells = [pair_cell(report, i, j) for j in range(len(names))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for pair in report.pairs:
        if not pair.disagreements:
            continue
        shown = pair.disagreements[:SHOWN_DISAGREEMENTS]
        lines += [
            "",
            f"## {names[pair.first]} vs {names[pair.second]}: {len(pair.disagreements)} image(s) disagree"
            + (f" (first {len(shown)})" if len(shown) < len(pair.disagreements) else ""),
            "",
            "| image | label | answers | margins (logits) |",
            "|---|---|---|---|",
        ]
        for item in shown:
            label = "–" if item.label is None else str(item.label)
            answers = f"{item.answers[0]} / {item.answers[1]}"
            lines.append(f"| {item.image} | {label} | {answers} | {item.margins[0]:.3f} / {item.margins[1]:.3f} |")
    lines += _layer_markdown(report)
    return "\n".join(lines) + "\n"


def _layer_markdown(report: DiffReport) -> list[str]:
    if not report.layers:
        return []
    lines = [
        "",
        f"## Layers against PyTorch fp32 (SQNR in dB, first {report.layer_images} images)",
        "",
        "| artifact | first quantized layer | first divergence | lowest SQNR |",
        "|---|---|---|---|",
    ]
    for item in report.layers:
        name = Path(item.artifact).name
        if item.error:
            lines.append(f"| {name} | {item.error} | | |")
            continue
        lines.append(
            f"| {name} | {item.first_quantized or '–'} | {item.first_divergence or '–'} | {item.lowest_text()} |"
        )
    traced = [item for item in report.layers if item.layers]
    if traced:
        lines += ["", "| layer | " + " | ".join(Path(t.artifact).name for t in traced) + " |"]
        lines.append("|---" * (len(traced) + 1) + "|")
        for k, layer in enumerate(traced[0].layers):
            lines.append(f"| {layer.layer} | " + " | ".join(f"{t.layers[k].sqnr_db:.1f}" for t in traced) + " |")
    return lines


def pair_cell(report: DiffReport, i: int, j: int) -> str:
    """The matrix cell of artifacts ``i`` and ``j``: agreement and the logits' median / max difference."""
    if i == j:
        return "–"
    pair = report.pair(i, j)
    return f"{pair.agreement:.2f}% ({pair.median_abs_diff:.3g} / {pair.max_abs_diff:.3g})"


def write_report(report: DiffReport, folder: Path) -> list[Path]:
    """diff.json and diff.md in ``folder`` (and layers.png with --layers), each written whole or not at all."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = folder / "diff.json", folder / "diff.md"
    write_json(json_path, report.to_dict())
    with atomic_path(markdown_path) as temporary:
        temporary.write_text(markdown(report), encoding="utf-8")
    written = [json_path, markdown_path]
    if any(item.layers for item in report.layers):
        written.append(plot(report.layers, folder / "layers.png"))
    return written

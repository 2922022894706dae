"""``edgecnn tune``: the fastest artifact for one device within an accuracy budget, with a deployment card.

The candidates are every export of the model (formats × fp32/int8), of each pruned version, at each
thread count. They are measured on the device itself (this machine or a host over SSH), interleaved
within a thread count so that drift affects them alike; accuracy is measured once per artifact on the
held-out images (it does not depend on the thread count). The drop is against the unpruned model's
fp32 artifacts, which export verified against PyTorch. The fastest candidate within the drop wins.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecnn import __version__
from edgecnn._io import atomic_path, write_json
from edgecnn.bench.benchmark import BenchConfig, HostResult, artifact_metadata, bench
from edgecnn.errors import EdgeCNNError
from edgecnn.export import resolve_formats
from edgecnn.export.pipeline import ExportConfig, export
from edgecnn.optimize.prune import PruneConfig, prune
from edgecnn.runtime.base import artifact_files, sidecar_path
from edgecnn.runtime.targets import AUTO

SCHEMA_VERSION = 1
LOCAL = "local"
log = logging.getLogger(__name__)


def _numbers(text: str, kind: type, what: str) -> list[Any]:
    """``"0,0.3,0.5"`` → ``[0.0, 0.3, 0.5]``: the lists of candidates a user types as one option."""
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise EdgeCNNError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise EdgeCNNError(f"no {what} given")
    return list(dict.fromkeys(values))


@dataclass
class TuneConfig:
    model: str  # a checkpoint (its training data is the default data) or a registered name
    device: str = LOCAL  # local, or [USER@]HOST reached over SSH
    max_drop: float = 0.5  # top-1 points below the unpruned fp32 model
    prune: str = "0"  # comma-separated ratios of channels removed; 0: the model as it is
    formats: str = "all"
    threads: str = "1"  # comma-separated thread counts
    data: str | None = None  # labelled images; default: the checkpoint's training data (its held-out split)
    finetune_epochs: int = 10  # after each pruning step
    weights: str | None = None  # model names only
    input_size: int | None = None  # model names only
    target: str = AUTO
    runs: int = 100
    warmup: int = 10
    remote_python: str = "python3"
    ssh_config: Path | None = None
    timeout: float = 600.0
    output: Path = Path("runs/tune")

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        if self.max_drop < 0:
            raise EdgeCNNError(f"max drop must be ≥ 0 points, got {self.max_drop}")
        if any(not 0 <= ratio < 1 for ratio in self.ratios):
            raise EdgeCNNError(f"prune ratios must be in [0, 1), got {self.prune}")
        if any(count < 1 for count in self.thread_counts):
            raise EdgeCNNError(f"thread counts must be at least 1, got {self.threads}")
        if self.runs < 1 or self.warmup < 0:
            raise EdgeCNNError("runs must be ≥ 1 and warmup ≥ 0")
        ExportConfig(self.model, formats=self.formats, int8=True, target=self.target)  # its own checks, early
        resolve_formats(self.formats, int8=True, fp16=False)

    @property
    def ratios(self) -> list[float]:
        return _numbers(self.prune, float, "prune ratios")

    @property
    def thread_counts(self) -> list[int]:
        return _numbers(self.threads, int, "thread counts")

    @property
    def remote(self) -> str | None:
        return None if self.device == LOCAL else self.device


@dataclass
class Candidate:
    """One artifact at one thread count, as measured on the device."""

    artifact: str
    format: str
    precision: str
    prune_ratio: float
    threads: int
    export_status: str  # ok | degraded | broken, as export judged it against PyTorch
    size_bytes: int
    runtime: str = ""
    runtime_version: str = ""
    interpreter: str | None = None
    computed_in: str = ""  # what the runtime really computed in (OpenVINO may run fp32 in bf16)
    p50_ms: float | None = None
    p50_ci_ms: list[float] | None = None  # the 95% bootstrap interval of p50
    p90_ms: float | None = None
    top1: float | None = None
    drop: float | None = None
    verdict: str = ""  # chosen | within the drop | why it was not eligible

    @property
    def label(self) -> str:
        pruned = f"pruned {self.prune_ratio:.0%}" if self.prune_ratio else "unpruned"
        return f"{self.format} {self.precision}, {pruned}, {self.threads} thread{'s' * (self.threads > 1)}"


@dataclass
class TuneReport:
    model: str
    device: str
    max_drop: float
    data: str
    reference: str  # what the drop is measured against
    reference_top1: float
    environment: dict[str, Any]
    candidates: list[Candidate]
    chosen: Candidate
    why: str
    deployed: list[str] = field(default_factory=list)  # the chosen artifact's files, copied beside the card

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "edgecnn_version": __version__, **dataclasses.asdict(self)}

    @property
    def runners_up(self) -> list[Candidate]:
        eligible = [c for c in self.candidates if c.verdict == "within the drop"]
        return sorted(eligible, key=_p50)[:3]


def _sources(config: TuneConfig) -> list[tuple[float, str]]:
    """(ratio, model) for each pruning ratio: the model itself for 0, a pruned checkpoint otherwise."""
    sources = []
    for ratio in config.ratios:
        if ratio == 0:
            sources.append((ratio, config.model))
            continue
        log.info(f"pruning {ratio:.0%} of the channels")
        prune(
            PruneConfig(
                config.model,
                ratio=ratio,
                finetune_epochs=config.finetune_epochs,
                data=config.data,
                weights=config.weights,
                input_size=config.input_size,
                output=config.output / f"prune-{ratio:g}",
            )
        )
        sources.append((ratio, str(config.output / f"prune-{ratio:g}" / "pruned.pt")))
    return sources


def _exported(config: TuneConfig, ratio: float, model: str) -> list[Candidate]:
    log.info(f"exporting the {'pruned ' + format(ratio, '.0%') if ratio else 'unpruned'} model: fp32 and int8")
    report = export(
        ExportConfig(
            model,
            formats=config.formats,
            int8=True,
            weights=config.weights if ratio == 0 else None,
            input_size=config.input_size if ratio == 0 else None,
            output=config.output / f"export-{ratio:g}",
            keep_degraded=True,  # tune judges by accuracy on the device; a broken artifact is recorded, not chosen
            target=config.target,
        )
    )
    return [
        Candidate(a.path, a.format, a.precision, ratio, 0, a.status, a.size_bytes)
        for a in report.artifacts
        if a.precision in ("fp32", "int8")
    ]


def _labelled_data(config: TuneConfig, artifact: str) -> str:
    """The images the drop is measured on: --data, else the data the model was trained on (bench then scores
    its held-out split, as the artifact's metadata records it)."""
    if config.data:
        return config.data
    held_out = artifact_metadata(Path(artifact)).held_out
    if held_out is None:
        raise EdgeCNNError(
            f"{config.model} records no training data: tune needs labelled images to measure the drop (--data)"
        )
    return held_out.source


def _measure(config: TuneConfig, artifacts: list[Candidate], data: str) -> tuple[list[Candidate], HostResult]:
    """Every artifact at every thread count, on the device; accuracy from the first thread count's run.
    Returns the candidates and the first run (its environment and the model's name)."""
    paths = [Path(a.artifact) for a in artifacts]
    measured: list[Candidate] = []
    first: HostResult | None = None
    top1: dict[str, float | None] = {}
    where = config.device if config.remote else "this machine"
    for index, threads in enumerate(config.thread_counts):
        log.info(f"measuring {len(paths)} artifacts interleaved on {where} at {threads} thread(s)")
        report = bench(
            BenchConfig(
                paths,
                threads=threads,
                warmup=config.warmup,
                runs=config.runs,
                data=data if index == 0 else None,
                remote=config.remote,
                remote_python=config.remote_python,
                ssh_config=config.ssh_config,
                timeout=config.timeout,
            )
        )
        host: HostResult = report.hosts[0]
        if host.error:
            raise EdgeCNNError(f"measuring on {where} failed: {host.error}")
        first = first or host
        for candidate, result in zip(artifacts, host.results, strict=True):
            if index == 0:
                top1[candidate.artifact] = (result.get("accuracy") or {}).get("top1")
            measured.append(
                dataclasses.replace(
                    candidate,
                    threads=threads,
                    runtime=result["runtime"],
                    runtime_version=result["runtime_version"],
                    interpreter=result.get("interpreter"),
                    computed_in=result["effective_precision"],
                    p50_ms=result["latency"]["p50_ms"],
                    p50_ci_ms=result["latency"].get("p50_ci_ms"),
                    p90_ms=result["latency"]["p90_ms"],
                    top1=top1[candidate.artifact],
                )
            )
    assert first is not None  # thread_counts is never empty
    return measured, first


@dataclass
class Choice:
    chosen: Candidate
    reference: str  # what the drop is measured against
    reference_top1: float
    why: str


def choose(candidates: list[Candidate], max_drop: float) -> Choice:
    """Set each candidate's drop and verdict against the best unpruned fp32 artifact (export verified it
    against PyTorch) and take the fastest within ``max_drop``. That reference itself is always within it,
    so there is always a choice."""
    references = [
        c
        for c in candidates
        if c.prune_ratio == 0 and c.precision == "fp32" and c.top1 is not None and c.export_status != "broken"
    ]
    if not references:
        raise EdgeCNNError("no accuracy measured for an unpruned fp32 artifact: tune needs labelled images (--data)")
    reference = max(references, key=lambda c: c.top1 or 0.0)
    assert reference.top1 is not None
    for candidate in candidates:
        candidate.drop = None if candidate.top1 is None else reference.top1 - candidate.top1
        if candidate.export_status == "broken":
            candidate.verdict = "broken at export (outputs unlike PyTorch's)"
        elif candidate.drop is None:
            candidate.verdict = "no accuracy measured"
        elif candidate.drop > max_drop:
            candidate.verdict = f"drop {candidate.drop:.2f} > {max_drop:g} point"
        else:
            candidate.verdict = "within the drop"
    chosen = _fastest([c for c in candidates if c.verdict == "within the drop"])
    chosen.verdict = "chosen"
    name = f"{Path(reference.artifact).name} (unpruned fp32, verified against PyTorch at export)"
    return Choice(chosen, name, reference.top1, _why(chosen, candidates, max_drop))


def _fastest(eligible: list[Candidate]) -> Candidate:
    """The lowest p50; but candidates whose p50 intervals overlap the lowest one's are as fast as far as the
    measurement can tell, and of those the one with the lowest p90 (a steadier latency), then the fewest
    threads, wins: a p50 a few percent lower with a p90 several times higher is not what to ship."""
    fastest = min(eligible, key=_p50)
    reach = fastest.p50_ci_ms[1] if fastest.p50_ci_ms else _p50(fastest)
    ties = [c for c in eligible if c.p50_ci_ms and c.p50_ci_ms[0] <= reach] or [fastest]
    return min(ties, key=lambda c: (c.p90_ms or 0.0, c.threads))


def _why(chosen: Candidate, candidates: list[Candidate], max_drop: float) -> str:
    eligible = [c for c in candidates if c.verdict in ("within the drop", "chosen")]
    others = sorted((c for c in eligible if c is not chosen), key=_p50)
    baseline = min(
        (c for c in candidates if c.prune_ratio == 0 and c.precision == "fp32" and c.threads == chosen.threads),
        key=_p50,
        default=None,
    )
    among = f"{len(eligible)} candidates within {max_drop:g} point (of {len(candidates)} measured)"
    if others and _p50(others[0]) < _p50(chosen):  # a tie on p50 that _fastest broke by p90
        parts = [
            f"as fast as the lowest p50 of {among}, {others[0].label}'s {_p50(others[0]):.3f} ms (their p50 "
            f"intervals overlap), and steadier: p90 {chosen.p90_ms:.3f} against {others[0].p90_ms:.3f} ms"
        ]
    else:
        parts = [f"fastest of {among}"]
        if others:
            parts.append(f"{_p50(others[0]) / _p50(chosen):.2f}× faster than the runner-up ({others[0].label})")
    if baseline not in (None, chosen, *others[:1]):
        threads = f"{chosen.threads} thread{'s' * (chosen.threads > 1)}"
        parts.append(
            f"{_p50(baseline) / _p50(chosen):.2f}× faster than the fastest unpruned fp32 artifact at {threads}"
        )
    return "; ".join(parts)


def _p50(candidate: Candidate) -> float:
    """A measured candidate's p50 (every candidate is measured before it is compared)."""
    assert candidate.p50_ms is not None
    return candidate.p50_ms


def tune(config: TuneConfig) -> TuneReport:
    """Export, measure and choose; writes tune.json, the deployment card and the Pareto plot to the output."""
    config.output.mkdir(parents=True, exist_ok=True)
    if config.remote and config.target == AUTO:
        log.warning(f"the int8 artifacts are made for this machine's CPU; --target names {config.device}'s kind")
    artifacts = [candidate for ratio, model in _sources(config) for candidate in _exported(config, ratio, model)]
    data = _labelled_data(config, artifacts[0].artifact)
    candidates, first = _measure(config, artifacts, data)
    choice = choose(candidates, config.max_drop)
    report = TuneReport(
        model=first.results[0].get("model") or Path(config.model).name,
        device=config.device if config.remote else f"this machine ({first.environment.get('hostname')})",
        max_drop=config.max_drop,
        data=data if config.data else f"{data} (the images the model did not train on)",
        reference=choice.reference,
        reference_top1=choice.reference_top1,
        environment=first.environment,
        candidates=candidates,
        chosen=choice.chosen,
        why=choice.why,
    )
    report.deployed = _deploy(choice.chosen, config.output / "deploy")
    write_json(config.output / "tune.json", report.to_dict())
    with atomic_path(config.output / "deploy" / "DEPLOYMENT.md") as temporary:
        temporary.write_text(card(report), encoding="utf-8")
    _pareto_plot(report, config.output / "pareto.png")
    return report


def _deploy(chosen: Candidate, folder: Path) -> list[str]:
    """The chosen artifact's files (an IR's .xml and .bin, a sidecar) copied beside the card, each atomically."""
    copied = []
    for source in [*artifact_files(chosen.artifact), sidecar_path(Path(chosen.artifact))]:
        if not source.is_file():
            continue
        with atomic_path(folder / source.name) as temporary:
            shutil.copyfile(source, temporary)
        copied.append(str(folder / source.name))
    return copied


def card(report: TuneReport) -> str:
    """The deployment card: what to ship, how to run it, what it measured and why it won."""
    chosen, env = report.chosen, report.environment
    interpreter = f" ({chosen.interpreter})" if chosen.interpreter else ""
    flags = ", ".join(env.get("cpu_flags") or []) or "none of the int8/fp16 ones"
    lines = [
        f"# Deployment card: {report.model} on {report.device}",
        "",
        f"**Ship `{Path(chosen.artifact).name}`** — {chosen.label}.",
        "",
        "| | |",
        "|---|---|",
        f"| runtime | {chosen.runtime} {chosen.runtime_version}{interpreter} |",
        f"| threads | {chosen.threads} |",
        f"| latency | p50 {chosen.p50_ms:.3f} ms, p90 {chosen.p90_ms:.3f} ms (batch 1) |",
        f"| accuracy | top-1 {chosen.top1:.2f}%, drop {chosen.drop:.2f} point (budget {report.max_drop:g}) |",
        f"| size | {chosen.size_bytes / 1e6:.2f} MB |",
        f"| device | {env.get('cpu_model', '?')}, {env.get('cores', '?')} cores; flags: {flags} |",
        "",
        f"Why: {report.why}.",
        "",
        f"Accuracy on {report.data}, against {report.reference}: {report.reference_top1:.2f}%.",
        "",
        "## Runners-up",
        "",
        *[f"- {c.label}: p50 {c.p50_ms:.3f} ms, top-1 {c.top1:.2f}%" for c in report.runners_up],
        "",
        "## All candidates",
        "",
        "| candidate | runtime | p50 ms | p90 ms | top-1 | drop | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in sorted(report.candidates, key=_p50):
        top1 = "–" if c.top1 is None else f"{c.top1:.2f}%"
        drop = "–" if c.drop is None else f"{c.drop:.2f}"
        lines.append(f"| {c.label} | {c.runtime} | {c.p50_ms:.3f} | {c.p90_ms:.3f} | {top1} | {drop} | {c.verdict} |")
    return "\n".join(lines) + "\n"


def _pareto_plot(report: TuneReport, path: Path) -> None:
    """The bench's latency-vs-accuracy plot over the candidates, each named by what makes it differ."""
    from edgecnn.bench.report import latency_accuracy_figure, save_figure

    results = [
        {
            "artifact": c.artifact,
            "model": f"{'pruned ' + format(c.prune_ratio, '.0%') if c.prune_ratio else 'unpruned'} ×{c.threads}t",
            "runtime": c.runtime,
            "artifact_precision": c.precision,
            "effective_precision": c.precision,
            "latency": {"p50_ms": c.p50_ms},
            "accuracy": {"top1": c.top1},
        }
        for c in report.candidates
        if c.top1 is not None
    ]
    figure = latency_accuracy_figure(HostResult(f"tune on {report.device}", results=results))
    if figure is not None:
        save_figure(figure, path)

"""The step types of a recipe: one class per pipeline stage, each knowing what it needs, does and reports.

A step's keys are generated from the stage's own config dataclass (``TrainConfig``, ``ExportConfig``,
``BenchConfig``, ``GateConfig``), so the recipe schema and the command line cannot drift apart. Steps
hand each other *products* (``checkpoint``, ``artifacts``, …); a new stage is one more class in
``STEP_TYPES`` (pruning came that way).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, create_model, model_validator

from edgecnn._io import file_digest
from edgecnn.bench.benchmark import BenchConfig
from edgecnn.bench.gate import GateConfig
from edgecnn.bench.tune import TuneConfig
from edgecnn.errors import EdgeCNNError
from edgecnn.export.pipeline import ExportConfig, changed_top1_line
from edgecnn.optimize.prune import PruneConfig
from edgecnn.runtime.base import artifact_files
from edgecnn.train.config import TrainConfig

Products = dict[str, Any]  # "checkpoint": Path, "artifacts": [Path], … as steps hand them on


@dataclass
class Outcome:
    """What a step left in its folder: products for later steps (paths relative to the folder), a
    summary for the report, and an exit code (a failed gate is a finished step with a verdict)."""

    products: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int = 0


class Step(BaseModel):
    """Keys every step has; subclasses add their stage's keys and behaviour."""

    model_config = ConfigDict(extra="forbid")
    kind: ClassVar[str]
    name: str | None = None  # names the step's folder; default: its kind

    def needs(self) -> list[str]:
        """Products this step takes from earlier steps, given its own keys."""
        return []

    def makes(self) -> list[str]:
        return []

    def inputs(self, products: Products) -> dict[str, Any]:
        """Everything outside the step's keys that its result depends on (hashed for the cache)."""
        return {}

    def run(self, products: Products, folder: Path) -> Outcome:
        raise NotImplementedError

    def headline(self, outcome: Outcome) -> str:
        """The result in a few words, for the terminal."""
        return ""

    def section(self, folder: Path, outcome: Outcome) -> str:
        """Markdown for the run's report."""
        return ""


def config_fields(config: type, exclude: set[str], base: type[Step] = Step, **overrides: Any) -> type[Step]:
    """A ``base`` whose keys are ``config``'s fields (types and defaults), less ``exclude`` and the keys
    ``base`` declares itself."""
    hints = typing.get_type_hints(config)
    fields: dict[str, Any] = {}
    for item in dataclasses.fields(config):
        if item.name in exclude or item.name in base.model_fields:
            continue
        if item.default is not dataclasses.MISSING:
            default = item.default
        elif item.default_factory is not dataclasses.MISSING:
            default = item.default_factory()
        else:
            default = ...
        fields[item.name] = (hints[item.name], default)
    fields.update(overrides)
    return create_model(f"{config.__name__}Keys", __base__=base, **fields)


def _checked(build: Any) -> None:
    """Run a config's own checks while the recipe loads, so a bad value is reported at its line."""
    try:
        build()
    except EdgeCNNError as exc:
        raise ValueError(str(exc)) from None


def _keys(step: BaseModel) -> dict[str, Any]:
    """The step's keys that are its stage's options."""
    return {key: getattr(step, key) for key in type(step).model_fields if key not in ("step", "name")}


def digest(path: str | Path | None) -> str | None:
    """Content hash of a file (an OpenVINO IR: of its .xml and .bin); None where ``path`` names no file
    (a model name, ``imagenet``, nothing)."""
    if path is None or not Path(path).is_file():
        return None
    return file_digest(*artifact_files(path))


def data_fingerprint(data: str | None) -> str | None:
    if data is None:
        return None
    from edgecnn.data.datasets import open_source

    return open_source(data).fingerprint()


def relative(paths: list[Path], folder: Path) -> list[str]:
    return [str(Path(p).resolve().relative_to(folder.resolve())) for p in paths]


class ModelStep(Step):
    """A step whose ``model`` (a name or a checkpoint) defaults to the checkpoint an earlier step made."""

    config: ClassVar[type]
    model: str | None = None

    @model_validator(mode="after")
    def _valid(self) -> ModelStep:
        _checked(lambda: self.config(**{**_keys(self), "model": self.model or "earlier-step.pt"}))
        return self

    def needs(self) -> list[str]:
        return [] if self.model else ["checkpoint"]

    def _model(self, products: Products) -> str:
        return self.model or str(products["checkpoint"])

    def _stage_config(self, products: Products, folder: Path) -> Any:
        return self.config(**{**_keys(self), "model": self._model(products)}, output=folder)


class TrainStep(config_fields(TrainConfig, {"output"})):  # type: ignore[misc]
    """Train or fine-tune; makes the best checkpoint."""

    kind: ClassVar[str] = "train"
    step: Literal["train"]

    @model_validator(mode="after")
    def _valid(self) -> TrainStep:
        _checked(lambda: TrainConfig(**_keys(self)))
        return self

    def makes(self) -> list[str]:
        return ["checkpoint"]

    def inputs(self, products: Products) -> dict[str, Any]:
        return {"data": data_fingerprint(self.data), "weights": digest(self.weights)}

    def run(self, products: Products, folder: Path) -> Outcome:
        from edgecnn.train import train

        result = train(TrainConfig(**_keys(self), output=folder))
        if result.interrupted:
            raise KeyboardInterrupt
        summary = {
            "model": self.model,
            "epochs": len(result.history),
            "best_epoch": result.best_epoch,
            "best_val_accuracy": result.best_val_accuracy,
            "test_accuracy": result.test_accuracy,
            "test_images": result.test_images,
            "seconds": result.seconds,
        }
        return Outcome({"checkpoint": "best.pt"}, summary)

    def headline(self, outcome: Outcome) -> str:
        return f"test accuracy {outcome.summary['test_accuracy']:.2f}%"

    def section(self, folder: Path, outcome: Outcome) -> str:
        s = outcome.summary
        return (
            f"{s['model']} trained {s['epochs']} epochs on {self.data}: best validation {s['best_val_accuracy']:.2f}% "
            f"(epoch {s['best_epoch']}), test {s['test_accuracy']:.2f}% on {s['test_images']} held-out images "
            f"({s['seconds']:.0f} s).\n\n![training curves]({folder.name}/curves.png)"
        )


class PruneStep(config_fields(PruneConfig, {"output"}, ModelStep)):  # type: ignore[misc]
    """Prune (and fine-tune) the checkpoint; makes the pruned checkpoint, which later steps take."""

    kind: ClassVar[str] = "prune"
    config: ClassVar[type] = PruneConfig
    step: Literal["prune"]

    def makes(self) -> list[str]:
        return ["checkpoint"]

    def inputs(self, products: Products) -> dict[str, Any]:
        return {"model": digest(self._model(products)), "data": data_fingerprint(self.data)}

    def run(self, products: Products, folder: Path) -> Outcome:
        from edgecnn.optimize.prune import prune

        report = prune(self._stage_config(products, folder))
        before, after = report.before, report.after
        summary = {
            "params": [before.params, after.params],
            "macs": [before.macs, after.macs],
            "accuracy": [before.accuracy, after.accuracy],
        }
        return Outcome({"checkpoint": "pruned.pt"}, summary)

    def headline(self, outcome: Outcome) -> str:
        (p0, p1), (m0, m1), (a0, a1) = (outcome.summary[k] for k in ("params", "macs", "accuracy"))
        accuracy = "" if a0 is None or a1 is None else f", top-1 {a0:.2f}% → {a1:.2f}%"
        return f"parameters ×{p1 / p0:.2f}, MACs ×{m1 / m0:.2f}{accuracy}"

    def section(self, folder: Path, outcome: Outcome) -> str:
        return (folder / "prune.md").read_text().split("\n", 1)[1].strip()


class ExportStep(config_fields(ExportConfig, {"output"}, ModelStep)):  # type: ignore[misc]
    """Fold BatchNorm, export and quantize, verify in each runtime; makes the artifacts."""

    kind: ClassVar[str] = "export"
    config: ClassVar[type] = ExportConfig
    step: Literal["export"]

    def makes(self) -> list[str]:
        return ["artifacts", "fp32_artifacts", *(["int8_artifacts"] if self.int8 else [])]

    def inputs(self, products: Products) -> dict[str, Any]:
        return {
            "model": digest(self._model(products)),
            "weights": digest(self.weights),
            "calib": data_fingerprint(self.calib),
        }

    def run(self, products: Products, folder: Path) -> Outcome:
        from edgecnn.export import export

        report = export(self._stage_config(products, folder))
        paths = [Path(a.path) for a in report.artifacts]
        by_precision = {
            p: relative([Path(a.path) for a in report.artifacts if a.precision == p], folder) for p in ("fp32", "int8")
        }
        products = {"artifacts": relative(paths, folder), "fp32_artifacts": by_precision["fp32"]}
        if self.int8:
            products["int8_artifacts"] = by_precision["int8"]
        return Outcome(products, {"seconds": report.seconds, "warnings": report.warnings})

    def headline(self, outcome: Outcome) -> str:
        return f"{len(outcome.products['artifacts'])} artifacts exported and verified"

    def section(self, folder: Path, outcome: Outcome) -> str:
        report = json.loads((folder / "export.json").read_text())
        reference = report["reference_accuracy"]
        lines = [
            f"{report['model']} verified in each runtime on {report['verification_images']} "
            f"{report['verification_inputs']} images"
            + ("" if reference is None else f"; PyTorch fp32 {reference:.2f}%")
            + f" ({report['seconds']:.0f} s).",
            "",
            "| artifact | size | export | max Δ / range | cosine | agreement | accuracy |",
            "|---|---|---|---|---|---|---|",
        ]
        for a in report["artifacts"]:
            v = a["verification"]
            accuracy = "–" if v.get("accuracy") is None else f"{v['accuracy']:.2f}%"
            lines.append(
                f"| `{Path(a['path']).name}` | {a['size_bytes'] / 1e6:.2f} MB | {a['export_seconds']:.1f} s "
                f"| {v['max_abs_diff_over_range']:.1e} | {v['cosine']:.4f} | {v['top1_agreement']:.1f}% | {accuracy} |"
            )
        changes = [changed_top1_line(f"`{Path(a['path']).name}`", a["verification"]) for a in report["artifacts"]]
        lines += [f"\n{line}" for line in changes if line]
        lines += [f"\nWarning: {w}" for w in report["warnings"]]
        if (folder / "sensitivity.md").is_file():
            lines += [
                "",
                (folder / "sensitivity.md").read_text().strip(),
                f"\n![sensitivity]({folder.name}/sensitivity.png)",
            ]
        return "\n".join(lines)


class BenchStep(config_fields(BenchConfig, {"artifacts"}, artifacts=(list[Path] | None, None))):  # type: ignore[misc]
    """Benchmark the checkpoint and the artifacts (here, on a remote host or a fleet); makes a report."""

    kind: ClassVar[str] = "bench"
    step: Literal["bench"]

    def needs(self) -> list[str]:
        return [] if self.artifacts else ["artifacts"]

    def _artifacts(self, products: Products) -> list[Path]:
        if self.artifacts:
            return list(self.artifacts)
        remote = bool(self.remote or self.fleet)  # a checkpoint runs on this machine only
        checkpoint = [] if remote or "checkpoint" not in products else [products["checkpoint"]]
        return [*checkpoint, *products["artifacts"]]

    def inputs(self, products: Products) -> dict[str, Any]:
        return {
            "artifacts": [digest(p) for p in self._artifacts(products)],
            "data": data_fingerprint(self.data),
            "fleet": digest(self.fleet),
        }

    def run(self, products: Products, folder: Path) -> Outcome:
        from edgecnn.bench.benchmark import bench
        from edgecnn.bench.report import write_report

        result = bench(BenchConfig(**{**_keys(self), "artifacts": self._artifacts(products)}))
        write_report(result, folder)
        failed = [host.host for host in result.hosts if host.error]
        summary = {"artifacts": len(result.hosts[0].results), "hosts": [host.host for host in result.hosts]}
        return Outcome({"bench": "bench.json"}, {**summary, "hosts_failed": failed}, exit_code=1 if failed else 0)

    def headline(self, outcome: Outcome) -> str:
        s = outcome.summary
        failed = f"; failed on {', '.join(s['hosts_failed'])}" if s["hosts_failed"] else ""
        return f"{s['artifacts']} artifacts measured on {', '.join(s['hosts'])}{failed}"

    def section(self, folder: Path, outcome: Outcome) -> str:
        text = (folder / "bench.md").read_text()
        body = text.split("\n", 1)[1].replace("\n## ", "\n### ")  # under the report's own heading
        plots = sorted(p.name for p in folder.glob("*.png"))
        return body.strip() + "".join(f"\n\n![{name}]({folder.name}/{name})" for name in plots)


class CheckStep(
    config_fields(
        GateConfig,
        exclude={"candidates", "baseline"},
        candidates=(list[Path] | None, None),
        baseline=(Path | None, None),
    )  # type: ignore[misc]
):
    """The accuracy gate: the int8 artifacts against the checkpoint (or the fp32 artifact)."""

    kind: ClassVar[str] = "check"
    step: Literal["check"]

    @model_validator(mode="after")
    def _valid(self) -> CheckStep:
        keys = {
            **_keys(self),
            "candidates": self.candidates or [Path("earlier")],
            "baseline": self.baseline or Path("x"),
        }
        _checked(lambda: GateConfig(**keys))
        return self

    def needs(self) -> list[str]:
        wanted = [] if self.candidates else ["int8_artifacts"]
        return wanted + ([] if self.baseline else ["checkpoint|fp32_artifacts"])

    def _config(self, products: Products) -> GateConfig:
        baseline = self.baseline or products.get("checkpoint") or products["fp32_artifacts"][0]
        candidates = self.candidates or products["int8_artifacts"]
        return GateConfig(**{**_keys(self), "candidates": candidates, "baseline": baseline})

    def inputs(self, products: Products) -> dict[str, Any]:
        config = self._config(products)
        return {
            "candidates": [digest(p) or str(p) for p in config.candidates],
            "baseline": digest(config.baseline) or str(config.baseline),
            "data": data_fingerprint(self.data),
        }

    def run(self, products: Products, folder: Path) -> Outcome:
        from edgecnn.bench.gate import run_gate, write_outputs

        report = run_gate(self._config(products))
        write_outputs(report, junit=folder / "junit.xml", summary=folder / "check.md", json_path=folder / "check.json")
        counts = {status: report.count(status) for status in ("pass", "fail", "error")}
        return Outcome({"gate": "check.json"}, counts, exit_code=report.exit_code)

    def headline(self, outcome: Outcome) -> str:
        s = outcome.summary
        return f"{s['pass']} passed, {s['fail']} failed, {s['error']} not evaluated"

    def section(self, folder: Path, outcome: Outcome) -> str:
        title, body = (folder / "check.md").read_text().split("\n", 1)
        return f"**{title.removeprefix('## edgecnn check: ')}**\n" + body.replace("\n### ", "\n#### ").rstrip()


class TuneStep(config_fields(TuneConfig, {"output"}, ModelStep)):  # type: ignore[misc]
    """The fastest artifact for a device within an accuracy budget; makes it (for a later bench or check)
    and its deployment card."""

    kind: ClassVar[str] = "tune"
    config: ClassVar[type] = TuneConfig
    step: Literal["tune"]

    def makes(self) -> list[str]:
        return ["artifacts", "deployment"]

    def inputs(self, products: Products) -> dict[str, Any]:
        return {
            "model": digest(self._model(products)),
            "data": data_fingerprint(self.data),
            "ssh_config": digest(self.ssh_config),
        }

    def run(self, products: Products, folder: Path) -> Outcome:
        from edgecnn.bench.tune import tune

        report = tune(self._stage_config(products, folder))
        chosen = report.chosen
        summary = {"chosen": chosen.label, "p50_ms": chosen.p50_ms, "top1": chosen.top1, "drop": chosen.drop}
        artifact = relative([Path(report.deployed[0])], folder)
        return Outcome({"artifacts": artifact, "deployment": "deploy/DEPLOYMENT.md"}, summary)

    def headline(self, outcome: Outcome) -> str:
        s = outcome.summary
        return f"chosen: {s['chosen']}, p50 {s['p50_ms']:.3f} ms, top-1 {s['top1']:.2f}% (drop {s['drop']:.2f})"

    def section(self, folder: Path, outcome: Outcome) -> str:
        card = (folder / "deploy" / "DEPLOYMENT.md").read_text().split("\n", 1)[1].replace("\n## ", "\n### ")
        return card.strip() + f"\n\n![pareto]({folder.name}/pareto.png)"


STEP_TYPES: tuple[type[Step], ...] = (TrainStep, PruneStep, ExportStep, BenchStep, CheckStep, TuneStep)

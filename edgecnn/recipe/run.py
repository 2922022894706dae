"""``edgecnn run``: execute a recipe's steps in order, reuse what an earlier run made, write one report.

Each step works in its own folder (``<output>/01-train``) and, when it has finished, writes
``step.json`` last: its cache key (a hash of the step's keys, of the *contents* of its inputs and of
edgecnn's own files), its products and its summary. A later run whose key matches reuses the folder;
a changed input changes the keys of the steps that depend on it, and only those run again. A folder
without a finished ``step.json`` (an interrupted step) is cleared and its step runs again, so an
interrupted run resumes at the step it was in.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

import edgecnn
from edgecnn import __version__
from edgecnn._interrupt import raise_if_interrupted
from edgecnn._io import atomic_path, write_json
from edgecnn.recipe.recipe import Recipe
from edgecnn.recipe.steps import Outcome, Products, Step

SCHEMA_VERSION = 1
MARKER = "step.json"
NOT_EVALUATED = 2  # the gate's exit code when it could not evaluate
HTML_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;line-height:1.45}"
    "table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}"
    "code{background:#f4f4f4;padding:0 .2rem}img{max-width:100%}"
)


@dataclass
class StepRecord:
    index: int
    kind: str
    folder: str
    status: str  # ran | cached
    key: str
    seconds: float  # of the run that made the folder
    outcome: Outcome


@dataclass
class RunResult:
    recipe: str
    output: str
    steps: list[StepRecord]
    report: list[str]
    seconds: float

    @property
    def exit_code(self) -> int:
        """The worst step's: 2 (a gate could not evaluate), 1 (a gate failed, a host failed) or 0."""
        return max((record.outcome.exit_code for record in self.steps), default=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "edgecnn_version": __version__,
            "exit_code": self.exit_code,
            **dataclasses.asdict(self),
        }


def package_digest(root: Path) -> str:
    """A hash of every file under ``root`` (source and package data, not bytecode caches)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.relative_to(root).parts:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


@functools.cache
def _code_digest() -> str:
    """edgecnn's own files as installed: its version stays the same between commits, and a step made by
    other code (a changed exporter, say) must not be reused."""
    return package_digest(Path(edgecnn.__file__).parent)


def step_key(step: Step, inputs: dict[str, Any]) -> str:
    payload = {
        "edgecnn_version": __version__,
        "edgecnn_code": _code_digest(),
        "step": step.model_dump(mode="json"),
        "inputs": inputs,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _finished(folder: Path, key: str) -> tuple[Outcome, float] | None:
    """The outcome stored by a finished step with this key, if its products are all still there."""
    try:
        stored = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if stored.get("key") != key:
        return None
    outcome = Outcome(stored["products"], stored["summary"], stored["exit_code"])
    if not all(path.exists() for path in _paths(outcome.products, folder)):
        return None
    return outcome, float(stored["seconds"])


def _paths(products: dict[str, Any], folder: Path) -> list[Path]:
    return [folder / item for value in products.values() for item in (value if isinstance(value, list) else [value])]


def _resolve(products: dict[str, Any], folder: Path) -> Products:
    """Products as later steps take them: paths, not names relative to the step's folder."""
    return {
        name: [folder / item for item in value] if isinstance(value, list) else folder / value
        for name, value in products.items()
    }


def run_recipe(
    recipe: Recipe, force: bool = False, on_step: Callable[[int, Step, str], None] | None = None
) -> RunResult:
    """Run (or reuse) every step, then write report.md and report.html in the recipe's folder.

    ``on_step(index, step, message)`` hears when a step starts and how it ended.
    """
    started = time.perf_counter()
    output = recipe.folder
    output.mkdir(parents=True, exist_ok=True)
    products: Products = {}
    records = []
    for index, (step, name) in enumerate(zip(recipe.steps, recipe.step_folders(), strict=True)):
        folder = output / name
        key = step_key(step, step.inputs(products))
        reused = None if force else _finished(folder, key)
        if reused:
            outcome, seconds = reused
        else:
            if on_step:
                on_step(index, step, "running")
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            began = time.perf_counter()
            outcome = step.run(products, folder)
            raise_if_interrupted()  # a step a Ctrl-C interrupted is not finished, whatever it returned
            seconds = time.perf_counter() - began
            if outcome.exit_code != NOT_EVALUATED:  # "could not evaluate" is no result to reuse
                marker = {"key": key, "kind": step.kind, "seconds": seconds, **dataclasses.asdict(outcome)}
                write_json(folder / MARKER, marker)
        products.update(_resolve(outcome.products, folder))
        if on_step:
            how = "reused (inputs unchanged)" if reused else f"done in {seconds:.0f} s"
            on_step(index, step, f"{how}: {step.headline(outcome)}")
        records.append(StepRecord(index + 1, step.kind, name, "cached" if reused else "ran", key, seconds, outcome))
    result = RunResult(str(recipe.name), str(output), records, [], 0.0)
    result.report = [str(path) for path in write_report(recipe, result)]
    result.seconds = time.perf_counter() - started
    return result


def write_report(recipe: Recipe, result: RunResult) -> list[Path]:
    """report.md and report.html beside the step folders, so the plots' relative links hold."""
    output = Path(result.output)
    ran = sum(record.status == "ran" for record in result.steps)
    lines = [f"# {recipe.name}", ""]
    if recipe.description:
        lines += [recipe.description.strip(), ""]
    lines += [
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC with edgecnn {__version__}: {len(result.steps)} steps, "
        f"{ran} ran, {len(result.steps) - ran} reused from an earlier run (same inputs, same keys).",
        "",
        "## Pipeline",
        "",
        "| # | step | folder | status | time | exit |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.index} | {r.kind} | `{r.folder}` | {r.status} | {r.seconds:.1f} s | {r.outcome.exit_code} |"
        for r in result.steps
    ]
    for record, step in zip(result.steps, recipe.steps, strict=True):
        section = step.section(output / record.folder, record.outcome)
        lines += ["", f"## {record.index}. {record.kind}", "", section]
    markdown = "\n".join(lines) + "\n"
    from markdown_it import MarkdownIt  # comes with rich

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    html = f'<!doctype html><html><head><meta charset="utf-8"><title>{escape(recipe.name)}</title>'
    html += f"<style>{HTML_STYLE}</style></head><body>\n{body}</body></html>\n"
    written = []
    for name, text in (("report.md", markdown), ("report.html", html)):
        with atomic_path(output / name) as temporary:
            temporary.write_text(text, encoding="utf-8")
        written.append(output / name)
    return written

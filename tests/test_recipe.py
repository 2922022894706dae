"""Recipes: validation with file and line, cached steps and their invalidation, resume, the report."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import needs_every_format, run_cli

from edgecnn.recipe import RecipeError, load_recipe, run_recipe

RECIPES = Path(__file__).parent.parent / "recipes"

LENET = """\
name: lenet_digits
output: {output}
steps:
  - step: train
    model: lenet5
    epochs: {epochs}
  - step: export
    formats: {formats}
    int8: true
    calib_size: 32
  - step: check
    data: digits
    max_drop: {max_drop}
    min_agreement: 0.5
"""


def write_recipe(folder: Path, epochs: int = 1, max_drop: float = 50, formats: str = "onnx") -> Path:
    path = folder / "recipe.yaml"
    path.write_text(LENET.format(output=folder / "run", epochs=epochs, max_drop=max_drop, formats=formats))
    return path


def statuses(result) -> list[str]:
    return [record.status for record in result.steps]


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_validate(path):
    recipe = load_recipe(path)
    assert recipe.steps and recipe.name == path.stem


@pytest.mark.needs("onnx")
def test_steps_are_reused_until_what_they_depend_on_changes(tmp_path):
    path = write_recipe(tmp_path)
    first = run_recipe(load_recipe(path))
    assert statuses(first) == ["ran", "ran", "ran"] and first.exit_code == 0
    assert statuses(run_recipe(load_recipe(path))) == ["cached", "cached", "cached"]
    write_recipe(tmp_path, max_drop=40)  # only the gate's own key changed
    assert statuses(run_recipe(load_recipe(path))) == ["cached", "cached", "ran"]
    write_recipe(tmp_path, max_drop=40, epochs=2)  # a new checkpoint: everything after it runs again
    assert statuses(run_recipe(load_recipe(path))) == ["ran", "ran", "ran"]
    assert statuses(run_recipe(load_recipe(path), force=True)) == ["ran", "ran", "ran"]


@pytest.mark.needs("onnx")
def test_a_changed_artifact_invalidates_the_steps_that_read_it(tmp_path):
    path = write_recipe(tmp_path)
    run_recipe(load_recipe(path))
    marker = json.loads((tmp_path / "run/02-export/step.json").read_text())
    artifact = tmp_path / "run/02-export" / marker["products"]["int8_artifacts"][0]
    artifact.write_bytes(artifact.read_bytes() + b"\0")  # edited by hand: the gate's input changed
    (tmp_path / "run/01-train/curves.png").unlink()  # not a product: the train step stays valid
    result = run_recipe(load_recipe(path))
    assert statuses(result) == ["cached", "cached", "ran"]


@pytest.mark.needs("onnx")
def test_a_failed_step_resumes_where_it_stopped(tmp_path):
    path = write_recipe(tmp_path)
    broken = path.read_text() + "  - step: bench\n    runs: 5\n    data: {}\n".format(tmp_path / "missing")
    path.write_text(broken)
    with pytest.raises(Exception, match="data folder not found"):
        run_recipe(load_recipe(path))
    assert not (tmp_path / "run/04-bench/step.json").exists()
    path.write_text(broken.replace(str(tmp_path / "missing"), "digits"))
    result = run_recipe(load_recipe(path))
    assert statuses(result) == ["cached", "cached", "cached", "ran"]
    assert (tmp_path / "run/04-bench/bench.json").is_file()


@needs_every_format
def test_an_interrupted_run_resumes_at_the_step_it_was_in(tmp_path):
    """A real Ctrl-C during the export: the next run reuses the training and redoes the export."""
    path = write_recipe(tmp_path, formats="all")
    process = subprocess.Popen([sys.executable, "-m", "edgecnn.cli", "run", str(path)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (tmp_path / "run/01-train/step.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # well into the export (6 artifacts: ~10 s)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr.decode()
    assert not (tmp_path / "run/02-export/step.json").exists()
    assert not list((tmp_path / "run/02-export").glob(".*.tmp"))  # no half-written artifact left behind
    (tmp_path / "run/02-export/stale.onnx").write_bytes(b"left over")
    result = run_recipe(load_recipe(path))
    assert statuses(result) == ["cached", "ran", "ran"]
    assert not (tmp_path / "run/02-export/stale.onnx").exists()


@pytest.mark.needs("onnx")
def test_the_report_holds_every_stage(tmp_path):
    result = run_recipe(load_recipe(write_recipe(tmp_path)))
    report = (tmp_path / "run/report.md").read_text()
    for expected in ("## Pipeline", "## 1. train", "test ", "lenet5_int8.onnx", "max Δ / range", "passed, 0 failed"):
        assert expected in report
    html = (tmp_path / "run/report.html").read_text()
    assert "<table>" in html and "01-train/curves.png" in html
    assert {Path(p).name for p in result.report} == {"report.md", "report.html"}
    assert (tmp_path / "run/03-check/junit.xml").is_file()


def test_a_gate_that_cannot_evaluate_exits_2_and_is_not_cached(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(
        f"name: gate\noutput: {tmp_path / 'run'}\nsteps:\n  - step: train\n    model: lenet5\n    epochs: 1\n"
        f"  - step: check\n    data: digits\n    candidates: [{tmp_path / 'missing.onnx'}]\n"
    )
    result = run_cli("run", str(path))
    assert result.returncode == 2, result.stderr
    assert "0 passed, 0 failed, 1 not evaluated" in result.stderr
    assert (tmp_path / "run/report.md").is_file() and not (tmp_path / "run/02-check/step.json").exists()


TRAIN = "name: x\nsteps:\n  - step: train\n    model: lenet5\n"
EXPORT = "name: x\nsteps:\n  - step: export\n    model: lenet5\n"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (TRAIN + "    epoch: 3\n", 5, "unknown key 'epoch'; did you mean 'epochs'?"),
        (TRAIN + "    epochs: many\n", 5, "epochs: Input should be a valid integer"),
        (TRAIN + "    epochs: 0\n", 3, "epochs must be at least 1"),
        ("name: x\nsteps:\n  - step: quantise\n", 3, "valid: train, prune, export, bench, check"),
        (TRAIN + "    loss: hinge\n", 5, "'cross_entropy' or 'mse'"),
        ("name: x\nsteps:\n  - step: export\n    int8: true\n", 3, "needs checkpoint from an earlier step"),
        (EXPORT + "  - step: check\n    data: digits\n", 5, "needs int8_artifacts"),
        (EXPORT + "    calib_method: best\n", 3, "valid: auto, minmax, entropy"),
        ("name: x\nsteps: [\n", 3, "not valid YAML"),
        ("name: x\nsteps: []\n", 2, "steps: List should have at least 1 item"),
        (TRAIN + "ouput: runs/x\n", 5, "did you mean 'output'?"),
    ],
)  # fmt: skip
def test_recipe_errors_name_the_file_line_and_choices(tmp_path, text, line, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert str(caught.value).startswith(f"{path}:{line}: "), str(caught.value)
    assert message in str(caught.value)


def test_cli_recipe_error_is_one_line_and_exit_1(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nsteps:\n  - step: train\n    modle: lenet5\n")
    result = run_cli("run", str(path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}:4: steps[0] (train): modle: unknown key 'modle'")
    assert "did you mean 'model'?" in lines[0]


@pytest.mark.needs("prune", "onnx")
def test_a_prune_step_hands_the_pruned_checkpoint_to_the_next_steps(tmp_path):
    path = tmp_path / "recipe.yaml"
    text = LENET.format(output=tmp_path / "run", epochs=1, max_drop=50, formats="onnx")
    text = text.replace("  - step: export", "  - step: prune\n    ratio: 0.5\n    finetune_epochs: 1\n  - step: export")
    path.write_text(text)
    result = run_recipe(load_recipe(path))
    assert [record.kind for record in result.steps] == ["train", "prune", "export", "check"]
    gate = json.loads((tmp_path / "run/04-check/check.json").read_text())
    assert gate["baseline"].endswith("02-prune/pruned.pt")
    export_report = json.loads((tmp_path / "run/03-export/export.json").read_text())
    assert export_report["weights"] == "checkpoint:pruned.pt"
    assert "| parameters |" in (tmp_path / "run/report.md").read_text()


def test_a_step_key_follows_edgecnn_own_code_not_only_its_version(tmp_path, monkeypatch):
    import shutil

    import edgecnn
    from edgecnn.recipe import run as runner

    package = tmp_path / "edgecnn"
    shutil.copytree(Path(edgecnn.__file__).parent, package)
    before = runner.package_digest(package)
    (package / "export" / "__pycache__").mkdir(exist_ok=True)
    (package / "export" / "__pycache__" / "stale.pyc").write_bytes(b"bytecode")
    assert runner.package_digest(package) == before  # bytecode caches are not the code
    exporter = package / "export" / "onnx.py"
    exporter.write_text(exporter.read_text() + "\n# changed\n")
    assert runner.package_digest(package) != before
    step = load_recipe(write_recipe(tmp_path)).steps[0]
    key = runner.step_key(step, {})
    monkeypatch.setattr(runner, "_code_digest", lambda: "other code")
    assert runner.step_key(step, {}) != key

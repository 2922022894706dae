"""`edgecnn check`: exit codes, a gate that catches damaged models, its statistics and its reports."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import xmlschema
from conftest import REFERENCE, artifact_path, run_cli

from edgecnn.bench.gate import Answers, GateConfig, GateError, compare, mcnemar_p, paired_drop
from edgecnn.export import ExportConfig, export
from edgecnn.models.checkpoint import load_checkpoint, save_checkpoint

JUNIT_SCHEMA = xmlschema.XMLSchema(REFERENCE / "junit.xsd")


def int8_artifacts(report) -> list[str]:
    return [str(artifact_path(report, fmt, "int8")) for fmt in ("onnx", "openvino", "tflite")]


def answers(labels, baseline_top1, classes=("a", "b", "c")) -> Answers:
    """Answers on ``len(labels)`` images whose top-1 is ``baseline_top1`` (the rest of the top 5 unused)."""
    return Answers(
        source="model",
        runtime="test",
        data="test images",
        fingerprint="f",
        classes=list(classes),
        indices=list(range(len(labels))),
        labels=list(labels),
        top5=[[int(p)] for p in baseline_top1],
    )


def test_int8_artifacts_pass_and_the_reports_are_written(lenet_artifacts, trained_lenet, tmp_path):
    junit, summary, report = tmp_path / "junit.xml", tmp_path / "summary.md", tmp_path / "check.json"
    baseline = tmp_path / "baseline.json"
    args = [*int8_artifacts(lenet_artifacts), "--baseline", str(trained_lenet), "--data", "digits"]
    # LeNet after 2 epochs is a weak model (~85%): int8 flips a few borderline images, hence 0.97
    options = ["--min-agreement", "0.97", "--max-drop", "2", "--junit", str(junit), "--summary", str(summary)]
    result = run_cli("check", *args, *options, "--report", str(report), "--update-baseline", str(baseline))
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(report.read_text())
    assert [v["status"] for v in data["verdicts"]] == ["pass"] * 3
    assert {v["runtime"] for v in data["verdicts"]} == {"onnxruntime", "openvino", "litert"}
    assert data["images"] == 269 and "held-out" in data["data"]
    JUNIT_SCHEMA.validate(str(junit))
    assert "3 passed, 0 failed, 0 not evaluated" in summary.read_text()
    # the stored baseline replaces the checkpoint: the same verdicts without running the fp32 model
    again = run_cli("check", *args[:1], "--baseline", str(baseline), "--data", "digits", "--json", *options[:4])
    assert again.returncode == 0, again.stderr
    stored = json.loads(again.stdout)["verdicts"][0]
    assert stored["accuracy"] == data["verdicts"][0]["accuracy"] and stored["flips"] == data["verdicts"][0]["flips"]


def scrambled(checkpoint: Path, destination: Path) -> Path:
    """The checkpoint with its first convolution's weights shuffled: a layer a bad merge could break."""
    loaded = load_checkpoint(checkpoint)
    weight = next(m for m in loaded.model.modules() if isinstance(m, torch.nn.Conv2d)).weight
    with torch.no_grad():
        weight.copy_(
            weight.flatten()[torch.randperm(weight.numel(), generator=torch.Generator().manual_seed(0))].view_as(weight)
        )
    return save_checkpoint(
        destination, loaded.model, **{k: v for k, v in loaded.metadata.items() if k not in ("model",)}
    )


@pytest.mark.needs("onnx")
def test_the_gate_fails_a_damaged_model(trained_lenet, tmp_path):
    damaged = scrambled(trained_lenet, tmp_path / "damaged.pt")
    report = export(ExportConfig(str(damaged), formats="onnx", int8=True, calib_size=32, output=tmp_path / "out"))
    junit = tmp_path / "junit.xml"
    candidate = str(artifact_path(report, "onnx", "int8"))
    result = run_cli("check", candidate, "--baseline", str(trained_lenet), "--data", "digits", "--junit", str(junit))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL" in result.stdout and "a real drop" in result.stdout
    JUNIT_SCHEMA.validate(str(junit))
    assert 'failures="1"' in junit.read_text() and "AccuracyRegression" in junit.read_text()


@pytest.mark.needs("onnx")
def test_the_gate_fails_int8_calibrated_on_constant_images(trained_lenet, tmp_path):
    """Calibration on blank images sets activation ranges no real digit fits: the gate must not pass it. No
    --int8-correction: its bias correction, fitted to the same blank images, is a second change this test
    is not about."""
    from PIL import Image

    calib = tmp_path / "blank"
    for digit in range(10):
        (calib / str(digit)).mkdir(parents=True)
        for index in range(4):
            Image.new("L", (32, 32), color=0).save(calib / str(digit) / f"{index}.png")
    report = export(
        ExportConfig(
            str(trained_lenet),
            formats="onnx",
            int8=True,
            calib=str(calib),
            calib_size=32,
            output=tmp_path / "o",
            int8_correction="none",
        )
    )
    candidate = str(artifact_path(report, "onnx", "int8"))
    result = run_cli("check", candidate, "--baseline", str(trained_lenet), "--data", "digits", "--json")
    verdict = json.loads(result.stdout)["verdicts"][0]
    assert result.returncode == 1 and verdict["status"] == "fail", verdict
    # accuracy can survive by luck (LeNet's first convolution stays float); the answers do not
    assert verdict["agreement"] < 0.99 and any("agreement" in reason for reason in verdict["reasons"])


def test_could_not_evaluate_is_exit_2_and_never_a_pass(lenet_artifacts, trained_lenet, tmp_path):
    good = str(artifact_path(lenet_artifacts, "onnx", "int8"))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(Path(good).read_bytes()[:200])
    junit = tmp_path / "junit.xml"
    result = run_cli(
        "check", good, str(broken), "--baseline", str(trained_lenet), "--data", "digits", "--junit", str(junit),
        "--min-agreement", "0.9", "--max-drop", "5",
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "not evaluated" in result.stdout and "broken.onnx" in result.stdout
    JUNIT_SCHEMA.validate(str(junit))
    assert 'errors="1"' in junit.read_text() and "NotEvaluated" in junit.read_text()


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda a, c, t: [a, "--baseline", str(t / "missing.pt"), "--data", "digits"], "cannot evaluate the baseline"),
        (lambda a, c, t: [a, "--baseline", c, "--data", str(t / "no-such-folder")], "data folder not found"),
        (lambda a, c, t: [a, "--baseline", str(t / "empty.json"), "--data", "digits"], "not an edgecnn baseline"),
        (lambda a, c, t: [a, "--baseline", c, "--data", "digits", "--metric", "top3"], "unknown metric"),
    ],
)
def test_bad_gate_input_is_one_line_and_exit_2(lenet_artifacts, trained_lenet, tmp_path, make_args, message):
    (tmp_path / "empty.json").write_text("{}")
    args = make_args(str(artifact_path(lenet_artifacts, "onnx", "int8")), str(trained_lenet), tmp_path)
    result = run_cli("check", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_other_images_than_the_baseline_are_not_compared():
    baseline = answers([0, 1, 2], [0, 1, 2])
    candidate = answers([0, 1, 2], [0, 1, 2])
    candidate.indices = [5, 6, 7]
    verdict = compare(baseline, candidate, GateConfig(["x"], Path("b.pt"), "digits"))
    assert verdict.status == "error" and "other images" in verdict.reasons[0]


def test_a_small_drop_on_360_images_is_called_noise_and_a_large_one_real():
    labels = np.arange(360) % 3
    config = GateConfig(["x"], Path("b.pt"), "digits", max_drop=5, min_agreement=0.9)
    baseline = answers(labels, labels)
    slightly = labels.copy()
    slightly[:2] = (slightly[:2] + 1) % 3  # 2 of 360 images lost: 0.56 points
    verdict = compare(baseline, answers(labels, slightly), config)
    assert verdict.status == "pass" and verdict.drop == pytest.approx(200 / 360)
    assert verdict.noise.startswith("within noise") and verdict.drop_ci95[0] < 0 < verdict.drop_ci95[1]
    badly = labels.copy()
    badly[labels == 2] = 0  # class "c" lost entirely: 33 points
    verdict = compare(baseline, answers(labels, badly), config)
    assert verdict.status == "fail" and verdict.noise.startswith("a real drop") and verdict.drop_ci95[0] > 25
    assert [(c.name, c.baseline_correct, c.candidate_correct) for c in verdict.classes] == [("c", 120, 0)]
    assert len(verdict.flips) == 120 and all(f.lost and f.label == "c" and f.candidate == "a" for f in verdict.flips)
    assert any("agreement" in reason for reason in verdict.reasons)


def test_paired_statistics_on_known_values():
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(10, 0) == pytest.approx(2 / 1024)
    assert mcnemar_p(3, 3) == 1.0
    was = np.array([1, 1, 1, 1, 0, 0] * 50, dtype=bool)
    drop, (low, high) = paired_drop(was, np.zeros_like(was))
    assert drop == pytest.approx(200 / 3) and low < drop < high and high - low < 12


def test_gate_config_rejects_bad_thresholds():
    with pytest.raises(GateError, match="fraction"):
        GateConfig(["x"], Path("b.pt"), "digits", min_agreement=99)
    with pytest.raises(GateError, match="no candidate"):
        GateConfig([], Path("b.pt"), "digits")


def test_the_github_actions_example_uses_options_that_exist():
    import yaml

    workflow = yaml.safe_load((Path(__file__).parent.parent / "examples/ci/github-actions.yml").read_text())
    commands = " ".join(step.get("run", "") for step in workflow["jobs"]["gate"]["steps"])
    invocations = {segment.split()[0]: segment for segment in commands.split("edgecnn ")[1:]}
    for command in ("export", "check"):
        options = set(re.findall(r"--[a-z-]+", invocations[command]))
        help_text = run_cli(command, "--help", columns=200).stdout
        assert options and all(option in help_text for option in options), options


def test_the_gate_says_when_its_images_cannot_resolve_the_thresholds():
    from edgecnn.bench.gate import GateReport, markdown, resolution_warning

    warning = resolution_warning(269, max_drop=0.5, min_agreement=0.99)
    assert warning.startswith("269 images cannot resolve these thresholds: one image is 0.37 points")
    assert "--max-drop 0.5 is 1.3 image(s)" in warning and "allows 2.7 changed image(s)" in warning
    assert resolution_warning(10_000, max_drop=0.5, min_agreement=0.99) is None  # 50 and 100 images
    assert "--max-drop" not in resolution_warning(269, max_drop=2, min_agreement=0.99)
    report = GateReport("b.pt", "pytorch", 97.0, "digits", 269, "top1", 0.5, 0.99, [], 0.1, resolution=warning)
    assert f"⚠️ {warning}." in markdown(report)

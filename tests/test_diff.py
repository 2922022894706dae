"""``edgecnn diff``: the same images through checkpoints and artifacts of three formats, compared pairwise."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import artifact_path, run_cli
from PIL import Image

from edgecnn.bench.benchmark import predict
from edgecnn.bench.diff import (
    DiffConfig,
    DiffReport,
    Disagreement,
    PairDiff,
    Side,
    diff,
    margins,
    markdown,
    write_report,
)
from edgecnn.errors import EdgeCNNError
from edgecnn.models import create_model
from edgecnn.models.checkpoint import save_checkpoint


def test_every_pair_is_compared_on_the_same_held_out_images(lenet_artifacts, trained_lenet):
    int8 = [artifact_path(lenet_artifacts, fmt, "int8") for fmt in ("onnx", "openvino", "tflite")]
    paths = [trained_lenet, artifact_path(lenet_artifacts, "onnx", "fp32"), *int8]
    report = diff(DiffConfig(paths, "digits"))
    assert report.images == 269 and len(report.pairs) == 10  # five artifacts, every pair once
    assert [side.runtime for side in report.artifacts] == [
        "pytorch",
        "onnxruntime",
        "onnxruntime",
        "openvino",
        "litert",
    ]
    assert report.artifacts[0].accuracy == pytest.approx(lenet_artifacts.reference_accuracy)
    exported = report.pair(0, 1)  # the checkpoint and its fp32 ONNX export: the same answers
    assert exported.agreement == 100 and exported.max_abs_diff < 1e-3 and not exported.disagreements

    reference = predict(trained_lenet, "digits")
    for index, path in enumerate(int8, start=2):
        run = predict(path, "digits")
        pair = report.pair(0, index)
        differs = np.flatnonzero(reference.logits.argmax(1) != run.logits.argmax(1))
        assert [d.image for d in pair.disagreements] == [reference.images.indices[i] for i in differs]
        assert pair.agreement == pytest.approx(100 - 100 * len(differs) / 269)
        assert pair.max_abs_diff == pytest.approx(np.abs(reference.logits - run.logits).max(), rel=1e-5)
        assert 0 < pair.median_abs_diff < pair.max_abs_diff  # int8 moves every logit a little
        for item, i in zip(pair.disagreements, differs, strict=True):
            assert item.margins[1] == pytest.approx(float(margins(run.logits)[i]), rel=1e-5)
            assert item.label == reference.images.labels[i]


def test_margins_are_top1_minus_top2():
    assert margins(np.array([[1.0, 3.0, 2.5], [0.0, -1.0, 4.0]])).tolist() == [0.5, 4.0]


def test_a_folder_without_classes_compares_without_accuracy(lenet_artifacts, tmp_path):
    rng = np.random.default_rng(0)
    for index in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / f"{index}.png")
    paths = [artifact_path(lenet_artifacts, "onnx", p) for p in ("fp32", "int8")]
    report = diff(DiffConfig(paths, str(tmp_path)))
    assert report.images == 6 and all(side.accuracy is None for side in report.artifacts)
    assert all(item.label is None for item in report.pairs[0].disagreements)


def test_artifacts_on_other_images_are_refused(lenet_artifacts, tmp_path):
    untrained = tmp_path / "untrained.pt"  # no training split: it is scored on all of digits, not the held-out
    save_checkpoint(untrained, create_model("lenet5", num_classes=10, input_size=32))
    with pytest.raises(EdgeCNNError, match="other images"):
        diff(DiffConfig([artifact_path(lenet_artifacts, "onnx", "fp32"), untrained], "digits"))
    with pytest.raises(EdgeCNNError, match="at least two"):
        DiffConfig([untrained], "digits")


def test_cli_prints_the_matrix_and_writes_json_and_markdown(lenet_artifacts, trained_lenet, tmp_path):
    paths = [str(trained_lenet), str(artifact_path(lenet_artifacts, "tflite", "int8"))]
    shown = run_cli("diff", *paths, "--data", "digits", "--report", str(tmp_path / "r"), columns=160)
    assert shown.returncode == 0, shown.stderr
    assert "best.pt" in shown.stdout and "pytorch" in shown.stdout and "litert" in shown.stdout
    assert re.search(r"1–2 +\d+\.\d\d%", shown.stdout)
    stored = json.loads((tmp_path / "r" / "diff.json").read_text())
    assert stored["schema_version"] == 1 and stored["images"] == 269 and len(stored["pairs"]) == 1
    assert "| best.pt |" in (tmp_path / "r" / "diff.md").read_text()
    as_json = run_cli("diff", *paths, "--data", "digits", "--json")
    assert json.loads(as_json.stdout)["pairs"] == stored["pairs"]
    alone = run_cli("diff", paths[0], "--data", "digits")
    assert alone.returncode == 1 and alone.stderr.strip().count("\n") == 0 and "at least two" in alone.stderr


def test_markdown_lists_disagreements_with_their_margins(tmp_path):
    sides = [Side("a/m.onnx", "onnxruntime", "fp32", 90.0), Side("a/m.tflite", "litert", "int8", None)]
    shown = [Disagreement(7, 3, (3, 5), (0.25, 1.5)), Disagreement(9, None, (1, 2), (2.0, 0.125))]
    report = DiffReport("digits: 2 images", 2, sides, [PairDiff(0, 1, 0.0, 0.5, 2.25, shown)])
    written = write_report(report, tmp_path)
    text = written[1].read_text()
    assert text == markdown(report)
    assert "| m.onnx | onnxruntime | fp32 | 90.00% |" in text and "| m.tflite | litert | int8 | – |" in text
    assert "| m.onnx | – | 0.00% (0.5 / 2.25) |" in text
    assert "m.onnx vs m.tflite: 2 image(s) disagree" in text
    assert "| 7 | 3 | 3 / 5 | 0.250 / 1.500 |" in text and "| 9 | – | 1 / 2 | 2.000 / 0.125 |" in text
    assert json.loads((tmp_path / "diff.json").read_text())["pairs"][0]["disagreements"][0]["image"] == 7

"""``edgecnn tune``: real exports of a trained LeNet-5, measured in their runtimes, the fastest within the drop
chosen and deployed with its card; the choice itself on constructed candidates."""

import hashlib
import json
from pathlib import Path

import pytest
from conftest import run_cli

from edgecnn.bench.tune import Candidate, TuneConfig, choose
from edgecnn.errors import EdgeCNNError
from edgecnn.recipe import load_recipe, run_recipe


def digest(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest()


def candidate(fmt, precision, p50, top1, ratio=0.0, threads=1, status="ok") -> Candidate:
    return Candidate(f"{fmt}_{precision}_{ratio}", fmt, precision, ratio, threads, status, 1000, p50_ms=p50, top1=top1)


def test_the_fastest_within_the_drop_wins_and_broken_or_worse_ones_do_not():
    candidates = [
        candidate("onnx", "fp32", 2.0, 97.0),
        candidate("tflite", "fp32", 1.8, 97.2),  # the reference: the best unpruned fp32
        candidate("tflite", "int8", 0.5, 99.0, status="broken"),  # fastest, but export found it broken
        candidate("onnx", "int8", 0.6, 96.0),  # 1.2 points below the reference
        candidate("tflite", "int8", 0.9, 96.9, ratio=0.3),  # 0.3 below: the choice
        candidate("tflite", "int8", 0.8, 96.9, ratio=0.3, threads=2),  # faster, same accuracy: better still
    ]
    choice = choose(candidates, max_drop=0.5)
    assert choice.chosen is candidates[5] and choice.reference_top1 == 97.2
    assert choice.reference.startswith("tflite_fp32_0.0")
    assert [c.verdict for c in candidates] == [
        "within the drop",
        "within the drop",
        "broken at export (outputs unlike PyTorch's)",
        "drop 1.20 > 0.5 point",
        "within the drop",
        "chosen",
    ]
    assert candidates[4].drop == pytest.approx(0.3)
    assert "1.12× faster than the runner-up (tflite int8, pruned 30%, 1 thread)" in choice.why
    assert "2.25× faster than the fastest unpruned fp32 artifact" not in choice.why  # at 2 threads there is none
    assert choose(candidates, max_drop=2.0).chosen is candidates[3]  # a looser budget takes the faster one


def test_a_p50_the_measurement_cannot_tell_apart_goes_to_the_steadier_candidate():
    reference = candidate("onnx", "fp32", 2.0, 97.0)
    two_threads = candidate("tflite", "int8", 0.672, 97.0, threads=2)
    one_thread = candidate("tflite", "int8", 0.690, 97.0)
    two_threads.p50_ci_ms, two_threads.p90_ms = [0.66, 0.70], 3.04
    one_thread.p50_ci_ms, one_thread.p90_ms = [0.68, 0.70], 0.757
    reference.p50_ci_ms, reference.p90_ms = [1.9, 2.1], 2.2
    choice = choose([reference, two_threads, one_thread], max_drop=0.5)
    assert choice.chosen is one_thread
    assert "their p50 intervals overlap" in choice.why and "p90 0.757 against 3.040 ms" in choice.why
    one_thread.p50_ci_ms = [0.705, 0.72]  # now measurably slower: the lowest p50 wins despite its tail
    assert choose([reference, two_threads, one_thread], max_drop=0.5).chosen is two_threads


def test_without_accuracy_there_is_nothing_to_choose_by():
    with pytest.raises(EdgeCNNError, match="tune needs labelled images"):
        choose([candidate("onnx", "fp32", 1.0, None), candidate("onnx", "int8", 0.5, None)], max_drop=0.5)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--prune", "0,abc"], "prune ratios must be comma-separated numbers"),
        (["--prune", "0,1"], "prune ratios must be in [0, 1)"),
        (["--threads", "1,0"], "thread counts must be at least 1"),
        (["--formats", "onnx,zip"], "unknown format 'zip'"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, option, message):
    done = run_cli("tune", "lenet5", *option, "--output", str(tmp_path / "out"))
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()  # nothing started


@pytest.mark.needs("onnx", "tflite", "prune")
def test_tune_measures_every_candidate_and_deploys_the_fastest_within_the_drop(trained_lenet, tmp_path):
    output = tmp_path / "tune"
    done = run_cli(
        "tune", str(trained_lenet), "--formats", "onnx,tflite", "--prune", "0,0.5", "--finetune-epochs", "1",
        "--threads", "1,2", "--runs", "20", "--output", str(output),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((output / "tune.json").read_text())
    candidates = report["candidates"]
    # 2 pruning ratios × 2 formats × fp32/int8 × 2 thread counts, each measured on this machine
    assert len(candidates) == 16 and all(c["p50_ms"] > 0 and c["top1"] is not None for c in candidates)
    assert {(c["prune_ratio"], c["threads"]) for c in candidates} == {(0.0, 1), (0.0, 2), (0.5, 1), (0.5, 2)}
    eligible = [c for c in candidates if c["verdict"] in ("chosen", "within the drop")]
    chosen = report["chosen"]
    assert chosen["p50_ms"] == min(c["p50_ms"] for c in eligible) and chosen["drop"] <= 0.5
    for c in candidates:
        assert c["drop"] == pytest.approx(report["reference_top1"] - c["top1"])
        assert (c in eligible) == (c["drop"] <= 0.5 and c["export_status"] != "broken")
    assert report["environment"]["cpu_model"] and report["data"].startswith("digits")
    # the deployed artifact is the chosen one, byte for byte, and scores what tune measured
    deployed = output / "deploy" / Path(chosen["artifact"]).name
    assert (
        hashlib.sha256(deployed.read_bytes()).digest() == hashlib.sha256(Path(chosen["artifact"]).read_bytes()).digest()
    )
    scored = json.loads(run_cli("eval", str(deployed), "--data", "digits", "--json").stdout)
    assert scored["results"][0]["top1"] == pytest.approx(chosen["top1"])
    card = (output / "deploy" / "DEPLOYMENT.md").read_text()
    assert f"**Ship `{deployed.name}`**" in card and f"p50 {chosen['p50_ms']:.3f} ms" in card
    assert chosen["runtime_version"] in card and "## Runners-up" in card and card.count("| within the drop |") >= 1
    assert (output / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"chosen: {deployed.name}" in done.stdout


@pytest.mark.needs("onnx")
def test_a_tune_step_hands_the_chosen_artifact_to_the_next_step(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"name: recipe\noutput: {tmp_path / 'run'}\nsteps:\n"
        "  - step: train\n    model: lenet5\n    epochs: 1\n"
        "  - step: tune\n    formats: onnx\n    runs: 10\n"
        "  - step: bench\n    runs: 10\n"
    )
    result = run_recipe(load_recipe(recipe))
    assert [r.kind for r in result.steps] == ["train", "tune", "bench"] and result.exit_code == 0
    chosen = json.loads((tmp_path / "run/02-tune/tune.json").read_text())["chosen"]
    bench = json.loads((tmp_path / "run/03-bench/bench.json").read_text())
    assert [r["artifact"] for r in bench["hosts"][0]["results"]][-1].endswith(Path(chosen["artifact"]).name)
    assert "**Ship `" in (tmp_path / "run/report.md").read_text()


def test_tune_config_reads_the_lists_a_user_types():
    config = TuneConfig("lenet5", prune="0, 0.3,0.3", threads="1,2")
    assert config.ratios == [0.0, 0.3] and config.thread_counts == [1, 2] and config.remote is None
    assert TuneConfig("lenet5", device="pi@board").remote == "pi@board"

"""Training on the real digits: learning, freezing, checkpoints, interruption, torchrun."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from edgecnn.errors import EdgeCNNError, WeightsError
from edgecnn.models import create_model, get_model_meta, get_model_spec
from edgecnn.models.checkpoint import load_checkpoint, resolve_model, save_checkpoint
from edgecnn.train import TrainConfig, apply_freeze, backbone_blocks, train


def quick(model: str, output: Path, **overrides) -> TrainConfig:
    settings = {"epochs": 2, "batch_size": 64, "input_size": 32, "output": output, **overrides}
    return TrainConfig(model, **settings)


def test_training_lowers_the_loss_and_writes_the_run(tmp_path):
    result = train(quick("lenet5", tmp_path, epochs=3), progress=False)
    losses = [r.train_loss for r in result.history]
    assert losses[-1] < losses[0] * 0.7
    assert result.test_accuracy > 60  # ten classes: chance is 10 %
    assert {p.name for p in tmp_path.iterdir()} == {"best.pt", "last.pt", "metrics.json", "curves.png"}
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["schema_version"] == 1
    assert metrics["test_accuracy"] == pytest.approx(result.test_accuracy)
    assert 0 <= metrics["data_loading_share"] < 1 and metrics["train_images_per_second"] > 0
    assert len(metrics["history"]) == 3
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_checkpoint_carries_split_preprocessing_and_classes(tmp_path):
    train(quick("lenet5", tmp_path, epochs=1, seed=7), progress=False)
    checkpoint = load_checkpoint(tmp_path / "best.pt")
    meta = get_model_meta(checkpoint.model)
    assert meta.class_names == [str(i) for i in range(10)]
    assert meta.preprocessing.input_shape == (1, 32, 32)
    assert meta.preprocessing.resize == 32  # digits fill the frame: no centre-crop margin
    split = checkpoint.metadata["data"]["split"]
    assert split["seed"] == 7 and len(split["test"]) == checkpoint.metadata["metrics"]["test_images"]
    assert checkpoint.metadata["training"]["epochs"] == 1


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    model = create_model("efficientnet_lite0", num_classes=3, input_size=48).eval()
    get_model_meta(model).class_names = ["a", "b", "c"]
    save_checkpoint(tmp_path / "m.pt", model, note={"why": "test"})
    loaded = resolve_model(tmp_path / "m.pt").model.eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert get_model_meta(loaded).class_names == ["a", "b", "c"]
    assert get_model_meta(loaded).preprocessing == get_model_meta(model).preprocessing
    assert load_checkpoint(tmp_path / "m.pt").metadata["note"] == {"why": "test"}
    assert not list(tmp_path.glob(".*tmp"))


def test_checkpoints_refuse_code_and_strangers(tmp_path):
    torch.save({"format": "edgecnn-checkpoint", "metadata": "{}", "state_dict": {}, "x": Path("/")}, tmp_path / "a.pt")
    with pytest.raises(WeightsError, match=r"checkpoint .* holds Python objects beyond tensors \(pathlib.PosixPath\)"):
        load_checkpoint(tmp_path / "a.pt")
    torch.save(create_model("lenet5").state_dict(), tmp_path / "plain.pt")
    with pytest.raises(WeightsError, match="not an edgecnn checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(WeightsError, match="not an edgecnn checkpoint"):
        resolve_model(tmp_path / "plain.pt", num_classes=3)
    with pytest.raises(EdgeCNNError, match="a checkpoint fixes its weights and input size"):
        resolve_model(tmp_path / "m.pt", weights="imagenet")


def test_frozen_backbone_stays_unchanged(tmp_path):
    start = create_model("mobilenet_v3_small", num_classes=10)
    torch.save(start.state_dict(), tmp_path / "start.pth")
    config = quick("mobilenet_v3_small", tmp_path / "run", epochs=1, weights=str(tmp_path / "start.pth"))
    config.freeze = "backbone"
    train(config, progress=False)
    trained = load_checkpoint(tmp_path / "run" / "best.pt").model.state_dict()
    before = start.state_dict()
    backbone = [k for k in before if not k.startswith("classifier.")]
    assert all(torch.equal(trained[k], before[k]) for k in backbone)
    assert not torch.equal(trained["classifier.3.weight"], before["classifier.3.weight"])


def test_freeze_last_blocks_trains_only_those():
    model, spec = create_model("resnet18"), get_model_spec("resnet18")
    apply_freeze(model, "2", spec)
    trainable = {".".join(n.split(".")[:2]) for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"layer4.0", "layer4.1", "fc.weight", "fc.bias"}
    assert [name for name, _ in backbone_blocks(model, spec)][:3] == ["conv1", "bn1", "layer1.0"]
    with pytest.raises(EdgeCNNError, match="only 10 backbone blocks"):
        apply_freeze(create_model("resnet18"), "11", spec)


def test_googlenet_blocks_leave_out_the_auxiliary_heads():
    model = create_model("googlenet", aux_logits=True)
    names = [name for name, _ in backbone_blocks(model, get_model_spec("googlenet"))]
    assert names[-1] == "inception5b" and not any(n.startswith("aux") for n in names)


def test_fine_tuning_continues_from_a_checkpoint_with_mse(tmp_path):
    train(quick("lenet5", tmp_path / "a", epochs=1), progress=False)
    result = train(quick(str(tmp_path / "a" / "best.pt"), tmp_path / "b", epochs=1, loss="mse"), progress=False)
    assert result.history[0].train_loss < 1  # MSE on one-hot targets from a trained start
    assert load_checkpoint(tmp_path / "b" / "best.pt").metadata["training"]["loss"] == "mse"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"freeze": "head"}, "freeze must be none, backbone or a number"),
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"augment": "blur"}, "unknown augmentation"),
        ({"device": "tpu"}, "device must be auto, cpu or cuda"),
    ],
)
def test_bad_settings_are_refused_before_any_work(tmp_path, overrides, message):
    with pytest.raises(EdgeCNNError, match=message):
        quick("lenet5", tmp_path, **overrides)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgecnn.cli", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def test_training_refuses_images_smaller_than_the_input(tmp_path):
    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (16, 16), (i * 80, 0, 0)).save(tmp_path / "data" / label / f"{i}.png")
    with pytest.raises(EdgeCNNError, match="6 images are smaller than the 32-pixel input"):
        train(quick("lenet5", tmp_path / "run", data=str(tmp_path / "data")), progress=False)


def test_cli_bad_data_path_is_one_line(tmp_path):
    result = run_cli("train", "lenet5", "--data", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: data folder not found")
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_json_result(tmp_path):
    result = run_cli("train", "lenet5", "--epochs", "1", "--output", "run", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["checkpoint"] == "run/best.pt" and data["best_epoch"] == 1


def test_ctrl_c_keeps_the_last_complete_checkpoint(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "edgecnn.cli", "train", "lenet5", "--epochs", "200", "--output", "run"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / "run" / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    checkpoint = load_checkpoint(tmp_path / "run" / "best.pt")
    assert checkpoint.metadata["metrics"]["epoch"] >= 1
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["interrupted"] is True
    assert not list((tmp_path / "run").glob(".*tmp"))


def test_torchrun_two_processes_write_one_checkpoint(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "edgecnn.cli", "train", "lenet5", "--epochs", "2", "--output", "run",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("× 2 processes") == 1  # rank 0 alone reports
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == ["best.pt", "curves.png", "last.pt", "metrics.json"]
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    assert len(history) == 2
    assert load_checkpoint(tmp_path / "run" / "best.pt").metadata["metrics"]["test_accuracy"] > 30

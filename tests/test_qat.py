"""Quantization-aware fine-tuning: the training forward is the int8 simulation, the checkpoint stays a plain one,
and it goes through the same export as any other."""

import json

import pytest
import torch
from conftest import needs_every_format, run_cli
from PIL import Image
from test_sensitivity import digits_images

from edgecnn.export import ExportConfig, export
from edgecnn.models.checkpoint import load_checkpoint
from edgecnn.optimize.int8_correction import recipe_float_layers
from edgecnn.optimize.qat import FakeQuantized
from edgecnn.optimize.sensitivity import fake_quantize_weight, logits, quantizable_layers, quantized
from edgecnn.train import TrainConfig, train


def test_the_qat_forward_is_the_int8_simulation_and_passes_gradients_straight_through(trained_lenet):
    model = load_checkpoint(trained_lenet).model.eval()
    images = torch.from_numpy(digits_images(model, 64))
    simulation = FakeQuantized(model)
    assert set(simulation.layers) == set(quantizable_layers(model)) - set(recipe_float_layers(model))
    with simulation:
        model.train()
        model(images)  # the first training batch sets the ranges; eval mode holds them
        model.eval()
        trained = logits(model, images)
    layers = quantizable_layers(model)
    with quantized(layers, list(simulation.layers), simulation.ranges):
        simulated = logits(model, images)
    assert torch.allclose(trained, simulated, atol=1e-5)
    assert not torch.allclose(trained, logits(model, images), atol=1e-3)  # left: the model computes float again
    weight = torch.randn(8, 4, 3, 3, requires_grad=True)
    rounded = fake_quantize_weight(weight)
    assert torch.equal(rounded.detach(), fake_quantize_weight(weight.detach()))
    steps = rounded.detach() / (weight.detach().reshape(8, -1).abs().amax(1) / 127).view(-1, 1, 1, 1)
    assert torch.allclose(steps, steps.round(), atol=1e-4)  # on the int8 grid, as without gradients
    rounded.sum().backward()
    assert torch.equal(weight.grad, torch.ones_like(weight))


def test_qat_keeps_the_split_and_batchnorm_and_writes_a_plain_checkpoint(tmp_path):
    # LeNet-5 has no BatchNorm to freeze: a short MobileNetV2 run on digits has
    config = TrainConfig("mobilenet_v2", epochs=1, input_size=32, train_images=128, output=tmp_path / "base")
    before = load_checkpoint(train(config, progress=False).checkpoint)
    qat = TrainConfig(str(before.path), epochs=1, train_images=128, qat=True, output=tmp_path / "qat")
    after = load_checkpoint(train(qat, progress=False).checkpoint)
    assert after.metadata["data"]["split"] == before.metadata["data"]["split"]
    assert after.metadata["training"]["qat"] is True and after.metadata["training"]["lr"] == pytest.approx(2e-4)
    old, new = before.model.state_dict(), after.model.state_dict()
    assert old.keys() == new.keys()  # no fake-quantization state in the checkpoint
    norms = [name for name, m in after.model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    frozen = [f"{name}.{part}" for name in norms for part in ("running_mean", "running_var", "weight", "bias")]
    assert norms and all(torch.equal(old[key], new[key]) for key in frozen)
    assert any(
        not torch.equal(old[f"{name}.weight"], new[f"{name}.weight"]) for name in quantizable_layers(after.model)
    )


@needs_every_format
def test_a_qat_checkpoint_exports_to_every_format(trained_lenet, tmp_path):
    result = train(TrainConfig(str(trained_lenet), epochs=1, qat=True, output=tmp_path / "qat"), progress=False)
    report = export(ExportConfig(str(result.checkpoint), int8=True, calib_size=32, output=tmp_path / "export"))
    int8 = [a for a in report.artifacts if a.precision == "int8"]
    assert len(int8) == 3 and all(a.status == "ok" for a in int8), [a.status_reason for a in int8]
    assert json.loads((tmp_path / "qat" / "metrics.json").read_text())["training"]["qat"] is True


def test_qat_needs_a_checkpoint_and_its_own_data(trained_lenet, tmp_path):
    result = run_cli("train", "lenet5", "--qat", "--output", str(tmp_path))
    assert result.returncode != 0 and "give a checkpoint (.pt)" in result.stderr and "Traceback" not in result.stderr
    for label in ("a", "b"):  # another data set: two classes of 32×32 images
        (tmp_path / "other" / label).mkdir(parents=True)
        for index in range(4):
            Image.new("L", (32, 32), 60 * index).save(tmp_path / "other" / label / f"{index}.png")
    other = str(tmp_path / "other")
    result = run_cli("train", str(trained_lenet), "--qat", "--data", other, "--output", str(tmp_path / "run"))
    assert result.returncode != 0 and "--data digits" in result.stderr and "Traceback" not in result.stderr

"""Every registered model runs forward and backward, and exports with torch.export.

Run at small resolutions so the suite stays inside the CI budget; full-resolution figures are
checked on the meta device in test_zoo_reference.py.
"""

import pytest
import torch

from edgecnn.models import create_model, list_models
from edgecnn.models.googlenet import GoogLeNetOutputs

SMALL_INPUT = {"lenet5": 32, "alexnet": 64}
NUM_CLASSES = 7


def small_input(name: str, in_chans: int = 3, batch: int = 2) -> torch.Tensor:
    size = SMALL_INPUT.get(name, 32)
    return torch.randn(batch, in_chans, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", list_models())
def test_forward_and_backward_reach_every_parameter(name):
    torch.manual_seed(0)
    in_chans = 1 if name == "lenet5" else 3
    model = create_model(name, num_classes=NUM_CLASSES, in_chans=in_chans).train()
    out = model(small_input(name, in_chans))
    assert out.shape == (2, NUM_CLASSES)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    unreached = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unreached, f"no gradient for {unreached[:3]}"


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0", "resnet18", "googlenet", "vgg11"])
def test_single_channel_input(name):
    model = create_model(name, num_classes=3, in_chans=1).eval()
    with torch.no_grad():
        assert model(small_input(name, in_chans=1)).shape == (2, 3)


def test_googlenet_auxiliary_heads_train_and_vanish_at_inference():
    model = create_model("googlenet", num_classes=5, aux_logits=True).train()
    out = model(small_input("googlenet", batch=2))
    assert isinstance(out, GoogLeNetOutputs)
    assert all(t.shape == (2, 5) for t in out)
    sum(t.sum() for t in out).backward()
    assert model.aux1.fc2.weight.grad is not None and model.aux2.fc2.weight.grad is not None
    with torch.no_grad():
        assert model.eval()(small_input("googlenet")).shape == (2, 5)


def test_googlenet_transform_input_rescales_to_unit_range():
    model = create_model("googlenet", transform_input=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    white = (torch.ones(1, 3, 2, 2) - mean) / std
    assert torch.allclose(model._transform_input(white), torch.ones(1, 3, 2, 2), atol=1e-6)


def test_stochastic_depth_is_identity_at_inference_and_drops_whole_samples_in_training():
    model = create_model("efficientnet_b0", num_classes=3, stochastic_depth_prob=0.5)
    x = small_input("efficientnet_b0", batch=4)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), model(x))
    drop = model.features[6][3].stochastic_depth.train()
    assert drop.drop_prob > 0.4
    torch.manual_seed(0)
    features = torch.rand(64, 8, 4, 4) + 1
    out = drop(features)
    dropped = [bool((o == 0).all()) for o in out]
    for original, result, was_dropped in zip(features, out, dropped, strict=True):
        assert was_dropped or torch.allclose(result, original / (1 - drop.drop_prob))
    assert 0 < sum(dropped) < 64


@pytest.mark.parametrize("name", list_models())
def test_torch_export(name):
    in_chans = 1 if name == "lenet5" else 3
    model = create_model(name, num_classes=NUM_CLASSES, in_chans=in_chans).eval()
    example = small_input(name, in_chans, batch=1)
    exported = torch.export.export(model, (example,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(example), model(example), rtol=1e-4, atol=1e-5)

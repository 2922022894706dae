"""BatchNorm folding is exact for every family: no BatchNorm left, same outputs."""

import pytest
import torch
from torch import nn

from edgecnn.models import create_model, get_model_meta, list_models
from edgecnn.optimize import fold_batchnorm


def randomise_norms(model: nn.Module) -> None:
    """Non-trivial statistics, so folding has something to get wrong."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            channels = module.num_features
            module.running_mean.copy_(torch.randn(channels, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(channels, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(channels, generator=generator) * 0.1)


@pytest.mark.parametrize("name", list_models())
def test_folding_is_exact_and_leaves_no_batchnorm(name):
    in_chans = 1 if name == "lenet5" else 3
    model = create_model(name, num_classes=10, in_chans=in_chans).eval()
    randomise_norms(model)
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    identities = sum(isinstance(m, nn.Identity) for m in folded.modules())
    assert identities - sum(isinstance(m, nn.Identity) for m in model.modules()) == norms
    size = 64 if name == "alexnet" else 32
    x = torch.randn(2, in_chans, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = model(x), folded(x)
    scale = expected.abs().max()
    assert (actual - expected).abs().max() <= 1e-5 * scale + 1e-6
    assert get_model_meta(folded).name == name


def test_folding_keeps_module_names_and_the_original_untouched():
    model = create_model("resnet18", num_classes=4).eval()
    randomise_norms(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert isinstance(folded.bn1, nn.Identity) and folded.conv1.bias is not None
    assert "layer1.0.conv1.weight" in folded.state_dict()


def test_a_conv_feeding_two_consumers_is_not_folded():
    class Fork(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.bn(y) + y

    folded = fold_batchnorm(Fork())
    assert isinstance(folded.bn, nn.BatchNorm2d)

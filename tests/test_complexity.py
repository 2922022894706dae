import pytest
from torch import nn

from edgecnn.models import count_macs, count_params, layer_summary
from tests.conftest import build_on_meta


def tiny() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1),  # 8·8·8 outputs × 4·9 = 18,432
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise: 512 × 9 = 4,608
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),  # 24
    )


def test_macs_by_hand():
    assert count_macs(tiny(), (4, 8, 8)) == 18_432 + 4_608 + 24


def test_macs_scale_with_resolution_not_batch():
    model = tiny()
    assert count_macs(model, (1, 4, 16, 16)) == count_macs(model, (7, 4, 16, 16))
    assert count_macs(model, (4, 16, 16)) == 4 * (18_432 + 4_608) + 24


@pytest.mark.parametrize("name", ["resnet50", "googlenet", "efficientnet_b0", "lenet5"])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_layer_summary_adds_up(name, depth):
    model = build_on_meta(name)
    size = 32 if name == "lenet5" else 224
    rows = layer_summary(model, size, depth)
    assert sum(r.macs for r in rows) == count_macs(model, size)
    assert sum(r.params for r in rows) == count_params(model)
    assert all(r.name.count(".") < depth for r in rows)


def test_layer_summary_output_shapes():
    rows = {r.name: r for r in layer_summary(build_on_meta("resnet18"), 224, depth=1)}
    assert rows["layer1"].output_shape == (1, 64, 56, 56)
    assert rows["layer4"].output_shape == (1, 512, 7, 7)
    assert rows["fc"].output_shape == (1, 1000)

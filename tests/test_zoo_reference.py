"""The zoo against torchvision's own figures: parameter counts, state-dict layout, MACs."""

import math

import pytest
import torch

from edgecnn.models import count_macs, count_params, get_model_spec, list_models
from tests.conftest import build_on_meta

TORCHVISION_NAMES = [n for n in list_models() if not n.startswith(("lenet", "mobilenet_v1", "efficientnet_lite"))]
TORCHVISION_NAMES.remove("efficientnet")


@pytest.mark.parametrize("name", TORCHVISION_NAMES)
def test_state_dict_layout_equals_torchvision(name, reference_shapes):
    state = build_on_meta(name).state_dict()
    assert {k: list(v.shape) for k, v in state.items()} == reference_shapes[name]


@pytest.mark.parametrize("name", [n for n in TORCHVISION_NAMES if n != "vgg13_bn"])
def test_parameters_and_macs_equal_torchvision(name, reference_models):
    reference = reference_models[name]
    model = build_on_meta(name)
    assert count_params(model) == reference["params"]
    macs = count_macs(model, reference["crop"])
    assert macs / 1e9 == pytest.approx(reference["gflops"], rel=0.01)


@pytest.mark.parametrize("name", [n for n in TORCHVISION_NAMES if n != "vgg13_bn"])
def test_published_accuracy_and_crop_are_carried(name, reference_models):
    reference = reference_models[name]
    weights = get_model_spec(name).published["imagenet-v1"]  # the reference has the first weight set
    assert weights.top1 == pytest.approx(reference["acc1"])
    assert weights.top5 == pytest.approx(reference["acc5"])
    assert weights.crop == reference["crop"]


def test_googlenet_with_auxiliary_heads_has_torchvision_aux_layout():
    model = build_on_meta("googlenet", aux_logits=True)
    aux = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("aux")}
    assert aux["aux1.conv.conv.weight"] == (128, 512, 1, 1)
    assert aux["aux2.fc1.weight"] == (1024, 2048)
    assert aux["aux2.fc2.weight"] == (1000, 1024)


@pytest.mark.parametrize(
    ("name", "params", "macs"),
    [
        ("lenet5", 61_706, 0.42e6),  # LeCun et al. 1998, full C3 connections
        ("mobilenet_v1", 4_231_976, 569e6),  # Howard et al. 2017, 1.0-224
    ],
)
def test_published_figures_outside_torchvision(name, params, macs):
    model = build_on_meta(name)
    assert count_params(model) == params
    assert count_macs(model, get_model_spec(name).default_input_size()) == pytest.approx(macs, rel=0.01)


def test_efficientnet_lite0_has_the_published_size():
    assert round(count_params(build_on_meta("efficientnet_lite0")) / 1e6, 1) == 4.7


def test_width_multiplier_scales_mobilenets():
    full, half = (
        count_params(build_on_meta("mobilenet_v2")),
        count_params(build_on_meta("mobilenet_v2", width_mult=0.5)),
    )
    assert half < 0.6 * full
    v1_quarter = build_on_meta("mobilenet_v1", width_mult=0.25)
    assert v1_quarter.features[0][0].out_channels == 8
    assert math.isclose(count_params(v1_quarter) / 1e6, 0.47, abs_tol=0.01)  # published 0.47M


def test_counting_leaves_the_model_untouched():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8))
    model.train()
    before = model[1].running_mean.clone()
    assert count_macs(model, (3, 8, 8)) == 8 * 8 * 8 * 3 * 9
    assert model.training and model[1].training
    assert model[0].weight.device.type == "cpu"
    assert torch.equal(model[1].running_mean, before)

"""EfficientNet variants follow from B0 by the scaling rules, checked on the built modules."""

import math

import pytest
from torch import nn

from edgecnn.models import create_model, get_model_meta
from edgecnn.models import efficientnet as eff
from edgecnn.models.layers import SqueezeExcitation, make_divisible
from tests.conftest import build_on_meta

# Table 1 of Tan & Le 2019: (output channels, repeats) of B0's seven MBConv stages, and its stem.
B0_TABLE = [(16, 1), (24, 2), (40, 2), (80, 3), (112, 3), (192, 4), (320, 1)]
B0_STEM = 32


def stages_of(model: nn.Module) -> list[tuple[int, int]]:
    """(output channels, repeats) of each MBConv stage, read off the built model."""
    return [(stage[-1].out_channels, len(stage)) for stage in list(model.features)[1:-1]]


@pytest.mark.parametrize("variant", list(eff.PUBLISHED))
def test_published_variants_are_b0_scaled_by_their_multipliers(variant):
    width, depth = eff.PUBLISHED[variant].width, eff.PUBLISHED[variant].depth
    model = build_on_meta(f"efficientnet_{variant}")
    expected = [(make_divisible(c * width), math.ceil(n * depth)) for c, n in B0_TABLE]
    assert stages_of(model) == expected
    assert model.features[0].out_channels == make_divisible(B0_STEM * width)
    assert model.features[-1].out_channels == 4 * expected[-1][0]


@pytest.mark.parametrize("phi", [0.0, 0.5, 1.0, 2.7])
def test_any_phi_follows_the_compound_rule(phi):
    model = build_on_meta("efficientnet", phi=phi)
    width, depth = 1.1**phi, 1.2**phi
    assert stages_of(model) == [(make_divisible(c * width), math.ceil(n * depth)) for c, n in B0_TABLE]
    assert eff.compound_scaling(phi).resolution == round(224 * 1.15**phi)


def test_phi_zero_is_b0():
    b0 = build_on_meta("efficientnet_b0").state_dict()
    phi0 = build_on_meta("efficientnet", phi=0).state_dict()
    assert {k: v.shape for k, v in b0.items()} == {k: v.shape for k, v in phi0.items()}


def test_compound_constants_double_the_flops_per_step():
    assert pytest.approx(2.0, abs=0.1) == eff.ALPHA * eff.BETA**2 * eff.GAMMA**2


def test_phi_sets_the_default_resolution_and_rejects_negatives():
    resolution = eff.compound_scaling(1.5).resolution
    assert get_model_meta(create_model("efficientnet", phi=1.5)).preprocessing.crop == resolution
    with pytest.raises(ValueError, match="phi must be >= 0"):
        eff.compound_scaling(-1)


@pytest.mark.parametrize("variant", list(eff.LITE))
def test_lite_has_no_squeeze_excite_relu6_and_fixed_stem_and_head(variant):
    model = build_on_meta(f"efficientnet_{variant}")
    kinds = {type(m) for m in model.modules()}
    assert SqueezeExcitation not in kinds and nn.SiLU not in kinds
    assert nn.ReLU6 in kinds
    assert model.features[0].out_channels == 32
    assert model.features[-1].out_channels == 1280
    stages = stages_of(model)
    assert stages[0][1] == 1 and stages[-1][1] == 1
    depth = eff.LITE[variant].depth
    assert [n for _, n in stages[1:-1]] == [math.ceil(n * depth) for _, n in B0_TABLE[1:-1]]

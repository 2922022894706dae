"""EfficientNet B0–B7 (Tan & Le 2019), compound-scaled from B0, and the edge variant EfficientNet-Lite.

Scaling is data, not code: B0's stages (Table 1 of the paper) are scaled by a width and a depth
multiplier. The compound rule gives them from one coefficient φ — depth α^φ, width β^φ, resolution
γ^φ with α=1.2, β=1.1, γ=1.15 — and :func:`efficientnet` builds any φ, fractional too. The published
B1–B7 round these multipliers by hand (B1 keeps width 1.0), so they are built from the published
table, as torchvision does, which is what lets its checkpoints load.

Lite (TensorFlow's edge variant) drops squeeze-excite, uses ReLU6, and keeps the stem, the head and
the repeats of the first and last stage fixed: operations every int8 runtime accelerates.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from edgecnn.models._registry import Builder, register_model
from edgecnn.models._weights import imagenet_weights, torchvision_weights
from edgecnn.models.layers import ActLayer, ConvNormAct, NormLayer, SqueezeExcitation, StochasticDepth, make_divisible

ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15  # depth, width, resolution bases of the compound rule
BASE_RESOLUTION = 224


@dataclass(frozen=True)
class StageConfig:
    """One stage of MBConv blocks: expansion, kernel, first stride, channels in/out, repeats."""

    expand_ratio: int
    kernel: int
    stride: int
    in_channels: int
    out_channels: int
    num_layers: int

    def scaled(self, width: float, depth: float) -> StageConfig:
        """Channels rounded to multiples of 8, repeats rounded up (the paper's rounding)."""
        return dataclasses.replace(
            self,
            in_channels=make_divisible(self.in_channels * width),
            out_channels=make_divisible(self.out_channels * width),
            num_layers=math.ceil(self.num_layers * depth),
        )


B0_STAGES = (
    StageConfig(1, 3, 1, 32, 16, 1),
    StageConfig(6, 3, 2, 16, 24, 2),
    StageConfig(6, 5, 2, 24, 40, 2),
    StageConfig(6, 3, 2, 40, 80, 3),
    StageConfig(6, 5, 1, 80, 112, 3),
    StageConfig(6, 5, 2, 112, 192, 4),
    StageConfig(6, 3, 1, 192, 320, 1),
)


@dataclass(frozen=True)
class Scaling:
    """Multipliers of one variant relative to B0."""

    width: float
    depth: float
    resolution: int
    dropout: float


def compound_scaling(phi: float) -> Scaling:
    """The compound rule: width β^φ, depth α^φ, resolution γ^φ·224; dropout +0.1 every 2 steps of φ."""
    if phi < 0:
        raise ValueError(f"phi must be >= 0, got {phi}")
    return Scaling(
        width=BETA**phi,
        depth=ALPHA**phi,
        resolution=round(BASE_RESOLUTION * GAMMA**phi),
        dropout=min(0.5, 0.2 + 0.1 * (phi // 2)),
    )


# The published variants (Tan & Le 2019; torchvision's builders): width, depth, resolution, dropout
PUBLISHED = {
    "b0": Scaling(1.0, 1.0, 224, 0.2),
    "b1": Scaling(1.0, 1.1, 240, 0.2),
    "b2": Scaling(1.1, 1.2, 260, 0.3),
    "b3": Scaling(1.2, 1.4, 300, 0.3),
    "b4": Scaling(1.4, 1.8, 380, 0.4),
    "b5": Scaling(1.6, 2.2, 456, 0.4),
    "b6": Scaling(1.8, 2.6, 528, 0.5),
    "b7": Scaling(2.0, 3.1, 600, 0.5),
}
LITE = {
    "lite0": Scaling(1.0, 1.0, 224, 0.2),
    "lite1": Scaling(1.0, 1.1, 240, 0.2),
    "lite2": Scaling(1.1, 1.2, 260, 0.3),
    "lite3": Scaling(1.2, 1.4, 280, 0.3),
    "lite4": Scaling(1.4, 1.8, 300, 0.3),
}


def scale_stages(width: float, depth: float, lite: bool = False) -> list[StageConfig]:
    """B0's stages scaled; Lite keeps the stem width (32) and the first and last stage's repeats."""
    stages = [stage.scaled(width, depth) for stage in B0_STAGES]
    if lite:
        stages[0] = dataclasses.replace(stages[0], in_channels=B0_STAGES[0].in_channels, num_layers=1)
        stages[-1] = dataclasses.replace(stages[-1], num_layers=B0_STAGES[-1].num_layers)
    return stages


class MBConv(nn.Module):
    """Mobile inverted bottleneck: 1×1 expand, depthwise k×k, squeeze-excite, linear 1×1 project."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand_ratio: int,
        kernel: int,
        stride: int,
        drop_prob: float,
        norm_layer: NormLayer,
        act_layer: ActLayer,
        use_se: bool,
    ) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and in_channels == out_channels
        expanded = make_divisible(in_channels * expand_ratio)
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(ConvNormAct(in_channels, expanded, 1, norm_layer=norm_layer, act_layer=act_layer))
        layers.append(
            ConvNormAct(expanded, expanded, kernel, stride, expanded, norm_layer=norm_layer, act_layer=act_layer)
        )
        if use_se:
            layers.append(SqueezeExcitation(expanded, max(1, in_channels // 4), nn.SiLU, nn.Sigmoid))
        layers.append(ConvNormAct(expanded, out_channels, 1, norm_layer=norm_layer, act_layer=None))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(drop_prob)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_res_connect:
            out = self.stochastic_depth(out) + x
        return out


class EfficientNet(nn.Module):
    def __init__(
        self,
        stages: list[StageConfig],
        head_channels: int,
        num_classes: int = 1000,
        in_chans: int = 3,
        dropout: float = 0.2,
        stochastic_depth_prob: float = 0.2,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActLayer = nn.SiLU,
        use_se: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            ConvNormAct(in_chans, stages[0].in_channels, 3, 2, norm_layer=norm_layer, act_layer=act_layer)
        ]
        total_blocks = sum(stage.num_layers for stage in stages)
        block_id = 0
        for stage in stages:
            blocks: list[nn.Module] = []
            for i in range(stage.num_layers):
                blocks.append(
                    MBConv(
                        stage.in_channels if i == 0 else stage.out_channels,
                        stage.out_channels,
                        stage.expand_ratio,
                        stage.kernel,
                        stage.stride if i == 0 else 1,
                        stochastic_depth_prob * block_id / total_blocks,
                        norm_layer,
                        act_layer,
                        use_se,
                    )
                )
                block_id += 1
            layers.append(nn.Sequential(*blocks))
        layers.append(
            ConvNormAct(stages[-1].out_channels, head_channels, 1, norm_layer=norm_layer, act_layer=act_layer)
        )
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(head_channels, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.out_features)
                nn.init.uniform_(module.weight, -bound, bound)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(torch.flatten(self.avgpool(x), 1))


def build_efficientnet(
    scaling: Scaling,
    num_classes: int = 1000,
    in_chans: int = 3,
    dropout: float | None = None,
    stochastic_depth_prob: float = 0.2,
    norm_layer: NormLayer = nn.BatchNorm2d,
) -> EfficientNet:
    """An EfficientNet (with squeeze-excite and SiLU) at the given width and depth multipliers."""
    stages = scale_stages(scaling.width, scaling.depth)
    return EfficientNet(
        stages,
        4 * stages[-1].out_channels,
        num_classes,
        in_chans,
        scaling.dropout if dropout is None else dropout,
        stochastic_depth_prob,
        norm_layer,
    )


def build_efficientnet_lite(
    scaling: Scaling,
    num_classes: int = 1000,
    in_chans: int = 3,
    dropout: float | None = None,
    stochastic_depth_prob: float = 0.2,
) -> EfficientNet:
    """EfficientNet-Lite: no squeeze-excite, ReLU6, stem 32 and head 1280 at every size."""
    return EfficientNet(
        scale_stages(scaling.width, scaling.depth, lite=True),
        1280,
        num_classes,
        in_chans,
        scaling.dropout if dropout is None else dropout,
        stochastic_depth_prob,
        act_layer=nn.ReLU6,
        use_se=False,
    )


def _phi_resolution(kwargs: Mapping[str, Any]) -> int:
    return compound_scaling(kwargs.get("phi", 1.0)).resolution


@register_model(family="efficientnet", resolution=_phi_resolution, interpolation="bicubic", paper="Tan & Le 2019")
def efficientnet(
    phi: float = 1.0,
    num_classes: int = 1000,
    in_chans: int = 3,
    dropout: float | None = None,
    stochastic_depth_prob: float = 0.2,
) -> EfficientNet:
    """EfficientNet at any compound coefficient φ (phi=1.5 …), scaled from B0 by the compound rule."""
    return build_efficientnet(compound_scaling(phi), num_classes, in_chans, dropout, stochastic_depth_prob)


# torchvision checkpoints (IMAGENET1K_V1, ported, evaluated bicubic): file, top-1, top-5, evaluation crop, resize
_CHECKPOINTS = {
    "b0": ("efficientnet_b0_rwightman-7f5810bc.pth", 77.692, 93.532, 224, 256),
    "b1": ("efficientnet_b1_rwightman-bac287d4.pth", 78.642, 94.186, 240, 256),
    "b2": ("efficientnet_b2_rwightman-c35c1473.pth", 80.608, 95.310, 288, 288),
    "b3": ("efficientnet_b3_rwightman-b3899882.pth", 82.008, 96.054, 300, 320),
    "b4": ("efficientnet_b4_rwightman-23ab8bcd.pth", 83.384, 96.594, 380, 384),
    "b5": ("efficientnet_b5_lukemelas-1a07897c.pth", 83.444, 96.628, 456, 456),
    "b6": ("efficientnet_b6_lukemelas-24a108a5.pth", 84.008, 96.916, 528, 528),
    "b7": ("efficientnet_b7_lukemelas-c5b4e57e.pth", 84.122, 96.908, 600, 600),
}
# IMAGENET1K_V2, retrained by torchvision with its own recipe (bilinear); published for B1 only.
_RETRAINED = {"b1": torchvision_weights("efficientnet_b1-c27df63c.pth", 79.838, 94.934, crop=240, resize=255)}
# B5–B7's checkpoints were trained with TensorFlow's batch-norm settings.
_TF_NORM = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)


def _efficientnet_model(variant: str) -> Callable[[Builder], Builder]:
    """Register one of B0–B7 with its torchvision checkpoints, at the crop and resize they were evaluated at."""
    filename, top1, top5, crop, resize = _CHECKPOINTS[variant]
    return register_model(
        family="efficientnet",
        resolution=crop,
        crop_ratio=crop / resize,
        interpolation="bicubic",
        published=imagenet_weights(
            torchvision_weights(filename, top1, top5, crop=crop, resize=resize, interpolation="bicubic"),
            _RETRAINED.get(variant),
        ),
        paper="Tan & Le 2019",
    )


def _lite_model(variant: str) -> Callable[[Builder], Builder]:
    """Register a Lite variant at its own resolution, without weights: torchvision publishes none for Lite."""
    return register_model(
        family="efficientnet",
        resolution=LITE[variant].resolution,
        interpolation="bicubic",
        paper="TensorFlow TPU efficientnet/lite",
    )


@_efficientnet_model("b0")
def efficientnet_b0(
    num_classes: int = 1000, in_chans: int = 3, dropout: float | None = None, stochastic_depth_prob: float = 0.2
) -> EfficientNet:
    """EfficientNet-B0 (width 1.0, depth 1.0)."""
    return build_efficientnet(PUBLISHED["b0"], num_classes, in_chans, dropout, stochastic_depth_prob)


@_efficientnet_model("b1")
def efficientnet_b1(
    num_classes: int = 1000, in_chans: int = 3, dropout: float | None = None, stochastic_depth_prob: float = 0.2
) -> EfficientNet:
    """EfficientNet-B1 (width 1.0, depth 1.1)."""
    return build_efficientnet(PUBLISHED["b1"], num_classes, in_chans, dropout, stochastic_depth_prob)


@_efficientnet_model("b2")
def efficientnet_b2(
    num_classes: int = 1000, in_chans: int = 3, dropout: float | None = None, stochastic_depth_prob: float = 0.2
) -> EfficientNet:
    """EfficientNet-B2 (width 1.1, depth 1.2)."""
    return build_efficientnet(PUBLISHED["b2"], num_classes, in_chans, dropout, stochastic_depth_prob)


@_efficientnet_model("b3")
def efficientnet_b3(
    num_classes: int = 1000, in_chans: int = 3, dropout: float | None = None, stochastic_depth_prob: float = 0.2
) -> EfficientNet:
    """EfficientNet-B3 (width 1.2, depth 1.4)."""
    return build_efficientnet(PUBLISHED["b3"], num_classes, in_chans, dropout, stochastic_depth_prob)


@_efficientnet_model("b4")
def efficientnet_b4(
    num_classes: int = 1000, in_chans: int = 3, dropout: float | None = None, stochastic_depth_prob: float = 0.2
) -> EfficientNet:
    """EfficientNet-B4 (width 1.4, depth 1.8)."""
    return build_efficientnet(PUBLISHED["b4"], num_classes, in_chans, dropout, stochastic_depth_prob)


@_efficientnet_model("b5")
def efficientnet_b5(
    num_classes: int = 1000, in_chans: int = 3, dropout: float | None = None, stochastic_depth_prob: float = 0.2
) -> EfficientNet:
    """EfficientNet-B5 (width 1.6, depth 2.2)."""
    return build_efficientnet(PUBLISHED["b5"], num_classes, in_chans, dropout, stochastic_depth_prob, _TF_NORM)


@_efficientnet_model("b6")
def efficientnet_b6(
    num_classes: int = 1000, in_chans: int = 3, dropout: float | None = None, stochastic_depth_prob: float = 0.2
) -> EfficientNet:
    """EfficientNet-B6 (width 1.8, depth 2.6)."""
    return build_efficientnet(PUBLISHED["b6"], num_classes, in_chans, dropout, stochastic_depth_prob, _TF_NORM)


@_efficientnet_model("b7")
def efficientnet_b7(
    num_classes: int = 1000, in_chans: int = 3, dropout: float | None = None, stochastic_depth_prob: float = 0.2
) -> EfficientNet:
    """EfficientNet-B7 (width 2.0, depth 3.1)."""
    return build_efficientnet(PUBLISHED["b7"], num_classes, in_chans, dropout, stochastic_depth_prob, _TF_NORM)


@_lite_model("lite0")
def efficientnet_lite0(
    num_classes: int = 1000, in_chans: int = 3, dropout: float | None = None, stochastic_depth_prob: float = 0.2
) -> EfficientNet:
    """EfficientNet-Lite0: no squeeze-excite, ReLU6; int8-friendly."""
    return build_efficientnet_lite(LITE["lite0"], num_classes, in_chans, dropout, stochastic_depth_prob)


@_lite_model("lite1")
def efficientnet_lite1(
    num_classes: int = 1000, in_chans: int = 3, dropout: float | None = None, stochastic_depth_prob: float = 0.2
) -> EfficientNet:
    """EfficientNet-Lite1: no squeeze-excite, ReLU6; int8-friendly."""
    return build_efficientnet_lite(LITE["lite1"], num_classes, in_chans, dropout, stochastic_depth_prob)


@_lite_model("lite2")
def efficientnet_lite2(
    num_classes: int = 1000, in_chans: int = 3, dropout: float | None = None, stochastic_depth_prob: float = 0.2
) -> EfficientNet:
    """EfficientNet-Lite2: no squeeze-excite, ReLU6; int8-friendly."""
    return build_efficientnet_lite(LITE["lite2"], num_classes, in_chans, dropout, stochastic_depth_prob)


@_lite_model("lite3")
def efficientnet_lite3(
    num_classes: int = 1000, in_chans: int = 3, dropout: float | None = None, stochastic_depth_prob: float = 0.2
) -> EfficientNet:
    """EfficientNet-Lite3: no squeeze-excite, ReLU6; int8-friendly."""
    return build_efficientnet_lite(LITE["lite3"], num_classes, in_chans, dropout, stochastic_depth_prob)


@_lite_model("lite4")
def efficientnet_lite4(
    num_classes: int = 1000, in_chans: int = 3, dropout: float | None = None, stochastic_depth_prob: float = 0.2
) -> EfficientNet:
    """EfficientNet-Lite4: no squeeze-excite, ReLU6; int8-friendly."""
    return build_efficientnet_lite(LITE["lite4"], num_classes, in_chans, dropout, stochastic_depth_prob)

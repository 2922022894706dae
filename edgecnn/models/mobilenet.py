"""MobileNet v1 (Howard et al. 2017), v2 (Sandler et al. 2018) and v3 (Howard et al. 2019)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from edgecnn.models._registry import register_model
from edgecnn.models._weights import imagenet_weights, torchvision_weights
from edgecnn.models.layers import ActLayer, ConvNormAct, NormLayer, SqueezeExcitation, init_weights, make_divisible


class _Classifier(nn.Module):
    """Global average pooling then the head; shared by the MobileNets."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(torch.flatten(self.avgpool(x), 1))


# --- MobileNet v1 -----------------------------------------------------------------------------

# (output channels, stride) of the 13 depthwise-separable blocks (Table 1 of the paper)
_V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)) + ((512, 1),) * 5 + ((1024, 2), (1024, 1))


class MobileNetV1(_Classifier):
    """A 3×3 stem then depthwise 3×3 + pointwise 1×1 pairs; ReLU6 as in TensorFlow's reference."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, dropout: float = 0.2):
        super().__init__()
        channels = make_divisible(32 * width_mult)
        layers: list[nn.Module] = [ConvNormAct(in_chans, channels, 3, 2, act_layer=nn.ReLU6)]
        for out, stride in _V1_BLOCKS:
            out = make_divisible(out * width_mult)
            layers.append(
                nn.Sequential(
                    ConvNormAct(channels, channels, 3, stride, groups=channels, act_layer=nn.ReLU6),
                    ConvNormAct(channels, out, 1, act_layer=nn.ReLU6),
                )
            )
            channels = out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, num_classes))
        init_weights(self)


# --- MobileNet v2 -----------------------------------------------------------------------------


class InvertedResidual(nn.Module):
    """v2 block: 1×1 expand (ReLU6), 3×3 depthwise (ReLU6), linear 1×1 projection; residual if shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = round(in_channels * expand_ratio)
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvNormAct(in_channels, hidden, 1, act_layer=nn.ReLU6))
        layers += [
            ConvNormAct(hidden, hidden, 3, stride, groups=hidden, act_layer=nn.ReLU6),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


# expansion t, output channels c, repeats n, first stride s (Table 2 of the paper)
_V2_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2(_Classifier):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, dropout: float = 0.2):
        super().__init__()
        channels = make_divisible(32 * width_mult)
        last_channels = make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [ConvNormAct(in_chans, channels, 3, 2, act_layer=nn.ReLU6)]
        for t, c, n, s in _V2_SETTING:
            out = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(channels, out, s if i == 0 else 1, t))
                channels = out
        layers.append(ConvNormAct(channels, last_channels, 1, act_layer=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last_channels, num_classes))
        init_weights(self)


# --- MobileNet v3 -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BneckConfig:
    """One row of Tables 1–2 of the v3 paper: a bottleneck's shape before width scaling."""

    in_channels: int
    kernel: int
    expanded: int
    out_channels: int
    use_se: bool
    activation: str  # "RE" (ReLU) or "HS" (hard-swish)
    stride: int

    def scaled(self, width_mult: float) -> BneckConfig:
        return BneckConfig(
            make_divisible(self.in_channels * width_mult),
            self.kernel,
            make_divisible(self.expanded * width_mult),
            make_divisible(self.out_channels * width_mult),
            self.use_se,
            self.activation,
            self.stride,
        )


class Bneck(nn.Module):
    """v3 block: optional 1×1 expand, depthwise, optional squeeze-excite (hard-sigmoid), 1×1 project."""

    def __init__(self, cfg: BneckConfig, norm_layer: NormLayer) -> None:
        super().__init__()
        act_layer: ActLayer = nn.Hardswish if cfg.activation == "HS" else nn.ReLU
        self.use_res_connect = cfg.stride == 1 and cfg.in_channels == cfg.out_channels
        layers: list[nn.Module] = []
        if cfg.expanded != cfg.in_channels:
            layers.append(ConvNormAct(cfg.in_channels, cfg.expanded, 1, norm_layer=norm_layer, act_layer=act_layer))
        layers.append(
            ConvNormAct(
                cfg.expanded,
                cfg.expanded,
                cfg.kernel,
                cfg.stride,
                cfg.expanded,
                norm_layer=norm_layer,
                act_layer=act_layer,
            )
        )
        if cfg.use_se:
            squeeze = make_divisible(cfg.expanded // 4)
            layers.append(SqueezeExcitation(cfg.expanded, squeeze, nn.ReLU, nn.Hardsigmoid))
        layers.append(ConvNormAct(cfg.expanded, cfg.out_channels, 1, norm_layer=norm_layer, act_layer=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = cfg.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_res_connect else out


_V3_LARGE = tuple(
    BneckConfig(*row)
    for row in (
        (16, 3, 16, 16, False, "RE", 1),
        (16, 3, 64, 24, False, "RE", 2),
        (24, 3, 72, 24, False, "RE", 1),
        (24, 5, 72, 40, True, "RE", 2),
        (40, 5, 120, 40, True, "RE", 1),
        (40, 5, 120, 40, True, "RE", 1),
        (40, 3, 240, 80, False, "HS", 2),
        (80, 3, 200, 80, False, "HS", 1),
        (80, 3, 184, 80, False, "HS", 1),
        (80, 3, 184, 80, False, "HS", 1),
        (80, 3, 480, 112, True, "HS", 1),
        (112, 3, 672, 112, True, "HS", 1),
        (112, 5, 672, 160, True, "HS", 2),
        (160, 5, 960, 160, True, "HS", 1),
        (160, 5, 960, 160, True, "HS", 1),
    )
)
_V3_SMALL = tuple(
    BneckConfig(*row)
    for row in (
        (16, 3, 16, 16, True, "RE", 2),
        (16, 3, 72, 24, False, "RE", 2),
        (24, 3, 88, 24, False, "RE", 1),
        (24, 5, 96, 40, True, "HS", 2),
        (40, 5, 240, 40, True, "HS", 1),
        (40, 5, 240, 40, True, "HS", 1),
        (40, 5, 120, 48, True, "HS", 1),
        (48, 5, 144, 48, True, "HS", 1),
        (48, 5, 288, 96, True, "HS", 2),
        (96, 5, 576, 96, True, "HS", 1),
        (96, 5, 576, 96, True, "HS", 1),
    )
)


class MobileNetV3(_Classifier):
    def __init__(
        self,
        setting: tuple[BneckConfig, ...],
        last_channel: int,
        num_classes: int = 1000,
        in_chans: int = 3,
        width_mult: float = 1.0,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
        blocks = [cfg.scaled(width_mult) for cfg in setting]
        layers: list[nn.Module] = [
            ConvNormAct(in_chans, blocks[0].in_channels, 3, 2, norm_layer=norm_layer, act_layer=nn.Hardswish)
        ]
        layers += [Bneck(cfg, norm_layer) for cfg in blocks]
        head_in = blocks[-1].out_channels
        layers.append(ConvNormAct(head_in, 6 * head_in, 1, norm_layer=norm_layer, act_layer=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        last_channel = make_divisible(last_channel * width_mult)
        self.classifier = nn.Sequential(
            nn.Linear(6 * head_in, last_channel),
            nn.Hardswish(),
            nn.Dropout(dropout),
            nn.Linear(last_channel, num_classes),
        )
        init_weights(self)


@register_model(family="mobilenet", paper="Howard et al. 2017")
def mobilenet_v1(
    num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, dropout: float = 0.2
) -> MobileNetV1:
    """MobileNet v1 with width multiplier α (1.0 at 224: 4.2M)."""
    return MobileNetV1(num_classes, in_chans, width_mult, dropout)


@register_model(
    family="mobilenet",
    published=imagenet_weights(
        torchvision_weights("mobilenet_v2-b0353104.pth", 71.878, 90.286),
        torchvision_weights("mobilenet_v2-7ebf99e0.pth", 72.154, 90.822, resize=232),
    ),
    paper="Sandler et al. 2018",
)
def mobilenet_v2(
    num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, dropout: float = 0.2
) -> MobileNetV2:
    """MobileNet v2 with width multiplier."""
    return MobileNetV2(num_classes, in_chans, width_mult, dropout)


@register_model(
    family="mobilenet",
    published=imagenet_weights(
        torchvision_weights("mobilenet_v3_large-8738ca79.pth", 74.042, 91.340),
        torchvision_weights("mobilenet_v3_large-5c1a4163.pth", 75.274, 92.566, resize=232),
    ),
    paper="Howard et al. 2019",
)
def mobilenet_v3_large(
    num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, dropout: float = 0.2
) -> MobileNetV3:
    """MobileNet v3 Large."""
    return MobileNetV3(_V3_LARGE, 1280, num_classes, in_chans, width_mult, dropout)


@register_model(
    family="mobilenet",
    published=imagenet_weights(torchvision_weights("mobilenet_v3_small-047dcff4.pth", 67.668, 87.402)),
    paper="Howard et al. 2019",
)
def mobilenet_v3_small(
    num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, dropout: float = 0.2
) -> MobileNetV3:
    """MobileNet v3 Small."""
    return MobileNetV3(_V3_SMALL, 1024, num_classes, in_chans, width_mult, dropout)

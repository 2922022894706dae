"""VGG (Simonyan & Zisserman 2015): configurations A, B, D, E with and without batch norm."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from edgecnn.models._registry import Builder, register_model
from edgecnn.models._weights import imagenet_weights, torchvision_weights
from edgecnn.models.layers import init_weights

# Output channels of each 3×3 convolution; "M" is a 2×2 max-pool (Table 1 of the paper).
CONFIGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def make_features(config: list[int | str], batch_norm: bool, in_chans: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = in_chans
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        assert isinstance(item, int)
        layers.append(nn.Conv2d(channels, item, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(item))
        layers.append(nn.ReLU())
        channels = item
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(self, features: nn.Sequential, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _vgg_model(filename: str, top1: float, top5: float) -> Callable[[Builder], Builder]:
    """Register a VGG builder with torchvision's IMAGENET1K_V1 checkpoint ``filename`` and its top-1/top-5."""
    return register_model(
        family="vgg",
        first_conv="features.0",
        published=imagenet_weights(torchvision_weights(filename, top1, top5)),
        paper="Simonyan & Zisserman 2015",
    )


def _vgg(config: str, batch_norm: bool, num_classes: int, in_chans: int, dropout: float) -> VGG:
    """The VGG of ``CONFIGS[config]``, with a batch norm after each convolution if ``batch_norm``."""
    return VGG(make_features(CONFIGS[config], batch_norm, in_chans), num_classes, dropout)


@_vgg_model("vgg11-8a719046.pth", 69.020, 88.628)
def vgg11(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-11 (configuration A)."""
    return _vgg("A", False, num_classes, in_chans, dropout)


@_vgg_model("vgg11_bn-6002323d.pth", 70.370, 89.810)
def vgg11_bn(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-11 (configuration A) with batch norm."""
    return _vgg("A", True, num_classes, in_chans, dropout)


@_vgg_model("vgg13-19584684.pth", 69.928, 89.246)
def vgg13(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-13 (configuration B)."""
    return _vgg("B", False, num_classes, in_chans, dropout)


@_vgg_model("vgg13_bn-abd245e5.pth", 71.586, 90.374)
def vgg13_bn(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-13 (configuration B) with batch norm."""
    return _vgg("B", True, num_classes, in_chans, dropout)


@_vgg_model("vgg16-397923af.pth", 71.592, 90.382)
def vgg16(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-16 (configuration D)."""
    return _vgg("D", False, num_classes, in_chans, dropout)


@_vgg_model("vgg16_bn-6c64b313.pth", 73.360, 91.516)
def vgg16_bn(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-16 (configuration D) with batch norm."""
    return _vgg("D", True, num_classes, in_chans, dropout)


@_vgg_model("vgg19-dcbb9e9d.pth", 72.376, 90.876)
def vgg19(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-19 (configuration E)."""
    return _vgg("E", False, num_classes, in_chans, dropout)


@_vgg_model("vgg19_bn-c79401a0.pth", 74.218, 91.842)
def vgg19_bn(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-19 (configuration E) with batch norm."""
    return _vgg("E", True, num_classes, in_chans, dropout)

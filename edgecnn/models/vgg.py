"""VGG (Simonyan & Zisserman 2015): configurations A, B, D, E with and without batch norm."""

from __future__ import annotations

import torch
from torch import nn

from edgecnn.models._registry import register_variant
from edgecnn.models._weights import PretrainedWeights, imagenet_weights, torchvision_weights
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


def _register(name: str, config: str, batch_norm: bool, weights: PretrainedWeights) -> None:
    def builder(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
        return VGG(make_features(CONFIGS[config], batch_norm, in_chans), num_classes, dropout)

    depth = sum(isinstance(c, int) for c in CONFIGS[config]) + 3
    doc = f"VGG-{depth} (configuration {config}){' with batch norm' if batch_norm else ''}."
    globals()[name] = register_variant(
        name,
        doc,
        builder,
        family="vgg",
        first_conv="features.0",
        published=imagenet_weights(weights),
        paper="Simonyan & Zisserman 2015",
    )


# name: (configuration, batch norm, torchvision checkpoint, ImageNet top-1, top-5)
_VARIANTS = {
    "vgg11": ("A", False, "vgg11-8a719046.pth", 69.020, 88.628),
    "vgg11_bn": ("A", True, "vgg11_bn-6002323d.pth", 70.370, 89.810),
    "vgg13": ("B", False, "vgg13-19584684.pth", 69.928, 89.246),
    "vgg13_bn": ("B", True, "vgg13_bn-abd245e5.pth", 71.586, 90.374),
    "vgg16": ("D", False, "vgg16-397923af.pth", 71.592, 90.382),
    "vgg16_bn": ("D", True, "vgg16_bn-6c64b313.pth", 73.360, 91.516),
    "vgg19": ("E", False, "vgg19-dcbb9e9d.pth", 72.376, 90.876),
    "vgg19_bn": ("E", True, "vgg19_bn-c79401a0.pth", 74.218, 91.842),
}
for _name, (_config, _bn, _file, _top1, _top5) in _VARIANTS.items():
    _register(_name, _config, _bn, torchvision_weights(_file, _top1, _top5))

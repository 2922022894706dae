"""ResNet (He et al. 2016), v1.5: the stride of a bottleneck sits on its 3×3 convolution."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from edgecnn.models._registry import Builder, register_model
from edgecnn.models._weights import PretrainedWeights, imagenet_weights, torchvision_weights
from edgecnn.models.layers import init_weights


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _shortcut(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)

    def last_norm(self) -> nn.BatchNorm2d:
        return self.bn2


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU()
        self.downsample = _shortcut(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)

    def last_norm(self) -> nn.BatchNorm2d:
        return self.bn3


class ResNet(nn.Module):
    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: tuple[int, int, int, int],
        num_classes: int = 1000,
        in_chans: int = 3,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_planes = 64
        for index, (blocks, planes) in enumerate(zip(layers, (64, 128, 256, 512), strict=True)):
            stride = 1 if index == 0 else 2
            stage = []
            for block_index in range(blocks):
                stage.append(block(in_planes, planes, stride if block_index == 0 else 1))
                in_planes = planes * block.expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        init_weights(self)
        if zero_init_residual:  # each block starts as identity (Goyal et al. 2017)
            for module in self.modules():
                if isinstance(module, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(module.last_norm().weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _resnet_model(v1: PretrainedWeights, v2: PretrainedWeights | None = None) -> Callable[[Builder], Builder]:
    """Register a ResNet builder with torchvision's IMAGENET1K_V1 and, where published, IMAGENET1K_V2 checkpoint."""
    return register_model(
        family="resnet",
        first_conv="conv1",
        classifier="fc",
        published=imagenet_weights(v1, v2),
        paper="He et al. 2016",
    )


@_resnet_model(torchvision_weights("resnet18-f37072fd.pth", 69.758, 89.078))
def resnet18(num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False) -> ResNet:
    """ResNet-18 (BasicBlock blocks (2, 2, 2, 2))."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_chans, zero_init_residual)


@_resnet_model(torchvision_weights("resnet34-b627a593.pth", 73.314, 91.420))
def resnet34(num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False) -> ResNet:
    """ResNet-34 (BasicBlock blocks (3, 4, 6, 3))."""
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, in_chans, zero_init_residual)


@_resnet_model(
    torchvision_weights("resnet50-0676ba61.pth", 76.130, 92.862),
    torchvision_weights("resnet50-11ad3fa6.pth", 80.858, 95.434, resize=232),
)
def resnet50(num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False) -> ResNet:
    """ResNet-50 (Bottleneck blocks (3, 4, 6, 3))."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_chans, zero_init_residual)


@_resnet_model(
    torchvision_weights("resnet101-63fe2227.pth", 77.374, 93.546),
    torchvision_weights("resnet101-cd907fc2.pth", 81.886, 95.780, resize=232),
)
def resnet101(num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False) -> ResNet:
    """ResNet-101 (Bottleneck blocks (3, 4, 23, 3))."""
    return ResNet(Bottleneck, (3, 4, 23, 3), num_classes, in_chans, zero_init_residual)


@_resnet_model(
    torchvision_weights("resnet152-394f9c45.pth", 78.312, 94.046),
    torchvision_weights("resnet152-f82ba261.pth", 82.284, 96.002, resize=232),
)
def resnet152(num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False) -> ResNet:
    """ResNet-152 (Bottleneck blocks (3, 8, 36, 3))."""
    return ResNet(Bottleneck, (3, 8, 36, 3), num_classes, in_chans, zero_init_residual)

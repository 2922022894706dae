"""LeNet-5 (LeCun et al. 1998): the 32×32 layout with full C3 connections."""

from __future__ import annotations

import torch
from torch import nn

from edgecnn.models._registry import register_model
from edgecnn.models.layers import get_act_layer


class LeNet5(nn.Module):
    """C1 conv 5×5 → S2 pool → C3 conv 5×5 → S4 pool → C5 conv 5×5 → F6 → output.

    The 1998 paper's tanh and average pooling are the default; ``act="relu"`` gives the modern
    variant. C5 is a convolution (as in the paper), so inputs larger than 32×32 are averaged after it.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, act: str = "tanh", dropout: float = 0.0) -> None:
        super().__init__()
        act_layer = get_act_layer(act)
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 6, 5),
            act_layer(),
            nn.AvgPool2d(2),
            nn.Conv2d(6, 16, 5),
            act_layer(),
            nn.AvgPool2d(2),
            nn.Conv2d(16, 120, 5),
            act_layer(),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(120, 84),
            act_layer(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@register_model(family="lenet", resolution=32, crop_ratio=1.0, first_conv="features.0", paper="LeCun et al. 1998")
def lenet5(num_classes: int = 10, in_chans: int = 1, act: str = "tanh", dropout: float = 0.0) -> LeNet5:
    """LeNet-5, 32×32 grayscale input."""
    return LeNet5(num_classes, in_chans, act, dropout)

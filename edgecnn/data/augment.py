"""Training-time augmentation from a short spec, run by kornia on whole batches (CPU or GPU).

Spec: comma-separated ``name[=value]`` items, e.g. ``"crop=0.8,rotate=15,flip,jitter=0.2,noise=0.03"``;
``"none"`` for no augmentation. Applied to [0, 1] batches before normalisation, in training only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from edgecnn.errors import EdgeCNNError

DEFAULT_AUGMENT = "crop=0.85,rotate=10"


def _flip(_: float, size: int, channels: int) -> nn.Module:
    import kornia.augmentation as K

    return K.RandomHorizontalFlip(p=0.5)


def _vflip(_: float, size: int, channels: int) -> nn.Module:
    import kornia.augmentation as K

    return K.RandomVerticalFlip(p=0.5)


def _rotate(degrees: float, size: int, channels: int) -> nn.Module:
    import kornia.augmentation as K

    return K.RandomRotation(degrees=degrees, p=0.5)


def _crop(min_scale: float, size: int, channels: int) -> nn.Module:
    import kornia.augmentation as K

    if not 0 < min_scale <= 1:
        raise EdgeCNNError(f"crop scale must be in (0, 1], got {min_scale}")
    return K.RandomResizedCrop((size, size), scale=(min_scale, 1.0), p=1.0)


def _jitter(strength: float, size: int, channels: int) -> nn.Module:
    import kornia.augmentation as K

    colour = strength if channels == 3 else 0.0  # saturation and hue need colour
    return K.ColorJitter(brightness=strength, contrast=strength, saturation=colour, hue=colour / 4, p=0.8)


def _noise(std: float, size: int, channels: int) -> nn.Module:
    import kornia.augmentation as K

    return K.RandomGaussianNoise(mean=0.0, std=std, p=0.5)


# name: (factory(value, input size, channels), default value)
AUGMENTATIONS: dict[str, tuple[Callable[[float, int, int], nn.Module], float]] = {
    "flip": (_flip, 0.0),
    "vflip": (_vflip, 0.0),
    "rotate": (_rotate, 15.0),
    "crop": (_crop, 0.8),
    "jitter": (_jitter, 0.2),
    "noise": (_noise, 0.03),
}


def parse_augment(spec: str) -> list[tuple[str, float]]:
    """``"crop=0.8,flip"`` → ``[("crop", 0.8), ("flip", 0.0)]``; unknown names and bad values are errors."""
    spec = spec.strip()
    if spec in ("", "none"):
        return []
    items = []
    for part in spec.split(","):
        name, _, value = part.strip().partition("=")
        if name not in AUGMENTATIONS:
            raise EdgeCNNError(f"unknown augmentation {name!r} in {spec!r}; valid: {', '.join(AUGMENTATIONS)}, none")
        try:
            items.append((name, float(value) if value else AUGMENTATIONS[name][1]))
        except ValueError:
            raise EdgeCNNError(f"augmentation {name} needs a number, got {value!r}") from None
    return items


class TrainingAugmentation(nn.Module):
    """Augments in training mode and passes the batch through untouched in eval mode.

    kornia's containers keep augmenting in eval mode, so the switch lives here.
    """

    def __init__(self, augmentations: list[nn.Module]) -> None:
        super().__init__()
        self.augmentations = nn.ModuleList(augmentations)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.training:
            for augmentation in self.augmentations:
                batch = augmentation(batch)
        return batch


def build_augmentation(spec: str, size: int, channels: int) -> TrainingAugmentation:
    """The augmentation of ``spec`` for ``size``×``size`` images with ``channels`` channels."""
    return TrainingAugmentation([AUGMENTATIONS[name][0](value, size, channels) for name, value in parse_augment(spec)])

"""Preprocessing as data.

A model owns one :class:`Preprocessing`; training, calibration, evaluation and every exported
artifact's metadata read it, so the numbers a deployed model sees are the numbers it was trained on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}
INTERPOLATIONS = tuple(_RESAMPLE)


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input tensor.

    Resize the shorter side to ``resize``, centre-crop ``crop`` × ``crop``, scale to [0, 1],
    normalise with ``mean``/``std`` per channel, lay out as ``layout``.
    """

    crop: int
    resize: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    channel_order: str = "RGB"
    layout: str = "NCHW"

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} channels but std has {len(self.std)}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; valid: {', '.join(INTERPOLATIONS)}")
        if not 0 < self.crop <= self.resize:
            raise ValueError(f"crop {self.crop} must be positive and at most resize {self.resize}")

    @classmethod
    def imagenet(
        cls, crop: int = 224, resize: int | None = None, in_chans: int = 3, interpolation: str = "bilinear"
    ) -> Preprocessing:
        """ImageNet statistics, adapted to ``in_chans`` (grayscale uses the mean of the RGB values)."""
        if resize is None:
            resize = round(crop / 0.875)
        mean, std = channel_statistics(in_chans)
        order = "L" if in_chans == 1 else "RGB"
        return cls(crop, resize, mean, std, interpolation, channel_order=order)

    @property
    def in_chans(self) -> int:
        return len(self.mean)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one preprocessed image."""
        return (self.in_chans, self.crop, self.crop)

    def with_input_size(self, crop: int) -> Preprocessing:
        """The same recipe at another resolution, keeping the resize/crop ratio."""
        resize = max(crop, round(crop * self.resize / self.crop))
        return dataclasses.replace(self, crop=crop, resize=resize)

    def load(self, image: Image.Image) -> torch.Tensor:
        """A PIL image as a C×crop×crop float tensor in [0, 1]: channel mode, resize, centre crop."""
        if self.in_chans not in (1, 3):
            raise ValueError(f"images load as 1 or 3 channels, not {self.in_chans}")
        image = image.convert("L" if self.in_chans == 1 else "RGB")
        width, height = image.size
        scale = self.resize / min(width, height)
        size = (max(self.crop, round(width * scale)), max(self.crop, round(height * scale)))
        image = image.resize(size, _RESAMPLE[self.interpolation])
        left, top = (size[0] - self.crop) // 2, (size[1] - self.crop) // 2
        image = image.crop((left, top, left + self.crop, top + self.crop))
        array = np.asarray(image, dtype=np.float32) / 255.0
        return torch.from_numpy(array.reshape(self.crop, self.crop, -1)).permute(2, 0, 1).contiguous()

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """Standardise [0, 1] images (C×H×W or N×C×H×W) with the recipe's mean and std."""
        shape = (-1, 1, 1)
        mean = torch.tensor(self.mean, dtype=batch.dtype, device=batch.device).view(shape)
        std = torch.tensor(self.std, dtype=batch.dtype, device=batch.device).view(shape)
        return (batch - mean) / std

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """The model's input for one image: :meth:`load` then :meth:`normalize`."""
        return self.normalize(self.load(image))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"unknown preprocessing keys: {', '.join(sorted(unknown))}")
        values = dict(data)
        values["mean"] = tuple(values["mean"])
        values["std"] = tuple(values["std"])
        return cls(**values)


def channel_statistics(in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet mean/std for ``in_chans`` channels: RGB as is, grayscale averaged, others tiled."""
    if in_chans == 1:
        return (sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,)
    mean = tuple(IMAGENET_MEAN[i % 3] for i in range(in_chans))
    std = tuple(IMAGENET_STD[i % 3] for i in range(in_chans))
    return mean, std

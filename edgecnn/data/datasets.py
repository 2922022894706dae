"""Image sources (an ImageFolder, the built-in ``digits``), seeded splits and calibration sampling.

A source yields PIL images and labels; :class:`ImageDataset` turns them into tensors with the
model's :class:`~edgecnn.data.Preprocessing`, so training, calibration and evaluation share one path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from edgecnn.data.preprocessing import Preprocessing
from edgecnn.errors import EdgeCNNError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


class DataError(EdgeCNNError):
    """A dataset that cannot be used as given."""


class ImageSource(Protocol):
    name: str
    classes: list[str]
    labels: list[int]
    #: resize/crop ratio suited to the images (1.0: the object fills the frame), None: the model's
    crop_ratio: float | None

    def image(self, index: int) -> Image.Image: ...

    def fingerprint(self) -> str: ...

    def check_min_size(self, crop: int) -> None:
        """Refuse images too small for a ``crop``-pixel input."""


class DigitsSource:
    """scikit-learn's bundled handwritten digits: 1,797 real 8×8 grayscale images of 0–9, offline."""

    name = "digits"
    crop_ratio = 1.0

    def __init__(self) -> None:
        table = _digits_table()
        self._images = (table[:, :-1].reshape(-1, 8, 8) * (255.0 / 16.0)).round().astype(np.uint8)
        self.labels = [int(t) for t in table[:, -1]]
        self.classes = [str(c) for c in range(10)]

    def image(self, index: int) -> Image.Image:
        return Image.fromarray(self._images[index], mode="L")

    def check_min_size(self, crop: int) -> None:
        """Digits are 8×8 by nature and upsampled to any input size on purpose."""

    def fingerprint(self) -> str:
        return hashlib.sha256(self._images.tobytes() + bytes(self.labels)).hexdigest()[:16]


def _digits_table() -> np.ndarray:
    """scikit-learn's digits file (64 pixel values in 0–16, then the label, per row), read directly:
    importing scikit-learn itself takes 1.7 s here, most of it SciPy."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the digits data set comes with scikit-learn: pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():  # a future scikit-learn may move it: take the public loader then
        from sklearn.datasets import load_digits

        digits = load_digits()
        return np.column_stack([digits.data, digits.target])
    return np.loadtxt(path, delimiter=",")


class FolderSource:
    """An ImageFolder: ``root/<class>/<image>``; JPEG, PNG and the other formats PIL reads."""

    crop_ratio = None

    def __init__(self, root: str | Path, strict: bool = False) -> None:
        self.root = Path(root)
        self.name = str(self.root)
        if not self.root.is_dir():
            raise DataError(f"data folder not found: {self.root} (expected ROOT/CLASS/IMAGE.jpg, or 'digits')")
        class_dirs = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not class_dirs:
            raise DataError(f"{self.root} has no class folders (expected ROOT/CLASS/IMAGE.jpg)")
        if len(class_dirs) < 2:
            raise DataError(f"{self.root} has one class ({class_dirs[0].name}); classification needs at least 2")
        self.classes = [p.name for p in class_dirs]
        self.paths: list[Path] = []
        self.labels = []
        self.sizes: list[tuple[int, int]] = []
        skipped: list[str] = []
        for label, class_dir in enumerate(class_dirs):
            found = 0
            for path in sorted(p for p in class_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
                size_or_problem = _image_size(path)
                if isinstance(size_or_problem, str):
                    skipped.append(f"{path} ({size_or_problem})")
                    continue
                self.paths.append(path)
                self.labels.append(label)
                self.sizes.append(size_or_problem)
                found += 1
            if found == 0:
                raise DataError(f"class folder {class_dir} has no readable images")
        if skipped:
            if strict:
                raise DataError(f"{len(skipped)} files are not readable images, e.g. {skipped[0]}")
            log.warning("skipped %d files that are not readable images, e.g. %s", len(skipped), skipped[0])
        self.skipped = len(skipped)

    def image(self, index: int) -> Image.Image:
        with Image.open(self.paths[index]) as image:
            image.load()
            return image

    def check_min_size(self, crop: int) -> None:
        small = [path for path, size in zip(self.paths, self.sizes, strict=True) if min(size) < crop]
        if small:
            raise DataError(
                f"{len(small)} images are smaller than the {crop}-pixel input (e.g. {small[0]}); "
                "pass a smaller --input-size or use larger images"
            )

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path, label in zip(self.paths, self.labels, strict=True):
            digest.update(f"{path.relative_to(self.root)}:{label}:{path.stat().st_size}\n".encode())
        return digest.hexdigest()[:16]


def _image_size(path: Path) -> tuple[int, int] | str:
    """(width, height) of a readable image file, else why it cannot be used."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return "not an image file"
    try:
        with Image.open(path) as image:
            image.verify()
            return image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"unreadable: {type(exc).__name__}"


def open_source(data: str | Path, strict: bool = False) -> ImageSource:
    """``"digits"`` (built in) or a folder of class sub-folders."""
    if str(data) == "digits":
        return DigitsSource()
    return FolderSource(data, strict=strict)


@dataclass(frozen=True)
class Split:
    """A seeded, stratified train/val/test partition of a source's indices, stored with checkpoints."""

    seed: int
    val_fraction: float
    test_fraction: float
    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]

    def subset(self, name: str) -> tuple[int, ...]:
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}; valid: train, val, test")
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "train": list(self.train),
            "val": list(self.val),
            "test": list(self.test),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Split:
        return cls(
            int(data["seed"]),
            float(data["val_fraction"]),
            float(data["test_fraction"]),
            tuple(data["train"]),
            tuple(data["val"]),
            tuple(data["test"]),
        )


def stratified_split(
    labels: Sequence[int], val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0
) -> Split:
    """Shuffle each class with ``seed`` and cut it into train/val/test by the fractions."""
    if not (0 <= val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(f"split fractions val={val_fraction}, test={test_fraction} must leave images to train on")
    rng = np.random.default_rng(seed)
    labels_array = np.asarray(labels)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for label in np.unique(labels_array):
        members = rng.permutation(np.flatnonzero(labels_array == label))
        n_test = max(1, round(len(members) * test_fraction))
        n_val = round(len(members) * val_fraction)
        parts["test"] += members[:n_test].tolist()
        parts["val"] += members[n_test : n_test + n_val].tolist()
        parts["train"] += members[n_test + n_val :].tolist()
    return Split(seed, val_fraction, test_fraction, *(tuple(sorted(parts[k])) for k in ("train", "val", "test")))


def split_for(source: ImageSource, trained_on: dict[str, Any] | None) -> Split:
    """The split a checkpoint trained with when ``source`` is its training data (its held-out images stay
    held out), else a fresh seeded split of ``source``. ``trained_on``: a checkpoint's "data" section."""
    if trained_on and trained_on["fingerprint"] == source.fingerprint():
        return Split.from_dict(trained_on["split"])
    return stratified_split(source.labels, seed=0)


def calibration_indices(labels: Sequence[int], pool: Sequence[int], count: int, seed: int = 0) -> list[int]:
    """``count`` indices from ``pool``, drawn class by class in turn so every class is represented."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for index in rng.permutation(np.asarray(pool)).tolist():
        by_class.setdefault(labels[index], []).append(index)
    queues = [by_class[c] for c in sorted(by_class)]
    chosen: list[int] = []
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop())
    return chosen


def preprocess_images(source: ImageSource, indices: Sequence[int], preprocessing: Preprocessing) -> np.ndarray:
    """``indices`` of ``source`` as one float32 NCHW array, fed exactly as the model expects."""
    return np.stack([preprocessing(source.image(i)).numpy() for i in indices]).astype(np.float32)


class ImageDataset(torch.utils.data.Dataset):
    """``(image in [0, 1], label)`` pairs of a source's ``indices``, loaded with ``preprocessing``.

    Normalisation is applied by the consumer (after augmentation, which works on [0, 1] images) with
    :meth:`Preprocessing.normalize`.
    """

    def __init__(self, source: ImageSource, indices: Sequence[int], preprocessing: Preprocessing) -> None:
        self.source = source
        self.indices = list(indices)
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int]:
        index = self.indices[item]
        return self.preprocessing.load(self.source.image(index)), self.source.labels[index]

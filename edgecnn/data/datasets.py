"""Image sources (an ImageFolder, the built-in ``digits``), seeded splits and calibration sampling.

A source yields PIL images and labels; :class:`ImageDataset` turns them into tensors with the
model's :class:`~edgecnn.data.Preprocessing`, so training, calibration and evaluation share one path.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
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
    #: False for a flat folder of images: calibration and agreement only, no accuracy
    labelled: bool
    #: the published test split (Fashion-MNIST's 10,000, Imagenette's validation folder), else None
    official_test: tuple[int, ...] | None

    def image(self, index: int) -> Image.Image: ...

    def fingerprint(self) -> str: ...

    def check_min_size(self, crop: int) -> None:
        """Refuse images too small for a ``crop``-pixel input."""


class DigitsSource:
    """scikit-learn's bundled handwritten digits: 1,797 real 8×8 grayscale images of 0–9, offline."""

    name = "digits"
    crop_ratio = 1.0
    labelled = True
    official_test = None

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


@dataclass
class ScannedImages:
    """The readable images under some folders and what was skipped, so a caller can report a count."""

    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def add_folder(self, folder: Path, label: int, recursive: bool = True) -> int:
        """Add ``folder``'s image files under ``label``; returns how many were readable."""
        found = 0
        for path in _files(folder, recursive, self.skipped):
            size_or_problem = _image_size(path)
            if isinstance(size_or_problem, str):
                self.skipped.append(f"{path} ({size_or_problem})")
                continue
            self.paths.append(path)
            self.labels.append(label)
            self.sizes.append(size_or_problem)
            found += 1
        return found

    def report_skipped(self, strict: bool) -> None:
        if not self.skipped:
            return
        if strict:
            raise DataError(f"{len(self.skipped)} files are not readable images, e.g. {self.skipped[0]}")
        log.warning("skipped %d files that are not readable images, e.g. %s", len(self.skipped), self.skipped[0])


def _files(folder: Path, recursive: bool, skipped: list[str]) -> list[Path]:
    """Visible files under ``folder``, sorted; a folder that cannot be listed is counted as skipped."""
    try:
        entries = folder.rglob("*") if recursive else folder.iterdir()
        return sorted(p for p in entries if not p.name.startswith(".") and (p.is_file() or p.is_symlink()))
    except OSError as exc:
        skipped.append(f"{folder} (cannot list: {exc.strerror or type(exc).__name__})")
        return []


class ScannedSource:
    """A source whose images are files found by one scan (:class:`ScannedImages`), decoded on demand."""

    root: Path
    paths: list[Path]
    labels: list[int]
    sizes: list[tuple[int, int]]

    def keep(self, scanned: ScannedImages) -> None:
        self.paths, self.labels, self.sizes = scanned.paths, scanned.labels, scanned.sizes

    def image(self, index: int) -> Image.Image:
        return load_image(self.paths[index])

    def check_min_size(self, crop: int) -> None:
        check_sizes(self.paths, self.sizes, crop)

    def fingerprint(self) -> str:
        return paths_fingerprint(self.root, self.paths, self.labels)


class FolderSource(ScannedSource):
    """A folder of images: an ImageFolder (``root/<class>/<image>``, labelled) or a flat folder
    (``root/<image>``, unlabelled: enough to calibrate and to check agreement, not accuracy).
    JPEG, PNG and the other formats PIL reads; unreadable files are skipped with a count."""

    crop_ratio = None
    official_test = None

    def __init__(self, root: str | Path, strict: bool = False) -> None:
        self.root = Path(root)
        self.name = str(self.root)
        if not self.root.is_dir():
            raise DataError(
                f"data folder not found: {self.root} (expected ROOT/CLASS/IMAGE.jpg, a folder of images, "
                f"or one of: {', '.join(BUILT_IN)})"
            )
        try:
            class_dirs = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError as exc:
            raise DataError(f"cannot list {self.root}: {exc.strerror or exc}") from None
        scanned = ScannedImages()
        if class_dirs:
            if len(class_dirs) < 2:
                raise DataError(f"{self.root} has one class ({class_dirs[0].name}); classification needs at least 2")
            for label, class_dir in enumerate(class_dirs):
                if scanned.add_folder(class_dir, label) == 0:
                    raise DataError(f"class folder {class_dir} has no readable images")
            self.classes = [p.name for p in class_dirs]
        else:
            if scanned.add_folder(self.root, 0, recursive=False) == 0:
                raise DataError(f"{self.root} has no readable images (nor class folders of them)")
            self.classes = []
        self.labelled = bool(class_dirs)
        scanned.report_skipped(strict)
        self.keep(scanned)
        self.skipped = len(scanned.skipped)


def load_image(path: Path) -> Image.Image:
    """Decode ``path`` fully; a file that only fails on decoding (truncated) is a one-line error."""
    try:
        with _bomb_is_an_error(), Image.open(path) as image:
            image.load()
            return image
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode {path} ({type(exc).__name__}: {exc}); remove or replace it") from None


def check_sizes(paths: Sequence[Path], sizes: Sequence[tuple[int, int]], crop: int) -> None:
    """Refuse images smaller than a ``crop``-pixel input."""
    small = [path for path, size in zip(paths, sizes, strict=True) if min(size) < crop]
    if small:
        raise DataError(
            f"{len(small)} images are smaller than the {crop}-pixel input (e.g. {small[0]}); "
            "pass a smaller --input-size or use larger images"
        )


def paths_fingerprint(root: Path, paths: Sequence[Path], labels: Sequence[int]) -> str:
    """Of file names, labels and sizes: cheap, and changes when files are added, removed or replaced."""
    digest = hashlib.sha256()
    for path, label in zip(paths, labels, strict=True):
        digest.update(f"{path.relative_to(root)}:{label}:{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _bomb_is_an_error() -> Iterator[None]:
    """PIL only warns between its pixel limit and twice it; such an image is refused as well."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _image_size(path: Path) -> tuple[int, int] | str:
    """(width, height) of a readable image file, else why it cannot be used."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return "not an image file"
    try:
        with _bomb_is_an_error(), Image.open(path) as image:
            image.verify()
            return image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return f"over PIL's limit of {Image.MAX_IMAGE_PIXELS:,} pixels (a decompression bomb?)"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"unreadable: {type(exc).__name__}"


#: names ``--data`` accepts besides a folder; all but digits are found locally or downloaded once
BUILT_IN = ("digits", "fashion-mnist", "imagenette", "imagenette-160", "imagenette-320")


def open_source(data: str | Path, strict: bool = False, progress: bool = True) -> ImageSource:
    """A built-in data set by name (:data:`BUILT_IN`) or a folder (of class folders, or of images)."""
    name = str(data)
    if name == "digits":
        return DigitsSource()
    if name in BUILT_IN:
        from edgecnn.data import published  # they build on this module's folder scanning

        return published.open_published(name, progress)
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


def make_split(source: ImageSource, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0) -> Split:
    """The source's published test split where it has one (validation drawn, seeded and stratified,
    from the rest by ``val_fraction``), else a seeded stratified split by both fractions."""
    if source.official_test is None:
        return stratified_split(source.labels, val_fraction, test_fraction, seed)
    labels = np.asarray(source.labels)
    test = np.asarray(source.official_test)
    rest = np.setdiff1d(np.arange(len(labels)), test)
    rng = np.random.default_rng(seed)
    val: list[int] = []
    for label in np.unique(labels[rest]):
        members = rng.permutation(rest[labels[rest] == label])
        val += members[: round(len(members) * val_fraction)].tolist()
    train = np.setdiff1d(rest, val)
    fraction = len(test) / len(labels)
    return Split(seed, val_fraction, fraction, tuple(train.tolist()), tuple(sorted(val)), tuple(test.tolist()))


def split_for(source: ImageSource, trained_on: dict[str, Any] | None) -> Split:
    """The split a checkpoint trained with when ``source`` is its training data (its held-out images stay
    held out), else the source's own split (:func:`make_split`). ``trained_on``: a checkpoint's "data" section."""
    if trained_on and trained_on["fingerprint"] == source.fingerprint():
        return Split.from_dict(trained_on["split"])
    return make_split(source)


def balanced_sample(labels: Sequence[int], pool: Sequence[int], count: int, seed: int = 0) -> list[int]:
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

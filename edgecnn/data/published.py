"""Published data sets, found locally or downloaded once: Fashion-MNIST and Imagenette.

Both keep their published test split (Fashion-MNIST's 10,000 test images, Imagenette's validation
folder), so every stage holds out the images the data set's own benchmarks report on. Files are
checked against the published hashes; a download is written under a temporary name and renamed only
when it is complete and matches.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edgecnn._download import DownloadError, Expected, cache_dir, download
from edgecnn.data.datasets import DataError, ImageSource, ScannedImages, ScannedSource

FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
#: where Debian's ``dataset-fashion-mnist`` puts the four files (recompressed: only the contents match)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclass(frozen=True)
class PublishedFile:
    name: str  # as published, gzipped
    sha256: str  # of the uncompressed contents, the same in every copy (recompressed ones too)

    @property
    def stored_name(self) -> str:
        return self.name.removesuffix(".gz")


FASHION_MNIST_FILES = (
    PublishedFile(
        "train-images-idx3-ubyte.gz",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    PublishedFile(
        "train-labels-idx1-ubyte.gz",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    PublishedFile(
        "t10k-images-idx3-ubyte.gz",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    PublishedFile(
        "t10k-labels-idx1-ubyte.gz",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
)


@dataclass(frozen=True)
class PublishedArchive:
    url: str
    md5: str

    @property
    def folder(self) -> str:
        """The archive's top-level folder: ``imagenette2-320`` for ``imagenette2-320.tgz``."""
        return self.url.rsplit("/", 1)[-1].removesuffix(".tgz")


IMAGENETTE = {
    "imagenette": PublishedArchive(
        "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2.tgz", "fe2fc210e6bb7c5664d602c3cd71e612"
    ),
    "imagenette-320": PublishedArchive(
        "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz", "3df6f0d01a2c9592104656642f5e78a3"
    ),
    "imagenette-160": PublishedArchive(
        "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz", "e793b78cc4c9e9a4ccc0c1155377a412"
    ),
}
#: Imagenette's ten WNIDs (its folder names) and their ImageNet-1k class indices (torchvision's order)
IMAGENETTE_CLASSES = {
    "n01440764": 0,
    "n02102040": 217,
    "n02979186": 482,
    "n03000684": 491,
    "n03028079": 497,
    "n03394916": 566,
    "n03417042": 569,
    "n03425413": 571,
    "n03445777": 574,
    "n03888257": 701,
}


def data_dir() -> Path:
    """Where downloaded data sets live: ``$EDGECNN_DATA_DIR``, else ``~/.cache/edgecnn/data``."""
    configured = os.environ.get("EDGECNN_DATA_DIR")
    if configured:
        return Path(configured).expanduser()
    return cache_dir() / "data"


def open_published(name: str, progress: bool = True) -> ImageSource:
    if name == "fashion-mnist":
        return FashionMNISTSource(progress=progress)
    return ImagenetteSource(name, progress=progress)


class FashionMNISTSource:
    """Zalando's Fashion-MNIST: 70,000 real 28×28 grayscale photos of clothing, 10 classes; the first
    60,000 are the training images, the last 10,000 the official test split.

    Found in ``$EDGECNN_DATA_DIR/fashion-mnist/`` (or the default data folder), then in Debian's
    package, else downloaded from the published URL into the data folder. Each file, gzipped or not, must
    have the published contents (SHA-256 of the uncompressed bytes).
    """

    name = "fashion-mnist"
    crop_ratio = 1.0
    labelled = True

    def __init__(self, progress: bool = True) -> None:
        self.classes = list(FASHION_MNIST_CLASSES)
        own = data_dir() / "fashion-mnist"
        train_images, train_labels, test_images, test_labels = (
            _read_idx(_fashion_file(file, own, progress)) for file in FASHION_MNIST_FILES
        )
        self._images = np.concatenate([train_images, test_images])
        self.labels = np.concatenate([train_labels, test_labels]).astype(int).tolist()
        self.official_test = tuple(range(len(train_labels), len(self.labels)))

    def image(self, index: int) -> Image.Image:
        return Image.fromarray(self._images[index])

    def check_min_size(self, crop: int) -> None:
        """28×28 photos, upsampled to the model's input on purpose (32×32 or larger)."""

    def fingerprint(self) -> str:
        """Of the published hashes: every file was checked against them on loading."""
        return hashlib.sha256("".join(f.sha256 for f in FASHION_MNIST_FILES).encode()).hexdigest()[:16]


def _fashion_file(file: PublishedFile, own: Path, progress: bool) -> bytes:
    """The file's uncompressed contents from the first folder that has it, else downloaded into ``own``.

    Checked by the SHA-256 of the contents, not the published MD5 of the .gz: recompressed copies
    (Debian's) are the same data.
    """
    for folder in (own, DEBIAN_FASHION_MNIST):
        for candidate in (folder / file.stored_name, folder / file.name):
            if candidate.is_file():
                return _checked_contents(candidate, file)
    offline = (
        f"offline, place the four files ({', '.join(f.name for f in FASHION_MNIST_FILES)}) from {FASHION_MNIST_URL} "
        f"in {own}/ (or install Debian's dataset-fashion-mnist)"
    )
    target = own / file.stored_name
    try:
        download(FASHION_MNIST_URL + file.name, target, Expected(sha256=file.sha256, gunzip=True), offline, progress)
    except DownloadError as exc:
        raise DataError(str(exc)) from None
    return target.read_bytes()


def _checked_contents(path: Path, file: PublishedFile) -> bytes:
    try:
        contents = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path} ({exc}); delete it to download it again") from None
    if hashlib.sha256(contents).hexdigest() != file.sha256:
        raise DataError(f"{path} is not the published {file.name} (SHA-256 differs); delete it to download it again")
    return contents


def _read_idx(contents: bytes) -> np.ndarray:
    """An IDX file (big-endian header: magic 0x0000 08 <dims>, then each dimension) as uint8 array."""
    dims = contents[3]
    shape = tuple(int.from_bytes(contents[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(contents, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


class ImagenetteSource(ScannedSource):
    """fast.ai's Imagenette: ten easy ImageNet classes, real ImageNet photos, labelled by their
    ImageNet-1k indices so an ImageNet model's top-1 is read directly. ``train/`` is the training
    split, ``val/`` (3,925 images) the official test split. ``imagenette-160`` and ``-320`` are the
    same photos with the shorter side resized to 160 or 320 pixels.
    """

    crop_ratio = None
    labelled = True

    def __init__(self, variant: str = "imagenette", progress: bool = True) -> None:
        if variant not in IMAGENETTE:
            raise DataError(f"unknown Imagenette variant {variant!r}; valid: {', '.join(IMAGENETTE)}")
        from edgecnn.models._registry import imagenet_class_names

        self.name = variant
        self.root = _imagenette_root(IMAGENETTE[variant], progress)
        self.classes = imagenet_class_names()
        scanned = ScannedImages()
        test_start = 0
        for split in ("train", "val"):
            test_start = len(scanned.paths)
            for wnid, index in IMAGENETTE_CLASSES.items():
                if scanned.add_folder(self.root / split / wnid, index) == 0:
                    raise DataError(f"{self.root / split / wnid} has no readable images; delete {self.root}")
        scanned.report_skipped(strict=False)
        self.keep(scanned)
        self.official_test = tuple(range(test_start, len(self.paths)))


def _imagenette_root(archive: PublishedArchive, progress: bool) -> Path:
    """The extracted folder in the data folder; downloaded (MD5 checked) and unpacked on first use."""
    root = data_dir() / archive.folder
    if (root / "val").is_dir():
        return root
    tarball = data_dir() / f"{archive.folder}.tgz"
    downloaded = not tarball.is_file()
    if downloaded:
        offline = f"offline, place {archive.url.rsplit('/', 1)[-1]} from {archive.url} at {tarball}"
        try:
            download(archive.url, tarball, Expected(md5=archive.md5), offline, progress)
        except DownloadError as exc:
            raise DataError(str(exc)) from None
    elif _md5(tarball) != archive.md5:
        raise DataError(f"{tarball} is not the published {archive.url.rsplit('/', 1)[-1]} (MD5 differs); delete it")
    unpacking = data_dir() / f".{archive.folder}.{os.getpid()}.unpacking"
    try:
        with tarfile.open(tarball) as tar:
            tar.extractall(unpacking, filter="data")
        if not (unpacking / archive.folder / "val").is_dir():
            raise DataError(f"{tarball} does not hold {archive.folder}/train and {archive.folder}/val; delete it")
        os.replace(unpacking / archive.folder, root)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot unpack {tarball} ({exc}); delete it to download it again") from None
    finally:
        shutil.rmtree(unpacking, ignore_errors=True)
    if downloaded:  # the unpacked folder is the cache; a file the user placed stays
        tarball.unlink()
    return root


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()

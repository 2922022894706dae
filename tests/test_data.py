"""Data: the built-in digits, ImageFolder, splits, calibration sampling, preprocessing, augmentation."""

import logging
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from edgecnn.data import Preprocessing
from edgecnn.data.augment import build_augmentation, parse_augment
from edgecnn.data.datasets import (
    DataError,
    DigitsSource,
    FolderSource,
    ImageDataset,
    balanced_sample,
    open_source,
    stratified_split,
)
from edgecnn.errors import EdgeCNNError


@pytest.fixture(scope="module")
def digits() -> DigitsSource:
    return DigitsSource()


def write_folder(root, classes=("cat", "dog"), per_class=4, size=(40, 30)):
    """Real image files: RGB JPEGs and grayscale PNGs of random content."""
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            image = Image.fromarray(pixels)
            if i % 2:
                image.convert("L").save(root / c / f"{i}.png")
            else:
                image.save(root / c / f"{i}.jpg", quality=90)
    return root


def test_digits_are_the_real_dataset(digits):
    assert len(digits.labels) == 1797
    assert digits.classes == [str(i) for i in range(10)]
    image = digits.image(0)
    assert image.size == (8, 8) and image.mode == "L"
    assert max(int(np.asarray(digits.image(i)).max()) for i in range(50)) == 255  # 16/16 → 255


def test_split_is_deterministic_disjoint_complete_and_stratified(digits):
    split = stratified_split(digits.labels, 0.15, 0.15, seed=3)
    assert split == stratified_split(digits.labels, 0.15, 0.15, seed=3)
    assert split != stratified_split(digits.labels, 0.15, 0.15, seed=4)
    train, val, test = set(split.train), set(split.val), set(split.test)
    assert not (train & val or train & test or val & test)
    assert train | val | test == set(range(1797))
    assert len(test) == pytest.approx(0.15 * 1797, abs=10)
    assert set(Counter(digits.labels[i] for i in test)) == set(range(10))
    assert type(split).from_dict(split.to_dict()) == split


def test_bad_split_fractions():
    with pytest.raises(DataError, match="must leave images to train on"):
        stratified_split([0, 1] * 10, 0.5, 0.5)


def test_calibration_sample_is_class_balanced(digits):
    pool = stratified_split(digits.labels, seed=0).train
    chosen = balanced_sample(digits.labels, pool, 64, seed=1)
    assert len(chosen) == len(set(chosen)) == 64
    assert set(chosen) <= set(pool)
    counts = Counter(digits.labels[i] for i in chosen)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert chosen == balanced_sample(digits.labels, pool, 64, seed=1)


def test_preprocessing_resizes_crops_and_normalises():
    p = Preprocessing(crop=16, resize=20, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    image = Image.new("RGB", (40, 30), (255, 0, 128))
    loaded = p.load(image)
    assert loaded.shape == (3, 16, 16)
    assert torch.allclose(loaded[:, 0, 0], torch.tensor([1.0, 0.0, 128 / 255]))
    assert torch.allclose(p(image)[:, 0, 0], (torch.tensor([1.0, 0.0, 128 / 255]) - 0.5) / 0.25)
    gray = Preprocessing.imagenet(16, 16, in_chans=1).load(image)
    assert gray.shape == (1, 16, 16)


def test_digits_dataset_feeds_the_model_size(digits):
    p = Preprocessing.imagenet(32, 32)
    images, label = ImageDataset(digits, [5], p)[0]
    assert images.shape == (3, 32, 32) and label == digits.labels[5]
    assert torch.allclose(images[0], images[1])  # grayscale replicated into RGB


def test_image_folder_reads_jpeg_and_png(tmp_path):
    source = open_source(write_folder(tmp_path / "data"))
    assert source.classes == ["cat", "dog"]
    assert len(source.labels) == 8 and Counter(source.labels) == {0: 4, 1: 4}
    images = ImageDataset(source, range(8), Preprocessing.imagenet(24, 28))
    assert all(images[i][0].shape == (3, 24, 24) for i in range(8))
    assert source.fingerprint() == open_source(tmp_path / "data").fingerprint()


def test_unreadable_files_are_skipped_with_a_count_or_refused_when_strict(tmp_path, caplog):
    root = write_folder(tmp_path / "data")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with caplog.at_level(logging.WARNING):
        source = FolderSource(root)
    assert source.skipped == 2 and len(source.labels) == 8
    assert "skipped 2 files" in caplog.text
    with pytest.raises(DataError, match="2 files are not readable images"):
        FolderSource(root, strict=True)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "data folder not found"),
        ("empty", "has no readable images"),
        ("one_class", "has one class"),
        ("empty_class", "has no readable images"),
    ],
)
def test_bad_folders_give_clear_errors(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout == "empty":
        root.mkdir()
    elif layout == "one_class":
        write_folder(root, classes=("cat",))
    elif layout == "empty_class":
        write_folder(root)
        (root / "zebra").mkdir()
    with pytest.raises(DataError, match=message):
        open_source(root)


def test_images_smaller_than_the_crop_are_refused(tmp_path):
    root = write_folder(tmp_path / "data", size=(12, 12))
    source = FolderSource(root)
    source.check_min_size(12)
    with pytest.raises(DataError, match="8 images are smaller than the 32-pixel input"):
        source.check_min_size(32)


def test_augmentation_runs_in_training_only():
    augmentation = build_augmentation("crop=0.7,rotate=20,flip,jitter=0.3,noise=0.05", 32, 3)
    batch = torch.rand(8, 3, 32, 32)
    assert not torch.equal(augmentation.train()(batch), batch)
    assert augmentation.eval()(batch) is batch


def test_augmentation_spec_errors():
    assert parse_augment("none") == []
    assert parse_augment("flip,rotate=5") == [("flip", 0.0), ("rotate", 5.0)]
    with pytest.raises(EdgeCNNError, match="unknown augmentation 'blur'"):
        parse_augment("blur")
    with pytest.raises(EdgeCNNError, match="needs a number"):
        parse_augment("rotate=lots")

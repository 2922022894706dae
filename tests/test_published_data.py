"""Published data sets (Fashion-MNIST, Imagenette) and folders of any shape: found, downloaded over a real
HTTP server on 127.0.0.1, hash-checked, split as published; bad folders give one-line errors."""

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgecnn.data import published
from edgecnn.data.datasets import DataError, FolderSource, make_split, open_source, preprocess_images
from edgecnn.data.preprocessing import Preprocessing
from edgecnn.models import create_model
from edgecnn.models._registry import imagenet_class_names
from edgecnn.models.checkpoint import load_checkpoint
from edgecnn.runtime.base import sidecar_path
from edgecnn.train import TrainConfig, train
from tests.conftest import needs_every_format, run_cli
from tests.loopback_http import serve
from tests.loopback_ssh import free_port

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "datasets.json"


@pytest.fixture(scope="module")
def reference() -> dict:
    if not REFERENCE.is_file():
        pytest.fail(f"the published data set reference {REFERENCE} is missing")
    return json.loads(REFERENCE.read_text())


@pytest.fixture(scope="module")
def fashion() -> published.FashionMNISTSource:
    """The real 70,000 images: Debian's dataset-fashion-mnist (make test installs it)."""
    if not published.DEBIAN_FASHION_MNIST.is_dir():
        pytest.fail(f"{published.DEBIAN_FASHION_MNIST} is missing: apt-get install dataset-fashion-mnist")
    return published.FashionMNISTSource(progress=False)


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """An empty data cache, and no Debian copy to fall back on."""
    monkeypatch.setenv("EDGECNN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(published, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    return tmp_path / "data"


def test_catalogue_matches_the_published_reference(reference):
    fashion_files = reference["fashion-mnist"]["files"]
    assert {f.name: f.sha256 for f in published.FASHION_MNIST_FILES} == {
        name: entry["sha256_uncompressed"] for name, entry in fashion_files.items()
    }
    assert reference["fashion-mnist"]["download_base_url"] == published.FASHION_MNIST_URL
    assert list(published.FASHION_MNIST_CLASSES) == reference["fashion-mnist"]["classes"]
    assert str(published.DEBIAN_FASHION_MNIST) + "/" == reference["fashion-mnist"]["debian_package"]["path"]
    imagenette = reference["imagenette"]
    archives = {"imagenette": "full", "imagenette-320": "320px", "imagenette-160": "160px"}
    for name, key in archives.items():
        assert published.IMAGENETTE[name].url == imagenette["archives"][key]["url"]
        assert published.IMAGENETTE[name].md5 == imagenette["archives"][key]["md5"]
    assert (
        dict(zip(imagenette["wnids"], imagenette["imagenet_1k_indices"], strict=True)) == published.IMAGENETTE_CLASSES
    )
    names = imagenet_class_names()
    for wnid, index in published.IMAGENETTE_CLASSES.items():
        expected = imagenette["names"][imagenette["wnids"].index(wnid)]
        assert names[index].lower() == expected.lower(), wnid


def test_fashion_mnist_is_the_official_split(fashion):
    assert len(fashion.labels) == 70_000
    assert fashion.official_test == tuple(range(60_000, 70_000))
    assert fashion.classes[0] == "T-shirt/top" and len(fashion.classes) == 10
    assert np.bincount([fashion.labels[i] for i in fashion.official_test]).tolist() == [1000] * 10
    image = fashion.image(0)
    assert image.size == (28, 28) and image.mode == "L"
    assert open_source("fashion-mnist").fingerprint() == fashion.fingerprint()


def test_validation_comes_from_the_training_images_only(fashion):
    split = make_split(fashion, val_fraction=0.1, seed=3)
    assert split.test == fashion.official_test
    assert len(split.val) == 6_000 and len(split.train) == 54_000
    assert max(split.val) < 60_000 and not set(split.val) & set(split.train)
    assert np.bincount([fashion.labels[i] for i in split.val]).tolist() == [600] * 10
    assert make_split(fashion, val_fraction=0.1, seed=3) == split
    assert make_split(fashion, val_fraction=0.1, seed=4).val != split.val


@pytest.fixture(scope="module")
def fashion_files(tmp_path_factory) -> Path:
    """The four published files as a server would offer them (Debian's copies: the same contents)."""
    folder = tmp_path_factory.mktemp("server")
    for file in published.FASHION_MNIST_FILES:
        shutil.copy(published.DEBIAN_FASHION_MNIST / file.name, folder / file.name)
    return folder


def test_fashion_mnist_downloads_once_and_checks_the_contents(data_dir, fashion_files, fashion, monkeypatch):
    with serve(fashion_files) as url:
        monkeypatch.setattr(published, "FASHION_MNIST_URL", url + "/")
        downloaded = published.FashionMNISTSource(progress=False)
    stored = sorted(p.name for p in (data_dir / "fashion-mnist").iterdir())
    assert stored == sorted(f.stored_name for f in published.FASHION_MNIST_FILES)  # gunzipped, no partial files
    assert downloaded.labels == fashion.labels
    assert np.array_equal(np.asarray(downloaded.image(65_432)), np.asarray(fashion.image(65_432)))
    published.FashionMNISTSource(progress=False)  # the server is gone: served from the cache


def test_a_corrupt_download_is_not_kept(data_dir, fashion_files, tmp_path, monkeypatch):
    served = tmp_path / "corrupt"
    shutil.copytree(fashion_files, served)
    labels = gzip.decompress((served / "train-labels-idx1-ubyte.gz").read_bytes())
    flipped = labels[:100] + bytes([(labels[100] + 1) % 10]) + labels[101:]
    (served / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(flipped))
    with serve(served) as url, pytest.raises(DataError, match=r"SHA-256 .* is not the published") as error:
        monkeypatch.setattr(published, "FASHION_MNIST_URL", url + "/")
        published.FashionMNISTSource(progress=False)
    assert "\n" not in str(error.value)
    assert not (data_dir / "fashion-mnist" / "train-labels-idx1-ubyte").exists()
    assert not [p for p in (data_dir / "fashion-mnist").iterdir() if p.name.startswith(".")]


def test_offline_names_the_folder_for_the_four_files(data_dir, monkeypatch):
    monkeypatch.setattr(published, "FASHION_MNIST_URL", f"http://127.0.0.1:{free_port()}/")
    with pytest.raises(DataError) as error:
        published.FashionMNISTSource(progress=False)
    message = str(error.value)
    assert f"in {data_dir / 'fashion-mnist'}/" in message and "t10k-labels-idx1-ubyte.gz" in message
    assert "\n" not in message


def test_a_local_copy_with_other_contents_is_refused(data_dir):
    (data_dir / "fashion-mnist").mkdir(parents=True)
    (data_dir / "fashion-mnist" / "train-images-idx3-ubyte").write_bytes(b"\0\0\x08\x03" + bytes(16))
    with pytest.raises(DataError, match=r"is not the published train-images-idx3-ubyte.gz"):
        published.FashionMNISTSource(progress=False)


def _photo(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _imagenette_archive(folder: Path, name: str, per_class: dict[str, int]) -> Path:
    """A .tgz of Imagenette's layout: NAME/{train,val}/WNID/*.JPEG."""
    archive = folder / f"{name}.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for split, count in per_class.items():
            for c, wnid in enumerate(published.IMAGENETTE_CLASSES):
                for i in range(count):
                    data = _photo(100 * c + i)
                    info = tarfile.TarInfo(f"{name}/{split}/{wnid}/{wnid}_{i}.JPEG")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return archive


def test_imagenette_downloads_unpacks_and_labels_with_imagenet_indices(data_dir, tmp_path, monkeypatch):
    served = tmp_path / "server"
    served.mkdir()
    archive = _imagenette_archive(served, "imagenette2-160", {"train": 3, "val": 2})
    with serve(served) as url:
        entry = published.PublishedArchive(f"{url}/{archive.name}", hashlib.md5(archive.read_bytes()).hexdigest())
        monkeypatch.setitem(published.IMAGENETTE, "imagenette-160", entry)
        source = open_source("imagenette-160", progress=False)
    assert sorted(p.name for p in data_dir.iterdir()) == ["imagenette2-160"]  # archive removed once unpacked
    assert len(source.labels) == 50 and len(source.official_test) == 20
    assert {source.labels[i] for i in source.official_test} == set(published.IMAGENETTE_CLASSES.values())
    assert source.classes == imagenet_class_names()
    assert source.classes[source.labels[0]] == "tench"
    split = make_split(source, val_fraction=0.34)
    assert split.test == source.official_test and len(split.val) == 10 and len(split.train) == 20
    assert open_source("imagenette-160").fingerprint() == source.fingerprint()  # cached, no server


def test_imagenette_archive_with_the_wrong_md5_is_refused(data_dir, tmp_path, monkeypatch):
    served = tmp_path / "server"
    served.mkdir()
    archive = _imagenette_archive(served, "imagenette2-320", {"train": 1, "val": 1})
    with serve(served) as url, pytest.raises(DataError, match=r"MD5 .* is not the published"):
        monkeypatch.setitem(
            published.IMAGENETTE, "imagenette-320", published.PublishedArchive(f"{url}/{archive.name}", "0" * 32)
        )
        open_source("imagenette-320", progress=False)
    assert not data_dir.exists() or not list(data_dir.iterdir())


def test_imagenette_offline_names_the_file_to_place(data_dir, monkeypatch):
    unreachable = published.PublishedArchive(f"http://127.0.0.1:{free_port()}/imagenette2.tgz", "0" * 32)
    monkeypatch.setitem(published.IMAGENETTE, "imagenette", unreachable)
    with pytest.raises(DataError) as error:
        open_source("imagenette", progress=False)
    assert f"place imagenette2.tgz from {unreachable.url} at {data_dir / 'imagenette2.tgz'}" in str(error.value)


def test_a_flat_folder_calibrates_but_has_no_labels(tmp_path):
    for i in range(5):
        (tmp_path / f"{i}.jpg").write_bytes(_photo(i))
    source = FolderSource(tmp_path)
    assert not source.labelled and source.classes == [] and len(source.labels) == 5
    images = preprocess_images(source, range(5), Preprocessing.imagenet(32))
    assert images.shape == (5, 3, 32, 32)


def test_unusable_files_are_skipped_with_a_count(tmp_path, caplog):
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(_photo(i))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    Image.new("1", (20_000, 10_000)).save(tmp_path / "bomb.png")  # 200 Mpixels: over twice PIL's limit
    source = FolderSource(tmp_path)
    assert len(source.labels) == 3 and source.skipped == 4
    assert "skipped 4 files" in caplog.text
    with pytest.raises(DataError, match="4 files are not readable images"):
        FolderSource(tmp_path, strict=True)


def test_a_truncated_image_is_a_one_line_error_naming_it(tmp_path):
    data = _photo(0, size=(256, 256))
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "whole.jpg").write_bytes(data)
    source = FolderSource(tmp_path)  # the header is whole: only decoding finds it
    with pytest.raises(DataError, match=r"cannot decode .*cut.jpg") as error:
        preprocess_images(source, range(len(source.labels)), Preprocessing.imagenet(32))
    assert "\n" not in str(error.value)


def test_a_folder_without_images_says_so(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(DataError, match="has no readable images"):
        FolderSource(tmp_path)


def _cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """edgecnn as typed, every download through a proxy that refuses (offline, whatever the machine)."""
    offline = f"http://127.0.0.1:{free_port()}"
    return run_cli(*args, cwd=cwd, columns=200, env={"https_proxy": offline, "http_proxy": offline, **env})


def _imagenette_folder(root: Path, per_split: dict[str, int], size: int) -> None:
    for split, count in per_split.items():
        for c, wnid in enumerate(published.IMAGENETTE_CLASSES):
            (root / split / wnid).mkdir(parents=True)
            for i in range(count):
                (root / split / wnid / f"{i}.JPEG").write_bytes(_photo(10 * c + i, (size, size)))


@needs_every_format  # its first two exports (of every format) must fail on the weights and the data
def test_export_mobilenet_v2_int8_as_typed(tmp_path):
    weights, data = tmp_path / "weights", tmp_path / "data"
    env = {"EDGECNN_WEIGHTS_DIR": str(weights), "EDGECNN_DATA_DIR": str(data)}
    missing_weights = _cli(["export", "mobilenet_v2", "--int8"], tmp_path, **env)
    assert missing_weights.returncode == 1
    [line] = missing_weights.stderr.strip().splitlines()
    assert f"place it at {weights / 'mobilenet_v2-7ebf99e0.pth'}" in line  # torchvision's default: IMAGENET1K_V2

    weights.mkdir(exist_ok=True)  # the failed download may have made it, empty
    torch.save(create_model("mobilenet_v2").state_dict(), weights / "mobilenet_v2-7ebf99e0.pth")
    missing_data = _cli(["export", "mobilenet_v2", "--int8"], tmp_path, **env)
    assert missing_data.returncode == 1
    [line] = missing_data.stderr.strip().splitlines()
    assert f"place imagenette2-320.tgz from {published.IMAGENETTE['imagenette-320'].url}" in line
    assert line.endswith("or pass --calib DIR (any folder of images)")

    _imagenette_folder(data / "imagenette2-320", {"train": 2, "val": 1}, size=320)
    typed = _cli(["export", "mobilenet_v2", "--int8", "--format", "onnx", "--calib-size", "16"], tmp_path, **env)
    assert typed.returncode == 0, typed.stderr
    assert "random weights" not in typed.stderr
    report = json.loads((tmp_path / "runs" / "export" / "export.json").read_text())
    int8 = next(a for a in report["artifacts"] if a["precision"] == "int8")
    metadata = json.loads(sidecar_path(tmp_path / int8["path"]).read_text())
    assert metadata["quantization"]["calibration"] == {
        **metadata["quantization"]["calibration"],
        "source": "imagenette-320",
        "size": 16,
    }
    assert metadata["weights"] == "imagenet:mobilenet_v2-7ebf99e0.pth"
    assert report["verification_images"] == 10 and int8["verification"]["accuracy"] is not None
    scored = _cli(["eval", int8["path"], "--data", "imagenette-320", "--json"], tmp_path, **env)
    assert scored.returncode == 0, scored.stderr
    [result] = json.loads(scored.stdout)["results"]
    assert result["images"] == 10 and result["data"] == "imagenette-320: its 10 published test images"


@pytest.mark.needs("onnx")
def test_export_calibrates_on_a_flat_folder_and_checks_agreement_only(trained_lenet, tmp_path):
    images = tmp_path / "photos"
    images.mkdir()
    for i in range(12):
        (images / f"{i}.jpg").write_bytes(_photo(i, (40, 40)))
    result = _cli(["export", str(trained_lenet), "--int8", "--format", "onnx", "--calib", str(images)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "has no class folders: verified by agreement only (accuracy needs them)" in result.stderr
    report = json.loads((tmp_path / "runs" / "export" / "export.json").read_text())
    assert report["reference_accuracy"] is None
    assert all("accuracy" not in a["verification"] for a in report["artifacts"])

    tiny = tmp_path / "tiny"
    tiny.mkdir()
    (tiny / "one.jpg").write_bytes(_photo(0, (40, 40)))
    too_small = _cli(["export", str(trained_lenet), "--int8", "--format", "onnx", "--calib", str(tiny)], tmp_path)
    assert too_small.returncode == 1
    assert too_small.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "too few images to calibrate: 1 in all, 1 held out to verify on" in too_small.stderr
    assert "Traceback" not in too_small.stderr


def test_training_on_fashion_mnist_holds_out_the_official_test_images(fashion, tmp_path):
    config = TrainConfig("lenet5", data="fashion-mnist", epochs=1, train_images=500, val_fraction=0.01, output=tmp_path)
    result = train(config, progress=False)
    assert result.train_images == 500 and result.test_images == 10_000
    split = load_checkpoint(tmp_path / "best.pt").metadata["data"]["split"]
    assert tuple(split["test"]) == fashion.official_test
    assert np.bincount([fashion.labels[i] for i in split["train"]]).tolist() == [50] * 10
    assert max(split["train"] + split["val"]) < 60_000

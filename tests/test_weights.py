"""Weights: download over a real HTTP server on 127.0.0.1, hash check, cache, offline error, loading."""

import hashlib
from pathlib import Path

import pytest
import torch

from edgecnn.errors import EdgeCNNError, WeightsError
from edgecnn.models import create_model, fetch_weights, get_model_meta, get_model_spec, weights_dir
from tests.loopback_http import serve
from tests.loopback_ssh import free_port as closed_port


def save_with_hash_name(state: dict, directory: Path, stem: str) -> Path:
    """Save a state dict under torchvision's naming convention: ``stem-<sha256 prefix>.pth``."""
    directory.mkdir(parents=True, exist_ok=True)
    scratch = directory / "scratch.pth"
    torch.save(state, scratch)
    digest = hashlib.sha256(scratch.read_bytes()).hexdigest()
    return scratch.rename(directory / f"{stem}-{digest[:8]}.pth")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "cache"
    monkeypatch.setenv("EDGECNN_WEIGHTS_DIR", str(directory))
    return directory


def test_download_verifies_hash_and_caches(tmp_path, cache):
    source = save_with_hash_name({"w": torch.arange(4.0)}, tmp_path / "server", "tiny")
    with serve(source.parent) as url:
        path = fetch_weights(f"{url}/{source.name}", progress=False)
    assert path == cache / source.name
    assert path.read_bytes() == source.read_bytes()
    assert not list(cache.glob("*.part"))
    # the server is gone: a second call must be served from the cache
    assert fetch_weights(f"{url}/{source.name}", progress=False) == path


def test_hash_mismatch_keeps_nothing(tmp_path, cache):
    source = save_with_hash_name({"w": torch.zeros(2)}, tmp_path / "server", "tiny")
    renamed = source.rename(source.with_name("tiny-deadbeef.pth"))
    with serve(renamed.parent) as url, pytest.raises(WeightsError, match="does not start with deadbeef"):
        fetch_weights(f"{url}/{renamed.name}", progress=False)
    assert list(cache.iterdir()) == []


def test_offline_error_says_where_to_put_the_file(cache):
    url = f"http://127.0.0.1:{closed_port()}/mobilenet_v2-b0353104.pth"
    with pytest.raises(WeightsError) as error:
        fetch_weights(url, progress=False)
    assert str(cache / "mobilenet_v2-b0353104.pth") in str(error.value)
    assert "offline" in str(error.value)
    assert not cache.exists() or not list(cache.iterdir())


def test_cache_defaults_to_torch_hub_checkpoints(monkeypatch, tmp_path):
    monkeypatch.delenv("EDGECNN_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert weights_dir() == tmp_path / "hub" / "checkpoints"


def test_imagenet_weights_load_from_the_cache(cache):
    source = create_model("mobilenet_v2").state_dict()
    cache.mkdir()
    torch.save(source, cache / get_model_spec("mobilenet_v2").default_weights.filename)
    model = create_model("mobilenet_v2", weights="imagenet")
    for key, value in model.state_dict().items():
        assert torch.equal(value, source[key]), key
    meta = get_model_meta(model)
    assert meta.weights == "imagenet:mobilenet_v2-7ebf99e0.pth"  # IMAGENET1K_V2, the default
    assert meta.class_names[1] == "goldfish"


def test_imagenet_preprocessing_follows_the_checkpoint(cache):
    source = create_model("efficientnet_b3").state_dict()
    cache.mkdir()
    torch.save(source, cache / get_model_spec("efficientnet_b3").default_weights.filename)
    p = get_model_meta(create_model("efficientnet_b3", weights="imagenet")).preprocessing
    assert (p.crop, p.resize, p.interpolation) == (300, 320, "bicubic")


def test_googlenet_checkpoint_with_aux_heads_loads_and_switches_on_transform_input(cache):
    source = create_model("googlenet", aux_logits=True).state_dict()
    cache.mkdir()
    torch.save(source, cache / get_model_spec("googlenet").default_weights.filename)
    model = create_model("googlenet", weights="imagenet")
    assert model.transform_input and model.aux1 is None
    assert torch.equal(model.fc.weight, source["fc.weight"])


def test_models_without_imagenet_weights_say_which_have_them():
    with pytest.raises(EdgeCNNError, match="no published ImageNet weights; models that have them: alexnet"):
        create_model("efficientnet_lite0", weights="imagenet")


def test_local_file_for_transfer_learning(tmp_path):
    source = create_model("resnet18").state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": source}, path)
    model = create_model("resnet18", weights=path, num_classes=5, in_chans=1)
    assert torch.equal(model.layer3[0].conv1.weight, source["layer3.0.conv1.weight"])
    assert torch.allclose(model.conv1.weight, source["conv1.weight"].sum(1, keepdim=True))
    assert model.fc.weight.shape == (5, 512)
    notes = get_model_meta(model).notes
    assert any("fc" in note for note in notes) and any("grayscale" in note for note in notes)


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(create_model("resnet18").state_dict(), path)
    with pytest.raises(WeightsError, match="do not fit this model"):
        create_model("resnet34", weights=path)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"not a checkpoint", "cannot read weights"), (None, "not found")],
)
def test_unreadable_files_give_clear_errors(tmp_path, content, message):
    path = tmp_path / "weights.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(WeightsError, match=message):
        create_model("lenet5", weights=path)


def test_pickled_objects_are_never_unpickled(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": create_model("lenet5").state_dict(), "extra": Path("/")}, path)
    with pytest.raises(WeightsError, match="holds Python objects beyond tensors") as error:
        create_model("lenet5", weights=path)
    assert "ran nothing from it" in str(error.value) and "weights_only" not in str(error.value)
    assert "\n" not in str(error.value)
    torch.save(create_model("lenet5"), path)  # a whole pickled module, as torch.save(model) writes
    with pytest.raises(WeightsError, match=r"beyond tensors \(edgecnn\.models\.lenet\.LeNet5\)"):
        create_model("lenet5", weights=path)

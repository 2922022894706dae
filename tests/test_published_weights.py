"""Published weights against torchvision's own weights enums: every set, its file and its evaluation recipe."""

import json
from pathlib import Path

import pytest
import torch

from edgecnn.errors import WeightsError
from edgecnn.models import create_model, get_model_meta, get_model_spec, list_models

# The project's shared reference, read from torchvision 0.29.1's torchvision/models/*.py (not a copy in tests/).
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "torchvision_weights.json"
NAMES = {"IMAGENET1K_V1": "imagenet-v1", "IMAGENET1K_V2": "imagenet-v2"}  # torchvision's enum → edgecnn's name
FIELDS = {  # the reference's key → PretrainedWeights' attribute
    "url": "url",
    "acc@1": "top1",
    "acc@5": "top5",
    "crop_size": "crop",
    "resize_size": "resize",
    "interpolation": "interpolation",
}


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, dict]]:
    """``{model: {edgecnn weights name: torchvision's figures}}``; a missing file fails rather than skips."""
    if not REFERENCE.is_file():
        pytest.fail(f"the reference {REFERENCE} is missing: the published weights cannot be checked without it")
    published = json.loads(REFERENCE.read_text())["weights"]
    return {model: {NAMES[enum]: figures for enum, figures in sets.items()} for model, sets in published.items()}


def test_every_published_set_equals_torchvision(reference):
    assert set(reference) <= set(list_models()), "the reference lists a model edgecnn does not register"
    differences = []
    for model in list_models():
        published = get_model_spec(model).published
        expected = reference.get(model, {})
        if set(published) != set(expected):
            differences.append(f"{model}: publishes {sorted(published)}, torchvision {sorted(expected)}")
            continue
        for name, figures in expected.items():
            differences += [
                f"{model} {name} {ours}: {getattr(published[name], ours)!r} != {figures[theirs]!r}"
                for theirs, ours in FIELDS.items()
                if getattr(published[name], ours) != figures[theirs]
            ]
    assert differences == []


def test_imagenet_is_torchvision_default_v2_where_published(reference):
    for model, sets in reference.items():
        spec = get_model_spec(model)
        default = "imagenet-v2" if "imagenet-v2" in sets else "imagenet-v1"
        assert spec.default_weights_name == default, model
        assert spec.published_weights("imagenet") is spec.published[default], model
    assert get_model_spec("resnet50").published_weights().top1 == 80.858


def test_imagenet_loads_v2_and_imagenet_v1_loads_v1(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECNN_WEIGHTS_DIR", str(tmp_path))
    spec = get_model_spec("mobilenet_v2")
    sources = {}
    for name, weights in spec.published.items():
        sources[name] = create_model("mobilenet_v2").state_dict()  # a fresh random init: the two files differ
        torch.save(sources[name], tmp_path / weights.filename)
    for requested, name, resize in [("imagenet", "imagenet-v2", 232), ("imagenet-v1", "imagenet-v1", 256)]:
        model = create_model("mobilenet_v2", weights=requested)
        meta = get_model_meta(model)
        assert meta.weights == f"imagenet:{spec.published[name].filename}"
        assert (meta.preprocessing.crop, meta.preprocessing.resize) == (224, resize)
        assert torch.equal(model.features[0][0].weight, sources[name]["features.0.0.weight"])


@pytest.mark.parametrize(
    ("model", "weights", "message"),
    [
        ("resnet18", "imagenet-v2", "resnet18 has no imagenet-v2 weights; it publishes imagenet-v1 ('imagenet' loads"),
        ("resnet50", "imagenet-v3", "resnet50 has no imagenet-v3 weights; it publishes imagenet-v1, imagenet-v2"),
    ],
)
def test_a_set_the_model_does_not_publish_is_one_line_naming_those_it_has(model, weights, message):
    with pytest.raises(WeightsError) as error:
        create_model(model, weights=weights)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)

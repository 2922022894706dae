import ast
import inspect
from pathlib import Path

import pytest
import torch

import edgecnn
from edgecnn.errors import EdgeCNNError, UnknownModelError
from edgecnn.models import create_model, get_model_meta, get_model_spec, list_models, register_model

EXPECTED = {
    "lenet5",
    "alexnet",
    *(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")),
    "googlenet",
    *(f"resnet{d}" for d in (18, 34, 50, 101, 152)),
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    *(f"efficientnet_b{i}" for i in range(8)),
    *(f"efficientnet_lite{i}" for i in range(5)),
    "efficientnet",
}


def test_registry_holds_every_family_and_variant():
    assert set(list_models()) == EXPECTED
    assert {get_model_spec(n).family for n in EXPECTED} == {
        "lenet",
        "alexnet",
        "vgg",
        "googlenet",
        "resnet",
        "mobilenet",
        "efficientnet",
    }


def test_every_model_is_a_top_level_def_of_its_name():
    """`def NAME(` in its family's module is how a reader, grep or an IDE finds a model: no builders made in loops."""
    for name in list_models():
        builder = get_model_spec(name).builder
        source_file = Path(inspect.getsourcefile(builder))
        tree = ast.parse(source_file.read_text(encoding="utf-8"))
        defs = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert name in defs, f"{name} is not a top-level def in {source_file.name}"
        node = defs[name]
        # a decorated function's code starts at its first decorator
        assert builder.__code__.co_firstlineno == min(n.lineno for n in [node, *node.decorator_list]), (
            f"{name} is registered from a builder other than {source_file.name}'s def {name}"
        )


def test_list_models_takes_globs_and_substrings():
    assert list_models("resnet*") == ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
    assert set(list_models("v3")) == {"mobilenet_v3_large", "mobilenet_v3_small"}
    assert list_models("no-such-model") == []


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UnknownModelError, match="did you mean mobilenet_v2"):
        create_model("mobilenetv2")


def test_duplicate_registration_is_an_error():
    with pytest.raises(ValueError, match="already registered"):

        @register_model(family="resnet")
        def resnet18(num_classes: int = 1000, in_chans: int = 3) -> torch.nn.Module:
            raise AssertionError("never built")


def test_unknown_argument_names_the_valid_ones():
    with pytest.raises(EdgeCNNError, match="does not take depth_mult; it takes: num_classes, in_chans"):
        create_model("resnet18", depth_mult=2)


def test_none_arguments_are_dropped():
    model = create_model("lenet5", num_classes=None, dropout=None)
    assert model.classifier[-1].out_features == 10


def test_model_carries_its_preprocessing_and_class_names():
    model = create_model("mobilenet_v2", num_classes=4)
    meta = get_model_meta(model)
    assert meta.name == "mobilenet_v2"
    assert meta.class_names == ["0", "1", "2", "3"]
    assert meta.preprocessing.input_shape == (3, 224, 224)
    assert meta.preprocessing.resize == 256
    assert meta.to_dict()["kwargs"] == {"num_classes": 4}


def test_imagenet_head_gets_imagenet_class_names():
    meta = get_model_meta(create_model("lenet5", num_classes=1000))
    assert len(meta.class_names) == 1000
    assert meta.class_names[0] == "tench"
    assert meta.class_names[817] == "sports car"


def test_input_size_and_in_chans_change_the_preprocessing():
    meta = get_model_meta(create_model("efficientnet_b3", num_classes=2, in_chans=1, input_size=64))
    assert meta.preprocessing.input_shape == (1, 64, 64)
    assert meta.preprocessing.interpolation == "bicubic"
    assert meta.preprocessing.channel_order == "L"
    assert len(meta.preprocessing.mean) == 1


def test_an_input_size_the_model_cannot_take_is_refused():
    with pytest.raises(EdgeCNNError, match=r"AlexNet cannot take 3×32×32 inputs \(.*\); use a larger input size"):
        create_model("alexnet", input_size=32)


def test_models_without_metadata_are_refused():
    with pytest.raises(EdgeCNNError, match="carries no metadata"):
        get_model_meta(torch.nn.Linear(2, 2))


def test_package_exposes_the_public_api():
    assert edgecnn.__version__
    assert edgecnn.create_model is create_model

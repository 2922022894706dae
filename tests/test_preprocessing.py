import pytest

from edgecnn.data import IMAGENET_MEAN, Preprocessing


def test_round_trips_through_json_types():
    p = Preprocessing.imagenet(240, 256, interpolation="bicubic")
    assert Preprocessing.from_dict(p.to_dict()) == p


def test_new_resolution_keeps_the_resize_ratio():
    p = Preprocessing.imagenet(224, 256).with_input_size(32)
    assert (p.crop, p.resize) == (32, 37)
    assert p.input_shape == (3, 32, 32)


def test_grayscale_statistics():
    p = Preprocessing.imagenet(32, in_chans=1)
    assert p.mean == pytest.approx((sum(IMAGENET_MEAN) / 3,))
    assert p.channel_order == "L"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"crop": 300, "resize": 256}, "at most resize"),
        ({"interpolation": "lanczos7"}, "unknown interpolation"),
        ({"mean": (0.5,), "std": (0.5, 0.5)}, "channels"),
    ],
)
def test_invalid_recipes_are_refused(kwargs, message):
    values = {"crop": 224, "resize": 256, "mean": (0.5,), "std": (0.5,), **kwargs}
    with pytest.raises(ValueError, match=message):
        Preprocessing(**values)


def test_unknown_keys_are_refused():
    data = Preprocessing.imagenet().to_dict() | {"gamma": 2.2}
    with pytest.raises(ValueError, match="unknown preprocessing keys: gamma"):
        Preprocessing.from_dict(data)

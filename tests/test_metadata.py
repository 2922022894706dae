"""The artifact metadata type and the exporter protocol every row of the formats table implements."""

from __future__ import annotations

import inspect
import typing

import pytest

from edgecnn.errors import EdgeCNNError
from edgecnn.export._formats import FORMATS, Exporter
from edgecnn.runtime.metadata import ArtifactMetadata, Calibration, HeldOut, InputSpec, Quantization
from edgecnn.runtime.targets import TARGETS


def _example() -> ArtifactMetadata:
    return ArtifactMetadata(
        model="mobilenet_v2",
        precision="int8",
        classes=("a", "b"),
        preprocessing={"crop": 32, "mean": [0.5, 0.5, 0.5]},
        input=InputSpec(shape=(1, 3, 32, 32)),
        quantization=Quantization("QDQ", seven_bit_weights=True, calibration=Calibration("digits", 8)),
        held_out=HeldOut("digits", "abc", (3, 5)),
        target="x86-avx2",
    )


def test_metadata_survives_its_json_form():
    metadata = _example()
    assert ArtifactMetadata.from_json(metadata.to_json()) == metadata
    assert metadata.fixed_batch == 1 and metadata.quantization and metadata.quantization.seven_bit_weights
    dynamic = ArtifactMetadata(input=InputSpec(shape=("batch", 3, 32, 32)))
    assert dynamic.fixed_batch is None


def test_keys_of_a_newer_edgecnn_are_ignored_and_absent_metadata_is_empty():
    stored = {**_example().to_dict(), "pruning": {"ratio": 0.5}}
    stored["quantization"]["observer"] = "new"
    assert ArtifactMetadata.from_dict(stored) == _example()
    empty = ArtifactMetadata.from_json(None)
    assert not empty.known and empty.fixed_batch is None


@pytest.mark.parametrize("stored", ['{"held_out": {"source": "x"}}', '{"classes": 3}', "not json"])
def test_malformed_metadata_is_one_line_of_error(stored):
    with pytest.raises(EdgeCNNError, match="edgecnn metadata that") as caught:
        ArtifactMetadata.from_json(stored)
    assert "\n" not in str(caught.value)


def _members(protocol: type) -> dict[str, inspect.Signature]:
    members = {}
    for name, member in vars(protocol).items():
        if inspect.isfunction(member) and not name.startswith("_"):
            parameters = list(inspect.signature(member).parameters.values())[1:]  # without self
            members[name] = inspect.Signature(parameters)
    return members


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_format_implements_the_exporter_protocol(name):
    module = FORMATS[name].load_exporter()
    expected = _members(Exporter)
    assert set(expected) == {"export_float", "quantize_int8", "int8_scheme", "count_ops"}
    for member, signature in expected.items():
        implemented = getattr(module, member, None)
        assert callable(implemented), f"{name} has no {member}"
        parameters = [(p.name, p.kind) for p in inspect.signature(implemented).parameters.values()]
        assert parameters == [(p.name, p.kind) for p in signature.parameters.values()], f"{name}.{member}"
        hints = typing.get_type_hints(implemented)
        assert hints["return"] == typing.get_type_hints(getattr(Exporter, member), vars(module))["return"], member
    for target in TARGETS.values():
        scheme = module.int8_scheme("auto", target)
        assert isinstance(scheme, Quantization) and scheme.scheme
        assert ArtifactMetadata.from_json(ArtifactMetadata(quantization=scheme).to_json()).quantization == scheme

"""Pruning: models really shrink in every family, keep working, round-trip, export, and bad input is clear."""

import json

import pytest
import torch
from conftest import needs_every_format, run_cli
from torch import nn

from edgecnn import create_model
from edgecnn.export import ExportConfig, export
from edgecnn.models._registry import get_model_spec
from edgecnn.models.checkpoint import load_checkpoint, save_checkpoint
from edgecnn.models.complexity import count_macs, count_params
from edgecnn.models.layers import layer_dims
from edgecnn.optimize.prune import (
    PruneConfig,
    PruneError,
    protected_layers,
    prune,
    prune_channels,
    prune_unstructured,
    record_layer_shapes,
)

# one or more per family: residual adds, depthwise, squeeze-excite, Inception concatenation, big classifiers
FAMILIES = [
    "lenet5",
    "alexnet",
    "vgg11_bn",
    "googlenet",
    "resnet18",
    "resnet50",
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
]


def built(name: str, size: int | None = None) -> nn.Module:
    """Small inputs keep the tests quick; AlexNet's pooling needs 64 pixels."""
    torch.manual_seed(0)
    size = size or (32 if name == "lenet5" else 64)
    return create_model(name, num_classes=10, input_size=size).eval()


def example(model: nn.Module) -> torch.Tensor:
    return torch.randn(2, *model.edgecnn_meta.preprocessing.input_shape)


@pytest.mark.needs("prune")
@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_prunes_for_real_and_keeps_working(name):
    model = built(name)
    shape = model.edgecnn_meta.preprocessing.input_shape
    params, macs, before = count_params(model), count_macs(model, shape), layer_dims(model)
    protected = protected_layers(model, [])
    prune_channels(model, example(model)[:1], 0.3, protect=protected)
    assert model(example(model)).shape == (2, 10)
    # 30% of the channels on both sides of a convolution: ~half its weights and MACs
    assert count_params(model) < 0.8 * params and count_macs(model, shape) < 0.75 * macs
    after = layer_dims(model)
    stem, head = protected
    assert after[stem][1] == before[stem][1] and stem == get_model_spec(name).first_conv  # the stem is kept whole
    assert after[head][1] == 10 and isinstance(model.get_submodule(head), nn.Linear)
    convs = [n for n in after if isinstance(model.get_submodule(n), nn.Conv2d)]
    narrowed = [n for n in convs if after[n][1] != before[n][1]]  # output channels removed
    assert narrowed and all(after[n][1] % 8 == 0 for n in narrowed), "--round-to 8 must hold"


@pytest.mark.needs("prune")
def test_depthwise_models_lose_half_their_work_at_30_percent():
    model = built("mobilenet_v2", 64)
    shape = model.edgecnn_meta.preprocessing.input_shape
    macs = count_macs(model, shape)
    prune_channels(model, example(model)[:1], 0.3, protect=protected_layers(model, []))
    assert 0.4 < count_macs(model, shape) / macs < 0.6


@pytest.mark.needs("prune")
def test_a_pruned_checkpoint_round_trips_without_code(tmp_path):
    model = built("efficientnet_b0")
    before = layer_dims(model)
    prune_channels(model, example(model)[:1], 0.5, protect=protected_layers(model, []))
    record_layer_shapes(model, before)
    path = save_checkpoint(tmp_path / "pruned.pt", model)
    metadata = json.loads(torch.load(path, weights_only=True)["metadata"])
    assert metadata["model"]["layer_shapes"]
    loaded = load_checkpoint(path).model.eval()
    x = example(model)
    torch.testing.assert_close(loaded(x), model(x))
    assert count_params(loaded) == count_params(model)


@pytest.mark.needs("prune")
@needs_every_format
def test_prune_command_fine_tunes_and_the_result_exports_and_verifies(trained_lenet, tmp_path):
    result = run_cli(
        "prune", str(trained_lenet), "--ratio", "0.5", "--finetune-epochs", "2", "--output", str(tmp_path), "--json"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["after"]["params"] < 0.6 * report["before"]["params"]
    assert report["after"]["macs"] < report["before"]["macs"]
    assert report["after"]["size_bytes"] < report["before"]["size_bytes"]
    assert report["after"]["accuracy"] > 70  # fine-tuned, not left broken
    assert (tmp_path / "prune.md").is_file() and (tmp_path / "step1" / "best.pt").is_file()
    pruned = load_checkpoint(tmp_path / "pruned.pt")
    original = load_checkpoint(trained_lenet)
    assert pruned.metadata["data"]["split"] == original.metadata["data"]["split"]  # fine-tuned on the same split
    assert pruned.metadata["pruning"]["ratio"] == 0.5
    exported = export(ExportConfig(str(tmp_path / "pruned.pt"), int8=True, calib_size=32, output=tmp_path / "out"))
    assert len(exported.artifacts) == 6
    for artifact in exported.artifacts:
        if artifact.precision == "fp32":
            assert artifact.verification["max_abs_diff_over_range"] < 1e-4, artifact.path
        else:
            assert artifact.verification["top1_agreement"] > 90, artifact.path


@pytest.mark.needs("prune")
@needs_every_format
@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_b0", "googlenet"])
def test_pruned_depthwise_se_and_inception_models_export_to_all_formats(name, tmp_path):
    model = built(name)
    before = layer_dims(model)
    prune_channels(model, example(model)[:1], 0.3, protect=protected_layers(model, []))
    record_layer_shapes(model, before)
    path = save_checkpoint(tmp_path / "pruned.pt", model)
    report = export(ExportConfig(str(path), output=tmp_path / "out"))
    assert {a.format for a in report.artifacts} == {"onnx", "openvino", "tflite"}
    assert all(a.verification["max_abs_diff_over_range"] < 1e-4 for a in report.artifacts)


@pytest.mark.needs("prune")
def test_iterative_and_taylor_pruning(trained_lenet, tmp_path):
    config = PruneConfig(
        str(trained_lenet), ratio=0.5, method="taylor", iterative=2, finetune_epochs=1, output=tmp_path
    )
    report = prune(config, progress=False)
    assert report.after.params < report.before.params and report.iterative == 2
    assert (tmp_path / "step2" / "best.pt").is_file()


def test_unstructured_pruning_is_reported_as_what_it_is(trained_lenet, tmp_path):
    config = PruneConfig(str(trained_lenet), ratio=0.8, unstructured=True, finetune_epochs=0, output=tmp_path)
    report = prune(config, progress=False)
    assert report.after.params == report.before.params and report.after.macs == report.before.macs
    weights = [
        m.weight
        for m in load_checkpoint(tmp_path / "pruned.pt").model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros > 0.75  # the stem and classifier are kept whole
    assert report.after.compressed_bytes < 0.6 * report.before.compressed_bytes
    assert "same work" in report.notes[0]


def test_unstructured_sparsity_on_a_module():
    model = built("resnet18")
    prune_unstructured(model, 0.5)
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert sum(int((w == 0).sum()) for w in convs) / sum(w.numel() for w in convs) == pytest.approx(0.5, abs=0.02)


class HardCoded(nn.Module):
    """A forward that assumes 16 channels: what channel pruning cannot follow."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.body, self.head = nn.Conv2d(1, 16, 3), nn.Conv2d(16, 16, 3), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(self.stem(x))
        return self.head(x.reshape(x.shape[0], 16, -1).mean(-1))


@pytest.mark.needs("prune")
def test_a_layer_pruning_cannot_follow_is_a_clear_error():
    with pytest.raises(PruneError, match="cannot prune HardCoded by channels"):
        prune_channels(HardCoded(), torch.randn(1, 1, 8, 8), 0.5, round_to=None, protect=["stem", "head"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ratio", "0"], "ratio must be between 0 and 1"),
        (["--ratio", "1"], "ratio must be between 0 and 1"),
        (["--ratio", "-0.2"], "ratio must be between 0 and 1"),
        (["--protect", "features.99"], "no layer named 'features.99'"),
        (["--protect", "feature.3"], "did you mean"),
        (["--method", "random"], "unknown method"),
        (["--unstructured", "--method", "taylor"], "unstructured pruning is by magnitude"),
    ],
)
def test_bad_prune_input_is_one_line_and_exit_1(trained_lenet, tmp_path, args, message):
    result = run_cli("prune", str(trained_lenet), "--finetune-epochs", "0", "--output", str(tmp_path), *args)
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_fine_tuning_a_bare_model_name_needs_data(tmp_path):
    with pytest.raises(PruneError, match="fine-tuning needs images"):
        prune(PruneConfig("lenet5", output=tmp_path), progress=False)

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgecnn import create_model
from edgecnn.export import ExportConfig, ExportReport, export
from edgecnn.train import TrainConfig, train

REFERENCE = Path(__file__).parent / "reference"


def run_cli(
    *args: str, cwd: Path | None = None, columns: int = 80, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``edgecnn ARGS`` as a user runs it: a real process, its exit code and output."""
    return subprocess.run(
        [sys.executable, "-m", "edgecnn.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "COLUMNS": str(columns), **(env or {})},
    )


@pytest.fixture(scope="session")
def reference_models() -> dict:
    """torchvision 0.29.1's own figures per model (copied from the project's shared reference)."""
    return json.loads((REFERENCE / "torchvision_models.json").read_text())


@pytest.fixture(scope="session")
def reference_shapes() -> dict:
    return json.loads((REFERENCE / "torchvision_state_dict_shapes.json").read_text())


def build_on_meta(name: str, **kwargs) -> torch.nn.Module:
    """Build without allocating weights: enough for counts, shapes and MACs."""
    with torch.device("meta"):
        return create_model(name, **kwargs)


@pytest.fixture(scope="session")
def trained_lenet(tmp_path_factory) -> Path:
    """A LeNet-5 trained for two epochs on digits: a real model with real held-out data."""
    output = tmp_path_factory.mktemp("lenet")
    train(TrainConfig("lenet5", epochs=2, output=output), progress=False)
    return output / "best.pt"


@pytest.fixture(scope="session")
def lenet_artifacts(trained_lenet, tmp_path_factory) -> ExportReport:
    """That LeNet-5 exported fp32 and int8 to all three formats (the artifacts the benchmarker reads)."""
    return export(
        ExportConfig(str(trained_lenet), int8=True, calib_size=32, output=tmp_path_factory.mktemp("artifacts"))
    )


def artifact_path(report: ExportReport, fmt: str, precision: str) -> Path:
    """The path of one artifact of an export report."""
    return next(Path(a.path) for a in report.artifacts if (a.format, a.precision) == (fmt, precision))

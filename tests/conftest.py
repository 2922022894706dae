import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgecnn import create_model
from edgecnn.export import FORMATS, ExportConfig, ExportReport, export
from edgecnn.train import TrainConfig, train

REFERENCE = Path(__file__).parent / "reference"

# Tests that need an optional extra of pyproject.toml say so: ``@pytest.mark.needs("openvino")``. Where the
# extra is not installed the test is skipped with the line that installs it, so a user with only
# ``edgecnn[onnx]`` can run the suite; where EDGECNN_REQUIRE_BACKENDS is set (``make test``, which CI runs)
# it fails instead, so a CI machine that lost a backend cannot pass by skipping its tests.
REQUIRE_BACKENDS = "EDGECNN_REQUIRE_BACKENDS"
#: each optional extra and the modules it installs: a format's are the formats table's
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    **{fmt.extra: fmt.modules for fmt in FORMATS.values()},
    "prune": ("torch_pruning",),
}
#: what an export of every format (the default, ``all``) needs
needs_every_format = pytest.mark.needs(*(fmt.extra for fmt in FORMATS.values()))
#: the formats table's rows as test parameters, each needing its own extra
EACH_FORMAT = [pytest.param(fmt, marks=pytest.mark.needs(fmt.extra), id=fmt.name) for fmt in FORMATS.values()]
_INSTALLED = pytest.StashKey[dict[str, bool]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"needs(*extras): skipped without these extras of edgecnn ({REQUIRE_BACKENDS}=1: fails instead)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A fixture cannot carry a mark: the tests using ``lenet_artifacts``, which exports every format, need
    every format's extra."""
    for item in items:
        if "lenet_artifacts" in item.fixturenames:
            item.add_marker(needs_every_format)


def installed(config: pytest.Config, extra: str) -> bool:
    """Whether every module of ``extra`` imports, tried once a session in a fresh interpreter. An import, not
    ``find_spec``: a package that is there but cannot be imported (a missing shared library, a shadowing
    stub) is as good as missing. Not in this process: its tests would then run beside backends they never
    imported themselves (litert-torch brings JAX, which warns of deadlocks at every later fork)."""
    found = config.stash.setdefault(_INSTALLED, {})
    if extra not in found:
        imports = "; ".join(f"import {module}" for module in EXTRA_MODULES[extra])
        found[extra] = subprocess.run([sys.executable, "-c", imports], capture_output=True, timeout=300).returncode == 0
    return found[extra]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture is set up: a fixture may be what needs the extra (an export to every format)."""
    needed = [extra for mark in item.iter_markers("needs") for extra in mark.args]
    unknown = sorted(set(needed) - set(EXTRA_MODULES))
    if unknown:
        pytest.fail(f"needs() names no extra of edgecnn: {', '.join(unknown)}; valid: {', '.join(EXTRA_MODULES)}")
    missing = [extra for extra in dict.fromkeys(needed) if not installed(item.config, extra)]
    if not missing:
        return
    names = ", ".join(f"'{extra}'" for extra in missing)
    reason = f"needs the {names} extra{'s' if len(missing) > 1 else ''}: pip install 'edgecnn[{','.join(missing)}]'"
    if os.environ.get(REQUIRE_BACKENDS, "") not in ("", "0"):
        pytest.fail(f"{reason} ({REQUIRE_BACKENDS} is set: every backend must be installed)", pytrace=False)
    pytest.skip(reason)


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

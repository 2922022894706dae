import json
from pathlib import Path

import pytest
import torch

from edgecnn import create_model

REFERENCE = Path(__file__).parent / "reference"


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

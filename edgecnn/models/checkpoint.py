"""Checkpoints: a plain state dict plus JSON metadata, in one file that loads without unpickling code.

The metadata says how to rebuild the model (registry name and builder arguments), how to feed it
(preprocessing, class names) and where it came from (data split, training figures), so every later
stage (export, bench, eval, check) accepts a checkpoint wherever it accepts a model name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgecnn import __version__
from edgecnn._io import atomic_path
from edgecnn.data.preprocessing import Preprocessing
from edgecnn.errors import EdgeCNNError, WeightsError
from edgecnn.models._registry import create_model, get_model_meta
from edgecnn.models._weights import load_tensor_file

CHECKPOINT_FORMAT = "edgecnn-checkpoint"
SCHEMA_VERSION = 1
CHECKPOINT_SUFFIXES = (".pt", ".pth")


@dataclass
class Checkpoint:
    path: Path
    model: nn.Module
    metadata: dict[str, Any]


def save_checkpoint(path: str | Path, model: nn.Module, **extra: Any) -> Path:
    """Write ``model`` and its metadata (plus ``extra`` JSON-able sections) atomically to ``path``."""
    metadata = {
        "schema_version": SCHEMA_VERSION,
        "edgecnn_version": __version__,
        "model": get_model_meta(model).to_dict(),
    }
    metadata.update(extra)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "metadata": json.dumps(metadata),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)
    return Path(path)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Rebuild the model a checkpoint describes and load its weights (``weights_only``, strict)."""
    path = Path(path)
    payload = load_tensor_file(path, "checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(f"{path} is not an edgecnn checkpoint (a plain state dict goes in --weights)")
    metadata = json.loads(payload["metadata"])
    described = metadata["model"]
    model = create_model(described["name"], layer_shapes=described.get("layer_shapes"), **described["kwargs"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise WeightsError(
            f"checkpoint {path} does not match its own architecture: {str(exc).splitlines()[0]}"
        ) from exc
    meta = get_model_meta(model)
    meta.preprocessing = Preprocessing.from_dict(described["preprocessing"])
    meta.class_names = list(described["class_names"])
    meta.weights = f"checkpoint:{path.name}"
    return Checkpoint(path, model, metadata)


def is_checkpoint_path(model: str | Path) -> bool:
    return Path(model).suffix in CHECKPOINT_SUFFIXES


def resolve_model(model: str | Path, **kwargs: Any) -> nn.Module:
    """A registered name (built with ``kwargs``) or an edgecnn checkpoint file."""
    if is_checkpoint_path(model):
        if kwargs:
            raise EdgeCNNError(f"a checkpoint fixes its architecture; {', '.join(kwargs)} cannot be changed")
        return load_checkpoint(model).model
    return create_model(str(model), **kwargs)


def held_out_images(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    """Which images the model never trained on (source, fingerprint, test indices), for a fair ``eval``."""
    data = (metadata or {}).get("data")
    if not data:
        return None
    return {"source": data["source"], "fingerprint": data["fingerprint"], "test_indices": data["split"]["test"]}

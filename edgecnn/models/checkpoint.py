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
from edgecnn.models._registry import create_model, get_model_meta, get_model_spec
from edgecnn.models._weights import IMAGENET, load_tensor_file
from edgecnn.runtime.metadata import HeldOut

CHECKPOINT_FORMAT = "edgecnn-checkpoint"
SCHEMA_VERSION = 1
CHECKPOINT_SUFFIXES = (".pt", ".pth")


@dataclass
class Checkpoint:
    path: Path | None  # None: built from a registered name, never saved
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


def resolve_model(
    model: str | Path,
    weights: str | Path | None = None,
    input_size: int | None = None,
    fallback: str = IMAGENET,
    **kwargs: Any,
) -> Checkpoint:
    """What every stage starts from: a registered name or an edgecnn checkpoint, as a model.

    A name is built with ``weights``: ``"imagenet"`` (torchvision's default set), ``"imagenet-v1"``/
    ``"imagenet-v2"``, a state-dict path, ``"none"`` (random) or, when ``None``, ``fallback`` — the
    stage's default: published ImageNet weights for export and pruning (random where a model publishes
    none), ``"none"`` for training from scratch. A checkpoint carries its own weights and input size;
    ``kwargs`` (a head for other classes, another dropout) rebuild it around its weights. The returned
    path is None for a name; the metadata is empty.
    """
    if is_checkpoint_path(model):
        if weights is not None or input_size is not None:
            raise EdgeCNNError("a checkpoint fixes its weights and input size; drop --weights/--input-size")
        checkpoint = load_checkpoint(model)
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if not kwargs:
            return checkpoint
        described = checkpoint.metadata["model"]
        rebuilt = create_model(
            described["name"],
            weights=model,
            layer_shapes=described.get("layer_shapes"),
            **{**described["kwargs"], **kwargs},
        )
        get_model_meta(rebuilt).preprocessing = get_model_meta(checkpoint.model).preprocessing
        return Checkpoint(checkpoint.path, rebuilt, checkpoint.metadata)
    chosen = fallback if weights is None else weights
    if chosen == IMAGENET and weights is None and not get_model_spec(str(model)).published:
        chosen = "none"  # nothing published: random, which the caller's warning says
    built = create_model(str(model), weights=None if chosen == "none" else chosen, input_size=input_size, **kwargs)
    return Checkpoint(None, built, {})


def held_out_images(metadata: dict[str, Any] | None) -> HeldOut | None:
    """Which images the model never trained on (source, fingerprint, test indices), for a fair ``eval``."""
    data = (metadata or {}).get("data")
    if not data:
        return None
    return HeldOut(data["source"], data["fingerprint"], tuple(data["split"]["test"]))

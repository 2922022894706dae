"""Pretrained weights: where they come from, how they are cached, verified and loaded.

Checkpoints are torchvision's own files (same URLs, same state-dict layout). They are cached in
``$EDGECNN_WEIGHTS_DIR`` or, by default, torch hub's checkpoint folder, the folder torchvision
uses, so a file a user already downloaded with torchvision is found without a second download.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgecnn._download import DownloadError, Expected, download
from edgecnn.errors import WeightsError

TORCHVISION_URL = "https://download.pytorch.org/models/"
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")


@dataclass(frozen=True)
class PretrainedWeights:
    """One published checkpoint and what it needs to be used as published."""

    url: str
    top1: float
    top5: float
    crop: int = 224
    resize: int = 256
    interpolation: str = "bilinear"
    num_classes: int = 1000
    builder_kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def torchvision_weights(filename: str, top1: float, top5: float, **kwargs: Any) -> PretrainedWeights:
    return PretrainedWeights(TORCHVISION_URL + filename, top1, top5, **kwargs)


IMAGENET = "imagenet"
# torchvision's ImageNet sets (IMAGENET1K_V1, IMAGENET1K_V2) under edgecnn's names, oldest first: its
# DEFAULT, and so what plain "imagenet" loads, is the newest a model publishes.
IMAGENET_VERSIONS = ("imagenet-v1", "imagenet-v2")
# Also "imagenet-v3": a version no model publishes is an error naming those it has, not a missing file.
_PUBLISHED_NAME = re.compile(r"imagenet(-v\d+)?")


def imagenet_weights(v1: PretrainedWeights, v2: PretrainedWeights | None = None) -> dict[str, PretrainedWeights]:
    """A model's published sets keyed by the names ``weights=`` takes: torchvision's V1 and, if any, V2."""
    published = {"imagenet-v1": v1}
    if v2 is not None:
        published["imagenet-v2"] = v2
    return published


def names_published_weights(weights: str | Path | None) -> bool:
    """Whether ``weights`` names published weights (``imagenet``, ``imagenet-v2``) rather than a file."""
    return isinstance(weights, str) and _PUBLISHED_NAME.fullmatch(weights) is not None


def weights_dir() -> Path:
    """The weights cache: ``$EDGECNN_WEIGHTS_DIR`` or torch hub's ``checkpoints`` folder."""
    configured = os.environ.get("EDGECNN_WEIGHTS_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path(torch.hub.get_dir()) / "checkpoints"


def fetch_weights(url: str, directory: Path | None = None, progress: bool = True) -> Path:
    """Return the cached file for ``url``, downloading and hash-checking it on first use.

    The hash in the file name (``name-<sha256 prefix>.pth``, torchvision's convention) is checked
    after download; an interrupted or corrupt download never leaves a file under the final name.
    """
    directory = weights_dir() if directory is None else directory
    destination = directory / url.rsplit("/", 1)[-1]
    if destination.is_file():
        return destination
    match = _HASH_IN_NAME.search(destination.name)
    offline = (
        f"if this machine is offline, download that file elsewhere and place it at {destination} (or pass weights=PATH)"
    )
    try:
        return download(url, destination, Expected(sha256_prefix=match and match.group(1)), offline, progress)
    except DownloadError as exc:
        raise WeightsError(str(exc)) from None


def load_tensor_file(path: str | Path, what: str) -> object:
    """``torch.load`` with ``weights_only=True`` (tensors and plain containers, never code)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own message says to load the file with weights_only=False, which would run its code
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found is None:
            raise WeightsError(f"cannot read {what} {path}: not a file torch.save wrote, or a damaged one") from None
        raise WeightsError(
            f"{what} {path} holds Python objects beyond tensors ({found.group(1)}); edgecnn loads tensors only "
            "and ran nothing from it: save a state dict instead (torch.save(model.state_dict(), PATH))"
        ) from None
    except Exception as exc:  # torch raises several types for corrupt files
        raise WeightsError(f"cannot read {what} {path}: {str(exc).splitlines()[0]}") from exc


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a file: plain, or under a ``state_dict``/``model`` key (checkpoints)."""
    loaded = load_tensor_file(path, "weights")
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return loaded


def load_into(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    first_conv: str,
    classifier: str,
    optional_prefixes: tuple[str, ...] = (),
) -> list[str]:
    """Load ``state_dict`` into ``model`` the way transfer learning needs it.

    A 3-channel first convolution is summed into one channel for grayscale models; a classifier of
    another size is left at its fresh initialisation; keys of optional heads the model does not have
    (GoogLeNet's auxiliary classifiers) are ignored. Anything else that does not match is an error.
    Returns notes on what was adapted.
    """
    own = model.state_dict()
    state = {k: v for k, v in state_dict.items() if k in own or not k.startswith(optional_prefixes)}
    notes: list[str] = []
    conv_key = f"{first_conv}.weight"
    if conv_key in state and conv_key in own and state[conv_key].shape != own[conv_key].shape:
        weight = state[conv_key]
        if own[conv_key].shape[1] == 1 and weight.shape[1] == 3:
            state[conv_key] = weight.sum(dim=1, keepdim=True)
            notes.append(f"{first_conv}: summed RGB filters into one grayscale channel")
    head = f"{classifier}."
    head_keys = [k for k in state if k.startswith(head)]
    if any(k in own and state[k].shape != own[k].shape for k in head_keys):
        for key in head_keys:
            del state[key]
    if any(k.startswith(head) and k not in state for k in own):
        notes.append(f"{classifier}: not taken from the checkpoint (other classes); freshly initialised")
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    if mismatched:
        key = mismatched[0]
        raise WeightsError(
            f"weights do not fit this model: {key} is {tuple(state[key].shape)} in the checkpoint "
            f"but {tuple(own[key].shape)} in the model ({len(mismatched)} tensors differ)"
        )
    missing = [k for k in own if k not in state and not k.startswith(head)]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise WeightsError(f"weights do not fit this model: {', '.join(details)} keys")
    model.load_state_dict(state, strict=False)
    return notes

"""Parameter and multiply-accumulate counts, and a per-layer summary.

Everything runs on PyTorch's ``meta`` device: shapes propagate, no arithmetic is done and no
activation memory is allocated, so even EfficientNet-B7 at 600×600 is counted in milliseconds.
MACs count convolutions and linear layers (the convention of torchvision's "GFLOPS" column).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from edgecnn.errors import EdgeCNNError


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        kernel = module.kernel_size[0] * module.kernel_size[1]
        return output[0].numel() * (module.in_channels // module.groups) * kernel
    if isinstance(module, nn.Linear):
        return output[0].numel() * module.in_features
    return 0


def _input_shape(input_size: int | tuple[int, ...], model: nn.Module) -> tuple[int, ...]:
    """(1, C, H, W) from an int (square, channels from the first conv), (C, H, W) or (N, C, H, W)."""
    if isinstance(input_size, int):
        first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        return (1, first_conv.in_channels, input_size, input_size)
    shape = tuple(input_size)
    return shape if len(shape) == 4 else (1, *shape)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


def _trace(model: nn.Module, input_size: int | tuple[int, ...]) -> list[tuple[str, nn.Module, tuple[int, ...], int]]:
    """Run the model once on meta tensors; (name, module, output shape, MACs) of each call, in order."""
    calls: list[tuple[str, nn.Module, tuple[int, ...], int]] = []
    names = {module: name for name, module in model.named_modules()}

    def hook(module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            calls.append((names[module], module, tuple(output.shape), _layer_macs(module, output)))

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    tensors = {
        k: torch.empty_like(v, device="meta")
        for k, v in {**dict(model.named_parameters()), **dict(model.named_buffers())}.items()
    }
    try:
        with _eval_mode(model), torch.no_grad():
            functional_call(model, tensors, (torch.empty(_input_shape(input_size, model), device="meta"),))
    finally:
        for handle in handles:
            handle.remove()
    return calls


def check_input_size(model: nn.Module, input_shape: tuple[int, ...]) -> None:
    """Fail with a clear error if ``model`` cannot run on inputs of ``input_shape`` (checked on meta)."""
    try:
        _trace(model, input_shape)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[0]
        shape = "×".join(map(str, input_shape))
        raise EdgeCNNError(
            f"{type(model).__name__} cannot take {shape} inputs ({reason}); use a larger input size"
        ) from exc


def count_macs(model: nn.Module, input_size: int | tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass of one image (batch 1) in eval mode."""
    return sum(macs for _, _, _, macs in _trace(model, input_size))


def layer_summary(model: nn.Module, input_size: int | tuple[int, ...], depth: int = 2) -> list[LayerRow]:
    """One row per module at most ``depth`` levels deep: output shape, parameters and MACs of its subtree."""
    macs: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for name, module, shape, layer_macs in _trace(model, input_size):
        parts = name.split(".")
        if len(parts) < depth and any(True for _ in module.children()):
            continue  # a container above the summary's depth: its children have rows of their own
        key = ".".join(parts[:depth])
        macs[key] = macs.get(key, 0) + layer_macs
        if name == key:
            shapes[key] = shape
    rows = []
    for key, total in macs.items():
        owner = model.get_submodule(key)
        rows.append(LayerRow(key, type(owner).__name__, shapes.get(key, ()), count_params(owner), total))
    return rows

"""Fold every BatchNorm that follows a convolution into that convolution's weights and bias.

At inference a BatchNorm is a per-channel affine map, so ``bn(conv(x))`` equals one convolution with
rescaled weights and a shifted bias. Folding removes a memory pass per layer and is what int8
converters expect to see. The pairs are found on a ``torch.fx`` trace, so residual blocks, Inception
branches and squeeze-excite need no per-family code; the model keeps its class and module names, with
each folded BatchNorm replaced by ``nn.Identity``.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from edgecnn.errors import EdgeCNNError

_NORMS = (nn.BatchNorm2d,)


def conv_batchnorm_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv name, batch-norm name) where the norm's only input is the convolution, used nowhere else."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # fx raises many types on untraceable Python
        raise EdgeCNNError(f"cannot trace {type(model).__name__} to find BatchNorm layers: {exc}") from exc
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), _NORMS):
            continue
        source = node.args[0]
        if (
            isinstance(source, fx.Node)
            and source.op == "call_module"
            and isinstance(modules.get(source.target), nn.Conv2d)
            and len(source.users) == 1
        ):
            pairs.append((str(source.target), str(node.target)))
    return pairs


@torch.no_grad()
def fold_conv_batchnorm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    """Rewrite ``conv`` in place so that it computes ``norm(conv(x))`` with ``norm`` in eval mode."""
    scale = (
        norm.weight / torch.sqrt(norm.running_var + norm.eps)
        if norm.affine
        else 1 / torch.sqrt(norm.running_var + norm.eps)
    )
    shift = norm.bias if norm.affine else torch.zeros_like(norm.running_mean)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
    folded_bias = (bias - norm.running_mean) * scale + shift
    if conv.bias is None:
        conv.bias = nn.Parameter(folded_bias)
    else:
        conv.bias.copy_(folded_bias)


def fold_batchnorm(model: nn.Module, inplace: bool = False) -> nn.Module:
    """A copy of ``model`` (eval mode) with each conv→BatchNorm pair folded into the convolution.

    Outputs equal the original model's in eval mode up to float rounding. BatchNorms that do not
    directly follow a convolution are left in place.
    """
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    for conv_name, norm_name in conv_batchnorm_pairs(model):
        fold_conv_batchnorm(model.get_submodule(conv_name), model.get_submodule(norm_name))
        parent_name, _, child = norm_name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, nn.Identity())
    return model

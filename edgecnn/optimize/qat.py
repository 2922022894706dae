"""Quantization-aware fine-tuning: the model trains while its int8 layers compute as int8 will, so its weights
settle where rounding costs least.

The simulation is the one sensitivity and bias correction use — weights symmetric int8 per output channel,
each layer's input uint8 per tensor over a range tracked during training — with straight-through gradients
(rounding passes the gradient unchanged; clipping stops it). BatchNorm is frozen (statistics and affine
parameters), so rounding a convolution's weights per output channel is exactly rounding the folded weights
every format quantizes: folding scales each output channel, and a per-channel scale absorbs that. The layers
the formats keep float (``recipe_float_layers``) train float.

The result is a plain checkpoint — float weights that sit well on the int8 grid — that goes through the same
export as any other, each format calibrating its own ranges: one QAT for ONNX, OpenVINO and TFLite, with no
format's QAT graph to convert.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgecnn.optimize.int8_correction import recipe_float_layers
from edgecnn.optimize.sensitivity import fake_quantize_input, fake_quantize_weight, quantizable_layers

#: weight of each batch in the tracked input ranges (PyTorch's moving-average observers use the same)
RANGE_MOMENTUM = 0.01


class FakeQuantized:
    """Inside the block, ``model``'s int8 layers compute with fake-quantized weights and inputs, and its
    BatchNorms are frozen; the model's parameters and state dict stay those of the plain model, so checkpoints
    saved inside are ordinary ones. Each layer's input range follows the training batches (a moving average of
    their min and max, started from the first batch) and is held fixed in eval mode."""

    def __init__(self, model: nn.Module) -> None:
        kept_float = set(recipe_float_layers(model))
        self.layers = {name: layer for name, layer in quantizable_layers(model).items() if name not in kept_float}
        self.model = model
        self.ranges: dict[str, tuple[float, float]] = {}
        self._norm_parameters: dict[nn.Parameter, bool] = {}  # BatchNorm parameters: whether they trained

    def __enter__(self) -> FakeQuantized:
        # the training loop keeps norms without gradients in eval mode; each gets its own flag back after
        self._norm_parameters = {
            parameter: parameter.requires_grad
            for module in self.model.modules()
            if isinstance(module, nn.modules.batchnorm._BatchNorm)
            for parameter in module.parameters()
        }
        for parameter in self._norm_parameters:
            parameter.requires_grad_(False)
        for name, layer in self.layers.items():
            layer.forward = self._forward_for(name, layer)  # an instance attribute: not in the state dict
        return self

    def __exit__(self, *_: object) -> None:
        for layer in self.layers.values():
            del layer.forward
        for parameter, wanted in self._norm_parameters.items():
            parameter.requires_grad_(wanted)

    def _forward_for(self, name: str, layer: nn.Module) -> Any:
        def forward(inputs: torch.Tensor) -> torch.Tensor:
            inputs = fake_quantize_input(inputs, *self._range(name, inputs, layer.training))
            weight = fake_quantize_weight(layer.weight)
            if isinstance(layer, nn.Conv2d):
                return layer._conv_forward(inputs, weight, layer.bias)
            return F.linear(inputs, weight, layer.bias)

        return forward

    def _range(self, name: str, inputs: torch.Tensor, training: bool) -> tuple[float, float]:
        if training or name not in self.ranges:
            low, high = float(inputs.detach().min()), float(inputs.detach().max())
            seen = self.ranges.get(name)
            if seen is not None:
                low = seen[0] + RANGE_MOMENTUM * (low - seen[0])
                high = seen[1] + RANGE_MOMENTUM * (high - seen[1])
            self.ranges[name] = (low, high)
        return self.ranges[name]

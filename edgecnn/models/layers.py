"""Building blocks shared by the families, laid out as torchvision lays them out.

``ConvNormAct`` is a ``Sequential`` (conv, norm, activation) so its state-dict keys are
``<name>.0.weight`` / ``<name>.1.running_mean``, exactly torchvision's ``Conv2dNormActivation``.
Activations are never in-place: exporters and quantizers handle out-of-place graphs best.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

ActLayer = Callable[[], nn.Module]
NormLayer = Callable[[int], nn.Module]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "hard_swish": nn.Hardswish,
    "hard_sigmoid": nn.Hardsigmoid,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}


def get_act_layer(act: str | ActLayer) -> ActLayer:
    """An activation class from its name (``"relu6"``, ``"hard_swish"``…) or the class itself."""
    if not isinstance(act, str):
        return act
    try:
        return _ACTIVATIONS[act]
    except KeyError:
        raise ValueError(f"unknown activation {act!r}; valid: {', '.join(_ACTIVATIONS)}") from None


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor``, never more than 10% below ``value``.

    The rule of the MobileNet and EfficientNet reference code; kernels run fastest on multiples of 8.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvNormAct(nn.Sequential):
    """Convolution, optional normalisation, optional activation; "same" padding by default."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        norm_layer: NormLayer | None = nn.BatchNorm2d,
        act_layer: ActLayer | None = nn.ReLU,
    ) -> None:
        padding = (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding,
                groups=groups,
                bias=norm_layer is None,
            )
        ]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if act_layer is not None:
            layers.append(act_layer())
        super().__init__(*layers)
        self.out_channels = out_channels


class SqueezeExcitation(nn.Module):
    """Channel attention (Hu et al. 2018) with 1×1 convolutions ``fc1``/``fc2``, as in torchvision."""

    def __init__(
        self,
        channels: int,
        squeeze_channels: int,
        act_layer: ActLayer = nn.ReLU,
        gate_layer: ActLayer = nn.Sigmoid,
    ) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.activation = act_layer()
        self.scale_activation = gate_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class StochasticDepth(nn.Module):
    """Drop a residual branch per sample while training (Huang et al. 2016); identity at inference."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop probability must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)
        return x * mask.bernoulli_(keep) / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def init_weights(model: nn.Module) -> None:
    """The initialisation torchvision uses for its CNNs: He-normal convs, unit norms, small heads."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)


def layer_dims(model: nn.Module) -> dict[str, list[int]]:
    """The channel counts that pruning can change: convolutions [in, out, groups], linear layers
    [in, out], batch norms [features]."""
    dims: dict[str, list[int]] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            dims[name] = [module.in_channels, module.out_channels, module.groups]
        elif isinstance(module, nn.Linear):
            dims[name] = [module.in_features, module.out_features]
        elif isinstance(module, nn.BatchNorm2d):
            dims[name] = [module.num_features]
    return dims


def head_layer(model: nn.Module, classifier: str) -> str:
    """The layer that outputs the classes: the classifier, or the last linear layer inside it."""
    linear = [
        n
        for n, m in model.named_modules()
        if (n == classifier or n.startswith(f"{classifier}.")) and isinstance(m, nn.Linear)
    ]
    return linear[-1] if linear else classifier


def reshape_layers(model: nn.Module, dims: dict[str, list[int]], classifier: str) -> None:
    """Give freshly built layers the channel counts a pruned checkpoint recorded (freshly initialised;
    the weights are loaded afterwards). The head keeps its own number of classes."""
    head = head_layer(model, classifier)
    for name, shape in dims.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"the recorded layer {name!r} does not exist in this model") from None
        if isinstance(module, nn.Conv2d):
            module.in_channels, module.out_channels, module.groups = shape
            kernel = (module.out_channels, module.in_channels // module.groups, *module.kernel_size)
            module.weight = nn.Parameter(torch.empty(kernel))
        elif isinstance(module, nn.Linear):
            module.in_features = shape[0]
            if name != head:
                module.out_features = shape[1]
            module.weight = nn.Parameter(torch.empty(module.out_features, module.in_features))
        elif isinstance(module, nn.BatchNorm2d):
            module.num_features = shape[0]
            module.weight, module.bias = (nn.Parameter(torch.empty(shape[0])) for _ in range(2))
            module.running_mean, module.running_var = torch.zeros(shape[0]), torch.ones(shape[0])
        else:
            raise ValueError(f"the recorded layer {name!r} is a {type(module).__name__}, which cannot be reshaped")
        if getattr(module, "bias", None) is not None and not isinstance(module, nn.BatchNorm2d):
            module.bias = nn.Parameter(torch.empty(module.weight.shape[0]))
        module.reset_parameters()

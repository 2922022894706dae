"""Cross-layer equalization and bias correction: the folded PyTorch model made easier to quantize before any
format's int8 quantizer sees it, so one correction serves ONNX, OpenVINO and TFLite alike.

Both are the data-free quantization steps of Nagel et al. (2019). **Cross-layer equalization** (CLE) rescales
each output channel of a convolution by 1/s and the matching input channel of the next by s, so that every
channel's weights span the same range in both: with per-tensor int8 weights a depthwise convolution whose
channels span ranges 100× apart otherwise rounds its small channels to nothing. The product is unchanged only
through an activation with f(x/s) = f(x)/s (ReLU, pooling, or none); ReLU6, hard-swish and the like clip or bend at
fixed values, so pairs through them are left as they are and counted (``CorrectionReport.skipped_pairs``):
replacing ReLU6 by ReLU would change the fp32 model, which this step never does. **Bias correction** measures,
on the calibration images, how far int8 rounding moves each layer's mean output per channel (weights and input
rounded as the formats round them, every earlier layer already rounded and corrected) and subtracts that shift
from the layer's bias. It changes the fp32 model on purpose, so only the int8 artifacts get it; a toolchain's
own bias correction (NNCF's, for OpenVINO) is switched off where it is applied, or it would correct twice —
except under ``auto``, where such a toolchain keeps its own (``without_bias``; the export decides). ``raw``
corrects nothing and switches the toolchains' own off too: int8 as rounding alone leaves it, the baseline any
correction is measured against.

The layers the formats keep float (the first convolution, the classifier, squeeze-excite branches, the user's
float layers) are neither rounded nor corrected in the simulation. ``auto`` applies the combination whose
simulated int8 logits are closest to fp32 on the held-out images, and only where that is measurably closer
(below ``AUTO_GAIN`` of plain int8's error).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from edgecnn.errors import EdgeCNNError
from edgecnn.models.layers import SqueezeExcitation
from edgecnn.optimize.sensitivity import input_ranges, layer_hooks, logits, quantizable_layers, quantized, score

#: what can be applied to the PyTorch model: the candidates ``auto`` chooses among
APPLICABLE = ("none", "cle", "bias", "cle+bias")
CORRECTIONS = ("auto", *APPLICABLE, "raw")
#: what may sit between an equalized pair: per-channel maps that commute with a positive per-channel scale,
#: f(x / s) = f(x) / s (pooling takes each channel's max or mean)
HOMOGENEOUS = (nn.ReLU, nn.Identity, nn.Dropout, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
#: auto applies a correction only where its simulated error is below this share of plain int8's
AUTO_GAIN = 0.9
CLE_ROUNDS = 20  # a chain of pairs converges in a few rounds; this bounds it
# bias correction passes its images as one batch (each layer's correction needs every image's output before the
# next layer runs), and the candidates' ranges come from the same images: 64 at 240×240 took 13 s against 52 s
# for 128, which spilled memory; 64 images' worth of positions estimate a channel's mean well
SIMULATION_IMAGES = 64
#: held-out images auto compares the candidates on: enough to tell them apart, bounded at 224 pixels
CHOICE_IMAGES = 1000


@dataclass
class CorrectionReport:
    """What was applied to the int8 model, why, and what it did in simulation."""

    requested: str
    applied: str  # none | cle | bias | cle+bias
    granularity: str  # the weights' scales the simulation used: "per-channel" or "per-tensor"
    equalized_pairs: int
    skipped_pairs: dict[str, int]  # pairs through an activation CLE cannot pass, by activation type
    corrected_layers: int
    fp32_change: float  # CLE: max |Δlogit| / the logit range on the held-out images (should be ~1e-6)
    simulated_error: dict[str, float] = field(default_factory=dict)  # candidate → relative logit error
    simulated_agreement: dict[str, float] = field(default_factory=dict)  # candidate → top-1 agreement, %
    images: int = 0  # held-out images the candidates were compared on
    seconds: float = 0.0
    #: formats whose quantizer kept its own bias correction in place of edgecnn's (``auto``; see the export)
    own_bias_correction: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for the terminal and the warnings."""
        errors = ", ".join(f"{name} {value:.4f}" for name, value in self.simulated_error.items())
        skipped = ", ".join(f"{count} through {kind}" for kind, count in self.skipped_pairs.items())
        parts = [f"int8 correction: {self.applied}"]
        if self.requested == "auto":
            parts.append(f"chosen by simulated relative error on {self.images} held-out images ({errors})")
        if "cle" in self.applied:
            parts.append(f"{self.equalized_pairs} pairs equalized" + (f", {skipped} left" if skipped else ""))
        if "bias" in self.applied:
            own = f" ({', '.join(self.own_bias_correction)}: its own instead)" if self.own_bias_correction else ""
            parts.append(f"{self.corrected_layers} biases corrected{own}")
        if self.requested == "raw":
            parts.append("the formats' own bias correction off too")
        return "; ".join(parts)


@dataclass
class CorrectedModel:
    """The int8 starting point (the folded model itself where nothing was applied) and what was done."""

    model: nn.Module
    report: CorrectionReport
    #: the same less bias correction, for a quantizer that corrects biases in its own arithmetic
    without_bias: nn.Module


def recipe_float_layers(model: nn.Module) -> list[str]:
    """The layers every format's int8 recipe keeps float: the first convolution, the last linear layer (the
    classifier) and the layers inside squeeze-excite branches."""
    convolutions = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    squeeze_excite = [
        f"{name}.{inner}"
        for name, module in model.named_modules()
        if isinstance(module, SqueezeExcitation)
        for inner, layer in module.named_modules()
        if isinstance(layer, nn.Conv2d | nn.Linear)
    ]
    return list(dict.fromkeys([*convolutions[:1], *linears[-1:], *squeeze_excite]))


def equalization_pairs(model: nn.Module) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """(convolution, next convolution) pairs where the first feeds only the second, through activations that
    commute with a per-channel scale; and the count of pairs skipped, by the activation that stopped them."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # fx raises many types on untraceable Python
        raise EdgeCNNError(f"cannot trace {type(model).__name__} to find layers to equalize: {exc}") from exc
    modules = dict(model.named_modules())
    pairs: list[tuple[str, str]] = []
    skipped: dict[str, int] = {}
    for node in graph.nodes:
        if not _is_conv(node, modules):
            continue
        blockers = []
        current = node
        while len(current.users) == 1:
            user = next(iter(current.users))
            if _is_conv(user, modules):
                if blockers:
                    kind = blockers[0]
                    skipped[kind] = skipped.get(kind, 0) + 1
                else:
                    pairs.append((str(node.target), str(user.target)))
                break
            if user.op != "call_module":
                break
            module = modules[str(user.target)]
            if not isinstance(module, HOMOGENEOUS):
                if len(list(module.parameters())) or len(user.args) != 1:
                    break  # a layer with weights of its own (BatchNorm left unfolded) or several inputs
                blockers.append(type(module).__name__)
            current = user
    return pairs, skipped


def _is_conv(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return node.op == "call_module" and isinstance(modules.get(str(node.target)), nn.Conv2d)


def _input_channel_view(conv: nn.Conv2d) -> torch.Tensor:
    """``conv``'s weights as (input channel, everything that multiplies it), for any number of groups."""
    groups, weight = conv.groups, conv.weight.data
    out_per, in_per = weight.shape[0] // groups, weight.shape[1]
    # (groups, out_per, in_per, k, k) → (groups, in_per, out_per·k·k): input channel g·in_per + i
    grouped = weight.reshape(groups, out_per, in_per, -1).permute(0, 2, 1, 3)
    return grouped.reshape(groups * in_per, -1)


def _scale_input_channels(conv: nn.Conv2d, scale: torch.Tensor) -> None:
    groups = conv.groups
    out_per, in_per = conv.weight.shape[0] // groups, conv.weight.shape[1]
    per_group = scale.reshape(groups, 1, in_per, 1, 1)
    shape = conv.weight.shape
    conv.weight.data = (conv.weight.data.reshape(groups, out_per, *shape[1:]) * per_group).reshape(shape)


@torch.no_grad()
def equalize(model: nn.Module, pairs: list[tuple[str, str]]) -> None:
    """Cross-layer equalization of ``pairs`` in place: each channel's weight range made the geometric mean of
    its range in both layers, repeated until no scale moves by more than 0.1%."""
    for _ in range(CLE_ROUNDS):
        largest_step = 0.0
        for first_name, second_name in pairs:
            first, second = model.get_submodule(first_name), model.get_submodule(second_name)
            assert isinstance(first, nn.Conv2d) and isinstance(second, nn.Conv2d)
            out_range = first.weight.data.reshape(first.out_channels, -1).abs().amax(1)
            in_range = _input_channel_view(second).abs().amax(1)
            usable = (out_range > 0) & (in_range > 0)
            scale = torch.where(usable, torch.sqrt(out_range / in_range.clamp(min=1e-12)), torch.ones_like(out_range))
            first.weight.data /= scale.reshape(-1, 1, 1, 1)
            if first.bias is not None:
                first.bias.data /= scale
            _scale_input_channels(second, scale)
            largest_step = max(largest_step, float(scale.log().abs().max()))
        if largest_step < math.log(1.001):
            return


@torch.no_grad()
def correct_biases(
    model: nn.Module, layers: dict[str, nn.Module], images: torch.Tensor, per_channel: bool
) -> list[str]:
    """Bias correction in place: each layer's mean output per channel, with int8 rounding simulated in it and
    every earlier layer (already corrected), made equal to the fp32 model's on ``images``. One fp32 pass and
    one simulated pass over all images at once, each layer corrected as the pass reaches it. Returns the
    layers corrected (a layer without a bias has nothing to correct)."""
    corrected = {name: layer for name, layer in layers.items() if layer.bias is not None}
    fp32_means: dict[str, torch.Tensor] = {}

    def record(name: str) -> Any:
        def hook(_: nn.Module, __: Any, output: torch.Tensor) -> None:
            fp32_means[name] = _channel_mean(output)

        return hook

    def correct(name: str) -> Any:
        def hook(module: nn.Module, _: Any, output: torch.Tensor) -> torch.Tensor:
            shift = _channel_mean(output) - fp32_means[name]
            module.bias.data -= shift
            return output - shift.reshape(1, -1, *([1] * (output.dim() - 2)))

        return hook

    with layer_hooks(corrected, record, after=True):
        model(images)
    ranges = input_ranges(model, layers, images)
    with quantized(layers, list(layers), ranges, per_channel), layer_hooks(corrected, correct, after=True):
        model(images)
    return list(corrected)


def _channel_mean(output: torch.Tensor) -> torch.Tensor:
    return output.mean(dim=[d for d in range(output.dim()) if d != 1])


def simulated_error(
    model: nn.Module,
    layers: list[str],
    calibration: torch.Tensor,
    held_out: torch.Tensor,
    reference: torch.Tensor,
    per_channel: bool,
) -> tuple[float, float]:
    """(relative logit error, top-1 agreement %) of ``model`` with ``layers`` in simulated int8 (ranges from
    the calibration images) against ``reference`` (the fp32 logits) on the held-out images."""
    found = quantizable_layers(model)
    chosen = {name: found[name] for name in layers}
    ranges = input_ranges(model, chosen, calibration)
    with quantized(chosen, layers, ranges, per_channel):
        return score(logits(model, held_out), reference)


def correct_for_int8(
    folded: nn.Module,
    calibration: np.ndarray,
    held_out: np.ndarray,
    requested: str = "auto",
    per_channel: bool = True,
    float_layers: list[str] | tuple[str, ...] = (),
) -> CorrectedModel:
    """The int8 starting points for ``folded`` (a BatchNorm-folded model, left unchanged): with ``requested``
    corrections, or with the combination ``auto`` finds measurably better in simulation."""
    if requested not in CORRECTIONS:
        raise EdgeCNNError(f"unknown int8 correction {requested!r}; valid: {', '.join(CORRECTIONS)}")
    started = time.perf_counter()
    folded = folded.eval()
    calib = torch.from_numpy(np.ascontiguousarray(calibration[:SIMULATION_IMAGES], dtype=np.float32))
    held = torch.from_numpy(np.ascontiguousarray(held_out[:CHOICE_IMAGES], dtype=np.float32))
    kept_float = {*recipe_float_layers(folded), *float_layers}
    int8_layers = [name for name in quantizable_layers(folded) if name not in kept_float]
    pairs, skipped = equalization_pairs(folded)
    if requested == "raw":
        candidates: tuple[str, ...] = ("none",)
    elif requested != "auto":
        candidates = ("none", requested)
    else:  # equalizing nothing would only repeat the uncorrected candidates
        candidates = APPLICABLE if pairs else ("none", "bias")
    built: dict[str, nn.Module] = {"none": folded}
    if {"cle", "cle+bias"} & set(candidates):
        built["cle"] = copy.deepcopy(folded)
        equalize(built["cle"], pairs)
    corrected_layers: list[str] = []
    for name in ("bias", "cle+bias"):
        if name in candidates:
            model = copy.deepcopy(built["cle" if name == "cle+bias" else "none"])
            found = quantizable_layers(model)
            chosen = {layer: found[layer] for layer in int8_layers}
            corrected_layers = correct_biases(model, chosen, calib, per_channel)
            built[name] = model
    report = CorrectionReport(
        requested=requested,
        applied="none" if requested == "raw" else requested,
        granularity="per-channel" if per_channel else "per-tensor",
        equalized_pairs=len(pairs),
        skipped_pairs=skipped,
        corrected_layers=len(corrected_layers),
        fp32_change=0.0,
        images=len(held),
    )
    reference = logits(folded, held) if requested == "auto" or "cle" in built else None
    if requested == "auto":
        assert reference is not None
        for name in candidates:
            error, agreement = simulated_error(built[name], int8_layers, calib, held, reference, per_channel)
            report.simulated_error[name], report.simulated_agreement[name] = error, agreement
        best = min(report.simulated_error, key=report.simulated_error.__getitem__)
        report.applied = best if report.simulated_error[best] < AUTO_GAIN * report.simulated_error["none"] else "none"
    if "cle" in built:
        assert reference is not None
        change = (logits(built["cle"], held) - reference).abs().max()
        report.fp32_change = float(change / (reference.max() - reference.min()).clamp(min=1e-12))
    report.seconds = time.perf_counter() - started
    return CorrectedModel(built[report.applied], report, built[without_bias_correction(report.applied)])


def without_bias_correction(applied: str) -> str:
    """``applied`` less bias correction: what a quantizer that corrects biases itself starts from."""
    return "cle" if "cle" in applied else "none"

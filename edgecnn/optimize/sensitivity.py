"""Per-layer int8 sensitivity: quantize one layer (or one group of layers) at a time in simulation, rank by
the output error it alone causes.

Where an int8 artifact loses accuracy, the loss is usually a few layers' (a depthwise convolution with an
outlier channel, the classifier), and every format's int8 error starts from the same arithmetic: weights
rounded to 8 bits and the layer's input to 8 bits. Simulating exactly that on the folded PyTorch model,
one layer at a time, says which layers to look at — or to keep float — before any converter runs, the same
for all three formats. The simulation is the common scheme of the three recipes: weights symmetric int8
per output channel, the layer's input asymmetric uint8 per tensor over the range the calibration images
give. A runtime's own kernels add their rounding on top; ``edgecnn diff --layers`` measures that.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

GROUPINGS = ("layer", "block", "kind")
SCHEME = (
    "weights int8 symmetric per output channel; the layer's input uint8 per tensor over the calibration "
    "images' min/max; every other layer float"
)
BATCH = 64


@dataclass
class Sensitivity:
    """One layer or group quantized alone: the output error it causes, against the fp32 model."""

    name: str  # the layer's module name, or the group's (a block's prefix, a kind of layer)
    layers: list[str]
    kind: str
    relative_error: float  # ‖logits − fp32 logits‖ / ‖fp32 logits‖, mean over the images
    agreement: float  # top-1 agreement with the fp32 model, %
    rank: int = 0  # 1: the most sensitive


@dataclass
class SensitivityReport:
    grouping: str
    scheme: str
    images: int
    seconds: float
    forward_passes: int
    all_int8_relative_error: float  # every layer quantized at once: what the ranking explains
    all_int8_agreement: float
    rows: list[Sensitivity]  # in the model's order; ``rank`` orders them by error

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def ranked(self) -> list[Sensitivity]:
        return sorted(self.rows, key=lambda row: row.rank)


def quantizable_layers(model: nn.Module, example: torch.Tensor | None = None) -> dict[str, nn.Module]:
    """The layers every int8 recipe quantizes: convolutions and fully connected layers. With ``example``, in
    the order they run on it (the order the exported graphs hold them in), else in the order they are declared."""
    declared = {name: module for name, module in model.named_modules() if isinstance(module, nn.Conv2d | nn.Linear)}
    if example is None:
        return declared
    ran: list[str] = []

    def record(name: str) -> Any:
        def hook(*_: Any) -> None:
            if name not in ran:  # a layer called twice (shared weights) runs where it first ran
                ran.append(name)

        return hook

    with layer_hooks(declared, record):
        logits(model, example)
    return {name: declared[name] for name in ran}


def layer_kind(module: nn.Module) -> str:
    """What a layer is, in the words its int8 behaviour depends on (a depthwise 3×3 has 9 weights a channel)."""
    if isinstance(module, nn.Linear):
        return "linear"
    assert isinstance(module, nn.Conv2d)
    if module.groups > 1 and module.groups == module.in_channels:
        return "depthwise conv"
    if module.kernel_size == (1, 1):
        return "pointwise conv"
    return f"conv {module.kernel_size[0]}×{module.kernel_size[1]}"


def block_of(name: str) -> str:
    """A layer's block: its name up to the second dot where there is one (``features.3.conv.0`` →
    ``features.3``), the way the zoo's models nest their repeated blocks."""
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else parts[0]


def round_through(values: torch.Tensor) -> torch.Tensor:
    """Rounded forward, identity backward (the straight-through estimator QAT trains through); the forward
    value is exactly ``torch.round``'s."""
    return values + (torch.round(values) - values).detach()


def fake_quantize_weight(weight: torch.Tensor, per_channel: bool = True) -> torch.Tensor:
    """Symmetric int8 per output channel (what every format's int8 weights are by default), or with one scale
    for the whole tensor (``export --per-tensor``). Differentiable for QAT: straight through the rounding,
    the scale itself not trained."""
    flat = weight.detach().reshape(weight.shape[0] if per_channel else 1, -1)
    scale = flat.abs().amax(dim=1).clamp(min=1e-12) / 127
    shape = (-1,) + (1,) * (weight.dim() - 1) if per_channel else (1,) * weight.dim()
    return (round_through(weight / scale.view(shape)).clamp(-127, 127) * scale.view(shape)).to(weight.dtype)


def fake_quantize_input(tensor: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Asymmetric uint8 per tensor over [low, high] (widened to hold 0, as the quantizers do); differentiable
    for QAT: straight through the rounding inside the range, no gradient where it clips."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max(high - low, 1e-12) / 255
    zero_point = round(-low / scale)
    return (torch.clamp(round_through(tensor / scale) + zero_point, 0, 255) - zero_point) * scale


def input_ranges(
    model: nn.Module, layers: dict[str, nn.Module], images: torch.Tensor
) -> dict[str, tuple[float, float]]:
    """Each layer's input min and max over the images, from the fp32 model: its activation quantizer's range."""
    ranges: dict[str, tuple[float, float]] = {}

    def observe(name: str) -> Any:
        def hook(_: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            low, high = float(inputs[0].min()), float(inputs[0].max())
            seen = ranges.get(name, (low, high))
            ranges[name] = (min(seen[0], low), max(seen[1], high))

        return hook

    with layer_hooks(layers, observe):
        logits(model, images)
    return ranges


@contextlib.contextmanager
def layer_hooks(layers: dict[str, nn.Module], hook_for: Callable[[str], Any], after: bool = False) -> Iterator[None]:
    """Each layer's forward pre-hook (``after``: forward hook) ``hook_for(name)`` inside the block, removed
    after it."""
    handles = [
        module.register_forward_hook(hook_for(name)) if after else module.register_forward_pre_hook(hook_for(name))
        for name, module in layers.items()
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def quantized(
    layers: dict[str, nn.Module], names: list[str], ranges: dict[str, tuple[float, float]], per_channel: bool = True
) -> Iterator[None]:
    """``names`` computed as int8 would (weights and input fake-quantized) inside the block; restored after."""
    saved = {name: layers[name].weight.data.clone() for name in names}
    handles = []
    for name in names:
        module = layers[name]
        module.weight.data = fake_quantize_weight(module.weight.data, per_channel)
        low, high = ranges[name]
        handles.append(
            module.register_forward_pre_hook(
                lambda _, inputs, low=low, high=high: (fake_quantize_input(inputs[0], low, high), *inputs[1:])
            )
        )
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for name, weight in saved.items():
            layers[name].weight.data = weight


@torch.no_grad()
def logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(images[start : start + BATCH]) for start in range(0, len(images), BATCH)])


def score(candidate: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(‖candidate − reference‖ / ‖reference‖ per image, averaged; top-1 agreement in %)."""
    error = (candidate - reference).norm(dim=1) / reference.norm(dim=1).clamp(min=1e-12)
    agreement = (candidate.argmax(1) == reference.argmax(1)).float().mean() * 100
    return float(error.mean()), float(agreement)


def groups(layers: dict[str, nn.Module], grouping: str) -> dict[str, list[str]]:
    """The units quantized one at a time: each layer, each block, or each kind of layer."""
    if grouping not in GROUPINGS:
        raise ValueError(f"unknown grouping {grouping!r}; valid: {', '.join(GROUPINGS)}")
    key = {"layer": lambda name: name, "block": block_of, "kind": lambda name: layer_kind(layers[name])}[grouping]
    found: dict[str, list[str]] = {}
    for name in layers:
        found.setdefault(key(name), []).append(name)
    return found


def layer_sensitivity(model: nn.Module, images: np.ndarray, grouping: str = "layer") -> SensitivityReport:
    """Rank ``model``'s layers (or groups) by the output error each causes when it alone is int8, on
    ``images`` (the calibration images: what the quantizers see). Deterministic: no randomness is drawn."""
    started = time.perf_counter()
    model = model.eval()
    batch = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    layers = quantizable_layers(model, batch[:1])
    units = groups(layers, grouping)
    reference = logits(model, batch)
    ranges = input_ranges(model, layers, batch)
    rows = []
    for name, members in units.items():
        with quantized(layers, members, ranges):
            error, agreement = score(logits(model, batch), reference)
        kinds = sorted({layer_kind(layers[member]) for member in members})
        rows.append(Sensitivity(name, members, ", ".join(kinds), error, agreement))
    for rank, row in enumerate(sorted(rows, key=lambda row: -row.relative_error), 1):
        row.rank = rank
    with quantized(layers, list(layers), ranges):
        all_error, all_agreement = score(logits(model, batch), reference)
    return SensitivityReport(
        grouping=grouping,
        scheme=SCHEME,
        images=len(batch),
        seconds=time.perf_counter() - started,
        forward_passes=len(units) + 3,
        all_int8_relative_error=all_error,
        all_int8_agreement=all_agreement,
        rows=rows,
    )


def markdown(report: SensitivityReport, shown: int = 10) -> str:
    """The most sensitive layers as a table, with what the whole int8 model does for scale."""
    lines = [
        f"Int8 sensitivity by {report.grouping} ({report.scheme}), on {report.images} calibration images: "
        f"{report.forward_passes} forward passes, {report.seconds:.1f} s. Every {report.grouping} at once: "
        f"relative error {report.all_int8_relative_error:.4f}, top-1 agreement {report.all_int8_agreement:.1f}%.",
        "",
        f"| rank | {report.grouping} | kind | relative error | agreement |",
        "|---|---|---|---|---|",
    ]
    for row in report.ranked()[:shown]:
        lines.append(f"| {row.rank} | `{row.name}` | {row.kind} | {row.relative_error:.4f} | {row.agreement:.1f}% |")
    return "\n".join(lines) + "\n"


def figure(report: SensitivityReport) -> Any:
    """Each layer's (group's) error in model order, the five most sensitive named: where in depth it is."""
    from edgecnn.bench.report import new_figure

    errors = [row.relative_error for row in report.rows]
    fig = new_figure(8, 3.6)
    axes = fig.add_subplot()
    axes.bar(range(len(errors)), errors, color="0.55")
    for row in report.ranked()[:5]:
        index = report.rows.index(row)
        axes.bar(index, row.relative_error, color="tab:red")
        axes.annotate(row.name, (index, row.relative_error), fontsize=7, rotation=30, ha="left", va="bottom")
    axes.set_xlabel(f"{report.grouping}, in model order")
    axes.set_ylabel("relative output error, alone in int8")
    axes.set_title(f"int8 sensitivity by {report.grouping} ({report.images} calibration images)")
    axes.margins(y=0.25)
    return fig


def write(report: SensitivityReport, folder: Path) -> list[Path]:
    """sensitivity.json, .md and .png in ``folder``, each written atomically."""
    from edgecnn._io import atomic_path, write_json
    from edgecnn.bench.report import save_figure

    written = [folder / "sensitivity.json", folder / "sensitivity.md"]
    write_json(written[0], {"schema_version": 1, **report.to_dict()})
    with atomic_path(written[1]) as temporary:
        temporary.write_text(markdown(report), encoding="utf-8")
    return [*written, save_figure(figure(report), folder / "sensitivity.png")]

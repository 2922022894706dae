"""What ``edgecnn models`` shows: figures computed from the models themselves, not copied tables."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from edgecnn.models._registry import create_model, get_model_spec, list_models
from edgecnn.models.complexity import LayerRow, count_macs, count_params, layer_summary


@dataclass(frozen=True)
class ModelSummary:
    name: str
    family: str
    description: str
    paper: str
    params: int
    macs: int
    input_size: tuple[int, int, int]
    imagenet_top1: float | None
    imagenet_top5: float | None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class ModelDescription:
    summary: ModelSummary
    preprocessing_text: str
    weights_text: str
    arguments: list[str]
    layers: list[LayerRow]

    def to_dict(self) -> dict[str, object]:
        return {
            **self.summary.to_dict(),
            "preprocessing": self.preprocessing_text,
            "weights": self.weights_text,
            "arguments": self.arguments,
            "layers": [asdict(row) for row in self.layers],
        }


def _build_on_meta(name: str) -> torch.nn.Module:
    with torch.device("meta"):
        return create_model(name)


def summarize_model(name: str) -> ModelSummary:
    """Parameters and MACs at the model's default (or checkpoint) resolution, computed on the meta device."""
    spec = get_model_spec(name)
    model = _build_on_meta(name)
    weights = spec.default_weights
    preprocessing = spec.preprocessing({}, weights)
    return ModelSummary(
        name=name,
        family=spec.family,
        description=spec.description,
        paper=spec.paper,
        params=count_params(model),
        macs=count_macs(model, preprocessing.input_shape),
        input_size=preprocessing.input_shape,
        imagenet_top1=weights.top1 if weights else None,
        imagenet_top5=weights.top5 if weights else None,
    )


def summarize_models(pattern: str = "") -> list[ModelSummary]:
    return [summarize_model(name) for name in list_models(pattern)]


def describe_model(name: str, depth: int = 2) -> ModelDescription:
    spec = get_model_spec(name)
    summary = summarize_model(name)
    p = spec.preprocessing({}, spec.default_weights)
    preprocessing = (
        f"resize {p.resize} ({p.interpolation}), centre crop {p.crop}, mean {p.mean}, std {p.std}, "
        f"{p.channel_order}, {p.layout}"
    )
    default = spec.default_weights_name
    weights = "; ".join(
        f"{key}{' (default)' if key == default else ''}: {w.url} (top-1 {w.top1}, top-5 {w.top5})"
        for key, w in spec.published.items()
    )
    arguments = [f"{k}={v.default!r}" for k, v in spec.parameters().items()]
    return ModelDescription(
        summary,
        preprocessing,
        weights or "none published",
        arguments,
        layer_summary(_build_on_meta(name), p.input_shape, depth),
    )

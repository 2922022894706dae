"""One registry of models: ``@register_model`` on a builder, ``create_model(name, **kw)`` to build.

A registry entry carries what the later pipeline stages need besides the module itself: the
preprocessing, the published checkpoints, and the names of the first convolution and the classifier
(what transfer learning adapts).
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from edgecnn.data.preprocessing import Preprocessing
from edgecnn.errors import EdgeCNNError, UnknownModelError, WeightsError
from edgecnn.models._weights import (
    IMAGENET,
    IMAGENET_VERSIONS,
    PretrainedWeights,
    fetch_weights,
    load_into,
    names_published_weights,
    read_state_dict,
)
from edgecnn.models.complexity import check_input_size
from edgecnn.models.layers import reshape_layers

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])
Resolution = int | Callable[[Mapping[str, Any]], int]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its builder and the metadata the pipeline needs."""

    name: str
    family: str
    builder: Callable[..., nn.Module]
    resolution: Resolution = 224
    crop_ratio: float = 0.875
    interpolation: str = "bilinear"
    published: Mapping[str, PretrainedWeights] = field(default_factory=dict)  # by name, e.g. "imagenet-v2"
    first_conv: str = "features.0.0"
    classifier: str = "classifier"
    optional_prefixes: tuple[str, ...] = ()
    paper: str = ""

    def __post_init__(self) -> None:
        unknown = [name for name in self.published if name not in IMAGENET_VERSIONS]
        if unknown:
            raise ValueError(
                f"{self.name}: unknown weights {', '.join(unknown)}; known: {', '.join(IMAGENET_VERSIONS)}"
            )

    @property
    def default_weights_name(self) -> str | None:
        """What ``weights="imagenet"`` stands for: the newest published set, as torchvision's ``DEFAULT``."""
        return next((name for name in reversed(IMAGENET_VERSIONS) if name in self.published), None)

    @property
    def default_weights(self) -> PretrainedWeights | None:
        name = self.default_weights_name
        return None if name is None else self.published[name]

    def published_weights(self, name: str = IMAGENET) -> PretrainedWeights:
        """The published set ``name`` names (``"imagenet"``: the default); one it lacks is a one-line error."""
        if not self.published:
            with_weights = [n for n, s in _REGISTRY.items() if s.published]
            raise WeightsError(
                f"{self.name} has no published ImageNet weights; models that have them: {', '.join(with_weights)}"
            )
        weights = self.default_weights if name == IMAGENET else self.published.get(name)
        if weights is None:
            raise WeightsError(
                f"{self.name} has no {name} weights; it publishes {', '.join(self.published)} "
                f"({IMAGENET!r} loads {self.default_weights_name})"
            )
        return weights

    @property
    def description(self) -> str:
        doc = inspect.getdoc(self.builder) or ""
        return doc.splitlines()[0] if doc else ""

    def parameters(self) -> dict[str, inspect.Parameter]:
        """The keyword arguments the builder takes."""
        return dict(inspect.signature(self.builder).parameters)

    def default_input_size(self, kwargs: Mapping[str, Any] | None = None) -> int:
        return self.resolution(kwargs or {}) if callable(self.resolution) else self.resolution

    def preprocessing(self, kwargs: Mapping[str, Any], weights: PretrainedWeights | None = None) -> Preprocessing:
        """The preprocessing of a model built with ``kwargs``: the recipe ``weights`` were evaluated with, if given."""
        in_chans = kwargs.get("in_chans", self.parameters()["in_chans"].default)
        if weights is not None:
            return Preprocessing.imagenet(weights.crop, weights.resize, in_chans, weights.interpolation)
        crop = self.default_input_size(kwargs)
        return Preprocessing.imagenet(crop, round(crop / self.crop_ratio), in_chans, self.interpolation)


@dataclass
class ModelMeta:
    """What a built model carries for later stages: how it was built and how to feed it."""

    name: str
    kwargs: dict[str, Any]
    preprocessing: Preprocessing
    class_names: list[str]
    weights: str = "random"
    notes: list[str] = field(default_factory=list)
    layer_shapes: dict[str, list[int]] | None = None  # channel counts pruning changed (layers.layer_dims)

    def to_dict(self) -> dict[str, Any]:
        described = {
            "name": self.name,
            "kwargs": dict(self.kwargs),
            "preprocessing": self.preprocessing.to_dict(),
            "class_names": list(self.class_names),
            "weights": self.weights,
            "notes": list(self.notes),
        }
        return {**described, "layer_shapes": self.layer_shapes} if self.layer_shapes else described


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(*, family: str, **spec_fields: Any) -> Callable[[Builder], Builder]:
    """Register a builder under its function name. A second builder of the same name is an error."""

    def decorate(builder: Builder) -> Builder:
        name = builder.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        if "num_classes" not in inspect.signature(builder).parameters:
            raise ValueError(f"builder {name!r} must take num_classes")
        _REGISTRY[name] = ModelSpec(name=name, family=family, builder=builder, **spec_fields)
        return builder

    return decorate


def list_models(pattern: str = "") -> list[str]:
    """Registered names matching ``pattern``: a glob (``resnet*``) or, without wildcards, a substring."""
    if not pattern:
        return list(_REGISTRY)
    glob = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
    return [name for name in _REGISTRY if fnmatch.fnmatchcase(name, glob)]


def get_model_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; an unknown name suggests the closest ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.6)
        close += [n for n in list_models(name) if n not in close][: max(0, 3 - len(close))]
        hint = f"; did you mean {', '.join(close)}?" if close else "; `edgecnn models` lists them"
        raise UnknownModelError(f"unknown model {name!r}{hint}") from None


def create_model(
    name: str,
    *,
    weights: str | Path | None = None,
    input_size: int | None = None,
    progress: bool = True,
    layer_shapes: dict[str, list[int]] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    ``weights`` is ``None`` (random initialisation), ``"imagenet"`` (torchvision's default checkpoint:
    IMAGENET1K_V2 where there is one, else V1), ``"imagenet-v1"``/``"imagenet-v2"`` (that one), each
    downloaded once into the cache, or a path to a state dict. ``input_size`` overrides the
    resolution recorded in the model's preprocessing. ``layer_shapes`` rebuilds a pruned model (the
    channel counts its checkpoint recorded) before the weights load. Keyword arguments set to ``None`` are dropped,
    so callers can pass optional CLI values straight through. The model's :class:`ModelMeta` is
    attached as ``model.edgecnn_meta``.
    """
    spec = get_model_spec(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    published = spec.published_weights(weights) if names_published_weights(weights) else None
    if published is not None:
        kwargs = {**published.builder_kwargs, **kwargs}
    _check_kwargs(spec, kwargs)
    model = spec.builder(**kwargs)
    if layer_shapes:
        try:
            reshape_layers(model, layer_shapes, spec.classifier)
        except ValueError as exc:
            raise WeightsError(f"cannot rebuild the pruned {name}: {exc}") from None

    preprocessing = spec.preprocessing(kwargs, published)
    if input_size is not None:
        if input_size < 1:
            raise EdgeCNNError(f"input size must be positive, got {input_size}")
        preprocessing = preprocessing.with_input_size(input_size)
        check_input_size(model, preprocessing.input_shape)
    num_classes = kwargs.get("num_classes", spec.parameters()["num_classes"].default)
    meta = ModelMeta(name, kwargs, preprocessing, default_class_names(num_classes), layer_shapes=layer_shapes)
    if weights is not None:
        if published is not None:
            path = fetch_weights(published.url, progress=progress)
            meta.weights = f"imagenet:{path.name}"
        else:
            path = Path(weights)
            meta.weights = f"file:{path}"
        state = read_state_dict(path)
        meta.notes = load_into(model, state, spec.first_conv, spec.classifier, spec.optional_prefixes)
    model.edgecnn_meta = meta
    return model


def get_model_meta(model: nn.Module) -> ModelMeta:
    meta = getattr(model, "edgecnn_meta", None)
    if not isinstance(meta, ModelMeta):
        raise EdgeCNNError("this model was not built by edgecnn.create_model and carries no metadata")
    return meta


def _check_kwargs(spec: ModelSpec, kwargs: Mapping[str, Any]) -> None:
    accepted = spec.parameters()
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise EdgeCNNError(f"{spec.name} does not take {', '.join(unknown)}; it takes: {', '.join(accepted)}")


def default_class_names(num_classes: int) -> list[str]:
    """ImageNet's names for a 1000-class head, else the class indices as strings."""
    if num_classes == 1000:
        return imagenet_class_names()
    return [str(i) for i in range(num_classes)]


def imagenet_class_names() -> list[str]:
    text = resources.files("edgecnn.models").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    return text.splitlines()

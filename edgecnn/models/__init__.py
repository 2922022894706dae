"""The model zoo: every family registers its builders on import."""

from edgecnn.models import alexnet, efficientnet, googlenet, lenet, mobilenet, resnet, vgg  # noqa: F401
from edgecnn.models._registry import (
    ModelMeta,
    ModelSpec,
    create_model,
    get_model_meta,
    get_model_spec,
    list_models,
    register_model,
)
from edgecnn.models._weights import PretrainedWeights, fetch_weights, weights_dir
from edgecnn.models.complexity import count_macs, count_params, layer_summary

__all__ = [
    "ModelMeta",
    "ModelSpec",
    "PretrainedWeights",
    "count_macs",
    "count_params",
    "create_model",
    "fetch_weights",
    "get_model_meta",
    "get_model_spec",
    "layer_summary",
    "list_models",
    "register_model",
    "weights_dir",
]

"""edgecnn: classic CNNs, from PyTorch to int8 artifacts measured on edge devices."""

__version__ = "0.1.0"

from edgecnn.errors import EdgeCNNError
from edgecnn.models import count_macs, count_params, create_model, list_models

__all__ = ["EdgeCNNError", "__version__", "count_macs", "count_params", "create_model", "list_models"]

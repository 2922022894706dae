"""Graph-level optimisations before export: BatchNorm folding and pruning (int8 quantization belongs to
each format's exporter, which calibrates with its own runtime's quantizer)."""

from edgecnn.optimize.fold_bn import fold_batchnorm

__all__ = ["fold_batchnorm"]
